/* cu_infllm.cu: InfLLM-V2 block selection on the GPU (SALA-SPEC §3.6 steps 2-4; twin:
 * engine/cpu/infllm.c infllm_select). Compression (step 1) is in cu_kernels.cu, the block-sparse
 * attention (step 5) in cu_attn.cu.
 *
 * k_score: a CTA takes 64 rows = (64/G queries) x (the G q heads of kv group g).
 *   pass 1: lse_n = log Σ_c exp(scale q_n·K2_c) over the K2 windows wholly at or before p
 *           (online max/sum over tiles of 64 windows, scores on the tensor cores);
 *   pass 2: per query and K1 window i (wholly at or before p): P_i = Σ_{n in g} exp(scale q_n·K1_i
 *           - lse_n) (0 when no K2 window exists yet, NaN -> 0), then the max-pool of windows
 *           [r b - 1, r b + r - 1] onto block b (the window before a tile is carried), written for
 *           blocks b <= qb. Windows not complete at p are left out of the pool.
 * k_topk: a CTA per (query, group): forced +inf for b < init_blocks and qb - local <= b <= qb,
 *   then every block above the K-th largest score plus the lowest ids equal to it (lower block id
 *   wins ties), written ascending, -1 padded. Three kernels pick that set: topk_warp_kernel (a
 *   warp per row: threshold from per-lane maxima, radix select among the candidates; prefill),
 *   topk_kernel (radix select of the K-th key on order-preserving keys) and topk_filter_kernel
 *   (threshold from per-thread maxima, exact rank among the candidates; decode).
 * fp32 sums (the CPU twin sums in double), so exact ties and near-ties may order differently. */
#include "engine/cuda/cu_mma.cuh"
#include "engine/cuda/cu_wmma.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Merge a row's running (max m, sum l) of exp2 terms across the lanes lane ^ LO .. lane ^ HI
 * (LO, 2 LO, .., HI): <1, 2> an mma quad, <4, 16> the 8 lane groups of a quad position. */
template <int LO, int HI> static __device__ __forceinline__ void merge_ml(float &m, float &l)
{
#pragma unroll
    for (int o = LO; o <= HI; o <<= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, o);
        const float lo = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, mo);
        l = mn == -INFINITY ? 0.0f : l * exp2f(m - mn) + lo * exp2f(mo - mn);
        m = mn;
    }
}
/* The merged row's lse (log2 domain), -inf for an empty row. */
template <int LO, int HI> static __device__ __forceinline__ float merged_lse(float m, float l)
{
    merge_ml<LO, HI>(m, l);
    return l > 0.0f ? m + log2f(l) : -INFINITY;
}
/* A split range's merged (max, sum) of a row into its partial slot pp (pp[0], pp[128]), written
 * by one lane (writer) of the merged ones. */
template <int LO, int HI>
static __device__ __forceinline__ void merged_store(float m, float l, bool writer, float *pp)
{
    merge_ml<LO, HI>(m, l);
    if (writer) {
        pp[0] = m;
        pp[128] = l;
    }
}

/* Max-pool of n consecutive window scores onto one block (SALA-SPEC §3.6 step 3). */
static __device__ __forceinline__ float pool_max(const float *v, int n)
{
    float m = -INFINITY;
    for (int k = 0; k < n; k++) m = fmaxf(m, v[k]);
    return m;
}

static __device__ __forceinline__ int64_t nwin(int64_t L, int k, int s)
{
    return L < k ? 0 : (L - k) / s + 1;
}

static size_t score_smem(int d)
{
    const int R = 64;
    return (size_t)R * d * 2 + (size_t)CU_KT * d * 2 + (size_t)R * CU_KT * 4 + (size_t)2 * R * 4 +
           (size_t)R * (CU_KT + 1) * 4;
}

static __global__ void __launch_bounds__(128) score_kernel(score_args a, int qt)
{
    extern __shared__ __align__(128) unsigned char smraw[];
    const int R = 64, d = a.d, G = a.nh / a.nkv, g = blockIdx.y;
    bf16 *Qs = (bf16 *)smraw, *Ks = Qs + R * d;
    float *S = (float *)(Ks + CU_KT * d);
    float *mrow = S + R * CU_KT, *lrow = mrow + R;
    float *Pw = lrow + R;                                   /* (qt, 65): carry | 64 windows */
    const int k2 = 4 * a.k1, s2 = 4 * a.s1, r = a.block / a.s1;
    const int tq0 = a.t0 + blockIdx.x * qt, tend = a.t0 + a.n;
    const int nq = tend - tq0 < qt ? tend - tq0 : qt;
    const int64_t pmax = a.p0 + tq0 + nq - 1;
    const size_t krow = (size_t)a.nkv * d;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;

    for (int idx = threadIdx.x; idx < R * d; idx += blockDim.x) {
        const int rr = idx / d, i = idx % d, qi = rr / G, h = rr % G;
        bf16 v = __float2bfloat16(0.0f);
        if (qi < nq) v = a.Q[((size_t)(tq0 + qi) * a.nh + g * G + h) * d + i];
        Qs[idx] = v;
    }
    for (int rr = threadIdx.x; rr < R; rr += blockDim.x) {
        mrow[rr] = -INFINITY;
        lrow[rr] = 0.0f;
    }
    /* pass 1: lse over K2 */
    int64_t v2max = nwin(pmax + 1, k2, s2);
    if (v2max > a.n2) v2max = a.n2;
    for (int64_t c0 = 0; c0 < v2max; c0 += CU_KT) {
        __syncthreads();
        const int nk = (int)(v2max - c0 < CU_KT ? v2max - c0 : CU_KT);
        load_rows(Ks, a.K2 + c0 * krow + (size_t)g * d, krow, nk, d);
        __syncthreads();
        tile_qk(Qs, Ks, S, 4, d);
        __syncthreads();
        for (int rr = w; rr < R; rr += 4) {
            const int qi = rr / G;
            if (qi >= nq) continue;
            const int64_t v2 = nwin(a.p0 + tq0 + qi + 1, k2, s2);
            float x0 = S[rr * CU_KT + lane] * a.scale, x1 = S[rr * CU_KT + lane + 32] * a.scale;
            if (c0 + lane >= v2) x0 = -INFINITY;
            if (c0 + lane + 32 >= v2) x1 = -INFINITY;
            float mx = fmaxf(x0, x1);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mo = mrow[rr], mn = fmaxf(mo, mx);
            if (mn == -INFINITY) continue;                  /* warp-uniform */
            float sum = expf(x0 - mn) + expf(x1 - mn);
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            if (lane == 0) {
                lrow[rr] = lrow[rr] * expf(mo - mn) + sum;
                mrow[rr] = mn;
            }
        }
    }
    __syncthreads();
    for (int rr = threadIdx.x; rr < R; rr += blockDim.x)
        mrow[rr] = lrow[rr] > 0.0f ? mrow[rr] + logf(lrow[rr]) : -INFINITY;   /* lse */
    for (int qi = threadIdx.x; qi < qt; qi += blockDim.x) Pw[qi * (CU_KT + 1)] = -INFINITY;
    /* pass 2: P over K1 tiles covering every block <= qb, pooled onto blocks */
    int64_t v1max = nwin(pmax + 1, a.k1, a.s1);
    if (v1max > a.n1) v1max = a.n1;
    const int64_t qbmax = pmax / a.block;
    const int64_t nwneed = (qbmax + 1) * r;
    const int bpt = CU_KT / r;                              /* blocks per tile */
    for (int64_t i0 = 0; i0 < nwneed; i0 += CU_KT) {
        __syncthreads();
        const int64_t left = v1max - i0;
        const int nk = (int)(left <= 0 ? 0 : (left < CU_KT ? left : CU_KT));
        load_rows(Ks, a.K1 + i0 * krow + (size_t)g * d, krow, nk, d);
        __syncthreads();
        if (nk > 0) tile_qk(Qs, Ks, S, 4, d);
        __syncthreads();
        for (int idx = threadIdx.x; idx < qt * CU_KT; idx += blockDim.x) {
            const int qi = idx / CU_KT, c = idx % CU_KT;
            if (qi >= nq) continue;
            const int64_t p = a.p0 + tq0 + qi, i = i0 + c;
            float val;
            if (i >= nwin(p + 1, a.k1, a.s1) || i >= a.n1) {
                val = -INFINITY;                            /* not complete at p: not pooled */
            } else if (nwin(p + 1, k2, s2) == 0) {
                val = 0.0f;
            } else {
                float s = 0.0f;
                for (int h = 0; h < G; h++)
                    s += expf(S[(qi * G + h) * CU_KT + c] * a.scale - mrow[qi * G + h]);
                val = isnan(s) ? 0.0f : s;
            }
            Pw[qi * (CU_KT + 1) + 1 + c] = val;
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < qt * bpt; idx += blockDim.x) {
            const int qi = idx / bpt, bl = idx % bpt;
            if (qi >= nq) continue;
            const int64_t p = a.p0 + tq0 + qi, b = i0 / r + bl;
            if (b > p / a.block) continue;
            a.score[((size_t)(tq0 + qi) * a.nkv + g) * a.nbs + b] =
                pool_max(Pw + qi * (CU_KT + 1) + r * bl, r + 1);
        }
        __syncthreads();
        for (int qi = threadIdx.x; qi < qt; qi += blockDim.x)
            Pw[qi * (CU_KT + 1)] = Pw[qi * (CU_KT + 1) + CU_KT];
    }
}

/* ---- stage 1 on registers (mma.sync m16n8k16), D in {64, 128}, G a power of two <= 16 ----
 * A CTA of 4 warps takes QC = 8 x 16/G queries; a warp owns two m16 tiles (32 rows = rows
 * qi*G + h, one query per tile when G = 16) and keeps their Q fragments in registers. One tile
 * stream, pass 1 (K2 tiles) then pass 2 (K1 tiles), 64 windows a tile, double-buffered with
 * cp.async into padded shared tiles; each warp computes its 32 x 64 scores in registers.
 *   pass 1: per-row online max/sum (thread-local, exp2 domain), quad-combined at the switch;
 *   pass 2: exp2(s - lse) summed over the G rows of a query in registers (G = 16: a 3-step
 *           butterfly reduce-scatter, 14 shuffles for 64 columns), masked as in score_kernel,
 *           written to a per-warp window row and max-pooled onto blocks there.
 * Blocks that the top-K forces anyway are skipped when a.local >= 0: only blocks
 * b < qbmax - local are scored (top-K never reads the rest), and a CTA whose queries all have
 * qb + 1 <= a.Ksel (top-K takes every block) does nothing. */
#define SC_MW 2
#define SC_NW 4

/* Split scan (third version; decode and other launches with few CTAs): mode 1 runs pass 1 over
 * K2 tiles [z tps, (z+1) tps) of blockIdx.z = z and writes each row's partial (max, sum) (log2
 * domain) to sc_part; mode 2 merges the nsplit1 partials into the lse and runs pass 2 over K1
 * tiles [z tps, (z+1) tps), starting one tile early (not written) to carry the window before its
 * first block. Mode 0: the whole stream in one CTA. */
#define SC_PART_CAP 131072
static __device__ float sc_part[SC_PART_CAP];

