/* doc.c: the extracted-document container (see doc.h). */
#include "doc.h"

#include <stdlib.h>
#include <string.h>

void ing_doc_init(ing_doc *d)
{
    memset(d, 0, sizeof(*d));
    d->pages = -1;
}

void ing_doc_clear(ing_doc *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->segs[i].locator);
        free(d->segs[i].text);
    }
    free(d->segs);
    free(d->title);
    free(d->author);
    ing_doc_init(d);
}

static int grow(ing_doc *d, size_t more, sala_err *e)
{
    size_t need;
    if (sala_add_ovf(&need, d->n, more)) return sala_errf(e, SALA_ERANGE, "too many segments");
    if (need <= d->cap) return SALA_OK;
    size_t cap = d->cap ? d->cap : 64, bytes;
    while (cap < need) cap *= 2;
    if (sala_mul_ovf(&bytes, cap, sizeof(ing_seg)))
        return sala_errf(e, SALA_ERANGE, "too many segments");
    ing_seg *s = realloc(d->segs, bytes);
    if (!s) return sala_errf(e, SALA_ENOMEM, "out of memory for %zu segments", cap);
    d->segs = s;
    d->cap = cap;
    return SALA_OK;
}

int ing_doc_seg_add(ing_doc *d, const char *locator, int64_t page, int64_t line_first,
                    int64_t line_last, const char *text, size_t len, sala_err *e)
{
    int rc = grow(d, 1, e);
    if (rc) return rc;
    size_t tot;
    if (sala_add_ovf(&tot, d->bytes, len) || len == SIZE_MAX)
        return sala_errf(e, SALA_ERANGE, "document text too large");
    char *t = malloc(len + 1), *l = strdup(locator);
    if (!t || !l) {
        free(t);
        free(l);
        return sala_errf(e, SALA_ENOMEM, "out of memory for a segment of %zu bytes", len);
    }
    memcpy(t, text, len);
    t[len] = 0;
    d->segs[d->n++] = (ing_seg){l, page, line_first, line_last, t, len};
    d->bytes = tot;
    return SALA_OK;
}

int ing_doc_meta_set(ing_doc *d, const char *key, const char *val, sala_err *e)
{
    char **slot = !strcmp(key, "title") ? &d->title : !strcmp(key, "author") ? &d->author : NULL;
    if (!slot) return sala_errf(e, SALA_EINVAL, "unknown metadata key '%s'", key);
    char buf[501];
    size_t n = 0;
    bool space = false, capped = false;
    for (const unsigned char *p = (const unsigned char *)(val ? val : ""); *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            space = n > 0;
            continue;
        }
        if (space && n + 1 < sizeof(buf) - 1) buf[n++] = ' ';
        space = false;
        if (n + 1 >= sizeof(buf)) {
            capped = true;
            break;
        }
        buf[n++] = (char)*p;
    }
    /* At the cap, drop the last (possibly cut) UTF-8 sequence rather than store half of it. */
    if (capped) {
        while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80) n--;
        if (n > 0 && (unsigned char)buf[n - 1] >= 0x80) n--;
    }
    buf[n] = 0;
    free(*slot);
    *slot = NULL;
    if (n == 0) return SALA_OK;
    *slot = strdup(buf);
    return *slot ? SALA_OK : sala_errf(e, SALA_ENOMEM, "out of memory");
}

int ing_doc_append(ing_doc *dst, ing_doc *src, sala_err *e)
{
    int rc = grow(dst, src->n, e);
    if (rc) return rc;
    size_t tot;
    if (sala_add_ovf(&tot, dst->bytes, src->bytes))
        return sala_errf(e, SALA_ERANGE, "document text too large");
    if (src->n) memcpy(dst->segs + dst->n, src->segs, src->n * sizeof(ing_seg));
    dst->n += src->n;
    dst->bytes = tot;
    src->n = 0;
    src->bytes = 0;
    return SALA_OK;
}
