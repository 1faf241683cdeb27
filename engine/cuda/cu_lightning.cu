/* cu_lightning.cu: the chunked lightning prefill (T > 1; SALA-SPEC §3.5, the chunked form of
 * engine/cpu/lightning.c). Three implementations of the same arithmetic, chunk C = CU_LA_C = 64:
 *
 * Fused (default for bf16 proj, d = 64 and 128, on the sm_90a image; cu_la_fused,
 * SALA_CUDA_LA_FUSED=0 turns it off): la_rot_kernel writes the rotation table, then one
 * la_fused_kernel walks the chunks per (head, 32 value columns) with the state in wgmma
 * accumulators, its prep warpgroups making Qh and Kh in bf16 a few chunks ahead, and writes
 * bf16(scale O) (la_args.o16); described above the kernel below.
 *
 * Tensor cores (default for d = 64 and 128):
 *   la_prepk_kernel  k norm + RoPE into Kh (nh, Tp, d) and the rotation table (Tp, d) in Qd's
 *                    scratch; Kh of proj's type P: with bf16 proj k is rounded to bf16 after
 *                    RoPE, as Hugging Face's layer has it (SALA-SPEC §3.4), which is what both
 *                    products then read (bf16 is exact in TF32); la_chunk_kernel normalizes and
 *                    rotates Q from proj itself
 *                    (SALA_CUDA_LA_PREP=old: k_la_prep writes Qh and Kh, the fourth version).
 *   la_state_kernel  per (head, 64x64 block of S, range of chunks): R ranges in parallel
 *                    (la_range_chunks; SALA_CUDA_LA_RANGES=1 is the single walk), ranges r > 0
 *                    from a zero state; la_combine_kernel then chains the range end states,
 *                    and la_chunk_kernel adds (λ^C)^k Sst(r) to the local S_in of its chunk.
 *                    Within a range: walks the chunks in order with its block of
 *                    the fp32 state in mma accumulators; writes S_in(c) into Sb (rounded to TF32,
 *                    it only feeds the TF32 product below), then S = λ^{len} S + Kw_cᵀ V_c with
 *                    Kw = k λ^{len-1-σ} in 3xTF32 (hi·hi + hi·lo + lo·hi: fp32-equivalent, the
 *                    state stays within ~1e-6 of the fp32 twin); the final state goes back to S.
 *   la_chunk_kernel  per (head, chunk), 4 warps of 16 rows: O = λ^{τ+1} Q S_in(c)
 *                    + (mask_{σ<=τ} λ^{τ-σ} ⊙ Q Kᵀ) V in single TF32 (round to nearest, fp32
 *                    accumulate; ~4e-4 rel_l2 on O against the fp32 twin, under the bf16 the
 *                    output is rounded to). The masked scores stay in registers and feed the
 *                    A V product directly (k order permuted to the accumulator layout).
 *   V (and Q) are read straight from proj (row stride ld).
 *   proj16 (prefill steps, cu_la_proj16): the same kernels read q|k|v|z from the bf16 output of
 *   the input GEMM (P = bf16 instances): half the bytes of every read of proj. bf16 -> fp32 and
 *   bf16 -> TF32 are exact, so the products see the same kinds of operands; V tiles are kept
 *   in shared memory as bf16, and the walk's 3xTF32 product drops the term with V's lo part
 *   (zero): 2 mma a k-step instead of 3, the same sum. SALA_CUDA_LA_PROJ=f32 (cu_forward.cu) is
 *   the fp32 form.
 *
 * cuBLAS (SALA_CUDA_LA_BLAS=1, and other head sizes): prep also writes Qd = Qh λ^{τ+1},
 * Kw = Kh λ^{len-1-σ} and Vh, then 4 fp32 strided-batched products over (head, chunk) with the
 * element-wise parts in cu_kernels.cu:
 *   ΔS_c = Kw_cᵀ V_c;  scan: S_in(c) in place of ΔS_c, the layer state moves to the end;
 *   O = Qd_c S_in(c);  A = Q_c K_cᵀ masked and decayed λ^{τ-σ} (σ <= τ);  O += A V_c.
 * Row-major (rows, d) blocks are column-major (d, rows) matrices to cuBLAS.
 *
 * Both leave the unscaled output in Oh (nh, Tp, d) for k_la_out and the new state in S; the
 * fused form (below) leaves bf16(scale O) there (HF rounds o to bf16 before o_norm) and sets
 * o16. */
#include "engine/cuda/cu_int.h"
#include "engine/cuda/cu_mma.cuh"

#include <stdlib.h>
#include <string.h>

/* ---- TF32 helpers (mma.sync m16n8k8, PTX ISA fragment layout; lane l: g = l / 4, t = l % 4)
 *   A (16x8, row)  a0 = (g, t)  a1 = (g+8, t)  a2 = (g, t+4)  a3 = (g+8, t+4)
 *   B (8x8, col)   b0 = (k t, n g)  b1 = (k t+4, n g)
 *   C (16x8)       c0,c1 = (g, 2t, 2t+1)  c2,c3 = (g+8, 2t, 2t+1)
 * Shared tiles are row-major fp32; a fragment read with its row indexed by g and column by t is
 * conflict-free for a row stride ≡ 4 (mod 32) floats, row by t (or 2t) and column by g for a
 * stride ≡ 8 (mod 32) (≡ 4 (mod 16) for 2t).
 *
 * x rounded to TF32 (10 explicit mantissa bits), to nearest with ties away from zero: the
 * result of cvt.rna.tf32.f32 for finite x, in two integer operations. */
