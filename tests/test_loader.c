/* test_loader.c: the model-directory loader (engine/safetensors, engine/config, engine/model).
 *
 * Good inputs: the golden tiny-a directory, a small random model written by the test (single file
 * and split into two shards with an index), an extra tensor (a warning, not an error), and
 * `sala model info`. Bad inputs: handcrafted model directories, each built from the small valid
 * one by one mutation (raw safetensors header bytes, config.json fields, index.json entries,
 * tensor shapes/dtypes), each of which must be refused with its own status and a one-line
 * message naming the file and the tensor or field. Under `make check` none may crash or leak. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/random_model.h"

SALA_SUITE(loader);

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* ---- fixture helpers ---- */

static void path_in(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void put_bytes(const char *dir, const char *name, const void *data, size_t len)
{
    char p[4400];
    path_in(p, sizeof(p), dir, name);
    CU_ASSERT_EQUAL_FATAL(test_write_file(p, data, len), 0);
}

static void put_json(const char *dir, const char *name, const cJSON *j)
{
    char *s = cJSON_Print(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    put_bytes(dir, name, s, strlen(s));
    free(s);
}

static void copy_into(const char *from_dir, const char *name, const char *to_dir)
{
    char p[4400];
    path_in(p, sizeof(p), from_dir, name);
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(p, 1u << 26, &buf, &len, &e), SALA_OK);
    put_bytes(to_dir, name, buf, len);
    free(buf);
}

static void set_num(cJSON *o, const char *key, double v)
{
    cJSON *n = cJSON_CreateNumber(v);
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, n);
    else cJSON_AddItemToObject(o, key, n);
}

static void set_str(cJSON *o, const char *key, const char *v)
{
    cJSON *n = cJSON_CreateString(v);
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, n);
    else cJSON_AddItemToObject(o, key, n);
}

static void set_mixers(cJSON *c, int n, const char *const *names)
{
    cJSON *a = cJSON_CreateStringArray(names, n);
    cJSON_ReplaceItemInObjectCaseSensitive(c, "mixer_types", a);
}

/* tiny-a's config.json shrunk to 2 layers (S L), hidden 16, so a whole model is ~14 KB:
 * 26 tensors, 6,768 parameters. The caller frees the result. */
static cJSON *small_config(void)
{
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(test_shared("golden/models/tiny-a/config.json"), 1u << 20,
                                         &buf, &len, &e), SALA_OK);
    cJSON *c = cJSON_ParseWithLength(buf, len);
    free(buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    set_num(c, "vocab_size", 64);
    set_num(c, "hidden_size", 16);
    set_num(c, "intermediate_size", 24);
    set_num(c, "num_hidden_layers", 2);
    set_num(c, "num_attention_heads", 2);
    set_num(c, "num_key_value_heads", 1);
    set_num(c, "head_dim", 8);
    set_num(c, "lightning_nh", 2);
    set_num(c, "lightning_nkv", 2);
    set_num(c, "lightning_head_dim", 8);
    const int eos[2] = {2, 63};
    cJSON_ReplaceItemInObjectCaseSensitive(c, "eos_token_id", cJSON_CreateIntArray(eos, 2));
    static const char *const mix[2] = {"minicpm4", "lightning-attn"};
    set_mixers(c, 2, mix);
    return c;
}

#define SMALL_TENSORS 26
#define SMALL_PARAMS 6768