/* mma with C = 0 (the first k step of a tile): no zeroing of the accumulators. */
static __device__ __forceinline__ void mma_bf16_z(float c[4], const uint32_t a[4], uint32_t b0,
                                                  uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
}

/* Double-buffered tile stream of a stage-1 pass: start loading tile t + 1 (if any), then wait
 * until tile t has landed. */
template <class F> static __device__ __forceinline__ void tile_next(F &load, int t, int tlast)
{
    if (t + 1 < tlast) {
        load(t + 1);
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
}

/* Online softmax state (running max, sum) of a stage-1 pass: max -inf, sum 0. */
template <int A, int B>
static __device__ __forceinline__ void ml_init(float (&m)[A][B], float (&l)[A][B])
{
#pragma unroll
    for (int i = 0; i < A; i++)
#pragma unroll
        for (int j = 0; j < B; j++) {
            m[i][j] = -INFINITY;
            l[i][j] = 0.0f;
        }
}

/* exp2 for the V2 kernel: ex2.approx.ftz (one MUFU op; results below 2^-126 flush to 0, far
 * under the bf16 P of the reference kernel); the old kernel keeps exp2f (denormal-exact). */
template <bool V2> static __device__ __forceinline__ float sc_exp2(float x)
{
    if constexpr (V2) {
        float y;
        asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
        return y;
    } else {
        return exp2f(x);
    }
}

/* The tile stream of a stage-1 CTA whose last query is at pmax (both mma kernels): nt2 K2 tiles,
 * then the K1 tiles (r windows a block) of the blocks it scores (b < qb - local when local >= 0);
 * in split modes its range [tbeg, tlast) (mode 2 starts a tile early for the carried window)
 * and the first tile it writes, twr. false: the CTA has nothing to do. */
struct sc_stream {
    int64_t v2max, v1max;
    int nt2, nt, tbeg, tlast, twr;
};
static __device__ __forceinline__ bool sc_stream_init(const score_args &a, int64_t pmax, int r,
                                                      int mode, int tps, sc_stream &S)
{
    const int64_t qbmax = pmax / a.block;
    S.v2max = nwin(pmax + 1, 4 * a.k1, 4 * a.s1);
    S.v1max = nwin(pmax + 1, a.k1, a.s1);
    if (S.v2max > a.n2) S.v2max = a.n2;
    if (S.v1max > a.n1) S.v1max = a.n1;
    int64_t nblk = a.local >= 0 ? qbmax - a.local : qbmax + 1;
    if (nblk < 0) nblk = 0;
    S.nt2 = (int)((S.v2max + CU_KT - 1) / CU_KT);
    const int nt1 = (int)((nblk * r + CU_KT - 1) / CU_KT);
    S.nt = nt1 > 0 ? S.nt2 + nt1 : 0;                       /* no block to score: nothing */
    if (S.nt == 0) return false;
    S.tbeg = 0, S.tlast = S.nt, S.twr = 0;
    if (mode == 1) {
        S.tbeg = (int)blockIdx.z * tps;
        S.tlast = S.tbeg + tps < S.nt2 ? S.tbeg + tps : S.nt2;
    } else if (mode == 2) {
        S.twr = S.nt2 + (int)blockIdx.z * tps;
        if (S.twr >= S.nt) return false;
        S.tbeg = blockIdx.z > 0 ? S.twr - 1 : S.twr;
        S.tlast = S.twr + tps < S.nt ? S.twr + tps : S.nt;
    }
    return true;
}

/* Rows of tile t of the stream for kv group g: K2 windows for t < nt2, then K1; *nk rows
 * (0..64) are present. */
static __device__ __forceinline__ const bf16 *sc_tile_src(const score_args &a, const sc_stream &S,
                                                          int t, int g, int D, int *nk)
{
    const size_t krow = (size_t)a.nkv * D;
    if (t < S.nt2) {
        const int64_t c0 = (int64_t)t * CU_KT, left = S.v2max - c0;
        *nk = (int)(left < CU_KT ? left : CU_KT);
        return a.K2 + c0 * krow + (size_t)g * D;
    }
    const int64_t i0 = (int64_t)(t - S.nt2) * CU_KT, left = S.v1max - i0;
    *nk = (int)(left <= 0 ? 0 : (left < CU_KT ? left : CU_KT));
    return a.K1 + (*nk > 0 ? i0 * krow : 0) + (size_t)g * D;
}

/* One tile's step of a row's online (max m, sum l) of exp2 terms: x[N] (log2 domain, -inf for
 * masked entries) with mx = their max. */
template <int N, bool V2>
static __device__ __forceinline__ void online_ml(const float (&x)[N], float mx, float &m, float &l)
{
    const float mn = fmaxf(m, mx);
    if (mn == -INFINITY) return;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) s += sc_exp2<V2>(x[i] - mn);
    l = l * sc_exp2<V2>(m - mn) + s;
    m = mn;
}

/* V2 (default; SALA_CUDA_SCORE=old selects V2 = false): the per-query window counts and query
 * blocks are computed once before the tile loop (the old kernel did six 64-bit divisions per
 * tile and thread inside it) and exp2 is the single-op ftz form. Same scores otherwise. */
template <int D, bool V2>
static __global__ void __launch_bounds__(128, 2)
    score_mma_kernel(score_args a, int lg, int mode, int tps, int nsplit1)
{
    constexpr int LDS = D + 8, KS = D / 16, MW = SC_MW, NW = SC_NW;
    const int G = 1 << lg, QPT = 16 >> lg, QPW = MW * QPT, QC = NW * QPW;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Kb = (bf16 *)smraw;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2;
    float *Pw = (float *)(Kb + 2 * 64 * LDS) + w * QPW * (CU_KT + 1);
    int *qbw = (int *)((float *)(Kb + 2 * 64 * LDS) + NW * QPW * (CU_KT + 1)) + w * 32;
    const int g = blockIdx.y, tq0 = a.t0 + blockIdx.x * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const int64_t pmax = a.p0 + tq0 + nq - 1, qbmax = pmax / a.block;
    if (a.Ksel > 0 && qbmax + 1 <= a.Ksel) return;          /* top-K takes every block */
    const int k2 = 4 * a.k1, s2 = 4 * a.s1, r = a.block / a.s1;
    const int lbpt = __ffs(CU_KT / r) - 1;
    const size_t krow = (size_t)a.nkv * D;
    const float sl = a.scale * 1.4426950408889634f;

    uint32_t qa[MW][KS][4];
    int v2r[MW][2], v1r[MW][2];         /* per row: K2 windows for pass 1, K1 windows (V2) */
    bool nk2r[MW][2];                   /* V2: no K2 window yet at this row's query */
#pragma unroll
    for (int mt = 0; mt < MW; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row = rq + 8 * hf, qc = w * QPW + mt * QPT + (row >> lg), h = row & (G - 1);
            const bool ok = qc < nq;
            const int64_t p = a.p0 + tq0 + qc;
            int64_t v2 = nwin(p + 1, k2, s2), v1 = nwin(p + 1, a.k1, a.s1);
            nk2r[mt][hf] = v2 == 0;
            if (v2 > a.n2) v2 = a.n2;
            if (v1 > a.n1) v1 = a.n1;
            v2r[mt][hf] = ok ? (int)v2 : 0;
            v1r[mt][hf] = ok ? (int)v1 : 0;
            const bf16 *qrow = a.Q + ((size_t)(tq0 + (ok ? qc : 0)) * a.nh + g * G + h) * D;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int col = ks * 16 + 2 * qd;
                const uint32_t x0 = ok ? *(const uint32_t *)(qrow + col) : 0u;
                const uint32_t x1 = ok ? *(const uint32_t *)(qrow + col + 8) : 0u;
                qa[mt][ks][hf] = x0;
                qa[mt][ks][2 + hf] = x1;
            }
        }
    sc_stream S;
    if (!sc_stream_init(a, pmax, r, mode, tps, S)) return;
    const int nt2 = S.nt2, tbeg = S.tbeg, tlast = S.tlast, twr = S.twr;
    const size_t pbase = (((size_t)blockIdx.x * gridDim.y + g) * nsplit1) * 256 + w * 32 + rq;
    if (lane < QPW) Pw[lane * (CU_KT + 1)] = -INFINITY;
    if (V2 && lane < QPW)               /* query block per warp query, -1 past the last query */
        qbw[lane] = w * QPW + lane < nq ? (int)((a.p0 + tq0 + w * QPW + lane) / a.block) : -1;
    __syncwarp();

    auto load = [&](int t) {
        int nk;
        const bf16 *src = sc_tile_src(a, S, t, g, D, &nk);
        tile_async<D>(Kb + (t & 1) * CU_KT * LDS, src, krow, nk, 128);
        cp_async_commit();
    };

    float mrow[MW][2], lrow[MW][2];
    ml_init(mrow, lrow);
    if (mode == 2) {                                        /* lse from the pass-1 partials */
#pragma unroll
        for (int mt = 0; mt < MW; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const float *pp = sc_part + pbase + mt * 16 + hf * 8;
                float m = -INFINITY, l = 0.0f;
                for (int z = 0; z < nsplit1; z++) {
                    const float mz = pp[(size_t)z * 256], lz = pp[(size_t)z * 256 + 128];
                    if (mz == -INFINITY) continue;
                    const float mn = fmaxf(m, mz);
                    l = l * exp2f(m - mn) + lz * exp2f(mz - mn);
                    m = mn;
                }
                mrow[mt][hf] = l > 0.0f ? m + log2f(l) : -INFINITY;
            }
    }
    if (tbeg < tlast) load(tbeg);
    for (int t = tbeg; t < tlast; t++) {
        tile_next(load, t, tlast);
        __syncthreads();
        const bf16 *Kt = Kb + (t & 1) * CU_KT * LDS;
        float acc[MW][8][4];
        if constexpr (!V2) {
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.0f;
        }
        const uint32_t kbase =
            smem_u32(Kt + (((lane >> 4) & 1) * 8 + (lane & 7)) * LDS + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
#pragma unroll
            for (int nc = 0; nc < 4; nc++) {
                uint32_t b[4];
                ldsm_x4(b, kbase + (uint32_t)((nc * 16 * LDS + ks * 16) * 2));
#pragma unroll
                for (int mt = 0; mt < MW; mt++) {
                    const uint32_t *qm = qa[mt][ks];
                    if (V2 && ks == 0) {
                        mma_bf16_z(acc[mt][2 * nc], qm, b[0], b[1]);
                        mma_bf16_z(acc[mt][2 * nc + 1], qm, b[2], b[3]);
                    } else {
                        mma_bf16(acc[mt][2 * nc], qm, b[0], b[1]);
                        mma_bf16(acc[mt][2 * nc + 1], qm, b[2], b[3]);
                    }
                }
            }
        }
        __syncthreads();                                    /* tile buffer free for t + 2 */
        if (t < nt2) {                                      /* pass 1: online lse over K2 */
            const int c0 = t * CU_KT;
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int lim = v2r[mt][hf] - c0;
                    float x[16], mx = -INFINITY;
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int col = j * 8 + 2 * qd + e;
                            const float v = col < lim ? acc[mt][j][2 * hf + e] * sl : -INFINITY;
                            x[j * 2 + e] = v;
                            mx = fmaxf(mx, v);
                        }
                    online_ml<16, V2>(x, mx, mrow[mt][hf], lrow[mt][hf]);
                }
            continue;
        }
        if (t == nt2 && mode == 0) {                        /* lse (log2 domain) per row */
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
                    mrow[mt][hf] = merged_lse<1, 2>(mrow[mt][hf], lrow[mt][hf]);
        }
        /* pass 2: group-summed P of 64 K1 windows -> Pw, then pooled onto 64 / r blocks */
        const int64_t i0 = (int64_t)(t - nt2) * CU_KT;
        if (lg == 4) {
#pragma unroll
            for (int mt = 0; mt < MW; mt++) {
                float v[16];
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        v[j * 2 + e] = sc_exp2<V2>(acc[mt][j][e] * sl - mrow[mt][0]) +
                                       sc_exp2<V2>(acc[mt][j][2 + e] * sl - mrow[mt][1]);
                {
                    const bool hi = lane & 16;
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        const float snd = hi ? v[i] : v[i + 8], kp = hi ? v[i + 8] : v[i];
                        v[i] = kp + __shfl_xor_sync(0xffffffffu, snd, 16);
                    }
                }
                {
                    const bool hi = lane & 8;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float snd = hi ? v[i] : v[i + 4], kp = hi ? v[i + 4] : v[i];
                        v[i] = kp + __shfl_xor_sync(0xffffffffu, snd, 8);
                    }
                }
                {
                    const bool hi = lane & 4;
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const float snd = hi ? v[i] : v[i + 2], kp = hi ? v[i + 2] : v[i];
                        v[i] = kp + __shfl_xor_sync(0xffffffffu, snd, 4);
                    }
                }
                const int j = ((lane >> 4) & 1) * 4 + ((lane >> 3) & 1) * 2 + ((lane >> 2) & 1);
                const int col = j * 8 + 2 * qd, qc = w * QPW + mt;
                int64_t v1;
                bool nok2;
                if constexpr (V2) {
                    v1 = v1r[mt][0];
                    nok2 = nk2r[mt][0];
                } else {
                    const int64_t p = a.p0 + tq0 + qc;
                    v1 = nwin(p + 1, a.k1, a.s1);
                    if (v1 > a.n1) v1 = a.n1;
                    nok2 = nwin(p + 1, k2, s2) == 0;
                }
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float val = v[e];
                    if (i0 + col + e >= v1) val = -INFINITY;
                    else if (nok2 || isnan(val)) val = 0.0f;
                    Pw[mt * (CU_KT + 1) + 1 + col + e] = val;
                }
            }
        } else {
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int row = rq + 8 * hf, qw = mt * QPT + (row >> lg);
                    int64_t v1;
                    bool nok2;
                    if constexpr (V2) {
                        v1 = v1r[mt][hf];
                        nok2 = nk2r[mt][hf];
                    } else {
                        const int64_t p = a.p0 + tq0 + w * QPW + qw;
                        v1 = nwin(p + 1, a.k1, a.s1);
                        if (v1 > a.n1) v1 = a.n1;
                        nok2 = nwin(p + 1, k2, s2) == 0;
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            float val = sc_exp2<V2>(acc[mt][j][2 * hf + e] * sl - mrow[mt][hf]);
                            for (int o = 4; o < 4 * G; o <<= 1)
                                val += __shfl_xor_sync(0xffffffffu, val, o);
                            const int col = j * 8 + 2 * qd + e;
                            if (i0 + col >= v1) val = -INFINITY;
                            else if (nok2 || isnan(val)) val = 0.0f;
                            if ((row & (G - 1)) == 0) Pw[qw * (CU_KT + 1) + 1 + col] = val;
                        }
                }
        }
        __syncwarp();
        const int bpt = CU_KT / r;                          /* a power of two: r divides 64 */
        for (int idx = t >= twr ? lane : QPW * bpt; idx < QPW * bpt; idx += 32) {
            const int qw = V2 ? idx >> lbpt : idx / bpt, bl = V2 ? idx & (bpt - 1) : idx % bpt;
            const int qc = w * QPW + qw;
            int64_t b;
            if constexpr (V2) {
                b = (int64_t)(t - nt2) * bpt + bl;
                if (b > qbw[qw]) continue;      /* qbw = -1 past the last query */
            } else {
                if (qc >= nq) continue;
                const int64_t p = a.p0 + tq0 + qc;
                b = i0 / r + bl;
                if (b > p / a.block) continue;
            }
            a.score[((size_t)(tq0 + qc) * a.nkv + g) * a.nbs + b] =
                pool_max(Pw + qw * (CU_KT + 1) + r * bl, r + 1);
        }
        __syncwarp();
        if (lane < QPW) Pw[lane * (CU_KT + 1)] = Pw[lane * (CU_KT + 1) + CU_KT];
        __syncwarp();
    }
    if (mode == 1) {                                        /* this range's (max, sum) per row */
#pragma unroll
        for (int mt = 0; mt < MW; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                merged_store<1, 2>(mrow[mt][hf], lrow[mt][hf], qd == 0,
                                   sc_part + pbase + (size_t)blockIdx.z * 256 + mt * 16 + hf * 8);
    }
}

