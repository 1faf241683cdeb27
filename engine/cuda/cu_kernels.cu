/* cu_kernels.cu: the element-wise and row-wise kernels of the CUDA backend, each the twin of a
 * CPU op (engine/cpu): embedding scale, residual add + RMSNorm (fused), final norm + logit scale,
 * SwiGLU, output gates, sparse-layer q/k/v split into the bf16 cache, InfLLM-V2 compression, the
 * lightning q/k norm + RoPE + decay prep, chunk mask, state scan, decode step and output norm +
 * gate, and the random weight fill of the benchmark. fp32 arithmetic throughout.
 *
 * Row kernels (embed, add_norm, norm_rows, la_out) take a row per CTA with enough threads that a
 * 4096-wide row is one float4 per thread, kept in registers between the sum and the scaling (a
 * decode step has one row: the old 256-thread loops were a chain of dependent memory latencies);
 * the element-wise kernels (swiglu, gate, sparse_prep) run a grid (column blocks, rows) of
 * float4 / pairs. A prefill step's norm and lightning output take rows_kernel (a persistent grid,
 * 16-byte accesses, a row ahead) and its q|k|v split 16 bytes a thread. SALA_CUDA_DECODE=old
 * (read once) selects the earlier launches for comparison; shapes or pointers the vector forms do
 * not fit (odd widths, unaligned) take them too. */
#include "engine/cuda/cu_int.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int cu_sms(void)
{
    static int sms;   /* one device a process */
    if (sms <= 0) {
        int dev = 0, n = 0;
        if (cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
            sms = n;
        else
            (void)cudaGetLastError();
    }
    return sms > 0 ? sms : 0;
}

bool cu_decode_old(void)
{
    static int v = -1;
    if (v < 0) {
        const char *s = getenv("SALA_CUDA_DECODE");
        v = s && !strcmp(s, "old");
    }
    return v;
}

/* p 16-byte aligned (float4 access) */
static bool al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
static bool al8(const void *p) { return ((uintptr_t)p & 7u) == 0; }

/* float4 groups per thread (1, 2 or 4) and the CTA size (a multiple of 32, <= 1024) for a row of
 * n4 groups; 0 when n4 > 4096 (the scalar kernels then). */
static int row_nv(int n4) { return n4 <= 1024 ? 1 : n4 <= 2048 ? 2 : n4 <= 4096 ? 4 : 0; }
/* The float4 groups a thread of a row kernel takes over n rows: few rows (decode) as row_nv
 * (the most threads a row, the shortest row); a prefill's rows 4 (a quarter of the threads a
 * CTA, four times the CTAs an SM in flight: their loads, block sums and stores overlap) */
static int rows_nv(int n4, int n) { return n <= CU_GEMV_T ? row_nv(n4) : n4 <= 4096 ? 4 : 0; }
static int row_threads(int n4, int nv) { return ((n4 + nv - 1) / nv + 31) / 32 * 32; }

static __device__ __forceinline__ uint2 pack4_bf16(float a, float b, float c, float d)
{
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 pk;
    pk.x = *(uint32_t *)&lo;
    pk.y = *(uint32_t *)&hi;
    return pk;
}

static __device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result. */
static __device__ float block_sum(float v)
{
    __shared__ float red[32];
    __shared__ float tot;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        float s = l < (int)(blockDim.x >> 5) ? red[l] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (l == 0) tot = s;
    }
    __syncthreads();
    return tot;
}

/* The residual stream x is fp32 (decode, the CPU reference's arithmetic) or bf16 (prefill steps
 * by default: Hugging Face's residual stream, SALA-SPEC §3.1). X is its element type: cu_f32
 * reads one value, ld4 / st4 four (16- or 8-byte accesses), a store rounds to X (cu_st1). */
/* v as X holds it (rounded to bf16 for X = bf16); the pointer only picks the type */
static __device__ __forceinline__ float rnd(const float *, float v) { return v; }
static __device__ __forceinline__ float rnd(const bf16 *, float v)
{
    return __bfloat162float(__float2bfloat16(v));
}
static __device__ __forceinline__ float4 ld4(const float *p, int i)
{
    return ((const float4 *)p)[i];
}
static __device__ __forceinline__ float4 ld4(const bf16 *p, int i)
{
    const uint2 u = ((const uint2 *)p)[i];
    const float2 lo = __bfloat1622float2(*(const __nv_bfloat162 *)&u.x);
    const float2 hi = __bfloat1622float2(*(const __nv_bfloat162 *)&u.y);
    return make_float4(lo.x, lo.y, hi.x, hi.y);
}
static __device__ __forceinline__ void st4(float *p, int i, float4 v) { ((float4 *)p)[i] = v; }
static __device__ __forceinline__ void st4(bf16 *p, int i, float4 v)
{
    ((uint2 *)p)[i] = pack4_bf16(v.x, v.y, v.z, v.w);
}
/* p aligned for ld4 / st4 of X */
static bool al4x(const float *p) { return al16(p); }
static bool al4x(const bf16 *p) { return al8(p); }

/* norm4_kernel's accesses: P groups of four values of X (P = 1: 16 bytes of fp32, 8 of bf16;
 * P = 2, bf16 only: 16 bytes), the groups P j .. P j + P - 1 of the row. */
template <int NV, typename X> static __host__ __device__ constexpr int norm4_per()
{
    return sizeof(X) == 2 && NV % 2 == 0 ? 2 : 1;
}
template <int P, typename X>
static __device__ __forceinline__ void ldg(const X *r, int j, float4 (&u)[P])
{
    if constexpr (P == 1) {
        u[0] = ld4(r, j);
    } else {
        const uint4 q = ((const uint4 *)r)[j];
        u[0] = ld4((const bf16 *)&q, 0);
        u[1] = ld4((const bf16 *)&q, 1);
    }
}
template <int P, typename X>
static __device__ __forceinline__ void stg(X *r, int j, const float4 (&u)[P])
{
    if constexpr (P == 1) {
        st4(r, j, u[0]);
    } else {
        const uint2 lo = pack4_bf16(u[0].x, u[0].y, u[0].z, u[0].w),
                    hi = pack4_bf16(u[1].x, u[1].y, u[1].z, u[1].w);
        ((uint4 *)r)[j] = make_uint4(lo.x, lo.y, hi.x, hi.y);
    }
}

template <typename X>
static __global__ void embed_kernel(const bf16 *E, const int32_t *tok, int D, float scale, X *x)
{
    const int t = blockIdx.x;
    const bf16 *er = E + (size_t)tok[t] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        cu_st1(x + (size_t)t * D + i, __bfloat162float(er[i]) * scale);
}

/* Four bf16 of E (8-byte loads) to four values of x per thread and step. */
template <typename X>
static __global__ void embed4_kernel(const bf16 *__restrict__ E, const int32_t *__restrict__ tok,
                                     int D, float scale, X *__restrict__ x)
{
    const int t = blockIdx.x, n4 = D / 4;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 u = ld4(E + (size_t)tok[t] * D, i);
        st4(x + (size_t)t * D, i, make_float4(u.x * scale, u.y * scale, u.z * scale, u.w * scale));
    }
}

