/* cmd_batch.c: `sala batch CORPUS QUESTIONS --out answers.jsonl`: many questions against one
 * cached context, resumable. Every question forks the same loaded prefix state (the corpus is
 * never prefilled again; ctx_ask_batch), prefills its suffix on the fork, and the unfinished
 * questions decode together (--batch wide; one forward per step on the CUDA backend, a loop on
 * the CPU). Answers are appended in finishing order; ids already in the output are skipped. */
#include "app.h"
#include "app/ask_opts.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx/ctx.h"

SALA_COMMAND(batch, "answer a file of questions into JSONL (resumable)");

const char cmd_batch_usage[] =
    "usage: sala batch CORPUS QUESTIONS --out FILE.jsonl [--model DIR] [--temp T] [--top-k K]\n"
    "                  [--top-p P] [--rep-penalty R] [--seed S] [-n MAX_TOKENS] [--think]\n"
    "                  [--batch W] [--db FILE] [--backend B]\n\n"
    "QUESTIONS holds one question per line, or JSONL objects {\"id\": ..., \"question\": ...}\n"
    "(plain lines get the ids q1, q2, ... by line number). Each answer is appended to FILE as\n"
    "one JSON line with id, question, answer, citations and timings; ids already in FILE are\n"
    "skipped, so an interrupted batch resumes where it stopped. Up to W questions (default 32\n"
    "on a backend that decodes batches in one forward, i.e. CUDA; 1 on the CPU) decode\n"
    "together; lines are written as answers finish, so their order may differ from QUESTIONS.\n"
    "Every question has its own sampler seeded with --seed: an answer does not depend on W.\n";

typedef struct {
    char **ids;
    size_t n, cap;
} idset;

static int idset_add(idset *s, const char *id)
{
    if (s->n == s->cap) {
        size_t c = s->cap ? 2 * s->cap : 64;
        char **p = realloc(s->ids, c * sizeof(*p));
        if (!p) return -1;
        s->ids = p;
        s->cap = c;
    }
    return (s->ids[s->n] = strdup(id)) ? (int)++s->n * 0 : -1;
}

static bool idset_has(const idset *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->ids[i], id)) return true;
    return false;
}

/* The ids already answered in out (a missing file is empty). A torn last line (a crash while
 * writing) is not counted, so it is asked again. */
static void done_ids(const char *out, idset *s)
{
    FILE *f = fopen(out, "r");
    char *line = NULL;
    size_t cap = 0;
    if (!f) return;
    while (getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        if (cJSON_IsString(id)) idset_add(s, id->valuestring);
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
}

/* The questions still to answer: ids and texts (owned). */
typedef struct {
    char **ids, **qs;
    int64_t n, cap;
} qlist;

static int qlist_add(qlist *l, const char *id, const char *q)
{
    if (l->n == l->cap) {
        int64_t c = l->cap ? 2 * l->cap : 64;
        char **a = realloc(l->ids, (size_t)c * sizeof(*a));
        if (!a) return -1;
        l->ids = a;
        char **b = realloc(l->qs, (size_t)c * sizeof(*b));
        if (!b) return -1;
        l->qs = b;
        l->cap = c;
    }
    l->ids[l->n] = strdup(id);
    l->qs[l->n] = strdup(q);
    if (!l->ids[l->n] || !l->qs[l->n]) {
        free(l->ids[l->n]);
        free(l->qs[l->n]);
        return -1;
    }
    l->n++;
    return 0;
}

static void qlist_free(qlist *l)
{
    for (int64_t i = 0; i < l->n; i++) {
        free(l->ids[i]);
        free(l->qs[i]);
    }
    free(l->ids);
    free(l->qs);
}

/* Read QUESTIONS: plain lines get ids q<line>, JSON lines {"id", "question"}; ids already in
 * done are skipped (*skipped), malformed lines reported (*failed). */
static int read_questions(const char *qpath, const idset *done, qlist *l, long *skipped,
                          long *failed, sala_err *e)
{
    FILE *qf = fopen(qpath, "r");
    if (!qf) return sala_errf(e, SALA_EINVAL, "%s: cannot open", qpath);
    char *line = NULL;
    size_t lcap = 0;
    long lineno = 0;
    ssize_t got;
    int rc = SALA_OK;
    while (!rc && (got = getline(&line, &lcap, qf)) > 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (!got) continue;
        char idbuf[32];
        const char *id = idbuf, *q = line;
        cJSON *jo = NULL;
        snprintf(idbuf, sizeof(idbuf), "q%ld", lineno);
        if (line[0] == '{') {
            jo = cJSON_Parse(line);
            const cJSON *ji = cJSON_GetObjectItemCaseSensitive(jo, "id");
            const cJSON *jq = cJSON_GetObjectItemCaseSensitive(jo, "question");
            if (!cJSON_IsString(jq)) {
                app_errorf("%s:%ld: not {\"id\": ..., \"question\": \"...\"}", qpath, lineno);
                cJSON_Delete(jo);
                (*failed)++;
                continue;
            }
            q = jq->valuestring;
            if (cJSON_IsString(ji)) id = ji->valuestring;
            else if (cJSON_IsNumber(ji)) snprintf(idbuf, sizeof(idbuf), "%.0f", ji->valuedouble);
        }
        if (idset_has(done, id)) (*skipped)++;
        else if (qlist_add(l, id, q)) rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        cJSON_Delete(jo);
    }
    free(line);
    fclose(qf);
    return rc;
}

typedef struct {
    db *d;
    ctx_ctx *c;
    const qlist *l;
    FILE *of;
    const char *outp;
    idset *done;
    long answered, failed;
    int rc;                   /* a write failure: stops the batch */
    sala_err e;
} sink;

/* ctx_batch_fn: one JSON line per answer, in finishing order; the history row first. */
static int on_answer(void *ud, int64_t i, int rc, const ctx_answer *a, const sala_err *qe)
{
    sink *k = ud;
    const char *id = k->l->ids[i], *q = k->l->qs[i];
    if (!rc) rc = ctx_answer_store(k->d, k->c, q, a, &k->e);
    else k->e = *qe;
    if (rc) {
        app_errorf("%s: %s", id, k->e.msg);
        k->failed++;
        if (rc == SALA_ENOMEM || rc == SALA_EIO) {
            k->rc = rc;
            return 1;
        }
        return 0;
    }
    char *cit = ctx_answer_citations_json(a), *tim = ctx_answer_timings_json(a);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "question", q);
    cJSON_AddStringToObject(r, "answer", a->text);
    cJSON_AddItemToObject(r, "citations", cit ? cJSON_Parse(cit) : cJSON_CreateNull());
    cJSON_AddItemToObject(r, "timings", tim ? cJSON_Parse(tim) : cJSON_CreateNull());
    char *s = cJSON_PrintUnformatted(r);
    if (!s || fprintf(k->of, "%s\n", s) < 0 || fflush(k->of)) {
        k->rc = sala_errf(&k->e, SALA_EIO, "%s: write failed", k->outp);
    } else {
        idset_add(k->done, id);
        k->answered++;
        fprintf(stderr, "%s: %lld tokens, first token %.3fs, %.1f tok/s\n", id,
                (long long)a->ntokens, a->t_first, a->tok_per_s);
    }
    free(s);
    free(cit);
    free(tim);
    cJSON_Delete(r);
    return k->rc ? 1 : 0;
}