/* ---- stage 1, transposed form (V4; the default for G = 16 and a K1 stride of 16) ----
 * The scores are computed as Sᵀ = K1 · Qᵀ: the 64 windows of a tile are the M dimension (four
 * m16 tiles) and a query's 16 heads the N dimension (two n8 tiles). A thread then holds, per
 * query, 8 windows x 4 heads, and the group sum over the heads runs on the tensor cores: the
 * exp2 values of a (16 windows x 8 heads) C fragment are, as they lie, the A fragment of a tf32
 * m16n8k8 mma against a matrix of ones (which head lands in which k slot does not matter for a
 * sum). tf32 keeps 10 mantissa bits, so each P is split into hi = P with the low 13 bits cleared
 * (exact in tf32) and lo = P - hi (exact in fp32, read by the mma as tf32: relative error of the
 * term < 2^-21); four mmas (hi, lo for each n8 tile) give Σ_h P per window, in fp32 accumulation.
 * The rows of each m16 tile are permuted (row ρ < 8 of m-tile mt = window 8ρ + 2mt, row ρ + 8 =
 * window 8ρ + 2mt + 1) so that lane group rq holds windows 8rq .. 8rq + 7 = blocks 2rq and
 * 2rq + 1 of the tile: the max-pool needs one shuffle (window 8rq - 1 from the lane group before,
 * the tile before's window 63 carried in a register) and no shared memory. Tiles are stored
 * without padding with 16-byte chunks XOR-swizzled by (row / 8) % 8, so the ldmatrix phases of
 * the permuted rows (8 rows 8 apart) hit distinct banks.
 * Pass 1 keeps per (query, head) online (max, sum) per thread over its 8 windows, merged over the
 * 8 lane groups at the end of the pass (or of the split range). Same masks, split modes, early
 * exits and skipped local blocks as score_mma_kernel. Differences from V2: the group sum (Σ hi + Σ
 * lo, each a tf32 tensor-core accumulation; V2: fp32 adds in a butterfly) and the order of the
 * pass-1 sums. A P that overflows to +inf keeps lo = 0 (inf - inf would make the sum NaN, which
 * the pooling would drop), so the window scores +inf as in V2. Warps without a valid query
 * (decode: 3 of 4) only load. The split merge of mode 2 runs over the 8 lane groups of a head in
 * parallel. (An m-tile-major pass 2, each m-tile's sums issued right after its MMAs, was 1.12x
 * slower in prefill: branch s1c, 93a23d2.) */
#define ST_QPW 2

static __device__ __forceinline__ void mma_tf32_ones(float c[4], const uint32_t a[4], bool zero)
{
    if (zero)
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%8}, {%9,%9,%9,%9};\n"
                     : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(0x3f800000u), "f"(0.0f));
    else
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%8}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(0x3f800000u));
}

/* Rows [0, nrows) of a (rows, D) bf16 matrix (row stride ld) -> a swizzled shared tile (64, D):
 * 16-byte chunk c of row r at chunk c ^ ((r / 8) % 8); rows past nrows are zero. */
template <int D>
static __device__ __forceinline__ void tile_async_sw(bf16 *dst, const bf16 *src, size_t ld,
                                                     int nrows)
{
    constexpr int PER = D / 8;
#pragma unroll 4
    for (int idx = threadIdx.x; idx < 64 * PER; idx += 128) {
        const int r = idx / PER, c = idx % PER;
        const bool ok = r < nrows;
        cp_async16(smem_u32(dst + r * D + ((c ^ ((r >> 3) & 7)) << 3)),
                   src + (ok ? (size_t)r * ld : 0) + c * 8, ok);
    }
}

