/* test_engine.c: invariants of the CPU engine on the golden tiny model (4 layers, 256 wide,
 * dense_len 1024) and variants of its config.json: chunked prefill == one-shot, prefill+decode
 * == prefill, InfLLM-V2 with every block selected == dense, forks == independent sequences,
 * truncate-then-prefill == fresh prefill; the sampler; argument checks and the backend
 * registry. */
#include "test.h"
#include "batch_cmp.h"
#include "mem_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/random_model.h"
#include "engine/safetensors.h"
#include "engine/sampler.h"

SALA_SUITE(engine);

#define NTOK 1100   /* crosses dense_len (1024): both attention regimes and the switch */

static int32_t *tokens(int64_t n, uint64_t seed)
{
    eng_rng r;
    eng_rng_seed(&r, seed);
    int32_t *t = malloc((size_t)n * sizeof(int32_t));
    t[0] = 1;
    for (int64_t i = 1; i < n; i++) t[i] = 3 + (int32_t)(eng_rng_next(&r) % 4093);
    return t;
}

static eng_engine *open_model(const char *dir)
{
    eng_engine *en = NULL;
    sala_err e;
    int rc = eng_engine_open(dir, "cpu", &en, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    return en;
}

static eng_engine *open_tiny(void) { return open_model(test_shared("golden/models/tiny-a")); }

/* Prefill ids[0..n) in calls of `chunk` tokens; logits for the absolute rows[0..nrows). */
static void prefill_chunked(eng_seq *s, const int32_t *ids, int64_t n, int64_t chunk,
                            const int64_t *rows, int64_t nrows, float *logits, int64_t V)
{
    int64_t r = 0, local[64];
    for (int64_t s0 = 0; s0 < n; s0 += chunk) {
        const int64_t m = SALA_MIN(chunk, n - s0);
        int64_t k = 0;
        while (r + k < nrows && rows[r + k] < s0 + m) {
            local[k] = rows[r + k] - s0;
            k++;
        }
        sala_err e;
        int rc = eng_seq_prefill(s, ids + s0, m, local, k, logits + r * V, &e);
        if (rc) fprintf(stderr, "%s\n", e.msg);
        CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
        r += k;
    }
}

static const int64_t rows_chk[] = {0, 63, 64, 500, 1022, 1023, 1024, 1099};
#define NROWS ((int64_t)SALA_ARRAY_LEN(rows_chk))

static void t_chunked(void)
{
    eng_engine *en = open_tiny();
    const int64_t V = eng_engine_config(en)->vocab_size;
    int32_t *ids = tokens(NTOK, 7);
    float *ref = malloc((size_t)(NROWS * V) * sizeof(float));
    float *got = malloc((size_t)(NROWS * V) * sizeof(float));
    const int64_t chunks[] = {NTOK, 1, 7, 64, 1000};
    for (size_t c = 0; c < SALA_ARRAY_LEN(chunks); c++) {
        eng_seq *s;
        CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
        prefill_chunked(s, ids, NTOK, chunks[c], rows_chk, NROWS, c ? got : ref, V);
        CU_ASSERT_EQUAL(eng_seq_len(s), NTOK);
        if (c) {
            double d = test_row_rel(ref, got, NROWS, V);
            if (d > 1e-5) fprintf(stderr, "\nchunk %lld: row_rel %.3g\n", (long long)chunks[c], d);
            CU_ASSERT(d <= 1e-5);
        }
        eng_seq_free(s);
    }
    free(ids);
    free(ref);
    free(got);
    eng_engine_close(en);
}

/* prefill(N) then decode(t) == prefill(N+1), on both sides of dense_len */
static void t_decode_matches_prefill(void)
{
    eng_engine *en = open_tiny();
    const int64_t V = eng_engine_config(en)->vocab_size;
    int32_t *ids = tokens(NTOK, 8);
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    const int64_t Ns[] = {100, 1022, 1023, 1060};
    for (size_t i = 0; i < SALA_ARRAY_LEN(Ns); i++) {
        const int64_t N = Ns[i], last = N;
        eng_seq *s1, *s2;
        CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s1, NULL), SALA_OK);
        CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s2, NULL), SALA_OK);
        CU_ASSERT_EQUAL(eng_seq_prefill(s1, ids, N, NULL, 0, NULL, NULL), SALA_OK);
        CU_ASSERT_EQUAL(eng_seq_decode(s1, ids[N], a, NULL), SALA_OK);
        CU_ASSERT_EQUAL(eng_seq_prefill(s2, ids, N + 1, &last, 1, b, NULL), SALA_OK);
        double d = test_row_rel(b, a, 1, V);
        if (d > 1e-5) fprintf(stderr, "\nN=%lld: row_rel %.3g\n", (long long)N, d);
        CU_ASSERT(d <= 1e-5);
        eng_seq_free(s1);
        eng_seq_free(s2);
    }
    free(ids);
    free(a);
    free(b);
    eng_engine_close(en);
}

