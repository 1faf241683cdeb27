/* tokenizer.c: Hugging Face tokenizer.json (BPE with byte fallback) loader, encoder and decoder,
 * written to give the same ids and text as the `tokenizers` library (see tokenizer.h for the
 * supported subset; everything else is refused by name at load time).
 *
 * Invariants of a loaded tokenizer:
 * - every id in [0, n_ids) has at most one text; model vocabulary ids are in the vocab hash;
 *   added tokens that reuse a vocabulary id have the same text;
 * - every token text is valid UTF-8 with no NUL byte (so decoded text is valid UTF-8);
 * - every merge (a, b) has a, b and a+b in the vocabulary; the merge hash maps the id pair to
 *   (rank, merged id);
 * - the tokenizer is never written after tok_load returns (encode/decode are thread-safe).
 *
 * Encoding (tokenizers' AddedVocabulary + BPE::merge_word + Word::merge_all):
 *   1. added tokens split the input (leftmost-longest);
 *   2. each piece is normalized char by char straight into BPE symbols carrying the original
 *      byte span (normalizer steps are Prepend and one-character Replace, so a char maps to a
 *      fixed string, computed at load);
 *   3. a symbol whose id is in no merge can never change, so the piece is cut there into
 *      independent chunks (exact, and it keeps the heap small: "\n" is such a symbol here);
 *   4. each chunk is merged lowest rank first (ties: leftmost) with a binary heap of candidate
 *      pairs over a doubly linked list of symbols, stale heap entries skipped as HF does:
 *      O(n log n) in the chunk length. */
#include "ingest/tokenizer_int.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TOK_MAX_ID (1 << 24)               /* ids at or above are refused (table sizes) */
#define TOK_MAX_FILE ((size_t)512 << 20)   /* tokenizer.json size limit */
#define TOK_MAX_STR 4096                   /* longest token / pattern text accepted */

enum { ID_MODEL = 1, ID_ADDED = 2, ID_SPECIAL = 4, ID_MERGES = 8 };

/* Char classes for the chunk cut of step 3 (file comment): ASCII as itself, U+2581 "▁", and one
 * class for every other char, which is assumed to pair with anything. */
#define N_CLS 130
static inline uint8_t char_cls(uint32_t cp) { return cp < 128 ? (uint8_t)cp : cp == 0x2581 ? 128 : 129; }

typedef struct {
    uint32_t off, len;
} str_ref;

typedef struct {
    uint64_t key;   /* (a << 32) | b; EMPTY_KEY when free */
    uint32_t rank;
    int32_t new_id;
} merge_slot;
#define EMPTY_KEY UINT64_MAX

typedef struct {
    uint32_t cp;
    str_ref out;    /* the char after every Replace step */
} norm_map;

typedef struct {
    str_ref text;
    int32_t id;
    bool special;
} added_tok;

enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP };
typedef struct {
    int kind;
    str_ref pat, content;   /* Replace */
    str_ref strip_ch;       /* Strip: the char, as UTF-8 */
    size_t start, stop;     /* Strip */
} dec_step;

struct tok_tokenizer {
    char *arena;            /* every string the tokenizer keeps */
    size_t arena_len, arena_cap;
    int32_t n_ids;
    str_ref *id_str;        /* n_ids; len 0 and off UINT32_MAX: no token */
    uint8_t *id_flags;      /* n_ids; ID_* */
    uint32_t *vocab_slots;  /* model vocabulary: id + 1, 0 empty */
    size_t vocab_mask;
    merge_slot *merges;
    size_t merge_mask;
    int32_t *bmp_page[256]; /* id of a one-char token by BMP code point cp: bmp_page[cp >> 8]
                               [cp & 255], -1 none; a page with no such token is NULL */
    uint8_t *first_cls, *last_cls;   /* n_ids: class (see char_cls) of a token's first/last char */
    uint8_t bigram[N_CLS][N_CLS];    /* 1: some vocabulary token has char class a then b */
    int32_t byte_id[256];   /* <0xNN> ids, -1 absent */
    bool byte_fallback, all_bytes, fuse_unk, ignore_merges;
    int32_t unk_id;         /* -1 none */
    size_t max_token_len;
    /* normalizer */
    str_ref norm_prefix;    /* what the Prepend steps put in front of a non-empty piece */
    int16_t ascii_map[128]; /* index + 1 into maps, 0 identity */
    norm_map *maps;
    size_t n_maps;
    /* added tokens, longest first */
    added_tok *added;
    size_t n_added;
    bool has_nonspecial;
    uint8_t added_first[256];
    /* post-processor */
    int32_t *post_pre, *post_suf;
    size_t n_post_pre, n_post_suf;
    /* decoder */
    dec_step *dec;
    size_t n_dec;
};

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

size_t tok_utf8_len(const unsigned char *s, size_t n, size_t *bad)
{
    /* Unicode 15 §3.9 Table 3-7 (well-formed byte sequences). */
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

static uint32_t utf8_cp(const unsigned char *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0, bad;
    while (i < n) {
        size_t k = tok_utf8_len((const unsigned char *)s + i, n - i, &bad);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Arena and hashes */

static const char *S(const tok_tokenizer *t, str_ref r) { return t->arena + r.off; }

static int arena_add(tok_tokenizer *t, const char *s, size_t n, str_ref *out, sala_err *e)
{
    if (n > TOK_MAX_STR) return sala_errf(e, SALA_ERANGE, "string of %zu bytes is too long", n);
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1) {
            if (sala_mul_ovf(&cap, cap, 2) || cap > UINT32_MAX)
                return sala_errf(e, SALA_ERANGE, "token strings exceed 4 GiB");
        }
        char *a = realloc(t->arena, cap);
        if (!a) return sala_errf(e, SALA_ENOMEM, "out of memory (token strings)");
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, n);
    t->arena[t->arena_len + n] = 0;
    out->off = (uint32_t)t->arena_len;
    out->len = (uint32_t)n;
    t->arena_len += n + 1;
    return SALA_OK;
}

static uint64_t hash_str(const char *s, size_t n) { return XXH3_64bits(s, n); }

static inline int32_t bmp_get(const tok_tokenizer *t, uint32_t cp)
{
    const int32_t *pg = t->bmp_page[(cp >> 8) & 255];
    return pg ? pg[cp & 255] : -1;
}

static int32_t vocab_get(const tok_tokenizer *t, const char *s, size_t n)
{
    size_t i = (size_t)hash_str(s, n) & t->vocab_mask;
    for (;;) {
        uint32_t v = t->vocab_slots[i];
        if (!v) return -1;
        str_ref r = t->id_str[v - 1];
        if (r.len == n && memcmp(t->arena + r.off, s, n) == 0) return (int32_t)(v - 1);
        i = (i + 1) & t->vocab_mask;
    }
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static inline size_t pair_hash(uint64_t k)
{
    k *= 0x9E3779B97F4A7C15ull;   /* both ids must reach the low bits that index the table */
    return (size_t)(k ^ (k >> 29) ^ (k >> 41));
}

static inline const merge_slot *merge_get(const tok_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t k = pair_key(a, b);
    size_t i = pair_hash(k) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->key == k) return m;
        if (m->key == EMPTY_KEY) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Loading */

typedef struct {
    tok_tokenizer *t;
    const char *name;
    sala_err *e;
} loader;

static int bad(loader *L, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(loader *L, int code, const char *fmt, ...)
{
    char msg[SALA_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return sala_errf(L->e, code, "%s: %s", L->name, msg);
}

/* A JSON string field as (ptr, len); NULL with a message when absent or not a string. */
static const char *get_str(loader *L, const cJSON *o, const char *key, const char *where,
                           size_t *len, int *rc)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || !v->valuestring) {
        *rc = bad(L, SALA_EFORMAT, "%s.%s: %s", where, key, v ? "not a string" : "missing");
        return NULL;
    }
    *len = strlen(v->valuestring);
    return v->valuestring;
}

static bool json_is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* An integer id in [0, TOK_MAX_ID). */
static int get_id(loader *L, const cJSON *v, const char *what, int32_t *id)
{
    if (!cJSON_IsNumber(v))
        return bad(L, SALA_EFORMAT, "%s: id is not a number", what);
    double d = v->valuedouble;
    if (!(d >= 0 && d < TOK_MAX_ID) || d != (double)(int32_t)d)
        return bad(L, SALA_ERANGE, "%s: id %g is not an integer in [0, %d)", what, d, TOK_MAX_ID);
    *id = (int32_t)d;
    return SALA_OK;
}

static int check_bool(loader *L, const cJSON *o, const char *key, bool want, const char *where)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (json_is_null(v)) return SALA_OK;
    if (!cJSON_IsBool(v)) return bad(L, SALA_EFORMAT, "%s.%s: not a boolean", where, key);
    if (cJSON_IsTrue(v) != want)
        return bad(L, SALA_EUNSUP, "%s.%s = %s is not supported", where, key,
                   want ? "false" : "true");
    return SALA_OK;
}

static int get_bool(loader *L, const cJSON *o, const char *key, bool dflt, bool *out,
                    const char *where)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (json_is_null(v)) {
        *out = dflt;
        return SALA_OK;
    }
    if (!cJSON_IsBool(v)) return bad(L, SALA_EFORMAT, "%s.%s: not a boolean", where, key);
    *out = cJSON_IsTrue(v);
    return SALA_OK;
}