template <int D>
static __global__ void __launch_bounds__(128, 2)
    score_t_kernel(score_args a, int mode, int tps, int nsplit1, bool hoist)
{
    constexpr int KS = D / 16, QPW = ST_QPW, QC = 4 * QPW;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Kb = (bf16 *)smraw;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2;
    const int g = blockIdx.y, tq0 = a.t0 + blockIdx.x * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const int64_t pmax = a.p0 + tq0 + nq - 1, qbmax = pmax / a.block;
    if (a.Ksel > 0 && qbmax + 1 <= a.Ksel) return;          /* top-K takes every block */
    const int k2 = 4 * a.k1, s2 = 4 * a.s1;
    const size_t krow = (size_t)a.nkv * D;
    const float sl = a.scale * 1.4426950408889634f;
    const bool wact = w * QPW < nq;                         /* warp has a valid query */

    uint32_t qb[QPW][KS][2][2];                             /* B fragments: Q (head, dim) */
    int v2q[QPW], v1q[QPW], qbq[QPW];
    bool nk2q[QPW];
#pragma unroll
    for (int q = 0; q < QPW; q++) {
        const int qc = w * QPW + q;
        const bool ok = qc < nq;
        const int64_t p = a.p0 + tq0 + qc;
        int64_t v2 = nwin(p + 1, k2, s2), v1 = nwin(p + 1, a.k1, a.s1);
        nk2q[q] = v2 == 0;
        if (v2 > a.n2) v2 = a.n2;
        if (v1 > a.n1) v1 = a.n1;
        v2q[q] = ok ? (int)v2 : 0;
        v1q[q] = ok ? (int)v1 : 0;
        qbq[q] = ok ? (int)(p / a.block) : -1;
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const bf16 *qrow = a.Q + ((size_t)(tq0 + (ok ? qc : 0)) * a.nh + g * 16 + nt * 8 + rq) * D;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int col = ks * 16 + 2 * qd;
                qb[q][ks][nt][0] = ok ? *(const uint32_t *)(qrow + col) : 0u;
                qb[q][ks][nt][1] = ok ? *(const uint32_t *)(qrow + col + 8) : 0u;
            }
        }
    }
    sc_stream S;
    if (!sc_stream_init(a, pmax, 4, mode, tps, S)) return;
    const int nt2 = S.nt2, tbeg = S.tbeg, tlast = S.tlast, twr = S.twr;
    const size_t pbase = (((size_t)blockIdx.x * gridDim.y + g) * nsplit1) * 256 + w * 32;

    auto load = [&](int t) {
        int nk;
        const bf16 *src = sc_tile_src(a, S, t, g, D, &nk);
        tile_async_sw<D>(Kb + (t & 1) * CU_KT * D, src, krow, nk);
        cp_async_commit();
    };

    /* per (query, head nt * 2 + e = head 8 nt + 2 qd + e): running max / sum, then the lse */
    float mh[QPW][4], lh[QPW][4];
    ml_init(mh, lh);
    auto hrow = [&](int q, int h) { return q * 16 + (h >> 1) * 8 + 2 * qd + (h & 1); };
    if (mode == 2 && wact && hoist) {                       /* lse from the pass-1 partials */
        /* valid queries only; per lane group the partials z = rq, rq + 8, .. merged in that
         * order as below, their loads issued HZ ranges x 4 heads at a time */
        constexpr int HZ = 4;
#pragma unroll
        for (int q = 0; q < QPW; q++) {
            if (w * QPW + q >= nq) continue;                /* warp-uniform */
            float m[4], l[4];
#pragma unroll
            for (int h = 0; h < 4; h++) m[h] = -INFINITY, l[h] = 0.0f;
            for (int z0 = rq; z0 < nsplit1; z0 += 8 * HZ) {
                float mz[HZ][4], lz[HZ][4];
#pragma unroll
                for (int k = 0; k < HZ; k++)
#pragma unroll
                    for (int h = 0; h < 4; h++) {
                        const int z = z0 + 8 * k;
                        const float *pp = sc_part + pbase + hrow(q, h) + (size_t)z * 256;
                        mz[k][h] = z < nsplit1 ? pp[0] : -INFINITY;
                        lz[k][h] = z < nsplit1 ? pp[128] : 0.0f;
                    }
#pragma unroll
                for (int k = 0; k < HZ; k++)
#pragma unroll
                    for (int h = 0; h < 4; h++) {
                        if (mz[k][h] == -INFINITY) continue;
                        const float mn = fmaxf(m[h], mz[k][h]);
                        l[h] = l[h] * sc_exp2<true>(m[h] - mn) + lz[k][h] * sc_exp2<true>(mz[k][h] - mn);
                        m[h] = mn;
                    }
            }
#pragma unroll
            for (int h = 0; h < 4; h++) mh[q][h] = merged_lse<4, 16>(m[h], l[h]);
        }
    } else if (mode == 2 && wact) {                         /* SALA_CUDA_S1MERGE=old */
#pragma unroll
        for (int q = 0; q < QPW; q++)
#pragma unroll
            for (int h = 0; h < 4; h++) {
                const float *pp = sc_part + pbase + hrow(q, h);
                float m = -INFINITY, l = 0.0f;
                for (int z = rq; z < nsplit1; z += 8) {
                    const float mz = pp[(size_t)z * 256], lz = pp[(size_t)z * 256 + 128];
                    if (mz == -INFINITY) continue;
                    const float mn = fmaxf(m, mz);
                    l = l * sc_exp2<true>(m - mn) + lz * sc_exp2<true>(mz - mn);
                    m = mn;
                }
                mh[q][h] = merged_lse<4, 16>(m, l);
            }
    }
    float carry[QPW];
#pragma unroll
    for (int q = 0; q < QPW; q++) carry[q] = -INFINITY;
    /* ldmatrix addresses: this lane's A row (window 8 (lane & 7) + 2 mt + hf) and its k chunk
     * 2 ks + hk swizzled by s = lane & 7; (2 ks + hk) ^ s = 8 (ks >> 2) + ((2 (ks & 3) + hk) ^ s) */
    uint32_t abase[4];
    {
        const int s = lane & 7, hf = (lane >> 3) & 1, hk = (lane >> 4) & 1;
        const uint32_t row = smem_u32(Kb) + (uint32_t)((8 * s + hf) * D * 2);
#pragma unroll
        for (int kl = 0; kl < 4; kl++) abase[kl] = row + (uint32_t)((((2 * kl + hk) ^ s)) * 16);
    }

    /* scores of m-tiles [mt0, mt0 + nmt) of the tile in buffer boff (bytes) */
    float acc[QPW][4][2][4];
    auto mma_rows = [&](int mt0, int nmt, uint32_t boff) {
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int mt = mt0; mt < mt0 + nmt; mt++) {
                uint32_t af[4];
                ldsm_x4(af, abase[ks & 3] + boff + (uint32_t)(mt * 4 * D + (ks >> 2) * 128));
#pragma unroll
                for (int q = 0; q < QPW; q++)
#pragma unroll
                    for (int n8 = 0; n8 < 2; n8++) {
                        if (ks == 0)
                            mma_bf16_z(acc[q][mt][n8], af, qb[q][ks][n8][0], qb[q][ks][n8][1]);
                        else
                            mma_bf16(acc[q][mt][n8], af, qb[q][ks][n8][0], qb[q][ks][n8][1]);
                    }
            }
    };
    /* pass 2, windows 8 rq + 2 mt, + 1 of query q: Σ_h exp2(s - lse) on the tensor cores */
    float W[QPW][8];
    auto psum = [&](int q, int mt) {
        float sh[4], so[4];                                 /* Σ hi and Σ lo: two short chains */
#pragma unroll
        for (int n8 = 0; n8 < 2; n8++) {
            uint32_t hi[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                /* A slot order: a0 = c0 (row rq), a1 = c2 (row rq+8), a2 = c1, a3 = c3 */
                const int ce = (e & 1) * 2 + (e >> 1);
                const float P = sc_exp2<true>(acc[q][mt][n8][ce] * sl - mh[q][n8 * 2 + (ce & 1)]);
                const uint32_t hb = __float_as_uint(P) & 0xffffe000u;
                hi[e] = hb;
                /* P = +inf (score ~88 nats above the lse): lo = 0, so the sum is +inf as in V2 */
                lo[e] = __float_as_uint(P == INFINITY ? 0.0f : P - __uint_as_float(hb));
            }
            mma_tf32_ones(sh, hi, n8 == 0);
            mma_tf32_ones(so, lo, n8 == 0);
        }
        W[q][2 * mt] = sh[0] + so[0];
        W[q][2 * mt + 1] = sh[2] + so[2];
    };

    if (tbeg < tlast) load(tbeg);
    for (int t = tbeg; t < tlast; t++) {
        tile_next(load, t, tlast);
        if (t == nt2 && mode == 0 && wact) {                /* lse (log2 domain) per head */
#pragma unroll
            for (int q = 0; q < QPW; q++)
#pragma unroll
                for (int h = 0; h < 4; h++) mh[q][h] = merged_lse<4, 16>(mh[q][h], lh[q][h]);
        }
        __syncthreads();
        if (wact) {
            const uint32_t boff = (uint32_t)((t & 1) * CU_KT * D * 2);
            mma_rows(0, 4, boff);
        }
        __syncthreads();                                    /* tile buffer free for t + 2 */
        if (!wact) continue;
        if (t < nt2) {                                      /* pass 1: online lse over K2 */
            const int c0 = t * CU_KT + 8 * rq;
#pragma unroll
            for (int q = 0; q < QPW; q++) {
                const int lim = v2q[q] - c0;                /* windows j < lim are valid */
#pragma unroll
                for (int h = 0; h < 4; h++) {
                    float x[8], mx = -INFINITY;
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const float v = j < lim ? acc[q][j >> 1][h >> 1][2 * (j & 1) + (h & 1)] * sl
                                                : -INFINITY;
                        x[j] = v;
                        mx = fmaxf(mx, v);
                    }
                    online_ml<8, true>(x, mx, mh[q][h], lh[q][h]);
                }
            }
            continue;
        }
        /* pass 2: Σ_h P per window (psum), masked, pooled onto blocks 2rq, 2rq+1 */
        const int it = (t - nt2) * CU_KT, i0 = it + 8 * rq;   /* windows < 2^31 (v1q is int) */
#pragma unroll
        for (int q = 0; q < QPW; q++) {
            if (w * QPW + q >= nq) continue;                /* warp-uniform */
#pragma unroll
            for (int mt = 0; mt < 4; mt++) psum(q, mt);
            float *Wq = W[q];
            if (it + CU_KT <= v1q[q] && !nk2q[q]) {         /* whole tile valid (warp-uniform) */
#pragma unroll
                for (int j = 0; j < 8; j++) Wq[j] = isnan(Wq[j]) ? 0.0f : Wq[j];
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (i0 + j >= v1q[q]) Wq[j] = -INFINITY;    /* not complete at p: not pooled */
                    else if (nk2q[q] || isnan(Wq[j])) Wq[j] = 0.0f;
                }
            }
            const float x = __shfl_sync(0xffffffffu, Wq[7], (lane + 28) & 31);
            const float wm1 = rq == 0 ? carry[q] : x;
            carry[q] = x;                                   /* read by rq == 0 next tile */
            if (t >= twr && qd < 2) {
                const int b = it / 4 + 2 * rq + qd;
                if (b <= qbq[q]) {
                    const float v = qd ? pool_max(Wq + 3, 5) : fmaxf(wm1, pool_max(Wq, 4));
                    a.score[((size_t)(tq0 + w * QPW + q) * a.nkv + g) * a.nbs + b] = v;
                }
            }
        }
    }
    if (mode == 1 && wact) {                                /* this range's (max, sum) per head */
#pragma unroll
        for (int q = 0; q < QPW; q++)
#pragma unroll
            for (int h = 0; h < 4; h++)
                merged_store<4, 16>(mh[q][h], lh[q][h], rq == 0,
                                    sc_part + pbase + (size_t)blockIdx.z * 256 + hrow(q, h));
    }
}

/* ---- stage 1 on wgmma (sm_90a; branch s1w): prefill launches at D = 128, G = 16, K1 stride 16 ----
 * A CTA is one warpgroup (128 threads) and takes 8 queries of kv group g. Scores are computed
 * transposed, Sᵀ = K · Qᵀ, one wgmma m64n128k16 chain (8 k steps) a tile: M = the 64 windows of a
 * K2 / K1 tile (A, shared memory), N = 128 columns n = 8 h + qi (head h, query qi; B, shared
 * memory), K = D = 128. Both operands K-major with the 128-byte swizzle: a tile is two 64-column
 * halves, each (rows, 128 B) with 16-byte chunk c of row r at chunk c ^ (r % 8) (1024-byte
 * aligned, so the descriptor's k step is a 32-byte advance of its start address). Accumulator
 * layout: thread (warp w, lane = 4 rq + qd) holds rows (windows) 16 w + rq + 8 hf and columns
 * 8 j + 2 qd + e, i.e. head j of queries 2 qd + e: the group sum over a query's 16 heads is 16
 * local adds, no shuffles, at the price of 32 per-thread lse registers (head j, query e).
 *   pass 1 (K2 tiles): one accumulator set, wgmma then wait; per (head, query) a thread-local
 *     online (max, sum) over its 2 rows a tile (rescaled only when the max grows), merged over
 *     the 8 lane groups (shuffles) and the 4 warps (shared memory) into the lse (log2 domain);
 *   pass 2 (K1 tiles): two accumulator sets: the wgmma chain of tile t + 1 is issued
 *     (commit_group) before the exp2 / group-sum epilogue of tile t (wait_group 1), so the tensor
 *     cores run beside the MUFU work. The epilogue writes masked window sums to a per-tile row
 *     (3 rotating buffers) that is max-pooled onto blocks after the next tile's barrier (one
 *     (query, block) a thread, the window before from the previous buffer).
 * K tiles arrive by cp.async (8 x 16 bytes a thread a tile, swizzled on the way) into a 4-slot
 * ring, 2 tiles ahead; one CTA barrier a tile; made visible to the tensor cores' async proxy by
 * fence.proxy.async before the barrier. Same masks, early exits and skipped local blocks as
 * score_mma_kernel (mode 0 only: no split ranges). Body compiled only for sm_90a
 * (__CUDA_ARCH_FEAT_SM90_ALL); score_w_probe tells the host whether that image runs. */
