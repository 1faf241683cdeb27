/* cu_cache.cu: device buffers of a sequence's sparse caches (K, V, K1, K2 of every sparse layer)
 * built from physical chunks mapped into a reserved virtual-address range (CUDA virtual memory
 * management, driver API), so that
 *   - growing a cache maps more chunks behind the ones it has (no realloc, no copy; the base
 *     address stays put unless the reservation itself must grow, which remaps, still no copy);
 *   - a fork maps the parent's chunks that lie wholly below the parent's length (refcounted
 *     physical handles) and copies only the chunk holding the boundary, so a fork costs one chunk
 *     per buffer instead of the whole prefix.
 * Invariant: a chunk mapped by more than one buffer (refs > 1) is never written. Writers call
 * cu_buf_writable on the byte range they are about to write first; a shared chunk in that range
 * is replaced by a private copy (copy-on-write), for the parent as for the child. The mappings
 * are read-write at the hardware level: the invariant is kept by that call, not by protection.
 *
 * Where VMM is unsupported (or SALA_CUDA_NOVMM=1) m->vm_chunk is 0 and a buffer is one
 * cudaMalloc that grows by realloc+copy and forks by copying, as before.
 * Every map/unmap that could race with kernels in flight is preceded by a stream sync. */
#include "engine/cuda/cu_int.h"

#include <cuda.h>
#include <stdlib.h>
#include <string.h>

struct cu_chunk {
    CUmemGenericAllocationHandle h;
    int refs;                 /* buffers that map it */
};

#define CU_DRV(stmt) do { \
        CUresult r_ = (stmt); \
        if (r_ != CUDA_SUCCESS) { \
            const char *s_ = NULL; \
            cuGetErrorString(r_, &s_); \
            return sala_errf(e, SALA_EINTERNAL, "CUDA driver: %s: %s (%s:%d)", #stmt, \
                             s_ ? s_ : "?", __FILE__, __LINE__); \
        } \
    } while (0)

static size_t round_up(size_t x, size_t g) { return (x + g - 1) / g * g; }

int cu_vmm_init(cu_model *m, sala_err *e)
{
    m->vm_chunk = 0;
    CUDA_CHECK(cudaFree(0));   /* the runtime's primary context is current from here on */
    CUDA_CHECK(cudaGetDevice(&m->dev));
    const char *off = getenv("SALA_CUDA_NOVMM");
    if (off && *off && strcmp(off, "0")) return SALA_OK;
    CUdevice d;
    int vmm = 0;
    if (cuDeviceGet(&d, m->dev) != CUDA_SUCCESS ||
        cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, d) !=
            CUDA_SUCCESS || !vmm)
        return SALA_OK;   /* the copying fallback */
    CUmemAllocationProp p;
    memset(&p, 0, sizeof(p));
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = m->dev;
    size_t g = 0;
    if (cuMemGetAllocationGranularity(&g, &p, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED) !=
            CUDA_SUCCESS || !g)
        return SALA_OK;
    m->vm_chunk = round_up((size_t)2 << 20, g);   /* 2 MiB: 4,096 tokens of K of the real model */
    return SALA_OK;
}

static int chunk_new(cu_model *m, cu_chunk **out, sala_err *e)
{
    CUmemAllocationProp p;
    memset(&p, 0, sizeof(p));
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = m->dev;
    cu_chunk *c = (cu_chunk *)calloc(1, sizeof(*c));
    if (!c) return sala_errf(e, SALA_ENOMEM, "out of memory");
    CUresult r = cuMemCreate(&c->h, m->vm_chunk, &p, 0);
    if (r != CUDA_SUCCESS) {
        free(c);
        return sala_errf(e, r == CUDA_ERROR_OUT_OF_MEMORY ? SALA_ENOMEM : SALA_EINTERNAL,
                         "CUDA driver: cuMemCreate of a %zu-byte cache chunk failed (%d)",
                         m->vm_chunk, (int)r);
    }
    c->refs = 0;
    *out = c;
    return SALA_OK;
}

static void chunk_unref(cu_chunk *c)
{
    if (c && --c->refs <= 0) {
        cuMemRelease(c->h);
        free(c);
    }
}

static int set_access(cu_model *m, CUdeviceptr p, size_t bytes, sala_err *e)
{
    CUmemAccessDesc a;
    memset(&a, 0, sizeof(a));
    a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    a.location.id = m->dev;
    a.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (cuMemSetAccess(p, bytes, &a, 1) == CUDA_SUCCESS) return SALA_OK;
    for (size_t o = 0; o < bytes; o += m->vm_chunk)   /* one chunk at a time, then */
        CU_DRV(cuMemSetAccess(p + o, m->vm_chunk, &a, 1));
    return SALA_OK;
}

