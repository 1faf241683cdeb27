/* bench_ctx.c: `sala bench gpu --random-weights full --context 1M,256K [--questions 32]
 * [--answer 32] [--batch-at 256K] [--batch-width W] [--state-dir DIR] [--keep]`: the cached-context measurements
 * of issue 7 (docs/CONTEXTS.md) on a backend with random weights made on the device.
 *
 * Random token ids stand for the corpus and the questions: no tokenizer, no documents, only the
 * engine's work and the state file, which is what the timings are about. Per context length L:
 *   prefill L tokens (TTFT), checkpoint at L, save through the state container
 *   (engine/statefile.h + eng_seq_save, as ctx/state.c does: sf_create, pieces, sf_commit with
 *   fsync and rename), free the sequence;
 *   reopen cold (the file's pages dropped from the page cache first) and warm: sf_open (header,
 *   meta, directory checked) + eng_seq_load (every chunk's checksum verified as it is read, the
 *   state uploaded to the device);
 *   fork the loaded state; one question of --qtokens tokens on the fork to the first answer
 *   token's logits; greedy decode of --answer tokens;
 *   a copying fork (SALA_CUDA_FORK_COPY=1) timed beside the sharing one;
 *   at the --batch-at lengths: --questions questions from the same loaded state, first each
 *   rewound to the prefix checkpoint (never re-prefilled) and answered one after another, then
 *   the same questions as `sala batch` runs them: a fork each (sharing the prefix caches), its
 *   question prefilled, and --batch-width of them (default all) decoding together, one
 *   eng_seq_decode_batch per step; the greedy answers of both ways are compared.
 * Prints one line per step, one JSON line per length and a table at the end. */
#include "bench.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/random_model.h"
#include "engine/statefile.h"

typedef struct {
    int64_t len;
    double ttft, save_s, open_cold, load_cold, open_warm, load_warm, fork_s, q_first, q_tps;
    uint64_t bytes;
    int nq;                      /* batch: questions asked (0: no batch at this length) */
    double batch_s, batch_first_avg, batch_rewind_max;
    int64_t batch_gen, batch_fed;
    /* the same questions forked (shared prefix) and decoded together */
    int width;
    double fork_copy_s;          /* a copying fork (SALA_CUDA_FORK_COPY=1), for comparison */
    uint64_t fork_shared;        /* bytes the step-4 fork shares with the loaded state */
    double bat_s, bat_decode_s, bat_fork_avg, bat_fork_max, bat_first_avg;
    double bat_decode_serial_s;  /* decode steps with SALA_CUDA_SIDE_STREAMS=0 */
    int64_t tok_same, tok_bad;   /* batched greedy token == the unbatched one (teacher forced);
                                    differing where the unbatched top-2 margin > 0.25 */
} ctx_row;

static int write_piece(void *ud, const char *section, const void *data, size_t n, sala_err *e)
{
    return sf_write(ud, section, data, n, e);
}

static int rd_size(void *ud, const char *section, size_t *n, sala_err *e)
{
    return sf_section_size(ud, section, n, e);
}

static int rd_read(void *ud, const char *section, size_t off, void *dst, size_t n, sala_err *e)
{
    return sf_read(ud, section, off, dst, n, e);
}

/* Drop path's pages from the page cache: the whole cache (root, where /proc/sys is writable)
 * and the file's own pages (posix_fadvise; works for a clean file without privileges). *how
 * names what worked. */
static void drop_cache(const char *path, const char **how)
{
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    int whole = f && fputs("3\n", f) >= 0;
    if (f && fclose(f) != 0) whole = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int own = fd >= 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    if (fd >= 0) close(fd);
    *how = whole && own ? "drop_caches+fadvise" : whole ? "drop_caches" : own ? "fadvise" : "none";
}

static int32_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (x[j] > x[best]) best = j;
    return (int32_t)best;
}

/* top-1 minus top-2 of x[0..n) */
static float margin(const float *x, int64_t n)
{
    float a = -INFINITY, b = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        if (x[j] > a) {
            b = a;
            a = x[j];
        } else if (x[j] > b) {
            b = x[j];
        }
    return a - b;
}

static void fill_random(eng_rng *r, int32_t *t, int64_t n, int64_t vocab)
{
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)(3 + eng_rng_next(r) % (uint64_t)(vocab - 3));
}