static int set_id_text(loader *L, int32_t id, const char *s, size_t n, uint8_t flag,
                       const char *what)
{
    tok_tokenizer *t = L->t;
    if (id >= t->n_ids) return bad(L, SALA_EINTERNAL, "%s: id %d past table", what, (int)id);
    str_ref *r = &t->id_str[id];
    if (r->off != UINT32_MAX) {
        if (r->len != n || memcmp(S(t, *r), s, n) != 0)
            return bad(L, SALA_EFORMAT, "%s: id %d is both '%.*s' and '%.*s'", what, (int)id,
                       (int)SALA_MIN(r->len, 64u), S(t, *r), (int)SALA_MIN(n, (size_t)64), s);
        if (t->id_flags[id] & flag)
            return bad(L, SALA_EFORMAT, "%s: duplicate token '%.*s' (id %d)", what,
                       (int)SALA_MIN(n, (size_t)64), s, (int)id);
        t->id_flags[id] |= flag;
        return SALA_OK;
    }
    if (!n) return bad(L, SALA_EFORMAT, "%s: id %d has an empty token", what, (int)id);
    if (memchr(s, 0, n) || !utf8_valid(s, n))
        return bad(L, SALA_EFORMAT, "%s: token of id %d is not valid UTF-8", what, (int)id);
    int rc = arena_add(t, s, n, r, L->e);
    if (rc) return rc;
    t->id_flags[id] |= flag;
    return SALA_OK;
}

static int load_vocab(loader *L, const cJSON *model, const cJSON *added, size_t *n_vocab)
{
    tok_tokenizer *t = L->t;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return bad(L, SALA_EFORMAT, "model.vocab: missing or not an object");
    int32_t max_id = -1;
    size_t n = 0;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        int32_t id;
        int rc = get_id(L, v, "model.vocab", &id);
        if (rc) return rc;
        if (id > max_id) max_id = id;
        n++;
    }
    if (!n) return bad(L, SALA_EFORMAT, "model.vocab: empty");
    if (cJSON_IsArray(added)) {
        for (const cJSON *a = added->child; a; a = a->next) {
            int32_t id;
            int rc = get_id(L, cJSON_GetObjectItemCaseSensitive(a, "id"), "added_tokens", &id);
            if (rc) return rc;
            if (id > max_id) max_id = id;
        }
    }
    t->n_ids = max_id + 1;
    t->id_str = malloc((size_t)t->n_ids * sizeof(*t->id_str));
    t->id_flags = calloc((size_t)t->n_ids, 1);
    size_t slots = 1;
    while (slots < 2 * n) slots *= 2;
    t->vocab_slots = calloc(slots, sizeof(uint32_t));
    t->vocab_mask = slots - 1;
    if (!t->id_str || !t->id_flags || !t->vocab_slots)
        return bad(L, SALA_ENOMEM, "out of memory (vocabulary of %zu)", n);
    for (int32_t i = 0; i < t->n_ids; i++) t->id_str[i] = (str_ref){UINT32_MAX, 0};
    for (const cJSON *v = vocab->child; v; v = v->next) {
        int32_t id = (int32_t)v->valuedouble;
        const char *s = v->string ? v->string : "";
        size_t len = strlen(s);
        if (vocab_get(t, s, len) >= 0)
            return bad(L, SALA_EFORMAT, "model.vocab: duplicate token '%.*s'",
                       (int)SALA_MIN(len, (size_t)64), s);
        if (t->id_str[id].off != UINT32_MAX)
            return bad(L, SALA_EFORMAT, "model.vocab: id %d is both '%.*s' and '%.*s'", (int)id,
                       (int)SALA_MIN(t->id_str[id].len, 64u), S(t, t->id_str[id]),
                       (int)SALA_MIN(len, (size_t)64), s);
        int rc = set_id_text(L, id, s, len, ID_MODEL, "model.vocab");
        if (rc) return rc;
        size_t i = (size_t)hash_str(s, len) & t->vocab_mask;
        while (t->vocab_slots[i]) i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = (uint32_t)id + 1;
        if (len > t->max_token_len) t->max_token_len = len;
    }
    *n_vocab = n;
    return SALA_OK;
}

static int load_merges(loader *L, const cJSON *model)
{
    tok_tokenizer *t = L->t;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return bad(L, SALA_EFORMAT, "model.merges: missing or not an array");
    size_t n = 0;
    for (const cJSON *m = merges->child; m; m = m->next) n++;
    if (n >= INT32_MAX) return bad(L, SALA_ERANGE, "model.merges: %zu merges", n);
    size_t slots = 16;
    while (slots < 2 * n) slots *= 2;
    t->merges = malloc(slots * sizeof(*t->merges));
    if (!t->merges) return bad(L, SALA_ENOMEM, "out of memory (%zu merges)", n);
    for (size_t i = 0; i < slots; i++) t->merges[i].key = EMPTY_KEY;
    t->merge_mask = slots - 1;
    char buf[2 * TOK_MAX_STR + 2];
    size_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(m) && m->valuestring) {
            /* "a b": exactly one space (tokenizers: split(' ') must give two parts) */
            const char *s = m->valuestring;
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return bad(L, SALA_EFORMAT, "model.merges[%zu]: '%.64s' is not \"a b\"", rank, s);
            a = s;
            la = (size_t)(sp - s);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            return bad(L, SALA_EFORMAT, "model.merges[%zu]: not a string \"a b\" nor a pair", rank);
        }
        int32_t ia = vocab_get(t, a, la), ib = vocab_get(t, b, lb);
        if (ia < 0 || ib < 0)
            return bad(L, SALA_EFORMAT, "model.merges[%zu]: token '%.*s' is not in the vocabulary",
                       rank, (int)SALA_MIN(ia < 0 ? la : lb, (size_t)64), ia < 0 ? a : b);
        if (la + lb > sizeof(buf))
            return bad(L, SALA_EFORMAT, "model.merges[%zu]: merged token too long", rank);
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ic = vocab_get(t, buf, la + lb);
        if (ic < 0)
            return bad(L, SALA_EFORMAT, "model.merges[%zu]: merged token '%.*s' is not in the "
                       "vocabulary", rank, (int)SALA_MIN(la + lb, (size_t)64), buf);
        uint64_t k = pair_key(ia, ib);
        size_t i = pair_hash(k) & t->merge_mask;
        while (t->merges[i].key != EMPTY_KEY) {
            if (t->merges[i].key == k)
                return bad(L, SALA_EFORMAT, "model.merges[%zu]: duplicate of merges[%u] ('%.*s' "
                           "'%.*s')", rank, t->merges[i].rank, (int)SALA_MIN(la, (size_t)64), a,
                           (int)SALA_MIN(lb, (size_t)64), b);
            i = (i + 1) & t->merge_mask;
        }
        t->merges[i] = (merge_slot){k, (uint32_t)rank, ic};
        t->id_flags[ia] |= ID_MERGES;
        t->id_flags[ib] |= ID_MERGES;
    }
    return SALA_OK;
}

static int load_model(loader *L, const cJSON *root, const cJSON *added)
{
    tok_tokenizer *t = L->t;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return bad(L, SALA_EFORMAT, "model: missing or not an object");
    int rc;
    size_t len;
    const char *type = get_str(L, model, "type", "model", &len, &rc);
    if (!type) return rc;
    if (strcmp(type, "BPE") != 0)
        return bad(L, SALA_EUNSUP, "model.type '%.64s' is not supported (only BPE)", type);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!json_is_null(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0.0))
        return bad(L, SALA_EUNSUP, "model.dropout must be null or 0 (BPE dropout is random)");
    static const char *const none_keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < SALA_ARRAY_LEN(none_keys); i++) {
        v = cJSON_GetObjectItemCaseSensitive(model, none_keys[i]);
        if (!json_is_null(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return bad(L, SALA_EUNSUP, "model.%s is not supported (must be null)", none_keys[i]);
    }
    if ((rc = get_bool(L, model, "byte_fallback", false, &t->byte_fallback, "model")) ||
        (rc = get_bool(L, model, "fuse_unk", false, &t->fuse_unk, "model")) ||
        (rc = get_bool(L, model, "ignore_merges", false, &t->ignore_merges, "model")))
        return rc;
    size_t n_vocab;
    if ((rc = load_vocab(L, model, added, &n_vocab))) return rc;
    t->unk_id = -1;
    v = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (!json_is_null(v)) {
        if (!cJSON_IsString(v)) return bad(L, SALA_EFORMAT, "model.unk_token: not a string");
        t->unk_id = vocab_get(t, v->valuestring, strlen(v->valuestring));
        if (t->unk_id < 0)
            return bad(L, SALA_EFORMAT, "model.unk_token '%.64s' is not in the vocabulary",
                       v->valuestring);
    }
    t->all_bytes = true;
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        t->byte_id[b] = vocab_get(t, name, 6);
        if (t->byte_id[b] < 0) t->all_bytes = false;
    }
    t->first_cls = calloc((size_t)t->n_ids, 1);
    t->last_cls = calloc((size_t)t->n_ids, 1);
    if (!t->first_cls || !t->last_cls) return bad(L, SALA_ENOMEM, "out of memory");
    for (int c = 0; c < N_CLS; c++) t->bigram[c][129] = t->bigram[129][c] = 1;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->id_flags[id] & ID_MODEL)) continue;
        const unsigned char *s = (const unsigned char *)S(t, t->id_str[id]);
        size_t n = t->id_str[id].len, bad_len, k = tok_utf8_len(s, n, &bad_len);
        if (k == n && k < 4) {
            uint32_t cp = utf8_cp(s, k);
            int32_t **pg = &t->bmp_page[cp >> 8];
            if (!*pg) {
                *pg = malloc(256 * sizeof(int32_t));
                if (!*pg) return bad(L, SALA_ENOMEM, "out of memory");
                memset(*pg, 0xFF, 256 * sizeof(int32_t));   /* every entry -1 */
            }
            (*pg)[cp & 255] = id;
        }
        uint8_t prev = 0;
        for (size_t i = 0; i < n; i += k) {   /* vocabulary texts are valid UTF-8 */
            k = tok_utf8_len(s + i, n - i, &bad_len);
            uint8_t c = char_cls(utf8_cp(s + i, k));
            if (i) t->bigram[prev][c] = 1;
            else t->first_cls[id] = c;
            prev = c;
        }
        t->last_cls[id] = prev;
    }
    return load_merges(L, model);
}

