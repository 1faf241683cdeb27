/* cu_dense90.cu: dense causal prefill attention on sm_90a (TMA + wgmma, warp-specialized),
 * d = 128: docs/CUDA.md "Dense prefill attention 3" (FlashAttention-3's design: producer warp,
 * K/V ring, S in registers, P as the register A operand of P V). Twin: cpu_attn_dense.
 *
 *   O[t, h] = softmax_j<=p (Q[t, h] · K[j, g]ᵀ · scale) V[j, g],  p = p0 + t, g = h >> lg
 *
 * CTA (384 threads) = 128 consecutive queries tq0 .. tq0 + 127 of ONE q head h; warpgroup 0 is
 * the producer (thread 0 issues every TMA load), warpgroups 1 and 2 the consumers, 64 query rows
 * each (warp w of a consumer: rows 16 w .. 16 w + 15, the wgmma accumulator layout). Key tiles of
 * 128 rows 0 .. pmax / 128 (pmax: the CTA's last position) pass through a ring of NS stages
 * (3, 224 KB of shared memory with Q; 2 with SALA_CUDA_DATTN=wg2),
 * each a K and a V tile (32 KB each: two 64-column halves of (128 rows, 128 B), 128-byte
 * swizzle), with a full barrier per K and per V tile (TMA bytes) and one empty barrier (8
 * consumer warp arrivals). Q (64 rows a consumer, 16 KB) arrives once by TMA.
 * A consumer's tile b:  S = Q Kᵀ (8 wgmma m64n128k16, both operands from shared memory, K-major)
 * into 64 fp32 registers; mask (only tiles that reach past the warpgroup's first row); online
 * softmax in the log2 domain (row max over a quad by two shuffles, thread-partial row sums);
 * P rounded to bf16 in registers as the A fragments of O += P V (8 wgmma m64n128k16 with A
 * from registers, B = the V tile MN-major: transpose bit set, 16 keys a k step = 2 KB). The
 * S GEMM of tile b is issued before the P V GEMM of tile b - 1 and the softmax of tile b runs
 * while that P V is on the tensor cores (FA3's intra-warpgroup overlap); O is rescaled after
 * it completed.
 * Rows past the launch's last query and keys past pmax are zero-filled by the tensor maps (never
 * stored / masked by j <= p). Key j is used iff j <= p. Grid (nh, CTAs), the heads fastest and
 * the longest CTAs first (as dense_kernel). Body compiled for sm_90a only
 * (__CUDA_ARCH_FEAT_SM90_ALL); the host takes it only where cu_sm90a() says that image runs.
 *
 * BAND (k_band90, docs/CUDA.md "Sparse attention 11"): the forced part of a sparse prefill
 * query's selection (SALA-SPEC §3.6: block 0 and the local blocks qb - CU_BAND_LOCAL .. qb),
 * keys {j < 64} ∪ [64 (qb - CU_BAND_LOCAL), p]. CTAs start at positions aligned to 128, so each
 * consumer's 64 rows share one qb (rows outside [t0, t0 + n) are computed and not stored; Q rows
 * before row 0 are zero-filled by the map). Key tiles: tile 0 (when the window starts past it),
 * then the window's tiles; masked where a tile reaches below the warpgroup's window start or past
 * its first row. Out: the unnormalized online-softmax state of each row, band (n, nh, d + 2):
 * O (d), max (log2 domain, scaled), sum; the sparse ring goes on from it. */
#include "engine/cuda/cu_int.h"
#include "engine/cuda/cu_mma.cuh"

#include <string.h>

#define DW_D 128                                /* head size */
#define DW_BM 128                               /* queries a CTA (2 consumer warpgroups) */
#define DW_BN 128                               /* keys a tile */
#define DW_TILE (DW_BN * DW_D * 2)              /* bytes of a K or V tile */
#define DW_QB (DW_BM * DW_D * 2)                /* bytes of Q */
/* shared memory of an ns-stage ring: alignment slack, Q, the ring, barriers */
#define DW_SMEM(ns) (1024 + DW_QB + 2 * (ns) * DW_TILE + 128)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* d += A (64 x 16 bf16, registers: the m16n8k16 A fragment of each warp's 16 rows) · B (16 x 128,
 * desc db, MN-major: transpose bit set) */
static __device__ __forceinline__ void dw_pv(float (&d)[64], const uint32_t (&a)[4], uint64_t db)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : WG_ACC64(d, 0)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
/* MN-major descriptor, 128-byte swizzle: 8-row (k) groups SBO = 1024 bytes apart, 64-column
 * (n) blocks lbo bytes apart. */
