/* forward.c: the CPU forward pass over one sequence (SALA-SPEC §3.1, §3.9), fp32 throughout.
 * A call's tokens are processed in steps of at most CPU_CHUNK tokens over scratch sized once
 * per sequence; logits are computed only for the rows asked for.
 *
 * Sparse layers, dense/sparse switch (SALA-SPEC §3.6): a query at absolute position p uses
 * InfLLM-V2 iff p + 1 >= sparse.dense_len, else dense causal attention. This rule is per query,
 * so it does not depend on how a prompt is split into calls, and it is what the reference does
 * at every decode step and for every prefill that stays below dense_len. The reference's
 * one-shot prefill of L >= dense_len tokens sends *all* its queries through InfLLM-V2; for
 * queries with p < K*block (K = topk + window/block) every causal block is selected and the
 * result equals dense attention, so the two rules differ only for queries in
 * [K*block, dense_len), an empty range whenever K*block >= dense_len (the golden tiny model:
 * 16*64 = 1024 = dense_len). The compressed keys K1/K2 are maintained from token 0, which equals
 * the reference's one-pass compression at the dense-to-sparse transition (SALA-SPEC §3.6). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"
#include "engine/cpu/infllm.h"

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Grow the K/V and compressed-key caches of every sparse layer to hold need tokens
 * (capacity doubles, so this reallocates O(log length) times, never per token). */
int cpu_seq_reserve(cpu_seq *s, int64_t need, sala_err *e)
{
    if (need <= s->cap) return SALA_OK;
    const eng_config *c = s->cm->c;
    const eng_sparse_config *sc = &c->sparse;
    int64_t cap = SALA_MAX(need, SALA_MAX(2 * s->cap, (int64_t)1024));
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * sizeof(float);
    size_t kv_bytes, w1, w2;
    const int64_t nw1 = infllm_n_windows(cap, sc->kernel_size, sc->kernel_stride) + 1;
    const int64_t nw2 = infllm_n_windows(cap, 4 * sc->kernel_size, 4 * sc->kernel_stride) + 1;
    if (sala_mul_ovf(&kv_bytes, (size_t)cap, row) || sala_mul_ovf(&w1, (size_t)nw1, row) ||
        sala_mul_ovf(&w2, (size_t)nw2, row))
        return sala_errf(e, SALA_ERANGE, "sequence of %lld tokens: cache size overflows",
                         (long long)cap);
    for (int i = 0; i < c->n_sparse; i++) {
        float *p;
        if (!(p = realloc(s->K[i], kv_bytes))) goto oom;
        s->K[i] = p;
        if (!(p = realloc(s->V[i], kv_bytes))) goto oom;
        s->V[i] = p;
        if (!(p = realloc(s->K1[i], w1))) goto oom;
        s->K1[i] = p;
        if (!(p = realloc(s->K2[i], w2))) goto oom;
        s->K2[i] = p;
    }
    s->cap = cap;
    return SALA_OK;
oom:
    return sala_errf(e, SALA_ENOMEM, "out of memory for a %lld-token sequence", (long long)cap);
}

/* Per-thread scratch for one query: the dense attention scratch or the block-sparse attention
 * scratch (one or the other), followed by the InfLLM-V2 selection scratch for positions up to
 * pmax. Grows by doubling, O(log length) times. */
static int ensure_thr(cpu_seq *s, int64_t pmax, sala_err *e)
{
    const eng_config *c = s->cm->c;
    const eng_sparse_config *sc = &c->sparse;
    const int64_t dense = cpu_attn_dense_scratch(c->num_attention_heads / c->num_key_value_heads,
                                                 c->head_dim);
    const int64_t attend = eng_config_topk_blocks(c) * sc->block_size;
    int64_t need = SALA_MAX(dense, attend);
    s->thr_sel_off = need;
    if (pmax + 1 >= sc->dense_len)
        need += infllm_select_scratch(sc, c->num_attention_heads, pmax);
    if (need <= s->thr_floats) return SALA_OK;
    need = SALA_MAX(need, 2 * s->thr_floats);
    for (int t = 0; t < s->nthr; t++) {
        float *p = realloc(s->thr[t], (size_t)need * sizeof(float));
        if (!p) return sala_errf(e, SALA_ENOMEM, "out of memory for attention scratch");
        s->thr[t] = p;
    }
    s->thr_floats = need;
    return SALA_OK;
}

/* Output gate and o_proj of a mixer, rows [r0, r0 + n): a = W_o (o * sigmoid(W_gate h)). */
static void out_gate(cpu_seq *s, const eng_layer_weights *W, int64_t r0, int64_t n, int64_t nq)
{
    const cpu_model *cm = s->cm;
    const int64_t D = cm->c->hidden_size;
    float *o = s->o + r0 * nq;
    cpu_matmul(W->gate, s->h + r0 * D, n, s->z, s->tile, cm->tile_floats);   /* (n, nq) */
    for (int64_t i = 0; i < n * nq; i++) o[i] *= sigmoidf(s->z[i]);
    cpu_matmul(W->o, o, n, s->a + r0 * D, s->tile, cm->tile_floats);        /* (n, D) */
}

