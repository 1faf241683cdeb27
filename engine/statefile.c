/* statefile.c: checksummed, atomically replaced container files for persisted engine state.
 * Format and protocol in statefile.h. Every size read from a file is checked before use. */
#include "engine/statefile.h"
#include "json.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static const char MAGIC[8] = {'S', 'A', 'L', 'A', 'S', 'T', 'A', 'T'};
static const char MAGIC_END[8] = {'S', 'A', 'L', 'A', 'E', 'N', 'D', 0};
#define HDR_BYTES 32
#define FTR_BYTES 32

static sf_step_fn step_hook;
void sf_set_step_hook(sf_step_fn fn) { step_hook = fn; }
static void step(const char *s) { if (step_hook) step_hook(s); }

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

typedef struct {
    char *name;
    uint64_t offset, size;
    uint64_t *sums;
    size_t nsums, cap;
} section;

static void sections_free(section *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].sums);
    }
    free(s);
}

/* ---- writing ---- */

struct sf_writer {
    char *path, *tmp;
    int fd;
    uint64_t pos;
    section *sec;
    size_t nsec;
    XXH3_state_t *h;     /* running hash of the current chunk of the last section */
    size_t in_chunk;     /* bytes hashed into the current chunk */
};

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int io_err(sala_err *e, const char *path, const char *what)
{
    int err = errno;
    if (err == ENOSPC || err == EDQUOT)
        return sala_errf(e, SALA_EIO, "%s: %s failed: disk full (%s)", path, what, strerror(err));
    return sala_errf(e, SALA_EIO, "%s: %s failed: %s", path, what, strerror(err));
}

void sf_abort(sf_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    sections_free(w->sec, w->nsec);
    XXH3_freeState(w->h);
    free(w);
}

int sf_create(const char *path, const sf_field *meta, size_t nmeta, sf_writer **out, sala_err *e)
{
    *out = NULL;
    int rc = SALA_OK;
    char *js = NULL;
    cJSON *o = cJSON_CreateObject();
    sf_writer *w = calloc(1, sizeof(*w));
    if (!o || !w) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    w->fd = -1;
    for (size_t i = 0; i < nmeta; i++)
        if (!cJSON_AddStringToObject(o, meta[i].key, meta[i].value)) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
    js = cJSON_PrintUnformatted(o);
    size_t plen = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp = malloc(plen);
    w->h = XXH3_createState();
    if (!js || !w->path || !w->tmp || !w->h) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(w->tmp, plen, "%s.tmp-%ld", path, (long)getpid());
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = io_err(e, w->tmp, "create");
        free(w->tmp);
        w->tmp = NULL;
        goto fail;
    }
    size_t ml = strlen(js);
    unsigned char hdr[HDR_BYTES] = {0};
    memcpy(hdr, MAGIC, 8);
    hdr[8] = SF_VERSION;
    put_u64(hdr + 16, ml);
    put_u64(hdr + 24, XXH3_64bits(js, ml));
    if (write_all(w->fd, hdr, HDR_BYTES) || write_all(w->fd, js, ml)) {
        rc = io_err(e, w->tmp, "write");
        goto fail;
    }
    w->pos = HDR_BYTES + ml;
    *out = w;
    w = NULL;
fail:
    free(js);
    cJSON_Delete(o);
    sf_abort(w);
    return rc;
}

static int push_sum(section *s, uint64_t v)
{
    if (s->nsums == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 16;
        uint64_t *ns = realloc(s->sums, nc * sizeof(*ns));
        if (!ns) return -1;
        s->sums = ns;
        s->cap = nc;
    }
    s->sums[s->nsums++] = v;
    return 0;
}

