/* test_ctx.c: cached contexts end to end on a small random model with the real tokenizer
 * (dense_len 256, so the question's queries go through InfLLM-V2 and evidence is exercised):
 * prefill -> save -> reopen in a new process gives the same answer tokens as a live sequence;
 * appending a document prefills only its tokens and equals a fresh prefill; removing the last
 * document rewinds to a checkpoint; mismatched model/tokenizer/corpus, bit flips and
 * truncations are refused; kill -9 at every point of a save leaves the previous state
 * opening; a full disk leaves it intact; retrieval mode, batch (resumable) and history. */
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctx/ctx.h"
#include "ctx/ctx_int.h"
#include "ctx/state.h"
#include "engine/random_model.h"

SALA_SUITE(ctx);

static char home[4200], dbp[4300], sdir[4300], model_a[4300], model_b[4300], model_t[4300];
static bool ready;
static char base[4096];   /* test_tmpdir() of setup: the documents */

static const char config_fmt[] =
    "{\"architectures\": [\"MiniCPMSALAForCausalLM\"], \"attn_use_output_gate\": true,"
    " \"attn_use_rope\": false, \"bos_token_id\": 1, \"dim_model_base\": 32,"
    " \"eos_token_id\": [2, 73440], \"head_dim\": 32, \"hidden_act\": \"silu\","
    " \"hidden_size\": 128, \"intermediate_size\": 256, \"lightning_head_dim\": 32,"
    " \"lightning_nh\": 4, \"lightning_nkv\": 4, \"lightning_scale\": \"1/sqrt(d)\","
    " \"lightning_use_rope\": true, \"max_position_embeddings\": 32768,"
    " \"mixer_types\": [\"minicpm4\", \"lightning-attn\", \"lightning-attn\", \"minicpm4\"],"
    " \"model_type\": \"minicpm_sala\", \"num_attention_heads\": 4, \"num_hidden_layers\": 4,"
    " \"num_key_value_heads\": 2, \"pad_token_id\": 2, \"qk_norm\": true, \"rms_norm_eps\": 1e-06,"
    " \"rope_scaling\": null, \"rope_theta\": %s, \"scale_depth\": 1.4, \"scale_emb\": 12,"
    " \"tie_word_embeddings\": false, \"use_output_gate\": true, \"use_output_norm\": true,"
    " \"vocab_size\": 73448, \"sparse_config\": {\"block_size\": 64, \"dense_len\": 256,"
    " \"init_blocks\": 1, \"kernel_size\": 32, \"kernel_stride\": 16, \"topk\": 4,"
    " \"use_nope\": false, \"window_size\": 128}}";

static const char *const words[] = {
    "contract", "licence", "party", "shall", "warranty", "zebra", "giraffe", "keeper", "river",
    "the", "of", "and", "software", "copy", "notice", "source", "binary", "penguin", "habitat",
    "terms", "clause", "liability", "distribution", "modify", "feeding", "visitor", "enclosure",
};

/* A text document of n words from seed, with a marker sentence. */
static void write_doc(const char *path, unsigned seed, int n, const char *marker)
{
    FILE *f = fopen(path, "w");
    uint32_t x = seed * 2654435761u + 7;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        fprintf(f, "%s%s", words[x % SALA_ARRAY_LEN(words)], i % 12 == 11 ? ".\n" : " ");
        if (i == n / 2) fprintf(f, "\n%s\n", marker);
    }
    fclose(f);
}

/* Run `sala ARGS` with the test store; output to out (may be NULL). Returns the exit code. */
static int sala(const char *args, char *out, size_t cap)
{
    static char cmd[20000], buf[1 << 16];
    snprintf(cmd, sizeof(cmd), "env -u SALA_MODEL SALA_HOME='%.4200s' SALA_TOKENIZER= %.4200s "
             "%.9000s 2>&1", home, test_bin(), args);
    if (!out) {
        out = buf;
        cap = sizeof(buf);
    }
    int rc = test_run(cmd, out, cap);
    if (rc && out == buf) fprintf(stderr, "sala %s: exit %d: %s\n", args, rc, out);
    return rc;
}