static __device__ __forceinline__ uint32_t tf32(float x)
{
    return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

/* x = hi + lo, both TF32 (the 3xTF32 operand split; |x - hi - lo| <= 2^-22 |x|). */
static __device__ __forceinline__ void tf32_split(float x, uint32_t &hi, uint32_t &lo)
{
    hi = tf32(x);
    lo = tf32(x - __uint_as_float(hi));
}

static __device__ __forceinline__ void mma_tf32(float c[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Rows [0, rows) x cols [0, cols) of a row-major fp32 or bf16 matrix (row stride lds) -> shared
 * dst (row stride ldd) by 16-byte cp.async; rows >= valid are zero-filled (their source clamped
 * to row 0, never read). cols a multiple of 16 bytes, 16-byte aligned rows. All threads of the
 * CTA take part. */
template <typename P>
static __device__ __forceinline__ void rows_async(P *dst, int ldd, const P *src, size_t lds,
                                                  int valid, int rows, int cols)
{
    constexpr int E = 16 / sizeof(P);   /* elements per copy */
    const int per = cols / E;
    for (int idx = threadIdx.x; idx < rows * per; idx += blockDim.x) {
        const int r = idx / per, q = idx % per;
        const bool ok = r < valid;
        cp_async16(smem_u32(dst + r * ldd + E * q), src + (ok ? (size_t)r * lds : 0) + E * q, ok);
    }
}

/* proj's element type P: fp32 (proj) or bf16 (proj16). cu_f32 (cu_int.h): the value as fp32
 * (exact); la_tf: as a TF32 operand (fp32 rounded to nearest; bf16 exact, its 8 mantissa bits
 * fit). */
template <typename P> static __device__ __forceinline__ const P *la_src(const la_args &a);
template <> __device__ __forceinline__ const float *la_src<float>(const la_args &a)
{
    return a.proj;
}
template <> __device__ __forceinline__ const bf16 *la_src<bf16>(const la_args &a)
{
    return a.proj16;
}
static __device__ __forceinline__ uint32_t la_tf(float x) { return tf32(x); }
static __device__ __forceinline__ uint32_t la_tf(bf16 x)
{
    return (uint32_t)__bfloat16_as_ushort(x) << 16;
}

/* ---- pass 1: the state walk ---- */

/* CTA block BI (rows i) x BJ (cols j) of one head's state, 4 warps of WM x WN each (2 x 2 warps
 * when BI == 2 WM). Shared: two stages of K (64, BI+8) fp32 and V (64, BJ+8) of proj's type P
 * (row strides ≡ 8 mod 32 words for fp32, ≡ 4 mod 32 words for bf16 with BJ = 64: the fragment
 * rows are indexed by t, conflict-free), then dn (65). */
template <int BI, int BJ, typename P> static constexpr size_t la_state_smem()
{
    return (size_t)2 * CU_LA_C * (BI + 8) * sizeof(P) +
           (size_t)2 * CU_LA_C * (BJ + 8) * sizeof(P) + (size_t)(CU_LA_C + 4) * sizeof(float);
}

/* grid (d/BJ column blocks j, d/BI row blocks i, nh R), 128 threads. Warp w owns rows
 * i0 + WM (w % (BI/WM)) .. + WM and columns j0 + WN (w / (BI/WM)) .. + WN of the block: MT =
 * WM/16 m-tiles x NT = WN/8 n-tiles of accumulators, i.e. its part of the fp32 state.
 *
 * Chunk ranges: blockIdx.z = r nh + n walks chunks [r cr, (r+1) cr) of head n. Range 0 starts
 * from the layer state S and writes the true S_in(c) (TF32-rounded); a range r > 0 starts from
 * zero and writes the local S_in(c) unrounded (la_chunk_kernel adds the decayed start state
 * of the range, then rounds). With one range (cr >= nch) the final state goes to S, otherwise
 * each range's local end state to Eb = a.Ab (nh, R, d, d) for la_combine_kernel. */
template <int BI, int BJ, int WM, int WN, typename P>
static __global__ void __launch_bounds__(128) la_state_kernel(la_args a, int cr)
{
    constexpr int LK = BI + 8, LV = BJ + 8, MT = WM / 16, NT = WN / 8, WI = BI / WM;
    static_assert(WI * (BJ / WN) == 4, "4 warps");
    static_assert((2 * CU_LA_C * LV * sizeof(P)) % 16 == 0, "dn stays aligned");
    static_assert((2 * CU_LA_C * LK * sizeof(P)) % 16 == 0, "Vs stays aligned");
    extern __shared__ __align__(16) float la_st[];
    P *Ks = (P *)la_st;
    P *Vs = Ks + 2 * CU_LA_C * LK;
    float *dn = (float *)(Vs + 2 * CU_LA_C * LV);
    const int d = a.d, nd = a.nh * d, nch = a.Tp / CU_LA_C, n = blockIdx.z % a.nh;
    const int r = blockIdx.z / a.nh, cb = r * cr, ce = cb + cr < nch ? cb + cr : nch;
    if (cb >= ce) return;   /* the whole CTA: an empty last range */
    const int j0 = blockIdx.x * BJ, i0 = blockIdx.y * BI;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int mi = (w % WI) * WM, nj = (w / WI) * WN;
    if (threadIdx.x <= CU_LA_C) dn[threadIdx.x] = a.dec[n * (CU_LA_C + 1) + threadIdx.x];
    const P *Kg = (const P *)a.Kh + (size_t)n * a.Tp * d + i0;       /* row t: + t d */
    const P *Vg = la_src<P>(a) + 2 * (size_t)nd + (size_t)n * d + j0;   /* row t: + t ld */
    float *S = a.S + (size_t)n * d * d, *Sb = a.Sb + (size_t)n * nch * d * d;
    /* acc[m][q]: rows i0 + mi + 16m + g (+8), columns j0 + nj + 8q + 2t (+1) */
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int q = 0; q < NT; q++) {
            const size_t o = (size_t)(i0 + mi + 16 * m + g) * d + j0 + nj + 8 * q + 2 * t;
            float2 x = make_float2(0.0f, 0.0f), y = x;
            if (r == 0) {
                x = *(const float2 *)(S + o);
                y = *(const float2 *)(S + o + 8 * (size_t)d);
            }
            acc[m][q][0] = x.x, acc[m][q][1] = x.y, acc[m][q][2] = y.x, acc[m][q][3] = y.y;
        }
    rows_async(Ks, LK, Kg + (size_t)cb * CU_LA_C * d, d, a.T - cb * CU_LA_C, CU_LA_C, BI);
    rows_async(Vs, LV, Vg + (size_t)cb * CU_LA_C * a.ld, a.ld, a.T - cb * CU_LA_C, CU_LA_C, BJ);
    cp_async_commit();
    for (int c = cb; c < ce; c++) {
        const int b = (c - cb) & 1, c0 = c * CU_LA_C;
        const int len = a.T - c0 < CU_LA_C ? a.T - c0 : CU_LA_C;
        if (c + 1 < ce) {   /* prefetch the next chunk into the other stage */
            const int c1 = c0 + CU_LA_C;
            rows_async(Ks + (b ^ 1) * CU_LA_C * LK, LK, Kg + (size_t)c1 * d, d, a.T - c1,
                       CU_LA_C, BI);
            rows_async(Vs + (b ^ 1) * CU_LA_C * LV, LV, Vg + (size_t)c1 * a.ld, a.ld, a.T - c1,
                       CU_LA_C, BJ);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float *sb = Sb + (size_t)c * d * d;
        const float lam = dn[len];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int q = 0; q < NT; q++) {   /* S_in(c): range 0 TF32-rounded, others local */
                float *v = acc[m][q];
                const size_t o = (size_t)(i0 + mi + 16 * m + g) * d + j0 + nj + 8 * q + 2 * t;
                if (r == 0) {
                    *(float2 *)(sb + o) = make_float2(__uint_as_float(tf32(v[0])),
                                                      __uint_as_float(tf32(v[1])));
                    *(float2 *)(sb + o + 8 * (size_t)d) =
                        make_float2(__uint_as_float(tf32(v[2])), __uint_as_float(tf32(v[3])));
                } else {
                    *(float2 *)(sb + o) = make_float2(v[0], v[1]);
                    *(float2 *)(sb + o + 8 * (size_t)d) = make_float2(v[2], v[3]);
                }
                v[0] *= lam, v[1] *= lam, v[2] *= lam, v[3] *= lam;
            }
        const P *K = Ks + b * CU_LA_C * LK + mi + g;
        const P *V = Vs + b * CU_LA_C * LV + nj + g;
#pragma unroll
        for (int ks = 0; ks < CU_LA_C / 8; ks++) {
            /* A = Kwᵀ (16 rows i x 8 tokens σ), B = V (8 σ x 8 columns j) */
            const int s0 = 8 * ks + t, s1 = s0 + 4;
            const float w0 = s0 < len ? dn[len - 1 - s0] : 0.0f;
            const float w1 = s1 < len ? dn[len - 1 - s1] : 0.0f;
            uint32_t ah[MT][4], al[MT][4];
#pragma unroll
            for (int m = 0; m < MT; m++) {
                tf32_split(cu_f32(K[s0 * LK + 16 * m]) * w0, ah[m][0], al[m][0]);
                tf32_split(cu_f32(K[s0 * LK + 16 * m + 8]) * w0, ah[m][1], al[m][1]);
                tf32_split(cu_f32(K[s1 * LK + 16 * m]) * w1, ah[m][2], al[m][2]);
                tf32_split(cu_f32(K[s1 * LK + 16 * m + 8]) * w1, ah[m][3], al[m][3]);
            }
#pragma unroll
            for (int q = 0; q < NT; q++) {
                if constexpr (sizeof(P) == 2) {   /* V from bf16 is TF32 exactly: lo = 0 */
                    const uint32_t bh0 = la_tf(V[s0 * LV + 8 * q]);
                    const uint32_t bh1 = la_tf(V[s1 * LV + 8 * q]);
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        mma_tf32(acc[m][q], al[m], bh0, bh1);
                        mma_tf32(acc[m][q], ah[m], bh0, bh1);
                    }
                } else {
                    uint32_t bh0, bl0, bh1, bl1;
                    tf32_split(V[s0 * LV + 8 * q], bh0, bl0);
                    tf32_split(V[s1 * LV + 8 * q], bh1, bl1);
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        mma_tf32(acc[m][q], al[m], bh0, bh1);   /* K lo · V hi */
                        mma_tf32(acc[m][q], ah[m], bl0, bl1);   /* K hi · V lo */
                        mma_tf32(acc[m][q], ah[m], bh0, bh1);
                    }
                }
            }
        }
        __syncthreads();   /* stage b is refilled by the next iteration's prefetch */
    }
    if (cr < nch) S = a.Ab + ((size_t)n * ((nch + cr - 1) / cr) + r) * d * d;   /* Eb */
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int q = 0; q < NT; q++) {
            const size_t o = (size_t)(i0 + mi + 16 * m + g) * d + j0 + nj + 8 * q + 2 * t;
            *(float2 *)(S + o) = make_float2(acc[m][q][0], acc[m][q][1]);
            *(float2 *)(S + o + 8 * (size_t)d) = make_float2(acc[m][q][2], acc[m][q][3]);
        }
}

/* Ranges of cr chunks (1 < R = ceil(nch / cr) <= LA_RMAX): Eb = a.Ab (nh, R, d, d) holds each
 * range's local end state; in place, Eb[n][r] <- the true state at the start of range r
 * (r >= 1), and S <- the state after the last chunk. Sst(r+1) = Λ_r Sst(r) + E_r, Sst(0) = S,
 * E_0 already includes S; Λ_r = Π λ^{len_c} over the chunks of range r in chunk order (thread r
 * of the CTA, from two register values: only the last chunk of the call is partial).
 * grid (d²/256, nh), a thread per element; each E load is issued before the store ahead of it. */
