/* model.c: open a model directory (config.json + safetensors or shards + index), and bind the
 * tensors of SALA-SPEC §2.2 to layer structs with their shapes checked. */
#include "engine/model.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

typedef struct {
    const char *name;
    const st_tensor *t;
    int file;
    bool used;      /* bound to a SALA-SPEC §2.2 slot */
    bool listed;    /* named by the index's weight_map */
} entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static entry *find_entry(entry *v, size_t n, const char *name)
{
    entry key = {.name = name};
    return bsearch(&key, v, n, sizeof(*v), cmp_entry);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool plain_name(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, "..")) return false;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20) return false;
    return true;
}

void eng_model_close(eng_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfiles; i++) st_close(m->files[i]);
    free(m->files);
    free(m->layers);
    free(m->tokenizer_path);
    free(m->dir);
    free(m);
}

/* Read model.safetensors.index.json and return the distinct shard names in *names. */
static int read_index(const char *dir, const char *ipath, char ***names, size_t *nnames,
                      cJSON **map_out, sala_err *e)
{
    char *buf;
    size_t len;
    int rc = sala_file_read(ipath, ENG_MAX_JSON_BYTES, &buf, &len, e);
    if (rc) return rc;
    bool oom;
    cJSON *root = sala_json_parse(buf, len, NULL, &oom);
    free(buf);
    if (!root)
        return oom ? sala_errf(e, SALA_ENOMEM, "%s: out of memory", ipath)
                   : sala_errf(e, SALA_EFORMAT, "%s: not valid JSON", ipath);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        cJSON_Delete(root);
        return sala_errf(e, SALA_EFORMAT, "%s: missing or empty object 'weight_map'", ipath);
    }
    char **v = NULL;
    size_t n = 0;
    for (const cJSON *it = wm->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: weight_map['%s'] is not a file name", ipath, it->string);
            goto fail;
        }
        if (!plain_name(it->valuestring)) {
            rc = sala_errf(e, SALA_EINVAL, "%s: weight_map['%s'] = '%.200s' is not a plain file name "
                           "inside %s", ipath, it->string, it->valuestring, dir);
            goto fail;
        }
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++) seen = !strcmp(v[i], it->valuestring);
        if (seen) continue;
        if (n == ENG_MAX_SHARDS) {
            rc = sala_errf(e, SALA_ERANGE, "%s: more than %d shard files", ipath, ENG_MAX_SHARDS);
            goto fail;
        }
        char **nv = realloc(v, (n + 1) * sizeof(*v));
        if (!nv) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        v = nv;
        v[n++] = it->valuestring;   /* borrowed from root, which the caller keeps */
    }
    *names = v;
    *nnames = n;
    *map_out = root;
    return SALA_OK;
fail:
    free(v);
    cJSON_Delete(root);
    return rc;
}

/* `src` names where tensors are looked up (model.safetensors or the index) for messages. */
static int want(entry *ents, size_t n, const eng_model *m, const char *src, const char *name,
                int64_t d0, int64_t d1, const st_tensor **out, sala_err *e)
{
    entry *en = find_entry(ents, n, name);
    if (!en) return sala_errf(e, SALA_ENOTFOUND, "%s: missing tensor '%s'", src, name);
    const st_tensor *t = en->t;
    const char *file = st_path(m->files[en->file]);
    if (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32)
        return sala_errf(e, SALA_EUNSUP, "%s: tensor '%s': dtype %s is not a weight dtype "
                         "(BF16, F16, F32)", file, name, st_dtype_name(t->dtype));
    int nd = d1 ? 2 : 1;
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[128] = "", exp[64];
        size_t k = 0;
        for (int i = 0; i < t->ndim && k < 100; i++)
            k += (size_t)snprintf(got + k, sizeof(got) - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (nd == 2) snprintf(exp, sizeof(exp), "[%lld, %lld]", (long long)d0, (long long)d1);
        else snprintf(exp, sizeof(exp), "[%lld]", (long long)d0);
        return sala_errf(e, SALA_EINVAL, "%s: tensor '%s': shape [%s], config.json implies %s",
                         file, name, got, exp);
    }
    en->used = true;
    *out = t;
    return SALA_OK;
}

