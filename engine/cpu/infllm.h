/* infllm.h: InfLLM-V2 sparse attention on the CPU (SALA-SPEC §3.6, ../shared/golden README §4),
 * fp32, for one sparse layer. Pure functions over caller-owned buffers: no allocation inside.
 *
 * Layouts (row-major):
 *   K, V   [L, nkv, d]    keys/values of positions 0..L-1 (NoPE, no norm)
 *   K1     [n1, nkv, d]   K1_i = mean(K[s1*i .. s1*i + k1 - 1]),  k1 = kernel_size, s1 = kernel_stride
 *   K2     [n2, nkv, d]   K2_c = mean(K[s2*c .. s2*c + k2 - 1]),  k2 = 4*k1, s2 = 4*s1
 *   q      [nh, d]        one query token; q head n belongs to kv group n / (nh/nkv)
 * Only complete windows exist: n1 = L >= k1 ? (L-k1)/s1 + 1 : 0 (same for n2).
 *
 * Selection for a query at position p and kv group g:
 *   lse_n  = log sum_{c: s2*c+k2-1 <= p} exp(scale * q_n.K2_c)
 *   P_i    = sum_{n in g} exp(scale * q_n.K1_i - lse_n)  for s1*i+k1-1 <= p, else 0
 *   score_b = max of P_i over i in [r*b - 1, r*b + r - 1] ∩ [0, n1), r = block/s1
 *            (max-pool kernel r+1, stride r, padding 1: [4b-1, 4b+3] for block 64, stride 16)
 *   score_b = +inf for b < init_blocks and for qb - window/block <= b <= qb  (qb = p / block)
 *   the K = topk + window/block best causal blocks (b <= qb), equal scores: lower id wins.
 * Attention: exact softmax over the keys j <= p of the selected blocks, per q head of g. */
#ifndef SALA_CPU_INFLLM_H
#define SALA_CPU_INFLLM_H

#include <stdint.h>

#include "engine/config.h"

/* Number of complete compressed windows for L keys (kernel k, stride s). */
int64_t infllm_n_windows(int64_t L, int64_t k, int64_t s);

/* Extend K1/K2 from *n1 and *n2 entries to all complete windows of K[0..L). K1/K2 must have room
 * for infllm_n_windows(L, ...) entries. Incremental: calling it after every appended token
 * gives the same buffers as one call at the end. */
void infllm_compress(const eng_sparse_config *sc, int64_t nkv, int64_t d, const float *K, int64_t L,
                     float *K1, int64_t *n1, float *K2, int64_t *n2);

/* Scratch floats infllm_select needs for a query at position p (depends on p only via n1/nb). */
int64_t infllm_select_scratch(const eng_sparse_config *sc, int64_t nh, int64_t p);

/* Select blocks for query q (all nh heads; only group g is used) at position p. K1/K2 hold at
 * least the windows complete at p. Writes the selected block ids in ascending order into
 * out[0..K) (K = topk + window/block), padded with -1, and returns the number selected.
 * If margin is not NULL it receives (s_K - s_{K+1}) / s_K over the non-forced scores (+inf when
 * every causal block fits). s_K, s_{K+1}: the K-th and (K+1)-th scores in the ranking of the
 * causal blocks; 0 on an exact tie (the lower id decided), +inf when a forced (+inf) score is
 * s_K and s_{K+1} is finite. Before the first K2 window is complete (p < 4*kernel_size - 1) the
 * normalizer is empty and every P_i is taken as 0: forced blocks first, then the lowest ids.
 * Bad arguments (p < 0, g out of range, nh not a multiple of nkv) select nothing. */
int infllm_select(const eng_sparse_config *sc, int64_t nh, int64_t nkv, int64_t d, float scale,
                  const float *q, int g, int64_t p, const float *K1, int64_t n1, const float *K2,
                  int64_t n2, float *scratch, int32_t *out, float *margin);

/* Attention output for the q heads of group g at position p over the selected blocks:
 * out[h, d] for the nh/nkv heads of the group (h = n - g*nh/nkv). scratch: >= nblocks*block
 * floats. */
void infllm_attend(const eng_sparse_config *sc, int64_t nh, int64_t nkv, int64_t d, float scale,
                   const float *q, int g, int64_t p, const float *K, const float *V,
                   const int32_t *blocks, int nblocks, float *scratch, float *out);

#endif