template <typename X>
static cudaError_t embed_launch(cudaStream_t st, const bf16 *E, const int32_t *tok, int T, int D,
                                float scale, X *x)
{
    if (T <= 0) return cudaSuccess;
    if (!cu_decode_old() && D % 4 == 0 && al8(E) && al4x(x)) {
        const int n4 = D / 4, thr = n4 < 1024 ? (n4 + 31) / 32 * 32 : 1024;
        embed4_kernel<X><<<T, thr, 0, st>>>(E, tok, D, scale, x);
    } else {
        embed_kernel<X><<<T, 256, 0, st>>>(E, tok, D, scale, x);
    }
    return cudaGetLastError();
}

cudaError_t k_embed(cudaStream_t st, const bf16 *E, const int32_t *tok, int T, int D, float scale,
                    float *x)
{
    return embed_launch(st, E, tok, T, D, scale, x);
}

cudaError_t k_embed(cudaStream_t st, const bf16 *E, const int32_t *tok, int T, int D,
                      float scale, bf16 *x)
{
    return embed_launch(st, E, tok, T, D, scale, x);
}

template <typename X>
static __global__ void add_norm_kernel(X *x, const float *a, float rs, const float *w, float eps,
                                       int D, bf16 *h)
{
    X *xr = x + (size_t)blockIdx.x * D;
    const float *ar = a ? a + (size_t)blockIdx.x * D : nullptr;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = cu_f32(xr[i]);
        if (ar) {
            v = rnd(xr, v + ar[i] * rs);
            cu_st1(xr + i, v);
        }
        ss += v * v;
    }
    if (!h) return;
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        h[(size_t)blockIdx.x * D + i] = __float2bfloat16(cu_f32(xr[i]) * inv * w[i]);
}

/* Row per CTA (row rows[blockIdx.x], or blockIdx.x when rows is NULL), NV groups of four values
 * per thread held in registers (x read once, written once): x += rs a when a != NULL (x is
 * written only then, rounded to X); h = bf16(rmsnorm(x) * w * scale) when h != NULL, w loaded
 * before the sum so that its latency overlaps the reduction. D % 4 == 0, D / 4 <= NV blockDim.x.
 * The arithmetic of add_norm_kernel (scale 1 is exact) and norm_rows_kernel; the sum of squares
 * is reduced in another order. Programmatic dependent launch (few rows, norm4_launch): w (never
 * written by a kernel) is loaded before griddepcontrol.wait, rows, x and a after it; the next
 * kernel may launch once this one has waited (a GEMV's first weight loads overlap the rest of
 * it). Without the launch attribute both instructions do nothing. */
template <int NV, typename X>
static __global__ void __launch_bounds__(1024)
    norm4_kernel(X *__restrict__ x, const int32_t *__restrict__ rows, const float *__restrict__ a,
                 float rs, const float *__restrict__ w, float eps, float scale, int D,
                 bf16 *__restrict__ h)
{
    constexpr int P = norm4_per<NV, X>();   /* groups of 4 an access of x */
    const int n4 = D / 4;
    float4 v[NV], wv[NV];
#pragma unroll
    for (int k = 0; k < NV; k += P) {
        const int j = threadIdx.x + k / P * blockDim.x;   /* groups P j .. P j + P - 1 */
#pragma unroll
        for (int p = 0; p < P; p++)
            if (h && j * P < n4) wv[k + p] = ((const float4 *)w)[j * P + p];
    }
    cu_pdl_enter();
    const size_t row = rows ? (size_t)rows[blockIdx.x] : blockIdx.x;
    X *xr = x + row * D;
    const float4 *ar = a ? (const float4 *)(a + row * D) : nullptr;
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k += P) {
        const int j = threadIdx.x + k / P * blockDim.x;
        if (j * P >= n4) continue;
        float4 u[P];
        ldg<P>(xr, j, u);
#pragma unroll
        for (int p = 0; p < P; p++) {
            if (ar) {
                const float4 b = ar[j * P + p];
                u[p].x = u[p].x + b.x * rs;
                u[p].y = u[p].y + b.y * rs;
                u[p].z = u[p].z + b.z * rs;
                u[p].w = u[p].w + b.w * rs;
                u[p] = make_float4(rnd(xr, u[p].x), rnd(xr, u[p].y), rnd(xr, u[p].z),
                                   rnd(xr, u[p].w));
            }
            v[k + p] = u[p];
            ss += u[p].x * u[p].x + u[p].y * u[p].y + u[p].z * u[p].z + u[p].w * u[p].w;
        }
        if (ar) stg<P>(xr, j, u);
    }
    if (!h) return;
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)D + eps);
    bf16 *hr = h + (size_t)blockIdx.x * D;
#pragma unroll
    for (int k = 0; k < NV; k += P) {
        const int j = threadIdx.x + k / P * blockDim.x;
        if (j * P >= n4) continue;
        float4 o[P];
#pragma unroll
        for (int p = 0; p < P; p++) {
            const float4 ww = wv[k + p], vv = v[k + p];
            o[p] = make_float4(vv.x * inv * ww.x * scale, vv.y * inv * ww.y * scale,
                               vv.z * inv * ww.z * scale, vv.w * inv * ww.w * scale);
        }
        stg<P>(hr, j, o);
    }
}

bool cu_row_pdl(int n) { return n <= CU_GEMV_T && !cu_env_is("SALA_CUDA_ROW_PDL", "0"); }

/* Launch norm4_kernel on n rows (programmatic dependent launch when cu_row_pdl(n)); false
 * (nothing launched) when the shape or the pointers do not fit it, or with SALA_CUDA_DECODE=old. */
template <typename X>
static bool norm4_launch(cudaStream_t st, X *x, const int32_t *rows, const float *a, float rs,
                         const float *w, float eps, float scale, int n, int D, bf16 *h)
{
    const int n4 = D / 4, nv = D % 4 ? 0 : rows_nv(n4, n);
    if (cu_decode_old() || !nv || !al4x(x) || !al16(a) || !al16(w) || !al8(h)) return false;
    if (sizeof(X) == 2 && nv % 2 == 0 && (n4 % 2 || !al16(x) || !al16(h))) return false;
    const bool pdl = cu_row_pdl(n);
    const dim3 g((unsigned)n), b((unsigned)row_threads(n4, nv));
    /* a launch error stays for the caller's cudaGetLastError */
    auto k = nv == 1 ? norm4_kernel<1, X> : nv == 2 ? norm4_kernel<2, X> : norm4_kernel<4, X>;
    (void)cu_launch_pdl(pdl, g, b, st, k, x, rows, a, rs, w, eps, scale, D, h);
    return true;
}

