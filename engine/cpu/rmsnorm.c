/* rmsnorm.c: RMSNorm (SALA-SPEC §3.2) in fp32: the input, post-attention, final, lightning
 * q/k (per head) and o (over all heads) norms. */
#include <math.h>

#include "engine/cpu/cpu_int.h"

void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps)
{
    #pragma omp parallel for if (rows * dim * 64 >= CPU_PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = out + r * dim;
        float ss = 0.0f;
        for (int64_t i = 0; i < dim; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int64_t i = 0; i < dim; i++) yr[i] = xr[i] * inv * w[i];
    }
}
