/* cmd_ask.c: `sala ask CORPUS "question"`: answer from the cached context, with citations; or,
 * with no model configured, the best full-text passages (retrieval mode). */
#include "app.h"
#include "app/ask_opts.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx/ctx.h"

SALA_COMMAND(ask, "ask a question of a corpus (cached context, or retrieval)");

const char cmd_ask_usage[] =
    "usage: sala ask CORPUS \"question\" [--model DIR] [--temp T] [--top-k K] [--top-p P]\n"
    "                [--rep-penalty R] [--seed S] [-n MAX_TOKENS] [--think] [--json]\n"
    "                [--db FILE] [--backend B]\n\n"
    "Opens the corpus's cached context ('sala prefill'), asks the question and streams the\n"
    "answer; then lists the quotes it contains (checked verbatim against the documents) and\n"
    "the evidence: the passages the model's sparse layers selected while reading the question.\n"
    "Question, answer, citations and timings are stored ('sala history').\n"
    "The model: --model, else the corpus's model, else $SALA_MODEL. With none, answers in\n"
    "retrieval mode: the best-matching passages of the full-text index, with locators.\n\n"
    "options:\n"
    "  --think      let the model think before answering, and show the thinking\n"
    "  --json       print one JSON object (answer, token ids, citations, timings) instead\n"
    "  --time-fork  also time one fork of the opened state (benchmarks)\n"
    "  -n N         at most N answer tokens (512); --temp 0 (default) is greedy\n";

static int print_text(void *ud, const char *t, size_t n)
{
    (void)ud;
    fwrite(t, 1, n, stdout);
    fflush(stdout);
    return 0;
}

static int retrieval(db *d, const char *corpus, const char *q, bool json, sala_err *e)
{
    ctx_passage *p;
    int n;
    int rc = ctx_retrieve(d, corpus, q, 5, true, &p, &n, e);
    if (rc) return rc;
    if (json) {
        cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "passages");
        cJSON_AddStringToObject(o, "mode", "retrieval");
        for (int i = 0; i < n; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddItemToArray(a, x);
            cJSON_AddStringToObject(x, "document", p[i].doc_name);
            cJSON_AddStringToObject(x, "locator", p[i].locator);
            cJSON_AddStringToObject(x, "snippet", p[i].snippet);
        }
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("retrieval mode: no model configured (see 'sala corpus model' or --model)\n");
        if (!n) printf("no passage matches.\n");
        for (int i = 0; i < n; i++)
            printf("\n%d. %s, %s\n   %s\n", i + 1, p[i].doc_name, p[i].locator, p[i].snippet);
    }
    ctx_passages_free(p, n);
    return SALA_OK;
}

static void print_citations(const ctx_answer *a)
{
    if (a->nquotes) {
        printf("\nquotes:\n");
        for (int i = 0; i < a->nquotes; i++) {
            const ctx_cite *c = &a->quotes[i];
            if (c->verified)
                printf("  \"%s\"  verified: %s, %s\n", c->quote, c->doc_name, c->locator);
            else
                printf("  \"%s\"  NOT FOUND in the documents\n", c->quote);
        }
    }
    if (a->nevidence) {
        printf("\nevidence (what the sparse layers read for this question):\n");
        for (int i = 0; i < a->nevidence; i++)
            printf("  %4.1f%%  %s, %s\n", 100 * a->evidence[i].score, a->evidence[i].doc_name,
                   a->evidence[i].locator);
    }
}

int cmd_ask(int argc, char **argv)
{
    enum { O_JSON = 256, O_FORK };
    static const struct option opts[] = {
        APP_ASK_OPTIONS, {"json", no_argument, 0, O_JSON}, {"time-fork", no_argument, 0, O_FORK},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    app_ask_args aa = app_ask_defaults();
    bool json = false, time_fork = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        int ao = app_ask_opt(ch, optarg, &aa);
        if (ao < 0) goto usage;
        if (ao > 0) continue;
        switch (ch) {
        case O_JSON: json = true; break;
        case O_FORK: time_fork = true; break;
        case 'h': fputs(cmd_ask_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    const char *dbopt = aa.db, *model = aa.model, *backend = aa.backend;
    ctx_ask_opts o = aa.o;
    if (optind + 2 != argc) goto usage;
    const char *corpus = argv[optind], *question = argv[optind + 1];
    sala_err e = {0};
    db *d = NULL;
    ctx_model *m = NULL;
    ctx_ctx *c = NULL;
    ctx_answer a = {0};
    char *dir = NULL;
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc) goto fail;
    if ((rc = ctx_model_resolve(d, corpus, model, &dir, &e))) goto fail;
    if (!dir) {
        rc = retrieval(d, corpus, question, json, &e);
        goto fail;
    }
    if ((rc = ctx_model_open(dir, backend, &m, &e))) goto fail;
    if ((rc = ctx_open(d, corpus, m, &c, &e))) goto fail;
    if (time_fork) {   /* benchmark: one fork of the opened prefix state */
        eng_seq *f = NULL;
        const double t0 = sala_now();
        rc = ctx_fork(c, &f, &e);
        const double dt = sala_now() - t0;
        eng_seq_free(f);
        if (rc) goto fail;
        fprintf(stderr, "fork of the %lld-token state: %.4fs\n", (long long)ctx_length(c), dt);
    }
    rc = ctx_ask(c, question, &o, json ? NULL : print_text, NULL, &a, &e);
    if (rc) goto fail;
    if ((rc = ctx_answer_store(d, c, question, &a, &e))) goto fail;
    if (json) {
        char *cit = ctx_answer_citations_json(&a), *tim = ctx_answer_timings_json(&a);
        cJSON *o2 = cJSON_CreateObject(), *ids = cJSON_CreateArray();
        cJSON_AddStringToObject(o2, "mode", "model");
        cJSON_AddStringToObject(o2, "question", question);
        cJSON_AddStringToObject(o2, "answer", a.text);
        for (int64_t i = 0; i < a.ntokens; i++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(a.tokens[i]));
        cJSON_AddItemToObject(o2, "tokens", ids);
        cJSON_AddItemToObject(o2, "citations", cit ? cJSON_Parse(cit) : cJSON_CreateNull());
        cJSON_AddItemToObject(o2, "timings", tim ? cJSON_Parse(tim) : cJSON_CreateNull());
        char *s = cJSON_PrintUnformatted(o2);
        if (s) puts(s);
        free(s);
        free(cit);
        free(tim);
        cJSON_Delete(o2);
    } else {
        printf("\n");
        fflush(stdout);   /* the answer ends before the timing line on stderr */
        fprintf(stderr, "open %.3fs, question prefill %.3fs (%lld tokens), first token %.3fs, "
                "%.1f tok/s, %lld tokens%s\n", a.t_open, a.t_question,
                (long long)a.question_tokens, a.t_first, a.tok_per_s, (long long)a.ntokens,
                a.stopped ? "" : " (stopped at -n)");
        print_citations(&a);
    }
fail:
    if (rc) app_errorf("%s", e.msg);
    ctx_answer_free(&a);
    ctx_close(c);
    ctx_model_close(m);
    db_close(d);
    free(dir);
    return app_exit_code(rc);
usage:
    fputs(cmd_ask_usage, stderr);
    return EXIT_USER;
}