/* ---- prefill rows (sixteenth session) ----
 * The rows of a prefill step (T > CU_GEMV_T; 16,384 a step) of bf16 values, D = 8 n8: a grid of
 * at most 3 CTAs an SM (rows_ctas) of n8 / CP threads (64-256), each CTA taking rows b,
 * b + gridDim.x, ..; thread i holds the 16-byte chunks i + k n8 / CP (k < CP) of every row its
 * CTA takes and its weights for those columns in registers (loaded once a CTA, not once a row:
 * 16 KB a row at D = 4096, as many bytes as the row); the next row's chunks are requested before
 * the current row's sum, so loads stay in flight across its barrier and stores; one CTA barrier a
 * row (the warps' partial sums in a two-row shared array, summed by every thread in the same
 * order). Against norm4 / la_out4 (a CTA a row, 8-byte accesses, weights from L2 every row) at
 * 128K (docs/BENCHMARKS.md, sixteenth session): the norm 0.056 -> 0.045 s, the lightning output
 * 0.042 -> 0.030 s. (A warp a row, 16 chunks a lane, was measured too: the norm the same, the
 * lightning output 8-9% slower than la_out4: likely its sigmoids and loads not overlapping at
 * 12 warps an SM.) Same arithmetic per value as the old kernels; the sum of squares in another order.
 * R: a row's inputs (R::NIN chunks a column chunk) and its output. SALA_CUDA_ROWS=old (read at
 * each launch): the old kernels. */
static bool rows_on(void) { return !cu_decode_old() && !cu_env_is("SALA_CUDA_ROWS", "old"); }

/* CTAs for T rows: one a row, at most 3 an SM */
static int rows_ctas(int T)
{
    const int sms = cu_sms() > 0 ? cu_sms() : 1;
    return T < 3 * sms ? T : 3 * sms;
}

static __device__ __forceinline__ void bf8(const uint4 u, float (&f)[8])
{
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(v[i] << 16);
        f[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
    }
}

static __device__ __forceinline__ uint4 pack8_bf16(const float (&f)[8])
{
    const uint2 lo = pack4_bf16(f[0], f[1], f[2], f[3]), hi = pack4_bf16(f[4], f[5], f[6], f[7]);
    return make_uint4(lo.x, lo.y, hi.x, hi.y);
}

/* h = bf16(rmsnorm(x) · w · scale), x read only (norm4_kernel's arithmetic without a) */
struct norm_rows_op {
    static constexpr int NIN = 1;
    const bf16 *x;
    bf16 *h;
    float scale;
    int D;
    __device__ void load(int t, int c, uint4 (&in)[NIN]) const
    {
        in[0] = ((const uint4 *)(x + (size_t)t * D))[c];
    }
    __device__ void store(int t, int c, const uint4 (&in)[NIN], float inv,
                          const float (&w)[8]) const
    {
        float f[8];
        bf8(in[0], f);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = f[i] * inv * w[i] * scale;
        ((uint4 *)(h + (size_t)t * D))[c] = pack8_bf16(f);
    }
};

template <int CP, typename R>
static __global__ void __launch_bounds__(256, 3)
    rows_kernel(R r, const float *__restrict__ w, float eps, int T)
{
    __shared__ float red[2][8];
    const int nt = blockDim.x, lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float wv[CP][8];
#pragma unroll
    for (int k = 0; k < CP; k++) {
        const int c = threadIdx.x + k * nt;
        const float4 a = ((const float4 *)w)[2 * c], b = ((const float4 *)w)[2 * c + 1];
        wv[k][0] = a.x, wv[k][1] = a.y, wv[k][2] = a.z, wv[k][3] = a.w;
        wv[k][4] = b.x, wv[k][5] = b.y, wv[k][6] = b.z, wv[k][7] = b.w;
    }
    uint4 cur[CP][R::NIN], nxt[CP][R::NIN];
    int t = blockIdx.x;
    if (t < T)
#pragma unroll
        for (int k = 0; k < CP; k++) r.load(t, threadIdx.x + k * nt, cur[k]);
    for (int it = 0; t < T; t += gridDim.x, it++) {
        const int tn = t + gridDim.x;
        if (tn < T)
#pragma unroll
            for (int k = 0; k < CP; k++) r.load(tn, threadIdx.x + k * nt, nxt[k]);
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < CP; k++) {
            float f[8];
            bf8(cur[k][0], f);
#pragma unroll
            for (int i = 0; i < 8; i++) ss += f[i] * f[i];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (lane == 0) red[it & 1][wid] = ss;
        __syncthreads();   /* this row's sums written; red[it & 1] is written again at row
                              it + 2, after every thread has read it and passed row it + 1's
                              barrier */
        float tot = 0.0f;
        for (int i = 0; i < (nt >> 5); i++) tot += red[it & 1][i];
        const float inv = 1.0f / sqrtf(tot / (float)(8 * CP * nt) + eps);
#pragma unroll
        for (int k = 0; k < CP; k++) r.store(t, threadIdx.x + k * nt, cur[k], inv, wv[k]);
#pragma unroll
        for (int k = 0; k < CP; k++)
#pragma unroll
            for (int q = 0; q < R::NIN; q++) cur[k][q] = nxt[k][q];
    }
}

/* rows_kernel over T prefill rows of n8 chunks when it fits (n8 = 512: 2 chunks a thread; 64-256
 * and a multiple of 32: one); false: nothing launched */
template <typename R>
static bool rows_launch(cudaStream_t st, const R &r, const float *w, float eps, int T, int n8)
{
    const int cp = n8 == 512 ? 2 : n8 % 32 == 0 && n8 >= 64 && n8 <= 256 ? 1 : 0;
    if (T <= CU_GEMV_T || !cp || !rows_on() || !al16(w)) return false;
    if (cp == 2) rows_kernel<2, R><<<rows_ctas(T), n8 / 2, 0, st>>>(r, w, eps, T);
    else rows_kernel<1, R><<<rows_ctas(T), n8, 0, st>>>(r, w, eps, T);
    return true;
}

template <typename X>
static cudaError_t add_norm_launch(cudaStream_t st, X *x, const float *a, float rs,
                                   const float *w, float eps, int T, int D, bf16 *h)
{
    if (T <= 0) return cudaSuccess;
    if constexpr (sizeof(X) == 2)
        if (!a && D % 8 == 0 && al16(x) && al16(h)) {   /* a prefill step's norm */
            const norm_rows_op r = {x, h, 1.0f, D};
            if (rows_launch(st, r, w, eps, T, D / 8)) return cudaGetLastError();
        }
    if (!norm4_launch(st, x, nullptr, a, rs, w, eps, 1.0f, T, D, h))
        add_norm_kernel<X><<<T, 256, 0, st>>>(x, a, rs, w, eps, D, h);
    return cudaGetLastError();
}

cudaError_t k_add_norm(cudaStream_t st, float *x, const float *a, float rs, const float *w,
                       float eps, int T, int D, bf16 *h)
{
    return add_norm_launch(st, x, a, rs, w, eps, T, D, h);
}

cudaError_t k_add_norm(cudaStream_t st, bf16 *x, const float *a, float rs, const float *w,
                         float eps, int T, int D, bf16 *h)
{
    return add_norm_launch(st, x, a, rs, w, eps, T, D, h);
}

