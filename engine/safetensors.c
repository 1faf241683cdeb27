/* safetensors.c: validated mmap reader and atomic writer for the safetensors format.
 * Rules are listed in safetensors.h. Invariant after a successful st_parse: every tensor's
 * [offset, offset+nbytes) lies inside the data section, the ranges tile it exactly, and
 * nbytes == numel * dtype_size with no overflow anywhere. */
#include "engine/safetensors.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

struct st_file {
    char *path;
    void *map;          /* mmap'ed file, or NULL for st_parse on a caller buffer */
    size_t size;
    st_tensor *t;       /* sorted by offset */
    size_t n;
    const st_tensor **by_name; /* sorted by name, for st_find */
    char **meta_kv;     /* key, value, key, value ... */
    size_t nmeta;
};

static const struct { const char *name; size_t size; } dtypes[ST_NDTYPE] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},    [ST_I8] = {"I8", 1},
    [ST_U16] = {"U16", 2},   [ST_I16] = {"I16", 2},  [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_U32] = {"U32", 4},  [ST_I32] = {"I32", 4},
    [ST_F32] = {"F32", 4},   [ST_U64] = {"U64", 8},  [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},
};

size_t st_dtype_size(st_dtype t) { return t < ST_NDTYPE ? dtypes[t].size : 0; }
const char *st_dtype_name(st_dtype t) { return t < ST_NDTYPE ? dtypes[t].name : "?"; }

int st_dtype_parse(const char *s, st_dtype *t)
{
    for (int i = 0; i < ST_NDTYPE; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *t = (st_dtype)i;
            return SALA_OK;
        }
    return SALA_EINVAL;
}

float st_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int st_to_f32(const st_tensor *t, size_t first, size_t n, float *dst)
{
    if (first > (size_t)t->numel || n > (size_t)t->numel - first) return SALA_EINVAL;
    const unsigned char *p = (const unsigned char *)t->data;
    switch (t->dtype) {
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * (first + i), 2);
            dst[i] = st_bf16_to_f32(h);
        }
        return SALA_OK;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * (first + i), 2);
            dst[i] = st_f16_to_f32(h);
        }
        return SALA_OK;
    case ST_F32:
        memcpy(dst, p + 4 * first, 4 * n);
        return SALA_OK;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * (first + i), 8);
            dst[i] = (float)d;
        }
        return SALA_OK;
    default:
        return SALA_EINVAL;
    }
}

/* ---- reading ---- */

static int cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

