/* config.c: config.json -> eng_config, with every check of SALA-SPEC §1.1 the engine relies
 * on. Sizes are bounded (1 .. 2^31-1, products checked) so later arithmetic cannot overflow. */
#include "engine/config.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_SIZE 2147483647LL
#define CFG_MAX_BYTES (16u << 20)

static int get_int(const cJSON *o, const char *key, const char *label, int64_t lo, int64_t hi,
                   int64_t *out, sala_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) return sala_errf(e, SALA_EFORMAT, "%s: missing field '%s'", label, key);
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble)
        return sala_errf(e, SALA_EFORMAT, "%s: field '%s' must be an integer", label, key);
    double d = j->valuedouble;
    if (d < (double)lo || d > (double)hi)
        return sala_errf(e, SALA_ERANGE, "%s: field '%s' = %.17g is out of range [%lld, %lld]",
                         label, key, d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return SALA_OK;
}

static int get_num(const cJSON *o, const char *key, const char *label, double lo, double hi,
                   double *out, sala_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) return sala_errf(e, SALA_EFORMAT, "%s: missing field '%s'", label, key);
    if (!cJSON_IsNumber(j)) return sala_errf(e, SALA_EFORMAT, "%s: field '%s' must be a number", label, key);
    if (!(j->valuedouble >= lo && j->valuedouble <= hi))
        return sala_errf(e, SALA_ERANGE, "%s: field '%s' = %g is out of range [%g, %g]", label, key,
                         j->valuedouble, lo, hi);
    *out = j->valuedouble;
    return SALA_OK;
}

/* A boolean that must have the value this engine implements (MiniCPM-SALA's). */
static int want_bool(const cJSON *o, const char *key, const char *label, bool want, sala_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) return sala_errf(e, SALA_EFORMAT, "%s: missing field '%s'", label, key);
    if (!cJSON_IsBool(j)) return sala_errf(e, SALA_EFORMAT, "%s: field '%s' must be true or false", label, key);
    if (cJSON_IsTrue(j) != want)
        return sala_errf(e, SALA_EUNSUP, "%s: field '%s' = %s is not supported (MiniCPM-SALA uses %s)",
                         label, key, want ? "false" : "true", want ? "true" : "false");
    return SALA_OK;
}

static int get_ids(const cJSON *o, const char *key, const char *label, int32_t *ids, int max,
                   int *n, sala_err *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) return sala_errf(e, SALA_EFORMAT, "%s: missing field '%s'", label, key);
    *n = 0;
    if (cJSON_IsNumber(j)) {
        if (j->valuedouble < 0 || j->valuedouble > CFG_MAX_SIZE || floor(j->valuedouble) != j->valuedouble)
            return sala_errf(e, SALA_ERANGE, "%s: field '%s' is not a token id", label, key);
        ids[(*n)++] = (int32_t)j->valuedouble;
        return SALA_OK;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) < 1 || cJSON_GetArraySize(j) > max)
        return sala_errf(e, SALA_EFORMAT, "%s: field '%s' must be an id or a list of 1..%d ids",
                         label, key, max);
    for (const cJSON *it = j->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > CFG_MAX_SIZE ||
            floor(it->valuedouble) != it->valuedouble)
            return sala_errf(e, SALA_ERANGE, "%s: field '%s' holds a value that is not a token id",
                             label, key);
        ids[(*n)++] = (int32_t)it->valuedouble;
    }
    return SALA_OK;
}