/* Room for n chunk pointers in b->ch. */
static int ch_room(cu_buf *b, int64_t n, sala_err *e)
{
    if (n <= b->ch_cap) return SALA_OK;
    int64_t c = b->ch_cap ? 2 * b->ch_cap : 16;
    if (c < n) c = n;
    cu_chunk **p = (cu_chunk **)realloc(b->ch, (size_t)c * sizeof(*p));
    if (!p) return sala_errf(e, SALA_ENOMEM, "out of memory");
    b->ch = p;
    b->ch_cap = c;
    return SALA_OK;
}

/* Map chunk c at chunk index i of b (access set by the caller). */
static int map_at(cu_model *m, cu_buf *b, int64_t i, cu_chunk *c, sala_err *e)
{
    CU_DRV(cuMemMap(b->va + (CUdeviceptr)i * m->vm_chunk, m->vm_chunk, 0, c->h, 0));
    c->refs++;
    b->ch[i] = c;
    return SALA_OK;
}

/* A new reservation of va_bytes for b, its chunks mapped there (no copy), the old one freed. */
static int remap(cu_model *m, cu_buf *b, size_t va_bytes, sala_err *e)
{
    CUdeviceptr nva = 0;
    CU_DRV(cuMemAddressReserve(&nva, va_bytes, m->vm_chunk, 0, 0));
    const size_t C = m->vm_chunk;
    for (int64_t i = 0; i < b->nch; i++) {
        CUresult r = cuMemMap(nva + (CUdeviceptr)i * C, C, 0, b->ch[i]->h, 0);
        if (r != CUDA_SUCCESS) {
            for (int64_t k = 0; k < i; k++) cuMemUnmap(nva + (CUdeviceptr)k * C, C);
            cuMemAddressFree(nva, va_bytes);
            return sala_errf(e, SALA_EINTERNAL, "CUDA driver: remap of a cache failed (%d)",
                             (int)r);
        }
    }
    if (b->nch) CU_TRY(set_access(m, nva, (size_t)b->nch * C, e));
    CUDA_CHECK(cudaStreamSynchronize(m->st));   /* nothing in flight uses the old addresses */
    if (b->va) {
        for (int64_t i = 0; i < b->nch; i++) cuMemUnmap(b->va + (CUdeviceptr)i * C, C);
        cuMemAddressFree(b->va, b->va_bytes);
    }
    b->va = nva;
    b->va_bytes = va_bytes;
    b->p = (char *)(uintptr_t)nva;
    return SALA_OK;
}

/* Plain mode: one allocation of bytes, the first keep bytes copied over. */
static int regrow(cu_buf *b, size_t keep, size_t bytes, sala_err *e)
{
    void *n = NULL;
    CUDA_CHECK(cudaMalloc(&n, bytes));
    if (b->p && keep) {
        cudaError_t err = cudaMemcpy(n, b->p, keep, cudaMemcpyDeviceToDevice);
        if (err != cudaSuccess) {
            cudaFree(n);
            CUDA_CHECK(err);
        }
    }
    cudaFree(b->p);
    b->p = (char *)n;
    b->bytes = bytes;
    return SALA_OK;
}

int cu_buf_reserve(cu_model *m, cu_buf *b, size_t bytes, size_t keep, size_t va_hint, sala_err *e)
{
    if (bytes <= b->bytes) return SALA_OK;
    if (!m->vm_chunk) return regrow(b, keep, bytes, e);
    const size_t C = m->vm_chunk;
    const int64_t need = (int64_t)(round_up(bytes, C) / C);
    if ((size_t)need * C > b->va_bytes) {
        size_t want = round_up(va_hint > bytes ? va_hint : bytes, C);
        if (b->va_bytes && want < 2 * b->va_bytes) want = 2 * b->va_bytes;
        CU_TRY(remap(m, b, want, e));
    }
    CU_TRY(ch_room(b, need, e));
    const int64_t first = b->nch;
    for (int64_t i = first; i < need; i++) {
        cu_chunk *c;
        CU_TRY(chunk_new(m, &c, e));
        int rc = map_at(m, b, i, c, e);
        if (rc) {
            chunk_unref(c);
            return rc;
        }
        b->nch = i + 1;   /* mapped (access below): freed with the buffer on any failure */
    }
    CU_TRY(set_access(m, b->va + (CUdeviceptr)first * C, (size_t)(need - first) * C, e));
    b->bytes = (size_t)need * C;
    return SALA_OK;
}

