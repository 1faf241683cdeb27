/* test_infllm.c: InfLLM-V2 CPU ops (engine/cpu/infllm.h) against a brute-force reference that
 * is written here plainly in double straight from SALA-SPEC §3.6 and the golden README §4:
 * one-shot means, lse = log of a plain sum of exp, block ranking by repeated arg-max (first max
 * = lowest id), softmax attention over an explicit key list. Random inputs, several configs. */
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/infllm.h"

SALA_SUITE(infllm);

typedef struct {
    const char *name;
    eng_sparse_config sc;
    int64_t nh, nkv, d, L;
    int64_t pstep;        // query positions: multiples of pstep, L-1 and every p at which a K1
                          // or K2 window completes
} tcfg;

static bool visit(const tcfg *c, int64_t p)
{
    int64_t k1 = c->sc.kernel_size, s1 = c->sc.kernel_stride;
    return p % c->pstep == 0 || p == c->L - 1 || (p >= k1 - 1 && (p - k1 + 1) % s1 == 0) ||
           (p >= 4 * k1 - 1 && (p - 4 * k1 + 1) % (4 * s1) == 0);
}

static eng_sparse_config mkcfg(int64_t block, int64_t kernel, int64_t stride, int64_t init,
                               int64_t topk, int64_t window)
{
    eng_sparse_config sc = {0};
    sc.block_size = block;
    sc.kernel_size = kernel;
    sc.kernel_stride = stride;
    sc.init_blocks = init;
    sc.topk = topk;
    sc.window_size = window;
    sc.dense_len = 0;
    sc.use_nope = true;
    return sc;
}

/* The configs the sweeps run over. */
static tcfg configs(int i)
{
    switch (i) {
    case 0:   // golden tiny-a: K = 16, 10 forced, 6 by score
        return (tcfg){"tiny-a", mkcfg(64, 32, 16, 1, 8, 512), 4, 2, 16, 2300, 3};
    case 1:   // small blocks, many compete: K = 6, 4 forced, 2 by score
        return (tcfg){"small", mkcfg(16, 8, 4, 1, 4, 32), 4, 2, 8, 700, 1};
    case 2:   // the brief's small config: K = 4 = the forced blocks
        return (tcfg){"small-topk2", mkcfg(16, 8, 4, 1, 2, 32), 6, 2, 8, 400, 1};
    case 3:   // no local window: the newest K1 window pools into a scored block
        return (tcfg){"window0", mkcfg(16, 8, 4, 1, 4, 0), 4, 2, 8, 500, 1};
    case 4:   // more forced blocks than K: forced ties at +inf, lower ids win
        return (tcfg){"overforced", mkcfg(16, 8, 4, 2, 1, 32), 4, 2, 8, 300, 1};
    default:  // hg = 1, init 0, stride not dividing the K2 grid evenly into blocks
        return (tcfg){"hg1", mkcfg(32, 16, 8, 0, 3, 64), 2, 2, 12, 900, 1};
    }
}
#define N_CONFIGS 6

/* ---- deterministic random numbers ---------------------------------------------------------- */

static uint64_t rng_state;
static double urand(void)   // uniform [-1, 1)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 4503599627370496.0 - 1.0;
}

/* Keys: noise plus a random direction per block, so that block scores differ clearly. */
typedef struct {
    float *K, *V, *Q;     // K, V: (L, nkv, d), Q: (L, nh, d)
} seq;

static seq seq_new(const tcfg *c, uint64_t seed)
{
    seq s;
    int64_t L = c->L, row = c->nkv * c->d, B = c->sc.block_size;
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    s.K = malloc(sizeof(float) * (size_t)(L * row));
    s.V = malloc(sizeof(float) * (size_t)(L * row));
    s.Q = malloc(sizeof(float) * (size_t)(L * c->nh * c->d));
    int64_t nbias = (L + B - 1) / B;
    float *bias = malloc(sizeof(float) * (size_t)(nbias * row));
    for (int64_t i = 0; i < nbias * row; i++) bias[i] = (float)(1.5 * urand());
    for (int64_t j = 0; j < L; j++)
        for (int64_t f = 0; f < row; f++) {
            s.K[j * row + f] = (float)(0.7 * urand()) + bias[(j / B) * row + f];
            s.V[j * row + f] = (float)urand();
        }
    for (int64_t i = 0; i < L * c->nh * c->d; i++) s.Q[i] = (float)(2.0 * urand());
    free(bias);
    return s;
}

static void seq_free(seq *s)
{
    free(s->K);
    free(s->V);
    free(s->Q);
}

/* ---- brute force --------------------------------------------------------------------------- */