/* The small valid single-file model, written once per run; later cases copy from it. */
static const char *base_dir(void)
{
    static const char *dir;
    if (dir) return dir;
    const char *scratch = test_tmpdir();
    cJSON *c = small_config();
    put_json(scratch, "config.json", c);
    cJSON_Delete(c);
    char cp[4400];
    path_in(cp, sizeof(cp), scratch, "config.json");
    const char *d = test_tmpdir();
    sala_err e;
    int rc = eng_random_model_write(cp, d, 7, NULL, &e);
    if (rc) fprintf(stderr, "\n  random model: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    dir = d;
    return dir;
}

static void put_small_config(const char *dir)
{
    copy_into(base_dir(), "config.json", dir);
}

/* config.json := c (consumed), with the base model's valid weights beside it. */
static void put_config_case(const char *dir, cJSON *c)
{
    put_json(dir, "config.json", c);
    cJSON_Delete(c);
    copy_into(base_dir(), "model.safetensors", dir);
}

/* model.safetensors := 8-byte little-endian hlen, the header text, then `data` zero bytes. */
static void put_st_len(const char *dir, uint64_t hlen, const char *hdr, size_t hdr_bytes, size_t data)
{
    size_t n = 8 + hdr_bytes + data;
    unsigned char *buf = calloc(1, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, hdr, hdr_bytes);
    put_bytes(dir, "model.safetensors", buf, n);
    free(buf);
}

/* A model directory whose model.safetensors has header `hdr` (its true length) and `data` bytes. */
static void put_st(const char *dir, const char *hdr, size_t data)
{
    put_small_config(dir);
    put_st_len(dir, strlen(hdr), hdr, strlen(hdr), data);
}

/* One change applied while copying the base model's tensors. */
typedef struct {
    const char *drop;                  /* leave this tensor out */
    const char *retype;                /* store this tensor as `dtype` (zeroed) */
    st_dtype dtype;
    const char *reshape;               /* store this tensor with ndim/shape (zeroed) */
    int ndim;
    int64_t shape[2];
    const char *add;                   /* add this extra BF16 [4] tensor */
    int nadd;                          /* > 0: add nadd of them, named add + ".0", ".1", ... */
} mutation;

enum { ALL, FIRST, SECOND, SECOND_PLUS_EMBED };

/* Shard 1 holds the embedding and layer 0; shard 2 the rest. */
static bool in_part(const char *name, int part)
{
    bool first = !strncmp(name, "model.embed_tokens.", 19) || !strncmp(name, "model.layers.0.", 15);
    switch (part) {
    case FIRST: return first;
    case SECOND: return !first;
    case SECOND_PLUS_EMBED: return !first || !strcmp(name, "model.embed_tokens.weight");
    default: return true;
    }
}

/* DIR/file := the base model's tensors in `part`, with `mu` (may be NULL) applied. */
static void put_from_base(const char *dir, const char *file, int part, const mutation *mu)
{
    char p[4400];
    path_in(p, sizeof(p), base_dir(), "model.safetensors");
    st_file *f;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(st_open(p, &f, &e), SALA_OK);
    st_writer *w = st_writer_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    int rc = SALA_OK;
    for (size_t i = 0; i < st_count(f) && !rc; i++) {
        const st_tensor *t = st_at(f, i);
        if (!in_part(t->name, part) || (mu && mu->drop && !strcmp(mu->drop, t->name))) continue;
        void *dst;
        if (mu && mu->retype && !strcmp(mu->retype, t->name))
            rc = st_writer_alloc(w, t->name, mu->dtype, t->ndim, t->shape, &dst, &e);
        else if (mu && mu->reshape && !strcmp(mu->reshape, t->name))
            rc = st_writer_alloc(w, t->name, t->dtype, mu->ndim, mu->shape, &dst, &e);
        else
            rc = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e);
    }
    for (int i = 0; mu && mu->add && i < SALA_MAX(mu->nadd, 1) && !rc; i++) {
        const int64_t four[1] = {4};
        void *dst;
        char nm[8192];
        if (mu->nadd) snprintf(nm, sizeof(nm), "%s.%d", mu->add, i);
        else snprintf(nm, sizeof(nm), "%s", mu->add);
        rc = st_writer_alloc(w, nm, ST_BF16, 1, four, &dst, &e);
    }
    path_in(p, sizeof(p), dir, file);
    if (!rc) rc = st_writer_write(w, p, &e);
    if (rc) fprintf(stderr, "\n  fixture %s: %s\n", p, e.msg);
    st_writer_free(w);
    st_close(f);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
}

/* A single-file model directory with one mutation. */
static void put_mutated(const char *dir, const mutation *mu)
{
    put_small_config(dir);
    put_from_base(dir, "model.safetensors", ALL, mu);
}

/* A correct two-shard directory (config + 2 shards); returns its index (the caller edits it,
 * then writes it with put_index). `second` picks what shard 2 holds; mu applies to shard 2. */
static cJSON *put_shards(const char *dir, int second, const mutation *mu)
{
    put_small_config(dir);
    put_from_base(dir, SHARD1, FIRST, NULL);
    put_from_base(dir, SHARD2, second, mu);
    char p[4400];
    path_in(p, sizeof(p), base_dir(), "model.safetensors");
    st_file *f;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(st_open(p, &f, &e), SALA_OK);
    cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)(SMALL_PARAMS * 2));
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (size_t i = 0; i < st_count(f); i++) {
        const char *nm = st_at(f, i)->name;
        cJSON_AddStringToObject(wm, nm, in_part(nm, FIRST) ? SHARD1 : SHARD2);
    }
    st_close(f);
    return idx;
}

static void put_index(const char *dir, cJSON *idx)
{
    put_json(dir, "model.safetensors.index.json", idx);
    cJSON_Delete(idx);
}

static cJSON *weight_map(cJSON *idx) { return cJSON_GetObjectItemCaseSensitive(idx, "weight_map"); }

/* Sharded directory whose weight_map entry for lm_head.weight names `file`. */
static void put_hostile(const char *dir, const char *file)
{
    cJSON *idx = put_shards(dir, SECOND, NULL);
    set_str(weight_map(idx), "lm_head.weight", file);
    put_index(dir, idx);
}

/* ---- the bad directories ----
 * Each mk_<id> builds one directory; BAD_CASES lists its expected status and the substrings its
 * message must contain (the file, then the tensor or field, then what is wrong). */

#define NORM_ENTRY "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":"
#define NORM_HDR(offs) "{" NORM_ENTRY offs "}}"

