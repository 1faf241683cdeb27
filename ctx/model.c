/* model.c: a model directory opened for cached contexts (engine + tokenizer + the hashes a
 * saved state must match), and where state files live. */
#include "ctx/ctx_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int ctx_model_open(const char *dir, const char *backend, ctx_model **out, sala_err *e)
{
    *out = NULL;
    ctx_model *m = calloc(1, sizeof(*m));
    char *json = NULL;
    size_t len;
    int rc;
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    if ((rc = eng_engine_open(dir, backend, &m->en, e))) goto fail;
    const char *tp = eng_engine_tokenizer_path(m->en);
    if (!tp) {
        rc = sala_errf(e, SALA_EINVAL, "%s: no tokenizer.json in the model directory", dir);
        goto fail;
    }
    if ((rc = sala_file_read(tp, 256u << 20, &json, &len, e))) goto fail;
    ctx_hex64(XXH3_64bits(json, len), m->tok_hex);
    if ((rc = tok_load_buffer(json, len, tp, &m->tok, e))) goto fail;
    ctx_hex64(eng_engine_fingerprint(m->en), m->fp_hex);
    free(json);
    *out = m;
    return SALA_OK;
fail:
    free(json);
    ctx_model_close(m);
    return rc;
}

void ctx_model_close(ctx_model *m)
{
    if (!m) return;
    tok_free(m->tok);
    eng_engine_close(m->en);
    free(m->dir);
    free(m);
}

eng_engine *ctx_model_engine(ctx_model *m) { return m->en; }
const tok_tokenizer *ctx_model_tokenizer(ctx_model *m) { return m->tok; }

int ctx_state_dir(const char *dbopt, char *buf, size_t cap, sala_err *e)
{
    char path[4096];
    int rc = db_path_resolve(dbopt, path, sizeof(path), e);
    if (rc) return rc;
    char *slash = strrchr(path, '/');
    int n = slash ? snprintf(buf, cap, "%.*s/contexts", (int)(slash - path), path)
                  : snprintf(buf, cap, "contexts");
    if (n < 0 || (size_t)n >= cap) return sala_errf(e, SALA_ERANGE, "state directory path too long");
    return SALA_OK;
}

int ctx_state_path(const char *state_dir, int64_t corpus_id, const char *fp_hex, char *buf,
                   size_t cap, sala_err *e)
{
    int n = snprintf(buf, cap, "%s/corpus%lld-%s.state", state_dir, (long long)corpus_id, fp_hex);
    if (n < 0 || (size_t)n >= cap) return sala_errf(e, SALA_ERANGE, "state file path too long");
    return SALA_OK;
}

int ctx_model_resolve(db *d, const char *corpus, const char *opt, char **dir, sala_err *e)
{
    *dir = NULL;
    if (!opt) {
        int rc = ctx_corpus_model_get(d, corpus, dir, e);
        if (rc != SALA_ENOTFOUND) return rc;
        const char *env = getenv("SALA_MODEL");
        if (!env || !*env) return SALA_OK;
        opt = env;
    }
    return (*dir = strdup(opt)) ? SALA_OK : sala_errf(e, SALA_ENOMEM, "out of memory");
}