/* Means of every complete window of K[0..L), in double: C (n, nkv, d). Returns n. */
static int64_t bf_compress(const tcfg *c, const float *K, int64_t L, int64_t k, int64_t s,
                           double *C)
{
    int64_t row = c->nkv * c->d, n = 0;
    for (int64_t i = 0; s * i + k <= L; i++, n++)
        for (int64_t f = 0; f < row; f++) {
            double sum = 0;
            for (int64_t t = s * i; t < s * i + k; t++) sum += K[t * row + f];
            C[i * row + f] = sum / (double)k;
        }
    return n;
}

typedef struct {
    double *K1, *K2;
    int64_t n1, n2;
} bf_cache;

static bf_cache bf_cache_new(const tcfg *c, const float *K, int64_t L)
{
    bf_cache b;
    int64_t row = c->nkv * c->d, k1 = c->sc.kernel_size, s1 = c->sc.kernel_stride;
    b.K1 = malloc(sizeof(double) * (size_t)((L / s1 + 1) * row));
    b.K2 = malloc(sizeof(double) * (size_t)((L / (4 * s1) + 1) * row));
    b.n1 = bf_compress(c, K, L, k1, s1, b.K1);
    b.n2 = bf_compress(c, K, L, 4 * k1, 4 * s1, b.K2);
    return b;
}

static double bf_dot(const float *q, const double *k, int64_t d)
{
    double s = 0;
    for (int64_t e = 0; e < d; e++) s += q[e] * k[e];
    return s;
}

/* Scores of the causal blocks 0..qb (SALA-SPEC §3.6 steps 2-3). With no valid K2 window the
 * normalizer is empty and P is taken as 0 (the convention infllm.c states). */
static void bf_scores(const tcfg *c, const bf_cache *bc, const float *q, int g, int64_t p,
                      double *score)
{
    const eng_sparse_config *sc = &c->sc;
    int64_t k1 = sc->kernel_size, s1 = sc->kernel_stride, k2 = 4 * k1, s2 = 4 * s1;
    int64_t hg = c->nh / c->nkv, d = c->d, nkv = c->nkv, B = sc->block_size;
    double scale = 1.0 / sqrt((double)d);
    double *P = calloc((size_t)bc->n1 + 1, sizeof(double));
    for (int64_t n = g * hg; n < (g + 1) * hg; n++) {
        double sum = 0;
        for (int64_t cc = 0; cc < bc->n2; cc++)
            if (s2 * cc + k2 - 1 <= p) sum += exp(scale * bf_dot(q + n * d, bc->K2 + (cc * nkv + g) * d, d));
        if (sum == 0) continue;
        double lse = log(sum);
        for (int64_t i = 0; i < bc->n1; i++)
            if (s1 * i + k1 - 1 <= p) P[i] += exp(scale * bf_dot(q + n * d, bc->K1 + (i * nkv + g) * d, d) - lse);
    }
    int64_t qb = p / B, r = B / s1;
    for (int64_t b = 0; b <= qb; b++) {
        double s = -INFINITY;
        for (int64_t i = r * b - 1; i <= r * b + r - 1; i++)
            if (i >= 0 && i < bc->n1 && P[i] > s) s = P[i];
        if (b < sc->init_blocks || (qb - sc->window_size / B <= b && b <= qb)) s = INFINITY;
        score[b] = s;
    }
    free(P);
}

/* Ranking of the causal blocks by repeated arg-max (the first maximum, i.e. the lowest id,
 * wins). rank[0..nb) receives the ids best first. */
static void bf_rank(const double *score, int64_t nb, int32_t *rank)
{
    char *taken = calloc((size_t)nb, 1);
    for (int64_t k = 0; k < nb; k++) {
        int64_t best = -1;
        for (int64_t b = 0; b < nb; b++)
            if (!taken[b] && (best < 0 || score[b] > score[best])) best = b;
        taken[best] = 1;
        rank[k] = (int32_t)best;
    }
    free(taken);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int32_t sel[512];   // ascending
    int n;
    double margin;      // (s_K - s_{K+1}) / s_K, +inf when all fit, 0 on a tie
    bool ambiguous;     // scores near the boundary that differ by less than 1e-5 relative
} bf_sel;