static __device__ __forceinline__ uint64_t dw_vdesc(uint32_t addr, uint32_t lbo)
{
    return (uint64_t)((addr & 0x3ffffu) >> 4) | (uint64_t)(lbo >> 4) << 16 |
           (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

/* 2^x on the MUFU unit (flushes results below 2^-126 to 0: probabilities that small vanish in
 * bf16 P V anyway) */
static __device__ __forceinline__ float dw_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* One tile's online-softmax step on the S accumulators s (s[4 j + 2 hf + e]: row rq + 8 hf of
 * the warp, key column 8 j + 2 qd + e) in place: masked (when mask: column c is out iff c >
 * lim[hf], the last valid column of the row, or z <= c < lo[hf]; dense: lo = 0), scaled by sl
 * (log2 domain), s = 2^(s sl - m_new); m, l (thread-partial sum) updated; corr = 2^(m_old -
 * m_new) returned for O. FIRST: no previous tile (m = -inf, l = 0). */
template <bool FIRST>
static __device__ __forceinline__ void dw_softmax(float (&s)[64], bool mask, const int (&lim)[2],
                                                  const int (&lo)[2], int z, float sl,
                                                  float (&m)[2], float (&l)[2], float (&corr)[2],
                                                  int qd)
{
    if (mask) {
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    if (8 * j + 2 * qd + e > lim[hf] ||
                        (8 * j + 2 * qd + e >= z && 8 * j + 2 * qd + e < lo[hf]))
                        s[4 * j + 2 * hf + e] = -INFINITY;
    }
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; j++)
            mx = fmaxf(mx, fmaxf(s[4 * j + 2 * hf], s[4 * j + 2 * hf + 1]));
        mx = quad_max(mx);
        const float mn = FIRST ? mx * sl : fmaxf(m[hf], mx * sl);
        corr[hf] = FIRST ? 0.0f : exp2f(m[hf] - mn);
        m[hf] = mn;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = dw_ex2(fmaf(s[4 * j + 2 * hf + e], sl, -mn));
                s[4 * j + 2 * hf + e] = p;
                sum += p;
            }
        l[hf] = FIRST ? sum : l[hf] * corr[hf] + sum;
    }
}

template <bool B> struct dw_bool {
    static constexpr bool value = B;
};

/* P (the softmax'ed s) -> bf16 A fragments of the 8 k steps (16 keys each) of O += P V */
static __device__ __forceinline__ void dw_pack(const float (&s)[64], uint32_t (&pa)[8][4])
{
#pragma unroll
    for (int kk = 0; kk < 8; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++) pa[kk][i] = pack_bf16(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
}
#endif

template <int NS, bool BAND = false>
static __global__ void __launch_bounds__(384, 1)
    dense90_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv, attn_args a, int lg)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t dw_raw[];
    const uint32_t sb = (smem_u32(dw_raw) + 1023) & ~1023u;      /* Q, then the ring */
    const uint32_t ring = sb + DW_QB, bars = ring + 2 * NS * DW_TILE;
    const uint32_t qbar = bars, kfull = bars + 8, vfull = kfull + 8 * NS,
                   empty = vfull + 8 * NS;
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int h = blockIdx.x, g = h >> lg;
    const int cta = (int)(gridDim.y - 1 - blockIdx.y);                /* long first */
    const int tend = a.t0 + a.n;
    /* BAND: the CTA's first row at a position aligned to 128 (tq0 may be below t0, even < 0) */
    const int tq0 = BAND ? (int)((a.p0 + a.t0) / DW_BM * DW_BM + (int64_t)cta * DW_BM - a.p0)
                         : a.t0 + cta * DW_BM;
    const int nq = tend - tq0 < DW_BM ? tend - tq0 : DW_BM;
    const int64_t pmax = a.p0 + tq0 + nq - 1;
    /* key tiles: b -> tile kt(b) = b (dense); BAND: tile 0 first when the window's first tile
     * lt (of the CTA's first row) is past it (sep), then lt .. pmax / DW_BN */
    int lt = 0, sep = 0;
    if (BAND) {
        const int64_t qb0 = (a.p0 + tq0) / CU_KT - CU_BAND_LOCAL;
        lt = (int)((qb0 > 0 ? qb0 : 0) * CU_KT / DW_BN);
        sep = lt > 0;
    }
    auto ktile = [&](int b) { return BAND ? (sep && b == 0 ? 0 : lt + b - sep) : b; };
    const int nb = (int)(pmax / DW_BN) + 1 - lt + sep;
    if (threadIdx.x == 0) {
        mbar_init(qbar, 1);
        for (int s = 0; s < NS; s++) {
            mbar_init(kfull + 8 * s, 1);
            mbar_init(vfull + 8 * s, 1);
            mbar_init(empty + 8 * s, 8);
        }
        mbar_init_fence();
    }
    __syncthreads();
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
        if (tid != 0) return;
        mbar_arrive_tx(qbar, DW_QB);