/* Sparse (InfLLM-V2 / dense causal) attention mixer: h [T, D] -> a rows [r0, T) (K/V and the
 * compressed keys take all T tokens; r0 > 0 only in the last layer, eng_tail_from). */
static void sparse_mixer(cpu_seq *s, int layer, int64_t p0, int64_t T, int64_t r0,
                         const eng_forward_args *fa)
{
    const cpu_model *cm = s->cm;
    const eng_config *c = cm->c;
    const eng_sparse_config *sc = &c->sparse;
    const eng_layer_weights *W = &cm->m->layers[layer];
    const int li = cm->layers[layer].kind_index;
    const int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads, hd = c->head_dim;
    const int64_t G = nh / nkv, Kb = eng_config_topk_blocks(c);
    const float scale = (float)(1.0 / sqrt((double)hd));

    const int64_t D = c->hidden_size, n = T - r0, nq = nh * hd;
    cpu_matmul(W->q, s->h + r0 * D, n, s->q + r0 * nq, s->tile, cm->tile_floats);  /* (T, nq) */
    cpu_matmul(W->k, s->h, T, s->k, s->tile, cm->tile_floats);          /* (T, nkv*hd) */
    cpu_matmul(W->v, s->h, T, s->v, s->tile, cm->tile_floats);
    float *K = s->K[li], *V = s->V[li];                                  /* (cap, nkv, hd) */
    memcpy(K + p0 * nkv * hd, s->k, (size_t)(T * nkv * hd) * sizeof(float));
    memcpy(V + p0 * nkv * hd, s->v, (size_t)(T * nkv * hd) * sizeof(float));
    infllm_compress(sc, nkv, hd, K, p0 + T, s->K1[li], &s->n1[li], s->K2[li], &s->n2[li]);

    #pragma omp parallel for schedule(dynamic, 1) if (n * (p0 + T) * nh * hd >= CPU_PAR_MIN)
    for (int64_t it = r0 * nkv; it < T * nkv; it++) {
        const int64_t t = it / nkv, p = p0 + t;
        const int g = (int)(it % nkv);
        float *scr = s->thr[omp_get_thread_num()];
        const float *qt = s->q + t * nh * hd;                             /* (nh, hd) */
        float *ot = s->o + (t * nh + g * G) * hd;                         /* (G, hd) */
        if (p + 1 >= sc->dense_len) {
            int32_t *blocks = s->sel + (t * nkv + g) * Kb;
            const int64_t n1 = infllm_n_windows(p + 1, sc->kernel_size, sc->kernel_stride);
            const int64_t n2 = infllm_n_windows(p + 1, 4 * sc->kernel_size, 4 * sc->kernel_stride);
            int nb = infllm_select(sc, nh, nkv, hd, scale, qt, g, p, s->K1[li], n1, s->K2[li], n2,
                                   scr + s->thr_sel_off, blocks, NULL);
            infllm_attend(sc, nh, nkv, hd, scale, qt, g, p, K, V, blocks, nb, scr, ot);
        } else {
            cpu_attn_dense(qt + g * G * hd, G, nkv, hd, g, K, V, p + 1, scale, scr, ot);
        }
    }
    if (fa->select_fn)
        for (int64_t t = 0; t < T; t++)
            if (p0 + t + 1 >= sc->dense_len)
                for (int g = 0; g < nkv; g++)
                    fa->select_fn(fa->select_ud, layer, g, p0 + t, s->sel + (t * nkv + g) * Kb,
                                  (int)Kb);

    out_gate(s, W, r0, n, nq);
}

/* Lightning mixer (SALA-SPEC §3.5): h [T, D] -> a rows [r0, T), state S of this layer updated
 * by all T tokens. */
static void lightning_mixer(cpu_seq *s, int layer, int64_t p0, int64_t T, int64_t r0)
{
    const cpu_model *cm = s->cm;
    const eng_config *c = cm->c;
    const eng_layer_weights *W = &cm->m->layers[layer];
    const cpu_layer *L = &cm->layers[layer];
    const int64_t nh = c->lightning_nh, hd = c->lightning_head_dim;
    const float eps = (float)c->rms_norm_eps;
    float *S = s->S + (size_t)L->kind_index * (size_t)(nh * hd * hd);   /* (nh, hd, hd) */

    cpu_matmul(W->q, s->h, T, s->q, s->tile, cm->tile_floats);          /* (T, nh, hd) */
    cpu_matmul(W->k, s->h, T, s->k, s->tile, cm->tile_floats);
    cpu_matmul(W->v, s->h, T, s->v, s->tile, cm->tile_floats);
    cpu_rmsnorm(s->q, s->q, L->q_norm, T * nh, hd, eps);               /* per head */
    cpu_rmsnorm(s->k, s->k, L->k_norm, T * nh, hd, eps);
    cpu_rope(s->q, T, nh, hd, p0, cm->inv_freq);
    cpu_rope(s->k, T, nh, hd, p0, cm->inv_freq);
    cpu_lightning(T, nh, hd, cm->dec, (float)(1.0 / sqrt((double)hd)), s->q, s->k, s->v, S, s->o,
                  s->la_scratch);
    const int64_t n = T - r0, nq = nh * hd;
    cpu_rmsnorm(s->o + r0 * nq, s->o + r0 * nq, L->o_norm, n, nq, eps);  /* over all heads */
    out_gate(s, W, r0, n, nq);                                          /* z_proj gate, o_proj */
}

