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
 *   the K-th largest score by a radix select on order-preserving keys, then every block above it
 *   plus the lowest ids equal to it (lower block id wins ties), written ascending, -1 padded.
 * fp32 sums (the CPU twin sums in double), so exact ties and near-ties may order differently. */
#include "engine/cuda/cu_mma.cuh"
#include "engine/cuda/cu_wmma.cuh"

#include <math.h>
#include <stdlib.h>

/* Merge a row's running (max m, sum l) of exp2 terms across the 4 lanes of an mma quad. */
static __device__ __forceinline__ void quad_merge_ml(float &m, float &l)
{
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, o);
        const float lo = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, mo);
        l = mn == -INFINITY ? 0.0f : l * exp2f(m - mn) + lo * exp2f(mo - mn);
        m = mn;
    }
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
            const float *pw = Pw + qi * (CU_KT + 1) + r * bl;
            float m = -INFINITY;
            for (int k = 0; k <= r; k++) m = fmaxf(m, pw[k]);
            a.score[((size_t)(tq0 + qi) * a.nkv + g) * a.nbs + b] = m;
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

template <int D>
static __global__ void __launch_bounds__(128) score_mma_kernel(score_args a, int lg, int mode,
                                                               int tps, int nsplit1)
{
    constexpr int LDS = D + 8, KS = D / 16, MW = SC_MW, NW = SC_NW;
    const int G = 1 << lg, QPT = 16 >> lg, QPW = MW * QPT, QC = NW * QPW;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Kb = (bf16 *)smraw;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2;
    float *Pw = (float *)(Kb + 2 * 64 * LDS) + w * QPW * (CU_KT + 1);
    const int g = blockIdx.y, tq0 = a.t0 + blockIdx.x * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const int64_t pmax = a.p0 + tq0 + nq - 1, qbmax = pmax / a.block;
    if (a.Ksel > 0 && qbmax + 1 <= a.Ksel) return;          /* top-K takes every block */
    const int k2 = 4 * a.k1, s2 = 4 * a.s1, r = a.block / a.s1;
    const size_t krow = (size_t)a.nkv * D;
    const float sl = a.scale * 1.4426950408889634f;

    uint32_t qa[MW][KS][4];
    int v2r[MW][2];
#pragma unroll
    for (int mt = 0; mt < MW; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int row = rq + 8 * hf, qc = w * QPW + mt * QPT + (row >> lg), h = row & (G - 1);
            const bool ok = qc < nq;
            const int64_t p = a.p0 + tq0 + qc;
            int64_t v2 = nwin(p + 1, k2, s2);
            if (v2 > a.n2) v2 = a.n2;
            v2r[mt][hf] = ok ? (int)v2 : 0;
            const bf16 *qrow = a.Q + ((size_t)(tq0 + (ok ? qc : 0)) * a.nh + g * G + h) * D;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int col = ks * 16 + 2 * qd;
                qa[mt][ks][hf] = ok ? *(const uint32_t *)(qrow + col) : 0u;
                qa[mt][ks][2 + hf] = ok ? *(const uint32_t *)(qrow + col + 8) : 0u;
            }
        }
    int64_t v2max = nwin(pmax + 1, k2, s2), v1max = nwin(pmax + 1, a.k1, a.s1);
    if (v2max > a.n2) v2max = a.n2;
    if (v1max > a.n1) v1max = a.n1;
    int64_t nblk = a.local >= 0 ? qbmax - a.local : qbmax + 1;
    if (nblk < 0) nblk = 0;
    const int nt2 = (int)((v2max + CU_KT - 1) / CU_KT);
    const int nt1 = (int)((nblk * r + CU_KT - 1) / CU_KT);
    const int nt = nt1 > 0 ? nt2 + nt1 : 0;                 /* no block to score: nothing */
    if (nt == 0) return;
    int tbeg = 0, tlast = nt, twr = 0;
    if (mode == 1) {
        tbeg = (int)blockIdx.z * tps;
        tlast = tbeg + tps < nt2 ? tbeg + tps : nt2;
    } else if (mode == 2) {
        twr = nt2 + (int)blockIdx.z * tps;
        if (twr >= nt) return;
        tbeg = blockIdx.z > 0 ? twr - 1 : twr;
        tlast = twr + tps < nt ? twr + tps : nt;
    }
    const size_t pbase = (((size_t)blockIdx.x * gridDim.y + g) * nsplit1) * 256 + w * 32 + rq;
    if (lane < QPW) Pw[lane * (CU_KT + 1)] = -INFINITY;

    auto load = [&](int t) {
        bf16 *dst = Kb + (t & 1) * CU_KT * LDS;
        if (t < nt2) {
            const int64_t c0 = (int64_t)t * CU_KT, left = v2max - c0;
            tile_async<D>(dst, a.K2 + c0 * krow + (size_t)g * D, krow,
                          (int)(left < CU_KT ? left : CU_KT), 128);
        } else {
            const int64_t i0 = (int64_t)(t - nt2) * CU_KT, left = v1max - i0;
            const int nk = (int)(left <= 0 ? 0 : (left < CU_KT ? left : CU_KT));
            tile_async<D>(dst, a.K1 + (nk > 0 ? i0 * krow : 0) + (size_t)g * D, krow, nk, 128);
        }
        cp_async_commit();
    };

    float mrow[MW][2], lrow[MW][2];
