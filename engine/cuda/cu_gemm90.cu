/* cu_gemm90.cu: the prefill MLP's gate|up GEMM with SwiGLU in its epilogue, on sm_90a (TMA +
 * wgmma, warp-specialized, persistent, clusters of two CTAs).
 * docs/CUDA.md "Fused gate|up GEMM + SwiGLU".
 *
 *   act (T, I) bf16 = bf16(g · sigmoid(g) · u),  g | u = bf16(x Wᵀ), W (2I, in) = gate | up
 *
 * the result of cu_gemm_bf16 followed by k_swiglu_bf16 (the same roundings: g and u to bf16, the
 * SwiGLU in fp32 with expf, bf16 out) without writing and reading back the (T, 2I) product.
 *
 * CTA (384 threads): warpgroup 0 = warp 0 lane 0, the TMA producer, and warps 1-3, the epilogue;
 * warpgroups 1 and 2 = the consumers. A CTA tile is 128 rows of x times 128 columns of act: the
 * W rows [n0, n0 + 128) (gate) and [I + n0, I + n0 + 128) (up) form one 256-row B tile, so a
 * consumer's m64n256k16 accumulators hold the gate and the up value of a column in one thread.
 * K steps of 64 (one 128-byte swizzled row a tile row) through a ring of GM_NS stages (48 KB:
 * A 16 KB, B 32 KB), each a full / empty mbarrier pair. The two CTAs of a cluster take the same
 * columns and neighbouring row tiles: each loads its A and one half of B, multicast to both, so
 * the L2 reads of B are halved; a stage is refilled once the consumers of both CTAs released
 * it (empty counts 16 warp arrivals, 8 of them remote).
 * After a tile's last K step a consumer rounds its accumulators to bf16 into the staging area
 * (G and U, 64 KB) and goes on with the next tile; the three epilogue warps compute the SwiGLU
 * in place over G and store the tile with four TMA boxes (rows >= T are clipped by the map).
 * Tiles run in groups of GM_GM row tiles down each column band (L2 reuse of x and W).
 *
 * Body compiled for sm_90a only (__CUDA_ARCH_FEAT_SM90_ALL); the host takes this path only where
 * cu_sm90a() says that image runs. */
#include "engine/cuda/cu_int.h"
#include "engine/cuda/cu_mma.cuh"

#define GM_BM 128                          /* rows of x a CTA tile */
#define GM_BN 128                          /* columns of act a CTA tile (256 rows of W) */
#define GM_BK 64                           /* K step: 128 bytes a row, the swizzle span */
#define GM_NS 3                            /* ring stages */
#define GM_GM 16                           /* row tiles a column-band group */
#define GM_CL 2                            /* CTAs a cluster */
#define GM_ROWB (GM_BK * 2)
#define GM_STAGE (GM_BM * GM_ROWB + 2 * GM_BN * GM_ROWB)
#define GM_STG (2 * 4 * 8192)              /* G then U: 4 boxes of 64 x 64 bf16 each */
#define GM_SMEM (1024 + GM_NS * GM_STAGE + GM_STG + 256)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
static __device__ __forceinline__ void tma_load_2d_mc(uint32_t dst, const void *map, int c0, int c1,
                                                      uint32_t bar, uint16_t mask)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
                 "l"(map), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
                 : "memory");
}
static __device__ __forceinline__ void tma_store_2d(const void *map, int c0, int c1, uint32_t src)
{
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n"
                 ::"l"(map), "r"(c0), "r"(c1), "r"(src)
                 : "memory");
}
/* An arrival on the barrier at the same offset in the cluster's CTA `rank`. */
static __device__ __forceinline__ void mbar_arrive_rank(uint32_t bar, uint32_t rank)
{
    uint32_t r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(bar), "r"(rank));
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(r) : "memory");
}
/* A consumer warp releases a stage: its own CTA's empty barrier and the peer's (whose producer
 * multicasts into this CTA's slot too). The remote arrival in the form CUTLASS uses (default
 * semantics): with .release.cluster the kernel ran at half speed (prototype, H100). */
static __device__ __forceinline__ void gm_release(uint32_t empty, int rank)
{
    mbar_arrive(empty);
    if (GM_CL == 2) mbar_arrive_rank(empty, rank ^ 1);
}
static __device__ __forceinline__ void cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}
/* d (+)= A (64 x 16, desc da) · B (16 x 256, desc db); acc = 0: d = A · B */
static __device__ __forceinline__ void gm_mma(float (&d)[128], uint64_t da, uint64_t db, int acc)
{
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, "
        "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, "
        "%120, %121, %122, %123, %124, %125, %126, %127}, "
        "%128, %129, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC64(d, 0), WG_ACC64(d, 64)
        : "l"(da), "l"(db), "r"(acc));
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* Tile `tile` of (mc row-tile pairs, nt column tiles), in groups of GM_GM / GM_CL pairs down a
 * column band; this CTA (cluster rank) takes row tile GM_CL · pair + rank. */