static int cmp_name(const void *a, const void *b)
{
    const st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

/* A JSON number that must be an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

void st_close(st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (size_t i = 0; i < 2 * f->nmeta; i++) free(f->meta_kv[i]);
    free(f->meta_kv);
    free(f->t);
    free(f->by_name);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

static int parse_tensor(const cJSON *it, const char *label, st_tensor *t, sala_err *e)
{
    const char *nm = it->string;
    if (!cJSON_IsObject(it))
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': entry is not an object", label, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt))
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': missing or non-string 'dtype'", label, nm);
    if (st_dtype_parse(dt->valuestring, &t->dtype) != SALA_OK)
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': unknown dtype '%.32s'", label, nm,
                         dt->valuestring);
    if (!cJSON_IsArray(sh))
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': missing or non-array 'shape'", label, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': %d dimensions (at most %d)", label, nm,
                         nd, ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(sh, d), &v))
            return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative "
                             "integer", label, nm, d);
        t->shape[d] = (int64_t)v;
        if (sala_mul_ovf(&numel, numel, (size_t)v) || numel > (size_t)INT64_MAX)
            return sala_errf(e, SALA_ERANGE, "%s: tensor '%s': element count overflows", label, nm);
    }
    t->numel = (int64_t)numel;
    if (sala_mul_ovf(&t->nbytes, numel, st_dtype_size(t->dtype)))
        return sala_errf(e, SALA_ERANGE, "%s: tensor '%s': byte size overflows", label, nm);
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &b) || !json_uint(cJSON_GetArrayItem(off, 1), &en))
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': 'data_offsets' must be two "
                         "non-negative integers", label, nm);
    if (en < b)
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': data_offsets end %llu before begin %llu",
                         label, nm, (unsigned long long)en, (unsigned long long)b);
    if (en - b != t->nbytes)
        return sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': shape and dtype need %zu bytes but "
                         "data_offsets span %llu", label, nm, t->nbytes,
                         (unsigned long long)(en - b));
    t->offset = (size_t)b;
    return SALA_OK;
}

int st_parse(const void *buf, size_t size, const char *label, st_file **out, sala_err *e)
{
    *out = NULL;
    const unsigned char *p = buf;
    if (size < 8)
        return sala_errf(e, SALA_EFORMAT, "%s: %zu bytes is too small for a safetensors header",
                         label, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > ST_MAX_HEADER)
        return sala_errf(e, SALA_EFORMAT, "%s: header length %llu exceeds the limit of %u", label,
                         (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > size - 8)
        return sala_errf(e, SALA_EFORMAT, "%s: header length %llu runs past the end of the file "
                         "(%zu bytes)", label, (unsigned long long)hlen, size);
    const char *hdr = (const char *)p + 8;
    if (!valid_utf8((const unsigned char *)hdr, (size_t)hlen))
        return sala_errf(e, SALA_EFORMAT, "%s: header is not valid UTF-8", label);
    const char *end = NULL;
    bool oom;
    cJSON *root = sala_json_parse(hdr, (size_t)hlen, &end, &oom);
    if (!root)
        return oom ? sala_errf(e, SALA_ENOMEM, "%s: out of memory", label)
                   : sala_errf(e, SALA_EFORMAT, "%s: header is not valid JSON", label);
    int rc = SALA_OK;
    st_file *f = calloc(1, sizeof(*f));
    if (!f) {
        rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    for (const char *q = end; q && q < hdr + hlen; q++)
        if (*q != ' ' && *q != '\n' && *q != '\t' && *q != '\r') {
            rc = sala_errf(e, SALA_EFORMAT, "%s: header has bytes after the JSON object", label);
            goto fail;
        }
    if (!cJSON_IsObject(root)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: header is not a JSON object", label);
        goto fail;
    }
    size_t cap = (size_t)cJSON_GetArraySize(root);
    f->t = calloc(cap ? cap : 1, sizeof(*f->t));
    if (!f->t) {
        rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    size_t data_size = size - 8 - (size_t)hlen;
    bool seen_meta = false;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (seen_meta || !cJSON_IsObject(it)) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: '__metadata__' must be one object of strings",
                               label);
                goto fail;
            }
            seen_meta = true;
            size_t nm = (size_t)cJSON_GetArraySize(it);
            f->meta_kv = calloc(2 * nm + 1, sizeof(char *));
            if (!f->meta_kv) {
                rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
                goto fail;
            }
            for (const cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    rc = sala_errf(e, SALA_EFORMAT, "%s: __metadata__ '%s' is not a string", label,
                                   m->string);
                    goto fail;
                }
                f->meta_kv[2 * f->nmeta] = strdup(m->string);
                f->meta_kv[2 * f->nmeta + 1] = strdup(m->valuestring);
                f->nmeta++;
                if (!f->meta_kv[2 * f->nmeta - 2] || !f->meta_kv[2 * f->nmeta - 1]) {
                    rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
                    goto fail;
                }
            }
            continue;
        }
        if (it->string[0] == 0) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: a tensor has an empty name", label);
            goto fail;
        }
        st_tensor *t = &f->t[f->n];
        rc = parse_tensor(it, label, t, e);
        if (rc) goto fail;
        t->name = strdup(it->string);
        if (!t->name) {
            rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
            goto fail;
        }
        f->n++;
    }
    qsort(f->t, f->n, sizeof(*f->t), cmp_offset);
    /* Duplicates first: a repeated entry would otherwise be reported as overlapping itself. */
    f->by_name = malloc((f->n ? f->n : 1) * sizeof(*f->by_name));
    if (!f->by_name) {
        rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = &f->t[i];
    qsort(f->by_name, f->n, sizeof(*f->by_name), cmp_name);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s' appears twice in the header", label,
                           f->by_name[i]->name);
            goto fail;
        }
    size_t pos = 0;
    for (size_t i = 0; i < f->n; i++) {
        st_tensor *t = &f->t[i];
        if (t->offset < pos) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': data_offsets [%zu, %zu) overlap the "
                           "previous tensor '%s'", label, t->name, t->offset, t->offset + t->nbytes,
                           f->t[i - 1].name);
            goto fail;
        }
        if (t->offset > pos) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': hole of %zu bytes before offset %zu",
                           label, t->name, t->offset - pos, t->offset);
            goto fail;
        }
        if (t->nbytes > data_size - pos) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: tensor '%s': offset %zu + %zu bytes runs past the "
                           "end of the data (%zu bytes)", label, t->name, t->offset, t->nbytes,
                           data_size);
            goto fail;
        }
        pos += t->nbytes;
        t->data = p + 8 + hlen + t->offset;
    }
    if (pos != data_size) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: %zu trailing bytes after the last tensor", label,
                       data_size - pos);
        goto fail;
    }
    f->size = size;
    f->path = strdup(label);
    if (!f->path) {
        rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", label);
        goto fail;
    }
    cJSON_Delete(root);
    *out = f;
    return SALA_OK;