/* Apply "replace every pat by content" to s; result in the arena. */
static int str_replace(loader *L, str_ref s, str_ref pat, str_ref content, str_ref *out)
{
    tok_tokenizer *t = L->t;
    char buf[TOK_MAX_STR];
    size_t n = 0;
    for (size_t i = 0; i < s.len;) {
        size_t take;
        const char *src;
        if (pat.len && i + pat.len <= s.len && !memcmp(S(t, s) + i, S(t, pat), pat.len)) {
            src = S(t, content);
            take = content.len;
            i += pat.len;
        } else {
            src = S(t, s) + i;
            take = 1;
            i++;
        }
        if (n + take > sizeof(buf)) return bad(L, SALA_ERANGE, "normalizer: replacement too long");
        memcpy(buf + n, src, take);
        n += take;
    }
    return arena_add(t, buf, n, out, L->e);
}

typedef struct {
    bool prepend;
    str_ref a, b;   /* prepend: a; replace: pattern a, content b */
} norm_step;

static int norm_collect(loader *L, const cJSON *n, norm_step *steps, size_t *ns, int depth)
{
    int rc;
    size_t len;
    if (depth > 4) return bad(L, SALA_EUNSUP, "normalizer: Sequence nested too deep");
    if (!cJSON_IsObject(n)) return bad(L, SALA_EFORMAT, "normalizer: not an object");
    const char *type = get_str(L, n, "type", "normalizer", &len, &rc);
    if (!type) return rc;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return bad(L, SALA_EFORMAT, "normalizer.normalizers: missing or not an array");
        for (const cJSON *c = list->child; c; c = c->next)
            if ((rc = norm_collect(L, c, steps, ns, depth + 1))) return rc;
        return SALA_OK;
    }
    if (*ns >= 16) return bad(L, SALA_EUNSUP, "normalizer: more than 16 steps");
    norm_step *st = &steps[*ns];
    if (!strcmp(type, "Prepend")) {
        const char *p = get_str(L, n, "prepend", "normalizer(Prepend)", &len, &rc);
        if (!p) return rc;
        if (!utf8_valid(p, len)) return bad(L, SALA_EFORMAT, "normalizer(Prepend): bad UTF-8");
        st->prepend = true;
        if ((rc = arena_add(L->t, p, len, &st->a, L->e))) return rc;
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        if (!cJSON_IsObject(pat)) return bad(L, SALA_EFORMAT, "normalizer(Replace).pattern: missing");
        if (cJSON_GetObjectItemCaseSensitive(pat, "Regex"))
            return bad(L, SALA_EUNSUP, "normalizer(Replace): Regex patterns are not supported");
        const char *p = get_str(L, pat, "String", "normalizer(Replace).pattern", &len, &rc);
        if (!p) return rc;
        size_t badl;
        if (!len || tok_utf8_len((const unsigned char *)p, len, &badl) != len)
            return bad(L, SALA_EUNSUP, "normalizer(Replace): pattern '%.64s' is not one character "
                       "(only one-character patterns are supported)", p);
        st->prepend = false;
        if ((rc = arena_add(L->t, p, len, &st->a, L->e))) return rc;
        const char *c = get_str(L, n, "content", "normalizer(Replace)", &len, &rc);
        if (!c) return rc;
        if (!utf8_valid(c, len)) return bad(L, SALA_EFORMAT, "normalizer(Replace): bad UTF-8");
        if (!len) return bad(L, SALA_EUNSUP, "normalizer(Replace): empty content is not supported");
        if ((rc = arena_add(L->t, c, len, &st->b, L->e))) return rc;
    } else {
        return bad(L, SALA_EUNSUP, "normalizer '%.64s' is not supported (only Prepend, Replace, "
                   "Sequence)", type);
    }
    (*ns)++;
    return SALA_OK;
}

/* Prepend steps apply to non-empty text only (tokenizers' Prepend), and Replace here never
 * empties text, so the whole sequence is: prefix + per-char map, both computed now. */
static int load_normalizer(loader *L, const cJSON *root)
{
    tok_tokenizer *t = L->t;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    t->norm_prefix = (str_ref){0, 0};
    if (json_is_null(n)) return SALA_OK;
    norm_step steps[16];
    size_t ns = 0;
    int rc = norm_collect(L, n, steps, &ns, 0);
    if (rc) return rc;
    str_ref prefix;
    if ((rc = arena_add(t, "", 0, &prefix, L->e))) return rc;
    for (size_t i = 0; i < ns; i++) {
        if (steps[i].prepend) {
            char buf[TOK_MAX_STR];
            if (steps[i].a.len + prefix.len > sizeof(buf))
                return bad(L, SALA_ERANGE, "normalizer: prepended text too long");
            memcpy(buf, S(t, steps[i].a), steps[i].a.len);
            memcpy(buf + steps[i].a.len, S(t, prefix), prefix.len);
            if ((rc = arena_add(t, buf, steps[i].a.len + prefix.len, &prefix, L->e))) return rc;
        } else {
            if ((rc = str_replace(L, prefix, steps[i].a, steps[i].b, &prefix))) return rc;
            for (size_t m = 0; m < t->n_maps; m++)
                if ((rc = str_replace(L, t->maps[m].out, steps[i].a, steps[i].b, &t->maps[m].out)))
                    return rc;
            const unsigned char *p = (const unsigned char *)S(t, steps[i].a);
            uint32_t cp = utf8_cp(p, steps[i].a.len);
            bool known = false;
            for (size_t m = 0; m < t->n_maps; m++) known |= t->maps[m].cp == cp;
            if (!known) {
                /* the char has not been rewritten by an earlier step: it maps through the
                 * remaining steps starting from this one */
                norm_map *nm = realloc(t->maps, (t->n_maps + 1) * sizeof(*nm));
                if (!nm) return bad(L, SALA_ENOMEM, "out of memory");
                t->maps = nm;
                nm[t->n_maps].cp = cp;
                nm[t->n_maps].out = steps[i].b;
                if (cp < 128) t->ascii_map[cp] = (int16_t)(t->n_maps + 1);
                t->n_maps++;
            }
        }
    }
    t->norm_prefix = prefix;
    return SALA_OK;
}

