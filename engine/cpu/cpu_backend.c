/* cpu_backend.c: the CPU backend's table (engine/backend.h): model upload (fp32 copies of the
 * norm weights, RoPE and decay tables; the big weights stay in the mmap), sequences (caches,
 * lightning states, checkpoints, scratch sized once), fork and truncate. The forward pass is in
 * forward.c. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"
#include "engine/cpu/infllm.h"

static float *norm_copy(const st_tensor *t, sala_err *e)
{
    float *p = malloc((size_t)t->numel * sizeof(float));
    if (!p) {
        sala_errf(e, SALA_ENOMEM, "out of memory");
        return NULL;
    }
    cpu_convert(t, 0, (size_t)t->numel, p);
    return p;
}

static void cpu_model_free(void *bm)
{
    cpu_model *cm = bm;
    if (!cm) return;
    if (cm->layers)
        for (int64_t l = 0; l < cm->c->num_hidden_layers; l++) {
            cpu_layer *L = &cm->layers[l];
            free(L->in_norm);
            free(L->post_norm);
            free(L->q_norm);
            free(L->k_norm);
            free(L->o_norm);
        }
    free(cm->layers);
    free(cm->final_norm);
    free(cm->inv_freq);
    free(cm->dec);
    free(cm);
}

static int cpu_model_load(const eng_model *m, void **out, sala_err *e)
{
    const eng_config *c = &m->cfg;
    int rc = SALA_ENOMEM;
    *out = NULL;
    if (c->lightning_nkv != c->lightning_nh)
        return sala_errf(e, SALA_EUNSUP, "config.json: lightning_nkv %lld != lightning_nh %lld "
                         "(grouped lightning heads are not implemented)",
                         (long long)c->lightning_nkv, (long long)c->lightning_nh);
    if (c->num_attention_heads % c->num_key_value_heads)
        return sala_errf(e, SALA_EINVAL, "config.json: num_attention_heads %lld is not a multiple "
                         "of num_key_value_heads %lld", (long long)c->num_attention_heads,
                         (long long)c->num_key_value_heads);
    if (c->lightning_head_dim % 2)
        return sala_errf(e, SALA_EINVAL, "config.json: lightning_head_dim %lld is odd (RoPE)",
                         (long long)c->lightning_head_dim);
    cpu_model *cm = calloc(1, sizeof(*cm));
    if (!cm) return sala_errf(e, SALA_ENOMEM, "out of memory");
    cm->m = m;
    cm->c = c;
    cm->layers = calloc((size_t)c->num_hidden_layers, sizeof(cpu_layer));
    if (!cm->layers) goto oom;
    int ns = 0, nl = 0;
    int64_t widest = c->hidden_size;
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const eng_layer_weights *W = &m->layers[l];
        cpu_layer *L = &cm->layers[l];
        if (!(L->in_norm = norm_copy(W->in_norm, e)) || !(L->post_norm = norm_copy(W->post_norm, e)))
            goto oom;
        if (c->mixer[l] == ENG_MIXER_SPARSE) {
            L->kind_index = ns++;
        } else {
            L->kind_index = nl++;
            if (!(L->q_norm = norm_copy(W->q_norm, e)) || !(L->k_norm = norm_copy(W->k_norm, e)) ||
                !(L->o_norm = norm_copy(W->o_norm, e)))
                goto oom;
        }
        widest = SALA_MAX(widest, W->mlp_down->shape[1]);
        widest = SALA_MAX(widest, W->o->shape[1]);
    }
    if (!(cm->final_norm = norm_copy(m->final_norm, e))) goto oom;
    const int64_t lnh = c->lightning_nh, lhd = c->lightning_head_dim;
    cm->inv_freq = malloc((size_t)(lhd / 2) * sizeof(float));
    cm->dec = malloc((size_t)(lnh * (CPU_LA_CHUNK + 1)) * sizeof(float));
    float *slope = malloc((size_t)lnh * sizeof(float));
    if (!cm->inv_freq || !cm->dec || !slope) {
        free(slope);
        goto oom;
    }
    cpu_rope_init(cm->inv_freq, lhd, c->rope_theta);
    eng_alibi_slopes(slope, lnh);
    /* λ_n^e = exp(-slope_n * e), slope as the fp32 value the reference builds (SALA-SPEC §3.5) */
    for (int64_t n = 0; n < lnh; n++)
        for (int ex = 0; ex <= CPU_LA_CHUNK; ex++)
            cm->dec[n * (CPU_LA_CHUNK + 1) + ex] = (float)exp(-(double)slope[n] * ex);
    free(slope);
    cm->tile_floats = SALA_MAX((int64_t)CPU_TILE_FLOATS, widest);
    /* the engine parallelises with OpenMP around single-threaded BLAS calls (matmul.c) */
    openblas_set_num_threads(1);
    *out = cm;
    return SALA_OK;
oom:
    rc = sala_errf(e, SALA_ENOMEM, "out of memory loading norm weights");
    cpu_model_free(cm);
    return rc;
}

