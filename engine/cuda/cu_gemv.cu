/* cu_gemv.cu: bf16 products of few rows (decode: T <= CU_GEMV_T), streaming each weight byte once:
 * y (T, out) = x (T, in) · W (out, in)ᵀ with fp32 accumulation on the FMA units, the twin of the
 * CPU GEMM (engine/cpu) and of cu_gemm's cuBLAS call. docs/CUDA.md "Decode GEMV 2".
 *
 * Layout: a warp owns R consecutive rows of W; lane l takes the 16-byte column chunks l, l + 32,
 * l + 64, ... of each of them (a warp's load instruction reads 512 contiguous bytes of one row),
 * U chunk steps at a time with all R·U weight loads (ld.global.nc.L1::no_allocate) issued before
 * the first FMA; x is read through L1 (every warp of an SM reads the same T rows). Per (row,
 * token) the lane sums its chunks in ascending order, eight FMAs a chunk, then the warp sums the
 * 32 lane partials by an xor butterfly. That order depends on `in` only, not on T, R or U: a
 * token's result is bit for bit the same whether it is decoded alone or in a batch of <= 8, and
 * whichever variant (R, U) runs. No shared memory, no split-K, no atomics.
 *
 * Output forms: y = acc (fp32), y += alpha · acc (fp32, the residual add), y = bf16(acc), and
 * SwiGLU (W = gate | up, 2I rows): a warp's R rows are R/2 gate rows and the R/2 up rows I below
 * them, and it stores act = bf16(g · sigmoid(g) · u), k_swiglu's arithmetic, so the decode MLP
 * needs no SwiGLU kernel (docs/CUDA.md "Decode step boundary").
 * Launch: cudaLaunchKernelEx with programmatic stream serialization (SALA_CUDA_GEMV_PDL=0: plain
 * launch): a warp issues its first weight loads, then griddepcontrol.wait before it reads x or
 * touches y, so the launch gap and the first weight bytes overlap the previous kernel's end.
 * Needs in % 8 == 0 and 16-byte aligned W and x rows (cu_gemv_fits). */
#include "engine/cuda/cu_int.h"

namespace {

/* Weights are streamed: read once per step, never reused, kept out of L1. */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents()
{
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

__device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

/* acc[t] += Σ_e w[e] x[t][e] over the 8 columns of one chunk, in column order. */
template <int NT>
__device__ __forceinline__ void chunk_fma(float *acc, const uint4 w, const uint4 *xv)
{
    const float w0 = lo(w.x), w1 = hi(w.x), w2 = lo(w.y), w3 = hi(w.y);
    const float w4 = lo(w.z), w5 = hi(w.z), w6 = lo(w.w), w7 = hi(w.w);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float s = acc[t];
        s = fmaf(w0, lo(xv[t].x), s);
        s = fmaf(w1, hi(xv[t].x), s);
        s = fmaf(w2, lo(xv[t].y), s);
        s = fmaf(w3, hi(xv[t].y), s);
        s = fmaf(w4, lo(xv[t].z), s);
        s = fmaf(w5, hi(xv[t].z), s);
        s = fmaf(w6, lo(xv[t].w), s);
        s = fmaf(w7, hi(xv[t].w), s);
        acc[t] = s;
    }
}

constexpr int WARPS = 4;   /* a CTA: WARPS independent warps */

/* y (NT, ldy) from W (out, in), x (NT, ldx): warp g of the grid owns rows g·R .. g·R + R - 1. */
template <int NT, int R, int U>
__global__ void __launch_bounds__(WARPS * 32) gemv_kernel(const cu_gemv_args a)
{
    const int lane = threadIdx.x & 31;
    const int64_t warp = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int n8 = a.in / 8;                       /* chunks a row */
    /* SwiGLU: rows j0 .. j0 + H - 1 of the gate half, then the same rows of the up half */
    const bool sw = R % 2 == 0 && a.form == CU_GEMV_SWIGLU;
    constexpr int H = R / 2 > 0 ? R / 2 : 1;
    const int64_t nout = sw ? a.out / 2 : a.out;   /* stored columns */
    const int64_t row0 = sw ? warp * H : warp * R;
    const uint4 *Wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int64_t rr = sw ? row0 + r % H : row0 + r;   /* tail: re-read, no store */
        const int64_t row = (rr < nout ? rr : nout - 1) + (sw && r >= H ? nout : 0);
        Wr[r] = (const uint4 *)(a.W + row * a.in);
    }
    const uint4 *xr[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) xr[t] = (const uint4 *)(a.x + (size_t)t * a.ldx);
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;