static int cmp_added(const void *a, const void *b)
{
    const added_tok *x = a, *y = b;
    if (x->text.len != y->text.len) return x->text.len > y->text.len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int load_added(loader *L, const cJSON *added)
{
    tok_tokenizer *t = L->t;
    if (json_is_null(added)) return SALA_OK;
    if (!cJSON_IsArray(added)) return bad(L, SALA_EFORMAT, "added_tokens: not an array");
    size_t n = (size_t)cJSON_GetArraySize(added);
    t->added = calloc(n ? n : 1, sizeof(*t->added));
    if (!t->added) return bad(L, SALA_ENOMEM, "out of memory");
    size_t i = 0;
    for (const cJSON *a = added->child; a; a = a->next, i++) {
        char where[64];
        snprintf(where, sizeof(where), "added_tokens[%zu]", i);
        if (!cJSON_IsObject(a)) return bad(L, SALA_EFORMAT, "%s: not an object", where);
        int rc;
        size_t len;
        const char *c = get_str(L, a, "content", where, &len, &rc);
        if (!c) return rc;
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble;
        bool special;
        if ((rc = get_bool(L, a, "special", false, &special, where)) ||
            (rc = check_bool(L, a, "lstrip", false, where)) ||
            (rc = check_bool(L, a, "rstrip", false, where)) ||
            (rc = check_bool(L, a, "single_word", false, where)))
            return rc;
        bool normalized;
        if ((rc = get_bool(L, a, "normalized", !special, &normalized, where))) return rc;
        if (normalized && !special)
            return bad(L, SALA_EUNSUP, "%s '%.64s': normalized = true is not supported", where, c);
        for (size_t j = 0; j < i; j++)
            if (t->added[j].text.len == len && !memcmp(S(t, t->added[j].text), c, len))
                return bad(L, SALA_EFORMAT, "%s: duplicate added token '%.64s'", where, c);
        if ((rc = set_id_text(L, id, c, len, ID_ADDED, where))) return rc;
        if (special) t->id_flags[id] |= ID_SPECIAL;
        int32_t vid = vocab_get(t, c, len);
        if (vid >= 0 && vid != id)
            return bad(L, SALA_EFORMAT, "%s '%.64s': id %d but the vocabulary says %d", where, c,
                       (int)id, (int)vid);
        t->added[i] = (added_tok){t->id_str[id], id, special};
        if (!special) t->has_nonspecial = true;
        t->added_first[(unsigned char)c[0]] = 1;
    }
    t->n_added = i;
    qsort(t->added, t->n_added, sizeof(*t->added), cmp_added);
    return SALA_OK;
}

static int load_post(loader *L, const cJSON *root)
{
    tok_tokenizer *t = L->t;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (json_is_null(p)) return SALA_OK;
    int rc;
    size_t len;
    const char *type = get_str(L, p, "type", "post_processor", &len, &rc);
    if (!type) return rc;
    if (strcmp(type, "TemplateProcessing") != 0)
        return bad(L, SALA_EUNSUP, "post_processor '%.64s' is not supported (only "
                   "TemplateProcessing)", type);
    /* Only the "single" template is used: sala never encodes sentence pairs. */
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single)) return bad(L, SALA_EFORMAT, "post_processor.single: not an array");
    size_t n = (size_t)cJSON_GetArraySize(single), total = 0;
    int32_t *ids = NULL;
    bool seen_a = false;
    size_t n_pre = 0;
    for (const cJSON *it = single->child; it; it = it->next) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (seq) {
            const cJSON *sid = cJSON_GetObjectItemCaseSensitive(seq, "id");
            if (seen_a || !cJSON_IsString(sid) || strcmp(sid->valuestring, "A") != 0) {
                free(ids);
                return bad(L, SALA_EUNSUP, "post_processor.single: exactly one Sequence \"A\" "
                           "is supported");
            }
            seen_a = true;
            n_pre = total;
            continue;
        }
        const cJSON *name = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
        const cJSON *st = cJSON_IsString(name) ? cJSON_GetObjectItemCaseSensitive(specials,
                                                                                  name->valuestring)
                                               : NULL;
        const cJSON *list = st ? cJSON_GetObjectItemCaseSensitive(st, "ids") : NULL;
        if (!cJSON_IsArray(list)) {
            free(ids);
            return bad(L, SALA_EFORMAT, "post_processor.single: item is not a SpecialToken "
                       "listed in special_tokens with ids");
        }
        for (const cJSON *x = list->child; x; x = x->next) {
            int32_t id;
            if ((rc = get_id(L, x, "post_processor.special_tokens", &id))) {
                free(ids);
                return rc;
            }
            if (id >= t->n_ids || t->id_str[id].off == UINT32_MAX) {
                free(ids);
                return bad(L, SALA_EFORMAT, "post_processor: id %d is not a token", (int)id);
            }
            if (total >= 64) {
                free(ids);
                return bad(L, SALA_EUNSUP, "post_processor: more than 64 template tokens");
            }
            int32_t *ni = realloc(ids, (total + 1) * sizeof(*ids));
            if (!ni) {
                free(ids);
                return bad(L, SALA_ENOMEM, "out of memory");
            }
            ids = ni;
            ids[total++] = id;
        }
    }
    (void)n;
    if (!seen_a) {
        free(ids);
        return bad(L, SALA_EFORMAT, "post_processor.single: no Sequence \"A\"");
    }
    t->n_post_pre = n_pre;
    t->n_post_suf = total - n_pre;
    t->post_pre = ids;
    t->post_suf = ids ? ids + n_pre : NULL;
    return SALA_OK;
}

static int dec_collect(loader *L, const cJSON *d, int depth, bool *fused)
{
    tok_tokenizer *t = L->t;
    int rc;
    size_t len;
    if (depth > 4) return bad(L, SALA_EUNSUP, "decoder: Sequence nested too deep");
    if (!cJSON_IsObject(d)) return bad(L, SALA_EFORMAT, "decoder: not an object");
    const char *type = get_str(L, d, "type", "decoder", &len, &rc);
    if (!type) return rc;
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (!cJSON_IsArray(list)) return bad(L, SALA_EFORMAT, "decoder.decoders: not an array");
        for (const cJSON *c = list->child; c; c = c->next)
            if ((rc = dec_collect(L, c, depth + 1, fused))) return rc;
        return SALA_OK;
    }
    if (t->n_dec >= 16) return bad(L, SALA_EUNSUP, "decoder: more than 16 steps");
    dec_step st = {0};
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(d, "pattern");
        if (!cJSON_IsObject(pat)) return bad(L, SALA_EFORMAT, "decoder(Replace).pattern: missing");
        if (cJSON_GetObjectItemCaseSensitive(pat, "Regex"))
            return bad(L, SALA_EUNSUP, "decoder(Replace): Regex patterns are not supported");
        const char *p = get_str(L, pat, "String", "decoder(Replace).pattern", &len, &rc);
        if (!p) return rc;
        size_t badl;
        if (!len || !utf8_valid(p, len)) return bad(L, SALA_EFORMAT, "decoder(Replace): bad pattern");
        if (*fused && tok_utf8_len((const unsigned char *)p, len, &badl) != len)
            return bad(L, SALA_EUNSUP, "decoder(Replace) after Fuse with a pattern of more than "
                       "one character is not supported (streaming)");
        st.kind = DEC_REPLACE;
        if ((rc = arena_add(t, p, len, &st.pat, L->e))) return rc;
        const char *c = get_str(L, d, "content", "decoder(Replace)", &len, &rc);
        if (!c) return rc;
        if (!utf8_valid(c, len)) return bad(L, SALA_EFORMAT, "decoder(Replace): bad UTF-8");
        if ((rc = arena_add(t, c, len, &st.content, L->e))) return rc;
    } else if (!strcmp(type, "ByteFallback")) {
        if (*fused) return bad(L, SALA_EUNSUP, "decoder: ByteFallback after Fuse is not supported");
        for (size_t i = 0; i < t->n_dec; i++)
            if (t->dec[i].kind == DEC_BYTEFALLBACK)
                return bad(L, SALA_EUNSUP, "decoder: two ByteFallback steps are not supported");
        st.kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        st.kind = DEC_FUSE;
        *fused = true;
    } else if (!strcmp(type, "Strip")) {
        const char *c = get_str(L, d, "content", "decoder(Strip)", &len, &rc);
        if (!c) return rc;
        size_t badl;
        if (!len || tok_utf8_len((const unsigned char *)c, len, &badl) != len)
            return bad(L, SALA_EFORMAT, "decoder(Strip).content: not one character");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 ||
            b->valuedouble < 0 || a->valuedouble > 1e6 || b->valuedouble > 1e6 ||
            a->valuedouble != (double)(int)a->valuedouble ||
            b->valuedouble != (double)(int)b->valuedouble)
            return bad(L, SALA_EFORMAT, "decoder(Strip): start/stop not integers in [0, 1e6]");
        st.kind = DEC_STRIP;
        st.start = (size_t)a->valuedouble;
        st.stop = (size_t)b->valuedouble;
        if ((rc = arena_add(t, c, len, &st.strip_ch, L->e))) return rc;
    } else {
        return bad(L, SALA_EUNSUP, "decoder '%.64s' is not supported (only Replace, ByteFallback, "
                   "Fuse, Strip, Sequence)", type);
    }
    t->dec[t->n_dec++] = st;
    return SALA_OK;
}

static int load_decoder(loader *L, const cJSON *root)
{
    tok_tokenizer *t = L->t;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (json_is_null(d))
        return bad(L, SALA_EUNSUP, "decoder: null is not supported (need Replace/ByteFallback/"
                   "Fuse/Strip)");
    t->dec = calloc(16, sizeof(*t->dec));
    if (!t->dec) return bad(L, SALA_ENOMEM, "out of memory");
    bool fused = false;
    return dec_collect(L, d, 0, &fused);
}

static int load_json(loader *L, const cJSON *root)
{
    if (!cJSON_IsObject(root)) return bad(L, SALA_EFORMAT, "not a JSON object");
    static const char *const must_null[] = {"pre_tokenizer", "truncation", "padding"};
    for (size_t i = 0; i < SALA_ARRAY_LEN(must_null); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, must_null[i]);
        if (!json_is_null(v)) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(v, "type");
            return bad(L, SALA_EUNSUP, "%s%s%s is not supported (must be null)", must_null[i],
                       cJSON_IsString(ty) ? " " : "", cJSON_IsString(ty) ? ty->valuestring : "");
        }
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (cJSON_IsArray(added)) {
        size_t i = 0;
        for (const cJSON *a = added->child; a; a = a->next, i++)
            if (!cJSON_IsObject(a) || !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(a, "id")))
                return bad(L, SALA_EFORMAT, "added_tokens[%zu]: not an object with a numeric id", i);
    }
    int rc;
    if ((rc = load_model(L, root, added)) || (rc = load_normalizer(L, root)) ||
        (rc = load_added(L, added)) || (rc = load_post(L, root)) || (rc = load_decoder(L, root)))
        return rc;
    return SALA_OK;
}

int tok_load_buffer(const char *json, size_t len, const char *name, tok_tokenizer **out,
                    sala_err *e)
{
    *out = NULL;
    if (!name) name = "tokenizer.json";
    tok_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return sala_errf(e, SALA_ENOMEM, "%s: out of memory", name);
    loader L = {t, name, e};
    bool oom;
    cJSON *root = sala_json_parse(json, len, NULL, &oom);
    int rc;
    if (!root && oom) {
        rc = bad(&L, SALA_ENOMEM, "out of memory");
    } else if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
        rc = bad(&L, SALA_EFORMAT, "not valid JSON (near byte %zu)", off);
    } else {
        rc = load_json(&L, root);
    }
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return SALA_OK;
}

