/* state.c: a context's state file (docs/CONTEXTS.md "State file"): the engine's sections
 * (engine/engine.h) plus the prefix token ids and the document table, in the checksummed
 * container of engine/statefile.h, written atomically. Meta fields identify what the state
 * was computed from; a reader names the fields it expects and is refused on any difference. */
#include "ctx/ctx_int.h"
#include "ctx/state.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/statefile.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "state files are little-endian; this host is not"
#endif

static ctx_save_hook_fn save_hook;
void ctx_set_save_hook(ctx_save_hook_fn fn) { save_hook = fn; }

typedef struct {
    sf_writer *w;
    uint64_t written;
} wctx;

static int write_piece(void *ud, const char *section, const void *data, size_t n, sala_err *e)
{
    wctx *w = ud;
    if (save_hook) save_hook(section, w->written);
    w->written += n;
    return sf_write(w->w, section, data, n, e);
}

static char *docs_json(const ctx_prefix *p)
{
    cJSON *a = cJSON_CreateArray();
    char h[17];
    for (int64_t i = 0; a && i < p->ndocs; i++) {
        const ctx_pdoc *d = &p->docs_tab[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(a, o);
        ctx_hex64(d->hash, h);
        cJSON_AddNumberToObject(o, "id", (double)d->id);
        cJSON_AddStringToObject(o, "name", d->name);
        cJSON_AddStringToObject(o, "hash", h);
        cJSON_AddNumberToObject(o, "tok0", (double)d->tok0);
        cJSON_AddNumberToObject(o, "tok1", (double)d->tok1);
    }
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

int ctx_state_save(const char *path, const ctx_model *m, const char *tokens_hex,
                   const char *corpus, const ctx_prefix *p, eng_seq *seq, sala_err *e)
{
    char len[32], ndocs[32], layout[4 * ENG_MAX_LAYERS + 8];
    snprintf(len, sizeof(len), "%lld", (long long)p->n);
    snprintf(ndocs, sizeof(ndocs), "%lld", (long long)p->ndocs);
    eng_config_layout(eng_engine_config(m->en), layout, sizeof(layout));
    const sf_field meta[] = {
        {"format", CTX_FORMAT}, {"format_version", CTX_FORMAT_VERSION},
        {"model_fingerprint", m->fp_hex}, {"tokenizer_hash", m->tok_hex},
        {"tokens_hash", tokens_hex}, {"length", len},
        {"dtype", eng_state_dtype_name(eng_engine_state_dtype(m->en))},
        {"layers", layout}, {"corpus", corpus}, {"documents", ndocs},
        {"backend", eng_engine_backend(m->en)},
    };
    if (eng_seq_len(seq) != p->n)
        return sala_errf(e, SALA_EINTERNAL, "saving a %lld-token state for a %lld-token prefix",
                         (long long)eng_seq_len(seq), (long long)p->n);
    char *dj = docs_json(p);
    if (!dj) return sala_errf(e, SALA_ENOMEM, "out of memory");
    wctx w = {0};
    int rc = sf_create(path, meta, SALA_ARRAY_LEN(meta), &w.w, e);
    if (rc) {
        free(dj);
        return rc;
    }
    rc = eng_seq_save(seq, write_piece, &w, e);
    if (!rc) rc = write_piece(&w, "prefix.ids", p->ids, (size_t)p->n * sizeof(int32_t), e);
    if (!rc) rc = write_piece(&w, "prefix.docs", dj, strlen(dj), e);
    free(dj);
    if (rc) {
        sf_abort(w.w);
        return rc;
    }
    if (save_hook) save_hook("commit", w.written);
    return sf_commit(w.w, e);
}

static int rd_size(void *ud, const char *section, size_t *n, sala_err *e)
{
    return sf_section_size(ud, section, n, e);
}

static int rd_read(void *ud, const char *section, size_t off, void *dst, size_t n, sala_err *e)
{
    return sf_read(ud, section, off, dst, n, e);
}

int ctx_state_open(const char *path, const ctx_model *m, const char *tokens_hex,
                   sf_reader **out, sala_err *e)
{
    const sf_field expect[] = {
        {"format", CTX_FORMAT}, {"format_version", CTX_FORMAT_VERSION},
        {"model_fingerprint", m->fp_hex}, {"tokenizer_hash", m->tok_hex},
        {"tokens_hash", tokens_hex},
    };
    return sf_open(path, expect, SALA_ARRAY_LEN(expect) - (tokens_hex ? 0 : 1), out, e);
}

int ctx_state_load(sf_reader *r, const ctx_model *m, eng_seq **seq, sala_err *e)
{
    eng_state_reader rd = {rd_size, rd_read, r};
    return eng_seq_load(m->en, &rd, seq, e);
}

int ctx_state_ids(sf_reader *r, int32_t **ids, int64_t *n, sala_err *e)
{
    size_t sz;
    *ids = NULL;
    int rc = sf_section_size(r, "prefix.ids", &sz, e);
    if (rc) return rc;
    if (sz % sizeof(int32_t)) return sala_errf(e, SALA_EFORMAT, "state: prefix.ids is %zu bytes", sz);
    int32_t *v = malloc(sz + sizeof(int32_t));
    if (!v) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if ((rc = sf_read(r, "prefix.ids", 0, v, sz, e))) {
        free(v);
        return rc;
    }
    *ids = v;
    *n = (int64_t)(sz / sizeof(int32_t));
    return SALA_OK;
}

uint64_t ctx_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}