    const int full = n8 / (32 * U);                /* iterations of U whole chunk steps */
    uint4 w[U][R];
    if (full > 0) {   /* the first iteration's weights before the wait (they never change) */
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) w[u][r] = ld_stream(Wr[r] + u * 32 + lane);
    }
    pdl_launch_dependents();
    pdl_wait();
    for (int it = 0; it < full; it++) {
        const int c0 = it * 32 * U + lane;
        if (it > 0) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++) w[u][r] = ld_stream(Wr[r] + c0 + u * 32);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            uint4 xv[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) xv[t] = __ldg(xr[t] + c0 + u * 32);
#pragma unroll
            for (int r = 0; r < R; r++) chunk_fma<NT>(acc[r], w[u][r], xv);
        }
    }
    for (int c = full * 32 * U + lane; c < n8; c += 32) {   /* the rest, one step at a time */
        uint4 xv[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) xv[t] = __ldg(xr[t] + c);
#pragma unroll
        for (int r = 0; r < R; r++) chunk_fma<NT>(acc[r], ld_stream(Wr[r] + c), xv);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], o);
    /* every lane holds every sum (the butterfly gives all lanes the same bits); lane r·NT + t
     * (mod 32) stores (r, t) */
    if constexpr (R % 2 == 0) {
        if (sw) {
#pragma unroll
            for (int r = 0; r < H; r++)
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    const int64_t row = row0 + r;
                    if (row >= nout || lane != (r * NT + t) % 32) continue;
                    const float g = acc[r][t], u = acc[r + H][t];
                    ((bf16 *)a.y)[(size_t)t * a.ldy + (size_t)row] =
                        __float2bfloat16_rn(cu_silu_mul(g, u));
                }
            return;
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int64_t row = row0 + r;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (row >= a.out || lane != (r * NT + t) % 32) continue;
            const size_t i = (size_t)t * a.ldy + (size_t)row;
            if (a.form == CU_GEMV_F32) ((float *)a.y)[i] = acc[r][t];
            else if (a.form == CU_GEMV_ACC) ((float *)a.y)[i] += a.alpha * acc[r][t];
            else ((bf16 *)a.y)[i] = __float2bfloat16(acc[r][t]);
        }
    }
}

/* The variants (R rows a warp, U chunk steps an iteration), index = cu_gemv_args.variant. */
constexpr int NVAR = 5;
constexpr int VAR_R[NVAR] = {1, 2, 2, 4, 1};
constexpr int VAR_U[NVAR] = {8, 4, 8, 4, 4};

template <int NT, int V>
cudaError_t launch_v(cudaStream_t st, const cu_gemv_args &a, bool pdl)
{
    constexpr int R = VAR_R[V], U = VAR_U[V];
    const bool sw = a.form == CU_GEMV_SWIGLU;
    if (sw && (R % 2 || a.out % 2)) return cudaErrorInvalidValue;
    constexpr int H = R / 2 > 0 ? R / 2 : 1;   /* SwiGLU: output columns a warp */
    const int64_t warps = sw ? ((int64_t)a.out / 2 + H - 1) / H : ((int64_t)a.out + R - 1) / R;
    return cu_launch_pdl(pdl, dim3((unsigned)((warps + WARPS - 1) / WARPS)), dim3(WARPS * 32), st,
                         gemv_kernel<NT, R, U>, a);
}