int tok_load(const char *path, tok_tokenizer **out, sala_err *e)
{
    char *buf;
    size_t len;
    *out = NULL;
    int rc = sala_file_read(path, TOK_MAX_FILE, &buf, &len, e);
    if (rc) return rc;
    rc = tok_load_buffer(buf, len, path, out, e);
    free(buf);
    return rc;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    free(t->arena);
    free(t->id_str);
    free(t->id_flags);
    free(t->vocab_slots);
    free(t->merges);
    for (size_t i = 0; i < 256; i++) free(t->bmp_page[i]);
    free(t->first_cls);
    free(t->last_cls);
    free(t->maps);
    free(t->added);
    free(t->post_pre);
    free(t->dec);
    free(t);
}

/* ---------------------------------------------------------------------------------------- */
/* Lookups */

int32_t tok_vocab_size(const tok_tokenizer *t) { return t->n_ids; }

const char *tok_token_text(const tok_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || t->id_str[id].off == UINT32_MAX) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->id_str[id].len;
    return S(t, t->id_str[id]);
}

int32_t tok_token_id(const tok_tokenizer *t, const char *text, size_t len)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].text.len == len && !memcmp(S(t, t->added[i].text), text, len))
            return t->added[i].id;
    return vocab_get(t, text, len);
}

bool tok_token_is_special(const tok_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & ID_SPECIAL);
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding */

int tok_ids_reserve(tok_ids *out, size_t more, unsigned flags, sala_err *e)
{
    size_t need;
    if (sala_add_ovf(&need, out->n, more)) return sala_errf(e, SALA_ERANGE, "too many tokens");
    bool spans = flags & TOK_SPANS;
    if (need <= out->cap && (!spans || out->spans)) return SALA_OK;
    size_t cap = out->cap > 64 ? out->cap : 64;
    while (cap < need) {
        if (sala_mul_ovf(&cap, cap, 2)) return sala_errf(e, SALA_ERANGE, "too many tokens");
    }
    size_t bytes;
    if (sala_mul_ovf(&bytes, cap, sizeof(tok_span))) return sala_errf(e, SALA_ERANGE, "too many tokens");
    int32_t *ids = realloc(out->ids, cap * sizeof(int32_t));
    if (!ids) return sala_errf(e, SALA_ENOMEM, "out of memory (%zu tokens)", cap);
    out->ids = ids;
    if (spans || out->spans) {
        tok_span *sp = realloc(out->spans, bytes);
        if (!sp) return sala_errf(e, SALA_ENOMEM, "out of memory (%zu tokens)", cap);
        /* spans of tokens appended earlier without TOK_SPANS are unknown: mark them empty */
        if (!out->spans) memset(sp, 0, out->n * sizeof(tok_span));
        out->spans = sp;
    }
    out->cap = cap;
    return SALA_OK;
}

void tok_ids_free(tok_ids *ids)
{
    if (!ids) return;
    free(ids->ids);
    free(ids->spans);
    ids->ids = NULL;
    ids->spans = NULL;
    ids->n = ids->cap = 0;
}

typedef struct {
    uint64_t key;   /* rank << 32 | position */
    int32_t a, b;   /* the pair when pushed */
    int32_t new_id;
} heap_ent;

/* Per-call cache of chunk results (tokenizers keeps a word cache too): key = the chunk's initial
 * symbol ids, value = the merged ids, each with how many initial symbols it covers, so that
 * spans can be rebuilt. Chunks of 2..CACHE_MAX_SYMS symbols only; stops filling when full. */
#define CACHE_MAX_SYMS 48
typedef struct {
    uint64_t hash;
    uint32_t off;            /* into data: n_in ids, then n_out (id, count) pairs */
    uint16_t n_in, n_out;
} cache_ent;

/* Per-call scratch: symbols of the current chunk, the merge heap and the chunk cache. */
typedef struct {
    const tok_tokenizer *t;
    tok_ids *out;
    unsigned flags;
    sala_err *e;
    int32_t *id;
    uint32_t *start, *end;
    int32_t *prev, *next;
    size_t n, cap;
    heap_ent *heap;
    size_t hn, hcap;
    cache_ent *cache;
    size_t cache_mask, cache_used;
    int32_t *cdata;
    size_t cdata_n, cdata_cap;
    size_t text_len;
    bool unk_pending;
    uint32_t unk_start, unk_end;
} bpe_ctx;

static int ctx_grow(bpe_ctx *c)
{
    size_t cap = c->cap ? c->cap * 2 : 1024;
    if (cap > (size_t)INT32_MAX)
        return sala_errf(c->e, SALA_ERANGE, "a run of %zu symbols is too long", c->cap);
    int32_t *id = realloc(c->id, cap * sizeof(int32_t));
    if (id) c->id = id;
    uint32_t *s = realloc(c->start, cap * sizeof(uint32_t));
    if (s) c->start = s;
    uint32_t *en = realloc(c->end, cap * sizeof(uint32_t));
    if (en) c->end = en;
    int32_t *p = realloc(c->prev, cap * sizeof(int32_t));
    if (p) c->prev = p;
    int32_t *nx = realloc(c->next, cap * sizeof(int32_t));
    if (nx) c->next = nx;
    if (!id || !s || !en || !p || !nx) return sala_errf(c->e, SALA_ENOMEM, "out of memory");
    c->cap = cap;
    return SALA_OK;
}

static void ctx_free(bpe_ctx *c)
{
    free(c->id);
    free(c->start);
    free(c->end);
    free(c->prev);
    free(c->next);
    free(c->heap);
    free(c->cache);
    free(c->cdata);
}

static int emit(bpe_ctx *c, int32_t id, uint32_t s, uint32_t e)
{
    tok_ids *o = c->out;
    if (c->flags & TOK_SPANS) o->spans[o->n] = (tok_span){s, e};
    o->ids[o->n++] = id;
    return SALA_OK;
}

/* Look the chunk up; on a hit append its tokens and return true. *slot gets where to insert. */
static bool cache_get(bpe_ctx *c, uint64_t h, size_t *slot)
{
    if (!c->cache) {
        size_t slots = 64;
        while (slots < c->text_len / 8 && slots < (1u << 16)) slots *= 2;
        c->cache = calloc(slots, sizeof(cache_ent));
        if (!c->cache) return false;   /* no cache: still correct, only slower */
        c->cache_mask = slots - 1;
    }
    size_t n = c->n;
    for (size_t i = (size_t)h & c->cache_mask;; i = (i + 1) & c->cache_mask) {
        cache_ent *ce = &c->cache[i];
        if (!ce->n_in) {
            *slot = i;
            return false;
        }
        if (ce->hash != h || ce->n_in != n || memcmp(c->cdata + ce->off, c->id, n * 4) != 0)
            continue;
        const int32_t *out = c->cdata + ce->off + n;
        size_t k = 0;
        for (size_t j = 0; j < ce->n_out; j++) {
            size_t cnt = (size_t)out[2 * j + 1];
            emit(c, out[2 * j], c->start[k], c->end[k + cnt - 1]);
            k += cnt;
        }
        return true;
    }
}

/* Remember the chunk just merged: c->id[] holds the merged ids at their first symbol, -1 else;
 * in[] the initial ids. */
static void cache_put(bpe_ctx *c, size_t slot, uint64_t h, const int32_t *in, size_t n_out)
{
    size_t n = c->n, need = n + 2 * n_out;
    if (!c->cache || c->cache_used * 2 >= c->cache_mask) return;
    if (c->cdata_n + need > c->cdata_cap) {
        size_t cap = c->cdata_cap ? c->cdata_cap * 2 : 4096;
        while (cap < c->cdata_n + need) cap *= 2;
        if (cap > ((size_t)1 << 24)) return;
        int32_t *d = realloc(c->cdata, cap * sizeof(int32_t));
        if (!d) return;
        c->cdata = d;
        c->cdata_cap = cap;
    }
    int32_t *d = c->cdata + c->cdata_n;
    memcpy(d, in, n * 4);
    int32_t *o = d + n;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->id[i] < 0) continue;
        size_t k = i + 1;
        while (k < n && c->id[k] < 0) k++;
        o[2 * j] = c->id[i];
        o[2 * j + 1] = (int32_t)(k - i);
        j++;
    }
    c->cache[slot] = (cache_ent){h, (uint32_t)c->cdata_n, (uint16_t)n, (uint16_t)n_out};
    c->cdata_n += need;
    c->cache_used++;
}

static int heap_push(bpe_ctx *c, uint64_t key, int32_t a, int32_t b, int32_t new_id)
{
    if (c->hn == c->hcap) {
        size_t cap = c->hcap ? c->hcap * 2 : 1024;
        heap_ent *h = realloc(c->heap, cap * sizeof(*h));
        if (!h) return sala_errf(c->e, SALA_ENOMEM, "out of memory (merge heap)");
        c->heap = h;
        c->hcap = cap;
    }
    size_t i = c->hn++;
    heap_ent *h = c->heap;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].key <= key) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = (heap_ent){key, a, b, new_id};
    return SALA_OK;
}

static heap_ent heap_pop(bpe_ctx *c)
{
    heap_ent *h = c->heap;
    heap_ent top = h[0], last = h[--c->hn];
    size_t n = c->hn, i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        if (l + 1 < n && h[l + 1].key < h[l].key) l++;
        if (h[l].key >= last.key) break;
        h[i] = h[l];
        i = l;
    }
    if (n) h[i] = last;
    return top;
}