static void bf_select(const tcfg *c, const bf_cache *bc, const float *q, int g, int64_t p,
                      bf_sel *out)
{
    int64_t qb = p / c->sc.block_size, nb = qb + 1;
    int64_t K = c->sc.topk + c->sc.window_size / c->sc.block_size;
    double *score = malloc(sizeof(double) * (size_t)nb);
    int32_t *rank = malloc(sizeof(int32_t) * (size_t)nb);
    bf_scores(c, bc, q, g, p, score);
    bf_rank(score, nb, rank);
    out->n = (int)(nb < K ? nb : K);
    memcpy(out->sel, rank, sizeof(int32_t) * (size_t)out->n);
    qsort(out->sel, (size_t)out->n, sizeof(int32_t), cmp_i32);
    out->margin = INFINITY;
    out->ambiguous = false;
    if (nb > K) {
        double a = score[rank[K - 1]], b = score[rank[K]];
        out->margin = a == b ? 0.0 : (isinf(a) || isinf(b)) ? INFINITY : (a - b) / a;
        for (int64_t k = K - 2; k <= K; k++) {
            if (k < 0 || k + 1 >= nb) continue;
            double x = score[rank[k]], y = score[rank[k + 1]];
            if (x != y && isfinite(x) && fabs(x - y) <= 1e-5 * fabs(x)) out->ambiguous = true;
        }
    }
    free(score);
    free(rank);
}

/* Softmax attention of the q heads of group g over the keys j <= p of the listed blocks (or
 * all keys j <= p when blocks is NULL), in double: out (hg, d). */
static void bf_attend(const tcfg *c, const seq *s, const float *q, int g, int64_t p,
                      const int32_t *blocks, int nblocks, double *out)
{
    int64_t hg = c->nh / c->nkv, d = c->d, row = c->nkv * c->d, B = c->sc.block_size;
    double scale = 1.0 / sqrt((double)d);
    double *w = malloc(sizeof(double) * (size_t)(p + 1));
    for (int64_t h = 0; h < hg; h++) {
        const float *qh = q + (g * hg + h) * d;
        double m = -INFINITY;
        for (int64_t j = 0; j <= p; j++) {
            bool in = blocks == NULL;
            for (int i = 0; i < nblocks && !in; i++) in = blocks[i] == j / B;
            w[j] = NAN;
            if (!in) continue;
            double x = 0;
            for (int64_t e = 0; e < d; e++) x += (double)qh[e] * s->K[j * row + g * d + e];
            w[j] = scale * x;
            if (w[j] > m) m = w[j];
        }
        double den = 0;
        for (int64_t e = 0; e < d; e++) out[h * d + e] = 0;
        for (int64_t j = 0; j <= p; j++) {
            if (isnan(w[j])) continue;
            double e_ = exp(w[j] - m);
            den += e_;
            for (int64_t e = 0; e < d; e++) out[h * d + e] += e_ * s->V[j * row + g * d + e];
        }
        for (int64_t e = 0; e < d; e++) out[h * d + e] /= den;
    }
    free(w);
}

/* ---- helpers around the op ----------------------------------------------------------------- */

typedef struct {
    float *K1, *K2;
    int64_t n1, n2;
} op_cache;

static op_cache op_cache_new(const tcfg *c, const float *K, int64_t L)
{
    op_cache o = {0};
    int64_t row = c->nkv * c->d, k1 = c->sc.kernel_size, s1 = c->sc.kernel_stride;
    int64_t m1 = infllm_n_windows(L, k1, s1), m2 = infllm_n_windows(L, 4 * k1, 4 * s1);
    o.K1 = malloc(sizeof(float) * (size_t)((m1 + 1) * row));
    o.K2 = malloc(sizeof(float) * (size_t)((m2 + 1) * row));
    infllm_compress(&c->sc, c->nkv, c->d, K, L, o.K1, &o.n1, o.K2, &o.n2);
    return o;
}

static int64_t topk_of(const tcfg *c)
{
    return c->sc.topk + c->sc.window_size / c->sc.block_size;
}

/* infllm_select with a scratch of exactly the advertised size (so ASan sees any overrun) and
 * an output of exactly K entries. */
static int op_select(const tcfg *c, const float *q, int g, int64_t p, const op_cache *oc,
                     int64_t n1, int64_t n2, int32_t *out, float *margin)
{
    int64_t ns = infllm_select_scratch(&c->sc, c->nh, p);
    float *scratch = malloc(sizeof(float) * (size_t)(ns > 0 ? ns : 1));
    int32_t *o = malloc(sizeof(int32_t) * (size_t)topk_of(c));
    float scale = (float)(1.0 / sqrt((double)c->d));
    int n = infllm_select(&c->sc, c->nh, c->nkv, c->d, scale, q, g, p, oc->K1, n1, oc->K2, n2,
                          scratch, o, margin);
    memcpy(out, o, sizeof(int32_t) * (size_t)topk_of(c));
    free(o);
    free(scratch);
    return n;
}

