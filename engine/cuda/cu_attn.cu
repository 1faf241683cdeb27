/* cu_attn.cu: causal softmax attention of the sparse layers over the bf16 K/V cache, one kernel
 * for both regimes (SALA-SPEC §3.6; twins: engine/cpu/attention.c cpu_attn_dense and
 * engine/cpu/infllm.c infllm_attend):
 *   dense   a CTA takes 64 rows = (64/G queries) x (G q heads of one kv group) and walks the key
 *           tiles 0..p (flash-attention style online softmax); for prefill (d = 128, more than
 *           16 queries) dense_kernel: 128 consecutive queries of one q head a CTA, or on
 *           sm_90a the wgmma dense90_kernel (cu_dense90.cu) with the same CTA shape;
 *   sparse  a CTA takes one query's G heads (16 rows, G <= 16) and walks its selected blocks.
 * Scores and the softmax are fp32, Q/K/V and the probabilities bf16 on the tensor cores (WMMA);
 * the output accumulator is fp32 in shared memory. Key j is used iff j <= p (token causal mask). */
#include "engine/cuda/cu_mma.cuh"
#include "engine/cuda/cu_wmma.cuh"

#include <cudaTypedefs.h>

#include <atomic>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- flash attention on registers (mma.sync m16n8k16), D in {64, 128}, G a power of two <= 16.
 * A warp owns one m16 tile (rows qi*G + h: one query when G = 16) with the fp32 output
 * accumulator (16 x D) and the row max/sum in registers (FlashAttention-2 layout: the score
 * accumulator is re-packed as the bf16 A operand of P·V without leaving registers). */

/* A warp's running softmax state for its m16 tile: the fp32 output accumulator o (16 x D, C
 * fragments), the row max mrow (log2 domain) and the thread-partial row sum lrow (rows rq, rq+8). */
template <int D> struct flash_acc {
    float o[D / 8][4];
    float mrow[2], lrow[2];
    __device__ __forceinline__ flash_acc()
    {
#pragma unroll
        for (int i = 0; i < D / 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[i][e] = 0.0f;
        mrow[0] = mrow[1] = -INFINITY;
        lrow[0] = lrow[1] = 0.0f;
    }
};

/* Last valid key column of a tile for a row at p - j0 (clamped into int: -1 .. 64). */
static __device__ __forceinline__ int flash_lim(int64_t d)
{
    return d < -1 ? -1 : (d > CU_KT ? CU_KT : (int)d);
}

/* flash_block (= flash_qk, then flash_sv): one key tile of 64 for the warp's m16 tile: S = Q Kᵀ
 * (Q fragments from qf(ks, q)), masked to col <= lim[hf] for rows rq + 8 hf (lim < 0: the row takes nothing from this tile), online
 * softmax in the exp2 domain (sl = scale·log2 e), o = o·corr + P V with P in bf16. Kt, Vt: padded
 * (64, D + 8) shared tiles, or with SW unpadded 128B-swizzled tiles as TMA writes them
 * (SWIZZLE_128B, boxes of 64 columns x 64 rows, 1 KB aligned: D / 64 boxes of 64 rows x 128
 * bytes; 16-byte chunk c of row r of a box lives at chunk c ^ (r & 7) of that row). The same
 * arithmetic; only the ldmatrix row addresses differ. An ldmatrix lane's row is r = 16 i + 8 x +
 * (lane & 7), so r & 7 = lane & 7, and its chunk 2 k + bit (k compile-time) is swizzled to
 * (2 k & 7) ^ (bit ^ (lane & 7)): one XOR with a per-lane constant. */
/* S = Q Kᵀ of the tile into s (the score accumulator, unscaled). */
template <int D, bool SW = false, typename QF>
static __device__ __forceinline__ void flash_qk(const QF &qf, const bf16 *Kt, float (&s)[8][4])
{
    constexpr int LDS = D + 8, KS = D / 16;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[j][e] = 0.0f;
    const int krow = ((lane >> 4) & 1) * 8 + (lane & 7), kcol = (lane >> 3) & 1;
    const uint32_t kbase = SW ? smem_u32(Kt) + krow * 128 : smem_u32(Kt + krow * LDS + kcol * 8);
    const uint32_t kx = (uint32_t)((kcol ^ (lane & 7)) << 4);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        uint32_t q[4];
        qf(ks, q);
#pragma unroll
        for (int nc = 0; nc < 4; nc++) {
            uint32_t b[4];
            ldsm_x4(b, kbase + (SW ? (uint32_t)((ks >> 2) * 8192 + nc * 2048) +
                                         ((uint32_t)((2 * ks & 7) << 4) ^ kx)
                                   : (uint32_t)((nc * 16 * LDS + ks * 16) * 2)));
            mma_bf16(s[2 * nc], q, b[0], b[1]);
            mma_bf16(s[2 * nc + 1], q, b[2], b[3]);
        }
    }
}

/* The rest of flash_block for scores s of flash_qk, first half: mask to col <= lim[hf], online
 * softmax (s becomes P, unrounded), o = o·corr. */
template <int D>
static __device__ __forceinline__ void flash_soft(float (&s)[8][4], const int lim[2], float sl,
                                                  flash_acc<D> &acc)
{
    float (&o)[D / 8][4] = acc.o;
    float *mrow = acc.mrow, *lrow = acc.lrow;
    constexpr int ND = D / 8;
    const int lane = threadIdx.x & 31, qd = lane & 3;
    float corr[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = j * 8 + 2 * qd + e;
                const float v = col <= lim[hf] ? s[j][2 * hf + e] * sl : -INFINITY;
                s[j][2 * hf + e] = v;
                mx = fmaxf(mx, v);
            }
        mx = quad_max(mx);
        const float mn = fmaxf(mrow[hf], mx), mu = mn == -INFINITY ? 0.0f : mn;
        corr[hf] = exp2f(mrow[hf] - mu);
        mrow[hf] = mn;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = exp2f(s[j][2 * hf + e] - mu);
                s[j][2 * hf + e] = pe;
                sum += pe;
            }
        lrow[hf] = lrow[hf] * corr[hf] + sum;
    }
#pragma unroll
    for (int i = 0; i < ND; i++) {
        o[i][0] *= corr[0];
        o[i][1] *= corr[0];
        o[i][2] *= corr[1];
        o[i][3] *= corr[1];
    }
}

/* Second half, keys 16 kk .. 16 kk + 15: o += P V with P in bf16. Those 16 V rows start kko
 * bytes past Vt in shared memory: padded tiles (row stride D + 8), or with SW 128B-swizzled
 * rows of 128 bytes whose 64-column boxes lie bs bytes apart (8192 in a 64-row TMA tile, 2048 in
 * a 16-row piece). */
template <int D, bool SW = false>
static __device__ __forceinline__ void flash_pv16(const float (&s)[8][4], int kk, const bf16 *Vt,
                                                  uint32_t kko, uint32_t bs, flash_acc<D> &acc)
{
    constexpr int LDS = D + 8;
    const int lane = threadIdx.x & 31;
    const int vrow = ((lane >> 3) & 1) * 8 + (lane & 7), vcol = (lane >> 4) & 1;
    const uint32_t vbase = SW ? smem_u32(Vt) + vrow * 128 : smem_u32(Vt + vrow * LDS + vcol * 8);
    const uint32_t vx = (uint32_t)((vcol ^ (lane & 7)) << 4);
    uint32_t pa[4];
    pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
    pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
    pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dn = 0; dn < D / 16; dn++) {
        uint32_t b[4];
        ldsm_x4_t(b, vbase + (SW ? (uint32_t)((dn >> 2) * bs + kko) +
                                       ((uint32_t)((2 * dn & 7) << 4) ^ vx)
                                 : (uint32_t)(kko + dn * 32)));
        mma_bf16(acc.o[2 * dn], pa, b[0], b[1]);
        mma_bf16(acc.o[2 * dn + 1], pa, b[2], b[3]);
    }
}

/* Both halves over the whole tile Vt. */
template <int D, bool SW = false>
static __device__ __forceinline__ void flash_sv(float (&s)[8][4], const bf16 *Vt, const int lim[2],
                                                float sl, flash_acc<D> &acc)
{
    flash_soft<D>(s, lim, sl, acc);
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
        flash_pv16<D, SW>(s, kk, Vt, (uint32_t)(SW ? kk * 2048 : kk * 16 * (D + 8) * 2), 8192,
                          acc);
}

/* The whole tile (the contract above flash_qk). */
template <int D, bool SW = false, typename QF>
static __device__ __forceinline__ void flash_block(const QF &qf, const bf16 *Kt, const bf16 *Vt,
                                                   const int lim[2], float sl, flash_acc<D> &acc)
{
    float s[8][4];
    flash_qk<D, SW>(qf, Kt, s);
    flash_sv<D, SW>(s, Vt, lim, sl, acc);
}

/* Rows rq + 8 hf of the warp's m16 tile = (query tq0 + qbase + (row >> lg), head row & (G-1)) of
 * group g: position prow, query within the tile qwr, valid rv (query < nq); and the Q fragment
 * of k-step ks (zero for invalid rows) through put(ks, hf, lo, hi) (A-operand registers hf, 2+hf). */
template <int D, typename PUT>
static __device__ __forceinline__ void flash_q(const attn_args &a, int lg, int g, int tq0,
                                               int qbase, int nq, const PUT &put, int64_t prow[2],
                                               int qwr[2], bool rv[2])
{
    const int lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2, G = 1 << lg;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int row = rq + 8 * hf, qw = row >> lg, qc = qbase + qw, h = row & (G - 1);
        rv[hf] = qc < nq;
        qwr[hf] = qw;
        prow[hf] = a.p0 + tq0 + qc;
        const bf16 *qrow = a.Q + ((size_t)(tq0 + (rv[hf] ? qc : 0)) * a.nh + g * G + h) * D;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const int col = ks * 16 + 2 * qd;
            put(ks, hf, rv[hf] ? *(const uint32_t *)(qrow + col) : 0u,
                rv[hf] ? *(const uint32_t *)(qrow + col + 8) : 0u);
        }
    }
}

/* o / l of the warp's valid rows -> a.O (T, nh, D) fp32. */
template <int D>
static __device__ __forceinline__ void flash_store(const attn_args &a, int lg, int g, int tq0,
                                                   int qbase, const flash_acc<D> &acc,
                                                   const int qwr[2], const bool rv[2])
{
    const float (&o)[D / 8][4] = acc.o;
    const float *lrow = acc.lrow;
    const int lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2, G = 1 << lg;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const float l = quad_sum(lrow[hf]);
        if (!rv[hf]) continue;
        const int row = rq + 8 * hf, h = row & (G - 1);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float *orow = a.O + ((size_t)(tq0 + qbase + qwr[hf]) * a.nh + g * G + h) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(float2 *)(orow + i * 8 + 2 * qd) =
                make_float2(o[i][2 * hf] * inv, o[i][2 * hf + 1] * inv);
    }
}

/* Block b's K and V rows of kv group g (rows past `last`, the last position any query of the
 * caller may read, zero-filled) -> the padded shared tiles Kt, Vt by cp.async; threads tid = 0 ..
 * nthr-1 take part. The caller commits or arrives. */