int sf_write(sf_writer *w, const char *name, const void *data, size_t n, sala_err *e)
{
    section *s = w->nsec ? &w->sec[w->nsec - 1] : NULL;
    if (!s || strcmp(s->name, name) != 0) {
        for (size_t i = 0; i < w->nsec; i++)
            if (!strcmp(w->sec[i].name, name))
                return sala_errf(e, SALA_EINVAL, "%s: section '%s' written twice", w->path, name);
        if (w->nsec == SF_MAX_SECTIONS)
            return sala_errf(e, SALA_ERANGE, "%s: more than %d sections", w->path, SF_MAX_SECTIONS);
        /* Close the previous section's partial chunk. */
        if (s && w->in_chunk && push_sum(s, XXH3_64bits_digest(w->h)))
            return sala_errf(e, SALA_ENOMEM, "out of memory");
        section *ns = realloc(w->sec, (w->nsec + 1) * sizeof(*ns));
        if (!ns) return sala_errf(e, SALA_ENOMEM, "out of memory");
        w->sec = ns;
        s = &w->sec[w->nsec];
        memset(s, 0, sizeof(*s));
        if (!(s->name = strdup(name))) return sala_errf(e, SALA_ENOMEM, "out of memory");
        w->nsec++;
        s->offset = w->pos;
        w->in_chunk = 0;
        XXH3_64bits_reset(w->h);
    }
    const unsigned char *p = data;
    size_t left = n;
    while (left) {
        size_t k = SALA_MIN(left, SF_CHUNK - w->in_chunk);
        XXH3_64bits_update(w->h, p, k);
        w->in_chunk += k;
        p += k;
        left -= k;
        if (w->in_chunk == SF_CHUNK) {
            if (push_sum(s, XXH3_64bits_digest(w->h))) return sala_errf(e, SALA_ENOMEM, "out of memory");
            XXH3_64bits_reset(w->h);
            w->in_chunk = 0;
        }
    }
    step("data");
    if (write_all(w->fd, data, n)) return io_err(e, w->tmp, "write");
    w->pos += n;
    s->size += n;
    return SALA_OK;
}