static double op_attend_diff(const tcfg *c, const seq *s, const float *q, int g, int64_t p,
                             const int32_t *blocks, int nblocks, const double *ref)
{
    int64_t hg = c->nh / c->nkv, d = c->d;
    float *scratch = malloc(sizeof(float) * (size_t)(nblocks * c->sc.block_size + 1));
    float *out = malloc(sizeof(float) * (size_t)(hg * d));
    float scale = (float)(1.0 / sqrt((double)d));
    infllm_attend(&c->sc, c->nh, c->nkv, d, scale, q, g, p, s->K, s->V, blocks, nblocks,
                  scratch, out);
    double diff = 0;
    for (int64_t i = 0; i < hg * d; i++) {
        double x = fabs(out[i] - ref[i]);
        if (!(x <= diff)) diff = x;   // NaN propagates as a failure
    }
    free(out);
    free(scratch);
    return diff;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void t_windows(void)
{
    CU_ASSERT_EQUAL(infllm_n_windows(0, 32, 16), 0);
    CU_ASSERT_EQUAL(infllm_n_windows(31, 32, 16), 0);
    CU_ASSERT_EQUAL(infllm_n_windows(32, 32, 16), 1);
    CU_ASSERT_EQUAL(infllm_n_windows(47, 32, 16), 1);
    CU_ASSERT_EQUAL(infllm_n_windows(48, 32, 16), 2);
    CU_ASSERT_EQUAL(infllm_n_windows(8192, 128, 64), 127);
    CU_ASSERT_EQUAL(infllm_n_windows(100, 0, 16), 0);
    CU_ASSERT_EQUAL(infllm_n_windows(100, 32, 0), 0);
}

/* Incremental compression after every token == one call at the end (bitwise), and both match
 * the double means; counts follow the complete-window rule. */
static void t_compress(void)
{
    for (int ci = 0; ci < N_CONFIGS; ci++) {
        tcfg c = configs(ci);
        seq s = seq_new(&c, 11 + (uint64_t)ci);
        int64_t L = c.L, row = c.nkv * c.d, k1 = c.sc.kernel_size, s1 = c.sc.kernel_stride;
        op_cache one = op_cache_new(&c, s.K, L);
        CU_ASSERT_EQUAL(one.n1, infllm_n_windows(L, k1, s1));
        CU_ASSERT_EQUAL(one.n2, infllm_n_windows(L, 4 * k1, 4 * s1));
        float *K1 = calloc((size_t)((one.n1 + 1) * row), sizeof(float));
        float *K2 = calloc((size_t)((one.n2 + 1) * row), sizeof(float));
        int64_t n1 = 0, n2 = 0;
        bool counts_ok = true;
        for (int64_t l = 0; l <= L; l++) {
            infllm_compress(&c.sc, c.nkv, c.d, s.K, l, K1, &n1, K2, &n2);
            counts_ok &= n1 == infllm_n_windows(l, k1, s1) && n2 == infllm_n_windows(l, 4 * k1, 4 * s1);
        }
        infllm_compress(&c.sc, c.nkv, c.d, s.K, L, K1, &n1, K2, &n2);   // no-op when repeated
        CU_ASSERT_TRUE(counts_ok);
        CU_ASSERT_EQUAL(n1, one.n1);
        CU_ASSERT_EQUAL(n2, one.n2);
        CU_ASSERT_EQUAL(memcmp(K1, one.K1, sizeof(float) * (size_t)(n1 * row)), 0);
        CU_ASSERT_EQUAL(memcmp(K2, one.K2, sizeof(float) * (size_t)(n2 * row)), 0);
        bf_cache bc = bf_cache_new(&c, s.K, L);
        double e1 = 0, e2 = 0;
        for (int64_t i = 0; i < n1 * row; i++) e1 = fmax(e1, fabs(K1[i] - bc.K1[i]));
        for (int64_t i = 0; i < n2 * row; i++) e2 = fmax(e2, fabs(K2[i] - bc.K2[i]));
        CU_ASSERT_TRUE(e1 < 1e-6 && e2 < 1e-6);
        free(K1);
        free(K2);
        free(one.K1);
        free(one.K2);
        free(bc.K1);
        free(bc.K2);
        seq_free(&s);
    }
}

/* Structural properties of one selection. */
static bool sel_props_ok(const tcfg *c, int64_t p, const int32_t *sel, int n)
{
    int64_t K = topk_of(c), qb = p / c->sc.block_size;
    int64_t want = qb + 1 < K ? qb + 1 : K;
    if (n != want) return false;
    for (int64_t k = 0; k < K; k++) {
        if (k >= n) {
            if (sel[k] != -1) return false;
            continue;
        }
        if (sel[k] < 0 || sel[k] > qb) return false;
        if (k > 0 && sel[k] <= sel[k - 1]) return false;
    }
    // Forced blocks are present unless there are more of them than K (then the lowest win).
    int64_t nforced = 0;
    for (int64_t b = 0; b <= qb; b++)
        nforced += b < c->sc.init_blocks || b >= qb - c->sc.window_size / c->sc.block_size;
    if (nforced <= K) {
        for (int64_t b = 0; b <= qb; b++) {
            if (!(b < c->sc.init_blocks || b >= qb - c->sc.window_size / c->sc.block_size)) continue;
            bool found = false;
            for (int k = 0; k < n; k++) found |= sel[k] == b;
            if (!found) return false;
        }
    }
    return true;
}

/* Every config, every (or every pstep-th) position, both groups: the op's selection equals
 * the brute force's (decode-style and prefill-style K1/K2 lengths alike), margins agree,
 * attention over the selection matches. */
static void t_select_sweep(void)
{
    for (int ci = 0; ci < N_CONFIGS; ci++) {
        tcfg c = configs(ci);
        seq s = seq_new(&c, 100 + (uint64_t)ci);
        op_cache oc = op_cache_new(&c, s.K, c.L);
        bf_cache bc = bf_cache_new(&c, s.K, c.L);
        int64_t K = topk_of(&c), k1 = c.sc.kernel_size, s1 = c.sc.kernel_stride;
        int32_t *sel = malloc(sizeof(int32_t) * (size_t)K), *sel2 = malloc(sizeof(int32_t) * (size_t)K);
        double *ref = malloc(sizeof(double) * (size_t)(c.nh * c.d));
        int64_t rows = 0, ambiguous = 0, compared = 0, bad_sel = 0, bad_props = 0, bad_decode = 0;
        int64_t bad_margin = 0, bad_attend = 0, competing = 0;
        double worst_attend = 0;
        for (int64_t p = 0; p < c.L; p++) {
            if (!visit(&c, p)) continue;
            const float *q = s.Q + p * c.nh * c.d;
            for (int g = 0; g < c.nkv; g++) {
                rows++;
                float m = 0;
                int n = op_select(&c, q, g, p, &oc, oc.n1, oc.n2, sel, &m);
                bad_props += !sel_props_ok(&c, p, sel, n);
                // Decode-style: K1/K2 hold exactly the windows complete at p.
                float m2 = 0;
                int n2 = op_select(&c, q, g, p, &oc, infllm_n_windows(p + 1, k1, s1),
                                   infllm_n_windows(p + 1, 4 * k1, 4 * s1), sel2, &m2);
                bad_decode += n2 != n || memcmp(sel, sel2, sizeof(int32_t) * (size_t)K) != 0 ||
                              memcmp(&m, &m2, sizeof(float)) != 0;
                bf_sel bs;
                bf_select(&c, &bc, q, g, p, &bs);
                if (bs.ambiguous) {
                    ambiguous++;
                    continue;
                }
                compared++;
                competing += isfinite(bs.margin) && bs.margin > 0;
                if (n != bs.n || memcmp(sel, bs.sel, sizeof(int32_t) * (size_t)n) != 0) bad_sel++;
                bool mok = isinf(bs.margin) ? isinf(m) && m > 0 : fabs(m - bs.margin) <= 1e-5;
                bad_margin += !mok;
                bf_attend(&c, &s, q, g, p, bs.sel, bs.n, ref);
                double diff = op_attend_diff(&c, &s, q, g, p, sel, n, ref);
                // The padded K-entry list gives the same result as the n-entry one.
                double diff2 = op_attend_diff(&c, &s, q, g, p, sel, (int)K, ref);
                if (!(diff < 1e-5 && diff2 < 1e-5)) bad_attend++;
                if (diff > worst_attend) worst_attend = diff;
            }
        }
        CU_ASSERT_EQUAL(bad_props, 0);
        CU_ASSERT_EQUAL(bad_decode, 0);
        CU_ASSERT_EQUAL(bad_sel, 0);
        CU_ASSERT_EQUAL(bad_margin, 0);
        CU_ASSERT_EQUAL(bad_attend, 0);
        CU_ASSERT_TRUE(ambiguous * 50 <= rows);         // the skip rule does not hide the test
        CU_ASSERT_TRUE(compared > 0);
        if (topk_of(&c) > c.sc.init_blocks + c.sc.window_size / c.sc.block_size + 1)
            CU_ASSERT_TRUE(competing * 4 >= compared);   // blocks really were chosen by score
        if (bad_sel || bad_margin || bad_attend || bad_props || bad_decode || ambiguous * 50 > rows)
            fprintf(stderr, "\n  infllm %s: rows %lld ambiguous %lld sel %lld margin %lld "
                    "attend %lld (worst %.3g) props %lld decode %lld competing %lld\n", c.name,
                    (long long)rows, (long long)ambiguous, (long long)bad_sel,
                    (long long)bad_margin, (long long)bad_attend, worst_attend,
                    (long long)bad_props, (long long)bad_decode, (long long)competing);
        free(sel);
        free(sel2);
        free(ref);
        free(oc.K1);
        free(oc.K2);
        free(bc.K1);
        free(bc.K2);
        seq_free(&s);
    }
}

/* While every causal block fits (qb + 1 <= K) the selection is 0..qb and the sparse output is
 * dense causal attention; this includes the positions before the first complete K2 window
 * (p < 4*kernel - 1) and p at window and block boundaries. */
static void t_dense_equivalence(void)
{
    tcfg c = configs(0);
    seq s = seq_new(&c, 7);
    op_cache oc = op_cache_new(&c, s.K, c.L);
    int64_t K = topk_of(&c), B = c.sc.block_size;
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)K);
    double *ref = malloc(sizeof(double) * (size_t)(c.nh * c.d));
    int64_t ps[] = {0, 1, 30, 31, 32, 47, 63, 64, 126, 127, 128, 190, 191, 500, 1000, K * B - 1};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        int64_t p = ps[i];
        const float *q = s.Q + p * c.nh * c.d;
        for (int g = 0; g < c.nkv; g++) {
            float m = 0;
            int n = op_select(&c, q, g, p, &oc, oc.n1, oc.n2, sel, &m);
            CU_ASSERT_EQUAL(n, p / B + 1);
            bool all = true;
            for (int k = 0; k < n; k++) all &= sel[k] == k;
            CU_ASSERT_TRUE(all);
            CU_ASSERT_TRUE(isinf(m) && m > 0);
            bf_attend(&c, &s, q, g, p, NULL, 0, ref);
            CU_ASSERT_TRUE(op_attend_diff(&c, &s, q, g, p, sel, n, ref) < 1e-5);
        }
    }
    free(sel);
    free(ref);
    free(oc.K1);
    free(oc.K2);
    seq_free(&s);
}