template <int D>
static __device__ __forceinline__ void kv_tiles_async(const attn_args &a, int g, int b,
                                                      int64_t last, bf16 *Kt, bf16 *Vt, int nthr,
                                                      int tid)
{
    const size_t krow = (size_t)a.nkv * D;
    const int64_t j0 = (int64_t)b * CU_KT, left = last - j0 + 1;
    const int nk = (int)(left < CU_KT ? left : CU_KT);
    const size_t off = (size_t)j0 * krow + (size_t)g * D;
    tile_async<D>(Kt, a.K + off, krow, nk, nthr, tid);
    tile_async<D>(Vt, a.V + off, krow, nk, nthr, tid);
}

/* One query's selection list (ascending block ids, -1 padded) walked by a lane: head is the
 * first entry > the block last taken, NONE once the list ends (at a -1 or a block past the query's
 * own block qb; nothing when lst is NULL). Repeats are skipped, as in the CPU twin. */
struct sel_cursor {
    static constexpr int NONE = 0x7fffffff;
    const int32_t *lst;
    int n, ptr, head;
    int64_t qb;
    __device__ __forceinline__ sel_cursor(const int32_t *l, int K, int64_t qb_)
        : lst(l), n(K), ptr(0), head(NONE), qb(qb_)
    {
        next(-1);
    }
    __device__ __forceinline__ void next(int after)
    {
        head = NONE;
        if (!lst) return;
        while (ptr < n) {
            const int b = lst[ptr];
            if (b < 0 || b > qb) {
                ptr = n;
                break;
            }
            if (b > after) {
                head = b;
                break;
            }
            ptr++;
        }
    }
};

/* flash_kernel: a CTA of 4 warps takes QC = 4 x 16/G queries, K/V tiles of 64 keys
 * double-buffered with cp.async, one CTA barrier per tile.
 *   dense   the CTA walks blocks 0..qb_max; a warp skips blocks past its last query;
 *   sparse  (the second version's kernel, SALA_CUDA_SATTN=old) the CTA walks the ascending union
 *           of its queries' selections (a streaming merge: each list head is reduced to the CTA
 *           minimum per step), loading every block once for all its queries; a warp computes a
 *           block only when one of its queries selected it, and rows of other queries are masked.
 * Key j is used iff j <= p. */
template <int D, bool SPARSE>
static __global__ void __launch_bounds__(128) flash_kernel(attn_args a, int lg)
{
    constexpr int LDS = D + 8, KS = D / 16, NW = 4, NONE = 0x7fffffff;
    const int QPT = 16 >> lg, QC = NW * QPT;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Kb = (bf16 *)smraw, *Vb = Kb + 2 * CU_KT * LDS;
    __shared__ int red[2][NW];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = blockIdx.y;
    const int cta = SPARSE ? (int)blockIdx.x : (int)(gridDim.x - 1 - blockIdx.x);   /* long first */
    const int tq0 = a.t0 + cta * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const float sl = a.scale * 1.4426950408889634f;
    const int64_t pmax = a.p0 + tq0 + nq - 1;

    uint32_t qa[KS][4];
    int64_t prow[2];
    int qwr[2];
    bool rv[2];
    flash_q<D>(
        a, lg, g, tq0, w * QPT, nq,
        [&](int ks, int hf, uint32_t lo, uint32_t hi) {
            qa[ks][hf] = lo;
            qa[ks][2 + hf] = hi;
        },
        prow, qwr, rv);
    int nqw = nq - w * QPT;                                 /* valid queries of this warp */
    nqw = nqw < 0 ? 0 : (nqw > QPT ? QPT : nqw);
    const int64_t pwmax = a.p0 + tq0 + w * QPT + nqw - 1;

    /* sparse: lane < QPT follows the list of query w*QPT + lane */
    const int qown = w * QPT + lane;
    sel_cursor cur(SPARSE && lane < nqw ? a.sel + ((size_t)(tq0 + qown) * a.nkv + g) * a.K_sel
                                        : nullptr,
                   a.K_sel, (a.p0 + tq0 + qown) / CU_KT);
    int dense_next = 0;
    /* next block of the CTA's stream and this warp's query mask for it (bit qw) */
    auto next = [&](int par, int *mask) -> int {
        if (!SPARSE) {
            const int b = dense_next++;
            if ((int64_t)b * CU_KT > pmax) return NONE;
            *mask = (int64_t)b * CU_KT <= pwmax ? 1 : 0;
            return b;
        }
        int hm = cur.head;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) hm = min(hm, __shfl_xor_sync(0xffffffffu, hm, o));
        if (lane == 0) red[par][w] = hm;
        __syncthreads();
        int b = red[par][0];
#pragma unroll
        for (int i = 1; i < NW; i++) b = min(b, red[par][i]);
        if (b == NONE) return NONE;
        const bool mine = cur.head == b;
        *mask = (int)__ballot_sync(0xffffffffu, mine);
        if (mine) cur.next(b);
        return b;
    };
    auto load = [&](int b, int buf) {
        kv_tiles_async<D>(a, g, b, pmax, Kb + buf * CU_KT * LDS, Vb + buf * CU_KT * LDS, 128,
                          (int)threadIdx.x);
        cp_async_commit();
    };

    flash_acc<D> acc;
    auto qf = [&](int ks, uint32_t (&q)[4]) {
#pragma unroll
        for (int e = 0; e < 4; e++) q[e] = qa[ks][e];
    };

    int mcur = 0;
    int bcur = next(0, &mcur);
    if (bcur != NONE) load(bcur, 0);
    for (int it = 0; bcur != NONE; it++) {
        int mnext = 0;
        const int bnext = next((it + 1) & 1, &mnext);
        if (bnext != NONE) {
            load(bnext, (it + 1) & 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (mcur) {
            const int64_t j0 = (int64_t)bcur * CU_KT;
            int lim[2];                                     /* key col valid iff col <= lim */
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const bool on = rv[hf] && (!SPARSE || ((mcur >> qwr[hf]) & 1));
                lim[hf] = on ? flash_lim(prow[hf] - j0) : -1;
            }
            flash_block<D>(qf, Kb + (it & 1) * CU_KT * LDS, Vb + (it & 1) * CU_KT * LDS, lim, sl,
                           acc);
        }
        __syncthreads();                                    /* buffer it & 1 free */
        bcur = bnext;
        mcur = mnext;
    }
    flash_store<D>(a, lg, g, tq0, w * QPT, acc, qwr, rv);
}

/* A ring consumer warp's Q fragments (its m16 tile): in registers (QREG) or in shared memory in
 * fragment order at qs (uint4 per lane and k-step: conflict-free). load() fills them by flash_q
 * (and returns the rows' positions, queries and validity); qf(ks, q) gives k-step ks's A operand
 * (the QF of flash_block). */
template <int D, bool QREG> struct ring_q {
    uint32_t qa[QREG ? D / 16 : 1][4];
    uint32_t *qs;
    __device__ __forceinline__ void load(const attn_args &a, int lg, int g, int tq0, int qbase,
                                         int nq, uint32_t *qs_, int64_t prow[2], int qwr[2],
                                         bool rv[2])
    {
        qs = qs_;
        flash_q<D>(
            a, lg, g, tq0, qbase, nq,
            [&](int ks, int hf, uint32_t lo, uint32_t hi) {
                if constexpr (QREG) {
                    qa[ks][hf] = lo;
                    qa[ks][2 + hf] = hi;
                } else {
                    qs[ks * 128 + hf] = lo;
                    qs[ks * 128 + 2 + hf] = hi;
                }
            },
            prow, qwr, rv);
        __syncwarp();
    }
    __device__ __forceinline__ void operator()(int ks, uint32_t (&q)[4]) const
    {
        if constexpr (QREG) {
#pragma unroll
            for (int e = 0; e < 4; e++) q[e] = qa[ks][e];
        } else {
            const uint4 v = *(const uint4 *)(qs + ks * 128);
            q[0] = v.x;
            q[1] = v.y;
            q[2] = v.z;
            q[3] = v.w;
        }
    }
};

/* dense_kernel (branch dn): the dense causal prefill with query-major rows. A CTA of NW warps
 * takes QC = 16 NW consecutive queries of ONE q head h (warp w: queries tq0 + 16 w .. + 15, one
 * row each, so flash_q / flash_store run with lg = 0 and "group" h) and walks the key tiles
 * 0 .. pmax / 64 of its kv group h >> lg once for all QC queries (flash_kernel shares a tile
 * among 64 rows = 64/G queries x G heads; here among 16 NW rows at any G). K/V tiles in a ring
 * of 3 stages filled by cp.async 2 tiles ahead, one CTA barrier per tile: at tile b every warp
 * has passed the barrier, so it is done with tile b - 1, whose stage takes tile b + 2. The S of
 * tile b + 1 (flash_qk) is issued beside the softmax and P V of tile b (flash_sv).
 * Rows past pmax are zero-filled, never read. A warp computes a tile only while it holds a row
 * at or past its first key; causal limits are per row (flash_block lim). Grid (nh, CTAs): the
 * heads vary fastest, so the first wave is every head's longest CTA and the heads of one group
 * run side by side (their K/V tiles shared in L2). Key j is used iff j <= p. */
#define DN_STAGES 3                 /* dense_kernel: the walk reads two K/V tiles, a third loads */

template <int D, int NW>
static __global__ void __launch_bounds__(32 * NW) dense_kernel(attn_args a, int lg)
{
    constexpr int LDS = D + 8, QC = 16 * NW, S = DN_STAGES;
    extern __shared__ __align__(128) unsigned char smraw[];
    bf16 *Kb = (bf16 *)smraw, *Vb = Kb + S * CU_KT * LDS;
    const int w = threadIdx.x >> 5;
    const int h = blockIdx.x, g = h >> lg;
    const int cta = (int)(gridDim.y - 1 - blockIdx.y);              /* long first */
    const int tq0 = a.t0 + cta * QC, tend = a.t0 + a.n;
    const int nq = tend - tq0 < QC ? tend - tq0 : QC;
    const float sl = a.scale * 1.4426950408889634f;
    const int64_t pmax = a.p0 + tq0 + nq - 1;

    ring_q<D, true> qf;                                     /* rows: queries tq0 + 16 w .. */
    int64_t prow[2];
    int qwr[2];
    bool rv[2];
    qf.load(a, 0, h, tq0, w * 16, nq, nullptr, prow, qwr, rv);
    int nqw = nq - w * 16;                                   /* valid queries of this warp */
    nqw = nqw < 0 ? 0 : (nqw > 16 ? 16 : nqw);
    const int64_t pwmax = a.p0 + tq0 + w * 16 + nqw - 1;
    const int nb = (int)(pmax / CU_KT) + 1;

    /* tile b into stage b % S when b < nb; a cp.async group either way (the wait counts) */
    auto load = [&](int b) {
        if (b < nb)
            kv_tiles_async<D>(a, g, b, pmax, Kb + (b % S) * CU_KT * LDS,
                              Vb + (b % S) * CU_KT * LDS, 32 * NW, (int)threadIdx.x);
        cp_async_commit();
    };

    flash_acc<D> acc;
#pragma unroll
    for (int i = 0; i < S - 1; i++) load(i);
    /* S of tile b + 1 (flash_qk) is issued beside the softmax and P V of tile b (flash_sv)
     * in one basic block, so the tensor cores have independent work during the softmax.
     * Tiles b (V) and b + 1 (K) are read, b + 2 loads into the stage of b - 1. */
    auto on = [&](int b) { return b < nb && nqw > 0 && (int64_t)b * CU_KT <= pwmax; };
    float sc[8][4], sn[8][4];
    cp_async_wait<1>();
    __syncthreads();
    if (on(0)) flash_qk<D>(qf, Kb, sc);
    for (int b = 0; b < nb; b++) {
        cp_async_wait<0>();                              /* tile b + 1 landed */
        __syncthreads();                                 /* everyone's; b - 1 done */
        load(b + 2);
        const int64_t j0 = (int64_t)b * CU_KT;
        int lim[2];                                      /* key col valid iff col <= lim */
#pragma unroll
        for (int hf = 0; hf < 2; hf++) lim[hf] = rv[hf] ? flash_lim(prow[hf] - j0) : -1;
        const bf16 *Vt = Vb + (b % 3) * CU_KT * LDS;
        if (on(b + 1)) {                                 /* then on(b) too */
            flash_qk<D>(qf, Kb + ((b + 1) % 3) * CU_KT * LDS, sn);
            flash_sv<D>(sc, Vt, lim, sl, acc);
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) sc[j][e] = sn[j][e];
        } else if (on(b)) {
            flash_sv<D>(sc, Vt, lim, sl, acc);
        }
    }
    cp_async_wait<0>();
    flash_store<D>(a, 0, h, tq0, w * 16, acc, qwr, rv);
}