/* safetensors framing */
static void mk_zero_length(const char *d)
{
    put_small_config(d);
    put_bytes(d, "model.safetensors", "", 0);
}
static void mk_short_file(const char *d)
{
    put_small_config(d);
    put_bytes(d, "model.safetensors", "\x02\0\0\0\0", 5);
}
static void mk_hlen_past_file(const char *d) { put_small_config(d); put_st_len(d, 1000, "{}", 2, 0); }
static void mk_truncated_header(const char *d)
{
    const char *h = NORM_HDR("[0,32]");
    put_small_config(d);
    put_st_len(d, strlen(h), h, strlen(h) / 2, 0);
}
static void mk_hlen_over_limit(const char *d)
{
    put_small_config(d);
    put_st_len(d, 100000001, "{}", 2, 0);
}
static void mk_hlen_max(const char *d) { put_small_config(d); put_st_len(d, UINT64_MAX, "{}", 2, 0); }
static void mk_hlen_at_limit(const char *d)
{
    put_small_config(d);
    put_st_len(d, 100000000, "{}", 2, 0);
}
static void mk_bad_utf8(const char *d)
{
    put_st(d, "{\"model.norm\xff.weight\":{\"dtype\":\"BF16\",\"shape\":[16],"
              "\"data_offsets\":[0,32]}}", 32);
}
static void mk_overlong_utf8(const char *d)
{
    put_st(d, "{\"model.norm\xc0\xae" "weight\":{\"dtype\":\"BF16\",\"shape\":[16],"
              "\"data_offsets\":[0,32]}}", 32);
}
static void mk_header_not_json(const char *d) { put_st(d, "{\"model.norm.weight\":{\"dtype\":", 0); }
static void mk_header_deep_nesting(const char *d)
{
    size_t n = 200000;
    char *h = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    memset(h, '[', n);
    h[n] = 0;
    put_st(d, h, 0);
    free(h);
}
static void mk_header_array(const char *d) { put_st(d, "[1,2,3]", 0); }
static void mk_header_junk_after(const char *d) { put_st(d, NORM_HDR("[0,32]") " x", 32); }
static void mk_duplicate_name(const char *d)
{
    put_st(d, "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]},"
              "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]}}", 32);
}
static void mk_empty_name(const char *d)
{
    put_st(d, "{\"\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]}}", 32);
}
static void mk_entry_not_object(const char *d) { put_st(d, "{\"lm_head.weight\":[1,2]}", 0); }
static void mk_metadata_not_strings(const char *d)
{
    put_st(d, "{\"__metadata__\":{\"format\":1},"
              "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]}}", 32);
}
static void mk_unknown_dtype(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"Q4_0\",\"shape\":[16],\"data_offsets\":[0,32]}}", 32);
}
static void mk_missing_dtype(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"shape\":[16],\"data_offsets\":[0,32]}}", 32);
}
static void mk_negative_dim(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[-16,1],\"data_offsets\":[0,32]}}", 32);
}
static void mk_float_dim(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[8,2.5],\"data_offsets\":[0,40]}}", 40);
}
static void mk_huge_dim(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[1e30],\"data_offsets\":[0,32]}}", 32);
}
static void mk_numel_overflow(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296,4294967296],"
              "\"data_offsets\":[0,32]}}", 32);
}
static void mk_bytes_overflow(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],"
              "\"data_offsets\":[0,32]}}", 32);
}
static void mk_too_many_dims(const char *d)
{
    put_st(d, "{\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[1,1,1,1,1,1,1,1,16],"
              "\"data_offsets\":[0,32]}}", 32);
}
static void mk_offsets_reversed(const char *d) { put_st(d, NORM_HDR("[32,0]"), 32); }
static void mk_offsets_one_number(const char *d) { put_st(d, NORM_HDR("[32]"), 32); }
static void mk_size_mismatch(const char *d) { put_st(d, NORM_HDR("[0,16]"), 16); }
static void mk_overlap(const char *d)
{
    put_st(d, "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]},"
              "\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[16,48]}}", 48);
}
static void mk_hole(const char *d)
{
    put_st(d, "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]},"
              "\"lm_head.weight\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[40,72]}}", 72);
}
static void mk_not_from_zero(const char *d) { put_st(d, NORM_HDR("[8,40]"), 40); }
static void mk_trailing_bytes(const char *d) { put_st(d, NORM_HDR("[0,32]"), 40); }
static void mk_past_end(const char *d) { put_st(d, NORM_HDR("[0,32]"), 16); }

/* semantic: tensors against config.json */
static void mk_missing_lm_head(const char *d) { put_mutated(d, &(mutation){.drop = "lm_head.weight"}); }
static void mk_missing_z_proj(const char *d)
{
    put_mutated(d, &(mutation){.drop = "model.layers.1.self_attn.z_proj.weight"});
}
static void mk_wrong_shape(const char *d)
{
    put_mutated(d, &(mutation){.reshape = "model.layers.1.self_attn.q_proj.weight", .ndim = 2,
                               .shape = {15, 16}});
}
static void mk_wrong_rank(const char *d)
{
    put_mutated(d, &(mutation){.reshape = "model.norm.weight", .ndim = 2, .shape = {16, 1}});
}
static void mk_kv_shape_as_mha(const char *d)
{   /* sparse layer k_proj sized for all heads instead of num_key_value_heads */
    put_mutated(d, &(mutation){.reshape = "model.layers.0.self_attn.k_proj.weight", .ndim = 2,
                               .shape = {16, 16}});
}
static void mk_int32_weight(const char *d)
{
    put_mutated(d, &(mutation){.retype = "model.layers.0.mlp.down_proj.weight", .dtype = ST_I32});
}
static void mk_f64_weight(const char *d)
{
    put_mutated(d, &(mutation){.retype = "model.embed_tokens.weight", .dtype = ST_F64});
}