static int parse_sparse(const cJSON *root, const char *label, eng_sparse_config *s, sala_err *e)
{
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(root, "sparse_config");
    if (!sc) return sala_errf(e, SALA_EFORMAT, "%s: missing field 'sparse_config'", label);
    if (!cJSON_IsObject(sc)) return sala_errf(e, SALA_EFORMAT, "%s: 'sparse_config' must be an object", label);
    char lab[512];
    snprintf(lab, sizeof(lab), "%s: sparse_config", label);
    int rc;
    if ((rc = get_int(sc, "block_size", lab, 1, 1 << 20, &s->block_size, e)) ||
        (rc = get_int(sc, "kernel_size", lab, 1, 1 << 20, &s->kernel_size, e)) ||
        (rc = get_int(sc, "kernel_stride", lab, 1, 1 << 20, &s->kernel_stride, e)) ||
        (rc = get_int(sc, "init_blocks", lab, 0, 1 << 20, &s->init_blocks, e)) ||
        (rc = get_int(sc, "topk", lab, 1, 1 << 20, &s->topk, e)) ||
        (rc = get_int(sc, "window_size", lab, 0, CFG_MAX_SIZE, &s->window_size, e)) ||
        (rc = get_int(sc, "dense_len", lab, 0, CFG_MAX_SIZE, &s->dense_len, e)))
        return rc;
    const cJSON *nope = cJSON_GetObjectItemCaseSensitive(sc, "use_nope");
    s->use_nope = cJSON_IsTrue(nope);
    if (s->kernel_size % s->kernel_stride)
        return sala_errf(e, SALA_EINVAL, "%s: kernel_stride %lld does not divide kernel_size %lld",
                         lab, (long long)s->kernel_stride, (long long)s->kernel_size);
    if (s->block_size % s->kernel_stride)
        return sala_errf(e, SALA_EINVAL, "%s: block_size %lld is not a multiple of kernel_stride %lld",
                         lab, (long long)s->block_size, (long long)s->kernel_stride);
    if (s->window_size % s->block_size)
        return sala_errf(e, SALA_EINVAL, "%s: window_size %lld is not a multiple of block_size %lld",
                         lab, (long long)s->window_size, (long long)s->block_size);
    /* The max-pool over compressed windows (kernel 5, stride 4, padding 1 for the real model)
     * is defined by block_size/kernel_stride and kernel_size/kernel_stride (SALA-SPEC §3.6 step 3). */
    if (s->kernel_size != 2 * s->kernel_stride)
        return sala_errf(e, SALA_EUNSUP, "%s: kernel_size %lld != 2 * kernel_stride %lld is not "
                         "supported by the block pooling", lab, (long long)s->kernel_size,
                         (long long)s->kernel_stride);
    return SALA_OK;
}

