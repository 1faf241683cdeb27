/* cu_attn.cu: causal softmax attention of the sparse layers over the bf16 K/V cache, one kernel
 * for both regimes (SALA-SPEC §3.6; twins: engine/cpu/attention.c cpu_attn_dense and
 * engine/cpu/infllm.c infllm_attend):
 *   dense   a CTA takes 64 rows = (64/G queries) x (G q heads of one kv group) and walks the key
 *           tiles 0..p (flash-attention style online softmax);
 *   sparse  a CTA takes one query's G heads (16 rows, G <= 16) and walks its selected blocks.
 * Scores and the softmax are fp32, Q/K/V and the probabilities bf16 on the tensor cores (WMMA);
 * the output accumulator is fp32 in shared memory. Key j is used iff j <= p (token causal mask). */
#include "engine/cuda/cu_wmma.cuh"

#include <math.h>

static size_t attn_smem(int R, int d)
{
    return (size_t)R * d * 2 + (size_t)2 * CU_KT * d * 2 + (size_t)R * CU_KT * 4 +
           (size_t)R * CU_KT * 2 + (size_t)R * d * 4 + (size_t)3 * R * 4;
}

template <bool SPARSE>
static __global__ void __launch_bounds__(128) attn_kernel(attn_args a, int MT, int qt)
{
    extern __shared__ __align__(128) unsigned char smraw[];
    const int R = 16 * MT, d = a.d, G = a.nh / a.nkv, g = blockIdx.y;
    bf16 *Qs = (bf16 *)smraw;
    bf16 *Ks = Qs + R * d, *Vs = Ks + CU_KT * d;
    float *S = (float *)(Vs + CU_KT * d);
    bf16 *P = (bf16 *)(S + R * CU_KT);
    float *O = (float *)(P + R * CU_KT);
    float *mrow = O + R * d, *lrow = mrow + R, *corr = lrow + R;
    const int tq0 = a.t0 + blockIdx.x * qt;                 /* first query of this CTA */
    const int tend = a.t0 + a.n;
    const int nq = tend - tq0 < qt ? tend - tq0 : qt;       /* valid queries */
    const size_t krow = (size_t)a.nkv * d;

    for (int idx = threadIdx.x; idx < R * d; idx += blockDim.x) {
        const int r = idx / d, i = idx % d, qi = r / G, h = r % G;
        bf16 v = __float2bfloat16(0.0f);
        if (qi < nq) v = a.Q[((size_t)(tq0 + qi) * a.nh + g * G + h) * d + i];
        Qs[idx] = v;
        O[idx] = 0.0f;
    }
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
    }
    const int64_t pmax = a.p0 + tq0 + nq - 1;
    int ntiles;
    const int32_t *sel = nullptr;
    if (SPARSE) {
        sel = a.sel + ((size_t)tq0 * a.nkv + g) * a.K_sel;
        ntiles = a.K_sel;
    } else {
        ntiles = (int)(pmax / CU_KT) + 1;
    }
    __syncthreads();
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t last = -1;
    for (int it = 0; it < ntiles; it++) {
        int64_t b = SPARSE ? sel[it] : it;
        if (b < 0 || b <= last) continue;                   /* padding / repeats */
        last = b;
        const int64_t j0 = b * CU_KT;
        if (j0 > pmax) continue;
        const int nk = (int)(pmax - j0 + 1 < CU_KT ? pmax - j0 + 1 : CU_KT);
        load_rows(Ks, a.K + j0 * krow + (size_t)g * d, krow, nk, d);
        load_rows(Vs, a.V + j0 * krow + (size_t)g * d, krow, nk, d);
        __syncthreads();
        tile_qk(Qs, Ks, S, MT, d);
        __syncthreads();
        for (int r = w; r < R; r += 4) {
            const int qi = r / G;
            const int64_t p = a.p0 + tq0 + qi;
            const bool rv = qi < nq;
            float s0 = S[r * CU_KT + lane] * a.scale, s1 = S[r * CU_KT + lane + 32] * a.scale;
            if (!rv || j0 + lane > p) s0 = -INFINITY;
            if (!rv || j0 + lane + 32 > p) s1 = -INFINITY;
            float mx = fmaxf(s0, s1);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mo = mrow[r], mn = fmaxf(mo, mx);
            float c = 1.0f, e0 = 0.0f, e1 = 0.0f;
            if (mn != -INFINITY) {
                c = expf(mo - mn);
                e0 = expf(s0 - mn);
                e1 = expf(s1 - mn);
            }
            float sum = e0 + e1;
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            P[r * CU_KT + lane] = __float2bfloat16(e0);
            P[r * CU_KT + lane + 32] = __float2bfloat16(e1);
            __syncwarp();
            if (lane == 0) {
                lrow[r] = lrow[r] * c + sum;
                mrow[r] = mn;
                corr[r] = c;
            }
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < R * d; idx += blockDim.x) O[idx] *= corr[idx / d];
        __syncthreads();
        {
            using namespace nvcuda;
            const int nt_d = d / 16;
            for (int tile = w; tile < MT * nt_d; tile += 4) {
                const int mt = tile / nt_d, nt = tile % nt_d;
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
                wmma::load_matrix_sync(acc, O + mt * 16 * d + nt * 16, d, wmma::mem_row_major);
                for (int kk = 0; kk < CU_KT; kk += 16) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                    wmma::load_matrix_sync(fa, P + mt * 16 * CU_KT + kk, CU_KT);
                    wmma::load_matrix_sync(fb, Vs + kk * d + nt * 16, d);
                    wmma::mma_sync(acc, fa, fb, acc);
                }
                wmma::store_matrix_sync(O + mt * 16 * d + nt * 16, acc, d, wmma::mem_row_major);
            }
        }
        __syncthreads();
    }
    for (int idx = threadIdx.x; idx < R * d; idx += blockDim.x) {
        const int r = idx / d, i = idx % d, qi = r / G, h = r % G;
        if (qi >= nq) continue;
        const float l = lrow[r];
        a.O[((size_t)(tq0 + qi) * a.nh + g * G + h) * d + i] = l > 0.0f ? O[idx] / l : 0.0f;
    }
}

cudaError_t k_attn_dense(cudaStream_t st, const attn_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const int G = a->nh / a->nkv, MT = 4, qt = 64 / G;
    const dim3 grid((a->n + qt - 1) / qt, a->nkv);
    attn_kernel<false><<<grid, 128, attn_smem(16 * MT, a->d), st>>>(*a, MT, qt);
    return cudaGetLastError();
}

cudaError_t k_attn_sparse(cudaStream_t st, const attn_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const dim3 grid(a->n, a->nkv);
    attn_kernel<true><<<grid, 128, attn_smem(16, a->d), st>>>(*a, 1, 1);
    return cudaGetLastError();
}

cudaError_t cu_attn_init(void)
{
    cudaError_t err = cudaFuncSetAttribute(attn_kernel<false>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)attn_smem(64, 256));
    if (err != cudaSuccess) return err;
    return cudaFuncSetAttribute(attn_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)attn_smem(16, 256));
}
