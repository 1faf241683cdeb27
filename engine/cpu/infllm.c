/* infllm.c: InfLLM-V2 sparse attention on the CPU, fp32 reference (SALA-SPEC §3.6 steps 1-5,
 * ../shared/golden README §4). Contract and layouts: infllm.h.
 *
 * Invariants:
 *   - no allocation: every buffer comes from the caller; nothing asserts on data;
 *   - dot products, means and softmax sums are accumulated in double, stored as float;
 *   - a compressed window exists only when complete, and is valid for a query at p when it lies
 *     wholly at or before p (p included);
 *   - selection ranks the causal blocks 0..qb by (score desc, block id asc): equal scores, lower
 *     id wins (the reference's torch.topk behaviour); blocks > qb are never selected. */
#include "engine/cpu/infllm.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

/* Columns accumulated at once in double on the stack (means and attention output). */
#define INFLLM_CHUNK 32

int64_t infllm_n_windows(int64_t L, int64_t k, int64_t s)
{
    if (k <= 0 || s <= 0 || L < k) return 0;
    return (L - k) / s + 1;
}

/* dst[0..w) = mean over t < k of src[t*stride + 0..w), summed in double then divided by k. */
static void mean_rows(const float *src, int64_t stride, int64_t k, int64_t w, float *dst)
{
    for (int64_t f0 = 0; f0 < w; f0 += INFLLM_CHUNK) {
        int64_t nf = w - f0 < INFLLM_CHUNK ? w - f0 : INFLLM_CHUNK;
        double acc[INFLLM_CHUNK] = {0};
        for (int64_t t = 0; t < k; t++) {
            const float *row = src + t * stride + f0;
            for (int64_t f = 0; f < nf; f++) acc[f] += row[f];
        }
        for (int64_t f = 0; f < nf; f++) dst[f0 + f] = (float)(acc[f] / (double)k);
    }
}

/* SALA-SPEC §3.6 step 1. Window i of kernel k, stride s covers K[s*i .. s*i + k - 1]; all nkv
 * heads of a position are contiguous, so one window is a mean of k rows of nkv*d floats. */
static void compress_level(const float *K, int64_t L, int64_t row, int64_t k, int64_t s,
                           float *C, int64_t *n)
{
    int64_t want = infllm_n_windows(L, k, s);
    for (int64_t i = *n < 0 ? 0 : *n; i < want; i++)
        mean_rows(K + s * i * row, row, k, row, C + i * row);   // (k, nkv*d) -> (nkv*d)
    if (want > *n) *n = want;
}

void infllm_compress(const eng_sparse_config *sc, int64_t nkv, int64_t d, const float *K, int64_t L,
                     float *K1, int64_t *n1, float *K2, int64_t *n2)
{
    if (nkv <= 0 || d <= 0) return;
    int64_t row = nkv * d;
    int64_t k1 = sc->kernel_size, s1 = sc->kernel_stride;
    compress_level(K, L, row, k1, s1, K1, n1);           // K1: (n1, nkv, d)
    compress_level(K, L, row, 4 * k1, 4 * s1, K2, n2);   // K2: (n2, nkv, d), k2 = 4k1, s2 = 4s1
}

/* Selection geometry shared by infllm_select and infllm_select_scratch. */
typedef struct {
    int64_t qb;      // block of the query, p / block
    int64_t nb;      // causal blocks, qb + 1
    int64_t r;       // fine windows per block, block / stride
    int64_t npool;   // fine windows any causal block pools over: r * nb
    int64_t K;       // blocks to select, topk + window / block
} sel_geom;

static int sel_geom_init(const eng_sparse_config *sc, int64_t p, sel_geom *G)
{
    if (p < 0 || sc->block_size <= 0 || sc->kernel_size <= 0 || sc->kernel_stride <= 0) return -1;
    G->qb = p / sc->block_size;
    G->nb = G->qb + 1;
    G->r = sc->block_size / sc->kernel_stride;
    G->npool = G->r * G->nb;
    G->K = sc->topk + sc->window_size / sc->block_size;
    if (G->K < 0) G->K = 0;
    return 0;
}

/* Scratch layout (floats): lse as hi/lo pairs [2*nh] | P [npool] | score [nb] | sorted [nb]. */
int64_t infllm_select_scratch(const eng_sparse_config *sc, int64_t nh, int64_t p)
{
    sel_geom G;
    if (sel_geom_init(sc, p, &G) != 0) return 0;
    return 2 * (nh > 0 ? nh : 0) + G.npool + 2 * G.nb;
}