/* A copy of the tiny model directory named name whose config.json is the original through the
 * GNU sed script sed (model.safetensors copied). Returns the directory. */
static const char *tiny_edit(const char *name, const char *sed)
{
    static char dir[3][4200];
    static int slot;
    char *d = dir[slot++ % 3], path[4400], cmd[13000];
    snprintf(d, sizeof(dir[0]), "%s/%s", test_tmpdir(), name);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s/model.safetensors %s/ && "
             "sed -z '%s' %s/config.json > %s/config.json",
             d, test_shared("golden/models/tiny-a"), d, sed, test_shared("golden/models/tiny-a"),
             d);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    snprintf(path, sizeof(path), "%s/config.json", d);
    CU_ASSERT_EQUAL(access(path, R_OK), 0);
    return d;
}

/* The tiny model with sparse_config.dense_len = dl. */
static const char *tiny_variant(const char *name, int dl)
{
    char sed[128];
    snprintf(sed, sizeof(sed), "s/\"dense_len\": *[0-9]*/\"dense_len\": %d/", dl);
    return tiny_edit(name, sed);
}

/* With dense_len 1 every query takes the InfLLM-V2 path; below topk+window/block blocks
 * (1024 tokens) every causal block is selected, so the result must equal dense attention. */
static void t_sparse_all_blocks_is_dense(void)
{
    eng_engine *sp = open_model(tiny_variant("all-sparse", 1));
    eng_engine *de = open_model(tiny_variant("all-dense", 4096));
    const int64_t V = eng_engine_config(sp)->vocab_size, N = 1000;
    const int64_t rows[] = {0, 31, 127, 128, 500, 999};
    const int64_t nr = (int64_t)SALA_ARRAY_LEN(rows);
    int32_t *ids = tokens(N, 9);
    float *a = malloc((size_t)(nr * V) * sizeof(float)), *b = malloc((size_t)(nr * V) * sizeof(float));
    eng_seq *s1, *s2;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(sp, &s1, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(de, &s2, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s1, ids, N, rows, nr, a, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s2, ids, N, rows, nr, b, NULL), SALA_OK);
    double d = test_row_rel(b, a, nr, V);
    if (d > 1e-5) fprintf(stderr, "\nall-sparse vs dense: row_rel %.3g\n", d);
    CU_ASSERT(d <= 1e-5);
    /* and past 1024 tokens the sparse path must really drop blocks: results differ */
    int32_t *more = tokens(2200, 10);
    int64_t last = 2199;
    eng_seq_free(s1);
    eng_seq_free(s2);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(sp, &s1, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(de, &s2, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s1, more, 2200, &last, 1, a, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s2, more, 2200, &last, 1, b, NULL), SALA_OK);
    CU_ASSERT(test_row_rel(b, a, 1, V) > 1e-4);
    eng_seq_free(s1);
    eng_seq_free(s2);
    free(more);
    free(ids);
    free(a);
    free(b);
    eng_engine_close(sp);
    eng_engine_close(de);
}

/* Two forks decoding different tokens == two sequences built independently (bitwise: same
 * operations on the same state). */
