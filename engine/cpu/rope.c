/* rope.c: rotary position embedding of the lightning layers (SALA-SPEC §3.4): fp32 inv_freq,
 * fp32 angle = fp32(p) * inv_freq, rotate-half (dimension i pairs with i + d/2), whole head. */
#include <math.h>

#include "engine/cpu/cpu_int.h"

void cpu_rope_init(float *inv_freq, int64_t d, double theta)
{
    /* as torch computes it: 1.0 / (theta ** (arange(0, d, 2).float() / d)), all fp32 */
    for (int64_t i = 0; i < d / 2; i++) {
        float ex = (float)(2 * i) / (float)d;
        inv_freq[i] = 1.0f / powf((float)theta, ex);
    }
}

void cpu_rope(float *x, int64_t T, int64_t nh, int64_t d, int64_t p0, const float *inv_freq)
{
    const int64_t half = d / 2;
    #pragma omp parallel for if (T * nh * d * 64 >= CPU_PAR_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float pos = (float)(p0 + t);
        for (int64_t i = 0; i < half; i++) {
            const float ang = pos * inv_freq[i];
            const float c = cosf(ang), s = sinf(ang);
            for (int64_t n = 0; n < nh; n++) {
                float *xh = x + (t * nh + n) * d;       /* (d) */
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}