template <typename X>
static __global__ void norm_rows_kernel(const X *x, const int32_t *rows, int D, const float *w,
                                        float eps, float scale, bf16 *out)
{
    const X *xr = x + (size_t)rows[blockIdx.x] * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += cu_f32(xr[i]) * cu_f32(xr[i]);
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        out[(size_t)blockIdx.x * D + i] = __float2bfloat16(cu_f32(xr[i]) * inv * w[i] * scale);
}

template <typename X>
static cudaError_t norm_rows_launch(cudaStream_t st, const X *x, const int32_t *rows, int n,
                                    int D, const float *w, float eps, float scale, bf16 *out)
{
    if (n <= 0) return cudaSuccess;
    /* x is read only (no residual) */
    if (!norm4_launch(st, (X *)x, rows, nullptr, 0.0f, w, eps, scale, n, D, out))
        norm_rows_kernel<X><<<n, 256, 0, st>>>(x, rows, D, w, eps, scale, out);
    return cudaGetLastError();
}

cudaError_t k_norm_rows(cudaStream_t st, const float *x, const int32_t *rows, int n, int D,
                        const float *w, float eps, float scale, bf16 *out)
{
    return norm_rows_launch(st, x, rows, n, D, w, eps, scale, out);
}

cudaError_t k_norm_rows(cudaStream_t st, const bf16 *x, const int32_t *rows, int n, int D,
                          const float *w, float eps, float scale, bf16 *out)
{
    return norm_rows_launch(st, x, rows, n, D, w, eps, scale, out);
}

/* SwiGLU for any I and alignment: gu (T, gate|up) fp32 or bf16 -> out (T, I) bf16. */
template <typename In>
static __global__ void swiglu_kernel(const In *gu, int T, int I, bf16 *out)
{
    const size_t n = (size_t)T * I;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / I, j = i % I;
        const float g = cu_f32(gu[t * 2 * I + j]), u = cu_f32(gu[t * 2 * I + I + j]);
        out[i] = __float2bfloat16(cu_silu_mul(g, u));
    }
}

static int grid_for(size_t n)
{
    size_t b = (n + 255) / 256;
    return (int)(b > 65536 ? 65536 : (b ? b : 1));
}

/* grid (column blocks of 256 float4 groups, T): no index division. I % 4 == 0. */
static __global__ void swiglu4_kernel(const float *__restrict__ gu, int I, bf16 *__restrict__ out)
{
    const int t = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= I / 4) return;
    const float4 g = ((const float4 *)(gu + (size_t)t * 2 * I))[j];
    const float4 u = ((const float4 *)(gu + (size_t)t * 2 * I + I))[j];
    ((uint2 *)(out + (size_t)t * I))[j] = pack4_bf16(cu_silu_mul(g.x, u.x), cu_silu_mul(g.y, u.y),
                                                    cu_silu_mul(g.z, u.z), cu_silu_mul(g.w, u.w));
}

cudaError_t k_swiglu(cudaStream_t st, const float *gu, int T, int I, bf16 *out)
{
    if (T <= 0) return cudaSuccess;
    if (!cu_decode_old() && I % 4 == 0 && T <= 65535 && al16(gu) && al8(out))
        swiglu4_kernel<<<dim3((I / 4 + 255) / 256, T), 256, 0, st>>>(gu, I, out);
    else
        swiglu_kernel<float><<<grid_for((size_t)T * I), 256, 0, st>>>(gu, T, I, out);
    return cudaGetLastError();
}

/* grid (column blocks of 256 groups of 8, T): 16-byte loads of 8 bf16 of g and of u. I % 8 == 0. */
static __global__ void swiglu8_bf16_kernel(const bf16 *__restrict__ gu, int I,
                                           bf16 *__restrict__ out)
{
    const int t = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= I / 8) return;
    const uint4 gv = ((const uint4 *)(gu + (size_t)t * 2 * I))[j];
    const uint4 uv = ((const uint4 *)(gu + (size_t)t * 2 * I + I))[j];
    const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)&gv, *u2 = (const __nv_bfloat162 *)&uv;
    uint4 o;
    uint32_t *o2 = (uint32_t *)&o;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float2 g = __bfloat1622float2(g2[k]), u = __bfloat1622float2(u2[k]);
        const __nv_bfloat162 r = __floats2bfloat162_rn(cu_silu_mul(g.x, u.x), cu_silu_mul(g.y, u.y));
        o2[k] = *(const uint32_t *)&r;
    }
    ((uint4 *)(out + (size_t)t * I))[j] = o;
}

cudaError_t k_swiglu_bf16(cudaStream_t st, const bf16 *gu, int T, int I, bf16 *out)
{
    if (T <= 0) return cudaSuccess;
    if (I % 8 == 0 && T <= 65535 && al16(gu) && al16(out))
        swiglu8_bf16_kernel<<<dim3((I / 8 + 255) / 256, T), 256, 0, st>>>(gu, I, out);
    else
        swiglu_kernel<bf16><<<grid_for((size_t)T * I), 256, 0, st>>>(gu, T, I, out);
    return cudaGetLastError();
}

/* The gate and the sparse-layer split read proj (T, ld) as P: fp32 (decode, the fp32 product)
 * or bf16 (prefill steps: the input GEMM's bf16 output, cu_forward.cu sparse_mixer). */
template <typename P>
static __global__ void gate_kernel(const float *o, const P *proj, int ld, int zoff, int T, int W,
                                   bf16 *out)
{
    const size_t n = (size_t)T * W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / W, j = i % W;
        out[i] = __float2bfloat16(o[i] * sigm(cu_f32(proj[t * ld + zoff + j])));
    }
}

/* grid (column blocks of 256 groups of four, T); W, ld, zoff multiples of 4. */
template <typename P>
static __global__ void gate4_kernel(const float *__restrict__ o, const P *__restrict__ proj,
                                    int ld, int zoff, int W, bf16 *__restrict__ out)
{
    cu_pdl_enter();
    const int t = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= W / 4) return;
    const float4 v = ((const float4 *)(o + (size_t)t * W))[j];
    const float4 z = ld4(proj + (size_t)t * ld + zoff, j);
    ((uint2 *)(out + (size_t)t * W))[j] =
        pack4_bf16(v.x * sigm(z.x), v.y * sigm(z.y), v.z * sigm(z.z), v.w * sigm(z.w));
}

template <typename P>
static cudaError_t gate_launch(cudaStream_t st, const float *o, const P *proj, int ld, int zoff,
                               int T, int W, bf16 *out)
{
    if (T <= 0) return cudaSuccess;
    if (!cu_decode_old() && W % 4 == 0 && ld % 4 == 0 && zoff % 4 == 0 && T <= 65535 &&
        al16(o) && al4x(proj) && al8(out))
        return cu_launch_pdl(cu_row_pdl(T), dim3((W / 4 + 255) / 256, T), dim3(256), st,
                             gate4_kernel<P>, o, proj, ld, zoff, W, out);
    gate_kernel<P><<<grid_for((size_t)T * W), 256, 0, st>>>(o, proj, ld, zoff, T, W, out);
    return cudaGetLastError();
}