/* Positions with K1 windows but no K2 window yet, in a config where not every block is forced
 * and K < qb + 1: the result is well defined (no NaN), the forced block is kept and the lowest
 * ids fill the rest, and the brute force agrees. */
static void t_no_k2_yet(void)
{
    tcfg c = {"noK2", mkcfg(8, 8, 4, 0, 2, 0), 4, 2, 8, 64, 1};   // k2 = 32: no K2 while p < 31
    seq s = seq_new(&c, 5);
    op_cache oc = op_cache_new(&c, s.K, c.L);
    bf_cache bc = bf_cache_new(&c, s.K, c.L);
    int32_t sel[2];
    for (int64_t p = 0; p < 40; p++) {
        const float *q = s.Q + p * c.nh * c.d;
        for (int g = 0; g < c.nkv; g++) {
            float m = 0;
            int n = op_select(&c, q, g, p, &oc, oc.n1, oc.n2, sel, &m);
            CU_ASSERT_FALSE(isnan(m));
            CU_ASSERT_TRUE(sel_props_ok(&c, p, sel, n));
            bf_sel bs;
            bf_select(&c, &bc, q, g, p, &bs);
            CU_ASSERT_EQUAL(n, bs.n);
            CU_ASSERT_EQUAL(memcmp(sel, bs.sel, sizeof(int32_t) * (size_t)n), 0);
            if (p < 31) {   // forced qb plus the lowest other id
                int64_t qb = p / 8;
                CU_ASSERT_TRUE(qb == 0 ? n == 1 && sel[0] == 0 : n == 2 && sel[0] == 0 && sel[1] == qb);
            }
        }
    }
    free(oc.K1);
    free(oc.K2);
    free(bc.K1);
    free(bc.K2);
    seq_free(&s);
}

