/* matmul.c: projections y = x·Wᵀ with W read from the mmap'ed checkpoint and converted to fp32
 * one tile of rows at a time (no fp32 copy of the model is ever kept), then OpenBLAS sgemm.
 * The OpenMP threads split the output rows into tiles, each thread converting its own tile into
 * its own slice of the tile buffer; OpenBLAS itself runs single-threaded (cpu_backend.c) so
 * that the two thread pools do not fight over the cores. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"

void cpu_convert(const st_tensor *W, size_t first, size_t n, float *dst)
{
    if (W->dtype == ST_BF16) {
        const unsigned char *p = (const unsigned char *)W->data + 2 * first;
        /* bf16 is the top half of an fp32: widen by a shift */
        for (size_t i = 0; i < n; i++) {
            uint16_t hbits;
            memcpy(&hbits, p + 2 * i, 2);
            uint32_t u = (uint32_t)hbits << 16;
            memcpy(&dst[i], &u, 4);
        }
        return;
    }
    int rc = st_to_f32(W, first, n, dst);
    SALA_ASSERT(rc == SALA_OK);   /* dtype and range were validated when the model was opened */
}

void cpu_matmul(const st_tensor *W, const float *x, int64_t T, float *y, float *tile,
                int64_t tile_floats)
{
    if (T <= 0) return;
    const int64_t out = W->shape[0], in = W->shape[1];
    const int nthr = omp_get_max_threads();
    /* rows per tile: what fits the per-thread slice, and at most an even share per thread */
    int64_t R = SALA_MIN(tile_floats / in, (out + nthr - 1) / nthr);
    SALA_ASSERT(R >= 1);
    const int64_t ntiles = (out + R - 1) / R;
    /* threads only for work worth a fork/join: on a loaded 2-core machine a barrier after a
     * tiny region costs more than the region */
    #pragma omp parallel for schedule(dynamic, 1) if (T * out * in >= CPU_PAR_MIN)
    for (int64_t ti = 0; ti < ntiles; ti++) {
        const int64_t r0 = ti * R, rn = SALA_MIN(R, out - r0);
        float *tl = tile + (int64_t)omp_get_thread_num() * tile_floats;   /* (rn, in) */
        cpu_convert(W, (size_t)(r0 * in), (size_t)(rn * in), tl);
        if (T == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rn, (int)in, 1.0f, tl, (int)in, x, 1,
                        0.0f, y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rn, (int)in, 1.0f,
                        x, (int)in, tl, (int)in, 0.0f, y + r0, (int)out);
    }
}
