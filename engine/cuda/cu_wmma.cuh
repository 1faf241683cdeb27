/* cu_wmma.cuh: tile helpers shared by the attention and InfLLM-V2 stage-1 kernels (WMMA bf16
 * 16x16x16, fp32 accumulate). A CTA has 4 warps; a row tile is R = 16*MT query rows of d
 * (d % 16 == 0) and a key tile is CU_KT = 64 keys. */
#ifndef SALA_CU_WMMA_CUH
#define SALA_CU_WMMA_CUH

#include <mma.h>

#include "engine/cuda/cu_int.h"

/* S (R, 64) fp32 = Qs (R, d) · Ks (64, d)ᵀ, all in shared memory, row-major. */
static __device__ __forceinline__ void tile_qk(const bf16 *Qs, const bf16 *Ks, float *S, int MT,
                                               int d)
{
    using namespace nvcuda;
    const int w = threadIdx.x >> 5;
    for (int tile = w; tile < MT * 4; tile += 4) {
        const int mt = tile >> 2, nt = tile & 3;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < d; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
            wmma::load_matrix_sync(fa, Qs + mt * 16 * d + kk, d);
            wmma::load_matrix_sync(fb, Ks + nt * 16 * d + kk, d);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(S + mt * 16 * CU_KT + nt * 16, acc, CU_KT, wmma::mem_row_major);
    }
}

/* Rows [0, nrows) of a (rows, d) bf16 matrix with row stride ld (elements) into dst (64, d),
 * zero rows past nrows. 16-byte copies (d % 8 == 0, rows 16-byte aligned). */
static __device__ __forceinline__ void load_rows(bf16 *dst, const bf16 *src, size_t ld, int nrows,
                                                 int d)
{
    const int per = d / 8;
    for (int idx = threadIdx.x; idx < CU_KT * per; idx += blockDim.x) {
        const int r = idx / per, c = idx % per;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nrows) v = *(const uint4 *)(src + (size_t)r * ld + c * 8);
        *(uint4 *)(dst + r * d + c * 8) = v;
    }
}

#endif