#define SW_NS 4                         /* K tile ring slots (16 KB each) */
#define SW_PWS 68                       /* window-row stride (floats): conflict-free stores */
#define SW_MLO (-1e30f)                 /* pass 1's branch-free running max before any window */

static __device__ int sc_w_arch;        /* 1: the sm_90a image of this file runs */
static bool sc_w_ok;                    /* host copy, set by cu_kernels_init */

bool cu_sm90a(void) { return sc_w_ok; }

static __global__ void score_w_probe(void)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    sc_w_arch = 1;
#else
    sc_w_arch = 0;
#endif
}

/* score_w_kernel's shared memory: alignment slack, Q, the K ring, 4 window rows, reductions */
static size_t score_w_smem(void)
{
    return 1024 + 32768 + (size_t)SW_NS * 16384 + (size_t)4 * 8 * SW_PWS * 4 +
           (size_t)4 * 128 * 2 * 4;
}

/* The trimmed form (branch s1x; its first form, s1w, is in docs/CUDA.md "Stage 1 on wgmma"):
 * tiles whose windows are all valid for all 8 queries (a CTA-uniform test on the first query,
 * whose window counts are the smallest) skip the masks (pass 1: 64 selects; pass 2: the compares
 * and selects of the 4 window sums); the window sums are max-pooled two tiles at a time (4 window
 * rows, indexed u & 3); the wgmma descriptors are one 32-bit add from a hoisted base; the
 * cp.async addresses are hoisted (a thread's 8 rows of a tile are r0 + 8 k: the same swizzle,
 * 1024 bytes apart). */
/* Pass 1 (branch s1y): the online (max, sum) update without branches (mn = max(m, x0, x1);
 * l = l 2^(m - mn) + 2^(x0 - mn) + 2^(x1 - mn), the running max starting at SW_MLO, not -inf, so
 * that no difference is inf - inf; the same roundings as s1x's per-(head, query) branches, bit
 * for bit) with two accumulator sets: tile t + 1's chain is issued before tile t's update, as in
 * pass 2; scores scaled and masked in place. (s1x's branchy form, a one-set form and a
 * pass-1-only timing instance were measured beside it and removed: docs/CUDA.md "Stage 1 on
 * wgmma 5".) */
static __global__ void __launch_bounds__(128, 2) score_w_kernel(score_args a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int D = 128, QC = 8, NPW = 4;
    extern __shared__ unsigned char smraw[];
    /* 1024-aligned in the shared window, offset from smraw so that the compiler keeps the
     * shared address space (a round trip through an integer made every Pw / red access a
     * generic load) */
    unsigned char *sm = smraw + ((1024u - (smem_u32(smraw) & 1023u)) & 1023u);
    const uint32_t qs = smem_u32(sm), kr = qs + 32768;      /* Q (128, D); ring of (64, D) */
    float *Pw = (float *)(sm + 32768 + SW_NS * 16384);       /* 4 x (8 queries, SW_PWS) */
    float *red = Pw + NPW * 8 * SW_PWS;                     /* (4 warps, 128 columns, 2) */
    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, qd = lane & 3, rq = lane >> 2;
    const int g = blockIdx.y, tq0 = a.t0 + blockIdx.x * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const int64_t pmax = a.p0 + tq0 + nq - 1, qbmax = pmax / a.block;
    if (a.Ksel > 0 && qbmax + 1 <= a.Ksel) return;          /* top-K takes every block */
    sc_stream S;
    if (!sc_stream_init(a, pmax, 4, 0, 0, S)) return;
    const int nt2 = S.nt2, nt = S.nt, k2 = 4 * a.k1, s2 = 4 * a.s1;
    const size_t krow = (size_t)a.nkv * D;
    const float sl = a.scale * 1.4426950408889634f;

    int v2q[2], v1q[2];                 /* this thread's queries 2 qd + e: K2 / K1 windows */
    bool nk2q[2];                       /* no K2 window yet */
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int qc = 2 * qd + e;
        const int64_t p = a.p0 + tq0 + qc;
        int64_t v2 = nwin(p + 1, k2, s2), v1 = nwin(p + 1, a.k1, a.s1);
        nk2q[e] = v2 == 0;
        if (v2 > a.n2) v2 = a.n2;
        if (v1 > a.n1) v1 = a.n1;
        v2q[e] = qc < nq ? (int)v2 : 0;
        v1q[e] = qc < nq ? (int)v1 : 0;
    }
    const int pq = tid >> 4, pbl = tid & 15;                /* pooled (query, block of tile) */
    const int pqb = pq < nq ? (int)((a.p0 + tq0 + pq) / a.block) : -1;
    /* the first query's K2 / K1 window counts (0 / 0 when it has no K2 window): a tile whose
     * windows all lie below them needs no mask for any of the 8 queries (counts grow with p) */
    int v2lo, v1lo;
    {
        const int64_t p = a.p0 + tq0;
        int64_t v2 = nwin(p + 1, k2, s2), v1 = nwin(p + 1, a.k1, a.s1);
        if (v2 > a.n2) v2 = a.n2;
        if (v1 > a.n1) v1 = a.n1;
        v2lo = (int)v2;
        v1lo = v2 > 0 ? (int)v1 : 0;
    }
    float *const sco = a.score + ((size_t)(tq0 + (pq < nq ? pq : 0)) * a.nkv + g) * a.nbs;
    float *const Pq = Pw + pq * SW_PWS;                     /* this thread's pooled row */
    /* a thread's cp.async chunks of a tile: rows r0 + 8 k, column chunk c */
    const int r0 = tid >> 4, c16 = tid & 15;
    const uint32_t dofs = (c16 >> 3) * 8192 + r0 * 128 + (((c16 & 7) ^ (r0 & 7)) << 4);
    const size_t sofs = (size_t)r0 * krow + c16 * 8;

    for (int idx = tid; idx < 128 * 16; idx += 128) {       /* Q: row n = 8 h + qi */
        const int n = idx >> 4, c = idx & 15, h = n >> 3, qi = n & 7;
        const bool ok = qi < nq;
        cp_async16(qs + (c >> 3) * 16384 + n * 128 + (((c & 7) ^ (n & 7)) << 4),
                   a.Q + ((size_t)(tq0 + (ok ? qi : 0)) * a.nh + g * 16 + h) * D + c * 8, ok);
    }
    cp_async_commit();
    auto load = [&](int t) {                                /* tile t -> slot t % 4 (a group) */
        if (t < nt) {
            int nk;
            const bf16 *src = sc_tile_src(a, S, t, g, D, &nk);
            const uint32_t dst = kr + (t & (SW_NS - 1)) * 16384;
            const bf16 *s0 = src + sofs;
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const bool ok = r0 + 8 * k < nk;
                cp_async16(dst + dofs + k * 1024, ok ? s0 + (size_t)8 * k * krow : src, ok);
            }
        }
        cp_async_commit();
    };
    const uint64_t dhi = wg_desc(0);                        /* descriptor fields but the start */
    const uint32_t dka = (uint32_t)wg_desc(kr), dqa = (uint32_t)wg_desc(qs);
    /* wait for tile t, barrier (every warp is past the wait for tile t - 2's wgmma: its slot is
     * free), load tile t + 2, issue tile t's wgmma chain into d */
    auto issue = [&](int t, float (&d)[64]) {
        cp_async_wait<1>();
        proxy_fence();
        __syncthreads();
        load(t + 2);
        wg_fence();
        /* the start field (addr >> 4, 14 bits) never carries */
        const uint32_t ka = dka + (t & (SW_NS - 1)) * 1024;
#pragma unroll
        for (int ks = 0; ks < 8; ks++)
            wg_mma(d, dhi | (ka + (ks >> 2) * 512 + (ks & 3) * 2),
                   dhi | (dqa + (ks >> 2) * 1024 + (ks & 3) * 2), ks);
        wg_commit();
    };
    load(0);
    load(1);

    float acc0[64], acc1[64], lse[16][2];
#pragma unroll
    for (int i = 0; i < 64; i++) acc0[i] = 0.0f;
    /* Both passes' main loop: tiles from t on, two at a time over the two accumulator sets (tile
     * t - 1's chain already issued into acc0): even(t - 1) reads acc0 while tile t's chain runs
     * into acc1, odd(t) reads acc1 while tile t + 1's runs into acc0. Returns the first tile not
     * issued (the tails differ per pass). */
    auto pairs = [&](int t, int tend, auto &&even, auto &&odd) {
        for (; t + 1 < tend; t += 2) {
            issue(t, acc1);
            wg_wait<1>();
            wg_keep(acc0);
            even(t - 1);
            issue(t + 1, acc0);
            wg_wait<1>();
            wg_keep(acc1);
            odd(t);
        }
        return t;
    };
    {                                                       /* pass 1: lse over K2 */
        float m[16][2], l[16][2];
        ml_init(m, l);
#pragma unroll
        for (int j = 0; j < 16; j++) m[j][0] = m[j][1] = SW_MLO;
        /* branch-free update of tile t's scores in d (scaled and masked in place) */
        auto p1epi = [&](int t, float (&d)[64]) {
#pragma unroll
            for (int i = 0; i < 64; i++) d[i] *= sl;
            wg_keep(d);
            if (t * CU_KT + CU_KT > v2lo) {     /* masks only where a window may be invalid */
                const int c0 = t * CU_KT + 16 * w + rq;
#pragma unroll
                for (int i = 0; i < 64; i++)
                    if (c0 + 8 * ((i >> 1) & 1) >= v2q[i & 1]) d[i] = -INFINITY;
            }
#pragma unroll
            for (int j = 0; j < 16; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float x0 = d[4 * j + e], x1 = d[4 * j + 2 + e];
                    const float mn = fmaxf(m[j][e], fmaxf(x0, x1));
                    const float s = sc_exp2<true>(x0 - mn) + sc_exp2<true>(x1 - mn);
                    l[j][e] = __fadd_rn(__fmul_rn(l[j][e], sc_exp2<true>(m[j][e] - mn)), s);
                    m[j][e] = mn;
                }
        };
        /* tile t + 1's chain issued before t's update */
#pragma unroll
        for (int i = 0; i < 64; i++) acc1[i] = 0.0f;
        if (nt2 > 0) {
            issue(0, acc0);
            const int t = pairs(
                1, nt2, [&](int u) { p1epi(u, acc0); }, [&](int u) { p1epi(u, acc1); });
            if (t < nt2) {                  /* tiles t - 1 and t left */
                issue(t, acc1);
                wg_wait<1>();
                wg_keep(acc0);
                p1epi(t - 1, acc0);
                wg_wait<0>();
                wg_keep(acc1);
                p1epi(t, acc1);
            } else {                        /* tile t - 1 left */
                wg_wait<0>();
                wg_keep(acc0);
                p1epi(t - 1, acc0);
            }
        }
        /* the sentinel back to -inf: the same merge inputs */
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++)
                if (m[j][e] == SW_MLO) m[j][e] = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                merge_ml<4, 16>(m[j][e], l[j][e]);
                if (rq == 0) {
                    float *rp = red + (w * 128 + 8 * j + 2 * qd + e) * 2;
                    rp[0] = m[j][e];
                    rp[1] = l[j][e];
                }
            }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float M = -INFINITY, L = 0.0f;
