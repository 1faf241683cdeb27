/* cu_pick.cu: the greedy pick of a decode step on the device (eng_seq_decode_greedy): the
 * argmax of a logits row after the repetition penalty, so that 4 bytes leave the device instead
 * of the row. The rule is engine/sampler.c's greedy one, bit for bit: a penalized id's value is
 * v > 0 ? v / penalty : v * penalty (IEEE division: nvcc's default -prec-div), applied once per
 * distinct id in [0, V); the pick is the lowest id of the largest value, NaN never wins, and a
 * NaN at id 0 gives 0 (the sampler's scan starts from id 0 and compares with >).
 *
 * The penalized ids are marked in mark[V] with a stamp (k_pick_mark) instead of being listed to
 * the pick kernel: a duplicate id marks twice with the same stamp, marks of earlier steps carry
 * older stamps and need no clearing. The caller keeps stamps increasing (> 0) and zeroes mark
 * before a stamp repeats. */
#include "engine/cuda/cu_int.h"

#include <math.h>

static __global__ void pick_mark_kernel(const int32_t *ids, int64_t n, int V, int32_t *mark,
                                        int32_t stamp)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int32_t t = ids[i];
        if (t >= 0 && t < V) mark[t] = stamp;
    }
}

cudaError_t k_pick_mark(cudaStream_t st, const int32_t *ids, int64_t n, int V, int32_t *mark,
                        int32_t stamp)
{
    if (n <= 0) return cudaSuccess;
    const int64_t b = (n + 255) / 256;
    pick_mark_kernel<<<(unsigned)(b < 1024 ? b : 1024), 256, 0, st>>>(ids, n, V, mark, stamp);
    return cudaGetLastError();
}

#define PICK_THREADS 1024

/* (v, i) beats (bv, bi): larger value, or the same value at a lower id; NaN never beats. */
static __device__ __forceinline__ bool pick_better(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

/* Value i of the row, penalized when marked. */
static __device__ __forceinline__ float pick_val(float v, bool use_pen, int32_t mk, int32_t stamp,
                                                 float pen)
{
    return use_pen && mk == stamp ? (v > 0 ? v / pen : v * pen) : v;
}

/* One CTA of PICK_THREADS over the row (294 KB at the real vocabulary), read as float4 where
 * the row is 16-byte aligned (V % 4 == 0 here: 8 loads of 16 B a thread in flight, ~2-3 us from
 * L2), else one float a load. */
static __global__ void __launch_bounds__(PICK_THREADS)
pick_kernel(const float *logits, int V, float pen, const int32_t *mark, int32_t stamp,
            int32_t *out)
{
    float bv = -INFINITY;
    int bi = INT_MAX;   /* no candidate yet (all NaN) */
    const bool use_pen = pen != 1.0f && mark;
    if (V % 4 == 0 && !((uintptr_t)logits & 15) && !((uintptr_t)mark & 15)) {
        const float4 *l4 = (const float4 *)logits;
        const int4 *m4 = (const int4 *)mark;
#pragma unroll 8
        for (int j = threadIdx.x; j < V / 4; j += PICK_THREADS) {
            const float4 x = l4[j];
            const int4 k = use_pen ? m4[j] : make_int4(0, 0, 0, 0);
            const float v[4] = {pick_val(x.x, use_pen, k.x, stamp, pen),
                                pick_val(x.y, use_pen, k.y, stamp, pen),
                                pick_val(x.z, use_pen, k.z, stamp, pen),
                                pick_val(x.w, use_pen, k.w, stamp, pen)};
            for (int q = 0; q < 4; q++)
                if (pick_better(v[q], 4 * j + q, bv, bi)) bv = v[q], bi = 4 * j + q;
        }
    } else {
#pragma unroll 4
        for (int i = threadIdx.x; i < V; i += PICK_THREADS) {
            const float v = pick_val(logits[i], use_pen, use_pen ? mark[i] : 0, stamp, pen);
            if (pick_better(v, i, bv, bi)) bv = v, bi = i;
        }
    }
    for (int o = 16; o; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (pick_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __shared__ float sv[PICK_THREADS / 32];
    __shared__ int si[PICK_THREADS / 32];
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (!lane) sv[w] = bv, si[w] = bi;
    __syncthreads();
    if (w) return;
    bv = lane < PICK_THREADS / 32 ? sv[lane] : -INFINITY;
    bi = lane < PICK_THREADS / 32 ? si[lane] : INT_MAX;
    for (int o = 16; o; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (pick_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (!lane) {
        /* id 0's value, penalized or not, is NaN: the sampler's scan never leaves 0 */
        const bool nan0 = isnan(logits[0]);
        const int32_t t = nan0 || bi == INT_MAX ? 0 : bi;
        out[0] = t;
    }
}

cudaError_t k_pick(cudaStream_t st, const float *logits, int V, float pen, const int32_t *mark,
                   int32_t stamp, int32_t *out)
{
    if (V <= 0) return cudaErrorInvalidValue;
    pick_kernel<<<1, PICK_THREADS, 0, st>>>(logits, V, pen, mark, stamp, out);
    return cudaGetLastError();
}