static inline int try_push(bpe_ctx *c, int32_t pos)
{
    int32_t a = c->id[pos], b = c->id[c->next[pos]];
    const merge_slot *m = merge_get(c->t, a, b);
    if (!m) return SALA_OK;
    return heap_push(c, ((uint64_t)m->rank << 32) | (uint32_t)pos, a, b, m->new_id);
}

/* BPE over the buffered symbols (tokenizers Word::merge_all), then append them to out. */
static int ctx_flush(bpe_ctx *c)
{
    size_t n = c->n;
    if (!n) return SALA_OK;
    int rc;
    if ((rc = tok_ids_reserve(c->out, n, c->flags, c->e))) return rc;
    bool cacheable = n > 1 && n <= CACHE_MAX_SYMS;
    uint64_t h = 0;
    size_t slot = SIZE_MAX;
    int32_t in[CACHE_MAX_SYMS];
    if (cacheable) {
        h = XXH3_64bits(c->id, n * sizeof(int32_t));
        if (cache_get(c, h, &slot)) {
            c->n = 0;
            return SALA_OK;
        }
        memcpy(in, c->id, n * sizeof(int32_t));
    }
    if (n > 1) {
        for (size_t i = 0; i < n; i++) {
            c->prev[i] = (int32_t)i - 1;
            c->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        }
        c->hn = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if ((rc = try_push(c, (int32_t)i))) return rc;
        while (c->hn) {
            heap_ent top = heap_pop(c);
            int32_t pos = (int32_t)(uint32_t)top.key;
            /* Stale entries: HF re-looks-up the pair at pos and skips the entry unless it
             * merges to the same id. Symbols only grow by absorbing their right neighbour and
             * a merged token's text is the concatenation of its parts, so a changed pair has a
             * longer text and cannot merge to the same id: comparing the pair is the same
             * test without a hash lookup. */
            if (c->id[pos] != top.a) continue;   /* merged, or merged into its left */
            int32_t nx = c->next[pos];
            if (nx < 0 || c->id[nx] != top.b) continue;
            c->id[pos] = top.new_id;
            c->end[pos] = c->end[nx];
            c->id[nx] = -1;
            c->next[pos] = c->next[nx];
            if (c->next[nx] >= 0) c->prev[c->next[nx]] = pos;
            if (c->prev[pos] >= 0 && (rc = try_push(c, c->prev[pos]))) return rc;
            if (c->next[pos] >= 0 && (rc = try_push(c, pos))) return rc;
        }
    }
    size_t n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->id[i] < 0) continue;
        emit(c, c->id[i], c->start[i], c->end[i]);
        n_out++;
    }
    if (cacheable && slot != SIZE_MAX) cache_put(c, slot, h, in, n_out);
    c->n = 0;
    return SALA_OK;
}

/* Append one symbol. A symbol that takes part in no merge is a chunk by itself, and a chunk
 * also ends between two symbols when no vocabulary token contains the last char of the first
 * followed by the first char of the second: no merge can ever join them (a merged token's text
 * is the concatenation of its parts), so the chunks are encoded independently. */
static inline int ctx_sym(bpe_ctx *c, int32_t id, uint32_t s, uint32_t e)
{
    int rc;
    const tok_tokenizer *t = c->t;
    bool barrier = !(t->id_flags[id] & ID_MERGES);
    if (c->n && (barrier || !t->bigram[t->last_cls[c->id[c->n - 1]]][t->first_cls[id]]) &&
        (rc = ctx_flush(c)))
        return rc;
    if (c->n == c->cap && (rc = ctx_grow(c))) return rc;
    c->id[c->n] = id;
    c->start[c->n] = s;
    c->end[c->n] = e;
    c->n++;
    if (barrier) return ctx_flush(c);
    return SALA_OK;
}

static int ctx_unk_flush(bpe_ctx *c)
{
    if (!c->unk_pending) return SALA_OK;
    c->unk_pending = false;
    return ctx_sym(c, c->t->unk_id, c->unk_start, c->unk_end);
}

/* One normalized char (UTF-8 s[0..n)) whose source bytes are [s0, e0); per_byte: its bytes are
 * the source bytes themselves (byte fallback tokens then get one-byte spans). Follows
 * tokenizers BPE::merge_word, including its unk handling. */
static int ctx_char(bpe_ctx *c, const char *s, size_t n, uint32_t s0, uint32_t e0, bool per_byte)
{
    const tok_tokenizer *t = c->t;
    int32_t id;
    if (n < 4) {
        id = bmp_get(t, utf8_cp((const unsigned char *)s, n));
    } else {
        id = vocab_get(t, s, n);
    }
    int rc;
    if (id >= 0) {
        if ((rc = ctx_unk_flush(c))) return rc;
        return ctx_sym(c, id, s0, e0);
    }
    if (t->byte_fallback) {
        bool all = true;
        for (size_t i = 0; i < n; i++) all &= t->byte_id[(unsigned char)s[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < n; i++) {
                uint32_t bs = per_byte ? s0 + (uint32_t)i : s0, be = per_byte ? bs + 1 : e0;
                if ((rc = ctx_sym(c, t->byte_id[(unsigned char)s[i]], bs, be))) return rc;
            }
            return SALA_OK;
        }
    }
    if (t->unk_id < 0) return SALA_OK;   /* tokenizers drops the char */
    if (c->unk_pending && t->fuse_unk) {
        c->unk_end = e0;
        return SALA_OK;
    }
    if ((rc = ctx_unk_flush(c))) return rc;
    c->unk_pending = true;
    c->unk_start = s0;
    c->unk_end = e0;
    return SALA_OK;
}

/* Each char of a fixed UTF-8 string (a normalizer output), all with the span [s0, e0). */
static int ctx_string(bpe_ctx *c, const char *s, size_t n, uint32_t s0, uint32_t e0)
{
    size_t bad;
    for (size_t i = 0; i < n;) {
        size_t k = tok_utf8_len((const unsigned char *)s + i, n - i, &bad);
        if (!k) return sala_errf(c->e, SALA_EINTERNAL, "normalizer output is not UTF-8");
        int rc = ctx_char(c, s + i, k, s0, e0, false);
        if (rc) return rc;
        i += k;
    }
    return SALA_OK;
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD";

/* ignore_merges: a piece whose whole normalized text is a token becomes that token. */
static int32_t whole_piece_id(const tok_tokenizer *t, const char *text, size_t a, size_t b)
{
    char buf[TOK_MAX_STR];
    size_t n = t->norm_prefix.len;
    if (n > t->max_token_len) return -1;
    memcpy(buf, S(t, t->norm_prefix), n);
    for (size_t i = a; i < b;) {
        size_t bad, k = tok_utf8_len((const unsigned char *)text + i, b - i, &bad);
        const char *src = text + i;
        size_t m = k;
        if (!k) {
            src = REPLACEMENT;
            m = 3;
            k = bad;
        } else {
            uint32_t cp = utf8_cp((const unsigned char *)src, k);
            for (size_t j = 0; j < t->n_maps; j++)
                if (t->maps[j].cp == cp) {
                    src = S(t, t->maps[j].out);
                    m = t->maps[j].out.len;
                }
        }
        if (n + m > t->max_token_len) return -1;
        memcpy(buf + n, src, m);
        n += m;
        i += k;
    }
    return vocab_get(t, buf, n);
}

/* Normalize and BPE-encode text[a..b), one piece between added tokens. */
static int encode_piece(bpe_ctx *c, const char *text, size_t a, size_t b)
{
    const tok_tokenizer *t = c->t;
    if (a == b) return SALA_OK;
    int rc;
    if (t->ignore_merges) {
        int32_t id = whole_piece_id(t, text, a, b);
        if (id >= 0) {
            if ((rc = tok_ids_reserve(c->out, 1, c->flags, c->e))) return rc;
            if (c->flags & TOK_SPANS) c->out->spans[c->out->n] = (tok_span){(uint32_t)a, (uint32_t)b};
            c->out->ids[c->out->n++] = id;
            return SALA_OK;
        }
    }
    c->unk_pending = false;
    if (t->norm_prefix.len &&
        (rc = ctx_string(c, S(t, t->norm_prefix), t->norm_prefix.len, (uint32_t)a, (uint32_t)a)))
        return rc;
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = a; i < b;) {
        unsigned ch = u[i];
        if (ch < 0x80) {
            int16_t m = t->ascii_map[ch];
            if (m) {
                str_ref o = t->maps[m - 1].out;
                rc = ctx_string(c, S(t, o), o.len, (uint32_t)i, (uint32_t)i + 1);
            } else {
                int32_t id = bmp_get(t, ch);
                if (id >= 0 && !c->unk_pending) rc = ctx_sym(c, id, (uint32_t)i, (uint32_t)i + 1);
                else rc = ctx_char(c, text + i, 1, (uint32_t)i, (uint32_t)i + 1, true);
            }
            if (rc) return rc;
            i++;
            continue;
        }
        size_t bad, k = tok_utf8_len(u + i, b - i, &bad);
        if (!k) {
            /* ill-formed: one U+FFFD for the maximal subpart (documented in tokenizer.h) */
            if ((rc = ctx_char(c, REPLACEMENT, 3, (uint32_t)i, (uint32_t)(i + bad), false)))
                return rc;
            i += bad;
            continue;
        }
        const norm_map *nm = NULL;
        if (t->n_maps) {
            uint32_t cp = utf8_cp(u + i, k);
            for (size_t j = 0; j < t->n_maps; j++)
                if (t->maps[j].cp == cp) nm = &t->maps[j];
        }
        if (nm) rc = ctx_string(c, S(t, nm->out), nm->out.len, (uint32_t)i, (uint32_t)(i + k));
        else rc = ctx_char(c, text + i, k, (uint32_t)i, (uint32_t)(i + k), true);
        if (rc) return rc;
        i += k;
    }
    if ((rc = ctx_unk_flush(c))) return rc;
    return ctx_flush(c);
}