static void t_fork(void)
{
    eng_engine *en = open_tiny();
    const int64_t V = eng_engine_config(en)->vocab_size, N = 1030;
    int32_t *ids = tokens(N, 11);
    float *fa = malloc((size_t)V * sizeof(float)), *fb = malloc((size_t)V * sizeof(float));
    float *ia = malloc((size_t)V * sizeof(float)), *ib = malloc((size_t)V * sizeof(float));
    eng_seq *a, *b, *x, *y;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &a, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(a, ids, N, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_fork(a, &b, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_len(b), N);
    for (int step = 0; step < 3; step++) {
        CU_ASSERT_EQUAL(eng_seq_decode(a, 100 + step, fa, NULL), SALA_OK);
        CU_ASSERT_EQUAL(eng_seq_decode(b, 2000 + step, fb, NULL), SALA_OK);
    }
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &x, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &y, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(x, ids, N, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(y, ids, N, NULL, 0, NULL, NULL), SALA_OK);
    for (int step = 0; step < 3; step++) {
        CU_ASSERT_EQUAL(eng_seq_decode(x, 100 + step, ia, NULL), SALA_OK);
        CU_ASSERT_EQUAL(eng_seq_decode(y, 2000 + step, ib, NULL), SALA_OK);
    }
    CU_ASSERT(memcmp(fa, ia, (size_t)V * sizeof(float)) == 0);
    CU_ASSERT(memcmp(fb, ib, (size_t)V * sizeof(float)) == 0);
    CU_ASSERT(memcmp(fa, fb, (size_t)V * sizeof(float)) != 0);
    eng_seq_free(a);
    eng_seq_free(b);
    eng_seq_free(x);
    eng_seq_free(y);
    free(ids);
    free(fa);
    free(fb);
    free(ia);
    free(ib);
    eng_engine_close(en);
}

/* eng_seq_decode_batch over sequences of different lengths (below dense_len, crossing it,
 * past it) == eng_seq_decode one by one: bitwise (the CPU batch is a loop), same greedy
 * tokens, every sequence's selections seen by its own hook. Bad batches change nothing. */
static void t_decode_batch(void)
{
    eng_engine *en = open_tiny();
    const int64_t lens[4] = {5, 700, 1020, 1100};
    batch_cmp r;
    CU_ASSERT_FALSE(eng_engine_batch_native(en));
    CU_ASSERT_EQUAL_FATAL(batch_compare(en, lens, 4, 6, 17, 0.0, &r), 0);
    CU_ASSERT(r.bitwise);
    CU_ASSERT_EQUAL(r.tok_diff, 0);
    CU_ASSERT_EQUAL(r.sel_seq_differ, 0);
    CU_ASSERT(r.sel_calls[0] > 0);
    CU_ASSERT_EQUAL(r.sel_calls[0], r.sel_calls[1]);
    /* refused before anything changes: a repeated sequence, a bad id, a mixed engine */
    eng_engine *en2 = open_tiny();
    eng_seq *a, *b, *x;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &a, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &b, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en2, &x, NULL), SALA_OK);
    eng_seq *dup[3] = {a, b, a}, *mix[2] = {a, x}, *ok[2] = {a, b};
    const int32_t t3[3] = {5, 6, 7}, bad[2] = {5, 4096};
    CU_ASSERT_EQUAL(eng_seq_decode_batch(dup, 3, t3, NULL, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "same"));
    CU_ASSERT_EQUAL(eng_seq_decode_batch(mix, 2, t3, NULL, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(eng_seq_decode_batch(ok, 2, bad, NULL, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(eng_seq_len(a) + eng_seq_len(b) + eng_seq_len(x), 0);
    CU_ASSERT_EQUAL(eng_seq_decode_batch(ok, 2, t3, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_len(a) + eng_seq_len(b), 2);
    CU_ASSERT_EQUAL(eng_seq_shared_bytes(a), 0);   /* the CPU fork copies */
    eng_seq_free(a);
    eng_seq_free(b);
    eng_seq_free(x);
    eng_engine_close(en2);
    eng_engine_close(en);
}

/* truncate to a checkpoint, then prefill == fresh prefill with the same calls (bitwise). */
static void t_truncate(void)
{
    eng_engine *en = open_tiny();
    const int64_t V = eng_engine_config(en)->vocab_size;
    int32_t *ids = tokens(NTOK, 12), *other = tokens(NTOK, 13);
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    int64_t reached = -1, last = 59;
    sala_err e;
    eng_seq *s, *f;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s, ids, 300, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_checkpoint(s, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(s, ids + 300, 700, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_checkpoint(s, NULL), SALA_OK);                  /* at 1000 */
    CU_ASSERT_EQUAL(eng_seq_prefill(s, other, 90, NULL, 0, NULL, NULL), SALA_OK);   /* 1090 */
    CU_ASSERT_EQUAL(eng_seq_truncate(s, 1050, &reached, NULL), SALA_OK);
    CU_ASSERT_EQUAL(reached, 1000);
    CU_ASSERT_EQUAL(eng_seq_len(s), 1000);
    CU_ASSERT_EQUAL(eng_seq_prefill(s, ids + 1000, 60, &last, 1, a, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &f, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(f, ids, 300, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(f, ids + 300, 700, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(f, ids + 1000, 60, &last, 1, b, NULL), SALA_OK);
    CU_ASSERT(memcmp(a, b, (size_t)V * sizeof(float)) == 0);
    /* back below the first checkpoint's successor: lands on 300 */
    CU_ASSERT_EQUAL(eng_seq_truncate(s, 999, &reached, NULL), SALA_OK);
    CU_ASSERT_EQUAL(reached, 300);
    last = 699;
    CU_ASSERT_EQUAL(eng_seq_prefill(s, ids + 300, 700, &last, 1, a, NULL), SALA_OK);
    eng_seq_free(f);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &f, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(f, ids, 300, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(f, ids + 300, 700, &last, 1, b, NULL), SALA_OK);
    CU_ASSERT(memcmp(a, b, (size_t)V * sizeof(float)) == 0);
    /* no checkpoint below: back to 0; past the end: refused */
    CU_ASSERT_EQUAL(eng_seq_truncate(s, 200, &reached, NULL), SALA_OK);
    CU_ASSERT_EQUAL(reached, 0);
    CU_ASSERT_EQUAL(eng_seq_truncate(s, 5, &reached, &e), SALA_EINVAL);
    eng_seq_free(s);
    eng_seq_free(f);
    free(ids);
    free(other);
    free(a);
    free(b);
    eng_engine_close(en);
}

static void t_bad_input(void)
{
    eng_engine *en = open_tiny();
    eng_seq *s;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
    int32_t bad[] = {1, 4096};
    float lg[4096];
    int64_t rows[] = {1, 0};
    CU_ASSERT_EQUAL(eng_seq_prefill(s, bad, 2, NULL, 0, NULL, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "4096"));
    bad[1] = -3;
    CU_ASSERT_EQUAL(eng_seq_decode(s, bad[1], lg, &e), SALA_EINVAL);
    bad[1] = 5;
    CU_ASSERT_EQUAL(eng_seq_prefill(s, bad, 2, rows, 2, lg, &e), SALA_EINVAL);   /* not ascending */
    CU_ASSERT_EQUAL(eng_seq_len(s), 0);   /* nothing changed */
    eng_seq_free(s);
    eng_engine_close(en);
    eng_engine *x = NULL;
    CU_ASSERT_EQUAL(eng_engine_open(test_shared("golden/models/tiny-a"), "tpu", &x, &e), SALA_EINVAL);
    CU_ASSERT_NOT_EQUAL(eng_engine_open(test_shared("golden/models/tiny-a"), "cuda", &x, &e),
                        SALA_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "CUDA backend not available"));
    CU_ASSERT_PTR_NULL(x);
    eng_engine_close(NULL);
    eng_seq_free(NULL);
}

static void t_sampler(void)
{
    enum { V = 50 };
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = (float)((i * 7) % 13) * 0.3f;
    lg[17] = 10.0f;
    lg[3] = 9.9f;
    eng_sampler *s;
    eng_sampler_params p = {.temperature = 0, .top_p = 1, .repetition_penalty = 1, .seed = 1};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_sampler_sample(s, lg, NULL, 0), 17);
    int32_t hist[] = {17, 17};
    eng_sampler_free(s);
    p.repetition_penalty = 1.5f;   /* 10/1.5 < 9.9: the seen token loses */
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_sampler_sample(s, lg, hist, 2), 3);
    eng_sampler_free(s);
    /* top-k 1 and a tiny top-p are greedy whatever the temperature */
    p = (eng_sampler_params){.temperature = 5, .top_k = 1, .top_p = 1, .repetition_penalty = 1};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
    for (int i = 0; i < 20; i++) CU_ASSERT_EQUAL(eng_sampler_sample(s, lg, NULL, 0), 17);
    eng_sampler_free(s);
    p = (eng_sampler_params){.temperature = 5, .top_p = 1e-6f, .repetition_penalty = 1};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
    for (int i = 0; i < 20; i++) CU_ASSERT_EQUAL(eng_sampler_sample(s, lg, NULL, 0), 17);
    eng_sampler_free(s);
    /* same seed, same draws; top-k 2 only ever yields the two best; temperature 1 over two
     * near-equal logits gives both */
    int32_t d1[200], d2[200];
    int seen17 = 0, seen3 = 0;
    for (int run = 0; run < 2; run++) {
        p = (eng_sampler_params){.temperature = 1, .top_k = 2, .top_p = 1,
                                 .repetition_penalty = 1, .seed = 42};
        CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
        for (int i = 0; i < 200; i++) (run ? d2 : d1)[i] = eng_sampler_sample(s, lg, NULL, 0);
        eng_sampler_free(s);
    }
    CU_ASSERT(memcmp(d1, d2, sizeof(d1)) == 0);
    for (int i = 0; i < 200; i++) {
        CU_ASSERT(d1[i] == 17 || d1[i] == 3);
        seen17 += d1[i] == 17;
        seen3 += d1[i] == 3;
    }
    CU_ASSERT(seen17 > 60 && seen3 > 60);   /* p = 0.525 / 0.475 */
    p.repetition_penalty = 0;
    CU_ASSERT_EQUAL(eng_sampler_new(&p, V, &s, NULL), SALA_EINVAL);
}

/* The greedy pick is the one scan from id 0 that keeps a value only when it compares above the
 * best so far (engine/sampler.h): checked against that scan on rows of ties, signed zeros,
 * infinities and NaNs (NaN at id 0 too), of lengths around the sampler's 8-value lanes. */
static void t_sampler_greedy_rule(void)
{
    static const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, 2.0f, 1.0f};
    enum { NP = sizeof(pool) / sizeof(pool[0]), MAXV = 41 };
    float row[MAXV];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int V = 1; V <= MAXV; V++) {
        eng_sampler *s;
        const eng_sampler_params p = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
        CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&p, V, &s, NULL), SALA_OK);
        for (int r = 0; r < 2000; r++) {
            for (int i = 0; i < V; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                row[i] = pool[x % NP];
            }
            int32_t want = 0;
            for (int i = 1; i < V; i++)
                if (row[i] > row[want]) want = i;
            bad += eng_sampler_sample(s, row, NULL, 0) != want;
        }
        eng_sampler_free(s);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void t_commands(void)
{
    char cmd[9000], out[4096];
    const char *m = test_shared("golden/models/tiny-a");
    snprintf(cmd, sizeof(cmd), "%s generate --model %s --prompt-ids 1,5,6,7 -n 5 --temp 0.8 "
             "--top-p 0.9 --seed 4", test_bin(), m);
    char out2[4096];
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_EQUAL(test_run(cmd, out2, sizeof(out2)), 0);
    CU_ASSERT_STRING_EQUAL(out, out2);
    int lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, 5);
    snprintf(cmd, sizeof(cmd), "%s logits --model %s --case %s --out %s/x.st --backend cuda",
             test_bin(), m, test_shared("golden/cases/tiny-a/dense_prefill.f64.safetensors"),
             test_tmpdir());
    CU_ASSERT_NOT_EQUAL(test_run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "CUDA backend not available"));
    snprintf(cmd, sizeof(cmd), "%s generate --model %s --prompt-ids 1,99999", test_bin(), m);
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 1);
}