/* Exact ties at the top-K boundary: the lower block id wins. */
static void t_ties(void)
{
    tcfg c = configs(0);   // K = 16: block 0 and qb-8..qb forced, 6 chosen by score
    c.L = 2048;
    int64_t row = c.nkv * c.d, B = c.sc.block_size, K = topk_of(&c), p = c.L - 1, qb = p / B;
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)K);
    seq s = seq_new(&c, 3);
    const float *q = s.Q + p * c.nh * c.d;

    // (a) Constant keys: every pooled score is bitwise equal, so the 6 scored slots go to the
    // lowest non-forced ids 1..6.
    for (int64_t i = 0; i < c.L * row; i++) s.K[i] = 0.25f;
    op_cache oc = op_cache_new(&c, s.K, c.L);
    float m = 1;
    int n = op_select(&c, q, 0, p, &oc, oc.n1, oc.n2, sel, &m);
    CU_ASSERT_EQUAL(n, 16);
    bool ok = true;
    for (int k = 0; k < 7; k++) ok &= sel[k] == k;
    for (int k = 7; k < 16; k++) ok &= sel[k] == qb - 8 + (k - 7);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(m, 0.0f);
    free(oc.K1);
    free(oc.K2);

    // (b) Adjacent blocks sharing their top window: noise keys, five "winner" blocks whose
    // tokens align strongly with q, and the pair (b, b+1) with a weaker boost on the tokens of
    // the shared window 4b+3 only (tokens 64b+48 .. 64b+79). One slot is left for the pair.
    rng_state = 99;
    for (int64_t i = 0; i < c.L * row; i++) s.K[i] = (float)(0.05 * urand());
    int64_t g = 1, hg = c.nh / c.nkv, d = c.d;
    float qsum[64] = {0};
    for (int64_t h = 0; h < hg; h++)
        for (int64_t e = 0; e < d; e++) qsum[e] += q[(g * hg + h) * d + e];
    int64_t winners[] = {2, 5, 9, 14, 17}, b = 11;
    for (size_t w = 0; w < 5; w++)
        for (int64_t j = winners[w] * B; j < winners[w] * B + B; j++)
            for (int64_t e = 0; e < d; e++) s.K[j * row + g * d + e] += 0.5f * qsum[e];
    for (int64_t j = b * B + 48; j < b * B + 80; j++)
        for (int64_t e = 0; e < d; e++) s.K[j * row + g * d + e] += 0.3f * qsum[e];
    oc = op_cache_new(&c, s.K, c.L);
    bf_cache bc = bf_cache_new(&c, s.K, c.L);
    bf_sel bs;
    bf_select(&c, &bc, q, (int)g, p, &bs);
    n = op_select(&c, q, (int)g, p, &oc, oc.n1, oc.n2, sel, &m);
    CU_ASSERT_EQUAL(bs.margin, 0.0);             // the construction really ties at K/K+1
    CU_ASSERT_EQUAL(m, 0.0f);
    bool has_b = false, has_b1 = false;
    for (int k = 0; k < n; k++) {
        has_b |= sel[k] == b;
        has_b1 |= sel[k] == b + 1;
    }
    CU_ASSERT_TRUE(has_b);
    CU_ASSERT_FALSE(has_b1);
    CU_ASSERT_EQUAL(n, bs.n);
    CU_ASSERT_EQUAL(memcmp(sel, bs.sel, sizeof(int32_t) * (size_t)n), 0);
    free(oc.K1);
    free(oc.K2);
    free(bc.K1);
    free(bc.K2);

    // (c) Non-adjacent blocks with bitwise equal scores: copy the tokens block 3 pools over
    // (64*3-16 .. 64*4+15) onto the same offsets around block 12, boosted so that the copies
    // compete for the last slot; block 12 must lose to block 3.
    rng_state = 1234;
    for (int64_t i = 0; i < c.L * row; i++) s.K[i] = (float)(0.05 * urand());
    int64_t winners2[] = {1, 6, 8, 15, 19};
    for (size_t w = 0; w < 5; w++)
        for (int64_t j = winners2[w] * B; j < winners2[w] * B + B; j++)
            for (int64_t e = 0; e < d; e++) s.K[j * row + g * d + e] += 0.5f * qsum[e];
    for (int64_t j = 3 * B + 16; j < 3 * B + 48; j++)
        for (int64_t e = 0; e < d; e++) s.K[j * row + g * d + e] += 0.3f * qsum[e];
    memcpy(s.K + (12 * B - 16) * row, s.K + (3 * B - 16) * row,
           sizeof(float) * (size_t)((B + 32) * row));
    oc = op_cache_new(&c, s.K, c.L);
    bc = bf_cache_new(&c, s.K, c.L);
    bf_select(&c, &bc, q, (int)g, p, &bs);
    n = op_select(&c, q, (int)g, p, &oc, oc.n1, oc.n2, sel, &m);
    CU_ASSERT_EQUAL(bs.margin, 0.0);
    CU_ASSERT_EQUAL(m, 0.0f);
    bool has3 = false, has12 = false;
    for (int k = 0; k < n; k++) {
        has3 |= sel[k] == 3;
        has12 |= sel[k] == 12;
    }
    CU_ASSERT_TRUE(has3);
    CU_ASSERT_FALSE(has12);
    CU_ASSERT_EQUAL(memcmp(sel, bs.sel, sizeof(int32_t) * (size_t)n), 0);
    free(oc.K1);
    free(oc.K2);
    free(bc.K1);
    free(bc.K2);
    free(sel);
    seq_free(&s);
}