/* Open path and load its sequence; *open_s / *load_s: seconds of sf_open and eng_seq_load. */
static int reopen(eng_engine *en, const char *path, const char *fp, eng_seq **out, double *open_s,
                  double *load_s, sala_err *e)
{
    const sf_field expect[] = {{"format", "sala-bench-context"}, {"model_fingerprint", fp}};
    sf_reader *r = NULL;
    double t0 = sala_now();
    int rc = sf_open(path, expect, SALA_ARRAY_LEN(expect), &r, e);
    *open_s = sala_now() - t0;
    if (rc) return rc;
    const eng_state_reader rd = {rd_size, rd_read, r};
    t0 = sala_now();
    rc = eng_seq_load(en, &rd, out, e);
    *load_s = sala_now() - t0;
    sf_close(r);
    return rc;
}

/* Prefill the question q[0..nq) on s, then greedy-decode until ngen answer tokens exist (the
 * first comes from the question's logits); out[0..ngen) receives them (NULL: not kept).
 * *first: seconds to the first answer token's logits; *dec: seconds of the decode steps. */
static int ask(eng_seq *s, const int32_t *q, int64_t nq, int ngen, float *logits, int64_t vocab,
               int32_t *out, float *marg, double *first, double *dec, sala_err *e)
{
    const int64_t row = nq - 1;
    double t0 = sala_now();
    int rc = eng_seq_prefill(s, q, nq, &row, 1, logits, e);
    *first = sala_now() - t0;
    t0 = sala_now();
    for (int i = 0; i < ngen && !rc; i++) {
        const int32_t t = argmax(logits, vocab);
        if (out) out[i] = t;
        if (marg) marg[i] = margin(logits, vocab);
        if (i + 1 < ngen) rc = eng_seq_decode(s, t, logits, e);
    }
    *dec = sala_now() - t0;
    return rc;
}

/* The questions qall[nq][qtok] as ctx_ask_batch runs them: in waves of width, each question
 * forks s (sharing its caches), prefills its question, and the wave decodes together, one
 * eng_seq_decode_batch per step; out[nq][ngen] receives the greedy token of every step. force
 * (teacher forcing, may be NULL): the tokens fed are force[nq][ngen] instead of out's, so that
 * every step can be compared with the run that produced force. steps > 0: only that many decode
 * steps of the first wave (profiling). */
static int ask_batched(eng_engine *en, eng_seq *s, const int32_t *qall, int nq, int qtok, int ngen, int width,
                       int64_t V, const int32_t *force, int32_t *out, int steps, ctx_row *row,
                       sala_err *e)
{
    eng_seq **F = calloc((size_t)width, sizeof(*F));
    float *lg = malloc((size_t)width * (size_t)V * sizeof(float));
    int32_t *tok = malloc((size_t)width * sizeof(int32_t));
    double firsts = 0, forks = 0;
    int rc = F && lg && tok ? SALA_OK : sala_errf(e, SALA_ENOMEM, "out of memory");
    const double t0 = sala_now();
    for (int i0 = 0; i0 < nq && !rc; i0 += width) {
        const int w = nq - i0 < width ? nq - i0 : width;
        for (int j = 0; j < w && !rc; j++) {
            const double tf = sala_now();
            if ((rc = eng_seq_fork(s, &F[j], e))) break;
            const double df = sala_now() - tf;
            forks += df;
            if (df > row->bat_fork_max) row->bat_fork_max = df;
            const int64_t last = qtok - 1;
            rc = eng_seq_prefill(F[j], qall + (size_t)(i0 + j) * qtok, qtok, &last, 1,
                                 lg + (size_t)j * V, e);
            firsts += sala_now() - t0;
            out[(size_t)(i0 + j) * ngen] = argmax(lg + (size_t)j * V, V);
            tok[j] = force ? force[(size_t)(i0 + j) * ngen] : out[(size_t)(i0 + j) * ngen];
        }
        if (steps > 0 && !rc) eng_engine_profile(en, 1, NULL);
        const double td = sala_now();
        for (int k = 1; k < (steps > 0 ? steps + 1 : ngen) && !rc; k++) {
            if ((rc = eng_seq_decode_batch(F, w, tok, lg, e))) break;
            for (int j = 0; j < w; j++) {
                const size_t at = (size_t)(i0 + j) * ngen + (size_t)(k < ngen ? k : ngen - 1);
                out[at] = argmax(lg + (size_t)j * V, V);
                tok[j] = force && k < ngen ? force[at] : out[at];
            }
        }
        row->bat_decode_s += sala_now() - td;
        if (steps > 0) {
            for (int j = 0; j < w; j++) eng_seq_free(F[j]);
            break;
        }
        for (int j = 0; j < w; j++) {
            eng_seq_free(F[j]);
            F[j] = NULL;
        }
    }
    row->bat_s = sala_now() - t0;
    row->bat_fork_avg = forks / nq;
    row->bat_first_avg = firsts / nq;
    free(F);
    free(lg);
    free(tok);
    return rc;
}