/* eng_engine_random: a backend without random weights (the CPU one) is refused with a message,
 * an unknown backend too, and nothing leaks (make check). */
static void t_random_engine(void)
{
    eng_engine *en = open_tiny();
    eng_config c = *eng_engine_config(en);
    eng_engine_close(en);
    sala_err e = {0, ""};
    eng_engine *r = (eng_engine *)1;
    CU_ASSERT_EQUAL(eng_engine_random(&c, "cpu", 1, &r, &e), SALA_EUNSUP);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "random weights"));
    CU_ASSERT_NOT_EQUAL(eng_engine_random(&c, "nosuch", 1, &r, &e), SALA_OK);
    CU_ASSERT_PTR_NULL(r);
}

/* ---- persisted state (engine/engine.h): sections in memory ---- */
static bool is_sparse_sec(const char *name) { return !strncmp(name, "sparse.", 7); }

/* A copy of the f32 state src with its sparse sections rounded to bf16 (st_f32_to_bf16, as the
 * CUDA backend rounds): as_bf16 stores them as bf16 with dtype 1 in eng.header (what the CUDA
 * backend writes); otherwise they stay f32 values (dtype 0), the exact widening of the former. */
static void mem_rounded(const mem_store *src, mem_store *dst, bool as_bf16)
{
    dst->ns = 0;
    dst->body_reads = 0;
    for (int i = 0; i < src->ns; i++) {
        const mem_sec *a = &src->s[i];
        mem_sec *b = mem_find(dst, a->name, true);
        CU_ASSERT_FATAL(b != NULL);
        const size_t nv = a->n / 4;
        b->n = is_sparse_sec(a->name) && as_bf16 ? nv * 2 : a->n;
        b->d = malloc(b->n + 1);
        CU_ASSERT_FATAL(b->d != NULL);
        if (!is_sparse_sec(a->name)) {
            if (a->n) memcpy(b->d, a->d, a->n);   /* ckpt.S is empty without checkpoints */
            continue;
        }
        for (size_t j = 0; j < nv; j++) {
            float f;
            memcpy(&f, a->d + 4 * j, 4);
            const uint16_t h = st_f32_to_bf16(f);
            if (as_bf16) {
                memcpy(b->d + 2 * j, &h, 2);
            } else {
                const float w = st_bf16_to_f32(h);
                memcpy(b->d + 4 * j, &w, 4);
            }
        }
    }
    if (as_bf16) mem_find(dst, "eng.header", false)->d[12] = ENG_STATE_BF16;
}