/* No allocation here: it runs after the rename, where a failure can no longer be undone. */
static int fsync_dir(const char *path)
{
    char copy[4096];
    if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int sf_commit(sf_writer *w, sala_err *e)
{
    int rc = SALA_OK;
    char *js = NULL;
    cJSON *dir = cJSON_CreateArray();
    if (!dir) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    if (w->nsec && w->in_chunk && push_sum(&w->sec[w->nsec - 1], XXH3_64bits_digest(w->h))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < w->nsec; i++) {
        const section *s = &w->sec[i];
        cJSON *o = cJSON_CreateObject(), *sums = cJSON_CreateArray();
        char num[32];
        if (!o || !sums) {
            cJSON_Delete(o);
            cJSON_Delete(sums);
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        /* Every add is checked: a directory missing an entry after an allocation failure
         * would be committed over the old file and make it unreadable. */
        bool ok = cJSON_AddItemToArray(dir, o);
        if (!ok) cJSON_Delete(o);
        if (ok) {
            ok = cJSON_AddStringToObject(o, "name", s->name) != NULL;
            snprintf(num, sizeof(num), "%" PRIu64, s->offset);
            ok = ok && cJSON_AddStringToObject(o, "offset", num);
            snprintf(num, sizeof(num), "%" PRIu64, s->size);
            ok = ok && cJSON_AddStringToObject(o, "size", num);
            ok = ok && cJSON_AddItemToObject(o, "sums", sums);
        }
        if (!ok) cJSON_Delete(sums);   /* not attached to o */
        for (size_t k = 0; ok && k < s->nsums; k++) {
            snprintf(num, sizeof(num), "%016" PRIx64, s->sums[k]);
            cJSON *h = cJSON_CreateString(num);
            if (!h || !cJSON_AddItemToArray(sums, h)) {
                cJSON_Delete(h);
                ok = false;
            }
        }
        if (!ok) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
    }
    js = cJSON_PrintUnformatted(dir);
    if (!js) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    size_t dl = strlen(js);
    unsigned char ftr[FTR_BYTES];
    put_u64(ftr, w->pos);
    put_u64(ftr + 8, dl);
    put_u64(ftr + 16, XXH3_64bits(js, dl));
    memcpy(ftr + 24, MAGIC_END, 8);
    if (write_all(w->fd, js, dl) || write_all(w->fd, ftr, FTR_BYTES)) {
        rc = io_err(e, w->tmp, "write");
        goto fail;
    }
    step("fsync");
    if (fsync(w->fd) != 0) {
        rc = io_err(e, w->tmp, "fsync");
        goto fail;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        rc = io_err(e, w->tmp, "close");
        goto fail;
    }
    step("rename");
    if (rename(w->tmp, w->path) != 0) {
        rc = io_err(e, w->path, "rename");
        goto fail;
    }
    free(w->tmp);
    w->tmp = NULL;   /* nothing to unlink any more */
    step("dirsync");
    if (fsync_dir(w->path) != 0) rc = io_err(e, w->path, "directory fsync");
fail:
    free(js);
    cJSON_Delete(dir);
    sf_abort(w);
    return rc;
}

/* ---- reading ---- */

struct sf_reader {
    char *path;
    int fd;
    uint64_t size;
    cJSON *meta;
    section *sec;
    size_t nsec;
    unsigned char *bounce;   /* one chunk, allocated at open, for reads of part of a chunk */
    atomic_flag bounce_busy; /* taken by the sf_read using bounce; others malloc their own */
};

void sf_close(sf_reader *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    cJSON_Delete(r->meta);
    sections_free(r->sec, r->nsec);
    free(r->bounce);
    free(r->path);
    free(r);
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static bool parse_u64(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsString(j) || !*j->valuestring) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(j->valuestring, &end, 10);
    if (*end || errno || j->valuestring[0] == '-') return false;
    *v = x;
    return true;
}

static int parse_dir(sf_reader *r, const char *js, size_t len, uint64_t data_begin, uint64_t data_end,
                     sala_err *e)
{
    bool oom;
    cJSON *d = sala_json_parse(js, len, NULL, &oom);
    int rc = SALA_OK;
    if (!d && oom) return sala_errf(e, SALA_ENOMEM, "%s: out of memory", r->path);
    if (!cJSON_IsArray(d) || cJSON_GetArraySize(d) > SF_MAX_SECTIONS) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: section directory is malformed", r->path);
        goto fail;
    }
    size_t n = (size_t)cJSON_GetArraySize(d);
    r->sec = calloc(n ? n : 1, sizeof(*r->sec));
    if (!r->sec) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    uint64_t expect = data_begin;
    for (const cJSON *it = d->child; it; it = it->next) {
        section *s = &r->sec[r->nsec];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *sums = cJSON_GetObjectItemCaseSensitive(it, "sums");
        if (!cJSON_IsString(nm) || !parse_u64(cJSON_GetObjectItemCaseSensitive(it, "offset"), &s->offset) ||
            !parse_u64(cJSON_GetObjectItemCaseSensitive(it, "size"), &s->size) || !cJSON_IsArray(sums)) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: section directory entry %zu is malformed", r->path, r->nsec);
            goto fail;
        }
        if (!(s->name = strdup(nm->valuestring))) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        r->nsec++;
        if (s->offset != expect || s->size > data_end - s->offset) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s' at %" PRIu64 " (+%" PRIu64 " bytes) is "
                           "outside the data area", r->path, s->name, s->offset, s->size);
            goto fail;
        }
        expect = s->offset + s->size;
        size_t want = (size_t)((s->size + SF_CHUNK - 1) / SF_CHUNK);
        if ((size_t)cJSON_GetArraySize(sums) != want) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s' has %d checksums for %zu chunks", r->path,
                           s->name, cJSON_GetArraySize(sums), want);
            goto fail;
        }
        s->sums = malloc((want ? want : 1) * sizeof(*s->sums));
        if (!s->sums) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        for (const cJSON *h = sums->child; h; h = h->next) {
            char *end;
            if (!cJSON_IsString(h) || strlen(h->valuestring) != 16) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s': bad checksum entry", r->path, s->name);
                goto fail;
            }
            s->sums[s->nsums++] = strtoull(h->valuestring, &end, 16);
            if (*end) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s': bad checksum entry", r->path, s->name);
                goto fail;
            }
        }
        for (size_t k = 0; k + 1 < r->nsec; k++)
            if (!strcmp(r->sec[k].name, s->name)) {
                rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s' appears twice", r->path, s->name);
                goto fail;
            }
    }
    if (expect != data_end)
        rc = sala_errf(e, SALA_EFORMAT, "%s: %" PRIu64 " bytes between the sections and the directory",
                       r->path, data_end - expect);