static int run_length(eng_engine *en, const bench_ctx_opts *o, int64_t L, bool batch,
                      const int32_t *corpus, ctx_row *row, sala_err *e)
{
    const eng_config *c = eng_engine_config(en);
    const int64_t V = c->vocab_size;
    char path[4096], fp[17], lens[32];
    snprintf(path, sizeof(path), "%s/bench-context-%lld.state", o->state_dir, (long long)L);
    snprintf(fp, sizeof(fp), "%016" PRIx64, eng_engine_fingerprint(en));
    snprintf(lens, sizeof(lens), "%lld", (long long)L);
    eng_seq *s = NULL, *f = NULL;
    sf_writer *w = NULL;
    float *logits = malloc((size_t)V * sizeof(float));
    int32_t *q = malloc((size_t)o->qtokens * sizeof(int32_t));
    const size_t nqa = (size_t)(o->questions > 0 ? o->questions : 1);
    int32_t *qall = malloc(nqa * (size_t)o->qtokens * sizeof(int32_t));
    int32_t *ans1 = malloc(nqa * (size_t)o->answer * sizeof(int32_t));
    int32_t *ans2 = malloc(nqa * (size_t)o->answer * sizeof(int32_t));
    float *marg1 = malloc(nqa * (size_t)o->answer * sizeof(float));
    eng_rng r;
    eng_rng_seed(&r, 1000 + (uint64_t)L);
    int rc = SALA_OK;
    double t0, a, b;
    memset(row, 0, sizeof(*row));
    row->len = L;
    if (!logits || !q || !qall || !ans1 || !ans2 || !marg1) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    /* 1. prefill and checkpoint */
    if ((rc = eng_seq_new(en, &s, e))) goto done;
    {
        const int64_t last = L - 1;
        t0 = sala_now();
        rc = eng_seq_prefill(s, corpus, L, &last, 1, logits, e);
        row->ttft = sala_now() - t0;
    }
    if (rc || (rc = eng_seq_checkpoint(s, e))) goto done;
    printf("  context %lld: prefill %.3f s (%.0f tok/s)\n", (long long)L, row->ttft, L / row->ttft);
    fflush(stdout);
    /* 2. save (sf_commit fsyncs the file and its directory) */
    {
        const sf_field meta[] = {{"format", "sala-bench-context"}, {"model_fingerprint", fp},
                                 {"length", lens},
                                 {"dtype", eng_state_dtype_name(eng_engine_state_dtype(en))}};
        t0 = sala_now();
        rc = sf_create(path, meta, SALA_ARRAY_LEN(meta), &w, e);
        if (!rc) rc = eng_seq_save(s, write_piece, w, e);
        if (rc) {
            sf_abort(w);
            goto done;
        }
        rc = sf_commit(w, e);
        row->save_s = sala_now() - t0;
        if (rc) goto done;
    }
    struct stat st;
    row->bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    printf("  context %lld: saved %.2f GB in %.2f s (%.2f GB/s) to %s\n", (long long)L,
           row->bytes / 1e9, row->save_s, row->bytes / 1e9 / row->save_s, path);
    eng_seq_free(s);
    s = NULL;
    /* 3. reopen cold, then warm (the cold load has just filled the page cache) */
    const char *how;
    drop_cache(path, &how);
    if ((rc = reopen(en, path, fp, &s, &a, &b, e))) goto done;
    row->open_cold = a;
    row->load_cold = b;
    printf("  context %lld: reopen cold (page cache dropped: %s) open %.3f s + load %.3f s = "
           "%.3f s (%.2f GB/s)\n", (long long)L, how, a, b, a + b, row->bytes / 1e9 / (a + b));
    eng_seq_free(s);
    s = NULL;
    if ((rc = reopen(en, path, fp, &s, &a, &b, e))) goto done;
    row->open_warm = a;
    row->load_warm = b;
    printf("  context %lld: reopen warm open %.3f s + load %.3f s = %.3f s (%.2f GB/s)\n",
           (long long)L, a, b, a + b, row->bytes / 1e9 / (a + b));
    if (eng_seq_len(s) != L || eng_seq_checkpoint_count(s) < 1) {
        rc = sala_errf(e, SALA_EINTERNAL, "reopened state has length %lld and %lld checkpoints, "
                       "expected %lld and >= 1", (long long)eng_seq_len(s),
                       (long long)eng_seq_checkpoint_count(s), (long long)L);
        goto done;
    }
    /* 4. fork, one question on the fork, decode */
    t0 = sala_now();
    rc = eng_seq_fork(s, &f, e);
    row->fork_s = sala_now() - t0;
    if (rc) goto done;
    row->fork_shared = eng_seq_shared_bytes(f);
    fill_random(&r, q, o->qtokens, V);
    if ((rc = ask(f, q, o->qtokens, o->answer, logits, V, NULL, NULL, &row->q_first, &b, e)))
        goto done;
    row->q_tps = o->answer > 1 ? (o->answer - 1) / b : 0;
    eng_seq_free(f);
    f = NULL;
    setenv("SALA_CUDA_FORK_COPY", "1", 1);   /* the copying fork, for comparison */
    t0 = sala_now();
    rc = eng_seq_fork(s, &f, e);
    row->fork_copy_s = sala_now() - t0;
    unsetenv("SALA_CUDA_FORK_COPY");
    eng_seq_free(f);
    f = NULL;
    if (rc) goto done;
    printf("  context %lld: fork %.4f s (shares %.2f GB; a copying fork %.4f s); question (%d "
           "tokens) to first answer token %.3f s; decode %.1f tok/s (%d steps)\n", (long long)L,
           row->fork_s, row->fork_shared / 1e9, row->fork_copy_s, o->qtokens, row->q_first,
           row->q_tps, o->answer - 1);
    fflush(stdout);
    /* 5. a batch of questions against the loaded state, each rewound to the prefix checkpoint */
    if (batch) {
        double firsts = 0;
        for (int i = 0; i < o->questions; i++)
            fill_random(&r, qall + (size_t)i * o->qtokens, o->qtokens, V);
        t0 = sala_now();
        for (int i = 0; i < o->questions && !rc; i++) {
            int64_t reached = -1;
            double tr = sala_now(), d;
            if ((rc = eng_seq_truncate(s, L, &reached, e))) break;
            tr = sala_now() - tr;
            if (tr > row->batch_rewind_max) row->batch_rewind_max = tr;
            if (reached != L) {
                rc = sala_errf(e, SALA_EINTERNAL, "rewind reached %lld, not the prefix %lld",
                               (long long)reached, (long long)L);
                break;
            }
            rc = ask(s, qall + (size_t)i * o->qtokens, o->qtokens, o->answer, logits, V,
                     ans1 + (size_t)i * o->answer, marg1 + (size_t)i * o->answer, &a, &d, e);
            firsts += a;
        }
        row->batch_s = sala_now() - t0;
        if (rc) goto done;
        row->nq = o->questions;
        row->batch_first_avg = firsts / o->questions;
        row->batch_gen = (int64_t)o->questions * o->answer;
        row->batch_fed = (int64_t)o->questions * (o->qtokens + o->answer - 1);
        printf("  context %lld: %d questions x (%d question + %d answer tokens), one after "
               "another: %.2f s, %.1f answer tok/s (%.1f tok/s fed), first token %.3f s avg, "
               "slowest rewind %.4f s\n", (long long)L, o->questions, o->qtokens, o->answer,
               row->batch_s, row->batch_gen / row->batch_s, row->batch_fed / row->batch_s,
               row->batch_first_avg, row->batch_rewind_max);
        fflush(stdout);
        /* 6. the same questions decoded together (forks of the loaded state), fed the tokens
         * of step 5 (teacher forcing) so that every step's greedy token can be compared */
        row->width = o->width > 0 && o->width < o->questions ? o->width : o->questions;
        int64_t reached = -1;
        if ((rc = eng_seq_truncate(s, L, &reached, e))) goto done;   /* forks of the prefix */
        if (reached != L) {
            rc = sala_errf(e, SALA_EINTERNAL, "rewind reached %lld, not the prefix %lld",
                           (long long)reached, (long long)L);
            goto done;
        }
        if ((rc = ask_batched(en, s, qall, o->questions, o->qtokens, o->answer, row->width, V,
                              ans1, ans2, 0, row, e)))
            goto done;
        const size_t nt = (size_t)o->questions * o->answer;
        for (size_t i = 0; i < nt; i++) {
            row->tok_same += ans1[i] == ans2[i];
            row->tok_bad += ans1[i] != ans2[i] && marg1[i] > 0.25f;
        }
        printf("  context %lld: the same %d questions forked and decoded together (width %d): "
               "%.2f s, %.1f answer tok/s (%.1f tok/s fed); decode steps alone %.2f s = %.1f "
               "tok/s; fork %.4f s avg, %.4f s max; first token %.3f s avg after the start; "
               "greedy tokens equal to the one-after-another run (same history fed) %lld/%zu, "
               "differing where its top-2 margin > 0.25: %lld\n", (long long)L, o->questions,
               row->width, row->bat_s, row->batch_gen / row->bat_s, row->batch_fed / row->bat_s,
               row->bat_decode_s, (double)o->questions * (o->answer - 1) / row->bat_decode_s,
               row->bat_fork_avg, row->bat_fork_max, row->bat_first_avg, (long long)row->tok_same,
               nt, (long long)row->tok_bad);
        fflush(stdout);
        /* 7. the decode steps again without side streams (every launch on one stream) */
        ctx_row tmp = *row;
        tmp.bat_decode_s = 0;
        setenv("SALA_CUDA_SIDE_STREAMS", "0", 1);
        rc = ask_batched(en, s, qall, o->questions, o->qtokens, o->answer, row->width, V, ans1,
                         ans2, 0, &tmp, e);
        unsetenv("SALA_CUDA_SIDE_STREAMS");
        if (rc) goto done;
        row->bat_decode_serial_s = tmp.bat_decode_s;
        /* 8. where a batched step's time goes: 4 steps of the first wave with the op profile */
        tmp.bat_decode_s = 0;
        if ((rc = ask_batched(en, s, qall, o->questions, o->qtokens, o->answer, row->width, V,
                              ans1, ans2, 4, &tmp, e)))
            goto done;
        eng_profile p;
        const int prc = eng_engine_profile(en, 0, &p);
        printf("  context %lld: decode steps alone, one stream: %.2f s = %.1f tok/s; profile of 4 "
               "batched steps (%.3f s, profiled):", (long long)L, row->bat_decode_serial_s,
               (double)o->questions * (o->answer - 1) / row->bat_decode_serial_s,
               tmp.bat_decode_s);
        for (int i = 0; !prc && i < p.nops; i++)
            printf(" %s %.3fs", p.op_name[i], p.op_seconds[i]);
        printf("\n");
        fflush(stdout);
    }
    printf("{\"bench\":\"sala_gpu_context\",\"tokens\":%lld,\"ttft_s\":%.4f,\"state_bytes\":%" PRIu64
           ",\"save_s\":%.3f,\"reopen_cold_s\":%.3f,\"cold_method\":\"%s\",\"reopen_warm_s\":%.3f,"
           "\"fork_s\":%.5f,\"fork_shared_bytes\":%" PRIu64 ",\"fork_copy_s\":%.5f,"
           "\"question_tokens\":%d,\"first_token_s\":%.4f,\"decode_tok_s\":%.2f",
           (long long)L, row->ttft, row->bytes, row->save_s, row->open_cold + row->load_cold, how,
           row->open_warm + row->load_warm, row->fork_s, row->fork_shared, row->fork_copy_s,
           o->qtokens, row->q_first, row->q_tps);
    if (row->nq)
        printf(",\"batch_questions\":%d,\"answer_tokens\":%d,\"batch_s\":%.3f,"
               "\"batch_answer_tok_s\":%.2f,\"batched_width\":%d,\"batched_s\":%.3f,"
               "\"batched_answer_tok_s\":%.2f,\"batched_decode_tok_s\":%.2f,"
               "\"batched_decode_one_stream_tok_s\":%.2f,\"batched_fork_max_s\":%.5f,"
               "\"tokens_equal\":%lld,\"tokens_differ_margin_gt_0.25\":%lld", row->nq,
               o->answer, row->batch_s, row->batch_gen / row->batch_s, row->width, row->bat_s,
               row->batch_gen / row->bat_s,
               (double)row->nq * (o->answer - 1) / row->bat_decode_s,
               (double)row->nq * (o->answer - 1) / row->bat_decode_serial_s, row->bat_fork_max,
               (long long)row->tok_same, (long long)row->tok_bad);
    printf("}\n");
    fflush(stdout);
done:
    eng_seq_free(f);
    eng_seq_free(s);
    if (!o->keep) unlink(path);
    free(logits);
    free(q);
    free(qall);
    free(ans1);
    free(ans2);
    free(marg1);
    return rc;
}