#pragma unroll
                for (int ww = 0; ww < 4; ww++) {
                    const float *rp = red + (ww * 128 + 8 * j + 2 * qd + e) * 2;
                    const float mz = rp[0], lz = rp[1], mn = fmaxf(M, mz);
                    L = mn == -INFINITY ? 0.0f : L * sc_exp2<true>(M - mn) + lz * sc_exp2<true>(mz - mn);
                    M = mn;
                }
                lse[j][e] = L > 0.0f ? M + log2f(L) : -INFINITY;
            }
    }
    /* pass 2: window sums of tile t (accumulators d) -> window row (t - nt2) & 3 */
    auto wsum = [&](float (&d)[64], int hf, int e) {    /* rows hf, query 2 qd + e: 16 heads */
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; j += 2) {
            s0 += sc_exp2<true>(fmaf(d[4 * j + 2 * hf + e], sl, -lse[j][e]));
            s1 += sc_exp2<true>(fmaf(d[4 * j + 4 + 2 * hf + e], sl, -lse[j + 1][e]));
        }
        return s0 + s1;
    };
    auto epi = [&](int t, float (&d)[64]) {
        const int u = t - nt2, i = u * CU_KT + 16 * w + rq;
        float *pw = Pw + (u & 3) * 8 * SW_PWS + 16 * w + rq;
        float v[2][2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                v[hf][e] = wsum(d, hf, e);
                asm volatile("" : "+f"(v[hf][e])::"memory");    /* computed outside the branches */
            }
        if (u * CU_KT + CU_KT <= v1lo) {        /* every window complete, K2 windows exist */
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    pw[(2 * qd + e) * SW_PWS + 8 * hf] = isnan(v[hf][e]) ? 0.0f : v[hf][e];
        } else {
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float x = v[hf][e];
                    if (i + 8 * hf >= v1q[e]) x = -INFINITY;    /* not complete at p: not pooled */
                    else if (nk2q[e] || isnan(x)) x = 0.0f;
                    pw[(2 * qd + e) * SW_PWS + 8 * hf] = x;
                }
        }
    };
    /* max-pool of tile t's windows onto its 16 blocks (after a barrier that follows epi(t)) */
    auto pool = [&](int t) {
        const int u = t - nt2, b = u * (CU_KT / 4) + pbl;
        if (b > pqb) return;
        const float *pw = Pq + (u & 3) * 8 * SW_PWS;
        const float4 v = *(const float4 *)(pw + 4 * pbl);
        const float prev = pbl ? pw[4 * pbl - 1]
                          : u == 0 ? -INFINITY : Pq[((u + 3) & 3) * 8 * SW_PWS + CU_KT - 1];
        sco[b] = fmaxf(fmaxf(prev, v.x), fmaxf(fmaxf(v.y, v.z), v.w));
    };
    /* tiles t and t + 1 onto their 32 blocks */
    auto pool2 = [&](int t) {
        const int u = t - nt2, b = u * (CU_KT / 4) + pbl;
        if (b > pqb) return;
        const float *p0 = Pq + (u & 3) * 8 * SW_PWS, *p1 = Pq + ((u + 1) & 3) * 8 * SW_PWS;
        const float4 v0 = *(const float4 *)(p0 + 4 * pbl), v1 = *(const float4 *)(p1 + 4 * pbl);
        const float q0 = pbl ? p0[4 * pbl - 1]
                          : u == 0 ? -INFINITY : Pq[((u + 3) & 3) * 8 * SW_PWS + CU_KT - 1];
        const float q1 = pbl ? p1[4 * pbl - 1] : p0[CU_KT - 1];
        sco[b] = fmaxf(fmaxf(q0, v0.x), fmaxf(fmaxf(v0.y, v0.z), v0.w));
        if (b + CU_KT / 4 <= pqb) sco[b + CU_KT / 4] = fmaxf(fmaxf(q1, v1.x), fmaxf(fmaxf(v1.y, v1.z), v1.w));
    };
#pragma unroll
    for (int i = 0; i < 64; i++) acc1[i] = 0.0f;
    /* ptxas serializes the wgmma chains (C7518) when an issue sits in a branch of the loop
     * body, so the loop always issues two tiles and the tail is unrolled after it */
    issue(nt2, acc0);                                       /* nt > nt2 (sc_stream_init) */
    /* acc0: even tiles of pass 2. Window rows u & 3: pool2(t - 3) reads rows t - 4 .. t - 2
     * while epi(t - 1) writes row t - 1; epi(t) (row t - 4) comes after the next barrier */
    int t = pairs(
        nt2 + 1, nt,
        [&](int u) {
            if (u - 2 >= nt2) pool2(u - 2);
            epi(u, acc0);
        },
        [&](int u) { epi(u, acc1); });
    if (t < nt) {                                           /* tiles t - 1 and t left */
        issue(t, acc1);
        wg_wait<1>();
        wg_keep(acc0);
        if (t - 3 >= nt2) pool2(t - 3);
        epi(t - 1, acc0);
        wg_wait<0>();
        wg_keep(acc1);
        __syncthreads();                                    /* pool2(t - 3) read row t - 4 */
        epi(t, acc1);
        __syncthreads();
        pool2(t - 1);
    } else {                                                /* tile t - 1 left */
        wg_wait<0>();
        wg_keep(acc0);
        __syncthreads();                                    /* epi(t - 2) done everywhere */
        if (t - 3 >= nt2) pool2(t - 3);
        epi(t - 1, acc0);
        __syncthreads();
        pool(t - 1);
    }
#endif
}

static int ilog2_16(int G)
{
    for (int lg = 0; lg <= 4; lg++)
        if ((1 << lg) == G) return lg;
    return -1;
}

static size_t score_mma_smem(int d, int lg)
{
    return (size_t)(2 * CU_KT) * (d + 8) * 2 +
           (size_t)SC_NW * SC_MW * (16 >> lg) * (CU_KT + 1) * 4 + (size_t)SC_NW * 32 * 4;
}

/* Environment switches, read at every launch (the parity tests and benchmarks flip them):
 * SALA_CUDA_SCORE=old (the stage-1 kernel and split thresholds before V2), =v2 (V2 for every
 * launch: the default before the transposed kernel), =t (the transposed kernel wherever it
 * applies: G = 16, K1 stride 16); unset: the transposed kernel for split launches (decode; 2.5x
 * faster than V2 there at 1M) and V2 for prefill (1.24x faster than the transposed kernel
 * there; docs/CUDA.md "Stage 1 C"), =w or =wx (the wgmma kernel on every unsplit launch of
 * its shape; unset: on prefill launches, score_w_pick); SALA_CUDA_S1TPS=AxB (benchmarks: split ranges of A K2 / B K1
 * tiles); SALA_CUDA_TOPK=old (the 32-pass radix top-K for every launch), =filter (the filter
 * top-K for every launch) or =warp (the warp-per-row top-K for every launch; unset: for
 * launches of more than 16 queries, K <= 128, rows of at most TKW_MAX_NB blocks); SALA_CUDA_S1MERGE=old (the transposed kernel's pass-2 merge of the
 * pass-1 partials as before branch dec4: every query slot, one partial's loads at a time; the
 * default merges the valid queries only, with 16 ranges' loads in flight; same arithmetic). */
enum { SC_OLD, SC_V2, SC_T };
static int score_variant(int lg, int s1, bool split)
{
    if (cu_env_is("SALA_CUDA_SCORE", "old")) return SC_OLD;
    if (cu_env_is("SALA_CUDA_SCORE", "v2") || lg != 4 || s1 != 16) return SC_V2;
    if (cu_env_is("SALA_CUDA_SCORE", "t")) return SC_T;
    return split ? SC_T : SC_V2;
}
static bool topk_old(void) { return cu_env_is("SALA_CUDA_TOPK", "old"); }

template <int D>
static void score_mma_launch(cudaStream_t st, const score_args *a, dim3 grid, int var, int lg,
                             int mode, int tps, int nsplit1)
{
    if (var == SC_T) {
        score_t_kernel<D><<<grid, 128, (size_t)2 * CU_KT * D * 2, st>>>(
            *a, mode, tps, nsplit1, !cu_env_is("SALA_CUDA_S1MERGE", "old"));
        return;
    }
    const size_t sm = score_mma_smem(D, lg);
    if (var == SC_OLD) score_mma_kernel<D, false><<<grid, 128, sm, st>>>(*a, lg, mode, tps, nsplit1);
    else score_mma_kernel<D, true><<<grid, 128, sm, st>>>(*a, lg, mode, tps, nsplit1);
}

static void score_mma_go(cudaStream_t st, const score_args *a, dim3 grid, int var, int lg,
                         int mode, int tps, int nsplit1)
{
    if (a->d == 128) score_mma_launch<128>(st, a, grid, var, lg, mode, tps, nsplit1);
    else score_mma_launch<64>(st, a, grid, var, lg, mode, tps, nsplit1);
}

/* The wgmma kernel for an unsplit launch? Its shape (D = 128, G = 16, K1 stride 16, 16-byte
 * aligned Q / K1 / K2); SALA_CUDA_SCORE=w (or wx): on every such launch (-1 when the sm_90a
 * image does not run), any other value: never; unset: prefill launches (more than 16 queries). */
static int score_w_pick(const score_args *a, int lg)
{
    if (a->d != 128 || lg != 4 || a->s1 != 16 ||
        (((uintptr_t)a->Q | (uintptr_t)a->K1 | (uintptr_t)a->K2) & 15))
        return 0;
    const char *v = getenv("SALA_CUDA_SCORE");
    if (v && *v) {
        const int f = !strcmp(v, "w") || !strcmp(v, "wx");
        return f && !sc_w_ok ? -1 : f;
    }
    return sc_w_ok && a->n > 16;
}