/* ---- block-sparse attention with a warp-specialised ring (fourth version) ----
 * CTA = NC consumer warps + 1 producer warp, one kv group g, NQ = ncw x 16/G consecutive queries
 * (ncw = min(NC, 32 G / 16) consumer warps hold one m16 tile each: the G = 16 heads of one query
 * in the real model). The producer walks the ascending union of the NQ selections (a lane per
 * query list, lists copied to shared memory first; the warp minimum of the list heads is the next
 * block) and streams each union block's K and V tiles once into a ring of ns slots by cp.async
 * (rows past the CTA's last query zero-filled) whose completion arrives on the slot's `full`
 * mbarrier (32 lanes + lane 0's arrival after it wrote the slot header: the block id and the
 * NQ-bit mask of the queries that selected it). Each consumer warp walks the same stream at its
 * own pace: it computes a slot only if one of its queries is in the mask (flash_block, rows of
 * other queries masked), then arrives on the slot's `empty` mbarrier; the producer refills a slot
 * once all ncw consumers have released it. No CTA barrier in the loop: a warp waits only for
 * data, and the producer only for the slowest consumer ns blocks back. A block id NONE in the
 * header ends the stream. QREG: Q fragments in registers (NC = 7), else in shared memory in
 * fragment order (uint4 per lane and k-step: conflict-free).
 * (Bulk copies, cp.async.bulk of one 256-byte row each, were tried first: 1.5-3x slower than the
 * second version's kernel on the H100, docs/CUDA.md.) */
#define SR_HDR 256                                           /* bytes: 2 x 8 mbarriers, headers */
#define SR_MAXNS 8

template <int D, int NC, bool QREG>
static __global__ void __launch_bounds__(32 * (NC + 1), 1)
    sparse_ring_kernel(attn_args a, int lg, int ncw, int ns, int lst_bytes)
{
    constexpr int LDS = D + 8, KS = D / 16, NONE = 0x7fffffff;
    constexpr int TILE = CU_KT * LDS;                       /* bf16 elements of one K or V tile */
    extern __shared__ __align__(128) unsigned char smraw[];
    uint64_t *full = (uint64_t *)smraw, *empty = full + SR_MAXNS;
    volatile int *hdr_b = (volatile int *)(empty + SR_MAXNS);
    volatile uint32_t *hdr_m = (volatile uint32_t *)(hdr_b + SR_MAXNS);
    int32_t *lists = (int32_t *)(smraw + SR_HDR);
    uint4 *Qs = (uint4 *)(smraw + SR_HDR + lst_bytes);      /* !QREG: (NC, KS, 32) */
    bf16 *ring = (bf16 *)(smraw + SR_HDR + lst_bytes + (QREG ? 0 : NC * KS * 32 * 16));

    const int QPT = 16 >> lg, NQ = ncw * QPT;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = blockIdx.y;
    const int tq0 = a.t0 + blockIdx.x * NQ, tend = a.t0 + a.n;
    const int nq = tend - tq0 < NQ ? tend - tq0 : NQ;
    const int64_t pmax = a.p0 + tq0 + nq - 1;

    if (threadIdx.x == 0) {
        for (int s = 0; s < ns; s++) {
            mbar_init(smem_u32(full + s), 33);            /* producer: 32 data + header */
            mbar_init(smem_u32(empty + s), (uint32_t)ncw);
        }
        mbar_init_fence();
    }
    for (int idx = threadIdx.x; idx < NQ * a.K_sel; idx += blockDim.x) {
        const int q = idx / a.K_sel, k = idx % a.K_sel;
        lists[idx] = q < nq ? a.sel[((size_t)(tq0 + q) * a.nkv + g) * a.K_sel + k] : -1;
    }
    __syncthreads();

    if (w == NC) {                                          /* producer */
        sel_cursor cur(lane < nq ? lists + lane * a.K_sel : nullptr, a.K_sel,
                       (a.p0 + tq0 + lane) / CU_KT);
        int s = 0, cyc = 0;
        for (;;) {
            int b = cur.head;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) b = min(b, __shfl_xor_sync(0xffffffffu, b, o));
            const bool mine = b != NONE && cur.head == b;
            const uint32_t mask = __ballot_sync(0xffffffffu, mine);
            if (mine) cur.next(b);
            if (cyc > 0) mbar_wait(smem_u32(empty + s), (uint32_t)(cyc - 1) & 1);
            const uint32_t fb = smem_u32(full + s);
            if (lane == 0) {                                /* header, then its release arrival */
                hdr_b[s] = b;
                hdr_m[s] = mask;
                mbar_arrive(fb);
            }
            if (b != NONE) {
                bf16 *Kt = ring + (size_t)s * 2 * TILE;
                kv_tiles_async<D>(a, g, b, pmax, Kt, Kt + TILE, 32, lane);
            }
            cp_async_mbar_arrive(fb);                       /* the 32 data arrivals */
            if (b == NONE) break;
            if (++s == ns) {
                s = 0;
                cyc++;
            }
        }
        return;
    }
    if (w >= ncw) return;                                   /* no queries for this warp */

    /* consumer warp w: m16 tile of queries w*QPT .. w*QPT + QPT - 1 */
    int64_t prow[2];
    int qwr[2];
    bool rv[2];
    uint32_t *qs = (uint32_t *)(Qs + (size_t)w * KS * 32 + lane);   /* this lane's fragments */
    ring_q<D, QREG> qf;
    qf.load(a, lg, g, tq0, w * QPT, nq, qs, prow, qwr, rv);
    flash_acc<D> acc;
    const uint32_t qmask = (1u << QPT) - 1;
    int s = 0;
    uint32_t par = 0;
    for (;;) {
        mbar_wait(smem_u32(full + s), par);
        const int b = hdr_b[s];
        if (b == NONE) break;
        const uint32_t wm = (hdr_m[s] >> (w * QPT)) & qmask;
        if (wm) {
            const int64_t j0 = (int64_t)b * CU_KT;
            int lim[2];
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                lim[hf] = rv[hf] && ((wm >> qwr[hf]) & 1) ? flash_lim(prow[hf] - j0) : -1;
            const bf16 *Kt = ring + (size_t)s * 2 * TILE;
            flash_block<D>(qf, Kt, Kt + TILE, lim, a.scale * 1.4426950408889634f, acc);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(smem_u32(empty + s));
        if (++s == ns) {
            s = 0;
            par ^= 1;
        }
    }
    flash_store<D>(a, lg, g, tq0, w * QPT, acc, qwr, rv);
}

/* ---- block-sparse ring with users-only release (branch sat4, docs/CUDA.md "Sparse attention 4")
 * The ring of sparse_ring_kernel, with two changes:
 *   1. Consumers touch only their own slots. The producer warp walks the ascending union of the
 *      CTA's lists (redux.sync minimum of the list heads) into a table in shared memory (tab_b:
 *      block id, tab_m: NQ-bit query mask; at most NQ x K_sel entries), publishing each entry by
 *      a release store of the count `pub` (| DONE at the end). It walks only as far as it must
 *      (entry k before element k is issued) plus, while the next slot is still busy, up to LEAD
 *      entries ahead: so the first loads go out at once and the walk hides behind the waits (a
 *      whole walk before the first load, with one CTA barrier, was 20% slower at 32K: run 1 of
 *      docs/BENCHMARKS.md "sparse attention 4", as sat2's up-front union pass was). Consumer warp
 *      w takes the table 32 entries at a time once they are published (ballot of its mask bits)
 *      and, for each element k whose mask has one of its queries, waits for `full[k % ns]`,
 *      computes, arrives on `empty[k % ns]`. When the producer issues element k it arrives on
 *      `empty[k % ns]` for itself and every non-user warp at once (count ncw + 1 - users;
 *      empty's count is ncw + 1), so a slot is free as soon as its users are done, not when the
 *      slowest warp of the CTA has walked past it. No deadlock: when the producer blocks on a
 *      slot for element k, at least k + LEAD >= k + 32 entries are published (or all), so the
 *      users of element k - ns can see their chunk of the table.
 *   2. One producer lane loads a slot by TMA: 2-D tensor boxes of 64 columns x 64 rows (2 a K or
 *      V tile at D = 128) into unpadded 128B-swizzled tiles (flash_block<D, true>), the bytes
 *      completing on `full` (expect_tx). (The cp.async form, `user15`, was slower than ring15 in
 *      every call of sat4 and was removed in sat5; where no tensor map can be made the caller
 *      falls back to sparse_ring_kernel.)
 * Parity. Element k is phase j = k / ns of slot s = k % ns. A consumer skips elements, so it may
 * reach element k while `full[s]` is still several phases behind j, where a parity test alone
 * would pass on phase j - 1's completion. So it first waits for `issued` > k (the producer
 * stores k + 1 with release after it saw `empty[s]` complete phase j - 1; that needed phase
 * j - 1's users, who had waited for `full[s]` phase j - 1): then `full[s]` has completed at
 * least j phases. It cannot have completed j + 2 (two ahead, same parity): phase j + 1 is
 * element k + ns, which the producer issues only after `empty[s]` phase j completes, and that
 * needs this warp's arrival for element k, not made yet. So the parity wait on j & 1 is exact.
 * The producer's own `empty` waits are exact the same way (it issues in order and arrives on
 * phase j itself). Every table entry has at least one user, so every load is waited for.
 * (Per-(warp, slot) mbarriers in place of polling `issued` were measured: no gain, more spill;
 * docs/CUDA.md "Sparse attention 4".)
 * OOO (tma15o, the default; docs/CUDA.md "Sparse attention 9"): element k goes into the lowest
 * free slot, not into slot k % ns, so a slot held by one slow consumer no longer stalls the
 * elements behind it. The producer lane s counts slot s's issues u; the slot is free when u = 0
 * or `empty[s]` completed phase u - 1 (exact: phase u needs the producer's own arrival at issue
 * u). At issue it packs the slot and its `full` phase parity (u & 1) into tab_b[k] (block ids
 * < 2^28) before the release of `issued`, so a user reads them after its acquire of `issued` >
 * k; the parity wait is exact as above (issue u + 1 of the slot needs this user's arrival).
 * BAND (docs/CUDA.md "Sparse attention 11"): k_band90 did the forced blocks of every query
 * (block 0 and qb - CU_BAND_LOCAL .. qb) and left each row's state in a.part (n, nh, D + 2).
 * A query whose list has that structure, [0, nr picks in 1 .. qb - CU_BAND_LOCAL - 1,
 * qb - CU_BAND_LOCAL .. qb] with nr = K_sel - CU_BAND_LOCAL - 2 (no -1 among them), walks only
 * its picks (entries 1 .. nr) and its rows start from the band state; any other query walks its
 * whole list from (-inf, 0, 0), so a list without the structure never gives a wrong answer. */