#define LA_RMAX 128
static __global__ void __launch_bounds__(256) la_combine_kernel(la_args a, int cr)
{
    __shared__ float lam[LA_RMAX];
    const int dd = a.d * a.d, nch = a.Tp / CU_LA_C, R = (nch + cr - 1) / cr, n = blockIdx.y;
    const float *dn = a.dec + n * (CU_LA_C + 1);
    if ((int)threadIdx.x < R) {
        const int r = threadIdx.x, ce = (r + 1) * cr < nch ? (r + 1) * cr : nch;
        const float full = dn[CU_LA_C];
        const float last = dn[a.T - (nch - 1) * CU_LA_C];   /* len of chunk nch - 1 */
        float l = 1.0f;
        for (int c = r * cr; c < ce; c++) l *= c == nch - 1 ? last : full;
        lam[r] = l;
    }
    __syncthreads();
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= dd) return;
    float *E = a.Ab + (size_t)n * R * dd + e;
    float s = E[0], loc = E[dd];
    for (int r = 1; r < R; r++) {
        const float next = r + 1 < R ? E[(size_t)(r + 1) * dd] : 0.0f;
        E[(size_t)r * dd] = s;
        s = lam[r] * s + loc;
        loc = next;
    }
    a.S[(size_t)n * dd + e] = s;
}

/* ---- pass 2: the output of one chunk ---- */

/* Shared layout (floats): Q (64, D+4) | slot 1 | slot 2 | dn (65). Slot 1 holds K (64, D+4)
 * (bf16 Kh: (64, D+8) bf16), later S_in rows [0, D/2) (D/2, D+8); slot 2 holds V, later S_in
 * rows [D/2, D). With bf16 proj (P = bf16) slot 2 first holds V (64, D+8) bf16 and the raw q
 * rows (64, D) bf16, from which each warp writes its normalized, rotated rows into Q: 64 (2D +
 * 8) bf16 = 64 (D + 4) floats, the same bytes. */
template <int D> static constexpr __host__ __device__ int la_slot()
{
    return CU_LA_C * (D + 4) > D / 2 * (D + 8) ? CU_LA_C * (D + 4) : D / 2 * (D + 8);
}
template <int D> static constexpr size_t la_chunk_smem()
{
    return (size_t)(CU_LA_C * (D + 4) + 2 * la_slot<D>() + CU_LA_C + 4) * sizeof(float);
}

/* grid (nch, nh), 128 threads; warp w computes rows τ = 16w .. 16w+15 of the chunk. The loads
 * overlap the products: Q, K then V are in flight first; each half of S_in is loaded into a slot
 * as soon as the product before has finished reading it. Chunk c of a range r = c / cr > 0
 * (la_state_kernel's ranges) has only its local S_in in Sb: the slot gets
 * tf32(local + (λ^C)^{c - r cr} Eb[n][r]) (Eb after la_combine_kernel). */
/* q (or k) row x of one head, lane l holding columns l + 32k: RMSNorm (w) and rotate-half RoPE
 * -> o. cv[k] = cos of angle l + 32k and cv[k + D/64] its sin (k < D/64): the lane's entries
 * of the rotation table row. la_prep_kernel's arithmetic, sums in its order; the partners i
 * and i + D/2 are in the same lane. */
template <int D, typename O>
static __device__ __forceinline__ void la_norm_rope(const float (&x)[D / 32], const float *w,
                                                    float eps, const float (&cv)[D / 32],
                                                    O *o)
{
    constexpr int KV = D / 32, H = D / 2;
    const int lane = threadIdx.x & 31;
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < KV; k++) ss += x[k] * x[k];
    for (int m = 16; m > 0; m >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, m);
    const float inv = 1.0f / sqrtf(ss / (float)D + eps);
#pragma unroll
    for (int k = 0; k < KV / 2; k++) {
        const int i = lane + 32 * k;
        const float lo = x[k] * inv * w[i], hi = x[k + KV / 2] * inv * w[i + H];
        const float c = cv[k], sn = cv[k + KV / 2];
        cu_st1(o + i, lo * c + hi * -sn);
        cu_st1(o + i + H, hi * c + lo * sn);
    }
}

/* Prep of the tensor-core path (d = D): Kh rows of type P (per-head RMSNorm + RoPE, rounded to
 * bf16 for P = bf16; zero past T) and the rotation table cs (Tp, D) (zero past T) from which
 * la_chunk_kernel normalizes and rotates Q itself (Q is never written). Grid Tp, 8 warps: the
 * angles of the row once (accurate sincosf, as la_prep_kernel), then a head per warp. */
template <int D, typename P>
static __global__ void __launch_bounds__(256) la_prepk_kernel(la_args a, float *cs)
{
    constexpr int KV = D / 32;
    __shared__ float rot[D];
    const int t = blockIdx.x, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const bool pad = t >= a.T;
    for (int j = threadIdx.x; j < D / 2; j += blockDim.x) {
        float sv = 0.0f, cv = 0.0f;
        if (!pad) sincosf((float)(a.p0 + t) * a.inv_freq[j], &sv, &cv);
        rot[j] = cv, rot[D / 2 + j] = sv;
        cs[(size_t)t * D + j] = cv, cs[(size_t)t * D + D / 2 + j] = sv;
    }
    __syncthreads();
    const size_t nd = (size_t)a.nh * D;
    float cv[KV];
#pragma unroll
    for (int k = 0; k < KV / 2; k++) {
        cv[k] = rot[lane + 32 * k];
        cv[k + KV / 2] = rot[D / 2 + lane + 32 * k];
    }
    for (int n = w; n < a.nh; n += 8) {   /* k: proj columns nd.., k_norm, Kh */
        P *o = (P *)a.Kh + ((size_t)n * a.Tp + t) * D;
        float x[KV];
        const P *r = la_src<P>(a) + (size_t)t * a.ld + nd + (size_t)n * D;
#pragma unroll
        for (int k = 0; k < KV; k++) x[k] = pad ? 0.0f : cu_f32(r[lane + 32 * k]);
        la_norm_rope<D, P>(x, a.kn, a.eps, cv, o);
    }
}

