/* grep.c: PCRE2 search over segments (grep.h). */
#include "grep.h"

#include <stdbool.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
    ui_grep_fn fn;
    void *ud;
    int limit, n, stop;
} grep_ctx;

static size_t back_cp(const char *t, size_t at)
{
    while (at && ((unsigned char)t[at] & 0xC0) == 0x80) at--;
    return at;
}

static int on_seg(const db_seg *s, void *ud)
{
    grep_ctx *c = ud;
    size_t start = 0;
    while (c->n < c->limit) {
        int rc = pcre2_match(c->re, (PCRE2_SPTR)s->text, s->text_len, start, 0, c->md, NULL);
        if (rc < 0) break; /* no match, or a match-time error (limits): next segment */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t mo = ov[0], me = ov[1];
        size_t a = back_cp(s->text, mo > 60 ? mo - 60 : 0);
        size_t b = me + 100 < s->text_len ? back_cp(s->text, me + 100) : s->text_len;
        char snip[256];
        size_t n = SALA_MIN(b - a, sizeof(snip) - 1);
        memcpy(snip, s->text + a, n);
        snip[n] = 0;
        ui_grep_hit h = {s->doc_id, s->doc_name, s->locator, mo, me - mo, snip};
        c->n++;
        if (c->fn(&h, c->ud)) return c->stop = 1;
        start = me > mo ? me : me + 1;
        if (start > s->text_len) break;
        /* One hit per line is enough for a result list. */
        const char *nl = memchr(s->text + start, '\n', s->text_len - start);
        if (!nl) break;
        start = (size_t)(nl - s->text) + 1;
    }
    return c->n >= c->limit ? 1 : 0;
}

int ui_grep(db *d, int64_t corpus_id, const char *pattern, bool caseless, int limit,
            ui_grep_fn fn, void *ud, sala_err *e)
{
    int err;
    PCRE2_SIZE eoff;
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_MULTILINE | (caseless ? PCRE2_CASELESS : 0);
    grep_ctx c = {0};
    c.re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &eoff, NULL);
    if (!c.re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return sala_errf(e, SALA_EINVAL, "bad regex at offset %zu: %s", (size_t)eoff, (char *)msg);
    }
    pcre2_jit_compile(c.re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    c.md = pcre2_match_data_create_from_pattern(c.re, NULL);
    if (!c.md) {
        pcre2_code_free(c.re);
        return sala_errf(e, SALA_ENOMEM, "out of memory for regex match data");
    }
    c.fn = fn;
    c.ud = ud;
    c.limit = limit > 0 ? limit : 1000;
    int rc = db_seg_scan(d, corpus_id, on_seg, &c, e);
    if (rc > 0) rc = SALA_OK; /* stopped early on purpose */
    pcre2_match_data_free(c.md);
    pcre2_code_free(c.re);
    return rc;
}