int eng_config_parse(const char *json, size_t len, const char *label, eng_config *c, sala_err *e)
{
    memset(c, 0, sizeof(*c));
    bool oom;
    cJSON *root = sala_json_parse(json, len, NULL, &oom);
    if (!root)
        return oom ? sala_errf(e, SALA_ENOMEM, "%s: out of memory", label)
                   : sala_errf(e, SALA_EFORMAT, "%s: not valid JSON", label);
    int rc = SALA_OK;
    if (!cJSON_IsObject(root)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: not a JSON object", label);
        goto fail;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "minicpm_sala") != 0)) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: field 'model_type' is '%.64s', not 'minicpm_sala'",
                       label, cJSON_IsString(mt) ? mt->valuestring : "(not a string)");
        goto fail;
    }
    if ((rc = get_int(root, "vocab_size", label, 1, CFG_MAX_SIZE, &c->vocab_size, e)) ||
        (rc = get_int(root, "hidden_size", label, 1, 1 << 20, &c->hidden_size, e)) ||
        (rc = get_int(root, "intermediate_size", label, 1, 1 << 22, &c->intermediate_size, e)) ||
        (rc = get_int(root, "num_hidden_layers", label, 1, ENG_MAX_LAYERS, &c->num_hidden_layers, e)) ||
        (rc = get_int(root, "num_attention_heads", label, 1, 1 << 16, &c->num_attention_heads, e)) ||
        (rc = get_int(root, "num_key_value_heads", label, 1, 1 << 16, &c->num_key_value_heads, e)) ||
        (rc = get_int(root, "head_dim", label, 1, 1 << 16, &c->head_dim, e)) ||
        (rc = get_int(root, "lightning_nh", label, 1, 1 << 16, &c->lightning_nh, e)) ||
        (rc = get_int(root, "lightning_nkv", label, 1, 1 << 16, &c->lightning_nkv, e)) ||
        (rc = get_int(root, "lightning_head_dim", label, 1, 1 << 16, &c->lightning_head_dim, e)) ||
        (rc = get_int(root, "max_position_embeddings", label, 1, CFG_MAX_SIZE, &c->max_position_embeddings, e)) ||
        (rc = get_num(root, "rms_norm_eps", label, 1e-30, 1.0, &c->rms_norm_eps, e)) ||
        (rc = get_num(root, "rope_theta", label, 1.0, 1e12, &c->rope_theta, e)) ||
        (rc = get_num(root, "scale_emb", label, 1e-6, 1e6, &c->scale_emb, e)) ||
        (rc = get_num(root, "scale_depth", label, 1e-6, 1e6, &c->scale_depth, e)) ||
        (rc = get_num(root, "dim_model_base", label, 1.0, 1e9, &c->dim_model_base, e)))
        goto fail;
    int64_t v;
    if ((rc = get_int(root, "bos_token_id", label, 0, c->vocab_size - 1, &v, e))) goto fail;
    c->bos_token_id = (int32_t)v;
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "pad_token_id");
    c->pad_token_id = -1;
    if (pad && !cJSON_IsNull(pad)) {
        if ((rc = get_int(root, "pad_token_id", label, 0, c->vocab_size - 1, &v, e))) goto fail;
        c->pad_token_id = (int32_t)v;
    }
    if ((rc = get_ids(root, "eos_token_id", label, c->eos_token_ids, ENG_MAX_EOS, &c->n_eos, e))) goto fail;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] >= c->vocab_size) {
            rc = sala_errf(e, SALA_ERANGE, "%s: eos_token_id %d is not below vocab_size %lld", label,
                           c->eos_token_ids[i], (long long)c->vocab_size);
            goto fail;
        }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0) {
        rc = sala_errf(e, act ? SALA_EUNSUP : SALA_EFORMAT, "%s: field 'hidden_act' = '%.32s': only "
                       "'silu' is supported", label, cJSON_IsString(act) ? act->valuestring : "(missing)");
        goto fail;
    }
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "lightning_scale");
    if (ls && (!cJSON_IsString(ls) || strcmp(ls->valuestring, "1/sqrt(d)") != 0)) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: field 'lightning_scale' = '%.32s': only '1/sqrt(d)' is "
                       "supported", label, cJSON_IsString(ls) ? ls->valuestring : "(not a string)");
        goto fail;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: field 'rope_scaling' must be null (plain RoPE)", label);
        goto fail;
    }
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(root, "pretraining_tp");
    if (tp && (!cJSON_IsNumber(tp) || tp->valuedouble != 1)) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: field 'pretraining_tp' must be 1", label);
        goto fail;
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    if (ab && !cJSON_IsFalse(ab)) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: field 'attention_bias' = true is not supported", label);
        goto fail;
    }
    if ((rc = want_bool(root, "attn_use_rope", label, false, e)) ||
        (rc = want_bool(root, "attn_use_output_gate", label, true, e)) ||
        (rc = want_bool(root, "lightning_use_rope", label, true, e)) ||
        (rc = want_bool(root, "qk_norm", label, true, e)) ||
        (rc = want_bool(root, "use_output_gate", label, true, e)) ||
        (rc = want_bool(root, "use_output_norm", label, true, e)) ||
        (rc = want_bool(root, "tie_word_embeddings", label, false, e)))
        goto fail;
    if (c->num_attention_heads * c->head_dim != c->hidden_size) {
        rc = sala_errf(e, SALA_EINVAL, "%s: num_attention_heads %lld * head_dim %lld != hidden_size %lld",
                       label, (long long)c->num_attention_heads, (long long)c->head_dim,
                       (long long)c->hidden_size);
        goto fail;
    }
    if (c->num_attention_heads % c->num_key_value_heads) {
        rc = sala_errf(e, SALA_EINVAL, "%s: num_key_value_heads %lld does not divide "
                       "num_attention_heads %lld", label, (long long)c->num_key_value_heads,
                       (long long)c->num_attention_heads);
        goto fail;
    }
    if (c->lightning_nh * c->lightning_head_dim != c->hidden_size) {
        rc = sala_errf(e, SALA_EINVAL, "%s: lightning_nh %lld * lightning_head_dim %lld != hidden_size %lld",
                       label, (long long)c->lightning_nh, (long long)c->lightning_head_dim,
                       (long long)c->hidden_size);
        goto fail;
    }
    if (c->lightning_nkv != c->lightning_nh) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: lightning_nkv %lld != lightning_nh %lld (grouped lightning "
                       "heads are not supported)", label, (long long)c->lightning_nkv,
                       (long long)c->lightning_nh);
        goto fail;
    }
    if (c->head_dim % 2 || c->lightning_head_dim % 2) {
        rc = sala_errf(e, SALA_EINVAL, "%s: head dimensions must be even (rotate-half RoPE)", label);
        goto fail;
    }
    if ((rc = parse_sparse(root, label, &c->sparse, e))) goto fail;
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(root, "mixer_types");
    if (!cJSON_IsArray(mx)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: missing or non-array field 'mixer_types'", label);
        goto fail;
    }
    if (cJSON_GetArraySize(mx) != c->num_hidden_layers) {
        rc = sala_errf(e, SALA_EINVAL, "%s: mixer_types has %d entries but num_hidden_layers is %lld",
                       label, cJSON_GetArraySize(mx), (long long)c->num_hidden_layers);
        goto fail;
    }
    int i = 0;
    for (const cJSON *it = mx->child; it; it = it->next, i++) {
        const char *s = cJSON_IsString(it) ? it->valuestring : NULL;
        if (s && strcmp(s, "minicpm4") == 0) {
            c->mixer[i] = ENG_MIXER_SPARSE;
            c->n_sparse++;
        } else if (s && (!strcmp(s, "lightning-attn") || !strcmp(s, "lightning_attn") ||
                         !strcmp(s, "lightning"))) {
            c->mixer[i] = ENG_MIXER_LIGHTNING;
            c->n_lightning++;
        } else {
            rc = sala_errf(e, SALA_EINVAL, "%s: mixer_types[%d] = '%.32s' is not a known mixer "
                           "('minicpm4' or 'lightning-attn')", label, i, s ? s : "(not a string)");
            goto fail;
        }
    }
    /* Checked products used by the loader and the engine's buffer sizing. */
    int64_t p;
    if (sala_mul_ovf_i64(&p, c->vocab_size, c->hidden_size) ||
        sala_mul_ovf_i64(&p, c->intermediate_size, c->hidden_size) ||
        sala_mul_ovf_i64(&p, p, 3 * c->num_hidden_layers)) {
        rc = sala_errf(e, SALA_ERANGE, "%s: tensor sizes overflow", label);
        goto fail;
    }