static void make_model(const char *dir, const char *theta, uint64_t seed)
{
    char cfg[4400], text[4096];
    snprintf(cfg, sizeof(cfg), "%s.json", dir);
    snprintf(text, sizeof(text), config_fmt, theta);
    CU_ASSERT_EQUAL_FATAL(test_write_file(cfg, text, strlen(text)), 0);
    sala_err e;
    int rc = eng_random_model_write(cfg, dir, seed, test_shared("tokenizer/tokenizer.json"), &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
}

static void setup(void)
{
    if (ready) return;
    const char *t = test_tmpdir();
    snprintf(base, sizeof(base), "%s", t);
    snprintf(home, sizeof(home), "%s/home", t);
    snprintf(dbp, sizeof(dbp), "%s/sala.db", home);
    snprintf(sdir, sizeof(sdir), "%s/contexts", home);
    snprintf(model_a, sizeof(model_a), "%s/model-a", t);
    snprintf(model_b, sizeof(model_b), "%s/model-b", t);
    snprintf(model_t, sizeof(model_t), "%s/model-t", t);
    make_model(model_a, "10000.0", 1);
    make_model(model_b, "20000.0", 2);   /* another config: another fingerprint */
    char cmd[16384];
    /* same model, a tokenizer.json that differs by one trailing byte */
    snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s' && printf ' ' >> '%s/tokenizer.json'", model_a,
             model_t, model_t);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    char p[4400];
    const char *markers[] = {"The zebra keeper feeds the penguins at noon.",
                             "Clause 7: the licensee shall not modify the binary.",
                             "Visitors must not enter the giraffe enclosure."};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/doc%d.txt", t, i);
        write_doc(p, (unsigned)i + 1, 300, markers[i]);
    }
    snprintf(p, sizeof(p), "%s/doc3.txt", t);
    write_doc(p, 9, 200, "Appendix: the river habitat notice.");
    CU_ASSERT_EQUAL_FATAL(sala("corpus new c", NULL, 0), 0);
    snprintf(cmd, sizeof(cmd), "add c '%s/doc0.txt' '%s/doc1.txt' '%s/doc2.txt'", t, t, t);
    CU_ASSERT_EQUAL_FATAL(sala(cmd, NULL, 0), 0);
    ready = true;
}

typedef struct {
    db *d;
    ctx_model *m;
} env;