/* The real head geometry (16 q heads per group, d 128) on the tiny-a block config. */
static void t_real_heads(void)
{
    tcfg c = {"real", mkcfg(64, 32, 16, 1, 8, 512), 32, 2, 128, 2100, 1};
    seq s = seq_new(&c, 21);
    op_cache oc = op_cache_new(&c, s.K, c.L);
    bf_cache bc = bf_cache_new(&c, s.K, c.L);
    int64_t K = topk_of(&c);
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)K);
    double *ref = malloc(sizeof(double) * (size_t)(c.nh * c.d));
    int64_t ps[] = {1023, 1024, 1279, 1500, 1791, 2047, 2048, 2099};
    int compared = 0;
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        int64_t p = ps[i];
        const float *q = s.Q + p * c.nh * c.d;
        for (int g = 0; g < c.nkv; g++) {
            float m = 0;
            int n = op_select(&c, q, g, p, &oc, oc.n1, oc.n2, sel, &m);
            CU_ASSERT_TRUE(sel_props_ok(&c, p, sel, n));
            bf_sel bs;
            bf_select(&c, &bc, q, g, p, &bs);
            if (bs.ambiguous) continue;
            compared++;
            CU_ASSERT_EQUAL(n, bs.n);
            CU_ASSERT_EQUAL(memcmp(sel, bs.sel, sizeof(int32_t) * (size_t)n), 0);
            bf_attend(&c, &s, q, g, p, bs.sel, bs.n, ref);
            CU_ASSERT_TRUE(op_attend_diff(&c, &s, q, g, p, sel, n, ref) < 1e-5);
        }
    }
    CU_ASSERT_TRUE(compared >= 12);
    free(sel);
    free(ref);
    free(oc.K1);
    free(oc.K2);
    free(bc.K1);
    free(bc.K2);
    seq_free(&s);
}