fail:
    cJSON_Delete(root);
    st_close(f);
    return rc;
}

int st_open(const char *path, st_file **out, sala_err *e)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sala_errf(e, errno == ENOENT ? SALA_ENOTFOUND : SALA_EIO, "%s: cannot open: %s",
                         path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sala_errf(e, SALA_EIO, "%s: not a readable regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return sala_errf(e, SALA_EFORMAT, "%s: %zu bytes is too small for a safetensors header",
                         path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return sala_errf(e, SALA_EIO, "%s: mmap failed: %s", path, strerror(err));
    st_file *f;
    int rc = st_parse(map, size, path, &f, e);
    if (rc) {
        munmap(map, size);
        return rc;
    }
    f->map = map;
    *out = f;
    return SALA_OK;
}

size_t st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, size_t i) { return i < f->n ? &f->t[i] : NULL; }
const char *st_path(const st_file *f) { return f->path; }
size_t st_file_size(const st_file *f) { return f->size; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_kv[2 * i], key) == 0) return f->meta_kv[2 * i + 1];
    return NULL;
}

/* ---- writing ---- */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    void *data;
} wtensor;

struct st_writer {
    wtensor *t;
    size_t n, cap;
    cJSON *meta;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    cJSON_Delete(w->meta);
    free(w);
}

int st_writer_alloc(st_writer *w, const char *name, st_dtype dtype, int ndim,
                    const int64_t *shape, void **data, sala_err *e)
{
    if (ndim < 0 || ndim > ST_MAX_DIMS || dtype >= ST_NDTYPE)
        return sala_errf(e, SALA_EINVAL, "tensor '%s': bad dtype or rank", name);
    size_t nbytes = st_dtype_size(dtype);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || sala_mul_ovf(&nbytes, nbytes, (size_t)shape[d]))
            return sala_errf(e, SALA_ERANGE, "tensor '%s': bad shape", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 16;
        wtensor *nt = realloc(w->t, nc * sizeof(*nt));
        if (!nt) return sala_errf(e, SALA_ENOMEM, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    t->data = calloc(1, nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return sala_errf(e, SALA_ENOMEM, "tensor '%s': out of memory (%zu bytes)", name, nbytes);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(*shape));
    t->nbytes = nbytes;
    w->n++;
    *data = t->data;
    return SALA_OK;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, sala_err *e)
{
    void *dst;
    int rc = st_writer_alloc(w, name, dtype, ndim, shape, &dst, e);
    if (rc) return rc;
    memcpy(dst, data, w->t[w->n - 1].nbytes);
    return SALA_OK;
}

int st_writer_meta(st_writer *w, const char *key, const char *value, sala_err *e)
{
    if (!w->meta && !(w->meta = cJSON_CreateObject())) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (!cJSON_AddStringToObject(w->meta, key, value)) return sala_errf(e, SALA_ENOMEM, "out of memory");
    return SALA_OK;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int st_writer_write(st_writer *w, const char *path, sala_err *e)
{
    int rc = SALA_OK, fd = -1;
    char *hdr = NULL, *tmp = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (w->meta) {
        cJSON *m = cJSON_Duplicate(w->meta, 1);
        if (!m || !cJSON_AddItemToObject(root, "__metadata__", m)) {
            cJSON_Delete(m);
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
        if (o) cJSON_AddItemToObject(root, t->name, o);
        if (!o || !sh || !of || !cJSON_AddStringToObject(o, "dtype", st_dtype_name(t->dtype))) {
            cJSON_Delete(sh);
            cJSON_Delete(of);
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        cJSON_AddItemToObject(o, "shape", sh);
        cJSON_AddItemToObject(o, "data_offsets", of);
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    size_t plen = strlen(path) + 16;
    tmp = malloc(plen);
    if (!tmp) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(tmp, plen, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = sala_errf(e, SALA_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    if (write_all(fd, le, 8) || write_all(fd, hdr, hl) || write_all(fd, spaces, padded - hl)) {
        rc = sala_errf(e, SALA_EIO, "%s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < w->n; i++)
        if (write_all(fd, w->t[i].data, w->t[i].nbytes)) {
            rc = sala_errf(e, SALA_EIO, "%s: write failed: %s", tmp, strerror(errno));
            goto fail;
        }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        rc = sala_errf(e, SALA_EIO, "%s: fsync/close failed: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = sala_errf(e, SALA_EIO, "%s: rename failed: %s", path, strerror(errno));
        goto fail;
    }
fail:
    if (fd >= 0) close(fd);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(hdr);
    cJSON_Delete(root);
    return rc;
}
