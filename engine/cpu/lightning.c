/* lightning.c: the Lightning (Simple-GLA) linear attention of SALA-SPEC §3.5, fp32, with the
 * fixed ALiBi decays λ_n = exp(-slope_n):
 *   S_t = λ S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ (scale · q_t)          (decode: the recurrence)
 * and for prefill the chunked form (fla naive_chunk_simple_gla), chunk C starting at t0:
 *   o_t   = scale · [ λ^{τ+1} S_inᵀ q_t + Σ_{σ≤τ} λ^{τ-σ} (q_t·k_σ) v_σ ]
 *   S_out = λ^C S_in + Σ_σ λ^{C-1-σ} k_σ v_σᵀ
 * Both give the same numbers up to fp32 rounding, for any chunking. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"


int64_t cpu_lightning_scratch(int64_t d)
{
    return (int64_t)CPU_LA_CHUNK * CPU_LA_CHUNK + (int64_t)CPU_LA_CHUNK * d;
}

/* One token: S = λS + k vᵀ, o = Sᵀ(scale q), per head. */
static void recurrent_step(int64_t nh, int64_t d, const float *dec, float scale, const float *q,
                           const float *k, const float *v, float *S, float *o)
{
    #pragma omp parallel for schedule(static) if (nh * d * d * 4 >= CPU_PAR_MIN)
    for (int64_t n = 0; n < nh; n++) {
        const float lam = dec[n * (CPU_LA_CHUNK + 1) + 1];
        const float *qn = q + n * d, *kn = k + n * d, *vn = v + n * d;
        float *Sn = S + n * d * d, *on = o + n * d;   /* Sn (d, d) */
        memset(on, 0, (size_t)d * sizeof(float));
        for (int64_t i = 0; i < d; i++) {
            float *row = Sn + i * d;
            const float ki = kn[i], qi = qn[i] * scale;
            for (int64_t j = 0; j < d; j++) {
                row[j] = lam * row[j] + ki * vn[j];
                on[j] += row[j] * qi;
            }
        }
    }
}

/* One chunk of C tokens of head n; rows of q/k/v/o are ld floats apart. */
static void chunk_head(int64_t C, int64_t d, int64_t ld, const float *dn, float scale,
                       const float *Q, const float *K, const float *V, float *Sn, float *O,
                       float *scratch)
{
    float *A = scratch;                          /* (C, C) decayed scores */
    float *tmp = scratch + CPU_LA_CHUNK * CPU_LA_CHUNK;   /* (C, d) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)C, (int)C, (int)d, 1.0f, Q, (int)ld,
                K, (int)ld, 0.0f, A, (int)C);
    for (int64_t t = 0; t < C; t++)
        for (int64_t s = 0; s < C; s++) A[t * C + s] = s <= t ? A[t * C + s] * dn[t - s] : 0.0f;
    /* O = A V  (intra-chunk) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)C, (int)d, (int)C, 1.0f, A, (int)C,
                V, (int)ld, 0.0f, O, (int)ld);
    /* tmp = Q S_in  (inter-chunk), O = scale (O + λ^{τ+1} tmp) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)C, (int)d, (int)d, 1.0f, Q, (int)ld,
                Sn, (int)d, 0.0f, tmp, (int)d);
    for (int64_t t = 0; t < C; t++) {
        float *ot = O + t * ld;
        const float *tt = tmp + t * d;
        const float w = dn[t + 1];
        for (int64_t j = 0; j < d; j++) ot[j] = scale * (ot[j] + w * tt[j]);
    }
    /* S_out = λ^C S_in + (λ^{C-1-σ} k_σ)ᵀ V */
    for (int64_t s = 0; s < C; s++) {
        const float w = dn[C - 1 - s];
        for (int64_t i = 0; i < d; i++) tmp[s * d + i] = w * K[s * ld + i];
    }
    const float lc = dn[C];
    for (int64_t i = 0; i < d * d; i++) Sn[i] *= lc;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)C, 1.0f, tmp, (int)d,
                V, (int)ld, 1.0f, Sn, (int)d);
}

void cpu_lightning(int64_t T, int64_t nh, int64_t d, const float *dec, float scale,
                   const float *q, const float *k, const float *v, float *S, float *o,
                   float *scratch)
{
    if (T == 1) {
        recurrent_step(nh, d, dec, scale, q, k, v, S, o);
        return;
    }
    const int64_t ld = nh * d;
    for (int64_t t0 = 0; t0 < T; t0 += CPU_LA_CHUNK) {
        const int64_t C = SALA_MIN(CPU_LA_CHUNK, T - t0);
        for (int64_t n = 0; n < nh; n++) {
            const int64_t off = t0 * ld + n * d;
            chunk_head(C, d, ld, dec + n * (CPU_LA_CHUNK + 1), scale, q + off, k + off, v + off,
                       S + n * d * d, o + off, scratch);
        }
    }
}