cudaError_t k_gate(cudaStream_t st, const float *o, const float *proj, int ld, int zoff, int T,
                   int W, bf16 *out)
{
    return gate_launch(st, o, proj, ld, zoff, T, W, out);
}

cudaError_t k_gate(cudaStream_t st, const float *o, const bf16 *proj, int ld, int zoff, int T,
                   int W, bf16 *out)
{
    return gate_launch(st, o, proj, ld, zoff, T, W, out);
}

template <typename P>
static __global__ void sparse_prep_kernel(const P *proj, int ld, int nh, int nkv, int d, bf16 *Qb,
                                          bf16 *Kc, bf16 *Vc, int64_t p0, const int64_t *p0d)
{
    const int t = blockIdx.x;
    if (p0d) p0 = *p0d;
    const P *r = proj + (size_t)t * ld;
    const int nq = nh * d, nk = nkv * d;
    for (int i = threadIdx.x; i < nq; i += blockDim.x)
        Qb[(size_t)t * nq + i] = __float2bfloat16(cu_f32(r[i]));
    for (int i = threadIdx.x; i < nk; i += blockDim.x) {
        Kc[(size_t)(p0 + t) * nk + i] = __float2bfloat16(cu_f32(r[nq + i]));
        Vc[(size_t)(p0 + t) * nk + i] = __float2bfloat16(cu_f32(r[nq + nk + i]));
    }
}

static __device__ __forceinline__ __nv_bfloat162 ld2_bf16(const float *p)
{
    const float2 v = *(const float2 *)p;
    return __floats2bfloat162_rn(v.x, v.y);
}
static __device__ __forceinline__ __nv_bfloat162 ld2_bf16(const bf16 *p)
{
    return *(const __nv_bfloat162 *)p;
}

/* grid (blocks of threads, T): V values of q | k | v a thread: V = 2, a pair (nq, nk, ld even);
 * V = 8 (P bf16 only), 16 bytes (nq, nk, ld multiples of 8, the pointers 16-byte aligned: a
 * prefill step's split, where pairs got half the bandwidth). */
template <int V, typename P>
static __global__ void sparse_prep2_kernel(const P *__restrict__ proj, int ld, int nq, int nk,
                                           bf16 *__restrict__ Qb, bf16 *__restrict__ Kc,
                                           bf16 *__restrict__ Vc, int64_t p0,
                                           const int64_t *__restrict__ p0d)
{
    cu_pdl_enter();
    const int t = blockIdx.y, e = V * (blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= nq + 2 * nk) return;
    if (p0d) p0 = *p0d;
    bf16 *dst = e < nq ? Qb + (size_t)t * nq + e
              : e < nq + nk ? Kc + (size_t)(p0 + t) * nk + (e - nq)
                            : Vc + (size_t)(p0 + t) * nk + (e - nq - nk);
    if constexpr (V == 8)
        *(uint4 *)dst = *(const uint4 *)(proj + (size_t)t * ld + e);
    else
        *(__nv_bfloat162 *)dst = ld2_bf16(proj + (size_t)t * ld + e);
}

template <typename P>
static cudaError_t sparse_prep_launch(cudaStream_t st, const P *proj, int ld, int T, int nh,
                                      int nkv, int d, bf16 *Qb, bf16 *Kc, bf16 *Vc, int64_t p0,
                                      const int64_t *p0d)
{
    if (T <= 0) return cudaSuccess;
    const int nq = nh * d, nk = nkv * d;
    if constexpr (sizeof(P) == 2)
        if (T > CU_GEMV_T && rows_on() && nq % 8 == 0 && nk % 8 == 0 && ld % 8 == 0 && T <= 65535 &&
            al16(proj) && al16(Qb) && al16(Kc) && al16(Vc)) {
            const int n8 = (nq + 2 * nk) / 8;
            return cu_launch_pdl(false, dim3((n8 + 127) / 128, T), dim3(128), st,
                                 sparse_prep2_kernel<8, P>, proj, ld, nq, nk, Qb, Kc, Vc, p0,
                                 p0d);
        }
    if (!cu_decode_old() && d % 2 == 0 && ld % 2 == 0 && T <= 65535 &&
        ((uintptr_t)proj & (2 * sizeof(P) - 1)) == 0 && ((uintptr_t)Qb & 3u) == 0 &&
        ((uintptr_t)Kc & 3u) == 0 && ((uintptr_t)Vc & 3u) == 0) {
        const int pairs = (nq + 2 * nk) / 2;
        return cu_launch_pdl(cu_row_pdl(T), dim3((pairs + 255) / 256, T), dim3(256), st,
                             sparse_prep2_kernel<2, P>, proj, ld, nq, nk, Qb, Kc, Vc, p0, p0d);
    }
    sparse_prep_kernel<P><<<T, 256, 0, st>>>(proj, ld, nh, nkv, d, Qb, Kc, Vc, p0, p0d);
    return cudaGetLastError();
}

cudaError_t k_sparse_prep(cudaStream_t st, const float *proj, int ld, int T, int nh, int nkv,
                          int d, bf16 *Qb, bf16 *Kc, bf16 *Vc, int64_t p0, const int64_t *p0d)
{
    return sparse_prep_launch(st, proj, ld, T, nh, nkv, d, Qb, Kc, Vc, p0, p0d);
}

cudaError_t k_sparse_prep(cudaStream_t st, const bf16 *proj, int ld, int T, int nh, int nkv,
                          int d, bf16 *Qb, bf16 *Kc, bf16 *Vc, int64_t p0, const int64_t *p0d)
{
    return sparse_prep_launch(st, proj, ld, T, nh, nkv, d, Qb, Kc, Vc, p0, p0d);
}

/* SALA-SPEC §3.6 step 1: C_i = mean(K[s*i .. s*i+k-1]) per element, fp32 sum, bf16 result. */
static __global__ void compress_kernel(const bf16 *Kc, int row, int64_t from, int64_t to, int k,
                                       int s, bf16 *C)
{
    const size_t n = (size_t)(to - from) * row;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int64_t i = from + (int64_t)(idx / row);
        const int e = (int)(idx % row);
        const bf16 *src = Kc + (size_t)(s * i) * row + e;
        float acc = 0.0f;
        for (int t = 0; t < k; t++) acc += __bfloat162float(src[(size_t)t * row]);
        C[(size_t)i * row + e] = __float2bfloat16(acc / (float)k);
    }
}

cudaError_t k_compress(cudaStream_t st, const bf16 *Kc, int row, int64_t from, int64_t to,
                       int k, int s, bf16 *C)
{
    if (to > from)
        compress_kernel<<<grid_for((size_t)(to - from) * row), 256, 0, st>>>(Kc, row, from, to, k,
                                                                              s, C);
    return cudaGetLastError();
}

/* ---- lightning ---- */

