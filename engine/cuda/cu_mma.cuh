/* cu_mma.cuh: register-level tensor-core helpers (mma.sync m16n8k16 bf16 -> fp32, ldmatrix,
 * cp.async, mbarrier) shared by the stage-1 scoring and attention kernels. mma.sync runs on
 * sm_90 and sm_90a alike (HMMA); try_wait and fence.mbarrier_init need sm_90, the backend's
 * minimum; so these need no architecture guard.
 *
 * Fragment layouts (PTX ISA, m16n8k16): lane l, quad position c = l % 4, row r = l / 4;
 *   A (16x16, row-major)  a0 = (r, 2c..2c+1)  a1 = (r+8, 2c..)  a2 = (r, 8+2c..)  a3 = (r+8, 8+2c..)
 *   B (16x8, "col")       b0 = (k 2c..2c+1, n r)  b1 = (k 8+2c.., n r)
 *   C (16x8, fp32)        c0,c1 = (r, 2c, 2c+1)  c2,c3 = (r+8, 2c, 2c+1)
 * Shared tiles are row-major with a row stride of D + 8 bf16 (16 bytes of padding), which makes
 * every ldmatrix phase (8 rows x 16 bytes) conflict-free. */
#ifndef SALA_CU_MMA_CUH
#define SALA_CU_MMA_CUH

#include "engine/cuda/cu_int.h"

static __device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* 16-byte global -> shared copy; bytes past `valid` (0 or 16) are zero-filled. */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid)
{
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* mbarrier (sm_90) for producer/consumer rings in shared memory. A phase completes when its
 * pending arrivals reach 0; wait(parity P) returns once the phase of parity P has completed.
 * arrive has release, try_wait acquire semantics at CTA scope (the PTX defaults). */
static __device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* After every mbar_init and before the CTA barrier that publishes them. */
static __device__ __forceinline__ void mbar_init_fence()
{
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity)
{
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\n"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
}
static __device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
/* Non-blocking: has the phase of parity `parity` completed? */
static __device__ __forceinline__ bool mbar_test(uint32_t bar, uint32_t parity)
{
    uint32_t done;
    asm volatile("{\n.reg .pred p;\n"
                 "mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
    return done != 0;
}
/* count arrivals at once (1 <= count < 2^20; sm_90). */
static __device__ __forceinline__ void mbar_arrive_cnt(uint32_t bar, uint32_t count)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(count)
                 : "memory");
}
/* One arrival that also expects tx more bytes of asynchronous (TMA) writes in this phase. */
static __device__ __forceinline__ void mbar_arrive_tx(uint32_t bar, uint32_t tx)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(tx)
                 : "memory");
}
/* TMA (sm_90): box (c0, c1) of the 2-D tensor map at generic address map -> shared dst; the
 * bytes complete_tx on bar. Out-of-bounds elements are zero-filled and count as bytes too. */