static int bind(eng_model *m, entry *ents, size_t n, const char *src, sala_err *e)
{
    const eng_config *c = &m->cfg;
    int64_t D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int rc;
    if ((rc = want(ents, n, m, src, "model.embed_tokens.weight", V, D, &m->embed, e)) ||
        (rc = want(ents, n, m, src, "model.norm.weight", D, 0, &m->final_norm, e)) ||
        (rc = want(ents, n, m, src, "lm_head.weight", V, D, &m->lm_head, e)))
        return rc;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof(*m->layers));
    if (!m->layers) return sala_errf(e, SALA_ENOMEM, "out of memory");
    char nm[256];
#define W(field, suffix, d0, d1) \
    (snprintf(nm, sizeof(nm), "model.layers.%lld.%s", (long long)l, suffix), \
     want(ents, n, m, src, nm, d0, d1, &L->field, e))
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        eng_layer_weights *L = &m->layers[l];
        if ((rc = W(in_norm, "input_layernorm.weight", D, 0)) ||
            (rc = W(post_norm, "post_attention_layernorm.weight", D, 0)) ||
            (rc = W(mlp_gate, "mlp.gate_proj.weight", I, D)) ||
            (rc = W(mlp_up, "mlp.up_proj.weight", I, D)) ||
            (rc = W(mlp_down, "mlp.down_proj.weight", D, I)))
            return rc;
        if (c->mixer[l] == ENG_MIXER_SPARSE) {
            int64_t qd = c->num_attention_heads * c->head_dim, kd = c->num_key_value_heads * c->head_dim;
            if ((rc = W(q, "self_attn.q_proj.weight", qd, D)) ||
                (rc = W(k, "self_attn.k_proj.weight", kd, D)) ||
                (rc = W(v, "self_attn.v_proj.weight", kd, D)) ||
                (rc = W(o, "self_attn.o_proj.weight", D, qd)) ||
                (rc = W(gate, "self_attn.o_gate.weight", qd, D)))
                return rc;
        } else {
            int64_t hd = c->lightning_head_dim, qd = c->lightning_nh * hd, kd = c->lightning_nkv * hd;
            if ((rc = W(q, "self_attn.q_proj.weight", qd, D)) ||
                (rc = W(k, "self_attn.k_proj.weight", kd, D)) ||
                (rc = W(v, "self_attn.v_proj.weight", kd, D)) ||
                (rc = W(o, "self_attn.o_proj.weight", D, qd)) ||
                (rc = W(gate, "self_attn.z_proj.weight", qd, D)) ||
                (rc = W(q_norm, "self_attn.q_norm.weight", hd, 0)) ||
                (rc = W(k_norm, "self_attn.k_norm.weight", hd, 0)) ||
                (rc = W(o_norm, "self_attn.o_norm.weight", qd, 0)))
                return rc;
        }
    }
#undef W
    return SALA_OK;
}

