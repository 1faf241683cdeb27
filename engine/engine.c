/* engine.c: the public engine API over a backend table (engine/backend.h). Checks arguments
 * coming from callers (token ids, rows, lengths) so that backends only see valid requests. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/backend.h"
#include "engine/model.h"

struct eng_engine {
    eng_model *model;
    const eng_backend *be;
    void *bm;
};

struct eng_seq {
    eng_engine *en;
    void *bs;
    eng_select_fn select_fn;
    void *select_ud;
    double *layer_seconds;
    /* eng_seq_decode_greedy where the backend does not pick: the row and a greedy sampler
     * with pick_pen as its penalty, allocated at the first such call, freed with the sequence */
    float *pick_logits;
    eng_sampler *pick_smp;
    float pick_pen;
};

int eng_engine_open(const char *dir, const char *backend, eng_engine **out, sala_err *e)
{
    *out = NULL;
    int rc;
    eng_engine *en = calloc(1, sizeof(*en));
    if (!en) return sala_errf(e, SALA_ENOMEM, "out of memory");
    en->be = eng_backend_get(backend, e);
    if (!en->be) {
        rc = e ? e->code : SALA_EUNSUP;
        goto fail;
    }
    rc = eng_model_open(dir, &en->model, e);
    if (rc) goto fail;
    rc = en->be->model_load(en->model, &en->bm, e);
    if (rc) {
        sala_err_prefix(e, "%s backend", en->be->name);
        goto fail;
    }
    *out = en;
    return SALA_OK;
fail:
    eng_engine_close(en);
    return rc;
}