#define SU_HDR 256                                  /* bytes: full, empty (8 each), issued, pub */

/* Whether list l (K entries) of a query in block qb has the band structure (BAND above): the
 * warp's lanes test its entries, every lane gets the answer. */
static __device__ __forceinline__ bool band_list(const int32_t *l, int K, int64_t qb)
{
    const int nr = K - CU_BAND_LOCAL - 2;
    bool ok = nr >= 0 && qb - CU_BAND_LOCAL >= 1;
    for (int k = threadIdx.x & 31; ok && k < K; k += 32) {
        const int64_t b = l[k];
        const bool good = k == 0    ? b == 0
                          : k <= nr ? b >= 1 && b < qb - CU_BAND_LOCAL
                                    : b == qb - CU_BAND_LOCAL + (k - nr - 1);
        if (!good) ok = false;
    }
    return __all_sync(0xffffffffu, ok);
}

/* Row rq + 8 hf of a warp's m16 tile (query q of the launch, its head of group g) from
 * k_band90's unnormalised state in a.part (n, nh, D + 2: O, max in the log2 domain, sum): O in
 * the accumulator layout, the max, the sum on the quad's first lane (the others' partial 0). */
template <int D>
static __device__ __forceinline__ void band_state(const attn_args &a, int lg, int g, int q, int hf,
                                                  flash_acc<D> &acc)
{
    const int lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2;
    const int h = g * (1 << lg) + ((rq + 8 * hf) & ((1 << lg) - 1));
    const float *src = a.part + ((size_t)q * a.nh + h) * (D + 2);
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
        const float2 v = *(const float2 *)(src + 8 * i + 2 * qd);
        acc.o[i][2 * hf] = v.x;
        acc.o[i][2 * hf + 1] = v.y;
    }
    const float2 ml = *(const float2 *)(src + D);
    acc.mrow[hf] = ml.x;
    acc.lrow[hf] = qd == 0 ? ml.y : 0.0f;
}

template <int D, int NC, bool QREG, bool OOO = false, bool BAND = false>
static __global__ void __launch_bounds__(32 * (NC + 1), 1)
    sparse_user_kernel(attn_args a, int lg, int ncw, int ns, int lst_bytes,
                       const __grid_constant__ CUtensorMap tk,
                       const __grid_constant__ CUtensorMap tv)
{
    constexpr int LDS = D, KS = D / 16, NONE = sel_cursor::NONE;   /* unpadded swizzled tiles */
    constexpr int TILE = CU_KT * LDS;                       /* bf16 elements of one K or V tile */
    extern __shared__ __align__(128) unsigned char smraw[];
    uint64_t *full = (uint64_t *)smraw, *empty = full + SR_MAXNS;
    int *issued = (int *)(empty + SR_MAXNS), *pub = issued + 1;
    uint32_t *bandq = (uint32_t *)(pub + 1);        /* BAND: queries with the band structure */
    constexpr int DONE = 1 << 30, LEAD = 64;             /* pub: entries written (| DONE) */
    int32_t *lists = (int32_t *)(smraw + SU_HDR);
    int32_t *tab_b = (int32_t *)(smraw + SU_HDR + lst_bytes);
    uint32_t *tab_m = (uint32_t *)(smraw + SU_HDR + 2 * (size_t)lst_bytes);
    uint4 *Qs = (uint4 *)(smraw + SU_HDR + 3 * (size_t)lst_bytes);   /* !QREG: (NC, KS, 32) */
    unsigned char *rp = smraw + SU_HDR + 3 * (size_t)lst_bytes + (QREG ? 0 : NC * KS * 32 * 16);
    rp += (1024u - (smem_u32(rp) & 1023u)) & 1023u;           /* swizzled boxes: 1 KB aligned */
    bf16 *ring = (bf16 *)rp;

    const int QPT = 16 >> lg, NQ = ncw * QPT;
    const uint32_t qmask = (1u << QPT) - 1;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = blockIdx.y;
    const int tq0 = a.t0 + blockIdx.x * NQ, tend = a.t0 + a.n;
    const int nq = tend - tq0 < NQ ? tend - tq0 : NQ;

    if (threadIdx.x == 0) {
        for (int s = 0; s < ns; s++) {
            mbar_init(smem_u32(full + s), 1);
            mbar_init(smem_u32(empty + s), (uint32_t)ncw + 1);
        }
        *issued = 0;
        *pub = 0;
        mbar_init_fence();
    }
    for (int idx = threadIdx.x; idx < NQ * a.K_sel; idx += blockDim.x) {
        const int q = idx / a.K_sel, k = idx % a.K_sel;
        lists[idx] = q < nq ? a.sel[((size_t)(tq0 + q) * a.nkv + g) * a.K_sel + k] : -1;
    }
    if (BAND && threadIdx.x == 0) *bandq = 0;
    __syncthreads();
    if (BAND) {                                   /* warp w tests queries w, w + NC + 1, .. */
        for (int q = w; q < nq; q += NC + 1)
            if (band_list(lists + q * a.K_sel, a.K_sel, (a.p0 + tq0 + q) / CU_KT) && lane == 0)
                atomicOr(bandq, 1u << q);
        __syncthreads();
    }

    /* producer: element k (block b, query mask) into slot s (k % ns, or with OOO any free one:
     * then the slot and its full phase's parity par go into tab_b[k] beside b, for the users to
     * read once `issued` passed k); the whole warp calls it */
    auto issue = [&](int k, int b, uint32_t mask, int s, uint32_t par) {
        const bool use = lane < ncw && ((mask >> (lane * QPT)) & qmask);
        const int users = __popc(__ballot_sync(0xffffffffu, use));
        const uint32_t fb = smem_u32(full + s);
        const int64_t j0 = (int64_t)b * CU_KT;
        bf16 *Kt = ring + (size_t)s * 2 * TILE;
        if (lane == 0) {
            mbar_arrive_tx(fb, 2 * TILE * 2);
#pragma unroll
            for (int h = 0; h < D / 64; h++) {
                tma_load_2d(smem_u32(Kt) + h * 8192, &tk, g * D + h * 64, (int)j0, fb);
                tma_load_2d(smem_u32(Kt + TILE) + h * 8192, &tv, g * D + h * 64, (int)j0, fb);
            }
        }
        if (lane == 0) {
            if (OOO) tab_b[k] = (int32_t)((uint32_t)b | (uint32_t)s << 28 | par << 31);
            mbar_arrive_cnt(smem_u32(empty + s), (uint32_t)(ncw + 1 - users));
            st_release_cta(smem_u32(issued), k + 1);
        }
    };

    int64_t prow[2];
    int qwr[2];
    bool rv[2];
    uint32_t *qs = (uint32_t *)(Qs + (size_t)w * KS * 32 + lane);   /* this lane's fragments */
    if (w == NC) {                                          /* producer */
        const bool bl = BAND && ((*bandq >> lane) & 1);    /* its picks only */
        sel_cursor cur(lane < nq ? lists + lane * a.K_sel + bl : nullptr,
                       bl ? a.K_sel - CU_BAND_LOCAL - 2 : a.K_sel, (a.p0 + tq0 + lane) / CU_KT);
        int walked = 0;
        bool wdone = false;
        auto walk_one = [&]() {                             /* the next union entry */
            const int b = __reduce_min_sync(0xffffffffu, cur.head);
            if (b == NONE) {
                wdone = true;
                if (lane == 0) st_release_cta(smem_u32(pub), walked | DONE);
                return;
            }
            const bool mine = cur.head == b;
            const uint32_t mask = __ballot_sync(0xffffffffu, mine);
            if (mine) cur.next(b);
            if (lane == 0) {
                tab_b[walked] = b;
                tab_m[walked] = mask;
                st_release_cta(smem_u32(pub), walked + 1);
            }
            walked++;
        };
        int uses = 0;                                       /* OOO: lane s, slot s's issues */
        for (int k = 0;; k++) {
            while (!wdone && walked <= k) walk_one();
            if (k >= walked) break;                         /* walk done, all issued */
            int s = k % ns;
            uint32_t par = (uint32_t)(k / ns) & 1;
            if (OOO) {
                /* the lowest free slot: never used, or its users of the last issue all done
                 * (empty completed that phase); walk on while none is */
                for (;;) {
                    const bool fr = lane < ns && (uses == 0 || mbar_test(smem_u32(empty + lane),
                                                                         (uint32_t)(uses - 1) & 1));
                    const uint32_t fm = __ballot_sync(0xffffffffu, fr);
                    if (fm) {
                        s = __ffs(fm) - 1;
                        break;
                    }
                    if (!wdone && walked < k + LEAD)
                        walk_one();
                    else
                        __nanosleep(32);
                }
                par = (uint32_t)__shfl_sync(0xffffffffu, uses, s) & 1;
                if (lane == s) uses++;
            } else if (k >= ns) {                           /* walk on while the slot is busy */
                const uint32_t eb = smem_u32(empty + s), ep = par ^ 1;
                while (!wdone && walked < k + LEAD &&
                       !__shfl_sync(0xffffffffu, (int)mbar_test(eb, ep), 0))
                    walk_one();
                mbar_wait(eb, ep);
            }
            __syncwarp();                                   /* lane 0's entry k */
            issue(k, tab_b[k], tab_m[k], s, par);
        }
        return;
    }
    if (w >= ncw) return;                                   /* no queries for this warp */
    ring_q<D, QREG> qf;                                     /* m16 tile of queries w*QPT.. */
    qf.load(a, lg, g, tq0, w * QPT, nq, qs, prow, qwr, rv);
    flash_acc<D> acc;
    if (BAND) {                            /* rows of band queries go on from the band state */
        const uint32_t bq = *bandq;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int qc = w * QPT + qwr[hf];
            if (!rv[hf] || !((bq >> qc) & 1)) continue;
            band_state<D>(a, lg, g, tq0 - a.t0 + qc, hf, acc);
        }
    }
    const uint32_t wmask = qmask << (w * QPT);
    for (int base = 0;; base += 32) {
        /* entries base.. published (each lane acquires; the warp takes the least it saw) */
        int p = ld_acquire_cta(smem_u32(pub));
        while (!(p & DONE) && p < base + 32) {
            __nanosleep(64);
            p = ld_acquire_cta(smem_u32(pub));
        }
        p = __reduce_min_sync(0xffffffffu, p);
        const int nt = p & (DONE - 1);
        if (base >= nt) break;                              /* only once DONE */
        const uint32_t m = base + lane < nt ? tab_m[base + lane] : 0u;
        uint32_t own = __ballot_sync(0xffffffffu, (m & wmask) != 0);
        while (own) {
            const int i = __ffs(own) - 1, k = base + i;
            own &= own - 1;
            const uint32_t wm = (__shfl_sync(0xffffffffu, m, i) >> (w * QPT)) & qmask;
            while (ld_acquire_cta(smem_u32(issued)) <= k) __nanosleep(32);
            const uint32_t e = (uint32_t)tab_b[k];
            const int s = OOO ? (int)(e >> 28) & 7 : k % ns;
            const int64_t j0 = (int64_t)(OOO ? e & 0x0fffffffu : e) * CU_KT;
            mbar_wait(smem_u32(full + s), OOO ? e >> 31 : (uint32_t)(k / ns) & 1);
            int lim[2];
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                lim[hf] = rv[hf] && ((wm >> qwr[hf]) & 1) ? flash_lim(prow[hf] - j0) : -1;
            const bf16 *Kt = ring + (size_t)s * 2 * TILE;
            flash_block<D, true>(qf, Kt, Kt + TILE, lim, a.scale * 1.4426950408889634f, acc);
            __syncwarp();
            if (lane == 0) mbar_arrive(smem_u32(empty + s));
        }
    }
    flash_store<D>(a, lg, g, tq0, w * QPT, acc, qwr, rv);
}