#pragma unroll
    for (int mt = 0; mt < MW; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            mrow[mt][hf] = -INFINITY;
            lrow[mt][hf] = 0.0f;
        }
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
        if (t + 1 < tlast) {
            load(t + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Kt = Kb + (t & 1) * CU_KT * LDS;
        float acc[MW][8][4];
#pragma unroll
        for (int mt = 0; mt < MW; mt++)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.0f;
        const uint32_t kbase =
            smem_u32(Kt + (((lane >> 4) & 1) * 8 + (lane & 7)) * LDS + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int nc = 0; nc < 4; nc++) {
                uint32_t b[4];
                ldsm_x4(b, kbase + (uint32_t)((nc * 16 * LDS + ks * 16) * 2));
#pragma unroll
                for (int mt = 0; mt < MW; mt++) {
                    mma_bf16(acc[mt][2 * nc], qa[mt][ks], b[0], b[1]);
                    mma_bf16(acc[mt][2 * nc + 1], qa[mt][ks], b[2], b[3]);
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
                    const float mo = mrow[mt][hf], mn = fmaxf(mo, mx);
                    if (mn != -INFINITY) {
                        float s = 0.0f;
#pragma unroll
                        for (int i = 0; i < 16; i++) s += exp2f(x[i] - mn);
                        lrow[mt][hf] = lrow[mt][hf] * exp2f(mo - mn) + s;
                        mrow[mt][hf] = mn;
                    }
                }
            continue;
        }
        if (t == nt2 && mode == 0) {                        /* lse (log2 domain) per row */
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float m = mrow[mt][hf], l = lrow[mt][hf];
                    quad_merge_ml(m, l);
                    mrow[mt][hf] = l > 0.0f ? m + log2f(l) : -INFINITY;
                }
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
                        v[j * 2 + e] = exp2f(acc[mt][j][e] * sl - mrow[mt][0]) +
                                       exp2f(acc[mt][j][2 + e] * sl - mrow[mt][1]);
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
                const int64_t p = a.p0 + tq0 + qc;
                int64_t v1 = nwin(p + 1, a.k1, a.s1);
                if (v1 > a.n1) v1 = a.n1;
                const bool nok2 = nwin(p + 1, k2, s2) == 0;
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
                    const int64_t p = a.p0 + tq0 + w * QPW + qw;
                    int64_t v1 = nwin(p + 1, a.k1, a.s1);
                    if (v1 > a.n1) v1 = a.n1;
                    const bool nok2 = nwin(p + 1, k2, s2) == 0;
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            float val = exp2f(acc[mt][j][2 * hf + e] * sl - mrow[mt][hf]);
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
        const int bpt = CU_KT / r;
        for (int idx = t >= twr ? lane : QPW * bpt; idx < QPW * bpt; idx += 32) {
            const int qw = idx / bpt, bl = idx % bpt, qc = w * QPW + qw;
            if (qc >= nq) continue;
            const int64_t p = a.p0 + tq0 + qc, b = i0 / r + bl;
            if (b > p / a.block) continue;
            const float *pw = Pw + qw * (CU_KT + 1) + r * bl;
            float m = -INFINITY;
            for (int k = 0; k <= r; k++) m = fmaxf(m, pw[k]);
            a.score[((size_t)(tq0 + qc) * a.nkv + g) * a.nbs + b] = m;
        }
        __syncwarp();
        if (lane < QPW) Pw[lane * (CU_KT + 1)] = Pw[lane * (CU_KT + 1) + CU_KT];
        __syncwarp();
    }
    if (mode == 1) {                                        /* this range's (max, sum) per row */
#pragma unroll
        for (int mt = 0; mt < MW; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                float m = mrow[mt][hf], l = lrow[mt][hf];
                quad_merge_ml(m, l);
                if (qd == 0) {
                    float *pp = sc_part + pbase + (size_t)blockIdx.z * 256 + mt * 16 + hf * 8;
                    pp[0] = m;
                    pp[128] = l;
                }
            }
    }
}

static int ilog2_16(int G)
{
    for (int lg = 0; lg <= 4; lg++)
        if ((1 << lg) == G) return lg;
    return -1;
}

