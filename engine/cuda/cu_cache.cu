/* cu_cache.cu: device buffers of a sequence's sparse caches (K, V, K1, K2 of every sparse layer)
 * built from physical chunks mapped into a reserved virtual-address range (CUDA virtual memory
 * management, driver API), so that
 *   - growing a cache maps more chunks behind the ones it has (no realloc, no copy; the base
 *     address stays put unless the reservation itself must grow, which remaps, still no copy);
 *   - a fork maps the parent's chunks that lie wholly below the parent's length (refcounted
 *     physical handles) and copies only the chunk holding the boundary, so a fork costs one chunk
 *     per buffer instead of the whole prefix.
 * A chunk spans one or more granules of m->vm_chunk bytes and sits at the same granule index in
 * every buffer that maps it. Growth maps one granule at a time; a state loaded from a file (and
 * a copying fork) gets its whole part below the length as one solid chunk, so that a fork of it
 * maps one chunk per buffer: mapping calls cost tens of microseconds each, and a 1M-token
 * context is 4,096 granules of K/V.
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
    int64_t at, n;            /* granule index where it is mapped (in every buffer), granules */
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

/* A new chunk of n granules to be mapped at granule index at (refs 0 until mapped). */
static int chunk_new(cu_model *m, int64_t at, int64_t n, cu_chunk **out, sala_err *e)
{
    CUmemAllocationProp p;
    memset(&p, 0, sizeof(p));
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = m->dev;
    cu_chunk *c = (cu_chunk *)calloc(1, sizeof(*c));
    if (!c) return sala_errf(e, SALA_ENOMEM, "out of memory");
    CUresult r = cuMemCreate(&c->h, (size_t)n * m->vm_chunk, &p, 0);
    if (r != CUDA_SUCCESS) {
        free(c);
        return sala_errf(e, r == CUDA_ERROR_OUT_OF_MEMORY ? SALA_ENOMEM : SALA_EINTERNAL,
                         "CUDA driver: cuMemCreate of a %zu-byte cache chunk failed (%d)",
                         (size_t)n * m->vm_chunk, (int)r);
    }
    c->at = at;
    c->n = n;
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
    CU_DRV(cuMemSetAccess(p, bytes, &a, 1));
    return SALA_OK;
}

/* Room for n granule slots in b->ch. */
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

/* Map chunk c into b at its granule index (access is set by the caller); b->nch grows to cover
 * it. The slots must exist (ch_room) and be free. */
static int map_chunk(cu_model *m, cu_buf *b, cu_chunk *c, sala_err *e)
{
    CU_DRV(cuMemMap(b->va + (CUdeviceptr)c->at * m->vm_chunk, (size_t)c->n * m->vm_chunk, 0,
                    c->h, 0));
    c->refs++;
    for (int64_t i = c->at; i < c->at + c->n; i++) b->ch[i] = c;
    if (b->nch < c->at + c->n) b->nch = c->at + c->n;
    return SALA_OK;
}

static void unmap_chunk(cu_model *m, cu_buf *b, cu_chunk *c)
{
    cuMemUnmap(b->va + (CUdeviceptr)c->at * m->vm_chunk, (size_t)c->n * m->vm_chunk);
    for (int64_t i = c->at; i < c->at + c->n; i++) b->ch[i] = NULL;
    chunk_unref(c);
}