/* ---- sparse attention 12: each warp streams its own query's blocks (docs/CUDA.md "Sparse
 * attention 12"; SALA_CUDA_SATTN=stream, the default past 32K keys) ----
 * Past ~32K keys the benchmark's picks (random weights) give the ring few users a loaded block
 * (about one past 128K: a CTA's 15 queries share almost none of their 62 picks), so its shared
 * slots buy little sharing and bound how many (query, block) products an SM has in flight (4
 * slots of 32 KB).
 * Here every warp owns one query (G = 16, D = 128: its 16 heads are the m16 tile) and a private
 * ring of NS pieces in shared memory; a piece is 16 keys x 128 dims of K or of V (4 KB, two
 * 64-column boxes of 16 rows x 128 bytes, 128B-swizzled as the TMA tiles: flash_qk16 /
 * flash_pv16 with box stride 2048), filled by cp.async, one commit group a piece. A block is 8
 * pieces, K 0..3 then V 0..3: S = Q Kᵀ piece by piece, flash_soft over the 64 keys, then P V
 * piece by piece; piece k + NS is issued as soon as piece k is read, so NS pieces are always
 * on their way. No CTA barrier after the lists; warps never wait for each other.
 * Run after k_band90 (band_launch): a query whose list has the band structure (band_list)
 * walks its picks (entries 1 .. K_sel - CU_BAND_LOCAL - 2) from its band state; any other query
 * walks its whole list from (-inf, 0, 0) with causal limits, the entries the CPU twin takes
 * (an id counts iff it is >= 0, above every id before it and at most qb). Rows past the cache's
 * end come zero-filled. Per block the arithmetic is flash_block's; only the sums' order
 * differs from the ring's (band first, then the picks in ascending order, as the band ring). */
#define SS_PIECE 4096

/* S[2 nc], S[2 nc + 1] += Q Kᵀ for the 16 keys of a swizzled piece at k16 (box stride bs). */
template <int D, typename QF>
static __device__ __forceinline__ void flash_qk16(const QF &qf, uint32_t k16, uint32_t bs,
                                                  float (&s0)[4], float (&s1)[4])
{
    const int lane = threadIdx.x & 31;
    const int krow = ((lane >> 4) & 1) * 8 + (lane & 7), kcol = (lane >> 3) & 1;
    const uint32_t kbase = k16 + krow * 128, kx = (uint32_t)((kcol ^ (lane & 7)) << 4);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
        uint32_t q[4], b[4];
        qf(ks, q);
        ldsm_x4(b, kbase + (uint32_t)(ks >> 2) * bs + ((uint32_t)((2 * ks & 7) << 4) ^ kx));
        mma_bf16(s0, q, b[0], b[1]);
        mma_bf16(s1, q, b[2], b[3]);
    }
}

/* Query t of group g on the calling warp (w of NW) with its slice of the CTA's shared memory. */
template <int NW, int NS>
static __device__ __forceinline__ void ss_query(const attn_args &a, int g, int t,
                                                unsigned char *smraw)
{
    constexpr int D = 128, lg = 4;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned char *ring = smraw + (size_t)w * NS * SS_PIECE;
    int32_t *blk = (int32_t *)(smraw + (size_t)NW * NS * SS_PIECE) + (size_t)w * a.K_sel;
    const int64_t p = a.p0 + t, qb = p / CU_KT, nrows = a.p0 + a.t0 + a.n;
    const int32_t *lst = a.sel + ((size_t)t * a.nkv + g) * a.K_sel;
    const bool bl = band_list(lst, a.K_sel, qb);

    /* the blocks to walk, compacted into blk[0 .. nb) */
    int nb = 0;
    {
        const int k0 = bl ? 1 : 0, k1 = bl ? a.K_sel - CU_BAND_LOCAL - 1 : a.K_sel;
        int last = -1;                                      /* max id before this chunk */
        for (int base = k0; base < k1; base += 32) {
            const int k = base + lane;
            const int b = k < k1 ? lst[k] : -1;
            int m = b;                                      /* inclusive prefix max */
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int v = __shfl_up_sync(0xffffffffu, m, o);
                if (lane >= o) m = max(m, v);
            }
            int ex = __shfl_up_sync(0xffffffffu, m, 1);
            ex = max(lane ? ex : -1, last);
            const bool ok = k < k1 && b >= 0 && b > ex && (int64_t)b <= qb;
            const uint32_t bal = __ballot_sync(0xffffffffu, ok);
            if (ok) blk[nb + __popc(bal & ((1u << lane) - 1))] = b;
            nb += __popc(bal);
            last = __shfl_sync(0xffffffffu, m, 31);
        }
    }
    __syncwarp();

    ring_q<D, true> qf;
    int64_t prow[2];
    int qwr[2];
    bool rv[2];
    qf.load(a, lg, g, t, 0, 1, nullptr, prow, qwr, rv);
    flash_acc<D> acc;
    if (bl)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) band_state<D>(a, lg, g, t - a.t0, hf, acc);

    /* piece k of the stream (block k / 8; K rows 16 (k % 8) .. when k % 8 < 4, else V) into
     * slot sl; an empty group past the end keeps the wait count exact */
    const size_t krow = (size_t)a.nkv * D;
    auto issue = [&](int kp, int sl) {
        const int i = kp >> 3, e = kp & 7;
        if (i < nb) {
            const bf16 *src = (e < 4 ? a.K : a.V) + (size_t)g * D;
            const int64_t r0 = (int64_t)blk[i] * CU_KT + 16 * (e & 3);
            const uint32_t dst = smem_u32(ring + (size_t)sl * SS_PIECE);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int r = 2 * j + (lane >> 4), c = lane & 15;
                const bool ok = r0 + r < nrows;
                cp_async16(dst + (uint32_t)(c >> 3) * 2048 + r * 128 + (((c & 7) ^ (r & 7)) << 4),
                           src + (size_t)(ok ? r0 + r : 0) * krow + c * 8, ok);
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int kp = 0; kp < NS; kp++) issue(kp, kp);
    const float sl2 = a.scale * 1.4426950408889634f;
    /* piece 8 i + j of block i sits in slot (8 i + j) % NS: with NS dividing 8 a constant of the
     * unrolled j, so the loop carries i alone */
    for (int i = 0; i < nb; i++) {
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] = 0.0f;
#pragma unroll
        for (int nc = 0; nc < 4; nc++) {
            const int kp = 8 * i + nc, slot = kp % NS;
            cp_async_wait<NS - 1>();
            __syncwarp();
            flash_qk16<D>(qf, smem_u32(ring + (size_t)slot * SS_PIECE), 2048, s[2 * nc],
                          s[2 * nc + 1]);
            __syncwarp();
            issue(kp + NS, slot);
        }
        const int lim = flash_lim(p - (int64_t)blk[i] * CU_KT), lims[2] = {lim, lim};
        flash_soft<D>(s, lims, sl2, acc);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const int kp = 8 * i + 4 + kk, slot = kp % NS;
            cp_async_wait<NS - 1>();
            __syncwarp();
            flash_pv16<D, true>(s, kk, (const bf16 *)(ring + (size_t)slot * SS_PIECE), 0, 2048,
                                acc);
            __syncwarp();
            issue(kp + NS, slot);
        }
    }
    cp_async_wait<0>();
    flash_store<D>(a, lg, g, t, 0, acc, qwr, rv);
}

template <int NW, int NS>
static __global__ void __launch_bounds__(32 * NW, 1) sparse_stream_kernel(attn_args a)
{
    extern __shared__ __align__(128) unsigned char smraw[];
    const int t = a.t0 + blockIdx.x * NW + (threadIdx.x >> 5);
    if (t >= a.t0 + a.n) return;                            /* no barrier after this */
    ss_query<NW, NS>(a, blockIdx.y, t, smraw);
}

/* The persistent form (SALA_CUDA_SATTN=streamp; docs/CUDA.md "Sparse attention 12", part 2): a
 * cooperative grid of as many CTAs as the SMs hold at once takes the launch's tiles (NW
 * queries of one group, group-major) in generations: generation j is tiles j x gridDim.x + c.
 * A warp starts generation j only once all but `slack` of generation j - 1's warps have counted
 * themselves done in done[j - 1] (zeroed by the launcher), so the warps that run together start
 * their ascending walks together and read the same region of the group's K/V at about the same
 * time (the plain grid starts CTAs whenever another ends, and at 1M its warps read all over
 * the 512 MB of a group: 15% L2 hits). Every CTA of a generation before the last has a tile,
 * so each count reaches gridDim.x x NW; the grid is co-resident (cooperative launch), so the
 * wait cannot deadlock. Only when a query's blocks are walked changes, not their order or
 * arithmetic: the output equals the plain form's bit for bit. */
template <int NW, int NS>
static __global__ void __launch_bounds__(32 * NW, 1)
    sparse_stream_pers_kernel(attn_args a, int *done, int slack)
{
    extern __shared__ __align__(128) unsigned char smraw[];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int tpg = (a.n + NW - 1) / NW, ntiles = tpg * a.nkv, per = (int)gridDim.x * NW;
    for (int j = 0;; j++) {
        const int tile = j * (int)gridDim.x + (int)blockIdx.x;
        if (tile >= ntiles) break;
        if (j > 0) {
            if (lane == 0)
                while (*(volatile int *)(done + j - 1) < per - slack) __nanosleep(128);
            __syncwarp();
        }
        const int t = a.t0 + (tile % tpg) * NW + w;
        if (t < a.t0 + a.n) ss_query<NW, NS>(a, tile / tpg, t, smraw);
        __syncwarp();
        if (lane == 0) atomicAdd(done + j, 1);
    }
}