int cu_buf_fork(cu_model *m, cu_buf *dst, const cu_buf *src, size_t used, bool share,
                sala_err *e)
{
    if (!m->vm_chunk || !share) {   /* copy: as much room as the source, the used bytes */
        CU_TRY(cu_buf_reserve(m, dst, m->vm_chunk ? (used ? used : 1) : (src->bytes ? src->bytes : 16),
                              0, src->va_bytes, e));
        if (used)
            CUDA_CHECK(cudaMemcpyAsync(dst->p, src->p, used, cudaMemcpyDeviceToDevice, m->st));
        return SALA_OK;
    }
    const size_t C = m->vm_chunk;
    const int64_t nshare = (int64_t)(used / C);   /* chunks wholly below the length */
    if (!src->va_bytes) return SALA_OK;           /* an empty source */
    CU_TRY(remap(m, dst, src->va_bytes, e));
    CU_TRY(ch_room(dst, nshare + 1, e));
    for (int64_t i = 0; i < nshare; i++) {
        CU_TRY(map_at(m, dst, i, src->ch[i], e));
        dst->nch = i + 1;
    }
    if (nshare) CU_TRY(set_access(m, dst->va, (size_t)nshare * C, e));
    dst->bytes = (size_t)nshare * C;
    if (used > dst->bytes) {                      /* the boundary chunk: a private copy */
        CU_TRY(cu_buf_reserve(m, dst, used, 0, src->va_bytes, e));
        CUDA_CHECK(cudaMemcpyAsync(dst->p + (size_t)nshare * C, src->p + (size_t)nshare * C,
                                   used - (size_t)nshare * C, cudaMemcpyDeviceToDevice, m->st));
    }
    return SALA_OK;
}

int cu_buf_writable(cu_model *m, cu_buf *b, size_t from, size_t to, sala_err *e)
{
    if (!m->vm_chunk || to <= from) return SALA_OK;
    const size_t C = m->vm_chunk;
    int64_t i1 = (int64_t)((to + C - 1) / C);
    if (i1 > b->nch) i1 = b->nch;
    for (int64_t i = (int64_t)(from / C); i < i1; i++) {
        if (!b->ch[i])
            return sala_errf(e, SALA_EINTERNAL, "cache chunk %lld lost by an earlier failure",
                             (long long)i);
        if (b->ch[i]->refs <= 1) continue;
        /* copy-on-write: a private chunk with the shared one's bytes, mapped in its place */
        CUDA_CHECK(cudaStreamSynchronize(m->st));
        cu_chunk *c;
        CU_TRY(chunk_new(m, &c, e));
        CUdeviceptr tmp = 0;
        CUresult r = cuMemAddressReserve(&tmp, C, C, 0, 0);
        if (r == CUDA_SUCCESS) r = cuMemMap(tmp, C, 0, c->h, 0);
        int rc = r == CUDA_SUCCESS ? set_access(m, tmp, C, e)
                                   : sala_errf(e, SALA_EINTERNAL, "CUDA driver: copy-on-write "
                                               "of a cache chunk failed (%d)", (int)r);
        const CUdeviceptr at = b->va + (CUdeviceptr)i * C;
        if (!rc && cudaMemcpy((void *)(uintptr_t)tmp, (const void *)(uintptr_t)at, C,
                              cudaMemcpyDeviceToDevice) != cudaSuccess)
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: copy-on-write copy failed");
        if (tmp) {
            if (r == CUDA_SUCCESS) cuMemUnmap(tmp, C);
            cuMemAddressFree(tmp, C);
        }
        if (rc) {
            c->refs = 1;
            chunk_unref(c);
            return rc;
        }
        CU_DRV(cuMemUnmap(at, C));
        chunk_unref(b->ch[i]);
        b->ch[i] = NULL;
        r = cuMemMap(at, C, 0, c->h, 0);
        if (r != CUDA_SUCCESS) {
            c->refs = 1;
            chunk_unref(c);   /* chunk i stays a hole (NULL): the sequence is unusable */
            return sala_errf(e, SALA_EINTERNAL, "CUDA driver: cuMemMap after copy-on-write "
                             "failed (%d)", (int)r);
        }
        c->refs = 1;
        b->ch[i] = c;
        CU_TRY(set_access(m, at, C, e));
    }
    return SALA_OK;
}

void cu_buf_free(cu_model *m, cu_buf *b)
{
    if (!m->vm_chunk) {
        cudaFree(b->p);
    } else {
        for (int64_t i = 0; i < b->nch; i++)
            if (b->ch[i]) {
                cuMemUnmap(b->va + (CUdeviceptr)i * m->vm_chunk, m->vm_chunk);
                chunk_unref(b->ch[i]);
            }
        if (b->va) cuMemAddressFree(b->va, b->va_bytes);
        free(b->ch);
    }
    memset(b, 0, sizeof(*b));
}

uint64_t cu_buf_shared_bytes(const cu_model *m, const cu_buf *b)
{
    uint64_t n = 0;
    for (int64_t i = 0; m->vm_chunk && i < b->nch; i++)
        if (b->ch[i] && b->ch[i]->refs > 1) n += m->vm_chunk;
    return n;
}