/* Row t per block (8 warps; grid (Tp, gy)), heads 8 blockIdx.y + w, + 8 gy, ... for warp w:
 * the RoPE angles of position p0+t once per frequency (rotate-half, fp32 angle) in shared
 * memory, then per head: RMSNorm of q and k (warp sums), RoPE -> Qh, Kh; v -> Vh; and the
 * chunk-decay variants of the cuBLAS path: Qd = q λ^{τ+1}, Kw = k λ^{len_c-1-τ} (τ: index in
 * the chunk, len_c its real length). Qd, Kw and Vh are skipped when NULL (the tensor-core path
 * reads v from proj). Padding rows (t >= T) are 0. */
#define LA_PREP_WARPS 8
static __global__ void __launch_bounds__(32 * LA_PREP_WARPS) la_prep_kernel(la_args a)
{
    extern __shared__ float sm[];             /* cos, sin (d/2); per warp q, k (d) */
    const int t = blockIdx.x, d = a.d, half = d / 2, lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5, step = gridDim.y * LA_PREP_WARPS;
    float *cs = sm, *sn = sm + half, *qs = sm + d + 2 * w * d, *ks = qs + d;
    const bool pad = t >= a.T;
    if (!pad)
        for (int j = threadIdx.x; j < half; j += blockDim.x)
            sincosf((float)(a.p0 + t) * a.inv_freq[j], &sn[j], &cs[j]);
    __syncthreads();
    const size_t nd = (size_t)a.nh * d;
    const int tau = t % CU_LA_C, c0 = t - tau;
    const int len = a.T - c0 < CU_LA_C ? a.T - c0 : CU_LA_C;
    for (int n = blockIdx.y * LA_PREP_WARPS + w; n < a.nh; n += step) {
        const size_t o = ((size_t)n * a.Tp + t) * d;
        if (pad) {
            for (int i = lane; i < d; i += 32) {
                a.Qh[o + i] = a.Kh[o + i] = 0.0f;
                if (a.Qd) a.Qd[o + i] = a.Kw[o + i] = 0.0f;
                if (a.Vh) a.Vh[o + i] = 0.0f;
            }
            continue;
        }
        const float *r = a.proj + (size_t)t * a.ld + (size_t)n * d;   /* q; k at +nd, v +2nd */
        float sq = 0.0f, sk = 0.0f;
        for (int i = lane; i < d; i += 32) {
            const float q = r[i], k = r[nd + i];
            sq += q * q;
            sk += k * k;
        }
        for (int m = 16; m > 0; m >>= 1) {
            sq += __shfl_xor_sync(0xffffffffu, sq, m);
            sk += __shfl_xor_sync(0xffffffffu, sk, m);
        }
        const float iq = 1.0f / sqrtf(sq / (float)d + a.eps);
        const float ik = 1.0f / sqrtf(sk / (float)d + a.eps);
        for (int i = lane; i < d; i += 32) {
            qs[i] = r[i] * iq * a.qn[i];
            ks[i] = r[nd + i] * ik * a.kn[i];
        }
        __syncwarp();
        const float *dn = a.dec + n * (CU_LA_C + 1);
        for (int i = lane; i < d; i += 32) {
            const int j = i < half ? i : i - half, p = i < half ? i + half : i - half;
            const float c = cs[j], s = i < half ? -sn[j] : sn[j];
            const float q = qs[i] * c + qs[p] * s, k = ks[i] * c + ks[p] * s;
            a.Qh[o + i] = q;
            a.Kh[o + i] = k;
            if (a.Vh) a.Vh[o + i] = r[2 * nd + i];
            if (a.Qd) {
                a.Qd[o + i] = q * dn[tau + 1];
                a.Kw[o + i] = k * dn[len - 1 - tau];
            }
        }
        __syncwarp();   /* qs, ks are rewritten for the next head */
    }
}

/* The fused decode step (la_decode_kernel) does its own prep: d 32, 64, 128 or 256. */
bool cu_la_decode_fused(const la_args *a)
{
    const int d = a->d;
    return !cu_decode_old() && a->T == 1 && a->Tp == 1 &&
           (d == 32 || d == 64 || d == 128 || d == 256) && al16(a->proj) && al16(a->S) &&
           a->ld % 4 == 0;
}

cudaError_t k_la_prep(cudaStream_t st, const la_args *a)
{
    if (a->proj16) return cudaErrorInvalidValue;   /* fp32 proj only (cu_la_proj16) */
    if (cu_la_decode_fused(a)) return cudaSuccess;   /* k_la_step reads proj itself */
    /* long steps: one block per row (angles once per position); short ones (decode): spread
     * the heads over more blocks */
    const int gy = a->Tp >= 1024 ? 1 : (a->nh + LA_PREP_WARPS - 1) / LA_PREP_WARPS;
    const size_t smem = (size_t)(1 + 2 * LA_PREP_WARPS) * a->d * sizeof(float);
    la_prep_kernel<<<dim3(a->Tp, gy), 32 * LA_PREP_WARPS, smem, st>>>(*a);
    return cudaGetLastError();
}

/* A (C, C) per (head, chunk): A[τ][σ] *= λ^{τ-σ} for σ <= τ, else 0. */
static __global__ void la_mask_kernel(la_args a)
{
    const int bc = blockIdx.x, n = bc / (a.Tp / CU_LA_C);
    float *A = a.Ab + (size_t)bc * CU_LA_C * CU_LA_C;
    const float *dn = a.dec + n * (CU_LA_C + 1);
    for (int idx = threadIdx.x; idx < CU_LA_C * CU_LA_C; idx += blockDim.x) {
        const int tau = idx / CU_LA_C, sg = idx % CU_LA_C;
        A[idx] = sg <= tau ? A[idx] * dn[tau - sg] : 0.0f;
    }
}

cudaError_t k_la_mask(cudaStream_t st, const la_args *a)
{
    la_mask_kernel<<<a->nh * (a->Tp / CU_LA_C), 256, 0, st>>>(*a);
    return cudaGetLastError();
}

/* In place over Sb (nh, nch, d, d) holding ΔS_c: Sb[c] <- S_in(c); S <- S_in(nch).
 * S_in(c+1) = λ^{len_c} S_in(c) + ΔS_c. */
static __global__ void la_scan_kernel(la_args a)
{
    const int dd = a.d * a.d, nch = a.Tp / CU_LA_C;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= a.nh * dd) return;
    const int n = idx / dd, e = idx % dd;
    const float *dn = a.dec + n * (CU_LA_C + 1);
    float s = a.S[idx];
    for (int c = 0; c < nch; c++) {
        float *p = a.Sb + ((size_t)n * nch + c) * dd + e;
        const float ds = *p;
        *p = s;
        const int len = a.T - c * CU_LA_C < CU_LA_C ? a.T - c * CU_LA_C : CU_LA_C;
        s = dn[len] * s + ds;
    }
    a.S[idx] = s;
}

cudaError_t k_la_scan(cudaStream_t st, const la_args *a)
{
    const int n = a->nh * a->d * a->d;
    la_scan_kernel<<<(n + 255) / 256, 256, 0, st>>>(*a);
    return cudaGetLastError();
}