template <int D, typename P>
static __global__ void __launch_bounds__(128, 2) la_chunk_kernel(la_args a, int cr, const float *cs)
{
    constexpr bool H16 = sizeof(P) == 2;   /* bf16 proj: V and raw q rows bf16 in slot 2 */
    constexpr int LQ = D + 4, LS = D + 8, NT = D / 8, SLOT = la_slot<D>();
    constexpr int LV = H16 ? D + 8 : LQ;   /* bf16: ≡ 8 mod 32 halves, rows 2t conflict-free */
    constexpr int LK = LV;                 /* K (Kh of type P) in slot 1 the same way */
    static_assert(!H16 || CU_LA_C * (2 * D + 8) <= 2 * SLOT, "V and raw q fit slot 2");
    extern __shared__ __align__(16) float la_sm[];
    float *Qs = la_sm, *s1 = Qs + CU_LA_C * LQ, *s2 = s1 + SLOT, *dn = s2 + SLOT;
    P *Vs = (P *)s2, *Ks = (P *)s1;
    bf16 *Qr = (bf16 *)s2 + CU_LA_C * (D + 8);   /* raw q rows (64, D), bf16 only */
    const int c = blockIdx.x, n = blockIdx.y, nch = a.Tp / CU_LA_C, t0 = c * CU_LA_C;
    const int len = a.T - t0 < CU_LA_C ? a.T - t0 : CU_LA_C;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = 16 * w, ntA = 2 * w + 2;   /* score tiles of 8 keys with σ <= τ possible */
    const size_t hrow = (size_t)n * a.Tp + t0;
    const float *Sg = a.Sb + ((size_t)n * nch + c) * D * D;
    if (threadIdx.x <= CU_LA_C) dn[threadIdx.x] = a.dec[n * (CU_LA_C + 1) + threadIdx.x];
    const P *pr = la_src<P>(a) + (size_t)t0 * a.ld + (size_t)n * D;   /* q of row t0 */
    if constexpr (H16)
        rows_async(Qr, D, pr, a.ld, len, CU_LA_C, D);
    else
        rows_async(Qs, LQ, cs ? pr : a.Qh + hrow * D, cs ? (size_t)a.ld : (size_t)D, len,
                   CU_LA_C, D);
    rows_async(Ks, LK, (const P *)a.Kh + hrow * D, D, len, CU_LA_C, D);
    cp_async_commit();
    rows_async(Vs, LV, pr + 2 * (size_t)a.nh * D, a.ld, len, CU_LA_C, D);
    cp_async_commit();
    /* raw q rows (cs != NULL): each warp normalizes and rotates its own 16 (zero rows stay 0);
     * their table entries (L2) are loaded while Q and K are in flight */
    constexpr int KV = D / 32, H = D / 2;
    float cv[16][KV];
    if (cs)
#pragma unroll
        for (int rr = 0; rr < 16; rr++) {
            const float *cr = cs + (size_t)(t0 + m0 + rr) * D;
#pragma unroll
            for (int k = 0; k < KV / 2; k++) {
                cv[rr][k] = cr[lane + 32 * k];
                cv[rr][k + KV / 2] = cr[H + lane + 32 * k];
            }
        }
    cp_async_wait<1>();
    __syncthreads();
    if (cs) {
#pragma unroll
        for (int rr = 0; rr < 16; rr++) {
            float x[KV];
#pragma unroll
            for (int k = 0; k < KV; k++)
                x[k] = H16 ? cu_f32(Qr[(m0 + rr) * D + lane + 32 * k])
                           : Qs[(m0 + rr) * LQ + lane + 32 * k];
            la_norm_rope<D, float>(x, a.qn, a.eps, cv[rr], Qs + (m0 + rr) * LQ);
        }
        __syncwarp();
    }

    /* A = Q Kᵀ (16 x 64 per warp, tiles past the diagonal skipped) */
    const float *q0 = Qs + (m0 + g) * LQ + t, *q1 = q0 + 8 * LQ;
    float A[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) A[j][0] = A[j][1] = A[j][2] = A[j][3] = 0.0f;
#pragma unroll 4
    for (int kk = 0; kk < NT; kk++) {
        const uint32_t af[4] = {tf32(q0[8 * kk]), tf32(q1[8 * kk]), tf32(q0[8 * kk + 4]),
                                tf32(q1[8 * kk + 4])};
        const P *kr = Ks + g * LK + 8 * kk + t;
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (j < ntA) mma_tf32(A[j], af, la_tf(kr[8 * j * LK]), la_tf(kr[8 * j * LK + 4]));
    }
    __syncthreads();   /* K read by every warp: slot 1 takes S_in rows [0, D/2) */
    rows_async(s1, LS, Sg, D, D / 2, D / 2, D);
    cp_async_commit();
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int tau = m0 + g + 8 * (e >> 1), sg = 8 * j + 2 * t + (e & 1);
            A[j][e] = sg <= tau ? A[j][e] * dn[tau - sg] : 0.0f;
        }
    cp_async_wait<1>();   /* V */
    __syncthreads();

    /* O = A V: the accumulator of score tile j is the A operand with logical k t <-> key 2t and
     * k t+4 <-> key 2t+1, so B takes V rows 8j+2t and 8j+2t+1. */
    float O[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) O[nt][0] = O[nt][1] = O[nt][2] = O[nt][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (j >= ntA) continue;
        const uint32_t af[4] = {tf32(A[j][0]), tf32(A[j][2]), tf32(A[j][1]), tf32(A[j][3])};
        const P *v0 = Vs + (8 * j + 2 * t) * LV + g, *v1 = v0 + LV;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mma_tf32(O[nt], af, la_tf(v0[8 * nt]), la_tf(v1[8 * nt]));
    }
    __syncthreads();   /* V read: slot 2 takes S_in rows [D/2, D) */
    rows_async(s2, LS, Sg + (size_t)(D / 2) * D, D, D / 2, D / 2, D);
    cp_async_commit();

    /* O += λ^{τ+1} Q S_in, k = rows of S_in in two halves (S_in is TF32 in the slots) */
    const float f0 = dn[m0 + g + 1], f1 = dn[m0 + g + 9];
    float fs = 1.0f;   /* (λ^C)^{c - r cr}: the chunks before c in its range are full */
    for (int k = c / cr * cr; k < c && c >= cr; k++) fs *= dn[CU_LA_C];
    /* below 2^-100 the start state's share is far under the fp32 rounding of S_in: skipped */
    const bool fix = c >= cr && fs >= 0x1p-100f;
    const float *St = fix ? a.Ab + ((size_t)n * ((nch + cr - 1) / cr) + c / cr) * D * D : a.S;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        constexpr int NF = D * D / 1024;   /* float4 of a half per thread */
        float4 sv[NF];
        if (fix)
#pragma unroll
            for (int k = 0; k < NF; k++) {
                const int i = threadIdx.x + 128 * k, row = i / (D / 4), c4 = i % (D / 4);
                sv[k] = *(const float4 *)(St + (size_t)(h * (D / 2) + row) * D + 4 * c4);
            }
        if (h == 0) cp_async_wait<1>(); else cp_async_wait<0>();
        __syncthreads();
        float *sh = h ? s2 : s1;
        if (fix) {
#pragma unroll
            for (int k = 0; k < NF; k++) {
                const int i = threadIdx.x + 128 * k, row = i / (D / 4), c4 = i % (D / 4);
                float4 *p = (float4 *)(sh + row * LS + 4 * c4);
                const float4 u = *p;
                *p = make_float4(__uint_as_float(tf32(u.x + fs * sv[k].x)),
                                 __uint_as_float(tf32(u.y + fs * sv[k].y)),
                                 __uint_as_float(tf32(u.z + fs * sv[k].z)),
                                 __uint_as_float(tf32(u.w + fs * sv[k].w)));
            }
            __syncthreads();
        }
#pragma unroll 2
        for (int kk = 0; kk < NT / 2; kk++) {
            const int k = h * (D / 2) + 8 * kk;
            const uint32_t af[4] = {tf32(q0[k] * f0), tf32(q1[k] * f1), tf32(q0[k + 4] * f0),
                                    tf32(q1[k + 4] * f1)};
            const float *b0 = sh + (8 * kk + t) * LS + g, *b1 = b0 + 4 * LS;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                mma_tf32(O[nt], af, __float_as_uint(b0[8 * nt]), __float_as_uint(b1[8 * nt]));
        }
    }
    float *Og = a.Oh + hrow * D;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int col = 8 * nt + 2 * t;
        *(float2 *)(Og + (m0 + g) * D + col) = make_float2(O[nt][0], O[nt][1]);
        *(float2 *)(Og + (m0 + g + 8) * D + col) = make_float2(O[nt][2], O[nt][3]);
    }
}

/* ---- the fused form (sm_90a, bf16 proj, d = 64 or 128): docs/CUDA.md "Lightning prefill 8, 9" ---
 *
 * One CTA (three warpgroups) per (head n, 32 value columns j0 .. j0 + 31) walks all the chunks of
 * the call in order with its columns of the fp32 state in wgmma accumulators, and writes the
 * chunk's output columns itself: no S_in per chunk in memory, no ranges. Per chunk, every
 * product on the tensor cores in bf16 (wgmma, fp32 accumulate):
 *   scores  A (64 τ x 64 σ) = Qh Khᵀ            Qh, Kh: q and k normalized, rotated and rounded
 *                                               to bf16 (HF's rounding, SALA-SPEC §3.4) by
 *                                               the prep warpgroups: exact operands
 *   inter   O = λ^{τ+1} Qh S_in                 S_in in two bf16 planes hi + lo (16 bits)
 *   intra   O += (mask_{σ<=τ} λ^{τ-σ} ⊙ A) V    A in two bf16 planes hi + lo, from registers
 *   state   S = λ^{len} S + Khᵀ (w ⊙ V)         w_σ = λ^{len-1-σ}; w v in three bf16 planes (the
 *                                               fp32 product exactly)
 * so the products are exact or carry 16 (O) / 24 (state) bits of their fp32 operands, against
 * TF32's 11 (the walk's 3xTF32 22). Qh and Khᵀ are register A operands (ldmatrix, .trans for
 * Khᵀ); the B operands are 128-byte-swizzled K-major panels of 64 bf16 columns (rows 128 bytes
 * apart, 8-row groups 1024): K (64 rows, d/64 panels, in LF_NS stages with Q and the raw V
 * columns: Q and K are requested two chunks ahead, V one), Vᵀ and (w V)ᵀ (32 rows x 64 σ,
 * staged by ldmatrix.trans + stmatrix) and S_inᵀ (32 rows x d, hi and lo planes,
 * stmatrix.trans from the state accumulators after each chunk). Body compiled for sm_90a
 * only. */