#pragma unroll
        for (int i = 0; i < 4; i++)              /* consumer i >> 1, column half i & 1 */
            tma_load_2d(sb + i * 8192, &tq, h * DW_D + (i & 1) * 64, tq0 + (i >> 1) * 64, qbar);
        for (int b = 0; b < nb; b++) {
            const int s = b % NS;
            const uint32_t kt = ring + s * 2 * DW_TILE, vt = kt + DW_TILE;
            if (b >= NS) mbar_wait(empty + 8 * s, (b / NS - 1) & 1);
            mbar_arrive_tx(kfull + 8 * s, DW_TILE);
            const int j0 = ktile(b) * DW_BN;
            tma_load_2d(kt, &tk, g * DW_D, j0, kfull + 8 * s);
            tma_load_2d(kt + DW_TILE / 2, &tk, g * DW_D + 64, j0, kfull + 8 * s);
            mbar_arrive_tx(vfull + 8 * s, DW_TILE);
            tma_load_2d(vt, &tv, g * DW_D, j0, vfull + 8 * s);
            tma_load_2d(vt + DW_TILE / 2, &tv, g * DW_D + 64, j0, vfull + 8 * s);
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
    const int c = wg - 1, warp = tid / 32, lane = tid % 32, qd = lane & 3, rq = lane >> 2;
    const int64_t pw0 = a.p0 + tq0 + 64 * c;                 /* the warpgroup's first position */
    const int64_t pw1 = pw0 + 63 < pmax ? pw0 + 63 : pmax;   /* its last valid one */
    const int nbw = pw0 <= pmax ? (int)(pw1 / DW_BN) + 1 - lt + sep : 0;  /* tiles it computes */
    /* BAND: the warpgroup's window starts at key lw (its 64 rows share one qb) */
    int64_t lw = 0;
    if (BAND) {
        const int64_t qbw = pw0 / CU_KT - CU_BAND_LOCAL;
        lw = (qbw > 0 ? qbw : 0) * CU_KT;
    }
    int64_t prow[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) prow[hf] = pw0 + 16 * warp + rq + 8 * hf;
    const float sl = a.scale * 1.4426950408889634f;
    const uint64_t dhi = wg_desc(0);                         /* descriptor fields but the start */
    const uint32_t dq = (uint32_t)wg_desc(sb + c * 16384), dk = (uint32_t)wg_desc(ring);
    /* release stage s: every warp of both consumers arrives once its wgmma reads are done */
    auto release = [&](int s) {
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + 8 * s);
    };
    /* S = Q Kᵀ of tile b (stage b % NS), issued, committed */
    auto issue_qk = [&](int b, float (&s)[64]) {
        const uint32_t ka = dk + (b % NS) * (2 * DW_TILE >> 4);
#pragma unroll
        for (int ks = 0; ks < 8; ks++)
            wg_mma(s, dhi | (dq + (ks >> 2) * 512 + (ks & 3) * 2),
                   dhi | (ka + (ks >> 2) * 1024 + (ks & 3) * 2), ks);
        wg_commit();
    };
    /* O += P V of tile b, issued, committed */
    auto issue_pv = [&](int b, float (&o)[64], const uint32_t (&pa)[8][4]) {
        const uint32_t va = ring + (b % NS) * 2 * DW_TILE + DW_TILE;
#pragma unroll
        for (int kk = 0; kk < 8; kk++) dw_pv(o, pa[kk], dw_vdesc(va + kk * 2048, DW_TILE / 2));
        wg_commit();
    };
    /* the last valid column of each row in tile b (-1 .. 127); BAND: columns z <= c < lo (below
     * the window; z = 64 on tile 0: block 0 stays) out too (dense: lo = 0) */
    int lo[2] = {0, 0}, z = 0;
    auto limits = [&](int b, int (&lim)[2]) {
        const int64_t j0 = (int64_t)ktile(b) * DW_BN;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int64_t d = prow[hf] - j0;
            lim[hf] = d < 0 ? -1 : (d > DW_BN - 1 ? DW_BN - 1 : (int)d);
        }
        if (BAND) {
            const int64_t dl = lw - j0;
            lo[0] = lo[1] = dl < 0 ? 0 : (dl > DW_BN ? DW_BN : (int)dl);
            z = j0 == 0 ? CU_KT : 0;
        }
    };

    float o[64], s[64], m[2], l[2], corr[2];
    uint32_t pa[8][4];
    int lim[2];
    /* tile b >= 1: its S issued, the P V of tile b - 1 issued, S's softmax beside that P V, then
     * O rescaled and P of tile b packed. MASK: tile b reaches past the warpgroup's first row.
     * Both K of tile b and V of tile b - 1 are waited for before the fence: a barrier wait (a
     * spin loop) between the two chains made ptxas serialize every wgmma (C7520). The masked
     * tiles (the last one or two) run in a loop of their own. */
    auto step = [&](int b, auto mask) {
        const int sp = (b - 1) % NS;
        mbar_wait(kfull + 8 * (b % NS), (b / NS) & 1);
        mbar_wait(vfull + 8 * sp, ((b - 1) / NS) & 1);
        wg_fence();
        issue_qk(b, s);
        issue_pv(b - 1, o, pa);
        wg_wait<1>();                                        /* S of tile b */
        wg_keep(s);
        if (decltype(mask)::value) limits(b, lim);
        dw_softmax<false>(s, decltype(mask)::value, lim, lo, z, sl, m, l, corr, qd);
        wg_wait<0>();                                        /* P V of tile b - 1 */
        wg_keep(o);
        release(sp);
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[4 * j + e] *= corr[e >> 1];
        dw_pack(s, pa);
    };
    if (nbw > 0) {
        /* tiles from bm on hold a key past the warpgroup's first position pw0; BAND: tiles
         * before bf start below its window */
        const int bm = (int)((pw0 + 1) / DW_BN) - lt + sep;
        const int bf = BAND ? sep + (int)((lw + DW_BN - 1) / DW_BN) - lt : 1;
#pragma unroll
        for (int i = 0; i < 64; i++) o[i] = 0.0f;
        mbar_wait(qbar, 0);
        mbar_wait(kfull, 0);
        wg_fence();
        issue_qk(0, s);
        wg_wait<0>();
        wg_keep(s);
        limits(0, lim);
        dw_softmax<true>(s, true, lim, lo, z, sl, m, l, corr, qd);
        dw_pack(s, pa);
        const int bu = bm < nbw ? bm : nbw, b1 = bf > 1 ? bf : 1;
        if (BAND)
            for (int b = 1; b < b1 && b < nbw; b++) step(b, dw_bool<true>());
        for (int b = b1; b < bu; b++) step(b, dw_bool<false>());
        for (int b = bm > b1 ? bm : b1; b < nbw; b++) step(b, dw_bool<true>());
        const int sl_ = (nbw - 1) % NS;
        mbar_wait(vfull + 8 * sl_, ((nbw - 1) / NS) & 1);
        wg_fence();
        issue_pv(nbw - 1, o, pa);
        wg_wait<0>();
        wg_keep(o);
        release(sl_);
    }
    for (int b = nbw; b < nb; b++) {           /* tiles past this warpgroup's rows: free them */
        mbar_wait(kfull + 8 * (b % NS), (b / NS) & 1);
        mbar_wait(vfull + 8 * (b % NS), (b / NS) & 1);
        release(b % NS);
    }
    if (nbw == 0) return;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const float t = quad_sum(l[hf]);
        const int tr = tq0 + 64 * c + 16 * warp + rq + 8 * hf;
        if (tr >= tend || tr < a.t0) continue;
        if (BAND) {                              /* the state: O unnormalized, max, sum */
            float *dst = a.part + ((size_t)(tr - a.t0) * a.nh + h) * (DW_D + 2);
#pragma unroll
            for (int j = 0; j < 16; j++)
                *(float2 *)(dst + 8 * j + 2 * qd) =
                    make_float2(o[4 * j + 2 * hf], o[4 * j + 2 * hf + 1]);
            if (qd == 0) *(float2 *)(dst + DW_D) = make_float2(m[hf], t);
            continue;
        }
        const float inv = t > 0.0f ? 1.0f / t : 0.0f;
        float *dst = a.O + ((size_t)tr * a.nh + h) * DW_D + 2 * qd;
