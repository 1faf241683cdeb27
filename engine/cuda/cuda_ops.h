/* cuda_ops.h: host-pointer entry points to the CUDA backend's kernels, for the parity tests
 * (tests/test_cuda.c) only. libsala_cuda.so exports `const sala_cuda_ops *sala_cuda_ops_get(void)`.
 * Every op uploads its inputs, runs the same kernel the forward pass runs, downloads the result
 * and frees its device memory; device pointers never cross this interface. fp32 inputs that the
 * kernel reads as bf16 (weights, the K/V cache, sparse-layer queries) are rounded to bf16
 * (nearest even) on the device side; the caller's CPU twin should round them the same way.
 * Every op returns SALA_OK or a negative status with the reason in *e. */
#ifndef SALA_CUDA_OPS_H
#define SALA_CUDA_OPS_H

#include <stdint.h>

#include "common.h"
#include "engine/config.h"

typedef struct {
    /* x (T, D) += rs * a (a may be NULL) -> x_out; h_out = rmsnorm(x_out) * w as bf16 values.
     * x16: the residual stream in bf16 (prefill's form): x goes up rounded to bf16, x_out is
     * rounded to bf16 after the add (the same for x, norm_rows, embed and gemm_acc's y). */
    int (*add_norm)(const float *x, const float *a, float rs, const float *w, int T, int D,
                    float eps, bool x16, float *x_out, float *h_out, sala_err *e);
    /* y (T, out) = bf16(x) (T, in) · bf16(W) (out, in)ᵀ, fp32 accumulation */
    int (*gemm)(const float *W, int out, int in, const float *x, int T, float *y, sala_err *e);
    /* out (T, I) = bf16(silu(gu[:, :I]) * gu[:, I:]) */
    int (*swiglu)(const float *gu, int T, int I, float *out, sala_err *e);
    /* Lightning core of one layer at positions p0..p0+T-1: proj (T, 4 nh d) = q|k|v|z; q/k
     * per-head RMSNorm (qn, kn), RoPE (theta), Simple-GLA with the ALiBi decays of nh heads and
     * state S (nh, d, d) in/out, then RMSNorm (on) and · sigmoid(z): out (T, nh d) bf16 values.
     * T == 1 runs the decode step, T > 1 the chunked prefill (the tensor-core kernels, or the
     * cuBLAS products when SALA_CUDA_LA_BLAS is set, read at each call). o_raw, when not NULL,
     * receives the core's output before o_norm, scale · O (T, nh d) in fp32. proj16: proj goes
     * up rounded to bf16 (round to nearest even) and the prefill reads it as bf16 (the forward's
     * prefill form, cu_la_proj16); T > 1 and the tensor-core path only, else SALA_EINVAL. */
    int (*lightning)(int T, int nh, int d, int64_t p0, double theta, float eps, const float *proj,
                     const float *qn, const float *kn, const float *on, float *S, float *out,
                     float *o_raw, bool proj16, sala_err *e);
    /* Attention of queries Q (T, nh, d) at positions p0.. over K/V (L, nkv, d) (L >= p0 + T):
     * dense (sel NULL): keys 0..p; sparse: keys j <= p of the blocks sel (T, nkv, Ksel) of 64. */
    int (*attention)(const float *Q, const float *K, const float *V, int64_t L, int64_t p0, int T,
                     int nh, int nkv, int d, const int32_t *sel, int Ksel, float *out,
                     sala_err *e);
    /* K1 (n1, nkv, d), K2 (n2, nkv, d) of K (L, nkv, d) as bf16 values, built incrementally in
     * two calls (first L/3 tokens, then the rest). */
    int (*compress)(const float *K, int64_t L, int nkv, int d, int k1, int s1, float *K1,
                    float *K2, sala_err *e);
    /* Block selection of queries Q (T, nh, d) at positions p0.. from K1 (n1), K2 (n2) (all
     * windows of the first p0+T keys): sel (T, nkv, K) ascending, -1 padded. */
    int (*select)(const float *Q, int64_t p0, int T, int nh, int nkv, int d, const float *K1,
                  int64_t n1, const float *K2, int64_t n2, const eng_sparse_config *sc,
                  int32_t *sel, sala_err *e);
    /* out (T, W) = bf16(o * sigmoid(z)), z = proj[:, zoff : zoff + W] of proj (T, ld); proj16:
     * proj goes up rounded to bf16 and is read so (a prefill step's form; sparse_prep too) */
    int (*gate)(const float *o, const float *proj, int ld, int zoff, int T, int W, bool proj16,
                float *out, sala_err *e);
    /* out (n, D) = bf16(rmsnorm(x[rows[r]]) * w * scale) for x (rows of D) */
    int (*norm_rows)(const float *x, int64_t xrows, const int32_t *rows, int n, int D,
                     const float *w, float eps, float scale, bool x16, float *out, sala_err *e);
    /* Sparse-layer split of proj (T, ld) = q (nh d) | k (nkv d) | v (nkv d) | ...: Qb (T, nh d)
     * and the cache rows p0 .. p0+T-1 of Kc, Vc (p0 + T, nkv d), all as bf16 values (cache rows
     * before p0 are 0) */
    int (*sparse_prep)(const float *proj, int ld, int T, int nh, int nkv, int d, int64_t p0,
                       bool proj16, float *Qb, float *Kc, float *Vc, sala_err *e);
    /* x (T, D) = bf16(E)[tok] * scale for E (V, D) */
    int (*embed)(const float *E, int64_t V, const int32_t *tok, int T, int D, float scale,
                 bool x16, float *x, sala_err *e);
    /* Prefill forms of the MLP and output projections: y (T, out) += alpha · bf16(x) bf16(W)ᵀ
     * (y in and out, fp32, or bf16 with y16: the residual add folded into the GEMM) */
    int (*gemm_acc)(const float *W, int out, int in, const float *x, int T, float alpha,
                    bool y16, float *y, sala_err *e);
    /* out (T, I) = bf16(silu(g) u) for gu = bf16(bf16(x) bf16(W)ᵀ) (T, 2I), W (2I, in): the
     * forward pass's choice for a prefill step: the fused sm_90a kernel where it fits (*fused =
     * 1; cu_gemm90.cu, SALA_CUDA_GU_FUSED), else the gate/up GEMM with bf16 output and the
     * SwiGLU that reads it (*fused = 0) */
    int (*mlp_gu)(const float *W, int I, int in, const float *x, int T, float *out, int *fused,
                  sala_err *e);
    /* Benchmark, not parity: seconds a call of GEMM form kind (0: fp32 out, 1: fp32 y += 0.5 ·,
     * 2: bf16 out; y (T, out) = x (T, in) Wᵀ) takes with SALA_CUDA_LT=0 (cublasGemmEx) and with
     * the timed cuBLASLt choice, over reps calls each; *lt_won: the choice is cuBLASLt. */
    int (*gemm_speed)(int kind, int out, int in, int T, int reps, double *sec_ex, double *sec_lt,
                      int *lt_won, sala_err *e);
    /* Benchmark, not parity: seconds a stage-1 launch and a top-K launch take for T queries at
     * the end of L tokens (the model's sparse shape), over reps rounds of `layers` (<= 12)
     * layers' keys, each layer its own K1/K2 (more layers: keys read from HBM, as in decode). */
    int (*select_speed)(int64_t L, int T, int layers, int reps, double *sec_score,
                        double *sec_topk, sala_err *e);
    /* The decode GEMV (cu_gemv.cu, whatever SALA_CUDA_GEMV says): y (T, ldy) fp32, in and out
     * (columns >= out untouched) = bf16(x) (T, in) · bf16(W) (out, in)ᵀ for form 0, += alpha ·
     * that for form 1, bf16 of it for form 2 (y uploaded and returned as bf16 values), form 3
     * SwiGLU (W = gate | up, out = 2I; y (T, ldy >= I) bf16 values = bf16(g sigmoid(g) u)); T 1..8,
     * in % 8 == 0; variant -1: the default for the shape, else 0 .. nvar - 1 (gemv_speed). */
    int (*gemv)(const float *W, int out, int in, const float *x, int T, int form, float alpha,
                int variant, float *y, int ldy, sala_err *e);
    /* Benchmark, not parity: microseconds a call of y (T, out) fp32 = x Wᵀ takes with the
     * weights from HBM (rotating copies), us[nus >= *nvar + 4]: [0] cublasGemmEx, [1] the best
     * cuBLASLt heuristic candidate (-1: none ran), [2 + v] GEMV variant v (v < *nvar) with
     * programmatic dependent launch, [2 + nvar] the default variant without it, [3 + nvar] a
     * plain read of the same bytes (the bandwidth floor). out 0: only *nvar. */
    int (*gemv_speed)(int out, int in, int T, double *us, int nus, int *nvar, sala_err *e);
    /* Parity of two stage-1 variants (SALA_CUDA_SCORE = va, then vb; "" = unset) on the GPU:
     * block scores of T queries at the end of L tokens (the model's sparse shape, hashed keys;
     * local, Ksel as in the forward pass): *max_rel the largest relative difference, *nbad the
     * scores differing by more than tol (or written by one only), where the first of them. */
    int (*score_diff)(int64_t L, int T, int local, int Ksel, const char *va, const char *vb,
                      double tol, double *max_rel, int64_t *nbad, char *where, size_t wlen,
                      sala_err *e);
    /* The greedy pick of a decode step (cu_pick.cu) on logits (V): *out = argmax after the
     * repetition penalty pen over ids[0..n), the ids stale[0..nstale) having been marked for an
     * earlier step (they must not count). */
    int (*pick)(const float *logits, int V, float pen, const int32_t *ids, int64_t n,
                const int32_t *stale, int64_t nstale, int32_t *out, sala_err *e);
    /* The top-K of block scores score (T, nkv, nbs) of the queries at positions p0.. (k_topk,
     * the kernel SALA_CUDA_TOPK and the shape select) -> sel (T, nkv, K). */
    int (*topk)(const float *score, int nbs, int64_t p0, int T, int nkv, int K, int block,
                int init, int local, int32_t *sel, sala_err *e);
    /* 1: the backend's sm_90a image runs on this device (wgmma / TMA kernels), else 0 */
    int (*sm90a)(void);
    /* Sparse attention launches that ran on the persistent streams' grid so far (a test's
     * proof that SALA_CUDA_SATTN=streamp did not fall back to the plain grid). */
    long (*attn_pers_launches)(void);
    /* 1: a bf16-proj lightning prefill of head size d takes the fused kernel (cu_la_fused),
     * which rounds q to bf16 after RoPE as it does k */
    int (*la_fused)(int d);
} sala_cuda_ops;

#endif