static __device__ __forceinline__ void gm_tile(int tile, int mc, int nt, int rank, int *m0, int *n0)
{
    constexpr int gm = GM_GM / GM_CL;
    const int g = tile / (gm * nt), fm = g * gm;
    const int gsz = mc - fm < gm ? mc - fm : gm;
    const int r = tile - g * gm * nt;
    *m0 = ((fm + r % gsz) * GM_CL + rank) * GM_BM;
    *n0 = (r / gsz) * GM_BN;
}

/* Byte offset of (row, col) of a 128 x 128 staging matrix: 4 boxes of 64 x 64 (box 2 (row / 64)
 * + col / 64), 128-byte rows, 16-byte chunk c of row r at c ^ (r & 7): the store map's swizzle. */
static __device__ __forceinline__ uint32_t gm_stg(int row, int col)
{
    return (uint32_t)(((row >> 6) * 2 + (col >> 6)) * 8192 + (row & 63) * 128 +
                      ((((col & 63) >> 3) ^ (row & 7)) << 4) + (col & 7) * 2);
}
#endif

static __global__ void __launch_bounds__(384, 1)
    gemm90_gu_kernel(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb,
                     const __grid_constant__ CUtensorMap tc, int T, int I, int K)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t gm_raw[];
    const uint32_t r0 = smem_u32(gm_raw), sb = (r0 + 1023) & ~1023u;
    const uint32_t stg = sb + GM_NS * GM_STAGE, bars = stg + GM_STG;
    const uint32_t sfull = bars + 16 * GM_NS, sempty = sfull + 8;
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int mt = (T + GM_BM - 1) / GM_BM, nt = I / GM_BN, nk = K / GM_BK;
    const int mc = (mt + GM_CL - 1) / GM_CL, ntile = mc * nt;
    const int rank = blockIdx.x % GM_CL, cid = blockIdx.x / GM_CL, ncl = gridDim.x / GM_CL;
    if (threadIdx.x == 0) {
        for (int s = 0; s < GM_NS; s++) {
            mbar_init(bars + 8 * s, 1);                       /* full: the producer + tx */
            mbar_init(bars + 8 * (GM_NS + s), 8 * GM_CL);     /* empty: consumer warps */
        }
        mbar_init(sfull, 256);
        mbar_init(sempty, 1);
        mbar_init_fence();
    }
    cluster_sync();
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n");
        if (tid == 0) {                                       /* TMA producer */
            int it = 0;
            for (int tile = cid; tile < ntile; tile += ncl) {
                int m0, n0;
                gm_tile(tile, mc, nt, rank, &m0, &n0);
                for (int kt = 0; kt < nk; kt++, it++) {
                    const int s = it % GM_NS;
                    const uint32_t st = sb + s * GM_STAGE, full = bars + 8 * s;
                    mbar_wait(bars + 8 * (GM_NS + s), ((it / GM_NS) & 1) ^ 1);
                    mbar_arrive_tx(full, GM_STAGE);
                    tma_load_2d(st, &ta, kt * GM_BK, m0, full);
                    tma_load_2d_mc(st + GM_BM * GM_ROWB + rank * GM_BN * GM_ROWB, &tb, kt * GM_BK,
                                   rank * I + n0, full, (1 << GM_CL) - 1);
                }
            }
        } else if (tid >= 32) {                               /* epilogue: 96 threads */
            const int e = tid - 32;
            int n = 0;
            for (int tile = cid; tile < ntile; tile += ncl, n++) {
                int m0, n0;
                gm_tile(tile, mc, nt, rank, &m0, &n0);
                mbar_wait(sfull, n & 1);
                for (int ch = e; ch < GM_STG / 32; ch += 96) {   /* 16-byte chunks of G and U */
                    uint32_t gv[4], uv[4];
                    uint4 o;
                    lds_u4(stg + ch * 16, gv);
                    lds_u4(stg + GM_STG / 2 + ch * 16, uv);
                    const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)gv,
                                         *u2 = (const __nv_bfloat162 *)uv;
                    uint32_t *o2 = (uint32_t *)&o;
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        const float2 g = __bfloat1622float2(g2[k]), u = __bfloat1622float2(u2[k]);
                        o2[k] = pack_bf16(cu_silu_mul(g.x, u.x), cu_silu_mul(g.y, u.y));
                    }
                    asm volatile("st.shared.v4.b32 [%0], {%1,%2,%3,%4};\n" ::"r"(stg + ch * 16),
                                 "r"(o.x), "r"(o.y), "r"(o.z), "r"(o.w)
                                 : "memory");
                }
                proxy_fence();
                asm volatile("bar.sync 1, 96;\n" ::: "memory");
                if (e == 0) {
#pragma unroll
                    for (int b = 0; b < 4; b++)
                        tma_store_2d(&tc, n0 + (b & 1) * 64, m0 + (b >> 1) * 64, stg + b * 8192);
                    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
                    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
                    mbar_arrive(sempty);
                }
            }
            if (e == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
        }
    } else {                                                  /* consumers */
        asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n");
        const int c = wg - 1, warp = tid / 32, lane = tid % 32;
        float d[128];
        int it = 0, n = 0;
        for (int tile = cid; tile < ntile; tile += ncl, n++) {
            for (int kt = 0; kt < nk; kt++, it++) {
                const int s = it % GM_NS;
                const uint32_t st = sb + s * GM_STAGE;
                mbar_wait(bars + 8 * s, (it / GM_NS) & 1);
                const uint64_t da = wg_desc(st + c * 64 * GM_ROWB);
                const uint64_t db = wg_desc(st + GM_BM * GM_ROWB);
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < GM_BK / 16; kk++)
                    gm_mma(d, da + 2 * kk, db + 2 * kk, kt | kk);
                wg_commit();
                if (kt > 0) {   /* K step kt - 1's products are done: release its stage */
                    wg_wait<1>();
                    wg_keep(d);
                    __syncwarp();
                    if (lane == 0) gm_release(bars + 8 * (GM_NS + (it - 1) % GM_NS), rank);
                }
            }
            wg_wait<0>();
            wg_keep(d);
            __syncwarp();
            if (lane == 0) gm_release(bars + 8 * (GM_NS + (it - 1) % GM_NS), rank);
            mbar_wait(sempty, (n & 1) ^ 1);   /* the previous tile's store has read the staging */
            const int q = lane & 3;
#pragma unroll
            for (int j = 0; j < 16; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int row = c * 64 + warp * 16 + (lane >> 2) + 8 * h, col = 8 * j + 2 * q;
                    const uint32_t a = stg + gm_stg(row, col);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a),
                                 "r"(pack_bf16(d[4 * j + 2 * h], d[4 * j + 2 * h + 1]))
                                 : "memory");
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a + GM_STG / 2),
                                 "r"(pack_bf16(d[64 + 4 * j + 2 * h], d[64 + 4 * j + 2 * h + 1]))
                                 : "memory");
                }
            mbar_arrive(sfull);
        }
    }
    cluster_sync();   /* no CTA leaves while its peer may still arrive on its barriers */