#pragma unroll
        for (int j = 0; j < 16; j++)
            *(float2 *)(dst + 8 * j) =
                make_float2(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
    }
#endif
}

static bool dw_ready;   /* cu_dense90_init set the kernels' shared memory */

cudaError_t cu_dense90_init(void)
{
    if (!cu_sm90a()) return cudaSuccess;
    const cudaFuncAttribute dyn = cudaFuncAttributeMaxDynamicSharedMemorySize;
    cudaError_t err;
    if ((err = cudaFuncSetAttribute(dense90_kernel<2>, dyn, DW_SMEM(2))) != cudaSuccess ||
        (err = cudaFuncSetAttribute(dense90_kernel<3>, dyn, DW_SMEM(3))) != cudaSuccess ||
        (err = cudaFuncSetAttribute(dense90_kernel<3, true>, dyn, DW_SMEM(3))) != cudaSuccess)
        return err;
    dw_ready = true;
    return cudaSuccess;
}

/* The Q, K and V maps of a launch over qrows queries and krows keys; false: none could be made. */
static bool dw_maps(const attn_args *a, int64_t qrows, int64_t krows, CUtensorMap *tq,
                    CUtensorMap *tk, CUtensorMap *tv)
{
    memset(tq, 0, sizeof(*tq));
    memset(tk, 0, sizeof(*tk));
    memset(tv, 0, sizeof(*tv));
    return cu_tmap_2d(tq, a->Q, qrows, (int64_t)a->nh * DW_D, 64, 64) &&
           cu_tmap_2d(tk, a->K, krows, (int64_t)a->nkv * DW_D, DW_BN, 64) &&
           cu_tmap_2d(tv, a->V, krows, (int64_t)a->nkv * DW_D, DW_BN, 64);
}