static double dot(const float *a, const float *b, int64_t d)
{
    double s = 0.0;
    for (int64_t e = 0; e < d; e++) s += (double)a[e] * (double)b[e];
    return s;
}

/* A double as float with IEEE overflow to +inf (a plain cast out of range is undefined in C). */
static float to_float(double x)
{
    if (x > FLT_MAX) return INFINITY;
    if (x < -FLT_MAX) return -INFINITY;
    return (float)x;
}

/* Descending order; scores never hold NaN (step 2 turns NaN into 0). */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int infllm_select(const eng_sparse_config *sc, int64_t nh, int64_t nkv, int64_t d, float scale,
                  const float *q, int g, int64_t p, const float *K1, int64_t n1, const float *K2,
                  int64_t n2, float *scratch, int32_t *out, float *margin)
{
    sel_geom G;
    if (margin) *margin = INFINITY;
    if (sel_geom_init(sc, p, &G) != 0 || nkv <= 0 || nh < nkv || nh % nkv != 0 || d <= 0 ||
        g < 0 || g >= nkv)
        return 0;
    for (int64_t k = 0; k < G.K; k++) out[k] = -1;
    if (G.K == 0) return 0;
    if (G.nb <= G.K) {                     // every causal block fits: no scores needed
        for (int64_t b = 0; b < G.nb; b++) out[b] = (int32_t)b;
        return (int)G.nb;
    }
    int64_t hg = nh / nkv;                 // q heads per kv group
    int64_t k1 = sc->kernel_size, s1 = sc->kernel_stride;
    int64_t v1 = infllm_n_windows(p + 1, k1, s1);          // K1 windows wholly <= p
    int64_t v2 = infllm_n_windows(p + 1, 4 * k1, 4 * s1);  // K2 windows wholly <= p
    if (v1 > n1) v1 = n1;
    if (v2 > n2) v2 = n2;
    if (v1 > G.npool) v1 = G.npool;                         // windows past the pools are unused
    int64_t np = n1 < G.npool ? n1 : G.npool;
    if (np < 0) np = 0;
    float *lse = scratch;                  // (hg, 2): lse_n as float hi + float lo
    float *P = lse + 2 * nh;               // (np)
    float *score = P + G.npool;            // (nb)
    float *sorted = score + G.nb;          // (nb)
    const float *qg = q + (int64_t)g * hg * d;   // (hg, d)

    // Step 2, coarse normalizer: lse_n = log sum_{c valid} exp(scale q_n.K2_c), max-subtracted.
    // With no valid K2 window (p < 4*kernel - 1) the normalizer is empty (lse_n = -inf) and
    // the plain formula gives +inf for every valid P_i, tying with the forced blocks. We take
    // P_i = 0 instead: the forced blocks are then always chosen and the lowest ids fill the
    // rest. The two agree whenever every causal block fits (qb + 1 <= K), which covers every
    // MiniCPM-SALA config (p < 127 there gives qb <= 1).
    for (int64_t h = 0; h < hg && v2 > 0; h++) {
        const float *qh = qg + h * d;
        double m = -INFINITY, sum = 0.0;
        for (int64_t c = 0; c < v2; c++) {
            double x = scale * dot(qh, K2 + (c * nkv + g) * d, d);
            if (x > m) {
                sum = sum * exp(m - x) + 1.0;
                m = x;
            } else {
                sum += exp(x - m);
            }
        }
        double l = m + log(sum);
        float hi = to_float(l);
        lse[2 * h] = hi;
        lse[2 * h + 1] = isfinite(l) ? (float)(l - hi) : 0.0f;
    }
    // Step 2, fine scores summed over the group: P_i = sum_n exp(scale q_n.K1_i - lse_n) for
    // valid i, 0 otherwise; NaN becomes 0 as in the reference kernel.
    for (int64_t i = 0; i < np; i++) {
        if (i >= v1 || v2 == 0) {
            P[i] = 0.0f;
            continue;
        }
        double s = 0.0;
        for (int64_t h = 0; h < hg; h++) {
            double l = (double)lse[2 * h] + (double)lse[2 * h + 1];
            s += exp(scale * dot(qg + h * d, K1 + (i * nkv + g) * d, d) - l);
        }
        P[i] = isnan(s) ? 0.0f : to_float(s);
    }
    // Step 3, block scores: max-pool over fine windows [r*b - 1, r*b + r - 1] ∩ [0, n1)
    // (-inf if empty), then +inf for the init blocks and the local blocks qb - window/block..qb.
    int64_t local0 = G.qb - sc->window_size / sc->block_size;
    for (int64_t b = 0; b < G.nb; b++) {
        float s = -INFINITY;
        int64_t lo = G.r * b - 1, hi = G.r * b + G.r - 1;
        if (lo < 0) lo = 0;
        if (hi > np - 1) hi = np - 1;
        for (int64_t i = lo; i <= hi; i++)
            if (P[i] > s) s = P[i];
        if (b < sc->init_blocks || b >= local0) s = INFINITY;
        score[b] = s;
        sorted[b] = s;
    }
    // Step 4, top-K of the causal blocks, equal scores lower id first. With t the K-th best
    // score, the chosen set is every block scoring > t plus the lowest-id blocks scoring == t.
    qsort(sorted, (size_t)G.nb, sizeof(float), cmp_desc);
    float t = sorted[G.K - 1], next = sorted[G.K];
    int64_t above = 0;
    for (int64_t b = 0; b < G.nb; b++) above += score[b] > t;
    int64_t ties = G.K - above, n = 0;    // how many blocks scoring exactly t get in
    for (int64_t b = 0; b < G.nb; b++) {
        if (score[b] > t || (score[b] == t && ties-- > 0)) out[n++] = (int32_t)b;
    }
    if (margin) {
        // (s_K - s_{K+1}) / s_K: 0 on an exact tie, +inf when an infinity separates them.
        if (t == next) *margin = 0.0f;
        else if (isinf(t) || isinf(next)) *margin = INFINITY;
        else *margin = (float)(((double)t - (double)next) / (double)t);
    }
    return (int)n;
}