int bench_gpu_context(const eng_config *cfg_in, const bench_ctx_opts *o)
{
    eng_config cfg = *cfg_in;
    int64_t Lmax = 0;
    for (int i = 0; i < o->ncontext; i++) Lmax = SALA_MAX(Lmax, o->context[i]);
    /* room for the longest context, its question and answer (the real config says 524288; the
     * CUDA backend has no position table, so this only lifts the engine's length check) */
    const int64_t need = Lmax + o->qtokens + o->answer + 16;
    if (cfg.max_position_embeddings < need) cfg.max_position_embeddings = need;
    sala_err e = {0};
    eng_engine *en = NULL;
    int32_t *corpus = NULL;
    ctx_row rows[32];
    int rc;
    double t0 = sala_now();
    if ((rc = eng_engine_random(&cfg, "cuda", 1, &en, &e))) goto fail;
    printf("sala bench gpu --context: random weights made in %.1f s; corpus and questions are "
           "random token ids (no tokenizer); state files in %s\n", sala_now() - t0, o->state_dir);
    if (!(corpus = malloc((size_t)Lmax * sizeof(int32_t)))) {
        rc = sala_errf(&e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    eng_rng r;
    eng_rng_seed(&r, 7);
    fill_random(&r, corpus, Lmax, cfg.vocab_size);
    {   /* warm-up: library handles, cuBLAS heuristics, first-touch allocations */
        eng_seq *s = NULL;
        const int64_t n = SALA_MIN((int64_t)8192, Lmax), last = n - 1;
        float *lg = malloc((size_t)cfg.vocab_size * sizeof(float));
        rc = lg ? eng_seq_new(en, &s, &e) : sala_errf(&e, SALA_ENOMEM, "out of memory");
        if (!rc) rc = eng_seq_prefill(s, corpus, n, &last, 1, lg, &e);
        eng_seq_free(s);
        free(lg);
        if (rc) goto fail;
    }
    for (int i = 0; i < o->ncontext; i++) {
        bool batch = false;
        for (int k = 0; k < o->nbatch; k++) batch |= o->batch_at[k] == o->context[i];
        if ((rc = run_length(en, o, o->context[i], batch && o->questions > 0, corpus, &rows[i],
                             &e)))
            goto fail;
    }
    printf("\n| context | TTFT s | state GB | save s | reopen cold s | reopen warm s | fork s | "
           "question to 1st token s | decode tok/s | batch |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < o->ncontext; i++) {
        const ctx_row *x = &rows[i];
        printf("| %lld | %.2f | %.2f | %.2f | %.3f | %.3f | %.4f | %.3f | %.1f | ", (long long)x->len,
               x->ttft, x->bytes / 1e9, x->save_s, x->open_cold + x->load_cold,
               x->open_warm + x->load_warm, x->fork_s, x->q_first, x->q_tps);
        if (x->nq)
            printf("%d q x (%d+%d tok): one after another %.2f s, %.1f answer tok/s; forked and "
                   "batched (width %d) %.2f s, %.1f answer tok/s |\n", x->nq, o->qtokens,
                   o->answer, x->batch_s, x->batch_gen / x->batch_s, x->width, x->bat_s,
                   x->batch_gen / x->bat_s);
        else
            printf("- |\n");
    }
    free(corpus);
    eng_engine_close(en);
    return EXIT_OK;
fail:
    app_errorf("%s", e.msg);
    free(corpus);
    eng_engine_close(en);
    return app_exit_code(rc);
}