bool k_dense90(cudaStream_t st, const attn_args *a, int lg, int ns, cudaError_t *err)
{
    if (!dw_ready || !cu_sm90a() || (ns != 2 && ns != 3) || a->d != DW_D || a->n <= 0 ||
        a->t0 < 0 || a->p0 < 0 || ((uintptr_t)a->Q | (uintptr_t)a->K | (uintptr_t)a->V) % 16 != 0)
        return false;
    const int64_t qrows = (int64_t)a->t0 + a->n, krows = a->p0 + qrows;
    const int64_t nc = ((int64_t)a->n + DW_BM - 1) / DW_BM;
    if (krows > INT32_MAX - DW_BN || nc > 65535) return false;
    CUtensorMap tq, tk, tv;
    if (!dw_maps(a, qrows, krows, &tq, &tk, &tv)) return false;
    const dim3 grid(a->nh, (unsigned)nc);
    if (ns == 3) dense90_kernel<3><<<grid, 384, DW_SMEM(3), st>>>(tq, tk, tv, *a, lg);
    else dense90_kernel<2><<<grid, 384, DW_SMEM(2), st>>>(tq, tk, tv, *a, lg);
    *err = cudaGetLastError();
    return true;
}

bool k_band90(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err)
{
    if (!dw_ready || !cu_sm90a() || a->d != DW_D || a->block != CU_KT || a->n <= 0 ||
        a->t0 < 0 || a->p0 < 0 || !a->part ||
        ((uintptr_t)a->Q | (uintptr_t)a->K | (uintptr_t)a->V | (uintptr_t)a->part) % 16 != 0)
        return false;
    const int64_t qrows = (int64_t)a->t0 + a->n, krows = a->p0 + qrows;
    const int64_t first = (a->p0 + a->t0) / DW_BM, last = (krows - 1) / DW_BM;
    const int64_t nc = last - first + 1;
    size_t need;
    if (krows > INT32_MAX - DW_BN || nc > 65535 ||
        __builtin_mul_overflow((size_t)a->n, (size_t)a->nh * (DW_D + 2), &need) ||
        need > a->part_cap)
        return false;
    CUtensorMap tq, tk, tv;
    if (!dw_maps(a, qrows, krows, &tq, &tk, &tv)) return false;
    const dim3 grid(a->nh, (unsigned)nc);
    dense90_kernel<3, true><<<grid, 384, DW_SMEM(3), st>>>(tq, tk, tv, *a, lg);
    *err = cudaGetLastError();
    return true;
}