/* sala rm the document named doc3.txt of corpus c. */
static void rm_doc3(db *d, const tok_tokenizer *tok)
{
    int64_t cid, id = -1;
    ctx_prefix px;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(db_corpus_find(d, "c", &cid, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(ctx_prefix_build(d, cid, tok, &px, &e), SALA_OK);
    for (int64_t i = 0; i < px.ndocs; i++)
        if (strstr(px.docs_tab[i].name, "doc3.txt")) id = px.docs_tab[i].id;
    ctx_prefix_free(&px);
    char args[64];
    snprintf(args, sizeof(args), "rm %lld", (long long)id);
    CU_ASSERT_EQUAL(sala(args, NULL, 0), 0);
}

static env env_open(const char *model)
{
    env v = {0};
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(db_open(dbp, &v.d, &e), SALA_OK);
    int rc = ctx_model_open(model, NULL, &v.m, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    return v;
}

static void env_close(env *v)
{
    ctx_model_close(v->m);
    db_close(v->d);
}

static int prefill(env *v, bool fresh, ctx_prefill_result *r, sala_err *e)
{
    ctx_prefill_opts o = {.state_dir = sdir, .fresh = fresh};
    int rc = ctx_prefill(v->d, "c", v->m, &o, r, e);
    if (rc) fprintf(stderr, "prefill: %s\n", e->msg);
    return rc;
}

static const ctx_ask_opts ask_opts = {
    .sampler = {.temperature = 0, .top_p = 1.0f, .repetition_penalty = 1.0f}, .max_tokens = 12,
};
static const char Q[] = "Who feeds the penguins?";

/* Ask Q on an opened context; tokens into out[0..12), returns the count. */
static int64_t ask(ctx_ctx *c, int32_t *out, ctx_answer *keep)
{
    ctx_answer a;
    sala_err e;
    int rc = ctx_ask(c, Q, &ask_opts, NULL, NULL, &a, &e);
    if (rc) fprintf(stderr, "ask: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    int64_t n = a.ntokens;
    memcpy(out, a.tokens, (size_t)n * sizeof(int32_t));
    if (keep) *keep = a;
    else ctx_answer_free(&a);
    return n;
}

/* Greedy answer from a sequence prefilled live with the prefix (no save, no load). */
static int64_t ask_live(env *v, const ctx_prefix *px, int32_t *out)
{
    const tok_tokenizer *tok = ctx_model_tokenizer(v->m);
    eng_engine *en = ctx_model_engine(v->m);
    const int64_t V = eng_engine_config(en)->vocab_size;
    tok_ids q = {0};
    sala_err e;
    eng_seq *s;
    float *lg = malloc((size_t)V * sizeof(float));
    CU_ASSERT_EQUAL_FATAL(tok_corpus_question(tok, Q, strlen(Q), false, &q, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, px->ids, px->n, NULL, 0, NULL, &e), SALA_OK);
    int64_t last = (int64_t)q.n - 1, n = 0;
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, q.ids, (int64_t)q.n, &last, 1, lg, &e), SALA_OK);
    for (; n < 12; n++) {
        int32_t best = 0;
        for (int64_t j = 1; j < V; j++)
            if (lg[j] > lg[best]) best = (int32_t)j;
        if (best == 2 || best == 73440) break;
        out[n] = best;
        if (n + 1 < 12) CU_ASSERT_EQUAL_FATAL(eng_seq_decode(s, best, lg, &e), SALA_OK);
    }
    eng_seq_free(s);
    tok_ids_free(&q);
    free(lg);
    return n;
}

/* Token ids from `sala ask --json` output ("tokens":[...]). */
static int64_t json_tokens(const char *out, int32_t *ids)
{
    const char *p = strstr(out, "\"tokens\":[");
    int64_t n = 0;
    if (!p) return -1;
    p += 10;
    while (*p && *p != ']') {
        ids[n++] = (int32_t)strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
    }
    return n;
}

static void t_reopen_same_answer(void)
{
    setup();
    env v = env_open(model_a);
    ctx_prefill_result r;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(prefill(&v, true, &r, &e), SALA_OK);
    CU_ASSERT(r.length > 1000);          /* well past dense_len: sparse selections happen */
    CU_ASSERT_EQUAL(r.prefilled, r.length);
    CU_ASSERT_EQUAL(r.documents, 3);
    CU_ASSERT(r.checkpoints >= 4);       /* 3 document starts, end of documents, end */
    ctx_ctx *c;
    CU_ASSERT_EQUAL_FATAL(ctx_open(v.d, "c", v.m, &c, &e), SALA_OK);
    int32_t a1[12], a2[12], live[12], proc[64];
    ctx_answer ans;
    int64_t n1 = ask(c, a1, &ans);
    int64_t n2 = ask(c, a2, NULL);       /* a second question starts from the same prefix */
    int64_t nl = ask_live(&v, &c->px, live);
    CU_ASSERT(n1 > 0);
    CU_ASSERT_EQUAL(n1, n2);
    CU_ASSERT_EQUAL(n1, nl);
    CU_ASSERT_EQUAL(memcmp(a1, a2, (size_t)n1 * 4), 0);
    CU_ASSERT_EQUAL(memcmp(a1, live, (size_t)n1 * 4), 0);
    /* evidence: prefix blocks the sparse layers chose, mapped to documents and locators */
    CU_ASSERT(ans.nevidence > 0);
    double sum = 0;
    for (int i = 0; i < ans.nevidence; i++) {
        CU_ASSERT_PTR_NOT_NULL(strstr(ans.evidence[i].doc_name, "doc"));
        CU_ASSERT(ans.evidence[i].score > 0 && ans.evidence[i].score <= 1);
        CU_ASSERT(ans.evidence[i].tok_first >= 0 && ans.evidence[i].tok_last < r.length);
        sum += ans.evidence[i].score;
    }
    CU_ASSERT(sum <= 1.0 + 1e-9);
    ctx_answer_free(&ans);
    ctx_close(c);
    /* a new process: sala ask loads the saved state */
    static char out[1 << 16];
    char args[4600];
    snprintf(args, sizeof(args), "ask c '%s' --model '%s' -n 12 --json", Q, model_a);
    CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
    int64_t np = json_tokens(out, proc);
    CU_ASSERT_EQUAL(np, n1);
    if (np == n1) CU_ASSERT_EQUAL(memcmp(a1, proc, (size_t)n1 * 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"evidence\":[{\"document\":\"doc"));
    env_close(&v);
}

static void t_append_and_rewind(void)
{
    setup();
    env v = env_open(model_a);
    ctx_prefill_result r0, r1, r2, r3;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(prefill(&v, false, &r0, &e), SALA_OK);   /* up to date: */
    CU_ASSERT_EQUAL(r0.prefilled, 0);                               /* nothing to do */
    char args[4600];
    snprintf(args, sizeof(args), "add c '%s/doc3.txt'", base);
    CU_ASSERT_EQUAL_FATAL(sala(args, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(prefill(&v, false, &r1, &e), SALA_OK);
    int64_t cid;
    ctx_prefix px;
    CU_ASSERT_EQUAL_FATAL(db_corpus_find(v.d, "c", &cid, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(ctx_prefix_build(v.d, cid, ctx_model_tokenizer(v.m), &px, &e), SALA_OK);
    const int64_t newdoc = px.docs_tab[3].tok1 - px.docs_tab[3].tok0;
    /* only the new document (plus the tokens closing the user message) is prefilled */
    CU_ASSERT_EQUAL(r1.length, px.n);
    const int64_t tail = px.n - px.docs_end;   /* <|im_end|> and the newline after it */
    CU_ASSERT(tail > 0 && tail <= 4);
    if (r1.prefilled != newdoc + tail)
        fprintf(stderr, "append: prefilled %lld, new document %lld tokens [%lld, %lld), "
                "reused %lld of %lld\n", (long long)r1.prefilled, (long long)newdoc,
                (long long)px.docs_tab[3].tok0, (long long)px.docs_tab[3].tok1,
                (long long)r1.reused, (long long)r1.length);
    CU_ASSERT_EQUAL(r1.prefilled, newdoc + tail);
    CU_ASSERT_EQUAL(r1.reused + r1.prefilled, r1.length);
    ctx_ctx *c;
    int32_t inc[12], fresh[12];
    CU_ASSERT_EQUAL_FATAL(ctx_open(v.d, "c", v.m, &c, &e), SALA_OK);
    int64_t ni = ask(c, inc, NULL);
    ctx_close(c);
    CU_ASSERT_EQUAL_FATAL(prefill(&v, true, &r2, &e), SALA_OK);      /* everything again */
    CU_ASSERT_EQUAL(r2.prefilled, r2.length);
    CU_ASSERT_EQUAL_FATAL(ctx_open(v.d, "c", v.m, &c, &e), SALA_OK);
    int64_t nf = ask(c, fresh, NULL);
    ctx_close(c);
    CU_ASSERT_EQUAL(ni, nf);
    CU_ASSERT_EQUAL(memcmp(inc, fresh, (size_t)ni * 4), 0);
    /* remove the last document: rewind to the checkpoint at its start */
    rm_doc3(v.d, ctx_model_tokenizer(v.m));
    CU_ASSERT_EQUAL_FATAL(prefill(&v, false, &r3, &e), SALA_OK);
    CU_ASSERT_EQUAL(r3.reused, px.docs_tab[3].tok0);
    CU_ASSERT_EQUAL(r3.prefilled, tail);
    CU_ASSERT_EQUAL(r3.length, r3.reused + r3.prefilled);
    ctx_prefix_free(&px);
    env_close(&v);
}

static void t_refusals(void)
{
    setup();
    sala_err e;
    ctx_prefill_result r;
    env a = env_open(model_a);
    CU_ASSERT_EQUAL_FATAL(prefill(&a, false, &r, &e), SALA_OK);
    char pa[4400], pb[4400], cmd[18000];
    snprintf(pa, sizeof(pa), "%s", r.path);
    /* another model's state file in this model's place */
    env b = env_open(model_b);
    CU_ASSERT_EQUAL_FATAL(prefill(&b, false, &r, &e), SALA_OK);
    snprintf(pb, sizeof(pb), "%s", r.path);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s.keep' && cp '%s' '%s'", pb, pb, pa, pb);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    ctx_ctx *c = NULL;
    CU_ASSERT_EQUAL(ctx_open(b.d, "c", b.m, &c, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "model_fingerprint"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "sala prefill"));
    ctx_close(c);
    snprintf(cmd, sizeof(cmd), "mv '%s.keep' '%s'", pb, pb);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    env_close(&b);
    /* same model, another tokenizer.json: the row is found, the file refused */
    env t = env_open(model_t);
    c = NULL;
    CU_ASSERT_EQUAL(ctx_open(t.d, "c", t.m, &c, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "tokenizer_hash"));
    ctx_close(c);
    env_close(&t);
    /* bit flips in the data and truncation: refused; the file is restored after */
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s.keep'", pa, pa);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(pa, &st), 0);
    const off_t offs[] = {100, st.st_size / 3, st.st_size / 2, st.st_size - 40};
    for (size_t i = 0; i < SALA_ARRAY_LEN(offs); i++) {
        int fd = open(pa, O_RDWR);
        unsigned char ch;
        CU_ASSERT_EQUAL(pread(fd, &ch, 1, offs[i]), 1);
        ch ^= (unsigned char)(1u << (i % 8));
        CU_ASSERT_EQUAL(pwrite(fd, &ch, 1, offs[i]), 1);
        close(fd);
        c = NULL;
        CU_ASSERT_NOT_EQUAL(ctx_open(a.d, "c", a.m, &c, &e), SALA_OK);
        CU_ASSERT_PTR_NULL(c);
        ctx_close(c);
        snprintf(cmd, sizeof(cmd), "cp '%s.keep' '%s'", pa, pa);
        CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    }
    CU_ASSERT_EQUAL(truncate(pa, st.st_size - 1000), 0);
    c = NULL;
    CU_ASSERT_NOT_EQUAL(ctx_open(a.d, "c", a.m, &c, &e), SALA_OK);
    if (!strstr(e.msg, "sala prefill")) fprintf(stderr, "truncated: %s\n", e.msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "sala prefill"));
    ctx_close(c);
    snprintf(cmd, sizeof(cmd), "mv '%s.keep' '%s'", pa, pa);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    c = NULL;
    CU_ASSERT_EQUAL(ctx_open(a.d, "c", a.m, &c, &e), SALA_OK);
    ctx_close(c);
    /* the corpus changed since the prefill */
    snprintf(cmd, sizeof(cmd), "add c '%s/doc3.txt'", base);
    CU_ASSERT_EQUAL_FATAL(sala(cmd, NULL, 0), 0);
    c = NULL;
    CU_ASSERT_EQUAL(ctx_open(a.d, "c", a.m, &c, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "changed since it was prefilled"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "sala prefill"));
    ctx_close(c);
    rm_doc3(a.d, ctx_model_tokenizer(a.m));
    env_close(&a);
}

/* ---- crashes and full disk during a save (in a forked child: the save itself uses no
 * OpenMP, so the child never touches the parent's thread pool) ---- */

static int kill_at, hook_calls;
static void kill_hook(const char *s, uint64_t w)
{
    (void)s;
    (void)w;
    if (hook_calls++ == kill_at) raise(SIGKILL);
}
static void kill_step(const char *s) { kill_hook(s, 0); }

static int count_tmp(void)
{
    char cmd[4600], out[64];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '\\.tmp-' || true", sdir);
    test_run(cmd, out, sizeof(out));
    return atoi(out);
}

/* Corpus c's context for v's model, prefilled when out of date (*r), opened. */
static ctx_ctx *ctx_ready(env *v, ctx_prefill_result *r)
{
    sala_err e;
    ctx_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(prefill(v, false, r, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(ctx_open(v->d, "c", v->m, &c, &e), SALA_OK);
    return c;
}

static void t_crash_and_disk_full(void)
{
    setup();
    env v = env_open(model_a);
    sala_err e;
    ctx_prefill_result r;
    ctx_ctx *c = ctx_ready(&v, &r);
    char th[17];
    int points = 0, new_after = 0;
    for (kill_at = 0; kill_at < 200; kill_at++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            ctx_hex64(0, th);
            hook_calls = 0;
            ctx_set_save_hook(kill_hook);
            sf_set_step_hook(kill_step);
            sala_err ce;
            /* a state with another token hash: after a crash the old one must still open */
            int rc = ctx_state_save(r.path, v.m, "0000000000000000", "c", &c->px, c->seq, &ce);
            _exit(rc ? 3 : 0);
        }
        int st;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st)) {
            CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
            break;   /* every point before this one was a crash */
        }
        CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        points++;
        /* the old state, or (killed after the rename) the complete new one */
        sf_reader *sr = NULL;
        int rc = ctx_state_open(r.path, v.m, NULL, &sr, &e);
        if (!rc) rc = sf_verify(sr, &e);
        const char *h = sr ? sf_meta(sr, "tokens_hash") : NULL;
        const bool is_new = h && !strcmp(h, "0000000000000000");
        sf_close(sr);
        if (rc) fprintf(stderr, "after a crash at point %d: %s\n", kill_at, e.msg);
        CU_ASSERT_EQUAL(rc, SALA_OK);
        new_after += is_new;
        if (!is_new) {
            ctx_ctx *c2 = NULL;
            CU_ASSERT_EQUAL(ctx_open(v.d, "c", v.m, &c2, &e), SALA_OK);
            ctx_close(c2);
        }
    }
    CU_ASSERT(new_after <= 1);   /* only a kill between rename and directory fsync */
    CU_ASSERT(points >= 20);
    /* the completed save replaced the state: its token hash is not the corpus's any more */
    ctx_ctx *c3 = NULL;
    CU_ASSERT_EQUAL(ctx_open(v.d, "c", v.m, &c3, &e), SALA_EINVAL);
    ctx_close(c3);
    /* the next start removes the temp files of the killed writers */
    CU_ASSERT(count_tmp() > 0);
    CU_ASSERT_EQUAL(prefill(&v, false, &r, &e), SALA_OK);
    CU_ASSERT_EQUAL(count_tmp(), 0);
    ctx_close(c);
    CU_ASSERT_EQUAL_FATAL(ctx_open(v.d, "c", v.m, &c, &e), SALA_OK);
    /* a full disk (file size limit): a clear error, no temp file, the old state intact */
    int pfd[2];
    CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {64 << 10, 64 << 10};
        setrlimit(RLIMIT_FSIZE, &rl);
        sala_err ce = {0};
        int rc = ctx_state_save(r.path, v.m, "0000000000000000", "c", &c->px, c->seq, &ce);
        ssize_t wn = write(pfd[1], ce.msg, strlen(ce.msg));
        (void)wn;
        _exit(rc ? 0 : 1);
    }
    close(pfd[1]);
    char msg[SALA_ERR_MAX] = "";
    ssize_t got = read(pfd[0], msg, sizeof(msg) - 1);
    msg[got > 0 ? got : 0] = 0;
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT(strlen(msg) > 0);
    CU_ASSERT_EQUAL(count_tmp(), 0);
    ctx_close(c);
    c = NULL;
    CU_ASSERT_EQUAL(ctx_open(v.d, "c", v.m, &c, &e), SALA_OK);
    ctx_close(c);
    env_close(&v);
}

static void t_commands(void)
{
    setup();
    static char out[1 << 16];
    char args[9000], qf[4400], of[4400];
    static char cmd[20000];
    /* retrieval mode: a corpus with no model */
    CU_ASSERT_EQUAL(sala("corpus new r", NULL, 0), 0);
    snprintf(args, sizeof(args), "add r '%s/doc1.txt'", base);
    CU_ASSERT_EQUAL(sala(args, NULL, 0), 0);
    CU_ASSERT_EQUAL(sala("ask r 'what may the licensee modify?'", out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "retrieval mode: no model configured"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "doc1.txt, "));
    CU_ASSERT_EQUAL(sala("history r", out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "[retrieval]  what may the licensee modify?"));
    /* sala prefill --model remembers the model; ask and batch use it */
    snprintf(args, sizeof(args), "prefill c --model '%s'", model_a);
    CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
    CU_ASSERT_EQUAL(sala("corpus model c", out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, model_a));
    snprintf(args, sizeof(args), "ask c '%s' -n 12", Q);
    static char ans[1 << 16];
    CU_ASSERT_EQUAL(sala(args, ans, sizeof(ans)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ans, "evidence (what the sparse layers read"));
    snprintf(qf, sizeof(qf), "%s/q.txt", test_tmpdir());
    snprintf(of, sizeof(of), "%s/answers.jsonl", test_tmpdir());
    char qs[512];
    snprintf(qs, sizeof(qs), "What is clause 7?\n{\"id\": \"penguins\", \"question\": \"%s\"}\n"
             "Where is the giraffe?\n", Q);
    CU_ASSERT_EQUAL_FATAL(test_write_file(qf, qs, strlen(qs)), 0);
    snprintf(args, sizeof(args), "batch c '%s' --out '%s' -n 12", qf, of);
    CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "3 answered, 0 already"));
    CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "0 answered, 3 already"));
    snprintf(cmd, sizeof(cmd), "wc -l < '%s'", of);
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_EQUAL(atoi(out), 3);
    /* the batch's second question (after another one) answers as `sala ask` did */
    FILE *f = fopen(of, "r");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (f && getline(&line, &cap, f) > 0)
        if (strstr(line, "\"id\":\"penguins\"")) {
            const char *p = strstr(line, "\"answer\":\"");
            char *q = p ? strstr(p + 10, "\",\"citations\"") : NULL;
            CU_ASSERT_PTR_NOT_NULL_FATAL(q);
            *q = 0;
            /* plain answer text precedes the blank line of `sala ask` output */
            found = !strchr(p + 10, '\\') ? strstr(ans, p + 10) == ans : true;
        }
    free(line);
    if (f) fclose(f);
    CU_ASSERT(found);
    CU_ASSERT_EQUAL(sala("history c", out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "[model]  Where is the giraffe?"));
    /* generate --prompt goes through the tokenizer and prints text */
    snprintf(args, sizeof(args), "generate --model '%s' --prompt 'Hello there' -n 4", model_a);
    CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
}