int eng_model_open(const char *dir, eng_model **out, sala_err *e)
{
    *out = NULL;
    int rc = SALA_OK;
    char *cpath = NULL, *ipath = NULL, *spath = NULL, *cbuf = NULL;
    char **shards = NULL;
    size_t nshards = 0;
    cJSON *index = NULL;
    entry *ents = NULL;
    eng_model *m = calloc(1, sizeof(*m));
    if (!m || !(m->dir = strdup(dir))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        rc = sala_errf(e, SALA_ENOTFOUND, "%s: not a model directory (%s)", dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = sala_errf(e, SALA_ENOTFOUND, "%s: not a model directory (not a directory)", dir);
        goto fail;
    }
    cpath = path_join(dir, "config.json");
    ipath = path_join(dir, "model.safetensors.index.json");
    spath = path_join(dir, "model.safetensors");
    if (!cpath || !ipath || !spath) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    size_t clen;
    if (access(cpath, F_OK) != 0 && errno == ENOENT) {
        rc = sala_errf(e, SALA_ENOTFOUND, "%s: missing (a model directory needs config.json)", cpath);
        goto fail;
    }
    if ((rc = sala_file_read(cpath, ENG_MAX_JSON_BYTES, &cbuf, &clen, e))) goto fail;
    if ((rc = eng_config_parse(cbuf, clen, cpath, &m->cfg, e))) goto fail;
    XXH3_state_t *hs = XXH3_createState();
    if (!hs) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    XXH3_64bits_reset(hs);
    XXH3_64bits_update(hs, cbuf, clen);

    bool have_index = access(ipath, F_OK) == 0;
    if (have_index) {
        rc = read_index(dir, ipath, &shards, &nshards, &index, e);
    } else if (access(spath, F_OK) == 0) {
        static char single[] = "model.safetensors";
        shards = malloc(sizeof(*shards));
        if (shards) {
            shards[0] = single;
            nshards = 1;
        } else {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        }
    } else {
        rc = sala_errf(e, SALA_ENOTFOUND, "%s: no model.safetensors and no "
                       "model.safetensors.index.json", dir);
    }
    if (rc) {
        XXH3_freeState(hs);
        goto fail;
    }
    m->files = calloc(nshards, sizeof(*m->files));
    if (!m->files) {
        XXH3_freeState(hs);
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    size_t total = 0;
    for (size_t i = 0; i < nshards; i++) {
        char *p = path_join(dir, shards[i]);
        if (!p) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            break;
        }
        rc = st_open(p, &m->files[i], e);
        free(p);
        if (rc) break;
        m->nfiles++;
        m->bytes_on_disk += st_file_size(m->files[i]);
        /* Fingerprint: the header bytes (names, dtypes, shapes, offsets) of every file. */
        for (size_t k = 0; k < st_count(m->files[i]); k++) {
            const st_tensor *t = st_at(m->files[i], k);
            XXH3_64bits_update(hs, t->name, strlen(t->name) + 1);
            XXH3_64bits_update(hs, &t->dtype, sizeof(t->dtype));
            XXH3_64bits_update(hs, t->shape, sizeof(t->shape[0]) * (size_t)t->ndim);
            XXH3_64bits_update(hs, &t->offset, sizeof(t->offset));
        }
        if (sala_add_ovf(&total, total, st_count(m->files[i]))) {
            rc = sala_errf(e, SALA_ERANGE, "%s: too many tensors", dir);
            break;
        }
    }
    m->fingerprint = XXH3_64bits_digest(hs);
    XXH3_freeState(hs);
    if (rc) goto fail;

    ents = calloc(total ? total : 1, sizeof(*ents));
    if (!ents) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        for (size_t k = 0; k < st_count(m->files[i]); k++) {
            const st_tensor *t = st_at(m->files[i], k);
            ents[n++] = (entry){.name = t->name, .t = t, .file = (int)i};
            m->dtype_count[t->dtype]++;
        }
    qsort(ents, n, sizeof(*ents), cmp_entry);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(ents[i - 1].name, ents[i].name)) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s' is in both %s and %s", dir, ents[i].name,
                           st_path(m->files[ents[i - 1].file]), st_path(m->files[ents[i].file]));
            goto fail;
        }
    if (index) {
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        for (const cJSON *it = wm->child; it; it = it->next) {
            entry *en = find_entry(ents, n, it->string);
            if (!en || strcmp(strrchr(st_path(m->files[en->file]), '/') + 1, it->valuestring) != 0) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s' is listed in "
                               "model.safetensors.index.json under '%.200s' but that file does not "
                               "hold it", dir, it->string, it->valuestring);
                goto fail;
            }
            en->listed = true;
        }
        /* Marks, not a count comparison: weight_map may list a name twice. */
        for (size_t i = 0; i < n; i++)
            if (!ents[i].listed) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s' is not listed in "
                               "model.safetensors.index.json", st_path(m->files[ents[i].file]),
                               ents[i].name);
                goto fail;
            }
    }
    m->n_tensors = n;
    if ((rc = bind(m, ents, n, index ? ipath : spath, e))) goto fail;
    char extra[512] = "";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].used) {
            m->n_params += ents[i].t->numel;
            continue;
        }
        if (m->n_extra++ < 4 && k < sizeof(extra) - 1)
            k += (size_t)snprintf(extra + k, sizeof(extra) - k, "%s'%s'", k ? ", " : "", ents[i].name);
    }
    if (m->n_extra)
        sala_log(SALA_LOG_WARN, "%s: %zu unexpected tensor%s ignored: %s%s", dir, m->n_extra,
                 m->n_extra == 1 ? "" : "s", extra, m->n_extra > 4 ? ", ..." : "");
    char *tp = path_join(dir, "tokenizer.json");
    if (!tp) {   /* not "no tokenizer": out of memory */
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    if (access(tp, R_OK) == 0) m->tokenizer_path = tp;
    else free(tp);
    *out = m;
    m = NULL;
fail:
    free(ents);
    if (index) cJSON_Delete(index);
    if (shards) free(shards);
    free(cbuf);
    free(cpath);
    free(ipath);
    free(spath);
    eng_model_close(m);
    return rc;
}
