/* cu_lightning.cu: the chunk-parallel lightning prefill (SALA-SPEC §3.5, the chunked form of
 * engine/cpu/lightning.c) as strided-batched cuBLAS products over (head, chunk), with the
 * element-wise parts in cu_kernels.cu:
 *   prep    Qh, Qd = Qh λ^{τ+1}, Kh, Kw = Kh λ^{len-1-σ}, Vh            (nh, Tp, d)
 *   ΔS_c  = Kw_cᵀ V_c                                                  (batched, fp32)
 *   scan    S_in(c) in place of ΔS_c; the layer state moves to the end
 *   O     = Qd_c S_in(c)            (inter-chunk)
 *   A     = Q_c K_cᵀ, masked and decayed λ^{τ-σ} (σ <= τ)
 *   O    += A V_c                   (intra-chunk)
 *   out     scale · O -> o_norm -> · sigmoid(z)                         (cu_kernels.cu)
 * Row-major (rows, d) blocks are column-major (d, rows) matrices to cuBLAS. */
#include "engine/cuda/cu_int.h"

int cu_lightning_chunked(cublasHandle_t h, cudaStream_t st, const la_args *a,
                         cublasComputeType_t ct, sala_err *e)
{
    const int C = CU_LA_C, d = a->d, nb = a->nh * (a->Tp / C);
    const long long sq = (long long)C * d, ss = (long long)d * d, sa = (long long)C * C;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasSetStream(h, st));
    /* ΔS (d x d): C'(j,i) = Σσ V[σ][j] Kw[σ][i] */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_T, d, d, C, &one,
                                            a->Vh, CUDA_R_32F, d, sq, a->Kw, CUDA_R_32F, d, sq,
                                            &zero, a->Sb, CUDA_R_32F, d, ss, nb, ct,
                                            CUBLAS_GEMM_DEFAULT));
    CUDA_CHECK(k_la_scan(st, a));
    /* O (C x d) = Qd S_in */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, d, C, d, &one,
                                            a->Sb, CUDA_R_32F, d, ss, a->Qd, CUDA_R_32F, d, sq,
                                            &zero, a->Oh, CUDA_R_32F, d, sq, nb, ct,
                                            CUBLAS_GEMM_DEFAULT));
    /* A (C x C): A[τ][σ] = q_τ · k_σ */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, C, C, d, &one,
                                            a->Kh, CUDA_R_32F, d, sq, a->Qh, CUDA_R_32F, d, sq,
                                            &zero, a->Ab, CUDA_R_32F, C, sa, nb, ct,
                                            CUBLAS_GEMM_DEFAULT));
    CUDA_CHECK(k_la_mask(st, a));
    /* O += A V */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, d, C, C, &one,
                                            a->Vh, CUDA_R_32F, d, sq, a->Ab, CUDA_R_32F, C, sa,
                                            &one, a->Oh, CUDA_R_32F, d, sq, nb, ct,
                                            CUBLAS_GEMM_DEFAULT));
    return SALA_OK;
}