#define LF_JB 32                              /* value columns a CTA */
#define LF_NS 3                               /* stages of Q | K | V rows */
#define LF_PA 8                               /* chunks the prep runs ahead */
template <int D> struct lf_lay {              /* byte offsets from the 1024-aligned base */
    static constexpr int QB = D * 128;        /* Q or K: 64 rows x D bf16, D/64 panels of 8 KB */
    static constexpr int VR = CU_LA_C * LF_JB * 2;   /* raw V rows (64, 32) bf16, unswizzled */
    static constexpr int STG = 2 * QB + VR;   /* one stage: Q | K | V rows */
    static constexpr int PL = LF_JB * 128;    /* a panel of 32 rows */
    static constexpr int VT = LF_NS * STG;    /* Vᵀ (32 j x 64 σ) */
    static constexpr int WV = VT + PL;        /* (w V)ᵀ: 3 planes */
    static constexpr int ST = WV + 3 * PL;    /* S_inᵀ: 2 buffers of hi then lo, D/64 panels */
    static constexpr int RW = CU_LA_C * LF_JB / D;   /* tokens a CTA prepares a chunk */
    static constexpr int RAW = 2 * (D / 64) * RW * 128;   /* their raw q, k panels */
    static constexpr int PIN = RAW + RW * D * 4;   /* + their rotation-table rows */
    static constexpr int PI = ST + 4 * (D / 64) * PL;   /* 2 prep input buffers */
    static constexpr int SIZE = 1024 + PI + 2 * PIN;
    static_assert(STG % 1024 == 0 && PL % 1024 == 0, "panels stay 1024-aligned");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* Byte offset of 16-byte chunk c of row r in a 128-byte-swizzled panel. */
static __device__ __forceinline__ uint32_t lf_sw(int r, int c)
{
    return (uint32_t)(r * 128 + ((c ^ (r & 7)) << 4));
}
/* Keeps the compiler from computing register A fragments after the wgmma fence. */
static __device__ __forceinline__ void lf_keep(uint32_t (&a)[4])
{
    asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3])::"memory");
}
#define LF_ACC16(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
    "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
    "+f"(d[14]), "+f"(d[15])
/* d (+)= A (64 x 16, registers: the m16n8k16 A fragment of each warp's 16 rows) · B (16 x 32,
 * K-major); acc = 0: d = A · B */
static __device__ __forceinline__ void lf_mma32r(float (&d)[16], const uint32_t (&a)[4], uint64_t db,
                                                 int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                 "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
                 : LF_ACC16(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
/* d (+)= A (64 x 16, registers) · B (16 x 64, K-major) */
static __device__ __forceinline__ void lf_mma64r(float (&d)[32], const uint32_t (&a)[4], uint64_t db,
                                                 int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : LF_ACC16(d), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
                   "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),
                   "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
/* Four 8 x 8 b16 matrices from registers to shared rows (lanes 8 m .. 8 m + 7: matrix m's row
 * addresses); T: transposed (the fragment's columns become the stored rows). */
template <bool T>
static __device__ __forceinline__ void lf_stsm(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2,
                                               uint32_t r3)
{
    if (T)
        asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n"
                     ::"r"(addr), "r"(r0), "r"(r1), "r"(r2), "r"(r3) : "memory");
    else
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n"
                     ::"r"(addr), "r"(r0), "r"(r1), "r"(r2), "r"(r3) : "memory");
}
/* The bf16 pair (x0 low, x1 high) of two fp32 values, rounded to nearest; x0, x1 become what
 * the pair leaves of them (exact: the next plane's input). */
static __device__ __forceinline__ uint32_t lf_split(float &x0, float &x1)
{
    const uint32_t h = pack_bf16(x0, x1);
    x0 -= __uint_as_float(h << 16);
    x1 -= __uint_as_float(h & 0xffff0000u);
    return h;
}
static __device__ __forceinline__ void lds_f4(uint32_t addr, float *v)
{
    asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
                 : "r"(addr)
                 : "memory");
}

/* Warpgroup 2 of la_fused_kernel (below), the prep: CTA x of head n makes the RW rows of Qh and
 * Kh of tokens 64 c + x RW .. of every chunk c (per-head RMSNorm and RoPE, rounded to bf16:
 * la_prepk_kernel's arithmetic, the sum of squares in another order), writes them to global
 * memory and counts them in ready[n nch + c]; the head's CTAs then read the whole chunk by TMA.
 * Its inputs (the raw rows by TMA, the rotation-table rows of la_rot_kernel in one bulk copy)
 * arrive on barrier pb + 8 (c & 1) one chunk ahead; chunk c is made during chunk c - LF_PA
 * (before the first chunk barrier for c < LF_PA). Lanes u of D / 16 hold columns 8 u .. and
 * D / 2 + 8 u ..: one 16-byte chunk of a swizzled raw row each. */
template <int D>
static __device__ __forceinline__ void lf_prep(const CUtensorMap *tp, const la_args &a,
                                               const float *cs, int *ready, uint32_t base,
                                               uint32_t fb, int n, int x, int nch)
{
    using L = lf_lay<D>;
    constexpr int LPR = D / 16, RPW = 32 / LPR, H = D / 2, RW = L::RW;
    static_assert(4 * RPW == RW, "one row a lane group of the prep warpgroup");
    const int pt = threadIdx.x - 256, lane = pt & 31, pw = pt >> 5;
    const int u = lane % LPR, r = pw * RPW + lane / LPR, nd = a.nh * D;
    const uint32_t pb = fb + 8 * LF_NS;   /* the input buffers' barriers */
    asm volatile("setmaxnreg.dec.sync.aligned.u32 136;\n");   /* 136 x 128 + 184 x 256 */
    float wt[2][2][8];   /* [q, k][half][i]: q_norm, k_norm at column h H + 8 u + i */
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int i = 0; i < 8; i++) {
            wt[0][h][i] = a.qn[h * H + 8 * u + i];
            wt[1][h][i] = a.kn[h * H + 8 * u + i];
        }
    auto input = [&](int c) {   /* thread 0 of the warpgroup */
        const uint32_t ib = base + L::PI + (c & 1) * L::PIN, bar = pb + 8 * (c & 1);
        const int row = c * CU_LA_C + x * RW;
        mbar_arrive_tx(bar, L::PIN);
#pragma unroll
        for (int p = 0; p < D / 64; p++) {
            tma_load_2d(ib + p * RW * 128, tp, n * D + 64 * p, row, bar);
            tma_load_2d(ib + (D / 64 + p) * RW * 128, tp, nd + n * D + 64 * p, row, bar);
        }
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
                     "[%0], [%1], %2, [%3];\n" ::"r"(ib + L::RAW),
                     "l"(cs + (size_t)row * D), "r"(RW * D * 4), "r"(bar)
                     : "memory");
    };
    auto prep = [&](int c) {
        const uint32_t ib = base + L::PI + (c & 1) * L::PIN, tr = ib + L::RAW + r * D * 4;
        mbar_wait(pb + 8 * (c & 1), (c >> 1) & 1);
        float cv[8], sv[8];
        lds_f4(tr + (u << 4), cv);
        lds_f4(tr + ((LPR + u) << 4), cv + 4);
        lds_f4(tr + H * 4 + (u << 4), sv);
        lds_f4(tr + H * 4 + ((LPR + u) << 4), sv + 4);
        const size_t orow = ((size_t)n * a.Tp + c * CU_LA_C + x * RW + r) * D;
#pragma unroll
        for (int xx = 0; xx < 2; xx++) {   /* q, then k */
            const int cl = 8 * u, ch = H + 8 * u;
            const uint32_t px = ib + xx * (D / 64) * RW * 128;
            uint32_t vl[4], vh[4];
            lds_u4(px + (cl >> 6) * RW * 128 + lf_sw(r, (cl & 63) >> 3), vl);
            lds_u4(px + (ch >> 6) * RW * 128 + lf_sw(r, (ch & 63) >> 3), vh);
            float lo[8], hi[8], sq[8];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                lo[2 * k] = __uint_as_float(vl[k] << 16);
                lo[2 * k + 1] = __uint_as_float(vl[k] & 0xffff0000u);
                hi[2 * k] = __uint_as_float(vh[k] << 16);
                hi[2 * k + 1] = __uint_as_float(vh[k] & 0xffff0000u);
            }
#pragma unroll
            for (int i = 0; i < 8; i++) sq[i] = lo[i] * lo[i] + hi[i] * hi[i];
            float ss = ((sq[0] + sq[1]) + (sq[2] + sq[3])) + ((sq[4] + sq[5]) + (sq[6] + sq[7]));
#pragma unroll
            for (int m = LPR / 2; m > 0; m >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, m);
            const float inv = 1.0f / sqrtf(ss / (float)D + a.eps);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float o[2][2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int i = 2 * k + e;
                    const float l = lo[i] * inv * wt[xx][0][i], h = hi[i] * inv * wt[xx][1][i];
                    o[0][e] = l * cv[i] + h * -sv[i];
                    o[1][e] = h * cv[i] + l * sv[i];
                }
                vl[k] = pack_bf16(o[0][0], o[0][1]);
                vh[k] = pack_bf16(o[1][0], o[1][1]);
            }
            bf16 *og = (bf16 *)(xx ? a.Kh : a.Qh) + orow;
            *(uint4 *)(og + cl) = make_uint4(vl[0], vl[1], vl[2], vl[3]);
            *(uint4 *)(og + ch) = make_uint4(vh[0], vh[1], vh[2], vh[3]);
        }
        asm volatile("bar.sync 2, 128;\n" ::: "memory");   /* rows written, buffer read */
        if (pt == 0) {
            __threadfence();
            atomicAdd(ready + (size_t)n * nch + c, 1);
        }
    };
    __syncthreads();   /* the kernel's first CTA barrier: the mbarriers initialized */
    if (pt == 0) {
        input(0);
        if (nch > 1) input(1);
    }
    for (int c = 0; c < LF_PA && c < nch; c++) {
        prep(c);
        if (pt == 0 && c + 2 <= LF_PA && c + 2 < nch) input(c + 2);   /* later: the loop's */
    }
    for (int c = 0; c < nch; c++) {
        __syncthreads();   /* the consumers' chunk barrier */
        if (pt == 0 && c + LF_PA + 1 < nch) input(c + LF_PA + 1);
        if (c + LF_PA < nch) prep(c + LF_PA);
    }
}
#endif