/* config.json */
static void mk_config_not_json(const char *d)
{
    put_bytes(d, "config.json", "{\"vocab_size\": 64,", 18);
    copy_into(base_dir(), "model.safetensors", d);
}
static void mk_config_array(const char *d)
{
    put_bytes(d, "config.json", "[]", 2);
    copy_into(base_dir(), "model.safetensors", d);
}
static void mk_missing_field(const char *d)
{
    cJSON *c = small_config();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "intermediate_size");
    put_config_case(d, c);
}
static void mk_field_string(const char *d)
{
    cJSON *c = small_config();
    set_str(c, "hidden_size", "16");
    put_config_case(d, c);
}
static void mk_mixer_length(const char *d)
{
    cJSON *c = small_config();
    static const char *const mix[3] = {"minicpm4", "lightning-attn", "minicpm4"};
    set_mixers(c, 3, mix);
    put_config_case(d, c);
}
static void mk_mixer_unknown(const char *d)
{
    cJSON *c = small_config();
    static const char *const mix[2] = {"minicpm4", "mamba2"};
    set_mixers(c, 2, mix);
    put_config_case(d, c);
}
static void mk_heads_mismatch(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "head_dim", 4);
    put_config_case(d, c);
}
static void mk_kv_not_dividing(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "num_key_value_heads", 3);
    put_config_case(d, c);
}
static void mk_gelu(const char *d)
{
    cJSON *c = small_config();
    set_str(c, "hidden_act", "gelu");
    put_config_case(d, c);
}
static void mk_stride_not_dividing(const char *d)
{
    cJSON *c = small_config();
    set_num(cJSON_GetObjectItemCaseSensitive(c, "sparse_config"), "kernel_stride", 12);
    put_config_case(d, c);
}
static void mk_block_not_multiple(const char *d)
{
    cJSON *c = small_config();
    set_num(cJSON_GetObjectItemCaseSensitive(c, "sparse_config"), "block_size", 40);
    put_config_case(d, c);
}
static void mk_window_not_multiple(const char *d)
{
    cJSON *c = small_config();
    set_num(cJSON_GetObjectItemCaseSensitive(c, "sparse_config"), "window_size", 100);
    put_config_case(d, c);
}
static void mk_sparse_missing(const char *d)
{
    cJSON *c = small_config();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "sparse_config");
    put_config_case(d, c);
}
static void mk_vocab_zero(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "vocab_size", 0);
    put_config_case(d, c);
}
static void mk_vocab_negative(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "vocab_size", -64);
    put_config_case(d, c);
}
static void mk_vocab_huge(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "vocab_size", 1e30);
    put_config_case(d, c);
}
static void mk_layers_huge(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "num_hidden_layers", 4294967298.0);
    put_config_case(d, c);
}
static void mk_eos_past_vocab(const char *d)
{
    cJSON *c = small_config();
    set_num(c, "eos_token_id", 64);
    put_config_case(d, c);
}
static void mk_rope_on_sparse(const char *d)
{
    cJSON *c = small_config();
    cJSON_ReplaceItemInObjectCaseSensitive(c, "attn_use_rope", cJSON_CreateTrue());
    put_config_case(d, c);
}
static void mk_wrong_model_type(const char *d)
{
    cJSON *c = small_config();
    set_str(c, "model_type", "llama");
    put_config_case(d, c);
}