/* Decode: S = λS + k vᵀ, o = Sᵀq (unscaled; la_out applies the scale). Block per head, thread
 * per value column j. */
static __global__ void la_step_kernel(la_args a)
{
    const int n = blockIdx.x, d = a.d;
    const float lam = a.dec[n * (CU_LA_C + 1) + 1];
    const float *q = a.Qh + (size_t)n * a.Tp * d, *k = a.Kh + (size_t)n * a.Tp * d;
    const float *v = a.Vh + (size_t)n * a.Tp * d;
    float *S = a.S + (size_t)n * d * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float vj = v[j];
        float o = 0.0f;
        for (int i = 0; i < d; i++) {
            const float s = lam * S[i * d + j] + k[i] * vj;
            S[i * d + j] = s;
            o += s * q[i];
        }
        a.Oh[(size_t)n * a.Tp * d + j] = o;
    }
}

/* Decode step with the prep fused (T == 1, Tp == 1, d = 32 KR): CTA (32-column slice x0, head
 * n) of 256 threads; thread (r = tid / 8, c = tid % 8) owns columns x0 + 4c .. + 3 of the state
 * rows r, r + 32, ..., r + 32 (KR-1). Its state slice and v are loaded first, so that the read of
 * the 2 MB state (128 CTAs at the real shape) overlaps the q/k RMSNorm + RoPE of the head, which
 * each of the head's d/32 CTAs recomputes from proj (la_prep_kernel's arithmetic; the sums of
 * squares in another order). Then S = λS + k vᵀ in place and the column partials of Sᵀq are
 * summed over r in a fixed order through shared memory -> Oh (unscaled). */
template <int KR>
static __global__ void __launch_bounds__(256) la_decode_kernel(la_args a)
{
    constexpr int d = 32 * KR, half = d / 2;
    __shared__ float cs[half], sn[half], qs[d], ks[d], qr[d], kr[d];
    __shared__ __align__(16) float red[32 * 32];
    __shared__ float wsum[2][KR];
    cu_pdl_enter();
    const int n = blockIdx.y, x0 = blockIdx.x * 32, tid = threadIdx.x, r = tid >> 3, c = tid & 7;
    const size_t nd = (size_t)a.nh * d;
    float *S = a.S + (size_t)n * d * d + x0 + 4 * c;
    const float *row = a.proj + (size_t)n * d;                 /* q; k at + nd, v at + 2 nd */
    float4 s4[KR];
#pragma unroll
    for (int k = 0; k < KR; k++) s4[k] = *(const float4 *)(S + (size_t)(r + 32 * k) * d);
    const float4 v4 = *(const float4 *)(row + 2 * nd + x0 + 4 * c);
    float q = 0.0f, kk = 0.0f, qn = 0.0f, kn = 0.0f;
    if (tid < d) {
        q = row[tid];
        kk = row[nd + tid];
        qn = a.qn[tid];
        kn = a.kn[tid];
    }
    const int64_t p0 = a.p0d ? *a.p0d : a.p0;
    if (tid < half) sincosf((float)p0 * a.inv_freq[tid], &sn[tid], &cs[tid]);
    float sq = q * q, sk = kk * kk;
    for (int m = 16; m > 0; m >>= 1) {
        sq += __shfl_xor_sync(0xffffffffu, sq, m);
        sk += __shfl_xor_sync(0xffffffffu, sk, m);
    }
    if ((tid & 31) == 0 && tid < d) {
        wsum[0][tid >> 5] = sq;
        wsum[1][tid >> 5] = sk;
    }
    __syncthreads();
    sq = sk = 0.0f;
#pragma unroll
    for (int w = 0; w < KR; w++) {
        sq += wsum[0][w];
        sk += wsum[1][w];
    }
    const float iq = 1.0f / sqrtf(sq / (float)d + a.eps);
    const float ik = 1.0f / sqrtf(sk / (float)d + a.eps);
    if (tid < d) {
        qs[tid] = q * iq * qn;
        ks[tid] = kk * ik * kn;
    }
    __syncthreads();
    if (tid < d) {   /* rotate-half RoPE at position p0 (SALA-SPEC §3.5) */
        const int j = tid < half ? tid : tid - half, p = tid < half ? tid + half : tid - half;
        const float cc = cs[j], ss = tid < half ? -sn[j] : sn[j];
        qr[tid] = qs[tid] * cc + qs[p] * ss;
        kr[tid] = ks[tid] * cc + ks[p] * ss;
    }
    __syncthreads();
    const float lam = a.dec[n * (CU_LA_C + 1) + 1];
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int k = 0; k < KR; k++) {
        const int i = r + 32 * k;
        const float ki = kr[i], qi = qr[i];
        float4 x = s4[k];
        x.x = lam * x.x + ki * v4.x;
        x.y = lam * x.y + ki * v4.y;
        x.z = lam * x.z + ki * v4.z;
        x.w = lam * x.w + ki * v4.w;
        *(float4 *)(S + (size_t)i * d) = x;
        o.x += x.x * qi;
        o.y += x.y * qi;
        o.z += x.z * qi;
        o.w += x.w * qi;
    }
    *(float4 *)(red + r * 32 + 4 * c) = o;
    __syncthreads();
    if (tid < 32) {
        float t = 0.0f;
        for (int i = 0; i < 32; i++) t += red[i * 32 + tid];
        a.Oh[(size_t)n * d + x0 + tid] = t;
    }
}

cudaError_t k_la_step(cudaStream_t st, const la_args *a)
{
    if (a->proj16) return cudaErrorInvalidValue;   /* fp32 proj only (cu_la_proj16) */
    if (cu_la_decode_fused(a)) {
        const dim3 grid(a->d / 32, a->nh), b(256);
        const bool pdl = cu_row_pdl(a->T);
        if (a->d == 32) return cu_launch_pdl(pdl, grid, b, st, la_decode_kernel<1>, *a);
        if (a->d == 64) return cu_launch_pdl(pdl, grid, b, st, la_decode_kernel<2>, *a);
        if (a->d == 128) return cu_launch_pdl(pdl, grid, b, st, la_decode_kernel<4>, *a);
        return cu_launch_pdl(pdl, grid, b, st, la_decode_kernel<8>, *a);
    }
    la_step_kernel<<<a->nh, a->d < 1024 ? a->d : 1024, 0, st>>>(*a);
    return cudaGetLastError();
}

/* z[i .. i+3] of row t (i % 4 == 0) from proj, or from proj16 (bf16, exact in fp32: the
 * prefill's bf16 input GEMM output) by one 8-byte load. */
static __device__ __forceinline__ float4 la_z4(const la_args &a, int t, int i)
{
    const size_t o = (size_t)t * a.ld + 3 * (size_t)a.nh * a.d + i;
    if (a.proj16) {
        const uint2 u = *(const uint2 *)(a.proj16 + o);
        return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                           __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
    }
    return *(const float4 *)(a.proj + o);
}