void infllm_attend(const eng_sparse_config *sc, int64_t nh, int64_t nkv, int64_t d, float scale,
                   const float *q, int g, int64_t p, const float *K, const float *V,
                   const int32_t *blocks, int nblocks, float *scratch, float *out)
{
    if (nkv <= 0 || nh < nkv || nh % nkv != 0 || d <= 0 || g < 0 || g >= nkv) return;
    int64_t hg = nh / nkv, B = sc->block_size, row = nkv * d;
    const float *qg = q + (int64_t)g * hg * d;   // (hg, d)
    const float *Kg = K + (int64_t)g * d;        // (L, d) with row stride nkv*d
    const float *Vg = V + (int64_t)g * d;
    for (int64_t h = 0; h < hg; h++) {
        const float *qh = qg + h * d;
        float *oh = out + h * d;
        // Step 5: x_j = scale q.k_j for j <= p in the selected blocks (ascending, ids < 0,
        // repeated or out of order skipped so that each key counts once).
        float *x = scratch;                      // (n keys)
        int64_t n = 0, last = -1;
        double m = -INFINITY;
        for (int i = 0; i < nblocks; i++) {
            int64_t b = blocks[i];
            if (b < 0 || b <= last || B <= 0) continue;
            last = b;
            for (int64_t j = b * B; j < b * B + B && j <= p; j++) {
                x[n] = to_float(scale * dot(qh, Kg + j * row, d));
                if (x[n] > m) m = x[n];
                n++;
            }
        }
        // Max-subtracted softmax: x becomes the weight exp(x - m) <= 1, summed in double.
        double den = 0.0;
        for (int64_t k = 0; k < n; k++) {
            double w = exp((double)x[k] - m);
            x[k] = (float)w;
            den += x[k];
        }
        // Output per column chunk, accumulated in double over the same keys in the same order.
        for (int64_t e0 = 0; e0 < d; e0 += INFLLM_CHUNK) {
            int64_t ne = d - e0 < INFLLM_CHUNK ? d - e0 : INFLLM_CHUNK;
            double acc[INFLLM_CHUNK] = {0};
            int64_t k = 0;
            last = -1;
            for (int i = 0; i < nblocks; i++) {
                int64_t b = blocks[i];
                if (b < 0 || b <= last || B <= 0) continue;
                last = b;
                for (int64_t j = b * B; j < b * B + B && j <= p; j++, k++) {
                    const float *vj = Vg + j * row + e0;
                    for (int64_t e = 0; e < ne; e++) acc[e] += (double)x[k] * vj[e];
                }
            }
            for (int64_t e = 0; e < ne; e++) oh[e0 + e] = den > 0.0 ? (float)(acc[e] / den) : 0.0f;
        }
    }
}