/* SwiGLU MLP (SALA-SPEC §3.3): h rows [r0, r0 + n) -> a rows [r0, r0 + n). */
static void mlp(cpu_seq *s, int layer, int64_t r0, int64_t n)
{
    const cpu_model *cm = s->cm;
    const eng_layer_weights *W = &cm->m->layers[layer];
    const int64_t I = cm->c->intermediate_size, D = cm->c->hidden_size;
    const float *h = s->h + r0 * D;
    cpu_matmul(W->mlp_gate, h, n, s->g, s->tile, cm->tile_floats);      /* (n, I) */
    cpu_matmul(W->mlp_up, h, n, s->u, s->tile, cm->tile_floats);
    #pragma omp parallel for if (n * I * 64 >= CPU_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n * I; i++) s->g[i] = s->g[i] * sigmoidf(s->g[i]) * s->u[i];
    cpu_matmul(W->mlp_down, s->g, n, s->a + r0 * D, s->tile, cm->tile_floats);   /* (n, D) */
}

static void residual_add(float *x, const float *a, int64_t n, float rs)
{
    for (int64_t i = 0; i < n; i++) x[i] += a[i] * rs;
}

/* Tokens tok[0..T) at positions p0.. ; out_rows/nout: rows of this step (indices into tok)
 * whose logits go to logits[0..nout). */
static int forward_step(cpu_seq *s, const int32_t *tok, int64_t T, const int64_t *out_rows,
                        int64_t nout, float *logits, const eng_forward_args *fa, sala_err *e)
{
    const cpu_model *cm = s->cm;
    const eng_config *c = cm->c;
    const int64_t D = c->hidden_size, V = c->vocab_size, p0 = s->len;
    const float eps = (float)c->rms_norm_eps, rs = (float)eng_config_residual_scale(c);
    int rc = cpu_seq_reserve(s, p0 + T, e);
    if (rc) return rc;
    if ((rc = ensure_thr(s, p0 + T - 1, e))) return rc;

    /* x = E[ids] * scale_emb   (T, D) */
    for (int64_t t = 0; t < T; t++) {
        float *xt = s->x + t * D;
        cpu_convert(cm->m->embed, (size_t)tok[t] * (size_t)D, (size_t)D, xt);
        for (int64_t i = 0; i < D; i++) xt[i] *= (float)c->scale_emb;
    }
    const int64_t tail = eng_tail_from(fa, T, out_rows, nout);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const double t0 = fa->layer_seconds ? sala_now() : 0;
        const int64_t r0 = l == c->num_hidden_layers - 1 ? tail : 0, n = T - r0;
        float *x = s->x + r0 * D, *h = s->h + r0 * D, *a = s->a + r0 * D;
        cpu_rmsnorm(s->h, s->x, cm->layers[l].in_norm, T, D, eps);
        if (c->mixer[l] == ENG_MIXER_SPARSE)
            sparse_mixer(s, l, p0, T, r0, fa);
        else
            lightning_mixer(s, l, p0, T, r0);
        residual_add(x, a, n * D, rs);
        cpu_rmsnorm(h, x, cm->layers[l].post_norm, n, D, eps);
        mlp(s, l, r0, n);
        residual_add(x, a, n * D, rs);
        if (fa->layer_seconds) fa->layer_seconds[l] += sala_now() - t0;
    }
    s->len = p0 + T;
    if (nout > 0) {
        /* logits = lm_head(RMSNorm(x) * dim_model_base / hidden), requested rows only */
        const float ls = (float)eng_config_logit_scale(c);
        for (int64_t r = 0; r < nout; r++) {
            cpu_rmsnorm(s->h + r * D, s->x + out_rows[r] * D, cm->final_norm, 1, D, eps);
            for (int64_t i = 0; i < D; i++) s->h[r * D + i] *= ls;
        }
        cpu_matmul(cm->m->lm_head, s->h, nout, logits, s->tile, cm->tile_floats);   /* (nout, V) */
        (void)V;
    }
    return SALA_OK;
}

int cpu_forward(cpu_seq *s, const eng_forward_args *a, sala_err *e)
{
    const int64_t V = s->cm->c->vocab_size;
    int64_t r = 0;
    int64_t rows[CPU_CHUNK];
    for (int64_t t0 = 0; t0 < a->n; t0 += CPU_CHUNK) {
        const int64_t T = SALA_MIN(CPU_CHUNK, a->n - t0);
        const int64_t r0 = r;
        int64_t nout = 0;
        while (r < a->nrows && a->rows[r] < t0 + T) rows[nout++] = a->rows[r++] - t0;
        int rc = forward_step(s, a->tokens + t0, T, rows, nout,
                              nout ? a->logits + r0 * V : NULL, a, e);
        if (rc) return rc;
    }
    return SALA_OK;
}