/* grid (D / LF_JB, nh), 384 threads, all CTAs resident at once (a cooperative launch: a CTA
 * waits for rows its head's other CTAs prepare): three warpgroups that meet once a chunk (one
 * CTA barrier, after which chunk c's tiles are in shared memory, chunk c + 2's Q and K (warp
 * 0, once ready counts them) and chunk c + 1's V are requested).
 *   warpgroup 2, the prep (lf_prep): its share of chunk c + LF_PA's Qh and Kh rows;
 *   warpgroup 0, the output: Qh's A fragments by ldmatrix; O = λ^{τ+1} Qh S_in (the S_inᵀ
 *     planes of buffer (c + 1) & 1) and the scores issued, the scores masked, decayed and
 *     split, then (once warpgroup 1 has staged Vᵀ: named barrier 3) O += A V, O stored;
 *   warpgroup 1, the state: Vᵀ and (w V)ᵀ staged (ldmatrix.trans of the raw rows, stmatrix),
 *     Khᵀ's A fragments by ldmatrix.trans, S = λ^{len} S + Khᵀ (w V), the S_inᵀ planes of the
 *     new state into buffer c & 1 by stmatrix.trans (read by warpgroup 0 in chunk c + 1).
 * Warp w of a warpgroup holds rows 16 w + g (+8) of every m64 accumulator: the state
 * s[m][4 q + 2 h + e] = S[i = 64 m + 16 w + g + 8 h][j0 + 8 q + 2 t + e]. The raw V rows (64
 * bytes) keep 16-byte chunk c of row r at c ^ ((r >> 1) & 3): ldmatrix rows conflict-free. */
template <int D>
static __global__ void __launch_bounds__(384, 1)
    la_fused_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tp, la_args a, const float *cs,
                    int *ready)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using L = lf_lay<D>;
    constexpr int MT = D / 64, KS = D / 16;
    extern __shared__ __align__(1024) uint8_t lf_raw[];
    __shared__ float dn[CU_LA_C + 1];   /* λ^e */
    __shared__ __align__(8) uint64_t full[LF_NS + 2];   /* Q, K of stage s landed (TMA); the
                                                           prep's 2 input buffers */
    const uint32_t base = (smem_u32(lf_raw) + 1023) & ~1023u, fb = smem_u32(full);
    const int n = blockIdx.y, j0 = blockIdx.x * LF_JB, nch = a.Tp / CU_LA_C;
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, w = (tid >> 5) & 3;
    const int g = lane >> 2, t = lane & 3, lm = lane >> 3, lr = lane & 7;
    if (tid <= CU_LA_C) dn[tid] = a.dec[n * (CU_LA_C + 1) + tid];
    if (tid == 0) {
        for (int q = 0; q < LF_NS + 2; q++) mbar_init(fb + 8 * q, 1);
        mbar_init_fence();
    }
    const bf16 *Vg = a.proj16 + 2 * (size_t)a.nh * D + (size_t)n * D + j0;
    /* the V columns of chunk c -> stage c % LF_NS by warpgroup 0's cp.async (rows past the
     * call zero-filled; read by warpgroup 1's ldmatrix only, so no proxy fence) */
    auto load_v = [&](int c) {
        const int t0 = c * CU_LA_C, len = a.T - t0 < CU_LA_C ? a.T - t0 : CU_LA_C;
        const uint32_t vr = base + (c % LF_NS) * L::STG + 2 * L::QB;
#pragma unroll
        for (int k = 0; k < 2; k++) {   /* 64 rows x 4 chunks */
            const int idx = tid + 128 * k, r = idx >> 2, c16 = idx & 3;
            const bool ok = r < len;
            cp_async16(vr + r * (LF_JB * 2) + ((c16 ^ ((r >> 1) & 3)) << 4),
                       Vg + (size_t)(t0 + (ok ? r : 0)) * a.ld + 8 * c16, ok);
        }
        cp_async_commit();
    };
    if (wg == 2) {
        lf_prep<D>(&tp, a, cs, ready, base, fb, n, blockIdx.x, nch);
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 184;\n");
    /* Q and K of chunk c by TMA into stage c % LF_NS (warp 0, two chunks ahead), once the
     * head's D / LF_JB CTAs have counted their rows of it in ready[n nch + c] (the prep runs
     * LF_PA chunks ahead: the warp reads 32 counts at once and keeps how far they are
     * complete, so that a wait reads global memory once in several chunks) */
    int known = 0;
    auto load_qk = [&](int c) {
        while (known <= c) {
            const int i = known + lane;
            const bool ok = i >= nch || ld_acquire_gpu(ready + (size_t)n * nch + i) >= D / LF_JB;
            const unsigned m = __ballot_sync(0xffffffffu, ok);
            known += m == 0xffffffffu ? 32 : __ffs(~m) - 1;
            if (known <= c) __nanosleep(128);
        }
        __syncwarp();   /* the lanes' acquire loads before lane 0's proxy fence */
        if (lane) return;
        asm volatile("fence.proxy.async.global;\n" ::: "memory");
        const uint32_t sq = base + (c % LF_NS) * L::STG, bar = fb + 8 * (c % LF_NS);
        mbar_arrive_tx(bar, 2 * L::QB);
#pragma unroll
        for (int p = 0; p < D / 64; p++) {
            tma_load_2d(sq + p * 8192, &tq, 64 * p, n * a.Tp + c * CU_LA_C, bar);
            tma_load_2d(sq + L::QB + p * 8192, &tk, 64 * p, n * a.Tp + c * CU_LA_C, bar);
        }
    };
    static_assert(CU_LA_C * (LF_JB / 8) == 256, "two V chunks a thread of warpgroup 0");
    float s[MT][16];   /* warpgroup 1 */
    /* the layer state's element under accumulator x of m tile m (x even: x + 1 beside it) */
    auto sg_at = [&](int m, int x) {
        return a.S + (size_t)n * D * D + (size_t)(64 * m + 16 * w + g + 8 * ((x >> 1) & 1)) * D +
               j0 + 8 * (x >> 2) + 2 * t;
    };
    /* S_inᵀ planes (row j, column i) of buffer q from the state accumulators: per m tile,
     * plane and row half h, one stmatrix.trans of the 4 column blocks (matrix lm: rows j = 8 lm
     * + lr, the 8 columns i = 64 m + 16 w + 8 h ..) */
    auto put_state = [&](int q) {
        const uint32_t st = base + L::ST + q * 2 * MT * L::PL;
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                uint32_t hi[4], lo[4];
#pragma unroll
                for (int qq = 0; qq < 4; qq++) {
                    float x0 = s[m][4 * qq + 2 * h], x1 = s[m][4 * qq + 2 * h + 1];
                    hi[qq] = lf_split(x0, x1);
                    lo[qq] = pack_bf16(x0, x1);
                }
                const uint32_t ad = st + m * L::PL + lf_sw(8 * lm + lr, 2 * w + h);
                lf_stsm<true>(ad, hi[0], hi[1], hi[2], hi[3]);
                lf_stsm<true>(ad + MT * L::PL, lo[0], lo[1], lo[2], lo[3]);
            }
        proxy_fence();
    };
    if (wg == 1) {
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int x = 0; x < 16; x += 2) {
                const float2 v = *(const float2 *)sg_at(m, x);
                s[m][x] = v.x, s[m][x + 1] = v.y;
            }
        put_state(1);   /* the state before chunk 0: buffer (0 + 1) & 1 */
    }
    __syncthreads();   /* the barriers initialized, dn written */
    if (tid < 32) {
        load_qk(0);
        if (nch > 1) load_qk(1);
    }
    if (wg == 0) load_v(0);
    const uint64_t dvt = wg_desc(base + L::VT);
    float dec[32];     /* warpgroup 0: the mask and λ^{τ-σ} of its score accumulators, */
    float f0 = 0.0f, f1 = 0.0f;   /* and λ^{τ+1} of its two rows */
    float wv[2][4][2]; /* warpgroup 1: w_σ of a full chunk for its σ pairs */
    if (wg == 0) {
        f0 = dn[16 * w + g + 1], f1 = dn[16 * w + g + 9];
#pragma unroll
        for (int x = 0; x < 32; x++) {
            const int tau = 16 * w + g + 8 * ((x >> 1) & 1), sg = 8 * (x >> 2) + 2 * t + (x & 1);
            dec[x] = sg <= tau ? dn[tau - sg] : 0.0f;
        }
    } else {
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
#pragma unroll
            for (int mi = 0; mi < 4; mi++) {
                const int s0 = 8 * (4 * hh + mi) + 2 * t;
                wv[hh][mi][0] = dn[CU_LA_C - 1 - s0], wv[hh][mi][1] = dn[CU_LA_C - 2 - s0];
            }
    }
    for (int c = 0; c < nch; c++) {
        const int b = c & 1, t0 = c * CU_LA_C, len = a.T - t0 < CU_LA_C ? a.T - t0 : CU_LA_C;
        if (wg == 0) cp_async_wait<0>();
        __syncthreads();   /* chunk c's V rows landed; chunk c - 1 done by both warpgroups
                              (stage (c + 2) % LF_NS, Vᵀ, (w V)ᵀ and buffer (c + 1) & 1's
                              readers); dn */
        if (tid < 32 && c + 2 < nch) load_qk(c + 2);
        if (wg == 0 && c + 1 < nch) load_v(c + 1);
        mbar_wait(fb + 8 * (c % LF_NS), (c / LF_NS) & 1);   /* chunk c's Q and K */
        const uint32_t sq = base + (c % LF_NS) * L::STG, sk = sq + L::QB, vr = sq + 2 * L::QB;
        if (wg == 1) {
            const float lam = dn[len];
            /* Vᵀ and the three planes of (w V)ᵀ: warp w the columns j 8 w .. 8 w + 7, two
             * ldmatrix.trans of 4 blocks of 8 σ each (block 4 hh + lm) */
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                uint32_t v[4];
                const int sr = 8 * (4 * hh + lm) + lr;   /* this lane's source row σ */
                ldsm_x4_t(v, vr + sr * (LF_JB * 2) + ((w ^ ((sr >> 1) & 3)) << 4));
                uint32_t pw[3][4];
#pragma unroll
                for (int mi = 0; mi < 4; mi++) {   /* v[mi]: σ 8 (4 hh + mi) + 2 t, +1; j 8 w + g */
                    const int s0 = 8 * (4 * hh + mi) + 2 * t;
                    float w0 = wv[hh][mi][0], w1 = wv[hh][mi][1];
                    if (len < CU_LA_C) {   /* the call's last, partial chunk */
                        w0 = s0 < len ? dn[len - 1 - s0] : 0.0f;
                        w1 = s0 + 1 < len ? dn[len - 2 - s0] : 0.0f;
                    }
                    float x0 = w0 * __uint_as_float(v[mi] << 16);
                    float x1 = w1 * __uint_as_float(v[mi] & 0xffff0000u);
#pragma unroll
                    for (int p = 0; p < 3; p++) pw[p][mi] = lf_split(x0, x1);
                }
                const uint32_t ad = lf_sw(8 * w + lr, 4 * hh + lm);   /* rows j, chunk = σ block */
                lf_stsm<false>(base + L::VT + ad, v[0], v[1], v[2], v[3]);
#pragma unroll
                for (int p = 0; p < 3; p++)
                    lf_stsm<false>(base + L::WV + p * L::PL + ad, pw[p][0], pw[p][1], pw[p][2],
                                   pw[p][3]);
            }
            proxy_fence();
            asm volatile("bar.arrive 3, 256;\n" ::: "memory");   /* Vᵀ -> warpgroup 0 */
            /* Khᵀ A fragments: (m tile, k step kk) from the σ rows 16 kk .. of panel m */
            uint32_t ka[MT][4][4];
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int kk = 0; kk < 4; kk++)
                    ldsm_x4_t(ka[m][kk], sk + m * 8192 +
                                             lf_sw(16 * kk + lr + 8 * (lm >> 1), 2 * w + (lm & 1)));
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int kk = 0; kk < 4; kk++) lf_keep(ka[m][kk]);
            asm volatile("bar.sync 1, 128;\n" ::: "memory");     /* (w V)ᵀ complete */