/* model.safetensors.index.json and shards */
static void mk_index_parent(const char *d) { put_hostile(d, "../x.safetensors"); }
static void mk_index_absolute(const char *d) { put_hostile(d, "/etc/passwd"); }
static void mk_index_subdir(const char *d) { put_hostile(d, "sub/x.safetensors"); }
static void mk_index_empty_name(const char *d) { put_hostile(d, ""); }
static void mk_index_dotdot(const char *d) { put_hostile(d, ".."); }
static void mk_index_backslash(const char *d) { put_hostile(d, "..\\x.safetensors"); }
static void mk_index_not_string(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    cJSON_ReplaceItemInObjectCaseSensitive(weight_map(idx), "lm_head.weight", cJSON_CreateNumber(2));
    put_index(d, idx);
}
static void mk_index_wrong_shard(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    set_str(weight_map(idx), "model.layers.0.mlp.up_proj.weight", SHARD2);
    put_index(d, idx);
}
static void mk_index_two_shards(const char *d)
{
    put_index(d, put_shards(d, SECOND_PLUS_EMBED, NULL));
}
static void mk_shard_lacks_tensor(const char *d)
{   /* the index says shard 2 holds lm_head.weight; shard 2 does not */
    put_index(d, put_shards(d, SECOND, &(mutation){.drop = "lm_head.weight"}));
}
static void mk_index_phantom(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    cJSON_AddStringToObject(weight_map(idx), "model.layers.7.mlp.up_proj.weight", SHARD1);
    put_index(d, idx);
}
static void mk_index_unlisted(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(weight_map(idx), "model.norm.weight");
    put_index(d, idx);
}
static void mk_index_dup_hides_unlisted(const char *d)
{   /* same entry count as tensors: one name listed twice, one left out */
    cJSON *idx = put_shards(d, SECOND, NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(weight_map(idx), "model.norm.weight");
    cJSON_AddStringToObject(weight_map(idx), "lm_head.weight", SHARD2);
    put_index(d, idx);
}
static void mk_index_missing_tensor(const char *d)
{   /* lm_head.weight in neither shard nor the index */
    cJSON *idx = put_shards(d, SECOND, &(mutation){.drop = "lm_head.weight"});
    cJSON_DeleteItemFromObjectCaseSensitive(weight_map(idx), "lm_head.weight");
    put_index(d, idx);
}
static void mk_index_missing_shard(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    set_str(weight_map(idx), "lm_head.weight", "model-00003-of-00003.safetensors");
    put_index(d, idx);
}
static void mk_index_not_json(const char *d)
{
    cJSON_Delete(put_shards(d, SECOND, NULL));
    put_bytes(d, "model.safetensors.index.json", "{\"weight_map\": {", 16);
}
static void mk_index_no_weight_map(const char *d)
{
    cJSON *idx = put_shards(d, SECOND, NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(idx, "weight_map");
    put_index(d, idx);
}
static void mk_shard_bad_header(const char *d)
{
    put_index(d, put_shards(d, SECOND, NULL));
    put_bytes(d, SHARD2, "\xff\xff\xff\xff\0\0\0\0{}", 10);
}

/* the directory itself */
static void mk_no_weights(const char *d) { put_small_config(d); }
static void mk_no_config(const char *d) { copy_into(base_dir(), "model.safetensors", d); }

#define ST "/model.safetensors: "
#define CFG "/config.json: "
#define IDX "/model.safetensors.index.json: "
#define IDXNAME "model.safetensors.index.json"

/* X(id, status, substring, substring, substring) */
#define BAD_CASES(X) \
    X(zero_length, SALA_EFORMAT, ST, "0 bytes", "too small") \
    X(short_file, SALA_EFORMAT, ST, "5 bytes", "too small") \
    X(hlen_past_file, SALA_EFORMAT, ST, "header length 1000", "past the end of the file") \
    X(truncated_header, SALA_EFORMAT, ST, "header length", "past the end of the file") \
    X(hlen_over_limit, SALA_EFORMAT, ST, "header length 100000001", "exceeds the limit") \
    X(hlen_max, SALA_EFORMAT, ST, "18446744073709551615", "exceeds the limit") \
    X(hlen_at_limit, SALA_EFORMAT, ST, "header length 100000000", "past the end of the file") \
    X(bad_utf8, SALA_EFORMAT, ST, "header", "not valid UTF-8") \
    X(overlong_utf8, SALA_EFORMAT, ST, "header", "not valid UTF-8") \
    X(header_not_json, SALA_EFORMAT, ST, "header", "not valid JSON") \
    X(header_deep_nesting, SALA_EFORMAT, ST, "header", "not valid JSON") \
    X(header_array, SALA_EFORMAT, ST, "header", "not a JSON object") \
    X(header_junk_after, SALA_EFORMAT, ST, "header", "after the JSON object") \
    X(duplicate_name, SALA_EFORMAT, ST, "'model.norm.weight'", "appears twice") \
    X(empty_name, SALA_EFORMAT, ST, "tensor", "empty name") \
    X(entry_not_object, SALA_EFORMAT, ST, "'lm_head.weight'", "not an object") \
    X(metadata_not_strings, SALA_EFORMAT, ST, "__metadata__", "'format'") \
    X(unknown_dtype, SALA_EFORMAT, ST, "'lm_head.weight'", "unknown dtype 'Q4_0'") \
    X(missing_dtype, SALA_EFORMAT, ST, "'lm_head.weight'", "'dtype'") \
    X(negative_dim, SALA_EFORMAT, ST, "'lm_head.weight'", "shape[0] is not a non-negative integer") \
    X(float_dim, SALA_EFORMAT, ST, "'lm_head.weight'", "shape[1] is not a non-negative integer") \
    X(huge_dim, SALA_EFORMAT, ST, "'lm_head.weight'", "shape[0] is not a non-negative integer") \
    X(numel_overflow, SALA_ERANGE, ST, "'lm_head.weight'", "element count overflows") \
    X(bytes_overflow, SALA_ERANGE, ST, "'lm_head.weight'", "byte size overflows") \
    X(too_many_dims, SALA_EFORMAT, ST, "'lm_head.weight'", "9 dimensions") \
    X(offsets_reversed, SALA_EFORMAT, ST, "'model.norm.weight'", "end 0 before begin 32") \
    X(offsets_one_number, SALA_EFORMAT, ST, "'model.norm.weight'", "'data_offsets' must be two") \
    X(size_mismatch, SALA_EFORMAT, ST, "'model.norm.weight'", "need 32 bytes but data_offsets span 16") \
    X(overlap, SALA_EFORMAT, ST, "'lm_head.weight'", "overlap the previous tensor 'model.norm.weight'") \
    X(hole, SALA_EFORMAT, ST, "'lm_head.weight'", "hole of 8 bytes") \
    X(not_from_zero, SALA_EFORMAT, ST, "'model.norm.weight'", "hole of 8 bytes before offset 8") \
    X(trailing_bytes, SALA_EFORMAT, ST, "8 trailing bytes", "after the last tensor") \
    X(past_end, SALA_EFORMAT, ST, "'model.norm.weight'", "past the end of the data (16 bytes)") \
    X(missing_lm_head, SALA_ENOTFOUND, ST, "missing tensor", "'lm_head.weight'") \
    X(missing_z_proj, SALA_ENOTFOUND, ST, "missing tensor", "'model.layers.1.self_attn.z_proj.weight'") \
    X(wrong_shape, SALA_EINVAL, ST, "'model.layers.1.self_attn.q_proj.weight'", \
      "shape [15, 16], config.json implies [16, 16]") \
    X(wrong_rank, SALA_EINVAL, ST, "'model.norm.weight'", "shape [16, 1], config.json implies [16]") \
    X(kv_shape_as_mha, SALA_EINVAL, ST, "'model.layers.0.self_attn.k_proj.weight'", \
      "shape [16, 16], config.json implies [8, 16]") \
    X(int32_weight, SALA_EUNSUP, ST, "'model.layers.0.mlp.down_proj.weight'", "dtype I32") \
    X(f64_weight, SALA_EUNSUP, ST, "'model.embed_tokens.weight'", "dtype F64") \
    X(config_not_json, SALA_EFORMAT, CFG, "not valid JSON", "") \
    X(config_array, SALA_EFORMAT, CFG, "not a JSON object", "") \
    X(missing_field, SALA_EFORMAT, CFG, "missing field", "'intermediate_size'") \
    X(field_string, SALA_EFORMAT, CFG, "'hidden_size'", "must be an integer") \
    X(mixer_length, SALA_EINVAL, CFG, "mixer_types has 3 entries", "num_hidden_layers is 2") \
    X(mixer_unknown, SALA_EINVAL, CFG, "mixer_types[1] = 'mamba2'", "not a known mixer") \
    X(heads_mismatch, SALA_EINVAL, CFG, "num_attention_heads 2 * head_dim 4", "!= hidden_size 16") \
    X(kv_not_dividing, SALA_EINVAL, CFG, "num_key_value_heads 3", \
      "does not divide num_attention_heads 2") \
    X(gelu, SALA_EUNSUP, CFG, "'hidden_act'", "'gelu'") \
    X(stride_not_dividing, SALA_EINVAL, CFG, "sparse_config", \
      "kernel_stride 12 does not divide kernel_size 32") \
    X(block_not_multiple, SALA_EINVAL, CFG, "sparse_config", \
      "block_size 40 is not a multiple of kernel_stride 16") \
    X(window_not_multiple, SALA_EINVAL, CFG, "sparse_config", \
      "window_size 100 is not a multiple of block_size") \
    X(sparse_missing, SALA_EFORMAT, CFG, "missing field", "'sparse_config'") \
    X(vocab_zero, SALA_ERANGE, CFG, "'vocab_size' = 0", "out of range") \
    X(vocab_negative, SALA_ERANGE, CFG, "'vocab_size' = -64", "out of range") \
    X(vocab_huge, SALA_ERANGE, CFG, "'vocab_size' = 1e+30", "out of range") \
    X(layers_huge, SALA_ERANGE, CFG, "'num_hidden_layers' = 4294967298", "out of range") \
    X(eos_past_vocab, SALA_ERANGE, CFG, "eos_token_id 64", "vocab_size 64") \
    X(rope_on_sparse, SALA_EUNSUP, CFG, "'attn_use_rope'", "not supported") \
    X(wrong_model_type, SALA_EUNSUP, CFG, "'model_type'", "'llama'") \
    X(index_parent, SALA_EINVAL, IDX, "weight_map['lm_head.weight'] = '../x.safetensors'", \
      "not a plain file name") \
    X(index_absolute, SALA_EINVAL, IDX, "weight_map['lm_head.weight'] = '/etc/passwd'", \
      "not a plain file name") \
    X(index_subdir, SALA_EINVAL, IDX, "weight_map['lm_head.weight'] = 'sub/x.safetensors'", \
      "not a plain file name") \
    X(index_empty_name, SALA_EINVAL, IDX, "weight_map['lm_head.weight'] = ''", "not a plain file name") \
    X(index_dotdot, SALA_EINVAL, IDX, "weight_map['lm_head.weight'] = '..'", "not a plain file name") \
    X(index_backslash, SALA_EINVAL, IDX, "weight_map['lm_head.weight']", "not a plain file name") \
    X(index_not_string, SALA_EFORMAT, IDX, "weight_map['lm_head.weight']", "not a file name") \
    X(index_wrong_shard, SALA_EFORMAT, IDXNAME, "'model.layers.0.mlp.up_proj.weight'", \
      "under '" SHARD2 "' but that file does not hold it") \
    X(index_two_shards, SALA_EFORMAT, "'model.embed_tokens.weight'", "/" SHARD1, "/" SHARD2) \
    X(shard_lacks_tensor, SALA_EFORMAT, IDXNAME, "'lm_head.weight'", \
      "under '" SHARD2 "' but that file does not hold it") \
    X(index_phantom, SALA_EFORMAT, IDXNAME, "'model.layers.7.mlp.up_proj.weight'", "does not hold it") \
    X(index_unlisted, SALA_EFORMAT, "/" SHARD2 ": ", "'model.norm.weight'", "not listed in " IDXNAME) \
    X(index_dup_hides_unlisted, SALA_EFORMAT, "/" SHARD2 ": ", "'model.norm.weight'", \
      "not listed in " IDXNAME) \
    X(index_missing_tensor, SALA_ENOTFOUND, IDX, "missing tensor", "'lm_head.weight'") \
    X(index_missing_shard, SALA_ENOTFOUND, "/model-00003-of-00003.safetensors: ", "cannot open", "") \
    X(index_not_json, SALA_EFORMAT, IDX, "not valid JSON", "") \
    X(index_no_weight_map, SALA_EFORMAT, IDX, "'weight_map'", "") \
    X(shard_bad_header, SALA_EFORMAT, "/" SHARD2 ": ", "header length 4294967295", "exceeds the limit") \
    X(no_weights, SALA_ENOTFOUND, "no model.safetensors", "no " IDXNAME, "") \
    X(no_config, SALA_ENOTFOUND, "/config.json: ", "missing", "")

/* Build the directory with mk, open it, and check status, message and that nothing was opened. */
static void expect_bad(const char *id, void (*mk)(const char *dir), int code, const char *s1,
                       const char *s2, const char *s3)
{
    const char *d = test_tmpdir();
    mk(d);
    eng_model *m = (eng_model *)1;
    sala_err e;
    memset(&e, 0, sizeof(e));
    int rc = eng_model_open(d, &m, &e);
    CU_ASSERT_PTR_NULL(m);
    if (rc == SALA_OK) eng_model_close(m);
    CU_ASSERT_EQUAL(rc, code);
    const char *subs[3] = {s1, s2, s3};
    bool ok = rc == code && strchr(e.msg, '\n') == NULL && strncmp(e.msg, d, strlen(d)) == 0;
    CU_ASSERT_PTR_NULL(strchr(e.msg, '\n'));
    CU_ASSERT_EQUAL(strncmp(e.msg, d, strlen(d)), 0);   /* every message starts with the path */
    for (int i = 0; i < 3; i++) {
        bool has = strstr(e.msg, subs[i]) != NULL;
        CU_ASSERT_TRUE(has);
        ok = ok && has;
    }
    if (!ok) fprintf(stderr, "\n  case %s: expected %d [%s|%s|%s], got %d: %s\n", id, code, s1, s2,
                     s3, rc, e.msg);
}

#define DEF_TEST(id, code, s1, s2, s3) \
    static void t_bad_##id(void) { expect_bad(#id, mk_##id, code, s1, s2, s3); }
BAD_CASES(DEF_TEST)
#undef DEF_TEST

#define COUNT_CASE(id, code, s1, s2, s3) +1
enum { N_BAD_CASES = 0 BAD_CASES(COUNT_CASE) };
#undef COUNT_CASE
_Static_assert(N_BAD_CASES >= 24, "the issue asks for at least 24 bad model directories");

/* ---- good directories ---- */

static void t_tiny_a(void)
{
    eng_model *m;
    sala_err e;
    int rc = eng_model_open(test_shared("golden/models/tiny-a"), &m, &e);
    if (rc) fprintf(stderr, "\n  tiny-a: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(m->n_tensors, 49);
    CU_ASSERT_EQUAL(m->n_params, 5245952);
    CU_ASSERT_EQUAL(m->n_extra, 0);
    CU_ASSERT_EQUAL(m->nfiles, 1);
    CU_ASSERT_EQUAL(m->dtype_count[ST_BF16], 49);
    CU_ASSERT_EQUAL(m->cfg.num_hidden_layers, 4);
    CU_ASSERT_EQUAL(m->cfg.n_sparse, 2);
    char layout[64];
    eng_config_layout(&m->cfg, layout, sizeof(layout));
    CU_ASSERT_STRING_EQUAL(layout, "S L L S");
    /* Views: the lightning q_norm of layer 1 is [head_dim] inside the mapping. */
    CU_ASSERT_PTR_NULL(m->layers[0].q_norm);
    CU_ASSERT_PTR_NOT_NULL(m->layers[1].q_norm);
    CU_ASSERT_EQUAL(m->layers[1].q_norm->shape[0], 64);
    CU_ASSERT_EQUAL(m->lm_head->shape[0], 4096);
    float x[4];
    CU_ASSERT_EQUAL(st_to_f32(m->final_norm, 0, 4, x), SALA_OK);
    CU_ASSERT_EQUAL(st_to_f32(m->final_norm, 254, 4, x), SALA_EINVAL);
    eng_model_close(m);
    eng_model_close(NULL);
}

static void t_small(void)
{
    eng_model *m;
    sala_err e;
    int rc = eng_model_open(base_dir(), &m, &e);
    if (rc) fprintf(stderr, "\n  small: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(m->n_tensors, SMALL_TENSORS);
    CU_ASSERT_EQUAL(m->n_params, SMALL_PARAMS);
    eng_model_close(m);
}

static char g_warn[SALA_ERR_MAX];
static int g_nwarn;

static void capture_log(sala_log_level lvl, const char *msg, void *ud)
{
    (void)ud;
    if (lvl != SALA_LOG_WARN) return;
    g_nwarn++;
    snprintf(g_warn, sizeof(g_warn), "%s", msg);
}

static void t_extra_tensor(void)
{
    const char *d = test_tmpdir();
    put_mutated(d, &(mutation){.add = "model.layers.0.self_attn.rotary_emb.inv_freq"});
    g_nwarn = 0;
    g_warn[0] = 0;
    sala_log_set(capture_log, NULL);
    eng_model *m;
    sala_err e;
    int rc = eng_model_open(d, &m, &e);
    sala_log_set(NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(m->n_extra, 1);
    CU_ASSERT_EQUAL(m->n_tensors, SMALL_TENSORS + 1);
    CU_ASSERT_EQUAL(m->n_params, SMALL_PARAMS);
    CU_ASSERT_EQUAL(g_nwarn, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(g_warn, "'model.layers.0.self_attn.rotary_emb.inv_freq'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(g_warn, "1 unexpected tensor"));
    eng_model_close(m);
}

/* Many extra tensors with names far longer than the message buffers: one truncated warning. */
static void t_extra_long_names(void)
{
    static char name[5000];
    memset(name, 'x', sizeof(name) - 1);
    memcpy(name, "model.", 6);
    const char *d = test_tmpdir();
    put_mutated(d, &(mutation){.add = name, .nadd = 6});
    g_nwarn = 0;
    sala_log_set(capture_log, NULL);
    eng_model *m;
    sala_err e;
    int rc = eng_model_open(d, &m, &e);
    sala_log_set(NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(m->n_extra, 6);
    CU_ASSERT_EQUAL(m->n_params, SMALL_PARAMS);
    CU_ASSERT_EQUAL(g_nwarn, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(g_warn, "6 unexpected tensors"));
    eng_model_close(m);
}

static void t_sharded(void)
{
    const char *d = test_tmpdir();
    put_index(d, put_shards(d, SECOND, NULL));
    eng_model *m, *single;
    sala_err e;
    int rc = eng_model_open(d, &m, &e);
    if (rc) fprintf(stderr, "\n  sharded: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_model_open(base_dir(), &single, &e), SALA_OK);
    CU_ASSERT_EQUAL(m->nfiles, 2);
    CU_ASSERT_EQUAL(m->n_tensors, SMALL_TENSORS);
    CU_ASSERT_EQUAL(m->n_params, single->n_params);
    CU_ASSERT_EQUAL(m->n_extra, 0);
    /* Same bytes through either layout. */
    CU_ASSERT_EQUAL(m->lm_head->nbytes, single->lm_head->nbytes);
    CU_ASSERT_EQUAL(memcmp(m->lm_head->data, single->lm_head->data, single->lm_head->nbytes), 0);
    CU_ASSERT_EQUAL(memcmp(m->embed->data, single->embed->data, single->embed->nbytes), 0);
    eng_model_close(single);
    eng_model_close(m);
}

static void t_not_a_dir(void)
{
    eng_model *m;
    sala_err e;
    char p[4400];
    path_in(p, sizeof(p), base_dir(), "config.json");
    CU_ASSERT_EQUAL(eng_model_open(p, &m, &e), SALA_ENOTFOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not a directory"));
    path_in(p, sizeof(p), base_dir(), "nonexistent");
    CU_ASSERT_EQUAL(eng_model_open(p, &m, &e), SALA_ENOTFOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "No such file"));
}

static void t_cli_info(void)
{
    char cmd[9000], out[8192];
    snprintf(cmd, sizeof(cmd), "'%s' model info '%s'", test_bin(), test_shared("golden/models/tiny-a"));
    int rc = test_run(cmd, out, sizeof(out));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "layout       S L L S\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "parameters   5245952"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "tensors      49"));
    if (rc) fprintf(stderr, "\n  %s -> %d: %s\n", cmd, rc, out);

    const char *d = test_tmpdir();
    mk_missing_lm_head(d);
    snprintf(cmd, sizeof(cmd), "'%s' model info '%s'", test_bin(), d);
    rc = test_run(cmd, out, sizeof(out));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(strncmp(out, "sala: ", 6), 0);
    char *nl = strchr(out, '\n');
    CU_ASSERT_TRUE(nl && nl[1] == 0);                  /* exactly one line */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/model.safetensors: missing tensor 'lm_head.weight'"));
    if (rc != 1) fprintf(stderr, "\n  %s -> %d: %s\n", cmd, rc, out);

    d = test_tmpdir();
    mk_index_parent(d);
    snprintf(cmd, sizeof(cmd), "'%s' model info '%s'", test_bin(), d);
    rc = test_run(cmd, out, sizeof(out));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "not a plain file name"));
}

void suite_loader(void)
{
#define REG_CASE(id, code, s1, s2, s3) {"bad: " #id, t_bad_##id},
    SALA_ADD("loader", {"golden tiny-a loads", t_tiny_a}, {"small random model loads", t_small},
             {"extra tensor is a warning", t_extra_tensor},
             {"long extra names", t_extra_long_names}, {"two shards + index", t_sharded},
             {"not a directory", t_not_a_dir}, {"sala model info", t_cli_info},
             BAD_CASES(REG_CASE));
#undef REG_CASE
}