template <int NT>
cudaError_t launch_t(cudaStream_t st, const cu_gemv_args &a, bool pdl)
{
    switch (a.variant) {
    case 0: return launch_v<NT, 0>(st, a, pdl);
    case 1: return launch_v<NT, 1>(st, a, pdl);
    case 2: return launch_v<NT, 2>(st, a, pdl);
    case 3: return launch_v<NT, 3>(st, a, pdl);
    default: return launch_v<NT, 4>(st, a, pdl);
    }
}

}   // namespace

int cu_gemv_variants(void) { return NVAR; }

/* The default variant for T tokens, from the microbenchmark of run V1 (docs/BENCHMARKS.md "decode
 * GEMV 2"): T = 1 one row a warp, 8 steps in flight; T = 2 two rows; T >= 3 four rows (the x reads
 * from L1 are T per chunk step against R weight loads). */
int cu_gemv_pick(int out, int in, int T)
{
    (void)out, (void)in;
    const char *v = getenv("SALA_CUDA_GEMV_VAR");
    if (v && *v >= '0' && *v < '0' + NVAR && !v[1]) return *v - '0';
    return T <= 1 ? 0 : T == 2 ? 2 : 3;
}

int cu_gemv_max_t(void)
{
    const char *v = getenv("SALA_CUDA_GEMV");
    if (v && *v >= '0' && *v <= '0' + CU_GEMV_T && !v[1]) return *v - '0';
    return CU_GEMV_DEFAULT_T;
}

bool cu_gemv_fits(const bf16 *W, int in, const bf16 *x, int ldx, int T)
{
    return T >= 1 && T <= CU_GEMV_T && in > 0 && in % 8 == 0 && ldx % 8 == 0 &&
           (uintptr_t)W % 16 == 0 && (uintptr_t)x % 16 == 0;
}

cudaError_t k_gemv(cudaStream_t st, const cu_gemv_args *a)
{
    const bool pdl = !cu_env_is("SALA_CUDA_GEMV_PDL", "0");
    if (a->out <= 0) return cudaSuccess;
    cu_gemv_args b = *a;
    if (b.form == CU_GEMV_SWIGLU && b.variant >= 0 && b.variant < NVAR && VAR_R[b.variant] == 1)
        b.variant = VAR_U[b.variant] == 8 ? 2 : 1;   /* a gate row needs its up row: 2 rows */
    switch (b.T) {
    case 1: return launch_t<1>(st, b, pdl);
    case 2: return launch_t<2>(st, b, pdl);
    case 3: return launch_t<3>(st, b, pdl);
    case 4: return launch_t<4>(st, b, pdl);
    case 5: return launch_t<5>(st, b, pdl);
    case 6: return launch_t<6>(st, b, pdl);
    case 7: return launch_t<7>(st, b, pdl);
    case 8: return launch_t<8>(st, b, pdl);
    default: return cudaErrorInvalidValue;
    }
}

/* ---- bandwidth floor for the microbenchmark: read n16 16-byte words with the same loads ---- */
namespace {
__global__ void __launch_bounds__(256) read_kernel(const uint4 *p, size_t n16, uint32_t *sink)
{
    uint32_t s = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = ld_stream(p + i), b = ld_stream(p + i + stride);
        const uint4 c = ld_stream(p + i + 2 * stride), d = ld_stream(p + i + 3 * stride);
        s ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
             d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = ld_stream(p + i);
        s ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (s == 0x9e3779b9u) *sink = s;   /* keeps the loads */
}
}   // namespace

cudaError_t k_read_floor(cudaStream_t st, const void *p, size_t bytes, uint32_t *sink, int sms)
{
    read_kernel<<<sms * 8, 256, 0, st>>>((const uint4 *)p, bytes / 16, sink);
    return cudaGetLastError();
}