static void ckpt_clear(cpu_seq *s, int keep)
{
    for (int i = keep; i < s->nckpt; i++) free(s->ckpt[i].S);
    if (keep < s->nckpt) s->nckpt = keep;
}

void cpu_seq_free(void *bs)
{
    cpu_seq *s = bs;
    if (!s) return;
    const eng_config *c = s->cm->c;
    for (int i = 0; i < c->n_sparse; i++) {
        if (s->K) free(s->K[i]);
        if (s->V) free(s->V[i]);
        if (s->K1) free(s->K1[i]);
        if (s->K2) free(s->K2[i]);
    }
    free(s->K);
    free(s->V);
    free(s->K1);
    free(s->K2);
    free(s->n1);
    free(s->n2);
    free(s->S);
    ckpt_clear(s, 0);
    free(s->ckpt);
    float **bufs[] = {&s->x, &s->h, &s->a, &s->q, &s->o, &s->z, &s->k, &s->v, &s->g, &s->u,
                      &s->tile, &s->la_scratch};
    for (size_t i = 0; i < SALA_ARRAY_LEN(bufs); i++) free(*bufs[i]);
    free(s->sel);
    if (s->thr)
        for (int t = 0; t < s->nthr; t++) free(s->thr[t]);
    free(s->thr);
    free(s);
}

static float *falloc(int64_t rows, int64_t cols)
{
    return malloc((size_t)rows * (size_t)cols * sizeof(float));
}

int cpu_seq_new(void *bm, void **out, sala_err *e)
{
    cpu_model *cm = bm;
    const eng_config *c = cm->c;
    *out = NULL;
    cpu_seq *s = calloc(1, sizeof(*s));
    if (!s) return sala_errf(e, SALA_ENOMEM, "out of memory");
    s->cm = cm;
    const int ns = c->n_sparse;
    const int64_t D = c->hidden_size, inter = c->intermediate_size;
    const int64_t lw = c->lightning_nh * c->lightning_head_dim;
    const int64_t qw = SALA_MAX(c->num_attention_heads * c->head_dim, lw);
    const int64_t kw = SALA_MAX(c->num_key_value_heads * c->head_dim, lw);
    s->K = calloc((size_t)ns + 1, sizeof(float *));
    s->V = calloc((size_t)ns + 1, sizeof(float *));
    s->K1 = calloc((size_t)ns + 1, sizeof(float *));
    s->K2 = calloc((size_t)ns + 1, sizeof(float *));
    s->n1 = calloc((size_t)ns + 1, sizeof(int64_t));
    s->n2 = calloc((size_t)ns + 1, sizeof(int64_t));
    s->S_floats = (size_t)c->n_lightning * (size_t)lw * (size_t)c->lightning_head_dim;
    s->S = calloc(s->S_floats + 1, sizeof(float));
    s->x = falloc(CPU_CHUNK, D);
    s->h = falloc(CPU_CHUNK, D);
    s->a = falloc(CPU_CHUNK, D);
    s->q = falloc(CPU_CHUNK, qw);
    s->o = falloc(CPU_CHUNK, qw);
    s->z = falloc(CPU_CHUNK, qw);
    s->k = falloc(CPU_CHUNK, kw);
    s->v = falloc(CPU_CHUNK, kw);
    s->g = falloc(CPU_CHUNK, inter);
    s->u = falloc(CPU_CHUNK, inter);
    s->la_scratch = falloc(1, cpu_lightning_scratch(c->lightning_head_dim));
    s->sel = malloc((size_t)CPU_CHUNK * (size_t)(c->num_key_value_heads *
                    eng_config_topk_blocks(c)) * sizeof(int32_t));
    s->nthr = omp_get_max_threads();
    s->tile = falloc(s->nthr, cm->tile_floats);
    s->thr = calloc((size_t)s->nthr, sizeof(float *));
    if (!s->K || !s->V || !s->K1 || !s->K2 || !s->n1 || !s->n2 || !s->S || !s->x || !s->h ||
        !s->a || !s->q || !s->o || !s->z || !s->k || !s->v || !s->g || !s->u || !s->tile ||
        !s->la_scratch || !s->sel || !s->thr) {
        cpu_seq_free(s);
        return sala_errf(e, SALA_ENOMEM, "out of memory for sequence scratch");
    }
    *out = s;
    return SALA_OK;
}

static int64_t cpu_seq_len(const void *bs) { return ((const cpu_seq *)bs)->len; }

