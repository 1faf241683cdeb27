/* attention.c: dense causal GQA softmax attention for one query of a sparse layer in the dense
 * regime (SALA-SPEC §3.6: total length below dense_len; NoPE, scale 1/sqrt(d)). Online softmax
 * over tiles of 64 keys, so the scratch does not grow with the length. */
#include <math.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"

#define TILE 64

void cpu_attn_dense(const float *q, int64_t G, int64_t nkv, int64_t d, int g, const float *K,
                    const float *V, int64_t nkeys, float scale, float *scratch, float *out)
{
    float *sc = scratch;   /* (TILE) scores of the current key tile */
    for (int64_t h = 0; h < G; h++) {
        const float *qh = q + h * d;
        float *oh = out + h * d;
        float m = -INFINITY, l = 0.0f;
        memset(oh, 0, (size_t)d * sizeof(float));
        for (int64_t j0 = 0; j0 < nkeys; j0 += TILE) {
            const int64_t jn = SALA_MIN(TILE, nkeys - j0);
            float mt = -INFINITY;
            for (int64_t j = 0; j < jn; j++) {
                const float *kj = K + ((j0 + j) * nkv + g) * d;
                float dot = 0.0f;
                for (int64_t i = 0; i < d; i++) dot += qh[i] * kj[i];
                sc[j] = dot * scale;
                if (sc[j] > mt) mt = sc[j];
            }
            const float mn = mt > m ? mt : m;
            const float corr = expf(m - mn);   /* 0 on the first tile (m = -inf) */
            l *= corr;
            for (int64_t i = 0; i < d; i++) oh[i] *= corr;
            for (int64_t j = 0; j < jn; j++) {
                const float p = expf(sc[j] - mn);
                const float *vj = V + ((j0 + j) * nkv + g) * d;
                l += p;
                for (int64_t i = 0; i < d; i++) oh[i] += p * vj[i];
            }
            m = mn;
        }
        const float inv = 1.0f / l;
        for (int64_t i = 0; i < d; i++) oh[i] *= inv;
    }
}