int eng_engine_random(const eng_config *c, const char *backend, uint64_t seed, eng_engine **out,
                      sala_err *e)
{
    *out = NULL;
    int rc;
    eng_engine *en = calloc(1, sizeof(*en));
    if (!en || !(en->model = calloc(1, sizeof(*en->model)))) {
        free(en);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    en->model->cfg = *c;
    en->model->fingerprint = XXH3_64bits_withSeed(c, sizeof(*c), seed);
    en->be = eng_backend_get(backend, e);
    if (!en->be) {
        rc = e ? e->code : SALA_EUNSUP;
        goto fail;
    }
    if (!en->be->model_random) {
        rc = sala_errf(e, SALA_EUNSUP, "the %s backend cannot make random weights", en->be->name);
        goto fail;
    }
    if ((rc = en->be->model_random(c, seed, &en->bm, e))) goto fail;
    *out = en;
    return SALA_OK;
fail:
    eng_engine_close(en);
    return rc;
}

void eng_engine_close(eng_engine *en)
{
    if (!en) return;
    if (en->bm) en->be->model_free(en->bm);
    eng_model_close(en->model);
    free(en);
}

const eng_config *eng_engine_config(const eng_engine *en) { return &en->model->cfg; }
const char *eng_engine_backend(const eng_engine *en) { return en->be->name; }
int eng_engine_state_dtype(const eng_engine *en) { return en->be->state_dtype; }
const char *eng_state_dtype_name(int dtype)
{
    return dtype == ENG_STATE_F32 ? "f32" : dtype == ENG_STATE_BF16 ? "bf16" : "?";
}
const char *eng_engine_tokenizer_path(const eng_engine *en) { return en->model->tokenizer_path; }

static eng_seq *seq_wrap(eng_engine *en, void *bs, sala_err *e)
{
    eng_seq *s = calloc(1, sizeof(*s));
    if (!s) {
        en->be->seq_free(bs);
        sala_errf(e, SALA_ENOMEM, "out of memory");
        return NULL;
    }
    s->en = en;
    s->bs = bs;
    return s;
}

int eng_seq_new(eng_engine *en, eng_seq **out, sala_err *e)
{
    void *bs;
    *out = NULL;
    int rc = en->be->seq_new(en->bm, &bs, e);
    if (rc) return rc;
    *out = seq_wrap(en, bs, e);
    return *out ? SALA_OK : SALA_ENOMEM;
}

void eng_seq_free(eng_seq *s)
{
    if (!s) return;
    s->en->be->seq_free(s->bs);
    free(s->pick_logits);
    eng_sampler_free(s->pick_smp);
    free(s);
}

int64_t eng_seq_len(const eng_seq *s) { return s->en->be->seq_len(s->bs); }

void eng_seq_set_select_hook(eng_seq *s, eng_select_fn fn, void *ud)
{
    s->select_fn = fn;
    s->select_ud = ud;
}

void eng_seq_set_layer_timer(eng_seq *s, double *layer_seconds) { s->layer_seconds = layer_seconds; }

/* A forward call of a->n tokens: counts, the length, the ids and the rows checked first. */
static int seq_forward(eng_seq *s, eng_forward_args *a, sala_err *e)
{
    const eng_config *c = &s->en->model->cfg;
    const int64_t n = a->n, nrows = a->nrows;
    if (n < 0 || nrows < 0 || nrows > n)
        return sala_errf(e, SALA_EINVAL, "prefill: bad counts n=%lld nrows=%lld", (long long)n,
                         (long long)nrows);
    if (n == 0) return SALA_OK;
    int64_t len = eng_seq_len(s), end;
    if (sala_add_ovf_i64(&end, len, n) || end > c->max_position_embeddings)
        return sala_errf(e, SALA_ERANGE, "prefill: length %lld + %lld exceeds "
                         "max_position_embeddings %lld", (long long)len, (long long)n,
                         (long long)c->max_position_embeddings);
    for (int64_t i = 0; i < n; i++)
        if (a->tokens[i] < 0 || a->tokens[i] >= c->vocab_size)
            return sala_errf(e, SALA_EINVAL, "prefill: token %lld is %d, outside [0, %lld)",
                             (long long)i, a->tokens[i], (long long)c->vocab_size);
    for (int64_t r = 0; r < nrows; r++)
        if (a->rows[r] < 0 || a->rows[r] >= n || (r && a->rows[r] <= a->rows[r - 1]))
            return sala_errf(e, SALA_EINVAL, "prefill: logits row %lld (%lld) is not ascending "
                             "inside [0, %lld)", (long long)r, (long long)a->rows[r],
                             (long long)n);
    if (nrows && !a->logits && !a->pick)
        return sala_errf(e, SALA_EINVAL, "prefill: rows asked, no logits buffer");
    a->select_fn = s->select_fn;
    a->select_ud = s->select_ud;
    a->layer_seconds = s->layer_seconds;
    return s->en->be->forward(s->bs, a, e);
}

int eng_seq_prefill(eng_seq *s, const int32_t *tokens, int64_t n, const int64_t *rows,
                    int64_t nrows, float *logits, sala_err *e)
{
    eng_forward_args a = {.tokens = tokens, .n = n, .rows = rows, .nrows = nrows,
                          .logits = logits};
    return seq_forward(s, &a, e);
}

int eng_seq_decode(eng_seq *s, int32_t token, float *logits, sala_err *e)
{
    int64_t row = 0;
    return eng_seq_prefill(s, &token, 1, &row, logits ? 1 : 0, logits, e);
}

int eng_seq_decode_greedy(eng_seq *s, int32_t token, const eng_sampler_params *p,
                          const int32_t *recent, int64_t n, int32_t *next, sala_err *e)
{
    if (!p || !next || n < 0 || (n && !recent) || !(p->temperature <= 0) ||
        !(p->repetition_penalty > 0))
        return sala_errf(e, SALA_EINVAL, "decode greedy: need a greedy sampler (temperature "
                         "<= 0, repetition_penalty > 0), next and recent[%lld]", (long long)n);
    const eng_backend *be = s->en->be;
    int64_t row = 0;
    const eng_pick pk = {.penalty = p->repetition_penalty, .recent = recent, .nrecent = n,
                         .next = next};
    eng_forward_args a = {.tokens = &token, .n = 1, .rows = &row, .nrows = 1};
    if (be->pick_native && be->pick_native(s->en->bm)) {
        a.pick = &pk;
        return seq_forward(s, &a, e);
    }
    /* the sampler's own rule on the row (one code path for it: engine/sampler.c) */
    const int64_t V = s->en->model->cfg.vocab_size;
    if (s->pick_smp && s->pick_pen != p->repetition_penalty) {
        eng_sampler_free(s->pick_smp);
        s->pick_smp = NULL;
    }
    if (!s->pick_logits && !(s->pick_logits = malloc((size_t)V * sizeof(float))))
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (!s->pick_smp) {
        const eng_sampler_params g = {.temperature = 0, .top_k = 0, .top_p = 1.0f,
                                      .repetition_penalty = p->repetition_penalty, .seed = 0};
        int rc = eng_sampler_new(&g, V, &s->pick_smp, e);
        if (rc) return rc;
        s->pick_pen = p->repetition_penalty;
    }
    a.logits = s->pick_logits;
    int rc = seq_forward(s, &a, e);
    if (rc) return rc;
    *next = eng_sampler_sample(s->pick_smp, s->pick_logits, recent, n);
    return SALA_OK;
}

bool eng_engine_batch_native(const eng_engine *en) { return en->be->forward_batch != NULL; }

/* Check one batch group before anything changes: same engine, distinct, ids and lengths. */
static int batch_check(eng_seq *const *s, int n, const int32_t *tokens, sala_err *e)
{
    const eng_config *c = &s[0]->en->model->cfg;
    for (int b = 0; b < n; b++) {
        if (!s[b] || s[b]->en != s[0]->en)
            return sala_errf(e, SALA_EINVAL, "decode batch: sequence %d is %s", b,
                             s[b] ? "on another engine" : "NULL");
        for (int k = 0; k < b; k++)
            if (s[k] == s[b])
                return sala_errf(e, SALA_EINVAL, "decode batch: sequences %d and %d are the "
                                 "same", k, b);
        if (tokens[b] < 0 || tokens[b] >= c->vocab_size)
            return sala_errf(e, SALA_EINVAL, "decode batch: token %d is %d, outside [0, %lld)",
                             b, tokens[b], (long long)c->vocab_size);
        if (eng_seq_len(s[b]) >= c->max_position_embeddings)
            return sala_errf(e, SALA_ERANGE, "decode batch: sequence %d is at length %lld, the "
                             "model's max_position_embeddings", b, (long long)eng_seq_len(s[b]));
    }
    return SALA_OK;
}

int eng_seq_decode_batch(eng_seq *const *s, int n, const int32_t *tokens, float *logits,
                         sala_err *e)
{
    if (n < 0 || (n && (!s || !tokens)))
        return sala_errf(e, SALA_EINVAL, "decode batch: bad arguments (n=%d)", n);
    if (!n) return SALA_OK;
    const eng_backend *be = s[0]->en->be;
    const size_t V = (size_t)s[0]->en->model->cfg.vocab_size;
    int rc = batch_check(s, n, tokens, e);
    if (rc) return rc;
    for (int b0 = 0; b0 < n; b0 += ENG_BATCH_MAX) {
        const int m = n - b0 < ENG_BATCH_MAX ? n - b0 : ENG_BATCH_MAX;
        float *lg = logits ? logits + (size_t)b0 * V : NULL;
        if (!be->forward_batch) {
            for (int b = 0; b < m && !rc; b++)
                rc = eng_seq_decode(s[b0 + b], tokens[b0 + b], lg ? lg + (size_t)b * V : NULL, e);
            if (rc) return rc;
            continue;
        }
        void *bs[ENG_BATCH_MAX];
        eng_select_fn fn[ENG_BATCH_MAX];
        void *ud[ENG_BATCH_MAX];
        for (int b = 0; b < m; b++) {
            bs[b] = s[b0 + b]->bs;
            fn[b] = s[b0 + b]->select_fn;
            ud[b] = s[b0 + b]->select_ud;
        }
        const eng_batch_args a = {.tokens = tokens + b0, .n = m, .logits = lg, .select_fn = fn,
                                  .select_ud = ud};
        if ((rc = be->forward_batch(bs, &a, e))) return rc;
    }
    return SALA_OK;
}

int eng_engine_profile(eng_engine *en, int enable, eng_profile *out)
{
    return en->be->profile ? en->be->profile(en->bm, enable, out) : SALA_EUNSUP;
}

uint64_t eng_seq_shared_bytes(const eng_seq *s)
{
    return s->en->be->seq_shared_bytes ? s->en->be->seq_shared_bytes(s->bs) : 0;
}

int eng_seq_fork(eng_seq *s, eng_seq **out, sala_err *e)
{
    void *bs;
    *out = NULL;
    int rc = s->en->be->seq_fork(s->bs, &bs, e);
    if (rc) return rc;
    *out = seq_wrap(s->en, bs, e);
    if (!*out) return SALA_ENOMEM;
    (*out)->select_fn = s->select_fn;
    (*out)->select_ud = s->select_ud;
    return SALA_OK;
}

int eng_seq_checkpoint(eng_seq *s, sala_err *e) { return s->en->be->seq_checkpoint(s->bs, e); }

int64_t eng_seq_checkpoint_count(const eng_seq *s)
{
    return s->en->be->seq_ckpt_lens ? s->en->be->seq_ckpt_lens(s->bs, NULL, 0) : 0;
}

int eng_seq_truncate(eng_seq *s, int64_t len, int64_t *reached, sala_err *e)
{
    if (len < 0 || len > eng_seq_len(s))
        return sala_errf(e, SALA_EINVAL, "truncate: length %lld outside [0, %lld]", (long long)len,
                         (long long)eng_seq_len(s));
    return s->en->be->seq_truncate(s->bs, len, reached, e);
}

/* ---- persisted state ---- */

uint64_t eng_engine_fingerprint(const eng_engine *en) { return en->model->fingerprint; }

static int64_t n_windows(int64_t L, int64_t k, int64_t s)
{
    return (k <= 0 || s <= 0 || L < k) ? 0 : (L - k) / s + 1;
}

/* Expected sizes of the sections for len tokens and nckpt checkpoints; false on overflow. */
typedef struct { uint64_t lin, ckpt, kv, k1, k2; } state_sizes;

/* Bytes of one value of the sparse caches in a state of dtype, or 0 for an unknown dtype. */
static uint64_t dtype_bytes(uint64_t dtype)
{
    return dtype == ENG_STATE_F32 ? 4 : dtype == ENG_STATE_BF16 ? 2 : 0;
}

/* Expected sizes for len tokens, nckpt checkpoints and sparse values of esz bytes (lightning
 * states are fp32 whatever the dtype); false on overflow. */
static bool sizes_for(const eng_config *c, int64_t len, int64_t nckpt, uint64_t esz,
                      state_sizes *z)
{
    const uint64_t lin = (uint64_t)c->n_lightning * (uint64_t)c->lightning_nh *
                         (uint64_t)c->lightning_head_dim * (uint64_t)c->lightning_head_dim * 4;
    const uint64_t row = (uint64_t)c->num_key_value_heads * (uint64_t)c->head_dim * esz;
    const eng_sparse_config *sc = &c->sparse;
    const int64_t w1 = n_windows(len, sc->kernel_size, sc->kernel_stride);
    const int64_t w2 = n_windows(len, 4 * sc->kernel_size, 4 * sc->kernel_stride);
    uint64_t ns = (uint64_t)c->n_sparse;
    if (len < 0 || nckpt < 0) return false;
    return !__builtin_mul_overflow(lin, (uint64_t)nckpt, &z->ckpt) &&
           !__builtin_mul_overflow(row, (uint64_t)len, &z->kv) &&
           !__builtin_mul_overflow(z->kv, ns, &z->kv) &&
           !__builtin_mul_overflow(row, (uint64_t)w1, &z->k1) &&
           !__builtin_mul_overflow(z->k1, ns, &z->k1) &&
           !__builtin_mul_overflow(row, (uint64_t)w2, &z->k2) &&
           !__builtin_mul_overflow(z->k2, ns, &z->k2) && ((z->lin = lin), true);
}

uint64_t eng_state_ckpt_bytes(const eng_config *c)
{
    state_sizes z;
    return sizes_for(c, 0, 1, 4, &z) ? z.ckpt : 0;
}

uint64_t eng_state_bytes(const eng_config *c, int64_t len, int64_t nckpt, int dtype)
{
    state_sizes z;
    const uint64_t esz = dtype < 0 ? 0 : dtype_bytes((uint64_t)dtype);
    uint64_t t = 32 + 8 * (uint64_t)SALA_MAX(nckpt, 0);
    if (!esz || !sizes_for(c, len, nckpt, esz, &z) || __builtin_add_overflow(t, z.lin, &t) ||
        __builtin_add_overflow(t, z.ckpt, &t) || __builtin_add_overflow(t, z.kv, &t) ||
        __builtin_add_overflow(t, z.kv, &t) || __builtin_add_overflow(t, z.k1, &t) ||
        __builtin_add_overflow(t, z.k2, &t))
        return 0;
    return t;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int eng_seq_save(eng_seq *s, eng_state_write_fn fn, void *ud, sala_err *e)
{
    const eng_backend *be = s->en->be;
    if (!be->seq_save || !be->seq_ckpt_lens)
        return sala_errf(e, SALA_EUNSUP, "the %s backend cannot save sequences yet", be->name);
    const int64_t nckpt = be->seq_ckpt_lens(s->bs, NULL, 0);
    const size_t hn = 32 + 8 * (size_t)nckpt;
    unsigned char *h = malloc(hn);
    int64_t *cl = malloc(8 * (size_t)nckpt + 8);
    int rc;
    if (!h || !cl) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    be->seq_ckpt_lens(s->bs, cl, nckpt);
    memcpy(h, ENG_STATE_MAGIC, 8);
    put_le(h + 8, ENG_STATE_VERSION, 4);
    put_le(h + 12, (uint64_t)be->state_dtype, 4);   /* of the sparse sections */
    put_le(h + 16, (uint64_t)eng_seq_len(s), 8);
    put_le(h + 24, (uint64_t)nckpt, 8);
    for (int64_t i = 0; i < nckpt; i++) put_le(h + 32 + 8 * i, (uint64_t)cl[i], 8);
    rc = fn(ud, "eng.header", h, hn, e);
    if (!rc) rc = be->seq_save(s->bs, fn, ud, e);
done:
    free(h);
    free(cl);
    return rc;
}

/* Check that section name has exactly want bytes. */
static int want_size(const eng_state_reader *r, const char *name, uint64_t want, sala_err *e)
{
    size_t have;
    int rc = r->size(r->ud, name, &have, e);
    if (rc == SALA_ENOTFOUND)
        return sala_errf(e, SALA_EFORMAT, "state: section '%s' is missing", name);
    if (rc) return rc;
    if ((uint64_t)have != want)
        return sala_errf(e, SALA_EFORMAT, "state: section '%s': expected %llu bytes for this "
                         "model, found %llu", name, (unsigned long long)want,
                         (unsigned long long)have);
    return SALA_OK;
}

int eng_seq_load(eng_engine *en, const eng_state_reader *r, eng_seq **out, sala_err *e)
{
    const eng_config *c = &en->model->cfg;
    unsigned char h[32];
    int64_t *cl = NULL;
    void *bs = NULL;
    int rc;
    *out = NULL;
    if (!en->be->seq_load)
        return sala_errf(e, SALA_EUNSUP, "the %s backend cannot load sequences yet", en->be->name);
    size_t hn;
    if ((rc = r->size(r->ud, "eng.header", &hn, e)))
        return rc == SALA_ENOTFOUND ? sala_errf(e, SALA_EFORMAT, "state: no eng.header section")
                                    : rc;
    if (hn < 32 || (hn - 32) % 8)
        return sala_errf(e, SALA_EFORMAT, "state: eng.header is %zu bytes", hn);
    if ((rc = r->read(r->ud, "eng.header", 0, h, 32, e))) return rc;
    if (memcmp(h, ENG_STATE_MAGIC, 8))
        return sala_errf(e, SALA_EFORMAT, "state: eng.header: bad magic");
    const uint64_t ver = get_le(h + 8, 4), dtype = get_le(h + 12, 4);
    const uint64_t len = get_le(h + 16, 8), nckpt = get_le(h + 24, 8);
    if (ver != ENG_STATE_VERSION)
        return sala_errf(e, SALA_EUNSUP, "state: engine state version %llu, expected %d",
                         (unsigned long long)ver, ENG_STATE_VERSION);
    const uint64_t esz = dtype_bytes(dtype);
    if (!esz)
        return sala_errf(e, SALA_EUNSUP, "state: eng.header: dtype %llu is unknown (expected "
                         "0 = f32 or 1 = bf16)", (unsigned long long)dtype);
    if (len > (uint64_t)c->max_position_embeddings)
        return sala_errf(e, SALA_EFORMAT, "state: length %llu exceeds max_position_embeddings "
                         "%lld", (unsigned long long)len, (long long)c->max_position_embeddings);
    if (nckpt != (hn - 32) / 8 || nckpt > 1000000)
        return sala_errf(e, SALA_EFORMAT, "state: eng.header: %llu checkpoints in %zu bytes",
                         (unsigned long long)nckpt, hn);
    state_sizes z;
    if (!sizes_for(c, (int64_t)len, (int64_t)nckpt, esz, &z))
        return sala_errf(e, SALA_ERANGE, "state: sizes overflow for length %llu",
                         (unsigned long long)len);
    if ((rc = want_size(r, "lin.S", z.lin, e)) || (rc = want_size(r, "ckpt.S", z.ckpt, e)) ||
        (rc = want_size(r, "sparse.K", z.kv, e)) || (rc = want_size(r, "sparse.V", z.kv, e)) ||
        (rc = want_size(r, "sparse.K1", z.k1, e)) || (rc = want_size(r, "sparse.K2", z.k2, e)))
        return rc;
    cl = malloc((size_t)nckpt * 8 + 8);
    unsigned char *raw = malloc((size_t)nckpt * 8 + 8);
    if (!cl || !raw) {
        free(raw);
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    rc = nckpt ? r->read(r->ud, "eng.header", 32, raw, (size_t)nckpt * 8, e) : SALA_OK;
    for (uint64_t i = 0; !rc && i < nckpt; i++) {
        cl[i] = (int64_t)get_le(raw + 8 * i, 8);
        if (cl[i] < 0 || (uint64_t)cl[i] > len || (i && cl[i] <= cl[i - 1]))
            rc = sala_errf(e, SALA_EFORMAT, "state: checkpoint %llu at length %lld is not "
                           "ascending within [0, %llu]", (unsigned long long)i, (long long)cl[i],
                           (unsigned long long)len);
    }
    free(raw);
    if (rc) goto fail;
    if ((rc = en->be->seq_load(en->bm, (int64_t)len, cl, (int64_t)nckpt, (int)dtype, r, &bs, e)))
        goto fail;
    free(cl);
    *out = seq_wrap(en, bs, e);
    return *out ? SALA_OK : SALA_ENOMEM;
fail:
    free(cl);
    return rc;
}