static uint64_t mem_total(const mem_store *m)
{
    uint64_t t = 0;
    for (int i = 0; i < m->ns; i++) t += m->s[i].n;
    return t;
}

/* Decode steps on a, b from their common length; the largest per-row relative L2 difference, or
 * -1 when the logits are bitwise equal at every step. */
static double decode_diff(eng_seq *a, eng_seq *b, const int32_t *next, int steps, int64_t V)
{
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
    double worst = -1;
    for (int k = 0; k < steps; k++) {
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(a, next[k], la, NULL), SALA_OK);
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(b, next[k], lb, NULL), SALA_OK);
        if (memcmp(la, lb, (size_t)V * 4)) {
            const double d = test_row_rel(la, lb, 1, V);
            if (!(d <= worst)) worst = d;
        }
    }
    free(la);
    free(lb);
    return worst;
}

static eng_seq *load_ok(eng_engine *en, mem_store *m)
{
    sala_err e = {0};
    eng_seq *s = NULL;
    const eng_state_reader rd = {mem_size, mem_read, m};
    const int rc = eng_seq_load(en, &rd, &s, &e);
    if (rc) fprintf(stderr, "\n  load: %s", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    return s;
}

/* A state of dtype bf16 (sparse caches as the CUDA backend saves them) loads on the CPU: its
 * continuation is bitwise that of the f32 state whose caches hold the same bf16-rounded values
 * (the widening is exact), and within bf16 rounding of the original fp32 sequence: bf16 keeps 8
 * significant bits (relative error <= 2^-9 ~ 2e-3 per cached value, independent across values);
 * attention averages those errors, so the logits' per-row relative L2 error stays below that
 * bound: 5e-3 allows 2.5x it (3e-4 measured on the tiny model), while a cache read wrongly
 * (wrong offset, a value not widened) moves the logits by O(1). The f32 state itself
 * round-trips bitwise. Sizes: eng_state_bytes matches what was written for either dtype. */
static void t_state_bf16(void)
{
    eng_engine *en = open_tiny();
    const eng_config *c = eng_engine_config(en);
    const int64_t V = c->vocab_size, n0 = 700, n1 = NTOK;   /* n1 crosses dense_len */
    int32_t *ids = tokens(n1 + 8, 41);
    eng_seq *s, *sf, *sb, *sr;
    mem_store f = {.ns = 0}, b = {.ns = 0}, r = {.ns = 0};
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, ids, n0, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(s, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, ids + n0, n1 - n0, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_save(s, mem_write, &f, NULL), SALA_OK);
    CU_ASSERT_EQUAL(mem_find(&f, "eng.header", false)->d[12], ENG_STATE_F32);   /* CPU: f32 */
    CU_ASSERT(mem_find(&f, "sparse.K1", false) && mem_find(&f, "sparse.K1", false)->n > 0);
    mem_rounded(&f, &b, true);
    mem_rounded(&f, &r, false);
    CU_ASSERT_EQUAL(mem_total(&f), eng_state_bytes(c, n1, 1, ENG_STATE_F32));
    CU_ASSERT_EQUAL(mem_total(&b), eng_state_bytes(c, n1, 1, ENG_STATE_BF16));
    CU_ASSERT_EQUAL(mem_find(&b, "sparse.K", false)->n * 2, mem_find(&f, "sparse.K", false)->n);
    CU_ASSERT_EQUAL(eng_state_bytes(c, n1, 1, 2), 0);
    sf = load_ok(en, &f);
    sb = load_ok(en, &b);
    sr = load_ok(en, &r);
    CU_ASSERT_EQUAL(eng_seq_len(sb), n1);
    CU_ASSERT_EQUAL(eng_seq_checkpoint_count(sb), 1);
    eng_seq *s2;
    CU_ASSERT_EQUAL_FATAL(eng_seq_fork(s, &s2, NULL), SALA_OK);
    const double d_f = decode_diff(s, sf, ids + n1, 4, V);
    const double d_r = decode_diff(sb, sr, ids + n1, 4, V);
    /* sb has advanced 4 steps with sr; compare it to a fork of the original advanced alike */
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
    for (int k = 0; k < 4; k++) CU_ASSERT_EQUAL(eng_seq_decode(s2, ids[n1 + k], la, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_decode(s2, ids[n1 + 4], la, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_decode(sb, ids[n1 + 4], lb, NULL), SALA_OK);
    const double d_o = memcmp(la, lb, (size_t)V * 4) ? test_row_rel(la, lb, 1, V) : -1;
    /* after a rewind to the checkpoint (lightning state only) and re-prefill, the bf16 state's
     * sequence still carries the rounded caches below n0 */
    int64_t r1 = -1, r2 = -1;
    CU_ASSERT_EQUAL(eng_seq_truncate(s2, n1 - 50, &r1, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_truncate(sb, n1 - 50, &r2, NULL), SALA_OK);
    CU_ASSERT_EQUAL(r1, n0);
    CU_ASSERT_EQUAL(r2, n0);
    const int64_t row = n1 - 1 - n0;
    CU_ASSERT_EQUAL(eng_seq_prefill(s2, ids + n0, n1 - n0, &row, 1, la, NULL), SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_prefill(sb, ids + n0, n1 - n0, &row, 1, lb, NULL), SALA_OK);
    const double d_w = test_row_rel(la, lb, 1, V);
    fprintf(stderr, "\n  bf16 state on CPU: vs f32-rounded %s, vs fp32 sequence row_rel %.2e "
            "(after rewind+prefill %.2e); f32 state %s", d_r < 0 ? "bitwise" : "DIFFERS", d_o,
            d_w, d_f < 0 ? "bitwise" : "DIFFERS");
    CU_ASSERT(d_f < 0);             /* f32 round trip: bitwise */
    CU_ASSERT(d_r < 0);             /* bf16 widening is exact */
    CU_ASSERT(d_o > 0);             /* the caches really were rounded ... */
    CU_ASSERT(d_o <= 5e-3);         /* ... and only by bf16 rounding */
    CU_ASSERT(d_w > 0 && d_w <= 5e-3);
    free(la);
    free(lb);
    eng_seq_free(s);
    eng_seq_free(s2);
    eng_seq_free(sf);
    eng_seq_free(sb);
    eng_seq_free(sr);
    mem_free(&f);
    mem_free(&b);
    mem_free(&r);
    free(ids);
    eng_engine_close(en);
}

/* Refusals: an unknown dtype (naming the field and value), bf16 sections whose sizes do not
 * match the config or the header's dtype; all before the backend reads (allocates) anything. */
static void t_state_bf16_refused(void)
{
    eng_engine *en = open_tiny();
    int32_t *ids = tokens(1100, 43);
    eng_seq *s, *x = NULL;
    mem_store f = {.ns = 0}, b = {.ns = 0};
    sala_err e = {0};
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, ids, 1100, NULL, 0, NULL, NULL), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_save(s, mem_write, &f, NULL), SALA_OK);
    mem_rounded(&f, &b, true);
    const eng_state_reader rd = {mem_size, mem_read, &b};
    unsigned char *h = mem_find(&b, "eng.header", false)->d;
    /* unknown dtypes */
    static const unsigned bad[] = {2, 255, 0x10001};
    for (int i = 0; i < 3; i++) {
        char want[32];
        h[12] = (unsigned char)bad[i], h[13] = (unsigned char)(bad[i] >> 8);
        h[14] = (unsigned char)(bad[i] >> 16);
        b.body_reads = 0;
        CU_ASSERT_EQUAL(eng_seq_load(en, &rd, &x, &e), SALA_EUNSUP);
        snprintf(want, sizeof(want), "dtype %u", bad[i]);
        CU_ASSERT(strstr(e.msg, want) != NULL && strstr(e.msg, "eng.header") != NULL);
        CU_ASSERT(x == NULL);
        CU_ASSERT_EQUAL(b.body_reads, 0);
    }
    h[13] = h[14] = 0;
    /* bf16 sections under dtype 0: sizes are half of what f32 needs */
    h[12] = ENG_STATE_F32;
    b.body_reads = 0;
    CU_ASSERT_EQUAL(eng_seq_load(en, &rd, &x, &e), SALA_EFORMAT);
    CU_ASSERT(strstr(e.msg, "sparse.K") != NULL);
    CU_ASSERT_EQUAL(b.body_reads, 0);
    /* dtype 1, one bf16 section short by one value, or one longer */
    h[12] = ENG_STATE_BF16;
    static const char *const secs[4] = {"sparse.K", "sparse.V", "sparse.K1", "sparse.K2"};
    for (int i = 0; i < 4; i++)
        for (int d = -1; d <= 1; d += 2) {
            mem_sec *m = mem_find(&b, secs[i], false);
            unsigned char *g = realloc(m->d, m->n + 2);   /* room for the longer one */
            CU_ASSERT_FATAL(g != NULL);
            m->d = g;
            m->n = (size_t)((int64_t)m->n + 2 * d);
            b.body_reads = 0;
            CU_ASSERT_EQUAL(eng_seq_load(en, &rd, &x, &e), SALA_EFORMAT);
            CU_ASSERT(strstr(e.msg, secs[i]) != NULL);
            CU_ASSERT(x == NULL);
            CU_ASSERT_EQUAL(b.body_reads, 0);
            m->n = (size_t)((int64_t)m->n - 2 * d);
        }
    /* and the untouched bf16 state loads */
    CU_ASSERT_EQUAL(eng_seq_load(en, &rd, &x, &e), SALA_OK);
    CU_ASSERT(b.body_reads > 0);
    eng_seq_free(x);
    eng_seq_free(s);
    mem_free(&f);
    mem_free(&b);
    free(ids);
    eng_engine_close(en);
}

/* eng_seq_decode_greedy == eng_seq_decode + eng_sampler_sample on the logits (the CPU backend
 * has no device pick: the engine runs the sampler): two forks of one prefix, each fed its own
 * picks, without and with a repetition penalty over the tokens so far (duplicates included);
 * a non-greedy sampler and bad arguments refused with the length unchanged. */
static void t_decode_greedy(void)
{
    eng_engine *en = open_tiny();
    const int64_t V = eng_engine_config(en)->vocab_size;
    int32_t *ids = tokens(40, 12), hist[64];   /* 16 steps, at most 3 ids each */
    sala_err e;
    eng_seq *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &a, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(a, ids, 40, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_fork(a, &b, &e), SALA_OK);
    float *lg = malloc((size_t)V * sizeof(float));
    eng_sampler_params sp = {.temperature = 0, .top_p = 1.0f, .repetition_penalty = 1.0f};
    eng_sampler *smp[2] = {NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&sp, V, &smp[0], &e), SALA_OK);
    sp.repetition_penalty = 5.0f;
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&sp, V, &smp[1], &e), SALA_OK);
    int32_t ta = ids[39], tb = ta;
    int nh = 0, bad = 0, pen_moved = 0;
    for (int i = 0; i < 16; i++) {
        const int k = i >= 8;
        sp.repetition_penalty = k ? 5.0f : 1.0f;
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(b, tb, lg, &e), SALA_OK);
        const int32_t plain = eng_sampler_sample(smp[0], lg, hist, nh);
        if (k) hist[nh++] = plain;   /* the unpenalized pick penalized: the pick must move */
        tb = eng_sampler_sample(smp[k], lg, hist, nh);
        pen_moved += tb != plain;
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode_greedy(a, ta, &sp, hist, nh, &ta, &e), SALA_OK);
        bad += ta != tb;
        hist[nh++] = tb;
        hist[nh++] = tb;   /* a duplicate: penalized once */
    }
    CU_ASSERT_EQUAL(bad, 0);
    fprintf(stderr, "\n  decode greedy: %d of 16 picks differ, the penalty moved %d of 8",
            bad, pen_moved);
    CU_ASSERT(pen_moved > 0);   /* the penalty changed some picks: the test sees it */
    const int64_t len = eng_seq_len(a);
    sp.temperature = 0.7f;
    CU_ASSERT_EQUAL(eng_seq_decode_greedy(a, ta, &sp, hist, nh, &ta, &e), SALA_EINVAL);
    sp.temperature = 0;
    CU_ASSERT_EQUAL(eng_seq_decode_greedy(a, ta, &sp, NULL, 3, &ta, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(eng_seq_decode_greedy(a, (int32_t)V, &sp, NULL, 0, &ta, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(eng_seq_len(a), len);
    eng_sampler_free(smp[0]), eng_sampler_free(smp[1]);
    eng_seq_free(a), eng_seq_free(b);
    free(lg), free(ids);
    eng_engine_close(en);
}

/* The last layer's tail (mixer output, o_proj, MLP) runs only from a step's first wanted row on
 * (eng_tail_from): the logits, and the caches later steps read, equal the whole layer's
 * (SALA_TAIL=full), with a sparse last layer (tiny-a) and a lightning one (tiny-a's first three
 * layers), in one call and in calls of 300 tokens (steps with and without rows). */
static void t_tail(void)
{
    const char *dirs[2] = {test_shared("golden/models/tiny-a"),
                           tiny_edit("three-layers", "s/\"lightning-attn\",\\n *\"minicpm4\"\\n/"
                                     "\"lightning-attn\"\\n/; s/\"num_hidden_layers\": 4/"
                                     "\"num_hidden_layers\": 3/")};
    static const int64_t rows_a[] = {1099}, rows_b[] = {500, 1099}, rows_c[] = {1023, 1024};
    static const struct { const int64_t *rows; int64_t n, chunk; } cases[] = {
        {NULL, 0, NTOK}, {rows_a, 1, NTOK}, {rows_b, 2, NTOK}, {rows_c, 2, 300}, {rows_a, 1, 300}};
    int32_t *ids = tokens(NTOK + 2, 13);
    for (int d = 0; d < 2; d++) {
        eng_engine *en = open_model(dirs[d]);
        CU_ASSERT_EQUAL(eng_engine_config(en)->mixer[eng_engine_config(en)->num_hidden_layers - 1],
                        d ? ENG_MIXER_LIGHTNING : ENG_MIXER_SPARSE);
        const int64_t V = eng_engine_config(en)->vocab_size;
        float *lg[2];
        for (int k = 0; k < 2; k++) lg[k] = malloc((size_t)(4 * V) * sizeof(float));
        for (size_t c = 0; c < SALA_ARRAY_LEN(cases); c++) {
            for (int k = 0; k < 2; k++) {   /* k = 0: SALA_TAIL=full, 1: the tail only */
                if (k) unsetenv("SALA_TAIL");
                else setenv("SALA_TAIL", "full", 1);
                eng_seq *s;
                CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, NULL), SALA_OK);
                prefill_chunked(s, ids, NTOK, cases[c].chunk, cases[c].rows, cases[c].n, lg[k],
                                V);
                float *dl = lg[k] + cases[c].n * V;   /* then two decode steps */
                CU_ASSERT_EQUAL(eng_seq_decode(s, ids[NTOK], dl, NULL), SALA_OK);
                CU_ASSERT_EQUAL(eng_seq_decode(s, ids[NTOK + 1], dl + V, NULL), SALA_OK);
                eng_seq_free(s);
            }
            const double r = test_row_rel(lg[0], lg[1], cases[c].n + 2, V);
            if (r > 1e-5)
                fprintf(stderr, "\n%s case %zu: row_rel %.3g\n", d ? "lightning" : "sparse", c, r);
            CU_ASSERT(r <= 1e-5);
        }
        unsetenv("SALA_TAIL");
        free(lg[0]), free(lg[1]);
        eng_engine_close(en);
    }
    free(ids);
}

void suite_engine(void)
{
    SALA_ADD("engine", {"chunked prefill (1, 7, 64, 1000) == one-shot", t_chunked},
             {"prefill(N) + decode == prefill(N+1)", t_decode_matches_prefill},
             {"last layer's tail from the first wanted row == whole layer", t_tail},
             {"InfLLM-V2 with every block selected == dense", t_sparse_all_blocks_is_dense},
             {"forks == independent sequences", t_fork},
             {"decode batch == one by one (lengths 5..1100), hooks, refusals", t_decode_batch},
             {"truncate to checkpoint + prefill == fresh prefill", t_truncate},
             {"bad input refused, backend registry", t_bad_input}, {"sampler", t_sampler},
             {"sampler greedy rule", t_sampler_greedy_rule},
             {"decode greedy == decode + sampler", t_decode_greedy},
             {"generate and logits commands", t_commands},
             {"random-weight engine refused without backend support", t_random_engine},
             {"bf16 state (dtype 1) loads on the CPU, within bf16 rounding", t_state_bf16},
             {"state dtype and bf16 section sizes checked before loading", t_state_bf16_refused});
}