static int cpu_seq_fork(void *bs, void **out, sala_err *e)
{
    cpu_seq *src = bs, *s;
    int rc = cpu_seq_new(src->cm, (void **)&s, e);
    if (rc) return rc;
    const eng_config *c = src->cm->c;
    const eng_sparse_config *sc = &c->sparse;
    if (src->cap > 0) {
        /* the fork gets caches of the source's capacity; only the used prefix is copied */
        const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * sizeof(float);
        const int64_t cap = src->cap;
        const int64_t nw1 = infllm_n_windows(cap, sc->kernel_size, sc->kernel_stride) + 1;
        const int64_t nw2 = infllm_n_windows(cap, 4 * sc->kernel_size, 4 * sc->kernel_stride) + 1;
        for (int i = 0; i < c->n_sparse; i++) {
            if (!(s->K[i] = malloc((size_t)cap * row)) || !(s->V[i] = malloc((size_t)cap * row)) ||
                !(s->K1[i] = malloc((size_t)nw1 * row)) || !(s->K2[i] = malloc((size_t)nw2 * row)))
                goto oom;
            memcpy(s->K[i], src->K[i], (size_t)src->len * row);
            memcpy(s->V[i], src->V[i], (size_t)src->len * row);
            memcpy(s->K1[i], src->K1[i], (size_t)src->n1[i] * row);
            memcpy(s->K2[i], src->K2[i], (size_t)src->n2[i] * row);
            s->n1[i] = src->n1[i];
            s->n2[i] = src->n2[i];
        }
        s->cap = cap;
    }
    memcpy(s->S, src->S, s->S_floats * sizeof(float));
    s->len = src->len;
    for (int i = 0; i < src->nckpt; i++) {
        float *S = malloc((s->S_floats + 1) * sizeof(float));
        if (!S) goto oom;
        memcpy(S, src->ckpt[i].S, s->S_floats * sizeof(float));
        if (cpu_seq_ckpt_push(s, src->ckpt[i].len, S, e)) {
            free(S);
            goto oom;
        }
    }
    *out = s;
    return SALA_OK;
oom:
    cpu_seq_free(s);
    return sala_errf(e, SALA_ENOMEM, "out of memory forking a %lld-token sequence",
                     (long long)src->len);
}

static int cpu_seq_checkpoint(void *bs, sala_err *e)
{
    cpu_seq *s = bs;
    if (s->nckpt && s->ckpt[s->nckpt - 1].len == s->len) {   /* refresh the same length */
        memcpy(s->ckpt[s->nckpt - 1].S, s->S, s->S_floats * sizeof(float));
        return SALA_OK;
    }
    float *S = malloc((s->S_floats + 1) * sizeof(float));
    if (!S) return sala_errf(e, SALA_ENOMEM, "out of memory for a checkpoint");
    memcpy(S, s->S, s->S_floats * sizeof(float));
    int rc = cpu_seq_ckpt_push(s, s->len, S, e);   /* lengths only grow between truncates */
    if (rc) free(S);
    return rc;
}

int cpu_seq_ckpt_push(cpu_seq *s, int64_t len, float *S, sala_err *e)
{
    if (s->nckpt == s->ckpt_cap) {
        int ncap = s->ckpt_cap ? 2 * s->ckpt_cap : 4;
        cpu_ckpt *p = realloc(s->ckpt, (size_t)ncap * sizeof(*p));
        if (!p) return sala_errf(e, SALA_ENOMEM, "out of memory for a checkpoint");
        s->ckpt = p;
        s->ckpt_cap = ncap;
    }
    s->ckpt[s->nckpt++] = (cpu_ckpt){len, S};
    return SALA_OK;
}

static int cpu_seq_truncate(void *bs, int64_t len, int64_t *reached, sala_err *e)
{
    cpu_seq *s = bs;
    const eng_sparse_config *sc = &s->cm->c->sparse;
    int k = s->nckpt - 1;
    while (k >= 0 && s->ckpt[k].len > len) k--;
    int64_t to = k >= 0 ? s->ckpt[k].len : 0;
    if (k >= 0)
        memcpy(s->S, s->ckpt[k].S, s->S_floats * sizeof(float));
    else
        memset(s->S, 0, s->S_floats * sizeof(float));
    ckpt_clear(s, k + 1);
    /* the sparse caches are exact per position: cut them to `to` */
    for (int i = 0; i < s->cm->c->n_sparse; i++) {
        s->n1[i] = SALA_MIN(s->n1[i], infllm_n_windows(to, sc->kernel_size, sc->kernel_stride));
        s->n2[i] = SALA_MIN(s->n2[i],
                            infllm_n_windows(to, 4 * sc->kernel_size, 4 * sc->kernel_stride));
    }
    s->len = to;
    *reached = to;
    (void)e;
    return SALA_OK;
}

static int cpu_forward_entry(void *bs, const eng_forward_args *a, sala_err *e)
{
    return cpu_forward(bs, a, e);
}

const eng_backend eng_cpu_backend = {
    .name = "cpu",
    .model_load = cpu_model_load,
    .model_free = cpu_model_free,
    .seq_new = cpu_seq_new,
    .seq_free = cpu_seq_free,
    .seq_fork = cpu_seq_fork,
    .seq_len = cpu_seq_len,
    .seq_checkpoint = cpu_seq_checkpoint,
    .seq_truncate = cpu_seq_truncate,
    .forward = cpu_forward_entry,
    .seq_ckpt_lens = cpu_seq_ckpt_lens,
    .seq_save = cpu_seq_save,
    .seq_load = cpu_seq_load,
    .state_dtype = ENG_STATE_F32,   /* its caches are fp32 */
};