/* scale O at (head n, row t, columns j .. j + 3): from bf16(scale O) when o16, else fp32 O */
static __device__ __forceinline__ float4 la_o4(const la_args &a, int n, int t, int j)
{
    const size_t o = ((size_t)n * a.Tp + t) * a.d + j;
    if (a.o16) {
        const uint2 u = *(const uint2 *)((const bf16 *)a.Oh + o);
        return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                           __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
    }
    const float4 v = *(const float4 *)(a.Oh + o);
    return make_float4(a.scale * v.x, a.scale * v.y, a.scale * v.z, a.scale * v.w);
}

/* Row t per block: scale O (nh, Tp, d) -> rmsnorm over the nh d features -> · on · sigmoid(z),
 * four features at a time (d % 4 == 0: float4 loads, 8-byte bf16 stores). */
static __global__ void la_out_kernel(la_args a, bf16 *out)
{
    const int t = blockIdx.x, nd = a.nh * a.d, n4 = nd / 4;
    float ss = 0.0f;
    for (int g = threadIdx.x; g < n4; g += blockDim.x) {
        const int i = 4 * g, n = i / a.d, j = i % a.d;
        const float4 o = la_o4(a, n, t, j);
        ss += o.x * o.x + o.y * o.y + o.z * o.z + o.w * o.w;
    }
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)nd + a.eps);
    for (int g = threadIdx.x; g < n4; g += blockDim.x) {
        const int i = 4 * g, n = i / a.d, j = i % a.d;
        const float4 o = la_o4(a, n, t, j);
        const float4 zz = la_z4(a, t, i), w = *(const float4 *)(a.on + i);
        __nv_bfloat162 lo = __floats2bfloat162_rn(o.x * inv * w.x * sigm(zz.x),
                                                  o.y * inv * w.y * sigm(zz.y));
        __nv_bfloat162 hi = __floats2bfloat162_rn(o.z * inv * w.z * sigm(zz.z),
                                                  o.w * inv * w.w * sigm(zz.w));
        uint2 pk;
        pk.x = *(uint32_t *)&lo;
        pk.y = *(uint32_t *)&hi;
        *(uint2 *)(out + (size_t)t * nd + i) = pk;
    }
}

/* la_out_kernel with the row's NV float4 groups per thread in registers (O read once), CTA of
 * up to 1024 threads (add_norm4_kernel's layout). */
template <int NV> static __global__ void __launch_bounds__(1024) la_out4_kernel(la_args a, bf16 *out)
{
    cu_pdl_enter();
    const int t = blockIdx.x, nd = a.nh * a.d, n4 = nd / 4;
    float4 v[NV], zv[NV], wv[NV];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int g = threadIdx.x + k * blockDim.x;
        if (g >= n4) continue;
        const int i = 4 * g, n = i / a.d, j = i % a.d;
        zv[k] = la_z4(a, t, i);                             /* in flight during the sum */
        wv[k] = *(const float4 *)(a.on + i);
        v[k] = la_o4(a, n, t, j);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)nd + a.eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int g = threadIdx.x + k * blockDim.x;
        if (g >= n4) continue;
        const int i = 4 * g;
        const float4 zz = zv[k], w = wv[k];
        *(uint2 *)(out + (size_t)t * nd + i) =
            pack4_bf16(v[k].x * inv * w.x * sigm(zz.x), v[k].y * inv * w.y * sigm(zz.y),
                       v[k].z * inv * w.z * sigm(zz.z), v[k].w * inv * w.w * sigm(zz.w));
    }
}

/* la_out4_kernel's arithmetic over prefill rows (rows_kernel): bf16(scale O) from Oh (o16), z
 * from proj16 */
struct la_out_op {
    static constexpr int NIN = 2;   /* bf16(scale O), z */
    const bf16 *Oh, *z;
    bf16 *out;
    int d, Tp, ld, D;
    __device__ void load(int t, int c, uint4 (&in)[NIN]) const
    {
        const int i = 8 * c, n = i / d, j = i - n * d;
        in[0] = *(const uint4 *)(Oh + ((size_t)n * Tp + t) * d + j);
        in[1] = *(const uint4 *)(z + (size_t)t * ld + i);
    }
    __device__ void store(int t, int c, const uint4 (&in)[NIN], float inv,
                          const float (&w)[8]) const
    {
        float f[8], zz[8];
        bf8(in[0], f);
        bf8(in[1], zz);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = f[i] * inv * w[i] * sigm(zz[i]);
        ((uint4 *)(out + (size_t)t * D))[c] = pack8_bf16(f);
    }
};

cudaError_t k_la_out(cudaStream_t st, const la_args *a, bf16 *out)
{
    if (a->T <= 0) return cudaSuccess;
    if (a->o16 && a->proj16 && a->d % 8 == 0 && a->ld % 8 == 0 && al16(a->Oh) &&
        al16(a->proj16) && al16(out)) {   /* a prefill step's (the fused kernel's bf16 O) */
        const int nd = a->nh * a->d;
        const la_out_op r = {(const bf16 *)a->Oh, a->proj16 + 3 * (size_t)nd, out, a->d, a->Tp,
                             a->ld, nd};
        if (rows_launch(st, r, a->on, a->eps, a->T, nd / 8)) return cudaGetLastError();
    }
    const int n4 = a->nh * a->d / 4, nv = rows_nv(n4, a->T);
    if (!cu_decode_old() && nv) {
        const dim3 g(a->T), b(row_threads(n4, nv));
        const bool pdl = cu_row_pdl(a->T);
        if (nv == 1) return cu_launch_pdl(pdl, g, b, st, la_out4_kernel<1>, *a, out);
        if (nv == 2) return cu_launch_pdl(pdl, g, b, st, la_out4_kernel<2>, *a, out);
        return cu_launch_pdl(pdl, g, b, st, la_out4_kernel<4>, *a, out);
    } else {
        la_out_kernel<<<a->T, 256, 0, st>>>(*a, out);
    }
    return cudaGetLastError();
}

/* ---- random weights (benchmark): counter-based normal numbers ---- */
static __device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static __device__ __forceinline__ float normal_at(uint64_t seed, size_t i)
{
    const uint64_t r = mix64(seed ^ mix64(i));
    const float u1 = ((float)(r >> 40) + 0.5f) * (1.0f / 16777216.0f);
    const float u2 = (float)((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

static __global__ void fill_bf16_kernel(bf16 *p, size_t n, uint64_t seed, float mean, float std)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(mean + std * normal_at(seed, i));
}

static __global__ void fill_f32_kernel(float *p, size_t n, uint64_t seed, float mean, float std)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = mean + std * normal_at(seed, i);
}

cudaError_t k_fill_normal_bf16(cudaStream_t st, bf16 *p, size_t n, uint64_t seed, float mean,
                               float std)
{
    fill_bf16_kernel<<<grid_for(n), 256, 0, st>>>(p, n, seed, mean, std);
    return cudaGetLastError();
}

cudaError_t k_fill_normal_f32(cudaStream_t st, float *p, size_t n, uint64_t seed, float mean,
                              float std)
{
    fill_f32_kernel<<<grid_for(n), 256, 0, st>>>(p, n, seed, mean, std);
    return cudaGetLastError();
}