/* ---- split attention for few queries (decode; fifth version, docs/CUDA.md "Decode kernels") --
 * Flash-decoding. A query's entries (its selection list, or the blocks 0..qb when dense) are cut
 * into ranges of SD_W bpw entries; CTA (range s, group g, query z) of SD_W warps takes the blocks
 * of its range that the CPU twin uses (infllm_attend: an id counts iff it is >= 0 and above every
 * id before it in the list, and its keys j <= p), warp w the blocks w, w + SD_W, ... of them,
 * each loaded by cp.async into the warp's own K/V slot and computed by flash_block on the m16
 * tile of the query's G heads (rows >= G empty). The warps' (max, sum, o) are combined in shared
 * memory into one unnormalised partial per CTA in sd_part, and attn_merge_kernel combines the
 * ranges of each (query, head) and divides. Same arithmetic per block as the other kernels; only
 * the order of the softmax sums changes. */
#define SD_W 4
#define SD_PART_CAP (1u << 21)                               /* floats (8 MiB) */
#define SD_MAXBPW 64                                         /* blocks a warp, at most */
static __device__ float sd_part[SD_PART_CAP];

/* floats of one partial: o (16, D), then max (16, log2 domain) and sum (16) */
static __host__ __device__ constexpr size_t sd_tile(int D) { return (size_t)16 * D + 32; }
static size_t sd_smem(int D, int bpw)
{
    return (size_t)SD_W * 2 * CU_KT * (D + 8) * 2 + (size_t)SD_W * bpw * 4;
}

template <int D, bool SPARSE>
static __global__ void __launch_bounds__(32 * SD_W) attn_split_kernel(attn_args a, int lg, int bpw,
                                                                       float *part)
{
    constexpr int LDS = D + 8, KS = D / 16, SLOT = 2 * CU_KT * LDS;
    static_assert((size_t)SD_W * 16 * (D + 2) * 4 <= (size_t)SD_W * SLOT * 2, "combine fits");
    extern __shared__ __align__(128) unsigned char smraw[];
    int *blk = (int *)(smraw + (size_t)SD_W * SLOT * 2);
    __shared__ int red[SD_W], nblk;
    const int s = blockIdx.x, g = blockIdx.y, z = blockIdx.z, t = a.t0 + z, G = 1 << lg;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, qd = lane & 3, rq = lane >> 2;
    const int bpc = SD_W * bpw, e0 = s * bpc;
    const int64_t p = a.p0 + t, qb = p / CU_KT;

    if (SPARSE) {                                           /* the ids this range uses */
        const int32_t *lst = a.sel + ((size_t)t * a.nkv + g) * a.K_sel;
        int mx = -1;                                        /* max id before the range */
        for (int i = threadIdx.x; i < e0 && i < a.K_sel; i += blockDim.x) mx = max(mx, lst[i]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0) red[w] = mx;
        __syncthreads();
        if (threadIdx.x == 0) {
            int last = red[0], nb = 0;
            for (int i = 1; i < SD_W; i++) last = max(last, red[i]);
            for (int i = e0; i < e0 + bpc && i < a.K_sel; i++) {
                const int b = lst[i];
                if (b < 0 || b <= last) continue;
                last = b;
                if ((int64_t)b * CU_KT <= p) blk[nb++] = b;
            }
            nblk = nb;
        }
    } else if (threadIdx.x == 0) {
        int nb = 0;
        for (int i = e0; i < e0 + bpc && i <= qb; i++) blk[nb++] = i;
        nblk = nb;
    }
    __syncthreads();

    /* Q fragments of rows rq, rq + 8 (= head of group g; rows >= G are empty) */
    uint32_t qa[KS][4];
    bool rv[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int row = rq + 8 * hf;
        rv[hf] = row < G;
        const bf16 *qrow = a.Q + ((size_t)t * a.nh + g * G + (rv[hf] ? row : 0)) * D;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            const int col = ks * 16 + 2 * qd;
            qa[ks][hf] = rv[hf] ? *(const uint32_t *)(qrow + col) : 0u;
            qa[ks][2 + hf] = rv[hf] ? *(const uint32_t *)(qrow + col + 8) : 0u;
        }
    }
    auto qf = [&](int ks, uint32_t (&q)[4]) {
#pragma unroll
        for (int e = 0; e < 4; e++) q[e] = qa[ks][e];
    };
    flash_acc<D> acc;
    bf16 *Kt = (bf16 *)smraw + (size_t)w * SLOT, *Vt = Kt + CU_KT * LDS;
    const float sl = a.scale * 1.4426950408889634f;
    const int nb = nblk;
    for (int i = w; i < nb; i += SD_W) {
        const int b = blk[i];
        kv_tiles_async<D>(a, g, b, p, Kt, Vt, 32, lane);
        cp_async_commit();
        cp_async_wait<0>();
        __syncwarp();
        int lim[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) lim[hf] = rv[hf] ? flash_lim(p - (int64_t)b * CU_KT) : -1;
        flash_block<D>(qf, Kt, Vt, lim, sl, acc);
        __syncwarp();                                       /* slot free for the next block */
    }

    /* combine the warps: (SD_W, 16) max, (SD_W, 16) sum, (SD_W, 16, D) o over the slots */
    __syncthreads();
    float *cm = (float *)smraw, *cl = cm + SD_W * 16, *co = cl + SD_W * 16;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int row = rq + 8 * hf;
        const float l = quad_sum(acc.lrow[hf]);
        if (qd == 0) {
            cm[w * 16 + row] = acc.mrow[hf];
            cl[w * 16 + row] = l;
        }
        float *orow = co + (size_t)(w * 16 + row) * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *(float2 *)(orow + i * 8 + 2 * qd) = make_float2(acc.o[i][2 * hf], acc.o[i][2 * hf + 1]);
    }
    __syncthreads();
    float *dst = part + (((size_t)z * a.nkv + g) * gridDim.x + s) * sd_tile(D);
    for (int idx = threadIdx.x; idx < 16 * D; idx += blockDim.x) {
        const int row = idx / D;
        float M = -INFINITY;
#pragma unroll
        for (int v = 0; v < SD_W; v++) M = fmaxf(M, cm[v * 16 + row]);
        float o = 0.0f;
        if (M != -INFINITY)
#pragma unroll
            for (int v = 0; v < SD_W; v++)
                if (cm[v * 16 + row] != -INFINITY)
                    o += co[(size_t)v * 16 * D + idx] * exp2f(cm[v * 16 + row] - M);
        dst[idx] = o;
    }
    if (threadIdx.x < 16) {
        const int row = threadIdx.x;
        float M = -INFINITY, L = 0.0f;
#pragma unroll
        for (int v = 0; v < SD_W; v++) M = fmaxf(M, cm[v * 16 + row]);
        if (M != -INFINITY)
#pragma unroll
            for (int v = 0; v < SD_W; v++)
                if (cm[v * 16 + row] != -INFINITY) L += cl[v * 16 + row] * exp2f(cm[v * 16 + row] - M);
        dst[16 * D + row] = M;
        dst[16 * D + 16 + row] = L;
    }
}

/* CTA (head h of group g, group g, query z), thread = output column: the nsplit partials of the
 * row rescaled to their common max, o / sum -> O. The maxima and sums are read once into shared
 * memory (nsplit factors f_s), so the o loads are independent of each other. Dynamic shared
 * memory: nsplit floats. */