fail:
    cJSON_Delete(d);
    return rc;
}

int sf_open(const char *path, const sf_field *expect, size_t nexpect, sf_reader **out, sala_err *e)
{
    *out = NULL;
    int rc = SALA_OK;
    char *buf = NULL;
    sf_reader *r = calloc(1, sizeof(*r));
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    atomic_flag_clear(&r->bounce_busy);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = errno == ENOENT ? sala_errf(e, SALA_ENOTFOUND, "%s: no such state file", path)
                             : io_err(e, path, "open");
        goto fail;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        rc = io_err(e, path, "stat");
        goto fail;
    }
    r->size = (uint64_t)st.st_size;
    unsigned char hdr[HDR_BYTES], ftr[FTR_BYTES];
    if (r->size < HDR_BYTES + FTR_BYTES || pread_all(r->fd, hdr, HDR_BYTES, 0) ||
        pread_all(r->fd, ftr, FTR_BYTES, r->size - FTR_BYTES)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: truncated state file (%" PRIu64 " bytes)", path, r->size);
        goto fail;
    }
    if (memcmp(hdr, MAGIC, 8) != 0) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: not a sala state file (bad magic)", path);
        goto fail;
    }
    if (get_u64(hdr + 8) != SF_VERSION) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: field 'format version': expected %d, file has %" PRIu64
                       "; run 'sala prefill' again", path, SF_VERSION, get_u64(hdr + 8));
        goto fail;
    }
    if (memcmp(ftr + 24, MAGIC_END, 8) != 0) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: truncated or damaged state file (no end marker)", path);
        goto fail;
    }
    uint64_t ml = get_u64(hdr + 16), doff = get_u64(ftr), dl = get_u64(ftr + 8);
    uint64_t limit = r->size - FTR_BYTES;
    if (ml > SF_MAX_META || ml > limit - HDR_BYTES || doff < HDR_BYTES + ml || doff > limit ||
        dl != limit - doff || dl > (64u << 20)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: inconsistent sizes in the header or footer", path);
        goto fail;
    }
    buf = malloc((size_t)(ml > dl ? ml : dl) + 1);
    if (!buf) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    if (pread_all(r->fd, buf, (size_t)ml, HDR_BYTES)) {
        rc = io_err(e, path, "read");
        goto fail;
    }
    if (XXH3_64bits(buf, (size_t)ml) != get_u64(hdr + 24)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: checksum mismatch in the metadata", path);
        goto fail;
    }
    bool oom;
    r->meta = sala_json_parse(buf, (size_t)ml, NULL, &oom);
    if (!r->meta && oom) {
        rc = sala_errf(e, SALA_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (!cJSON_IsObject(r->meta)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: metadata is not a JSON object", path);
        goto fail;
    }
    for (size_t i = 0; i < nexpect; i++) {
        const char *have = sf_meta(r, expect[i].key);
        if (!have || strcmp(have, expect[i].value) != 0) {
            rc = sala_errf(e, SALA_EINVAL, "%s: field '%s': expected %s, state file has %s; the cached "
                           "context no longer matches: run 'sala prefill' again", path, expect[i].key,
                           expect[i].value, have ? have : "(missing)");
            goto fail;
        }
    }
    if (pread_all(r->fd, buf, (size_t)dl, doff)) {
        rc = io_err(e, path, "read");
        goto fail;
    }
    if (XXH3_64bits(buf, (size_t)dl) != get_u64(ftr + 16)) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: checksum mismatch in the section directory", path);
        goto fail;
    }
    if ((rc = parse_dir(r, buf, (size_t)dl, HDR_BYTES + ml, doff, e))) goto fail;
    if (!(r->bounce = malloc(SF_CHUNK))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    free(buf);
    *out = r;
    return SALA_OK;
fail:
    free(buf);
    sf_close(r);
    return rc;
}

const char *sf_meta(const sf_reader *r, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r->meta, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static const section *find_section(const sf_reader *r, const char *name)
{
    for (size_t i = 0; i < r->nsec; i++)
        if (!strcmp(r->sec[i].name, name)) return &r->sec[i];
    return NULL;
}

int sf_section_size(const sf_reader *r, const char *name, size_t *size, sala_err *e)
{
    const section *s = find_section(r, name);
    if (!s) return sala_errf(e, SALA_ENOTFOUND, "%s: no section '%s'", r->path, name);
    *size = (size_t)s->size;
    return SALA_OK;
}

/* Thread-safe: chunks that land whole in dst are read and verified in place; a chunk of which
 * only a part is wanted goes through r->bounce, or through a private buffer when another thread
 * holds that one. pread on the shared descriptor has no file position to race on. */
int sf_read(sf_reader *r, const char *name, size_t off, void *dst, size_t n, sala_err *e)
{
    const section *s = find_section(r, name);
    if (!s) return sala_errf(e, SALA_ENOTFOUND, "%s: no section '%s'", r->path, name);
    if (off > s->size || n > s->size - off)
        return sala_errf(e, SALA_EINVAL, "%s: section '%s': read of %zu bytes at %zu past its end (%" PRIu64 ")",
                         r->path, name, n, off, s->size);
    unsigned char *out = dst, *bounce = NULL;
    bool own = false;   /* bounce is a private malloc (else r->bounce, flag held) */
    int rc = SALA_OK;
    size_t end = off + n;
    for (size_t c = off / SF_CHUNK; c * SF_CHUNK < end; c++) {
        size_t cb = c * SF_CHUNK, clen = (size_t)SALA_MIN((uint64_t)SF_CHUNK, s->size - cb);
        size_t lo = SALA_MAX(cb, off), hi = SALA_MIN(cb + clen, end);
        unsigned char *buf;
        if (lo == cb && hi == cb + clen) {
            buf = out + (cb - off);   /* the whole chunk lands in dst: read and verify in place */
        } else {
            if (!bounce) {
                if (!atomic_flag_test_and_set(&r->bounce_busy)) {
                    bounce = r->bounce;
                } else if ((bounce = malloc(SF_CHUNK))) {
                    own = true;
                } else {
                    rc = sala_errf(e, SALA_ENOMEM, "out of memory");
                    break;
                }
            }
            buf = bounce;
        }
        if (pread_all(r->fd, buf, clen, s->offset + cb)) {
            rc = io_err(e, r->path, "read");
            break;
        }
        if (XXH3_64bits(buf, clen) != s->sums[c]) {
            rc = sala_errf(e, SALA_EFORMAT, "%s: section '%s': checksum mismatch in chunk %zu (bytes "
                           "%zu..%zu); the state file is damaged: run 'sala prefill' again", r->path,
                           name, c, cb, cb + clen);
            break;
        }
        if (buf == bounce) memcpy(out + (lo - off), buf + (lo - cb), hi - lo);
    }
    if (own) free(bounce);
    else if (bounce) atomic_flag_clear(&r->bounce_busy);
    return rc;
}

int sf_verify(sf_reader *r, sala_err *e)
{
    unsigned char *buf = malloc(SF_CHUNK);
    if (!buf) return sala_errf(e, SALA_ENOMEM, "out of memory");
    int rc = SALA_OK;
    for (size_t i = 0; i < r->nsec && !rc; i++) {
        const section *s = &r->sec[i];
        for (uint64_t cb = 0; cb < s->size && !rc; cb += SF_CHUNK) {
            size_t clen = (size_t)SALA_MIN((uint64_t)SF_CHUNK, s->size - cb);
            rc = sf_read(r, s->name, (size_t)cb, buf, clen, e);
        }
    }
    free(buf);
    return rc;
}

int sf_cleanup(const char *dir, sala_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : io_err(e, dir, "opendir");
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *t = strstr(de->d_name, ".tmp-");
        if (!t) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (*end || pid <= 0) continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM) continue; /* alive */
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (unlink(p) == 0) removed++;
    }
    closedir(d);
    return removed;
}