#endif
}

int cu_gu_fused_min(void)
{
    const char *v = getenv("SALA_CUDA_GU_FUSED");
    if (v && !strcmp(v, "0")) return INT32_MAX;
    if (v && *v) {
        char *end;
        const long n = strtol(v, &end, 10);
        if (!*end && n > 0 && n < INT32_MAX) return (int)n;
    }
    return CU_GU_FUSED_MIN;
}

bool cu_gu_fused_fits(const bf16 *W, int I, int in, const bf16 *x, int T, const bf16 *act)
{
    return cu_sm90a() && cu_sms() >= GM_CL && T >= cu_gu_fused_min() && I > 0 && in > 0 &&
           I % GM_BN == 0 && in % GM_BK == 0 && I <= INT32_MAX / 2 &&
           ((int64_t)T / GM_BM + 1) * (I / GM_BN) <= INT32_MAX &&   /* the kernel's int tile ids */
           ((uintptr_t)W | (uintptr_t)x | (uintptr_t)act) % 16 == 0;
}

cudaError_t cu_gemm90_init(void)
{
    if (!cu_sm90a()) return cudaSuccess;
    return cudaFuncSetAttribute(gemm90_gu_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                GM_SMEM);
}

cudaError_t k_gu_swiglu(cudaStream_t st, const bf16 *W, int I, int in, const bf16 *x, int T,
                        bf16 *act)
{
    CUtensorMap ta, tb, tc;
    if (!cu_tmap_2d(&ta, x, T, in, GM_BM, GM_BK) ||
        !cu_tmap_2d(&tb, W, (int64_t)2 * I, in, GM_BN, GM_BK) ||
        !cu_tmap_2d(&tc, act, T, I, 64, 64))
        return cudaErrorInvalidValue;
    const int sms = cu_sms();
    const int64_t pairs = (int64_t)((T + GM_BM - 1) / GM_BM + GM_CL - 1) / GM_CL * (I / GM_BN);
    const int64_t cl = sms / GM_CL < pairs ? sms / GM_CL : pairs;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = GM_CL;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    return cu_launch_ex(at, 1, dim3((unsigned)(cl * GM_CL)), dim3(384), GM_SMEM, st,
                        gemm90_gu_kernel, ta, tb, tc, T, I, in);
}