#pragma unroll
            for (int m = 0; m < MT; m++) {
#pragma unroll
                for (int x = 0; x < 16; x++) s[m][x] *= lam;
                wg_keep(s[m]);   /* scaled before the fence */
            }
            const uint64_t dw = wg_desc(base + L::WV);
            wg_fence();
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int p = 0; p < 3; p++)
#pragma unroll
                    for (int kk = 0; kk < 4; kk++)
                        lf_mma32r(s[m], ka[m][kk], dw + ((p * L::PL + kk * 32) >> 4), 1);
            wg_commit();
            wg_wait<0>();
#pragma unroll
            for (int m = 0; m < MT; m++) wg_keep(s[m]);
            put_state(b);
            continue;
        }
        /* warpgroup 0 */
        /* Qh A fragments, k step ks: rows 16 w + lr (+8: lm odd), k chunk 2 (ks % 4) + lm / 2 */
        uint32_t qa[KS][4];
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
            ldsm_x4(qa[ks], sq + (ks >> 2) * 8192 +
                                lf_sw(16 * w + lr + 8 * (lm & 1), 2 * (ks & 3) + (lm >> 1)));
        float sc[32], o[16];
        const uint64_t dk = wg_desc(sk);
        const uint64_t ds = wg_desc(base + L::ST + (b ^ 1) * 2 * MT * L::PL);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
            lf_mma64r(sc, qa[ks], dk + (((ks >> 2) * 8192 + (ks & 3) * 32) >> 4), ks);
        wg_commit();
#pragma unroll
        for (int p = 0; p < 2; p++)
#pragma unroll
            for (int ks = 0; ks < KS; ks++)
                lf_mma32r(o, qa[ks],
                          ds + ((p * MT * L::PL + (ks >> 2) * L::PL + (ks & 3) * 32) >> 4),
                          p | ks);
        wg_commit();
        wg_wait<1>();      /* scores */
        wg_keep(sc);
        uint32_t ph[4][4], pl[4][4];
#pragma unroll
        for (int x = 0; x < 32; x += 2) {
            /* accumulator pair x -> A fragment (k step x / 8, register (x % 8) / 2) */
            float v0 = sc[x] * dec[x], v1 = sc[x + 1] * dec[x + 1];
            ph[x >> 3][(x & 7) >> 1] = lf_split(v0, v1);
            pl[x >> 3][(x & 7) >> 1] = pack_bf16(v0, v1);
        }
        wg_wait<0>();      /* the inter product */
        wg_keep(o);
#pragma unroll
        for (int x = 0; x < 16; x++) o[x] *= (x & 2) ? f1 : f0;
        wg_keep(o);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) lf_keep(ph[kk]), lf_keep(pl[kk]);
        asm volatile("bar.sync 3, 256;\n" ::: "memory");   /* Vᵀ staged by warpgroup 1 */
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < CU_LA_C / 16; kk++) {
            lf_mma32r(o, ph[kk], dvt + ((kk * 32) >> 4), 1);
            lf_mma32r(o, pl[kk], dvt + ((kk * 32) >> 4), 1);
        }
        wg_commit();
        wg_wait<0>();
        wg_keep(o);
        bf16 *Og = (bf16 *)a.Oh + ((size_t)n * a.Tp + t0) * D + j0;   /* bf16(scale O) */
#pragma unroll
        for (int x = 0; x < 16; x += 2) {
            const int tau = 16 * w + g + 8 * ((x >> 1) & 1), j = 8 * (x >> 2) + 2 * t;
            *(uint32_t *)(Og + (size_t)tau * D + j) = pack_bf16(a.scale * o[x], a.scale * o[x + 1]);
        }
    }
    if (wg == 1)
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int x = 0; x < 16; x += 2)
                *(float2 *)sg_at(m, x) = make_float2(s[m][x], s[m][x + 1]);
#endif
}

/* Pass 1 tiling: 64 x 64 blocks of 32 x 32 warp tiles, d/64 x d/64 x nh CTAs (32 x 32 blocks of
 * 16 x 16 warp tiles, 4x the CTAs and twice the operand splits per product, measured 4% slower
 * overall at 128K: docs/BENCHMARKS.md run L3). */
#define LA_STATE64 64, 64, 32, 32

/* The dynamic shared memory of each instance (P = float and bf16). */
template <typename P> static cudaError_t la_setup_p(void)
{
    cudaError_t err = cudaFuncSetAttribute(la_chunk_kernel<64, P>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)la_chunk_smem<64>());
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(la_chunk_kernel<128, P>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)la_chunk_smem<128>());
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(la_state_kernel<LA_STATE64, P>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)la_state_smem<64, 64, P>());
    return err;
}

static cudaError_t la_setup(void)
{
    const cudaError_t err = la_setup_p<float>();
    return err == cudaSuccess ? la_setup_p<bf16>() : err;
}

