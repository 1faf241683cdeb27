/* attention.c: dense causal GQA softmax attention for one query of a sparse layer in the dense
 * regime (SALA-SPEC §3.6: total length below dense_len; NoPE, scale 1/sqrt(d)). The G q heads of
 * the group are handled together: per tile of CPU_ATT_TILE keys one sgemm gives the (G, tile)
 * scores, an online softmax folds them in, a second sgemm adds P·V. The scratch does not grow
 * with the length. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"

int64_t cpu_attn_dense_scratch(int64_t G, int64_t d)
{
    return G * CPU_ATT_TILE + 2 * G + G * d;
}

void cpu_attn_dense(const float *q, int64_t G, int64_t nkv, int64_t d, int g, const float *K,
                    const float *V, int64_t nkeys, float scale, float *scratch, float *out)
{
    float *sc = scratch;                      /* (G, TILE) scores, then probabilities */
    float *m = sc + G * CPU_ATT_TILE;         /* (G) running max */
    float *l = m + G;                         /* (G) running sum */
    float *pv = l + G;                        /* (G, d) P·V of the tile */
    const int64_t ld = nkv * d;               /* row stride of K/V: (nkeys, nkv, d) */
    const float *Kg = K + g * d, *Vg = V + g * d;
    for (int64_t h = 0; h < G; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    memset(out, 0, (size_t)(G * d) * sizeof(float));
    for (int64_t j0 = 0; j0 < nkeys; j0 += CPU_ATT_TILE) {
        const int64_t jn = SALA_MIN(CPU_ATT_TILE, nkeys - j0);
        /* sc = scale · q Kᵀ   (G, jn) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)G, (int)jn, (int)d, scale, q,
                    (int)d, Kg + j0 * ld, (int)ld, 0.0f, sc, (int)jn);
        for (int64_t h = 0; h < G; h++) {
            float *sh = sc + h * jn, mt = m[h];
            for (int64_t j = 0; j < jn; j++) mt = sh[j] > mt ? sh[j] : mt;
            const float corr = expf(m[h] - mt);   /* 0 on the first tile (m = -inf) */
            float sum = 0.0f;
            for (int64_t j = 0; j < jn; j++) {
                sh[j] = expf(sh[j] - mt);
                sum += sh[j];
            }
            l[h] = l[h] * corr + sum;
            m[h] = mt;
            for (int64_t i = 0; i < d; i++) out[h * d + i] *= corr;
        }
        /* out += P V   (G, d) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)G, (int)d, (int)jn, 1.0f, sc,
                    (int)jn, Vg + j0 * ld, (int)ld, 0.0f, pv, (int)d);
        for (int64_t i = 0; i < G * d; i++) out[i] += pv[i];
    }
    for (int64_t h = 0; h < G; h++) {
        const float inv = 1.0f / l[h];
        for (int64_t i = 0; i < d; i++) out[h * d + i] *= inv;
    }
}
