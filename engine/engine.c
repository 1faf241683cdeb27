/* engine.c: the public engine API over a backend table (engine/backend.h). Checks arguments
 * coming from callers (token ids, rows, lengths) so that backends only see valid requests. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>

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

void eng_engine_close(eng_engine *en)
{
    if (!en) return;
    if (en->bm) en->be->model_free(en->bm);
    eng_model_close(en->model);
    free(en);
}

const eng_config *eng_engine_config(const eng_engine *en) { return &en->model->cfg; }
const char *eng_engine_backend(const eng_engine *en) { return en->be->name; }
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
    free(s);
}

int64_t eng_seq_len(const eng_seq *s) { return s->en->be->seq_len(s->bs); }

void eng_seq_set_select_hook(eng_seq *s, eng_select_fn fn, void *ud)
{
    s->select_fn = fn;
    s->select_ud = ud;
}

void eng_seq_set_layer_timer(eng_seq *s, double *layer_seconds) { s->layer_seconds = layer_seconds; }

int eng_seq_prefill(eng_seq *s, const int32_t *tokens, int64_t n, const int64_t *rows,
                    int64_t nrows, float *logits, sala_err *e)
{
    const eng_config *c = &s->en->model->cfg;
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
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return sala_errf(e, SALA_EINVAL, "prefill: token %lld is %d, outside [0, %lld)",
                             (long long)i, tokens[i], (long long)c->vocab_size);
    for (int64_t r = 0; r < nrows; r++)
        if (rows[r] < 0 || rows[r] >= n || (r && rows[r] <= rows[r - 1]))
            return sala_errf(e, SALA_EINVAL, "prefill: logits row %lld (%lld) is not ascending "
                             "inside [0, %lld)", (long long)r, (long long)rows[r], (long long)n);
    if (nrows && !logits) return sala_errf(e, SALA_EINVAL, "prefill: rows asked, no logits buffer");
    eng_forward_args a = {
        .tokens = tokens, .n = n, .rows = rows, .nrows = nrows, .logits = logits,
        .select_fn = s->select_fn, .select_ud = s->select_ud, .layer_seconds = s->layer_seconds,
    };
    return s->en->be->forward(s->bs, &a, e);
}

int eng_seq_decode(eng_seq *s, int32_t token, float *logits, sala_err *e)
{
    int64_t row = 0;
    return eng_seq_prefill(s, &token, 1, &row, logits ? 1 : 0, logits, e);
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

int eng_seq_truncate(eng_seq *s, int64_t len, int64_t *reached, sala_err *e)
{
    if (len < 0 || len > eng_seq_len(s))
        return sala_errf(e, SALA_EINVAL, "truncate: length %lld outside [0, %lld]", (long long)len,
                         (long long)eng_seq_len(s));
    return s->en->be->seq_truncate(s->bs, len, reached, e);
}