static int push_id(tok_ids *out, int32_t id, uint32_t s, uint32_t e, unsigned flags, sala_err *err)
{
    int rc = tok_ids_reserve(out, 1, flags, err);
    if (rc) return rc;
    if (flags & TOK_SPANS) out->spans[out->n] = (tok_span){s, e};
    out->ids[out->n++] = id;
    return SALA_OK;
}

/* Longest added token at text[i..len), or NULL. */
static const added_tok *added_at(const tok_tokenizer *t, const char *text, size_t i, size_t len)
{
    for (size_t k = 0; k < t->n_added; k++) {
        const added_tok *a = &t->added[k];
        if (a->text.len <= len - i && !memcmp(text + i, S(t, a->text), a->text.len)) return a;
    }
    return NULL;
}

int tok_encode_ranges(const tok_tokenizer *t, const char *text, size_t len, unsigned flags,
                      const tok_range *trusted, size_t n_trusted, tok_ids *out, sala_err *e)
{
    if (len >= UINT32_MAX)
        return sala_errf(e, SALA_ERANGE, "text of %zu bytes is too long to encode (max %u)", len,
                         UINT32_MAX - 1);
    if (!text && len) return sala_errf(e, SALA_EINVAL, "tok_encode: NULL text");
    size_t n0 = out->n;
    int rc = SALA_OK;
    bpe_ctx c = {.t = t, .out = out, .flags = flags, .e = e, .text_len = len};
    if (flags & TOK_BOS)
        for (size_t i = 0; i < t->n_post_pre && !rc; i++)
            rc = push_id(out, t->post_pre[i], 0, 0, flags, e);
    bool special = trusted ? true : (flags & TOK_SPECIAL);
    bool scan = t->n_added && (special || t->has_nonspecial);
    size_t piece = 0, tr = 0;
    for (size_t i = 0; scan && i < len && !rc;) {
        if (!t->added_first[(unsigned char)text[i]]) {
            i++;
            continue;
        }
        const added_tok *a = added_at(t, text, i, len);
        if (!a) {
            i++;
            continue;
        }
        size_t end = i + a->text.len;
        bool take = !a->special || special;
        if (a->special && trusted) {
            while (tr < n_trusted && trusted[tr].end < end) tr++;
            take = tr < n_trusted && trusted[tr].start <= i && end <= trusted[tr].end;
        }
        if (take) {
            rc = encode_piece(&c, text, piece, i);
            if (!rc) rc = push_id(out, a->id, (uint32_t)i, (uint32_t)end, flags, e);
            piece = end;
        }
        i = end;   /* a skipped special token is plain text, but still consumed (HF) */
    }
    if (!rc) rc = encode_piece(&c, text, piece, len);
    if (flags & TOK_BOS)
        for (size_t i = 0; i < t->n_post_suf && !rc; i++)
            rc = push_id(out, t->post_suf[i], (uint32_t)len, (uint32_t)len, flags, e);
    ctx_free(&c);
    if (rc) out->n = n0;
    return rc;
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, unsigned flags, tok_ids *out,
               sala_err *e)
{
    return tok_encode_ranges(t, text, len, flags, NULL, 0, out, e);
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding. tok_decode follows tokenizers' decoders literally (a list of strings through each
 * step, then joined); the stream below computes the same text incrementally. */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_add(buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) {
            if (sala_mul_ovf(&cap, cap, 2)) return SALA_ERANGE;
        }
        char *p = realloc(b->p, cap);
        if (!p) return SALA_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return SALA_OK;
}

/* A list of strings stored back to back in one buffer. */
typedef struct {
    buf text;
    size_t *off;   /* n + 1 offsets */
    size_t n, cap;
} strlist;

static int sl_push(strlist *l, const char *s, size_t n)
{
    if (l->n + 2 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *o = realloc(l->off, cap * sizeof(size_t));
        if (!o) return SALA_ENOMEM;
        l->off = o;
        l->cap = cap;
    }
    if (!l->n) l->off[0] = l->text.n;
    int rc = buf_add(&l->text, s, n);
    if (rc) return rc;
    l->off[++l->n] = l->text.n;
    return SALA_OK;
}

static void sl_free(strlist *l)
{
    free(l->text.p);
    free(l->off);
    memset(l, 0, sizeof(*l));
}

static size_t sl_len(const strlist *l, size_t i) { return l->off[i + 1] - l->off[i]; }
static const char *sl_at(const strlist *l, size_t i) { return l->text.p + l->off[i]; }

/* tokenizers' ByteFallback test: six bytes "<0x", two chars Rust's u8::from_str_radix(_, 16)
 * accepts (hex digits, or '+' then one), ">". Returns the byte or -1. */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (i == 3 && ch == '+') continue;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int replace_into(buf *b, const char *s, size_t n, const char *pat, size_t pl,
                        const char *con, size_t cl)
{
    int rc = SALA_OK;
    size_t i = 0, run = 0;
    while (i + pl <= n) {
        if (!memcmp(s + i, pat, pl)) {
            if ((rc = buf_add(b, s + run, i - run)) || (rc = buf_add(b, con, cl))) return rc;
            i += pl;
            run = i;
        } else {
            i++;
        }
    }
    return buf_add(b, s + run, n - run);
}

/* tokenizers' Strip on one string: cut up to `start` leading and `stop` trailing ch. */
static void strip_bounds(const char *s, size_t n, const char *ch, size_t cl, size_t start,
                         size_t stop, size_t *a, size_t *b)
{
    size_t i = 0, j = n;
    for (size_t k = 0; k < start && i + cl <= n && !memcmp(s + i, ch, cl); k++) i += cl;
    for (size_t k = 0; k < stop && j >= cl && !memcmp(s + j - cl, ch, cl); k++) j -= cl;
    if (j < i) j = i;   /* tokenizers would panic here; the text is all stripped */
    *a = i;
    *b = j;
}

static int dec_step_apply(const tok_tokenizer *t, const dec_step *d, strlist *in, strlist *out)
{
    int rc = SALA_OK;
    if (d->kind == DEC_FUSE) {
        if (in->n) {
            rc = sl_push(out, sl_at(in, 0), in->off[in->n] - in->off[0]);
        }
        return rc;
    }
    if (d->kind == DEC_BYTEFALLBACK) {
        size_t i = 0;
        while (i < in->n && !rc) {
            if (byte_token(sl_at(in, i), sl_len(in, i)) < 0) {
                rc = sl_push(out, sl_at(in, i), sl_len(in, i));
                i++;
                continue;
            }
            char bytes[256];
            size_t j = i, k = 0;
            buf run = {0};
            while (j < in->n && !rc) {
                int v = byte_token(sl_at(in, j), sl_len(in, j));
                if (v < 0) break;
                bytes[k++] = (char)v;
                if (k == sizeof(bytes)) {
                    rc = buf_add(&run, bytes, k);
                    k = 0;
                }
                j++;
            }
            if (!rc && k) rc = buf_add(&run, bytes, k);
            if (!rc) {
                if (utf8_valid(run.p, run.n)) {
                    rc = sl_push(out, run.p, run.n);
                } else {
                    for (size_t x = i; x < j && !rc; x++) rc = sl_push(out, REPLACEMENT, 3);
                }
            }
            free(run.p);
            i = j;
        }
        return rc;
    }
    buf tmp = {0};   /* one scratch for every string of the list */
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = sl_at(in, i);
        size_t n = sl_len(in, i);
        if (d->kind == DEC_STRIP) {
            size_t a, b;
            strip_bounds(s, n, S(t, d->strip_ch), d->strip_ch.len, d->start, d->stop, &a, &b);
            rc = sl_push(out, s + a, b - a);
        } else {
            tmp.n = 0;
            rc = replace_into(&tmp, s, n, S(t, d->pat), d->pat.len, S(t, d->content),
                              d->content.len);
            if (!rc) rc = sl_push(out, tmp.p, tmp.n);
        }
    }
    free(tmp.p);
    return rc;
}

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **out,
               size_t *len, sala_err *e)
{
    *out = NULL;
    *len = 0;
    strlist a = {0}, b = {0};
    int rc = SALA_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        size_t tl;
        const char *s = tok_token_text(t, ids[i], &tl);
        if (!s) {
            sl_free(&a);
            return sala_errf(e, SALA_EINVAL, "decode: token id %d at position %zu is not in the "
                             "vocabulary (size %d)", (int)ids[i], i, (int)t->n_ids);
        }
        if ((flags & TOK_SKIP_SPECIAL) && (t->id_flags[ids[i]] & ID_SPECIAL)) continue;
        rc = sl_push(&a, s, tl);
    }
    for (size_t k = 0; k < t->n_dec && !rc; k++) {
        rc = dec_step_apply(t, &t->dec[k], &a, &b);
        strlist tmp = a;
        a = b;
        b = tmp;
        sl_free(&b);
    }
    buf res = {0};
    if (!rc) rc = buf_add(&res, "", 0);
    if (!rc && a.n) rc = buf_add(&res, sl_at(&a, 0), a.off[a.n] - a.off[0]);
    sl_free(&a);
    sl_free(&b);
    if (rc) {
        free(res.p);
        return sala_errf(e, rc, "decode: out of memory");
    }
    *out = res.p;
    *len = res.n;
    return SALA_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming decode. Steps before the first Fuse act on each token (ByteFallback groups a run
 * of byte tokens, so the run is held until it ends); steps after it act on the running text:
 * Replace there has a one-character pattern (checked at load) and Strip keeps `lead` (how
 * many leading chars it may still cut) and `held` (trailing chars it may still cut). */