static __device__ __forceinline__ void tma_load_2d(uint32_t dst, const void *map, int c0, int c1,
                                                   uint32_t bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
                 "l"(map), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
/* Release store / acquire load of a shared int (CTA scope). */
static __device__ __forceinline__ void st_release_cta(uint32_t addr, int v)
{
    asm volatile("st.release.cta.shared::cta.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
static __device__ __forceinline__ int ld_acquire_cta(uint32_t addr)
{
    int v;
    asm volatile("ld.acquire.cta.shared::cta.b32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
/* Acquire load of a global int (GPU scope): a count written by another kernel. */
static __device__ __forceinline__ int ld_acquire_gpu(const int *p)
{
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
/* An arrival on bar once every cp.async this thread issued so far has landed; .noinc: the
 * barrier's init count must include these arrivals. */
static __device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

/* The max and the sum over the 4 lanes of an mma row (lanes 4g .. 4g + 3 hold one row's
 * columns in the m16n8 and wgmma accumulator layouts). */
static __device__ __forceinline__ float quad_max(float x)
{
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
static __device__ __forceinline__ float quad_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* Rows [0, nrows) of a (rows, D) bf16 matrix with row stride ld (elements) -> shared tile
 * (64, D + 8) by cp.async; rows past nrows are zero. Threads tid = 0 .. nthr-1 take part (by
 * default the CTA's first nthr). The source address of an invalid row is clamped to row 0
 * (never dereferenced past the end). */
template <int D>
static __device__ __forceinline__ void tile_async(bf16 *dst, const bf16 *src, size_t ld, int nrows,
                                                  int nthr, int tid)
{
    constexpr int PER = D / 8, LDS = D + 8;
#pragma unroll 4
    for (int idx = tid; idx < 64 * PER; idx += nthr) {
        const int r = idx / PER, c = idx % PER;
        const bool ok = r < nrows;
        cp_async16(smem_u32(dst + r * LDS + c * 8), src + (ok ? (size_t)r * ld : 0) + c * 8, ok);
    }
}
template <int D>
static __device__ __forceinline__ void tile_async(bf16 *dst, const bf16 *src, size_t ld, int nrows,
                                                  int nthr)
{
    tile_async<D>(dst, src, ld, nrows, nthr, (int)threadIdx.x);
}

/* 16 bytes of shared memory at addr -> v (one ld.shared.v4). */
static __device__ __forceinline__ void lds_u4(uint32_t addr, uint32_t (&v)[4])
{
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "r"(addr)
                 : "memory");
}

/* ---- wgmma (sm_90a only: callers guard with __CUDA_ARCH_FEAT_SM90_ALL) ---- */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart. */
static __device__ __forceinline__ uint64_t wg_desc(uint32_t addr)
{
    return (uint64_t)((addr & 0x3ffffu) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 |
           (uint64_t)1 << 62;
}
static __device__ __forceinline__ void wg_fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ void wg_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void wg_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Keeps the compiler from moving accesses of an accumulator set across a wait. */
template <int N> static __device__ __forceinline__ void wg_keep(float (&d)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
static __device__ __forceinline__ void proxy_fence()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* The inline-asm operands of 64 fp32 accumulators d[o .. o + 63] ("+f"), in register order. */
#define WG_ACC64(d, o) \
    "+f"(d[(o) + 0]), "+f"(d[(o) + 1]), "+f"(d[(o) + 2]), "+f"(d[(o) + 3]), \
    "+f"(d[(o) + 4]), "+f"(d[(o) + 5]), "+f"(d[(o) + 6]), "+f"(d[(o) + 7]), \
    "+f"(d[(o) + 8]), "+f"(d[(o) + 9]), "+f"(d[(o) + 10]), "+f"(d[(o) + 11]), \
    "+f"(d[(o) + 12]), "+f"(d[(o) + 13]), "+f"(d[(o) + 14]), "+f"(d[(o) + 15]), \
    "+f"(d[(o) + 16]), "+f"(d[(o) + 17]), "+f"(d[(o) + 18]), "+f"(d[(o) + 19]), \
    "+f"(d[(o) + 20]), "+f"(d[(o) + 21]), "+f"(d[(o) + 22]), "+f"(d[(o) + 23]), \
    "+f"(d[(o) + 24]), "+f"(d[(o) + 25]), "+f"(d[(o) + 26]), "+f"(d[(o) + 27]), \
    "+f"(d[(o) + 28]), "+f"(d[(o) + 29]), "+f"(d[(o) + 30]), "+f"(d[(o) + 31]), \
    "+f"(d[(o) + 32]), "+f"(d[(o) + 33]), "+f"(d[(o) + 34]), "+f"(d[(o) + 35]), \
    "+f"(d[(o) + 36]), "+f"(d[(o) + 37]), "+f"(d[(o) + 38]), "+f"(d[(o) + 39]), \
    "+f"(d[(o) + 40]), "+f"(d[(o) + 41]), "+f"(d[(o) + 42]), "+f"(d[(o) + 43]), \
    "+f"(d[(o) + 44]), "+f"(d[(o) + 45]), "+f"(d[(o) + 46]), "+f"(d[(o) + 47]), \
    "+f"(d[(o) + 48]), "+f"(d[(o) + 49]), "+f"(d[(o) + 50]), "+f"(d[(o) + 51]), \
    "+f"(d[(o) + 52]), "+f"(d[(o) + 53]), "+f"(d[(o) + 54]), "+f"(d[(o) + 55]), \
    "+f"(d[(o) + 56]), "+f"(d[(o) + 57]), "+f"(d[(o) + 58]), "+f"(d[(o) + 59]), \
    "+f"(d[(o) + 60]), "+f"(d[(o) + 61]), "+f"(d[(o) + 62]), "+f"(d[(o) + 63])
/* d (+)= A (64 x 16, desc da) · B (16 x 128, desc db); acc = 0: d = A · B */
static __device__ __forceinline__ void wg_mma(float (&d)[64], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WG_ACC64(d, 0)
                 : "l"(da), "l"(db), "r"(acc));
}
#endif

#endif