/* A NaN key poisons every K2 window over it, so lse and every P become NaN: the kernel's rule
 * turns them into 0, and the selection is the forced blocks plus the lowest ids, with no NaN
 * margin. Attention over no block gives zeros. */
static void t_nan_and_empty(void)
{
    tcfg c = configs(1);   // K = 6: block 0, qb-2..qb forced, 2 by score
    seq s = seq_new(&c, 17);
    s.K[5 * c.nkv * c.d + 3] = NAN;
    s.K[5 * c.nkv * c.d + c.d + 3] = NAN;
    op_cache oc = op_cache_new(&c, s.K, c.L);
    int32_t sel[6];
    int64_t p = 300, qb = p / 16;
    for (int g = 0; g < c.nkv; g++) {
        float m = 1;
        int n = op_select(&c, s.Q + p * c.nh * c.d, g, p, &oc, oc.n1, oc.n2, sel, &m);
        CU_ASSERT_TRUE(n == 6 && sel[0] == 0 && sel[1] == 1 && sel[2] == 2 && sel[3] == qb - 2 &&
                       sel[4] == qb - 1 && sel[5] == qb);
        CU_ASSERT_EQUAL(m, 0.0f);
    }
    float out[2 * 8], scratch[1];
    for (int i = 0; i < 16; i++) out[i] = 1;
    int32_t none[2] = {-1, -1};
    infllm_attend(&c.sc, c.nh, c.nkv, c.d, 0.3f, s.Q, 0, p, s.K, s.V, none, 2, scratch, out);
    bool zero = true;
    for (int i = 0; i < 16; i++) zero &= out[i] == 0.0f;
    CU_ASSERT_TRUE(zero);
    free(oc.K1);
    free(oc.K2);
    seq_free(&s);
}

/* Bad arguments give an empty result, never a crash. */
static void t_bad_args(void)
{
    eng_sparse_config sc = mkcfg(64, 32, 16, 1, 8, 512);
    float q[8] = {0}, scratch[64], margin = 0;
    int32_t out[16];
    CU_ASSERT_EQUAL(infllm_select(&sc, 4, 2, 2, 1.0f, q, 2, 10, NULL, 0, NULL, 0, scratch, out, &margin), 0);
    CU_ASSERT_EQUAL(infllm_select(&sc, 4, 2, 2, 1.0f, q, 0, -1, NULL, 0, NULL, 0, scratch, out, &margin), 0);
    CU_ASSERT_EQUAL(infllm_select(&sc, 3, 2, 2, 1.0f, q, 0, 10, NULL, 0, NULL, 0, scratch, out, &margin), 0);
    CU_ASSERT_EQUAL(infllm_select_scratch(&sc, 4, -1), 0);
    eng_sparse_config z = sc;
    z.block_size = 0;
    CU_ASSERT_EQUAL(infllm_select(&z, 4, 2, 2, 1.0f, q, 0, 10, NULL, 0, NULL, 0, scratch, out, &margin), 0);
}

void suite_infllm(void)
{
    SALA_ADD("infllm", {"window counts", t_windows},
             {"compression incremental == one-shot == double means", t_compress},
             {"selection and attention vs brute force, all configs", t_select_sweep},
             {"all causal blocks fit: dense attention", t_dense_equivalence},
             {"no K2 window yet", t_no_k2_yet}, {"exact ties: lower id wins", t_ties},
             {"16 heads per group, d 128", t_real_heads},
             {"NaN keys, no blocks", t_nan_and_empty}, {"bad arguments", t_bad_args});
}