cudaError_t k_score(cudaStream_t st, const score_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const int G = a->nh / a->nkv, lg = ilog2_16(G);
    if (lg >= 0 && (a->d == 64 || a->d == 128) && a->block == CU_KT && a->s1 > 0 &&
        CU_KT % a->s1 == 0 && !getenv("SALA_CUDA_WMMA")) {
        const int qc = SC_NW * SC_MW * (16 >> lg);          /* = 4 ST_QPW for the T kernel */
        const dim3 grid((a->n + qc - 1) / qc, a->nkv);
        int var = score_variant(lg, a->s1, false);
        /* few CTAs (decode): split both passes over the SMs when the stream is long. V2 splits
         * from 1 K2 / 2 K1 tiles on (ranges of >= 1 K2 / 2 K1 tiles): the 8K-32K decode shapes
         * too, which the old thresholds (4 / 8 tiles, ranges of 2 / 4) left on 2 CTAs. */
        const bool old = var == SC_OLD;
        const int min2 = old ? 4 : 1, min1 = old ? 8 : 2, mtps1 = old ? 2 : 1, mtps2 = old ? 4 : 2;
        const int64_t pmax = a->p0 + a->t0 + a->n - 1;
        const int64_t k2 = 4 * a->k1, s2 = 4 * a->s1;
        int64_t v2 = pmax + 1 < k2 ? 0 : (pmax + 1 - k2) / s2 + 1, v1 = (pmax / a->block + 1) *
                                                                        (a->block / a->s1);
        if (v2 > a->n2) v2 = a->n2;
        const int nt2 = (int)((v2 + CU_KT - 1) / CU_KT), nt1 = (int)((v1 + CU_KT - 1) / CU_KT);
        const int ctas = (int)(grid.x * grid.y), want = 264 / ctas;
        if (ctas <= 16 && nt2 >= min2 && nt1 >= min1 && !getenv("SALA_CUDA_NOSPLIT")) {
            var = score_variant(lg, a->s1, true);
            int tps1 = (nt2 + want - 1) / want;
            if (tps1 < mtps1) tps1 = mtps1;
            int tps2 = (nt1 + want - 1) / want;
            if (tps2 < mtps2) tps2 = mtps2;
            const char *ov = getenv("SALA_CUDA_S1TPS");
            int o1 = 0, o2 = 0;
            if (ov && sscanf(ov, "%dx%d", &o1, &o2) == 2 && o1 > 0 && o2 > 0) tps1 = o1, tps2 = o2;
            const int ns1 = (nt2 + tps1 - 1) / tps1, ns2 = (nt1 + tps2 - 1) / tps2;
            if ((size_t)ctas * ns1 * 256 <= SC_PART_CAP) {
                const dim3 g1(grid.x, grid.y, ns1), g2(grid.x, grid.y, ns2);
                score_mma_go(st, a, g1, var, lg, 1, tps1, ns1);
                score_mma_go(st, a, g2, var, lg, 2, tps2, ns1);
                return cudaGetLastError();
            }
        }
        const int wv = score_w_pick(a, lg);
        if (wv < 0) return cudaErrorInvalidDeviceFunction;  /* forced, but no sm_90a image */
        if (wv > 0) {
            score_w_kernel<<<grid, 128, score_w_smem(), st>>>(*a);
            return cudaGetLastError();
        }
        score_mma_go(st, a, grid, var, lg, 0, 0, 1);
        return cudaGetLastError();
    }
    const int qt = 64 / G;
    const dim3 grid((a->n + qt - 1) / qt, a->nkv);
    score_kernel<<<grid, 128, score_smem(a->d), st>>>(*a, qt);
    return cudaGetLastError();
}

/* ---- top-K ---- */
static __device__ __forceinline__ uint32_t fkey(float f)
{
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define TOPK_THREADS 256

static __device__ int block_sum_int(int v, int *red)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    int s = 0;
    for (int i = 0; i < TOPK_THREADS / 32; i++) s += red[i];
    return s;
}

/* Exclusive prefix sum of v over the block's threads (in thread order). */
static __device__ int block_excl_scan(int v, int *buf)
{
    __syncthreads();
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = 1; o < TOPK_THREADS; o <<= 1) {
        const int add = threadIdx.x >= (unsigned)o ? buf[threadIdx.x - o] : 0;
        __syncthreads();
        buf[threadIdx.x] += add;
        __syncthreads();
    }
    return buf[threadIdx.x] - v;
}

/* The K largest of nb keys key(b) (ties: lower b first), written ascending to out[0..K):
 * a bitwise radix select of the K-th key (32 counting passes), then an ordered compaction over
 * per-thread contiguous segments. Every thread of the CTA calls it (barriers inside). */
template <class KeyF>
static __device__ void topk_radix(const KeyF &key, int64_t nb, int K, int32_t *out, int *red,
                                  int *scan)
{
    uint32_t res = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const uint32_t cand = res | (1u << bit);
        int cnt = 0;
        for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) cnt += key(b) >= cand;
        if (block_sum_int(cnt, red) >= K) res = cand;
    }
    /* res = K-th largest key. Per-thread contiguous segments keep block-id order. */
    const int64_t seg = (nb + TOPK_THREADS - 1) / TOPK_THREADS;
    const int64_t b0 = threadIdx.x * seg, b1 = b0 + seg < nb ? b0 + seg : nb;
    int above = 0, ties = 0;
    for (int64_t b = b0; b < b1; b++) {
        const uint32_t k = key(b);
        above += k > res;
        ties += k == res;
    }
    const int above_all = block_sum_int(above, red);
    int tie_rank = block_excl_scan(ties, scan);
    const int ties_in = K - above_all;
    int nsel = 0;
    for (int64_t b = b0; b < b1; b++) {
        const uint32_t k = key(b);
        nsel += k > res || (k == res && tie_rank++ < ties_in);
    }
    int pos = block_excl_scan(nsel, scan);
    tie_rank -= ties;                                       /* restart the segment's tie rank */
    for (int64_t b = b0; b < b1; b++) {
        const uint32_t k = key(b);
        if (k > res || (k == res && tie_rank++ < ties_in)) out[pos++] = (int32_t)b;
    }
    const int total = block_sum_int(nsel, red);
    for (int k = total + threadIdx.x; k < K; k += blockDim.x) out[k] = -1;
}

static __global__ void __launch_bounds__(TOPK_THREADS) topk_kernel(topk_args a)
{
    extern __shared__ uint32_t keys[];
    __shared__ int red[TOPK_THREADS / 32];
    __shared__ int scan[TOPK_THREADS];
    const int t = a.t0 + blockIdx.x, g = blockIdx.y;
    const int64_t p = a.p0 + t, qb = p / a.block, nb = qb + 1;
    int32_t *out = a.sel + ((size_t)t * a.nkv + g) * a.K;
    if (nb <= a.K) {                                        /* every causal block fits */
        for (int k = threadIdx.x; k < a.K; k += blockDim.x) out[k] = k < nb ? k : -1;
        return;
    }
    const float *sc = a.score + ((size_t)t * a.nkv + g) * a.nbs;
    const int64_t local0 = qb - a.local;
    for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) {
        const float s = (b < a.init_blocks || b >= local0) ? INFINITY : sc[b];
        keys[b] = fkey(s);
    }
    __syncthreads();
    topk_radix([&](int64_t b) { return keys[b]; }, nb, a.K, out, red, scan);
}

/* ---- top-K, second version: threshold filter + exact rank among the candidates ----
 * A CTA per (query, group), TOPK_THREADS threads, no copy of the row in shared memory:
 *  1. each thread takes the max key of its strided share of the row (float4 loads when the row
 *     is 16-byte aligned); each warp sorts its 32 maxima (bitonic, in registers) and
 *     tau = the least over the warps of their kw-th largest, kw = ceil(K / warps). Every warp
 *     has kw threads holding a key >= tau, so at least K keys are >= tau;
 *  2. the keys >= tau (the candidates; ~2 K on random scores) go to shared memory as 64-bit
 *     (key, ~block) composites, so a larger composite = a larger key or an equal key at a
 *     lower block id;
 *  3. a candidate is selected iff fewer than K composites exceed its own: the same set as the
 *     radix select (lower block id wins ties), since every key outside is < tau <= the K-th;
 *  4. a selected block's output slot = the number of selected blocks with a lower id.
 * More than TK_CAP candidates (many equal keys): the radix select on the row in global memory.
 * Needs K <= TOPK_THREADS (k_topk checks). */
#define TK_CAP 2048
#define TK_FILTER_MIN_NB 2048
#define TK_WARPS (TOPK_THREADS / 32)

template <class F>
static __device__ __forceinline__ void row_keys(const float *sc, int nb, int init, int local0,
                                                const F &f)
{
    auto key = [&](int b, float s) {
        return (b < init || b >= local0) ? 0xFF800000u /* fkey(+inf) */ : fkey(s);
    };
    int b4 = 0;
    if (((uintptr_t)sc & 15) == 0) {
        const float4 *s4 = (const float4 *)sc;
        const int n4 = nb / 4;
#pragma unroll 4
        for (int i = threadIdx.x; i < n4; i += TOPK_THREADS) {
            const float4 v = __ldg(s4 + i);
            const int b = 4 * i;
            f(b, key(b, v.x));
            f(b + 1, key(b + 1, v.y));
            f(b + 2, key(b + 2, v.z));
            f(b + 3, key(b + 3, v.w));
        }
        b4 = 4 * n4;
    }
#pragma unroll 4
    for (int b = b4 + threadIdx.x; b < nb; b += TOPK_THREADS) f(b, key(b, __ldg(sc + b)));
}

static __global__ void __launch_bounds__(TOPK_THREADS) topk_filter_kernel(topk_args a)
{
    __shared__ __align__(16) unsigned long long cc[TK_CAP];
    __shared__ __align__(16) int sb[TOPK_THREADS];
    __shared__ int red[TOPK_THREADS / 32], scan[TOPK_THREADS];
    __shared__ uint32_t wt[TK_WARPS];
    __shared__ int ncand, nsel;
    const int t = a.t0 + blockIdx.x, g = blockIdx.y, K = a.K;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t p = a.p0 + t, qb = p / a.block, nb = qb + 1;
    int32_t *out = a.sel + ((size_t)t * a.nkv + g) * K;
    if (nb <= K) {                                          /* every causal block fits */
        for (int k = threadIdx.x; k < K; k += blockDim.x) out[k] = k < nb ? k : -1;
        return;
    }
    const float *sc = a.score + ((size_t)t * a.nkv + g) * a.nbs;
    const int64_t l0 = qb - a.local;
    const int local0 = (int)(l0 < 0 ? 0 : l0), n = (int)nb;  /* nb <= nbs: an int */
    if (threadIdx.x == 0) ncand = nsel = 0;
    uint32_t m = 0;                                         /* 0: below every key */
    row_keys(sc, n, a.init_blocks, local0, [&](int, uint32_t k) { m = k > m ? k : m; });
#pragma unroll
    for (int k = 2; k <= 32; k <<= 1)                       /* 1. descending bitonic sort */
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            const uint32_t o = __shfl_xor_sync(0xffffffffu, m, j);
            const bool keep_max = ((lane & k) == 0) == ((lane & j) == 0);
            m = keep_max ? (m > o ? m : o) : (m < o ? m : o);
        }
    const int kw = (K + TK_WARPS - 1) / TK_WARPS;
    if (lane == kw - 1) wt[w] = m;
    __syncthreads();
    uint32_t th = wt[0];