int cmd_batch(int argc, char **argv)
{
    enum { O_OUT = 256, O_BATCH };
    static const struct option opts[] = {
        APP_ASK_OPTIONS, {"batch", required_argument, 0, O_BATCH},
        {"out", required_argument, 0, O_OUT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    app_ask_args aa = app_ask_defaults();
    const char *outp = NULL;
    long width = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        char *end = NULL;
        int ao = app_ask_opt(ch, optarg, &aa);
        if (ao < 0) goto usage;
        if (ao > 0) continue;
        switch (ch) {
        case O_OUT: outp = optarg; break;
        case O_BATCH:
            width = strtol(optarg, &end, 10);
            if (*end || width < 1 || width > CTX_BATCH_MAX) goto usage;
            break;
        case 'h': fputs(cmd_batch_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    const char *dbopt = aa.db, *model = aa.model, *backend = aa.backend;
    ctx_ask_opts o = aa.o;
    if (optind + 2 != argc || !outp) goto usage;
    const char *corpus = argv[optind], *qpath = argv[optind + 1];
    sala_err e = {0};
    db *d = NULL;
    ctx_model *m = NULL;
    ctx_ctx *c = NULL;
    char *dir = NULL;
    FILE *of = NULL;
    idset done = {0};
    qlist l = {0};
    long skipped = 0, failed = 0;
    sink k = {0};
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc) goto fail;
    if ((rc = ctx_model_resolve(d, corpus, model, &dir, &e))) goto fail;
    if (!dir) {
        rc = sala_errf(&e, SALA_EINVAL, "batch needs a model: --model DIR, 'sala corpus model "
                       "%s DIR' or SALA_MODEL", corpus);
        goto fail;
    }
    done_ids(outp, &done);
    if ((rc = read_questions(qpath, &done, &l, &skipped, &failed, &e))) goto fail;
    if ((rc = ctx_model_open(dir, backend, &m, &e))) goto fail;
    if ((rc = ctx_open(d, corpus, m, &c, &e))) goto fail;
    if (!(of = fopen(outp, "a"))) {
        rc = sala_errf(&e, SALA_EIO, "%s: cannot open for appending", outp);
        goto fail;
    }
    k = (sink){.d = d, .c = c, .l = &l, .of = of, .outp = outp, .done = &done};
    rc = ctx_ask_batch(c, (const char *const *)l.qs, l.n, &o, (int)width, on_answer, &k, &e);
    if (rc == SALA_ECANCEL && k.rc) {   /* stopped by on_answer: its reason */
        rc = k.rc;
        e = k.e;
    }
    failed += k.failed;
    if (!rc) printf("batch: %ld answered, %ld already in %s, %ld failed\n", k.answered, skipped,
                    outp, failed);
fail:
    if (rc) app_errorf("%s", e.msg);
    if (of && fclose(of) && !rc) {
        app_errorf("%s: write failed", outp);
        rc = SALA_EIO;
    }
    qlist_free(&l);
    for (size_t i = 0; i < done.n; i++) free(done.ids[i]);
    free(done.ids);
    ctx_close(c);
    ctx_model_close(m);
    db_close(d);
    free(dir);
    if (!rc && failed) return EXIT_PARTIAL;
    return app_exit_code(rc);
usage:
    fputs(cmd_batch_usage, stderr);
    return EXIT_USER;
}