/* State-walk CTAs the device holds at once: SMs x resident la_state_kernel CTAs per SM. */
template <typename P> static int la_state_slots(void)
{
    int per = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, la_state_kernel<LA_STATE64, P>, 128,
                                                      la_state_smem<64, 64, P>()) != cudaSuccess)
        return 0;
    return cu_sms() * per;
}

/* Chunks per range of the state walk: the R = ceil(nch / cr) ranges run in parallel (their
 * start states fixed up afterwards), R = the number of whole waves of (head, 64x64 block) CTAs
 * that fit the device at once (of the walk instance that runs: bf16 V stages are smaller), at
 * most nch and what Ab holds (R d² <= nch C²); SALA_CUDA_LA_RANGES=R (read at each call)
 * overrides, 1 = the single walk of the fourth version. */
template <typename P> static int la_range_chunks(const la_args *a)
{
    static const int slots = la_state_slots<P>();   /* once per process (one device) */
    const int nch = a->Tp / CU_LA_C, base = a->nh * (a->d / 64) * (a->d / 64);
    const char *v = getenv("SALA_CUDA_LA_RANGES");
    long R = v && *v ? atol(v) : slots / base;
    const long cap = (long)nch * CU_LA_C * CU_LA_C / ((long)a->d * a->d);
    if (R > cap) R = cap;
    if (R > nch) R = nch;
    if (R > LA_RMAX) R = LA_RMAX;
    if (R < 1) R = 1;
    return (int)((nch + R - 1) / R);
}

/* The tensor-core pass pair (d == 64 or 128), with the range fix-up between them; Q from proj
 * (or proj16, P = bf16) and the rotation table cs when cs != NULL, else from Qh (P = float). */
template <typename P> static cudaError_t la_tc(cudaStream_t st, const la_args *a, const float *cs)
{
    static const cudaError_t ready = la_setup();   /* once per process (one device) */
    if (ready != cudaSuccess) return ready;
    const int nch = a->Tp / CU_LA_C, cr = la_range_chunks<P>(a), R = (nch + cr - 1) / cr;
    la_state_kernel<LA_STATE64, P><<<dim3(a->d / 64, a->d / 64, a->nh * R), 128,
                                     la_state_smem<64, 64, P>(), st>>>(*a, cr);
    if (R > 1) la_combine_kernel<<<dim3((a->d * a->d + 255) / 256, a->nh), 256, 0, st>>>(*a, cr);
    const dim3 grid(nch, a->nh);
    if (a->d == 128)
        la_chunk_kernel<128, P><<<grid, 128, la_chunk_smem<128>(), st>>>(*a, cr, cs);
    else
        la_chunk_kernel<64, P><<<grid, 128, la_chunk_smem<64>(), st>>>(*a, cr, cs);
    return cudaGetLastError();
}

/* The cuBLAS products (after the full prep); compute CUBLAS_COMPUTE_32F or _TF32. */
static int la_blas(cublasHandle_t h, cudaStream_t st, const la_args *a, cublasComputeType_t ct,
                   sala_err *e)
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

bool cu_la_proj16(int d)
{
    return (d == 64 || d == 128) && !getenv("SALA_CUDA_LA_BLAS") &&
           !cu_env_is("SALA_CUDA_LA_PREP", "old");
}

bool cu_la_fused(int d)
{
    return cu_la_proj16(d) && cu_sm90a() && cu_tmap_ready() &&
           !cu_env_is("SALA_CUDA_LA_FUSED", "0");
}

/* The rotation table cs (Tp, D) of rows t: cos then sin of (p0 + t) inv_freq[j], j < D / 2
 * (la_prepk_kernel's angles; zero past T), float4 2 u + h of each half stored at h D / 16 + u
 * (lf_prep's lanes read it without bank conflicts). */
template <int D> static __global__ void la_rot_kernel(la_args a, float *cs)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int t = (int)(i / (D / 2)), j = (int)(i % (D / 2));
    if (t >= a.Tp) return;
    float sv = 0.0f, cv = 0.0f;
    if (t < a.T) sincosf((float)(a.p0 + t) * a.inv_freq[j], &sv, &cv);
    const int q = j / 4, at = ((q & 1) * (D / 16) + (q >> 1)) * 4 + j % 4;
    cs[(size_t)t * D + at] = cv, cs[(size_t)t * D + D / 2 + at] = sv;
}

/* Whether nh heads of size D fit the fused kernel's cooperative grid (all CTAs resident). */
template <int D> static bool lf_fits(int nh)
{
    static const int slots = [] {   /* once per process (one device) */
        int per = 0;
        if (cudaFuncSetAttribute(la_fused_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 lf_lay<D>::SIZE) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, la_fused_kernel<D>, 384,
                                                          lf_lay<D>::SIZE) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        return cu_sms() * per;
    }();
    return (int64_t)nh * (D / LF_JB) <= slots;
}

/* The fused form: la_rot_kernel (the table in cs), the counts zeroed, then la_fused_kernel
 * (cooperative: its prep warpgroups share each head's rows). */
template <int D> static cudaError_t la_fused(cudaStream_t st, const la_args *t, float *cs,
                                             int *ready)
{
    CUtensorMap tq, tk, tp;   /* Qh, Kh as (nh Tp, D) bf16: boxes of 64 rows x 64 columns; */
    if (!cu_tmap_2d(&tq, (const bf16 *)t->Qh, (int64_t)t->nh * t->Tp, D, 64, 64) ||
        !cu_tmap_2d(&tk, (const bf16 *)t->Kh, (int64_t)t->nh * t->Tp, D, 64, 64) ||
        /* q|k|v|z (T, ld) bf16: boxes of a CTA's RW rows x 64 columns, zero past T */
        !cu_tmap_2d(&tp, t->proj16, t->T, t->ld, lf_lay<D>::RW, 64))
        return cudaErrorInvalidValue;
    const int64_t nr = (int64_t)t->Tp * (D / 2);
    la_rot_kernel<D><<<(unsigned)((nr + 255) / 256), 256, 0, st>>>(*t, cs);
    const size_t nready = (size_t)t->nh * (t->Tp / CU_LA_C);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemsetAsync(ready, 0, nready * sizeof(int), st);
    if (err != cudaSuccess) return err;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    return cu_launch_ex(at, 1, dim3(D / LF_JB, t->nh), dim3(384), lf_lay<D>::SIZE, st,
                        la_fused_kernel<D>, tq, tk, tp, *t, (const float *)cs, ready);
}

/* The tensor-core prefill with its own prep (la_prepk_kernel: Kh and the rotation table). */
template <typename P> static cudaError_t la_tc_prepk(cudaStream_t st, const la_args *a)
{
    float *cs = a->Qd;   /* (Tp, d) rotation table in the cuBLAS path's Qd scratch */
    la_args t = *a;
    t.Qd = t.Kw = t.Vh = NULL;
    if (a->o16)   /* cu_lightning_prefill chose the fused form */
        return a->d == 128 ? la_fused<128>(st, &t, cs, (int *)a->Kw)
                           : la_fused<64>(st, &t, cs, (int *)a->Kw);
    if (a->d == 128)
        la_prepk_kernel<128, P><<<a->Tp, 256, 0, st>>>(t, cs);
    else
        la_prepk_kernel<64, P><<<a->Tp, 256, 0, st>>>(t, cs);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? la_tc<P>(st, &t, cs) : err;
}

int cu_lightning_prefill(cublasHandle_t h, cudaStream_t st, la_args *a,
                         cublasComputeType_t ct, sala_err *e)
{
    a->o16 = a->proj16 && cu_la_fused(a->d) &&
             (a->d == 128 ? lf_fits<128>(a->nh) : lf_fits<64>(a->nh));
    if (a->proj16) {
        if (!cu_la_proj16(a->d))
            return sala_errf(e, SALA_EINVAL, "lightning prefill: bf16 q|k|v|z with head size %d "
                             "or SALA_CUDA_LA_BLAS / SALA_CUDA_LA_PREP=old (see cu_la_proj16)",
                             a->d);
        CUDA_CHECK(la_tc_prepk<bf16>(st, a));
        return SALA_OK;
    }
    if ((a->d == 64 || a->d == 128) && !getenv("SALA_CUDA_LA_BLAS")) {
        const char *pv = getenv("SALA_CUDA_LA_PREP");
        if (pv && !strcmp(pv, "old")) {   /* the fourth version: prep writes Qh and Kh */
            la_args t = *a;
            t.Qd = t.Kw = t.Vh = NULL;
            CUDA_CHECK(k_la_prep(st, &t));
            CUDA_CHECK(la_tc<float>(st, &t, NULL));
            return SALA_OK;
        }
        CUDA_CHECK(la_tc_prepk<float>(st, a));
        return SALA_OK;
    }
    CUDA_CHECK(k_la_prep(st, a));
    return la_blas(h, st, a, ct, e);
}