template <int D>
static __global__ void __launch_bounds__(D) attn_merge_kernel(attn_args a, int lg, int nsplit,
                                                             const float *part)
{
    extern __shared__ float fs[];
    __shared__ float red[D / 32], Ls;
    const int h = blockIdx.x, g = blockIdx.y, z = blockIdx.z, i = threadIdx.x;
    const float *base = part + ((size_t)z * a.nkv + g) * nsplit * sd_tile(D);
    float mx = -INFINITY;
    for (int s = i; s < nsplit; s += D) {
        fs[s] = base[s * sd_tile(D) + 16 * D + h];
        mx = fmaxf(mx, fs[s]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((i & 31) == 0) red[i >> 5] = mx;
    __syncthreads();
    float M = red[0];
#pragma unroll
    for (int w = 1; w < D / 32; w++) M = fmaxf(M, red[w]);
    float L = 0.0f;
    for (int s = i; s < nsplit; s += D) {
        const float f = fs[s] == -INFINITY ? 0.0f : exp2f(fs[s] - M);
        fs[s] = f;
        L += base[s * sd_tile(D) + 16 * D + 16 + h] * f;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    __syncthreads();                                        /* red reused; fs complete */
    if ((i & 31) == 0) red[i >> 5] = L;
    __syncthreads();
    if (i == 0) {
        float t = 0.0f;
        for (int w = 0; w < D / 32; w++) t += red[w];
        Ls = t;
    }
    float o = 0.0f;
    const float *col = base + (size_t)h * D + i;
#pragma unroll 8
    for (int s = 0; s < nsplit; s++) o += col[s * sd_tile(D)] * fs[s];
    __syncthreads();
    L = Ls;
    a.O[((size_t)(a.t0 + z) * a.nh + ((size_t)g << lg) + h) * D + i] = L > 0.0f ? o / L : 0.0f;
}

static int attn_lg(const attn_args *a)
{
    if (a->block != CU_KT || (a->d != 64 && a->d != 128)) return -1;
    const int G = a->nh / a->nkv;
    for (int lg = 0; lg <= 4; lg++)
        if ((1 << lg) == G) return lg;
    return -1;
}

static size_t flash_smem(int d) { return (size_t)4 * CU_KT * (d + 8) * 2; }

template <bool SPARSE> static cudaError_t flash_launch(cudaStream_t st, const attn_args *a, int lg)
{
    const int qc = 4 * (16 >> lg);
    const dim3 grid((a->n + qc - 1) / qc, a->nkv);
    if (a->d == 128) flash_kernel<128, SPARSE><<<grid, 128, flash_smem(128), st>>>(*a, lg);
    else flash_kernel<64, SPARSE><<<grid, 128, flash_smem(64), st>>>(*a, lg);
    return cudaGetLastError();
}

/* Which dense prefill kernel (more than CU_SPLIT_MAXQ queries), SALA_CUDA_DATTN read at every launch
 * (tests set it): old (flash_kernel, 64/G queries x G heads a CTA: -1), mma (dense_kernel: 128
 * queries of one head a CTA, the next tile's S beside this one's softmax, docs/CUDA.md "Dense
 * prefill attention 2": -2), otherwise dense90_kernel on sm_90a ("Dense prefill attention 3"):
 * wg2 a 2-stage K/V ring (2), unset or anything else 3 stages (3); dense_kernel where that image
 * does not run. d = 64 always takes flash_kernel. */
static int dattn_variant(void)
{
    const char *s = getenv("SALA_CUDA_DATTN");
    if (s && !strcmp(s, "old")) return -1;
    if (s && !strcmp(s, "mma")) return -2;
    if (s && !strcmp(s, "wg2")) return 2;
    return 3;
}

static constexpr size_t dense_smem() { return (size_t)2 * DN_STAGES * CU_KT * (128 + 8) * 2; }

/* dense_kernel for d = 128; false: not taken (another d, or more CTAs than a grid column
 * holds), nothing launched. */
static bool dense_launch(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    constexpr int NW = 8;
    if (a->d != 128) return false;
    const int64_t nc = ((int64_t)a->n + 16 * NW - 1) / (16 * NW);
    if (nc > 65535) return false;
    const dim3 grid(a->nh, (unsigned)nc);
    dense_kernel<128, NW><<<grid, 32 * NW, dense_smem(), st>>>(*a, lg);
    *err = cudaGetLastError();
    return true;
}

/* Dynamic shared memory a block may opt in to (cu_attn_init); 0 before it ran. */
static int sr_optin;

/* The split kernels for a launch of at most CU_SPLIT_MAXQ queries (not with SALA_CUDA_DECODE=old):
 * ranges of SD_W bpw entries, bpw doubled until the partials fit sd_part. false: not taken,
 * nothing launched. */
template <bool SPARSE>
static bool split_launch(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    if (a->n > CU_SPLIT_MAXQ || sr_optin <= 0 || cu_decode_old()) return false;
    const int64_t nent = SPARSE ? a->K_sel : (a->p0 + a->t0 + a->n - 1) / CU_KT + 1;
    if (nent <= 0) return false;
    const size_t tile = sd_tile(a->d);
    float *part = a->part;
    size_t cap = a->part_cap;
    if (!part) {
        static float *shared_part;   /* sd_part's device address, looked up once */
        if (!shared_part && cudaGetSymbolAddress((void **)&shared_part, sd_part) != cudaSuccess) {
            *err = cudaGetLastError();
            return true;
        }
        part = shared_part;
        cap = SD_PART_CAP;
    }
    for (int bpw = 1; bpw <= SD_MAXBPW; bpw *= 2) {
        const int64_t nsplit = (nent + SD_W * bpw - 1) / (SD_W * bpw);
        if ((size_t)a->n * a->nkv * nsplit * tile > cap || nsplit > 12288) continue;
        const size_t sm = sd_smem(a->d, bpw);
        const dim3 grid((unsigned)nsplit, a->nkv, a->n), mg(1 << lg, a->nkv, a->n);
        if (a->d == 128) {
            attn_split_kernel<128, SPARSE><<<grid, 32 * SD_W, sm, st>>>(*a, lg, bpw, part);
            attn_merge_kernel<128><<<mg, 128, nsplit * 4, st>>>(*a, lg, (int)nsplit, part);
        } else {
            attn_split_kernel<64, SPARSE><<<grid, 32 * SD_W, sm, st>>>(*a, lg, bpw, part);
            attn_merge_kernel<64><<<mg, 64, nsplit * 4, st>>>(*a, lg, (int)nsplit, part);
        }
        *err = cudaGetLastError();
        return true;
    }
    return false;
}

static bool use_wmma(void)
{
    static int v = -1;
    if (v < 0) v = getenv("SALA_CUDA_WMMA") != nullptr;
    return v;
}

/* Which block-sparse kernel: SALA_CUDA_SATTN=old (the second version's flash_kernel), ring7,
 * ring11 or ring15 (the ring with that many consumer warps: 8, 12 or 16 warps with the producer,
 * i.e. 2, 3 or 4 per SM sub-partition, which caps registers at 255, 168 or 128), tma15
 * (sparse_user_kernel with 15 consumer warps: users-only release, TMA loads), tma11 (11 consumer
 * warps: 168 registers, 5 slots), tma15o / tma11o (the same with slots reused out of order: an
 * element goes into any free slot, not only the one of the element ns before); the TMA forms
 * fall back to ring15 where no tensor map can be made; otherwise (1) the split kernels for few
 * queries, else tma11o for launches whose keys end at or below CU_SATTN_SHORT (dense picks:
 * 3-5 users an element, the consumers' chains bind, and 11 consumers with 5 slots were 4-5%
 * faster over a 32K prefill, calls o2 and o4), else tma15o (docs/CUDA.md "Sparse attention 9":
 * 6-7% faster than tma15 at 32K and 128K, and than tma11o at 128K; tma15 was faster than ring15
 * at 32K, 128K and 1M, "Sparse attention 4"), else ring15 where no tensor map can be made.
 * The default (and band) first takes the band form (band_launch; docs/CUDA.md "Sparse attention
 * 11": 10-11% less sparse attention at 32K than tma11o): k_band90, then for launches whose keys
 * end at or below CU_SATTN_SHORT the 11 consumer ring over the picks, beyond that the per-warp
 * streams (sparse_stream_kernel, 12 warps x 4 pieces; docs/CUDA.md "Sparse attention 12": 19%
 * less than the band ring at 128K, 27% at 256K, 6% less than tma15o at 1M, where the band ring
 * had lost 4.6%), on the persistent grid past CU_SPERS_MIN keys (equal at 256K, 19% less at 1M:
 * the plain grid's warps read all over a group's K/V there, 15% L2 hits); band15 / band11 force
 * the 15 / 11 consumer ring, stream / streamp the streams (12 warps x 4 pieces, plain or
 * persistent; 8 x 6 was 3-4% slower, call s2) at any length (the band ring where the stream
 * form does not apply: G != 16); noband: the default without band (the choice above). */
#define CU_SATTN_SHORT 32768
#define CU_SPERS_MIN 262144
static int sattn_variant(void)
{
    const char *s = getenv("SALA_CUDA_SATTN");            /* read at every launch (tests set it) */
    if (s && !strcmp(s, "old")) return 0;
    if (s && !strcmp(s, "ring7")) return 7;
    if (s && !strcmp(s, "ring11")) return 11;
    if (s && !strcmp(s, "ring15")) return 15;
    if (s && !strcmp(s, "tma15")) return 215;
    if (s && !strcmp(s, "tma11")) return 211;
    if (s && !strcmp(s, "tma15o")) return 415;
    if (s && !strcmp(s, "tma11o")) return 411;
    if (s && !strcmp(s, "band")) return 3;
    if (s && !strcmp(s, "noband")) return 2;
    if (s && !strcmp(s, "band15")) return 1415;
    if (s && !strcmp(s, "band11")) return 1411;
    if (s && !strcmp(s, "stream")) return 1612;
    if (s && !strcmp(s, "streamp")) return 1712;
    return 1;
}

/* cuTensorMapEncodeTiled, looked up through the runtime by cu_attn_init (NULL: none; the TMA
 * ring is then never launched). */
static PFN_cuTensorMapEncodeTiled_v12000 tmap_enc;

static void tmap_lookup(void)
{
    void *f = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
        tmap_enc = (PFN_cuTensorMapEncodeTiled_v12000)f;
    else
        (void)cudaGetLastError();
}

bool cu_tmap_ready(void) { return tmap_enc != NULL; }

bool cu_tmap_2d(CUtensorMap *m, const bf16 *base, int64_t rows, int64_t cols, int box_rows,
                int box_cols)
{
    const PFN_cuTensorMapEncodeTiled_v12000 enc = tmap_enc;
    if (!enc || rows <= 0 || cols <= 0 || cols > ((int64_t)1 << 32) / 2 || box_rows <= 0 ||
        box_rows > 256 || box_cols <= 0 || box_cols > 64)
        return false;
    const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
    const cuuint64_t stride[1] = {(cuuint64_t)cols * 2};
    const cuuint32_t box[2] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows}, es[2] = {1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dim, stride, box, es,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* The map of a K or V cache (cols = nkv x D): boxes of 64 columns x 64 rows. */
static bool tmap_kv(CUtensorMap *m, const bf16 *base, int64_t rows, int64_t cols)
{
    return cu_tmap_2d(m, base, rows, cols, 64, 64);
}

/* Launch sparse_user_kernel; false (nothing launched) when its shared memory does not fit or
 * no tensor map could be made. Shared memory: header, lists + table (3 x NQ x K_sel ints),
 * Q fragments (!QREG), then ns slots (unpadded, 1 KB aligned). */
template <int D, int NC, bool QREG, bool OOO = false, bool BAND = false>
static bool su_launch(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    const int QPT = 16 >> lg, ncw = NC < 32 / QPT ? NC : 32 / QPT, nq = ncw * QPT;
    const size_t qbytes = QREG ? 0 : (size_t)NC * D * 32;
    const size_t lst = ((size_t)nq * a->K_sel * 4 + 15) / 16 * 16;
    if (sr_optin <= 0 || a->K_sel <= 0 || lst > (size_t)sr_optin) return false;
    const size_t head = SU_HDR + 3 * lst + qbytes;
    const size_t fixed = head + 1024;
    const size_t slot = (size_t)2 * CU_KT * D * 2;
    if (fixed + 2 * slot > (size_t)sr_optin) return false;
    size_t ns = ((size_t)sr_optin - fixed) / slot;
    if (ns > SR_MAXNS) ns = SR_MAXNS;
    CUtensorMap tk, tv;
    memset(&tk, 0, sizeof(tk));
    memset(&tv, 0, sizeof(tv));
    const int64_t rows = a->p0 + a->t0 + a->n, cols = (int64_t)a->nkv * D;
    if (rows > INT32_MAX || !tmap_kv(&tk, a->K, rows, cols) || !tmap_kv(&tv, a->V, rows, cols))
        return false;
    const dim3 grid((a->n + nq - 1) / nq, a->nkv);
    sparse_user_kernel<D, NC, QREG, OOO, BAND><<<grid, 32 * (NC + 1), fixed + ns * slot, st>>>(
        *a, lg, ncw, (int)ns, (int)lst, tk, tv);
    *err = cudaGetLastError();
    return true;
}

/* Launch the ring kernel; false (nothing launched) when its shared memory does not fit. */
template <int D, int NC, bool QREG>
static bool sr_launch(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    const int QPT = 16 >> lg, ncw = NC < 32 / QPT ? NC : 32 / QPT, nq = ncw * QPT;
    const size_t qbytes = QREG ? 0 : (size_t)NC * D * 32;
    const size_t lst = ((size_t)nq * a->K_sel * 4 + 15) / 16 * 16;
    const size_t fixed = (SR_HDR + lst + qbytes + 127) / 128 * 128;    /* ring 128-aligned */
    const size_t slot = (size_t)2 * CU_KT * (D + 8) * 2;
    if (sr_optin <= 0 || a->K_sel <= 0 || fixed + 2 * slot > (size_t)sr_optin) return false;
    size_t ns = ((size_t)sr_optin - fixed) / slot;
    if (ns > SR_MAXNS) ns = SR_MAXNS;
    const dim3 grid((a->n + nq - 1) / nq, a->nkv);
    sparse_ring_kernel<D, NC, QREG><<<grid, 32 * (NC + 1), fixed + ns * slot, st>>>(
        *a, lg, ncw, (int)ns, (int)(fixed - SR_HDR - qbytes));
    *err = cudaGetLastError();
    return true;
}

cudaError_t k_attn_dense(cudaStream_t st, const attn_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const int lg = attn_lg(a);
    if (lg >= 0 && !use_wmma()) {
        cudaError_t err = cudaSuccess;
        if (split_launch<false>(st, a, lg, &err)) return err;
        const int v = dattn_variant();
        if (v >= 0 && k_dense90(st, a, lg, v, &err)) return err;
        if (v != -1 && dense_launch(st, a, lg, &err)) return err;
        return flash_launch<false>(st, a, lg);
    }
    const int G = a->nh / a->nkv, MT = 4, qt = 64 / G;
    const dim3 grid((a->n + qt - 1) / qt, a->nkv);
    attn_kernel<false><<<grid, 128, attn_smem(16 * MT, a->d), st>>>(*a, MT, qt);
    return cudaGetLastError();
}

/* Shared memory of a streams CTA, NW warps x (NS pieces + a list); 0 where the stream form does
 * not apply (G != 16, d != 128) or it does not fit. */
static size_t ss_smem(const attn_args *a, int lg, int NW, int NS)
{
    if (lg != 4 || a->d != 128 || a->K_sel <= 0) return 0;
    const size_t sm = (size_t)NW * NS * SS_PIECE + (size_t)NW * a->K_sel * 4;
    return sr_optin > 0 && sm <= (size_t)sr_optin ? sm : 0;
}

/* Launch sparse_stream_kernel (after k_band90); false (nothing launched) where ss_smem is 0. */
template <int NW, int NS>
static bool ss_launch(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    const size_t sm = ss_smem(a, lg, NW, NS);
    if (!sm) return false;
    const dim3 grid((a->n + NW - 1) / NW, a->nkv);
    sparse_stream_kernel<NW, NS><<<grid, 32 * NW, sm, st>>>(*a);
    *err = cudaGetLastError();
    return true;
}

/* The persistent grid's slack: a generation may start while 1/div of the last one's warps
 * are still at work; SALA_CUDA_SSP_SLACK=div (1 .. 4096; read at each launch), default 16. */
static int ssp_slack_div(void)
{
    const char *s = getenv("SALA_CUDA_SSP_SLACK");
    const long v = s ? strtol(s, nullptr, 10) : 16;
    return v >= 1 && v <= 4096 ? (int)v : 16;
}

/* Launches the persistent grid took. */
static std::atomic<long> ssp_count;

long cu_attn_pers_launches(void) { return ssp_count.load(); }

/* Launch sparse_stream_pers_kernel<12, 4> as a cooperative grid; its generation counts after
 * the band state in a->part (the caller checked that state's room, `state` floats). false:
 * nothing launched (another shape, no room, or the cooperative launch refused). */
static bool ssp_launch(cudaStream_t st, const attn_args *a, int lg, size_t state,
                       cudaError_t *err)
{
    constexpr int NW = 12, NS = 4;
    const size_t sm = ss_smem(a, lg, NW, NS);
    const int sm_count = cu_sms();   /* for the persistent grid */
    if (!sm || sm_count <= 0 || sm >= ((size_t)1 << 32)) return false;
    /* CTAs an SM at this shared memory size: asked once a size (the model's launches share
     * one), kept as (size << 32 | count) */
    static std::atomic<uint64_t> occ{0};
    uint64_t o = occ.load();
    int per = (o >> 32) == sm ? (int)(o & 0xffffffffu) : 0;
    if (!per) {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, sparse_stream_pers_kernel<NW, NS>,
                                                          32 * NW, sm) != cudaSuccess ||
            per <= 0) {
            (void)cudaGetLastError();
            return false;
        }
        occ.store((uint64_t)sm << 32 | (uint32_t)per);
    }
    const int64_t ntiles = (int64_t)((a->n + NW - 1) / NW) * a->nkv;
    const int64_t grid = ntiles < (int64_t)per * sm_count ? ntiles : (int64_t)per * sm_count;
    const int64_t ngen = (ntiles + grid - 1) / grid;
    const size_t off = (state + 63) / 64 * 64;                 /* floats */
    if (off + (size_t)ngen > a->part_cap) return false;
    int *done = (int *)(a->part + off);
    if ((*err = cudaMemsetAsync(done, 0, (size_t)ngen * 4, st)) != cudaSuccess) return true;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    const int slack = (int)(grid * NW / ssp_slack_div());
    if (cu_launch_ex(at, 1, dim3((unsigned)grid), dim3(32 * NW), sm, st,
                     sparse_stream_pers_kernel<NW, NS>, *a, done, slack) != cudaSuccess) {
        (void)cudaGetLastError();                              /* refused: the plain grid */
        return false;
    }
    ssp_count++;
    *err = cudaSuccess;
    return true;
}

/* The band form (the default, SALA_CUDA_SATTN=band / band15 / band11 / stream / streamp:
 * k_band90, then over the rest the out-of-order ring with BAND, 15 or 11 consumer warps, or the
 * per-warp streams; v = 1: as the default picks them), its state in a->part; false: nothing
 * launched (the caller goes on with the plain ring), also when a->part cannot hold the state. */
static bool band_launch(cudaStream_t st, const attn_args *a, int lg, int v, cudaError_t *err)
{
    if (a->d != 128 || a->block != CU_KT || a->K_sel < CU_BAND_LOCAL + 2) return false;
    size_t need;
    if (__builtin_mul_overflow((size_t)a->n, (size_t)a->nh * (128 + 2), &need) || !a->part ||
        a->part_cap < need)
        return false;   /* no room for the band state: the plain ring */
    if (v == 1) {
        const int64_t keys = a->p0 + a->t0 + a->n;
        v = keys <= CU_SATTN_SHORT ? 1411 : keys <= CU_SPERS_MIN ? 1612 : 1712;
    }
    if (!k_band90(st, a, lg, err)) return false;
    if (*err != cudaSuccess) return true;
    if (v == 1712 && ssp_launch(st, a, lg, need, err)) return true;
    if (v == 1712) v = 1612;                       /* no persistent grid: the plain streams */
    if (v == 1612 ? ss_launch<12, 4>(st, a, lg, err)
        : v == 1411 ? su_launch<128, 11, false, true, true>(st, a, lg, err)
                    : su_launch<128, 15, false, true, true>(st, a, lg, err))
        return true;
    if (v == 1612 && su_launch<128, 15, false, true, true>(st, a, lg, err))
        return true;                                /* no stream form: the band ring */
    return false;                 /* no ring: the caller's plain kernels take the whole lists */
}

/* Few queries (decode): the split kernels; else the TMA users-only ring (ring15 where no tensor
 * map can be made) for the register shapes when its shared memory fits (K_sel up to a few
 * thousand); else, and with SALA_CUDA_SATTN=old, the second
 * version's flash_kernel; SALA_CUDA_WMMA or other shapes: the first version's WMMA kernel.
 * The default and SALA_CUDA_SATTN=band / band15 / band11 / stream / streamp: band_launch after
 * the split kernels' turn, else (no band form) as noband / tma15o / tma11o. */
cudaError_t k_attn_sparse(cudaStream_t st, const attn_args *a)
{
    if (a->n <= 0) return cudaSuccess;
    const int lg = attn_lg(a);
    if (lg >= 0 && !use_wmma()) {
        cudaError_t err = cudaSuccess;
        int v = sattn_variant();
        const bool d128 = a->d == 128;
        bool done = false;
        const bool band = v == 1 || v == 3 || v == 1415 || v == 1411 || v == 1612 || v == 1712;
        if (v == 3) v = 1;
        if ((band || v == 1 || v == 2) && split_launch<true>(st, a, lg, &err)) return err;
        if (band && band_launch(st, a, lg, v, &err)) return err;
        if (v == 1612 || v == 1712) v = 2;      /* no band form: as noband */
        if (v > 1000) v -= 1000;
        if (v == 1 || v == 2) v = a->p0 + a->t0 + a->n <= CU_SATTN_SHORT ? 411 : 415;
        if (v == 7)
            done = d128 ? sr_launch<128, 7, true>(st, a, lg, &err)
                        : sr_launch<64, 7, true>(st, a, lg, &err);
        else if (v == 11)
            done = d128 ? sr_launch<128, 11, false>(st, a, lg, &err)
                        : sr_launch<64, 11, false>(st, a, lg, &err);
        else if (v == 215)
            done = d128 ? su_launch<128, 15, false>(st, a, lg, &err)
                        : su_launch<64, 15, false>(st, a, lg, &err);
        else if (v == 415)
            done = d128 ? su_launch<128, 15, false, true>(st, a, lg, &err)
                        : su_launch<64, 15, false, true>(st, a, lg, &err);
        else if (v == 411)
            done = d128 ? su_launch<128, 11, false, true>(st, a, lg, &err)
                        : su_launch<64, 11, false, true>(st, a, lg, &err);
        else if (v == 211)
            done = d128 ? su_launch<128, 11, false>(st, a, lg, &err)
                        : su_launch<64, 11, false>(st, a, lg, &err);
        if (!done && (v == 15 || v == 215 || v == 211 || v == 415 || v == 411))
            done = d128 ? sr_launch<128, 15, false>(st, a, lg, &err)
                        : sr_launch<64, 15, false>(st, a, lg, &err);
        if (done) return err;
        return flash_launch<true>(st, a, lg);
    }
    const dim3 grid(a->n, a->nkv);
    attn_kernel<true><<<grid, 128, attn_smem(16, a->d), st>>>(*a, 1, 1);
    return cudaGetLastError();
}

/* (static + dynamic shared memory may not pass the opt-in limit: the most split_launch asks) */
template <int D, bool SPARSE> static cudaError_t sd_init(void)
{
    return cudaFuncSetAttribute(attn_split_kernel<D, SPARSE>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)sd_smem(D, SD_MAXBPW));
}

template <int D, int NC, bool QREG> static cudaError_t sr_init(void)
{
    return cudaFuncSetAttribute(sparse_ring_kernel<D, NC, QREG>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, sr_optin);
}

template <int NW, int NS> static cudaError_t ss_init(void)
{
    return cudaFuncSetAttribute(sparse_stream_kernel<NW, NS>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, sr_optin);
}

static cudaError_t ssp_init(void)
{
    return cudaFuncSetAttribute(sparse_stream_pers_kernel<12, 4>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, sr_optin);
}

template <int D, int NC, bool OOO = false, bool BAND = false> static cudaError_t su_init(void)
{
    return cudaFuncSetAttribute(sparse_user_kernel<D, NC, false, OOO, BAND>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, sr_optin);
}

cudaError_t cu_attn_init(void)
{
    cudaError_t err = cudaFuncSetAttribute(attn_kernel<false>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)attn_smem(64, 256));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(flash_kernel<128, false>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)flash_smem(128));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(flash_kernel<128, true>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)flash_smem(128));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(dense_kernel<128, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)dense_smem());
    if (err != cudaSuccess) return err;
    int dev = 0, optin = 0;
    if ((err = cudaGetDevice(&dev)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) !=
            cudaSuccess)
        return err;
    sr_optin = optin;
    tmap_lookup();
    const cudaError_t r[] = {sr_init<128, 7, true>(),   sr_init<64, 7, true>(),
                             sr_init<128, 11, false>(), sr_init<64, 11, false>(),
                             sr_init<128, 15, false>(), sr_init<64, 15, false>(),
                             su_init<128, 15>(),        su_init<64, 15>(),
                             su_init<128, 11>(),        su_init<64, 11>(),
                             su_init<128, 15, true>(),  su_init<64, 15, true>(),
                             su_init<128, 11, true>(),  su_init<64, 11, true>(),
                             su_init<128, 15, true, true>(), su_init<128, 11, true, true>(),
                             ss_init<12, 4>(), ssp_init(),
                             sd_init<128, true>(),      sd_init<64, true>(),
                             sd_init<128, false>(),     sd_init<64, false>()};
    for (cudaError_t x : r)
        if (x != cudaSuccess) return x;
    return cudaFuncSetAttribute(attn_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)attn_smem(16, 256));
}