typedef struct {
    size_t lead, held;
} strip_state;

/* Two scratch buffers that a chain of steps alternates between: a step reads the text where it
 * is and writes to the other one. */
typedef struct {
    buf b[2];
    int cur;               /* which one holds the current text; -1: the text is elsewhere */
} scratch;

struct tok_stream {
    const tok_tokenizer *t;
    unsigned flags;
    size_t fuse_at;        /* index of the first Fuse, n_dec if none */
    size_t bf_at;          /* index of ByteFallback before fuse_at, SIZE_MAX if none */
    buf run;               /* pending bytes of byte tokens */
    size_t run_tokens;
    strip_state st[16];
    buf out;
    scratch tok, emit;     /* per-token steps of feed; steps of stream_emit and stream_tail */
};

void tok_stream_reset(tok_stream *s)
{
    s->run.n = 0;
    s->run_tokens = 0;
    s->out.n = 0;
    for (size_t k = 0; k < s->t->n_dec; k++)
        s->st[k] = (strip_state){s->t->dec[k].kind == DEC_STRIP ? s->t->dec[k].start : 0, 0};
}

int tok_stream_new(const tok_tokenizer *t, unsigned flags, tok_stream **out, sala_err *e)
{
    *out = NULL;
    tok_stream *s = calloc(1, sizeof(*s));
    if (!s) return sala_errf(e, SALA_ENOMEM, "out of memory");
    s->t = t;
    s->flags = flags;
    s->fuse_at = t->n_dec;
    s->bf_at = SIZE_MAX;
    for (size_t k = 0; k < t->n_dec; k++) {
        if (t->dec[k].kind == DEC_FUSE && s->fuse_at == t->n_dec) s->fuse_at = k;
        if (t->dec[k].kind == DEC_BYTEFALLBACK && k < s->fuse_at) s->bf_at = k;
    }
    tok_stream_reset(s);
    *out = s;
    return SALA_OK;
}

void tok_stream_free(tok_stream *s)
{
    if (!s) return;
    free(s->run.p);
    free(s->out.p);
    for (int i = 0; i < 2; i++) {
        free(s->tok.b[i].p);
        free(s->emit.b[i].p);
    }
    free(s);
}

/* The buffer the next step writes to: emptied, and not the one that holds the current text. */
static buf *scratch_next(scratch *sc)
{
    sc->cur = sc->cur == 0 ? 1 : 0;
    sc->b[sc->cur].n = 0;
    return &sc->b[sc->cur];
}

/* The per-string steps dec[from..to) (Replace and Strip; other kinds pass the text on) on
 * (*p, *n), which on return is the result: in sc, or the input itself when no step ran. */
static int stream_steps(const tok_tokenizer *t, scratch *sc, size_t from, size_t to,
                        const char **p, size_t *n)
{
    for (size_t k = from; k < to; k++) {
        const dec_step *d = &t->dec[k];
        if (d->kind != DEC_REPLACE && d->kind != DEC_STRIP) continue;
        buf *nb = scratch_next(sc);
        int rc;
        if (d->kind == DEC_REPLACE) {
            rc = replace_into(nb, *p, *n, S(t, d->pat), d->pat.len, S(t, d->content),
                              d->content.len);
        } else {
            size_t a, b;
            strip_bounds(*p, *n, S(t, d->strip_ch), d->strip_ch.len, d->start, d->stop, &a, &b);
            rc = buf_add(nb, *p + a, b - a);
        }
        if (rc) return rc;
        *p = nb->p;
        *n = nb->n;
    }
    return SALA_OK;
}

/* Post-Fuse steps from k on, over text that only grows (p may be in s->emit); the result is
 * appended to s->out. */
static int stream_tail(tok_stream *s, size_t k, const char *p, size_t n, bool finish)
{
    const tok_tokenizer *t = s->t;
    for (; k < t->n_dec; k++) {
        const dec_step *d = &t->dec[k];
        if (d->kind == DEC_FUSE) continue;
        buf *nb = scratch_next(&s->emit);
        int rc = SALA_OK;
        if (d->kind == DEC_REPLACE) {
            rc = replace_into(nb, p, n, S(t, d->pat), d->pat.len, S(t, d->content), d->content.len);
        } else {   /* DEC_STRIP */
            strip_state *st = &s->st[k];
            const char *ch = S(t, d->strip_ch);
            size_t cl = d->strip_ch.len, i = 0;
            while (st->lead && i + cl <= n && !memcmp(p + i, ch, cl)) {
                i += cl;
                st->lead--;
            }
            if (i < n) st->lead = 0;
            if (!d->stop) {
                rc = buf_add(nb, p + i, n - i);
            } else {
                size_t j = n, tail = 0;
                rc = buf_add(nb, "", 0);
                while (j >= i + cl && !memcmp(p + j - cl, ch, cl)) {
                    j -= cl;
                    tail++;
                }
                if (j > i) {   /* a non-ch char: what was held is not trailing any more */
                    for (size_t x = 0; x < st->held && !rc; x++) rc = buf_add(nb, ch, cl);
                    if (!rc) rc = buf_add(nb, p + i, j - i);
                    st->held = 0;
                }
                st->held += tail;
                for (; st->held > d->stop && !rc; st->held--) rc = buf_add(nb, ch, cl);
                if (finish) st->held = 0;   /* the last `stop` chars are cut */
            }
        }
        if (rc) return rc;
        p = nb->p;
        n = nb->n;
    }
    return buf_add(&s->out, p, n);
}

/* Steps in [from, fuse_at) on one string (not in s->emit), then the post-Fuse tail (or a plain
 * append). */
static int stream_emit(tok_stream *s, size_t from, const char *p, size_t n)
{
    s->emit.cur = -1;
    int rc = stream_steps(s->t, &s->emit, from, s->fuse_at, &p, &n);
    if (rc) return rc;
    if (s->fuse_at < s->t->n_dec) return stream_tail(s, s->fuse_at + 1, p, n, false);
    return buf_add(&s->out, p, n);
}

static int stream_flush_run(tok_stream *s)
{
    if (!s->run_tokens) return SALA_OK;
    int rc = SALA_OK;
    if (utf8_valid(s->run.p, s->run.n)) {
        rc = stream_emit(s, s->bf_at + 1, s->run.p, s->run.n);
    } else {
        for (size_t i = 0; i < s->run_tokens && !rc; i++)
            rc = stream_emit(s, s->bf_at + 1, REPLACEMENT, 3);
    }
    s->run.n = 0;
    s->run_tokens = 0;
    return rc;
}

int tok_stream_feed(tok_stream *s, int32_t id, const char **text, size_t *len, sala_err *e)
{
    const tok_tokenizer *t = s->t;
    s->out.n = 0;
    *text = "";
    *len = 0;
    size_t tl;
    const char *tokstr = tok_token_text(t, id, &tl);
    if (!tokstr)
        return sala_errf(e, SALA_EINVAL, "decode: token id %d is not in the vocabulary (size %d)",
                         (int)id, (int)t->n_ids);
    if ((s->flags & TOK_SKIP_SPECIAL) && (t->id_flags[id] & ID_SPECIAL)) return SALA_OK;
    /* per-token steps before ByteFallback (the text stays in s->tok: stream_emit uses s->emit) */
    size_t pre_end = s->bf_at != SIZE_MAX ? s->bf_at : s->fuse_at;
    const char *p = tokstr;
    size_t n = tl;
    s->tok.cur = -1;
    int rc = stream_steps(t, &s->tok, 0, pre_end, &p, &n);
    if (!rc && s->bf_at != SIZE_MAX) {
        int v = byte_token(p, n);
        if (v >= 0) {
            char ch = (char)v;
            rc = buf_add(&s->run, &ch, 1);
            s->run_tokens++;
            if (rc) return sala_errf(e, rc, "decode: out of memory");
            *text = s->out.p ? s->out.p : "";
            return SALA_OK;
        }
        rc = stream_flush_run(s);
        if (!rc) rc = stream_emit(s, s->bf_at + 1, p, n);
    } else if (!rc) {
        rc = stream_emit(s, pre_end, p, n);
    }
    if (rc) return sala_errf(e, rc, "decode: out of memory");
    *text = s->out.p ? s->out.p : "";
    *len = s->out.n;
    return SALA_OK;
}

int tok_stream_finish(tok_stream *s, const char **text, size_t *len, sala_err *e)
{
    s->out.n = 0;
    int rc = SALA_OK;
    if (s->bf_at != SIZE_MAX) rc = stream_flush_run(s);
    if (!rc && s->fuse_at < s->t->n_dec) rc = stream_tail(s, s->fuse_at + 1, "", 0, true);
    if (rc) return sala_errf(e, rc, "decode: out of memory");
    *text = s->out.p ? s->out.p : "";
    *len = s->out.n;
    /* the next feed starts a new text */
    for (size_t k = 0; k < s->t->n_dec; k++)
        s->st[k] = (strip_state){s->t->dec[k].kind == DEC_STRIP ? s->t->dec[k].start : 0, 0};
    return SALA_OK;
}