static size_t score_mma_smem(int d, int lg)
{
    return (size_t)2 * CU_KT * (d + 8) * 2 +
           (size_t)SC_NW * SC_MW * (16 >> lg) * (CU_KT + 1) * 4;
}

cudaError_t k_score(cudaStream_t st, const score_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const int G = a->nh / a->nkv, lg = ilog2_16(G);
    if (lg >= 0 && (a->d == 64 || a->d == 128) && a->block == CU_KT && !getenv("SALA_CUDA_WMMA")) {
        const int qc = SC_NW * SC_MW * (16 >> lg);
        const dim3 grid((a->n + qc - 1) / qc, a->nkv);
        const size_t sm = score_mma_smem(a->d, lg);
        /* few CTAs (decode): split both passes over the SMs when the stream is long */
        const int64_t pmax = a->p0 + a->t0 + a->n - 1;
        const int64_t k2 = 4 * a->k1, s2 = 4 * a->s1;
        int64_t v2 = pmax + 1 < k2 ? 0 : (pmax + 1 - k2) / s2 + 1, v1 = (pmax / a->block + 1) *
                                                                        (a->block / a->s1);
        if (v2 > a->n2) v2 = a->n2;
        const int nt2 = (int)((v2 + CU_KT - 1) / CU_KT), nt1 = (int)((v1 + CU_KT - 1) / CU_KT);
        const int ctas = (int)(grid.x * grid.y), want = 264 / ctas;
        if (ctas <= 16 && nt2 >= 4 && nt1 >= 8 && !getenv("SALA_CUDA_NOSPLIT")) {
            int tps1 = (nt2 + want - 1) / want;
            if (tps1 < 2) tps1 = 2;
            const int ns1 = (nt2 + tps1 - 1) / tps1;
            int tps2 = (nt1 + want - 1) / want;
            if (tps2 < 4) tps2 = 4;
            const int ns2 = (nt1 + tps2 - 1) / tps2;
            if ((size_t)ctas * ns1 * 256 <= SC_PART_CAP) {
                const dim3 g1(grid.x, grid.y, ns1), g2(grid.x, grid.y, ns2);
                if (a->d == 128) {
                    score_mma_kernel<128><<<g1, 128, sm, st>>>(*a, lg, 1, tps1, ns1);
                    score_mma_kernel<128><<<g2, 128, sm, st>>>(*a, lg, 2, tps2, ns1);
                } else {
                    score_mma_kernel<64><<<g1, 128, sm, st>>>(*a, lg, 1, tps1, ns1);
                    score_mma_kernel<64><<<g2, 128, sm, st>>>(*a, lg, 2, tps2, ns1);
                }
                return cudaGetLastError();
            }
        }
        if (a->d == 128) score_mma_kernel<128><<<grid, 128, sm, st>>>(*a, lg, 0, 0, 1);
        else score_mma_kernel<64><<<grid, 128, sm, st>>>(*a, lg, 0, 0, 1);
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
    uint32_t res = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const uint32_t cand = res | (1u << bit);
        int cnt = 0;
        for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) cnt += keys[b] >= cand;
        if (block_sum_int(cnt, red) >= a.K) res = cand;
    }
    /* res = K-th largest key. Per-thread contiguous segments keep block-id order. */
    const int64_t seg = (nb + TOPK_THREADS - 1) / TOPK_THREADS;
    const int64_t b0 = threadIdx.x * seg, b1 = b0 + seg < nb ? b0 + seg : nb;
    int above = 0, ties = 0;
    for (int64_t b = b0; b < b1; b++) {
        above += keys[b] > res;
        ties += keys[b] == res;
    }
    const int above_all = block_sum_int(above, red);
    int tie_rank = block_excl_scan(ties, scan);
    const int ties_in = a.K - above_all;
    int nsel = 0;
    for (int64_t b = b0; b < b1; b++) {
        const uint32_t k = keys[b];
        nsel += k > res || (k == res && tie_rank++ < ties_in);
    }
    int pos = block_excl_scan(nsel, scan);
    tie_rank -= ties;                                       /* restart the segment's tie rank */
    for (int64_t b = b0; b < b1; b++) {
        const uint32_t k = keys[b];
        if (k > res || (k == res && tie_rank++ < ties_in)) out[pos++] = (int32_t)b;
    }
    const int total = block_sum_int(nsel, red);
    for (int k = total + threadIdx.x; k < a.K; k += blockDim.x) out[k] = -1;
}

cudaError_t k_topk(cudaStream_t st, const topk_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const dim3 grid(a->n, a->nkv);
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
    err = cudaFuncSetAttribute(score_mma_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)score_mma_smem(128, 0));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(score_mma_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)score_mma_smem(64, 0));
    if (err != cudaSuccess) return err;
    return cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                200 * 1024);
}