fail:
    cJSON_Delete(root);
    return rc;
}

int eng_config_load(const char *path, eng_config *c, sala_err *e)
{
    char *buf;
    size_t len;
    int rc = sala_file_read(path, CFG_MAX_BYTES, &buf, &len, e);
    if (rc) return rc;
    rc = eng_config_parse(buf, len, path, c, e);
    free(buf);
    return rc;
}

double eng_config_residual_scale(const eng_config *c)
{
    return c->scale_depth / sqrt((double)c->num_hidden_layers);
}

double eng_config_logit_scale(const eng_config *c) { return c->dim_model_base / (double)c->hidden_size; }

int64_t eng_config_topk_blocks(const eng_config *c)
{
    return c->sparse.topk + c->sparse.window_size / c->sparse.block_size;
}

void eng_config_layout(const eng_config *c, char *buf, size_t cap)
{
    size_t k = 0;
    for (int64_t i = 0; i < c->num_hidden_layers && k + 3 < cap; i++) {
        if (i) buf[k++] = ' ';
        buf[k++] = c->mixer[i] == ENG_MIXER_SPARSE ? 'S' : 'L';
    }
    buf[k] = 0;
}

/* ALiBi slopes as in the reference's _build_slope_tensor: for a power of two n,
 * slope_i = start^(i+1) with start = 2^(-2^-(log2 n - 3)); otherwise the slopes of the closest
 * lower power of two followed by every other slope of twice that power. */
static void slopes_pow2(double *out, int64_t n)
{
    const double start = pow(2.0, -pow(2.0, -(log2((double)n) - 3.0)));
    for (int64_t i = 0; i < n; i++) out[i] = start * pow(start, (double)i);
}

void eng_alibi_slopes(float *slope, int64_t nh)
{
    double buf[2 * 4096];   /* nh is bounded by the config check (heads*dim <= hidden sizes) */
    SALA_ASSERT(nh >= 1 && nh <= 2048);
    int64_t p2 = 1;
    while (p2 * 2 <= nh) p2 *= 2;
    slopes_pow2(buf, p2);
    for (int64_t i = 0; i < p2; i++) slope[i] = (float)buf[i];
    if (p2 < nh) {
        slopes_pow2(buf, 2 * p2);
        for (int64_t i = 0; i < nh - p2; i++) slope[p2 + i] = (float)buf[2 * i];
    }
}