#pragma unroll
    for (int i = 1; i < TK_WARPS; i++) th = wt[i] < th ? wt[i] : th;
    row_keys(sc, n, a.init_blocks, local0, [&](int b, uint32_t k) {        /* 2. candidates */
        if (k >= th) {
            const int i = atomicAdd(&ncand, 1);
            if (i < TK_CAP) cc[i] = (unsigned long long)k << 32 | (uint32_t)~b;
        }
    });
    __syncthreads();
    const int C = ncand;
    if (C > TK_CAP) {                                       /* many equal keys: radix select */
        topk_radix([&](int64_t b) {
            return ((int)b < a.init_blocks || (int)b >= local0) ? 0xFF800000u : fkey(sc[b]);
        }, nb, K, out, red, scan);
        return;
    }
    if (threadIdx.x == 0 && (C & 1)) cc[C] = 0;             /* pad: below every composite */
    if (threadIdx.x >= K && threadIdx.x < ((K + 3) & ~3)) sb[threadIdx.x] = 0x7fffffff;
    __syncthreads();
    const ulonglong2 *c2 = (const ulonglong2 *)cc;
    for (int i = threadIdx.x; i < C; i += TOPK_THREADS) {    /* 3. rank among the candidates */
        const unsigned long long ci = cc[i];
        int r = 0;
        for (int j = 0; j < (C + 1) / 2; j++) {
            const ulonglong2 v = c2[j];
            r += (v.x > ci) + (v.y > ci);
        }
        if (r < K) sb[atomicAdd(&nsel, 1)] = (int)~(uint32_t)ci;
    }
    __syncthreads();                                        /* nsel == K (C >= K) */
    if (threadIdx.x < K) {                                  /* 4. ascending block ids */
        const int bi = sb[threadIdx.x];
        const int4 *s4 = (const int4 *)sb;
        int pos = 0;
        for (int j = 0; j < (K + 3) / 4; j++) {
            const int4 v = s4[j];
            pos += (v.x < bi) + (v.y < bi) + (v.z < bi) + (v.w < bi);
        }
        out[pos] = bi;
    }
}

/* ---- top-K, third version: a warp per (query, group) row, no CTA barrier ----
 *  1. each lane keeps the KW = ceil(K / 32) largest keys of its strided share of the row (a
 *     max/min chain in registers); tau = the least over the lanes of their KW-th largest, so at
 *     least 32 KW >= K keys are >= tau;
 *  2. the keys >= tau go, in block order (ballot + prefix count), to the warp's TKW_CAP slots of
 *     shared memory as (key, block) pairs (~2-3 K of them on random scores);
 *  3. warp_topk on them: a bitwise radix select of the K-th key (32 passes of warp sums), then
 *     one ordered pass taking the keys above it and the first ties (lower block id wins), which
 *     writes the selected block ids ascending. More than TKW_CAP candidates (many equal keys):
 *     warp_topk on the whole row in global memory. The same set and order as topk_radix.
 * A CTA holds TKW_WARPS rows. For prefill launches (many rows); decode keeps the filter. */
#define TKW_WARPS 8
#define TKW_CAP 512
#define TKW_MAX 4                     /* KW <= 4: K <= 128 */
/* Longest rows (blocks) the warp kernel takes by default: on the H100 it was 3.8x faster than
 * the radix kernel at 128K (rows <= 2,048 blocks) and 2x faster than radix + filter at 256K
 * (<= 4,096), but 2.3x slower than the filter over a 1M prefill (rows up to 16K blocks: a lane
 * walks 1/32 of the row twice, the filter's threads 1/256) */
#define TKW_MAX_NB 4096

/* The K largest of n keys key(i) (i ascending = block order; ties: lower i first), their ids
 * id(i) written ascending to out[0..K); n >= K. Every lane of the warp calls it. */
template <class KeyF, class IdF>
static __device__ void warp_topk(const KeyF &key, const IdF &id, int n, int K, int32_t *out)
{
    const int lane = threadIdx.x & 31;
    const unsigned below = (1u << lane) - 1;
    uint32_t res = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const uint32_t cand = res | (1u << bit);
        int cnt = 0;
        for (int i = lane; i < n; i += 32) cnt += key(i) >= cand;
        if ((int)__reduce_add_sync(0xffffffffu, (unsigned)cnt) >= K) res = cand;
    }
    int above = 0;
    for (int i = lane; i < n; i += 32) above += key(i) > res;
    const int ties_in = K - (int)__reduce_add_sync(0xffffffffu, (unsigned)above);
    int ties = 0, pos = 0;                                  /* warp-uniform running counts */
    for (int i0 = 0; i0 < n; i0 += 32) {
        const int i = i0 + lane;
        const uint32_t k = i < n ? key(i) : 0;
        const bool eq = i < n && k == res;
        const unsigned be = __ballot_sync(0xffffffffu, eq);
        const bool sel = (i < n && k > res) || (eq && ties + __popc(be & below) < ties_in);
        const unsigned bs = __ballot_sync(0xffffffffu, sel);
        if (sel) out[pos + __popc(bs & below)] = id(i);
        ties += __popc(be);
        pos += __popc(bs);
    }
}

template <int KW>
static __global__ void __launch_bounds__(TKW_WARPS * 32) topk_warp_kernel(topk_args a)
{
    __shared__ unsigned long long cc[TKW_WARPS][TKW_CAP];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const unsigned below = (1u << lane) - 1;
    const int r = blockIdx.x * TKW_WARPS + w, K = a.K;
    if (r >= a.n * a.nkv) return;                           /* warp-uniform; no CTA barrier */
    const int t = a.t0 + r / a.nkv, g = r % a.nkv;
    const int64_t p = a.p0 + t, qb = p / a.block, nb = qb + 1;
    int32_t *out = a.sel + ((size_t)t * a.nkv + g) * K;
    if (nb <= K) {                                          /* every causal block fits */
        for (int k = lane; k < K; k += 32) out[k] = k < nb ? k : -1;
        return;
    }
    const float *sc = a.score + ((size_t)t * a.nkv + g) * a.nbs;
    const int64_t l0 = qb - a.local;
    const int local0 = (int)(l0 < 0 ? 0 : l0), n = (int)nb, init = a.init_blocks;
    auto key = [&](int b) {
        return (b < init || b >= local0) ? 0xFF800000u /* fkey(+inf) */ : fkey(__ldg(sc + b));
    };
    uint32_t m[KW];                                         /* 1. descending, 0: below all */
#pragma unroll
    for (int j = 0; j < KW; j++) m[j] = 0;
    for (int b = lane; b < n; b += 32) {
        uint32_t x = key(b);
#pragma unroll
        for (int j = 0; j < KW; j++) {
            const uint32_t hi = m[j] > x ? m[j] : x, lo = m[j] > x ? x : m[j];
            m[j] = hi;
            x = lo;
        }
    }
    const uint32_t tau = __reduce_min_sync(0xffffffffu, m[KW - 1]);
    unsigned long long *c = cc[w];
    int C = 0;                                              /* 2. candidates in block order */
    for (int b0 = 0; b0 < n; b0 += 32) {
        const int b = b0 + lane;
        const uint32_t k = b < n ? key(b) : 0;
        const bool in = b < n && k >= tau;
        const unsigned bal = __ballot_sync(0xffffffffu, in);
        const int at = C + __popc(bal & below);
        if (in && at < TKW_CAP) c[at] = (unsigned long long)k << 32 | (uint32_t)b;
        C += __popc(bal);
    }
    __syncwarp();
    if (C > TKW_CAP)                                        /* many equal keys: the whole row */
        warp_topk(key, [](int b) { return b; }, n, K, out);
    else
        warp_topk([&](int i) { return (uint32_t)(c[i] >> 32); },
                  [&](int i) { return (int)(uint32_t)c[i]; }, C, K, out);
}

cudaError_t k_topk(cudaStream_t st, const topk_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const dim3 grid(a->n, a->nkv);
    /* the filter where it wins (H100): few queries (decode: fewer barriers) and long rows; on
     * short rows its fixed cost (warp sorts, candidate ranks) exceeds the 32 radix passes */
    const int64_t nb_max = (a->p0 + a->t0 + a->n - 1) / a->block + 1;
    const int kw = (a->K + 31) / 32;
    const bool force_filter = cu_env_is("SALA_CUDA_TOPK", "filter");
    if (!topk_old() && !force_filter && a->K >= 1 && kw <= TKW_MAX &&
        (cu_env_is("SALA_CUDA_TOPK", "warp") || (a->n > 16 && nb_max <= TKW_MAX_NB))) {
        const unsigned rows = (unsigned)a->n * (unsigned)a->nkv;
        const dim3 gw((rows + TKW_WARPS - 1) / TKW_WARPS);
        switch (kw) {
        case 1: topk_warp_kernel<1><<<gw, TKW_WARPS * 32, 0, st>>>(*a); break;
        case 2: topk_warp_kernel<2><<<gw, TKW_WARPS * 32, 0, st>>>(*a); break;
        case 3: topk_warp_kernel<3><<<gw, TKW_WARPS * 32, 0, st>>>(*a); break;
        default: topk_warp_kernel<4><<<gw, TKW_WARPS * 32, 0, st>>>(*a); break;
        }
        return cudaGetLastError();
    }
    const bool filter = force_filter ||
                        (!topk_old() && (a->n <= 16 || nb_max > TK_FILTER_MIN_NB));
    if (filter && a->K >= 1 && a->K <= TOPK_THREADS)
        topk_filter_kernel<<<grid, TOPK_THREADS, 0, st>>>(*a);
    else
        topk_kernel<<<grid, TOPK_THREADS, (size_t)a->nbs * 4, st>>>(*a);
    return cudaGetLastError();
}

cudaError_t cu_attn_init(void);

cudaError_t cu_kernels_init(void)
{
    cudaError_t err = cu_attn_init();
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(score_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)score_smem(256));
    if (err != cudaSuccess) return err;
    const int sm128 = (int)score_mma_smem(128, 0), sm64 = (int)score_mma_smem(64, 0);
    const cudaFuncAttribute dyn = cudaFuncAttributeMaxDynamicSharedMemorySize;
    if ((err = cudaFuncSetAttribute(score_mma_kernel<128, true>, dyn, sm128)) != cudaSuccess ||
        (err = cudaFuncSetAttribute(score_mma_kernel<128, false>, dyn, sm128)) != cudaSuccess ||
        (err = cudaFuncSetAttribute(score_mma_kernel<64, true>, dyn, sm64)) != cudaSuccess ||
        (err = cudaFuncSetAttribute(score_mma_kernel<64, false>, dyn, sm64)) != cudaSuccess)
        return err;
    score_w_probe<<<1, 1>>>();
    int arch = 0;
    if ((err = cudaGetLastError()) != cudaSuccess ||
        (err = cudaMemcpyFromSymbol(&arch, sc_w_arch, sizeof(arch))) != cudaSuccess)
        return err;
    sc_w_ok = arch == 1;
    if ((err = cu_gemm90_init()) != cudaSuccess) return err;
    if ((err = cu_dense90_init()) != cudaSuccess) return err;
    if (sc_w_ok &&
        (err = cudaFuncSetAttribute(score_w_kernel, dyn, (int)score_w_smem())) != cudaSuccess)
        return err;
    return cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                200 * 1024);
}