/* ctx_ask_batch: answers as ctx_ask's */
typedef struct {
    int32_t tok[8][12];
    int64_t n[8];
    double ev[8];             /* score of the first evidence entry */
    int calls, failed;
} got;

static int on_batch(void *ud, int64_t i, int rc, const ctx_answer *a, const sala_err *e)
{
    got *g = ud;
    g->calls++;
    if (rc) {
        CU_ASSERT_PTR_NOT_NULL(strstr(e->msg, "max_position_embeddings"));
        g->failed++;
        return 0;
    }
    g->n[i] = a->ntokens;
    memcpy(g->tok[i], a->tokens, (size_t)a->ntokens * sizeof(int32_t));
    g->ev[i] = a->nevidence ? a->evidence[0].score : -1;
    return 0;
}

/* Four questions through ctx_ask_batch at widths 1 and 3 (forks, the batched decode step,
 * continuous refill) give ctx_ask's greedy tokens and evidence; with sampling, each question's
 * own seeded sampler makes the answer independent of the width. A question too long for the
 * model fails alone. */
static void t_batch(void)
{
    setup();
    env v = env_open(model_a);
    ctx_prefill_result r;
    sala_err e;
    ctx_ctx *c = ctx_ready(&v, &r);
    const char *qs[4] = {"What is clause 7?", Q, "Where is the giraffe?", "Who is the keeper?"};
    got one = {0}, w1 = {0}, w3 = {0}, s1 = {0}, s3 = {0};
    for (int i = 0; i < 4; i++) {
        ctx_answer a;
        CU_ASSERT_EQUAL_FATAL(ctx_ask(c, qs[i], &ask_opts, NULL, NULL, &a, &e), SALA_OK);
        on_batch(&one, i, 0, &a, &e);
        ctx_answer_free(&a);
    }
    CU_ASSERT_EQUAL(ctx_ask_batch(c, qs, 4, &ask_opts, 1, on_batch, &w1, &e), SALA_OK);
    CU_ASSERT_EQUAL(ctx_ask_batch(c, qs, 4, &ask_opts, 3, on_batch, &w3, &e), SALA_OK);
    CU_ASSERT_EQUAL(w1.calls, 4);
    CU_ASSERT_EQUAL(w3.calls, 4);
    CU_ASSERT_EQUAL(w1.failed + w3.failed, 0);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT(one.n[i] > 0);
        CU_ASSERT_EQUAL(w1.n[i], one.n[i]);
        CU_ASSERT_EQUAL(w3.n[i], one.n[i]);
        CU_ASSERT_EQUAL(memcmp(w1.tok[i], one.tok[i], sizeof(one.tok[i])), 0);
        CU_ASSERT_EQUAL(memcmp(w3.tok[i], one.tok[i], sizeof(one.tok[i])), 0);
        CU_ASSERT(one.ev[i] > 0);
        CU_ASSERT_DOUBLE_EQUAL(w3.ev[i], one.ev[i], 1e-12);
    }
    ctx_ask_opts so = ask_opts;
    so.sampler.temperature = 1.5f;
    so.sampler.seed = 99;
    CU_ASSERT_EQUAL(ctx_ask_batch(c, qs, 4, &so, 1, on_batch, &s1, &e), SALA_OK);
    CU_ASSERT_EQUAL(ctx_ask_batch(c, qs, 4, &so, 3, on_batch, &s3, &e), SALA_OK);
    bool differs = false;
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(s3.n[i], s1.n[i]);
        CU_ASSERT_EQUAL(memcmp(s3.tok[i], s1.tok[i], sizeof(s1.tok[i])), 0);
        differs |= memcmp(s1.tok[i], one.tok[i], sizeof(one.tok[i])) != 0;
    }
    CU_ASSERT(differs);   /* the sampler did sample */
    /* a question longer than the model's positions fails alone */
    const size_t big = 40000;
    char *lq = malloc(big * 6 + 1);
    for (size_t i = 0; i < big; i++) memcpy(lq + 6 * i, "zebra ", 6);
    lq[big * 6] = 0;
    const char *mixed[3] = {qs[0], lq, qs[2]};
    got m = {0};
    CU_ASSERT_EQUAL(ctx_ask_batch(c, mixed, 3, &ask_opts, 2, on_batch, &m, &e), SALA_OK);
    CU_ASSERT_EQUAL(m.calls, 3);
    CU_ASSERT_EQUAL(m.failed, 1);
    CU_ASSERT_EQUAL(memcmp(m.tok[0], one.tok[0], sizeof(one.tok[0])), 0);
    CU_ASSERT_EQUAL(memcmp(m.tok[2], one.tok[2], sizeof(one.tok[2])), 0);
    free(lq);
    ctx_close(c);
    env_close(&v);
    /* the command: --batch 3 writes the answers --batch 1 writes (any line order) */
    char qf[4400], of[2][4400];
    static char args[16384];
    snprintf(qf, sizeof(qf), "%s/qb.txt", test_tmpdir());
    char text[512];
    snprintf(text, sizeof(text), "%s\n%s\n%s\n%s\n", qs[0], qs[1], qs[2], qs[3]);
    CU_ASSERT_EQUAL_FATAL(test_write_file(qf, text, strlen(text)), 0);
    char *ans[2][4] = {{0}};
    for (int k = 0; k < 2; k++) {
        snprintf(of[k], sizeof(of[k]), "%s/batch-w%d.jsonl", test_tmpdir(), k ? 3 : 1);
        snprintf(args, sizeof(args), "batch c '%s' --out '%s' -n 12 --batch %d", qf, of[k],
                 k ? 3 : 1);
        static char out[1 << 16];
        CU_ASSERT_EQUAL(sala(args, out, sizeof(out)), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "4 answered, 0 already"));
        FILE *f = fopen(of[k], "r");
        char *line = NULL;
        size_t cap = 0;
        while (f && getline(&line, &cap, f) > 0) {
            const char *id = strstr(line, "\"id\":\"q"), *p = strstr(line, "\"answer\":\"");
            const char *end = p ? strstr(p, "\",\"citations\"") : NULL;
            CU_ASSERT_FATAL(id && p && end);
            const int i = id[7] - '1';
            CU_ASSERT_FATAL(i >= 0 && i < 4);
            ans[k][i] = strndup(p, (size_t)(end - p));
        }
        free(line);
        if (f) fclose(f);
    }
    for (int i = 0; i < 4; i++) {
        CU_ASSERT(ans[0][i] && ans[1][i] && !strcmp(ans[0][i], ans[1][i]));
        free(ans[0][i]);
        free(ans[1][i]);
    }
    static char out[4096];
    CU_ASSERT_EQUAL(sala("batch c x --out y --batch 0", out, sizeof(out)), 1);   /* usage */
}

void suite_ctx(void)
{
    SALA_ADD("ctx", {"reopen in a new process: same answer as live", t_reopen_same_answer},
             {"append prefills only new tokens; remove rewinds", t_append_and_rewind},
             {"model/tokenizer/corpus mismatch, bit flips, truncation refused", t_refusals},
             {"kill -9 at every save point; disk full", t_crash_and_disk_full},
             {"retrieval mode, prefill/ask/batch/history commands", t_commands},
             {"batch: forks decoding together answer as ask (widths 1, 3)", t_batch});
}