/* A new reservation of va_bytes for b, its chunks mapped there (no copy), the old one freed. */
static int remap(cu_model *m, cu_buf *b, size_t va_bytes, sala_err *e)
{
    CUdeviceptr nva = 0;
    const size_t C = m->vm_chunk;
    CU_DRV(cuMemAddressReserve(&nva, va_bytes, C, 0, 0));
    for (int64_t i = 0; i < b->nch; i++) {
        const cu_chunk *c = b->ch[i];
        if (!c || c->at != i) continue;
        CUresult r = cuMemMap(nva + (CUdeviceptr)i * C, (size_t)c->n * C, 0, c->h, 0);
        if (r != CUDA_SUCCESS) {
            for (int64_t k = 0; k < i; k++)
                if (b->ch[k] && b->ch[k]->at == k)
                    cuMemUnmap(nva + (CUdeviceptr)k * C, (size_t)b->ch[k]->n * C);
            cuMemAddressFree(nva, va_bytes);
            return sala_errf(e, SALA_EINTERNAL, "CUDA driver: remap of a cache failed (%d)",
                             (int)r);
        }
    }
    if (b->nch) CU_TRY(set_access(m, nva, (size_t)b->nch * C, e));
    CUDA_CHECK(cudaStreamSynchronize(m->st));   /* nothing in flight uses the old addresses */
    if (b->va) {
        for (int64_t i = 0; i < b->nch; i++)
            if (b->ch[i] && b->ch[i]->at == i)
                cuMemUnmap(b->va + (CUdeviceptr)i * C, (size_t)b->ch[i]->n * C);
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

int cu_buf_reserve(cu_model *m, cu_buf *b, size_t bytes, size_t keep, size_t solid,
                   size_t va_hint, sala_err *e)
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
    int64_t upto = (int64_t)(solid / C);   /* granules [first, upto): one chunk */
    if (upto > need) upto = need;
    for (int64_t i = first; i < need;) {
        const int64_t n = i < upto - 1 ? upto - i : 1;
        cu_chunk *c = NULL;
        CU_TRY(chunk_new(m, i, n, &c, e));
        int rc = map_chunk(m, b, c, e);
        if (rc) {
            chunk_unref(c);
            return rc;
        }
        i += n;
    }
    CU_TRY(set_access(m, b->va + (CUdeviceptr)first * C, (size_t)(need - first) * C, e));
    b->bytes = (size_t)need * C;
    return SALA_OK;
}

int cu_buf_fork(cu_model *m, cu_buf *dst, const cu_buf *src, size_t used, bool share,
                sala_err *e)
{
    if (!m->vm_chunk) {   /* plain: as much room as the source, the used bytes copied */
        CU_TRY(cu_buf_reserve(m, dst, src->bytes ? src->bytes : 16, 0, 0, 0, e));
        if (used)
            CUDA_CHECK(cudaMemcpyAsync(dst->p, src->p, used, cudaMemcpyDeviceToDevice, m->st));
        return SALA_OK;
    }
    const size_t C = m->vm_chunk;
    const int64_t whole = (int64_t)(used / C);   /* granules wholly below the length */
    int64_t i = 0;
    if (share && src->va_bytes) {
        CU_TRY(remap(m, dst, src->va_bytes, e));
        CU_TRY(ch_room(dst, whole + 1, e));
        for (int64_t k = 0; k < whole; k++) dst->ch[k] = NULL;
        while (i < whole && i < src->nch && src->ch[i] && src->ch[i]->at == i &&
               src->ch[i]->at + src->ch[i]->n <= whole) {
            CU_TRY(map_chunk(m, dst, src->ch[i], e));
            i += src->ch[i]->n;
        }
        if (i) CU_TRY(set_access(m, dst->va, (size_t)i * C, e));
        dst->bytes = (size_t)i * C;
    }
    if (used > (size_t)i * C) {   /* the rest (the boundary, or everything): private copies */
        CU_TRY(cu_buf_reserve(m, dst, used, 0, used, src->va_bytes, e));
        CUDA_CHECK(cudaMemcpyAsync(dst->p + (size_t)i * C, src->p + (size_t)i * C,
                                   used - (size_t)i * C, cudaMemcpyDeviceToDevice, m->st));
    }
    return SALA_OK;
}

int cu_buf_writable(cu_model *m, cu_buf *b, size_t from, size_t to, sala_err *e)
{
    if (!m->vm_chunk || to <= from) return SALA_OK;
    const size_t C = m->vm_chunk;
    int64_t i1 = (int64_t)((to + C - 1) / C);
    if (i1 > b->nch) i1 = b->nch;
    for (int64_t i = (int64_t)(from / C); i < i1;) {
        cu_chunk *old = b->ch[i];
        if (!old)
            return sala_errf(e, SALA_EINTERNAL, "cache granule %lld lost by an earlier failure",
                             (long long)i);
        const int64_t at = old->at, n = old->n;
        i = at + n;
        if (old->refs <= 1) continue;
        /* copy-on-write: a private chunk with the shared one's bytes, mapped in its place */
        CUDA_CHECK(cudaStreamSynchronize(m->st));
        cu_chunk *c = NULL;
        CU_TRY(chunk_new(m, at, n, &c, e));
        const size_t bytes = (size_t)n * C;
        CUdeviceptr tmp = 0;
        CUresult r = cuMemAddressReserve(&tmp, bytes, C, 0, 0);
        const bool reserved = r == CUDA_SUCCESS;
        if (reserved) r = cuMemMap(tmp, bytes, 0, c->h, 0);
        const bool mapped = reserved && r == CUDA_SUCCESS;
        int rc = mapped ? set_access(m, tmp, bytes, e)
                        : sala_errf(e, SALA_EINTERNAL, "CUDA driver: copy-on-write of a cache "
                                    "chunk failed (%d)", (int)r);
        const CUdeviceptr where = b->va + (CUdeviceptr)at * C;
        if (!rc && cudaMemcpy((void *)(uintptr_t)tmp, (const void *)(uintptr_t)where, bytes,
                              cudaMemcpyDeviceToDevice) != cudaSuccess)
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: copy-on-write copy failed");
        if (mapped) cuMemUnmap(tmp, bytes);
        if (reserved) cuMemAddressFree(tmp, bytes);
        if (rc) {
            chunk_unref(c);
            return rc;
        }
        unmap_chunk(m, b, old);   /* its slots are NULL until c takes them */
        rc = map_chunk(m, b, c, e);
        if (rc) {
            chunk_unref(c);   /* the slots stay NULL: the sequence is unusable */
            return rc;
        }
        CU_TRY(set_access(m, where, bytes, e));
    }
    return SALA_OK;
}

void cu_buf_free(cu_model *m, cu_buf *b)
{
    if (!m->vm_chunk) {
        cudaFree(b->p);
    } else {
        for (int64_t i = 0; i < b->nch; i++)
            if (b->ch[i] && b->ch[i]->at == i) unmap_chunk(m, b, b->ch[i]);
        if (b->va) cuMemAddressFree(b->va, b->va_bytes);
        free(b->ch);
    }
    memset(b, 0, sizeof(*b));
}

uint64_t cu_buf_shared_bytes(const cu_model *m, const cu_buf *b)
{
    uint64_t n = 0;
    for (int64_t i = 0; m->vm_chunk && i < b->nch; i++)
        if (b->ch[i] && b->ch[i]->at == i && b->ch[i]->refs > 1)
            n += (uint64_t)b->ch[i]->n * m->vm_chunk;
    return n;
}
