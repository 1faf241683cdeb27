/* text.c: decoding, sanitizing, widths and lazy wrapping of UTF-8 text for the TUI (text.h).
 * No curses here: everything is a pure function of its arguments (and the locale flag). */
#include "text.h"

#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

static bool utf8_term = true;

void ui_text_set_utf8(bool on) { utf8_term = on; }

static void glyph_set(ui_glyph *g, size_t n, int w, bool esc, const char *out)
{
    g->n = n;
    g->w = w;
    g->esc = esc;
    g->newline = false;
    g->outlen = strlen(out);
    memcpy(g->out, out, g->outlen + 1);
}

/* Characters that are printable by category but reorder or split the display: bidi
 * embeddings/overrides/isolates and the line/paragraph separators. */
static bool cp_disruptive(utf8proc_int32_t cp)
{
    return (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x200E || cp == 0x200F || cp == 0x061C;
}

void ui_glyph_next(const char *s, size_t len, size_t at, ui_glyph *g)
{
    unsigned char c = (unsigned char)s[at];
    char buf[16];
    if (c == '\n') {
        glyph_set(g, 1, 0, false, "");
        g->newline = true;
        return;
    }
    if (c == '\t') {
        glyph_set(g, 1, UI_TAB_WIDTH, false, "    ");
        return;
    }
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, sizeof(buf), "^%c", c ^ 0x40);
        glyph_set(g, 1, 2, true, buf);
        return;
    }
    if (c < 0x80) {
        buf[0] = (char)c;
        buf[1] = 0;
        glyph_set(g, 1, 1, false, buf);
        return;
    }
    utf8proc_int32_t cp;
    size_t avail = len - at < 4 ? len - at : 4;
    utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s + at, (utf8proc_ssize_t)avail, &cp);
    if (n <= 0 || cp < 0) {
        snprintf(buf, sizeof(buf), "\\x%02x", c);
        glyph_set(g, 1, 4, true, buf);
        return;
    }
    if (cp <= 0x9f) { /* C1 controls, U+0080..U+009F */
        snprintf(buf, sizeof(buf), "<%02X>", (unsigned)cp);
        glyph_set(g, (size_t)n, 4, true, buf);
        return;
    }
    if (cp_disruptive(cp)) {
        snprintf(buf, sizeof(buf), "<U+%04X>", (unsigned)cp);
        glyph_set(g, (size_t)n, (int)strlen(buf), true, buf);
        return;
    }
    utf8proc_category_t cat = utf8proc_category(cp);
    if (cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CS) {
        glyph_set(g, (size_t)n, 1, true, utf8_term ? "\xef\xbf\xbd" : "?");
        return;
    }
    int w = utf8proc_charwidth(cp);
    if (w < 0) w = 1;
    if (w > 2) w = 2;
    if (!utf8_term) {
        glyph_set(g, (size_t)n, w, false, w == 2 ? "??" : w == 1 ? "?" : "");
        return;
    }
    memcpy(buf, s + at, (size_t)n);
    buf[n] = 0;
    glyph_set(g, (size_t)n, w, false, buf);
}

int ui_text_width(const char *s, size_t len)
{
    int w = 0;
    ui_glyph g;
    for (size_t at = 0; at < len; at += g.n) {
        ui_glyph_next(s, len, at, &g);
        w += g.newline ? 1 : g.w;
    }
    return w;
}

int ui_text_fit(const char *s, size_t len, int maxw, char *out, size_t cap)
{
    int col = 0;
    size_t o = 0;
    ui_glyph g;
    if (!cap) return 0;
    for (size_t at = 0; at < len && col < maxw; at += g.n) {
        ui_glyph_next(s, len, at, &g);
        const char *p = g.out;
        size_t pl = g.outlen;
        int w = g.w;
        if (g.newline || s[at] == '\t') p = " ", pl = 1, w = 1;
        if (w == 0 && col == 0) p = " ", pl = 1, w = 1; /* a mark with nothing to sit on */
        if (col + w > maxw || o + pl + 1 > cap) break;
        memcpy(out + o, p, pl);
        o += pl;
        col += w;
    }
    out[o] = 0;
    return col;
}

static size_t anchor_k(const char *s, size_t len, size_t k)
{
    if (k > len / UI_ANCHOR) return len;
    size_t p = k * UI_ANCHOR;
    for (int i = 0; i < 3 && p < len && ((unsigned char)s[p] & 0xC0) == 0x80; i++) p++;
    return p < len ? p : len;
}

size_t ui_anchor_after(const char *s, size_t len, size_t at)
{
    size_t k = at / UI_ANCHOR, a = anchor_k(s, len, k);
    return a > at ? a : anchor_k(s, len, k + 1);
}

size_t ui_anchor_at_or_before(const char *s, size_t len, size_t at)
{
    size_t k = at / UI_ANCHOR, a = anchor_k(s, len, k);
    if (a <= at) return a;
    return k ? anchor_k(s, len, k - 1) : 0;
}

size_t ui_wrap_row(const char *s, size_t len, size_t at, int width, size_t *next)
{
    size_t lim = ui_anchor_after(s, len, at), p = at, brk = 0;
    int col = 0;
    if (width < 1) width = 1;
    ui_glyph g;
    while (p < lim) {
        if (s[p] == '\n') {
            *next = p + 1;
            return p;
        }
        ui_glyph_next(s, lim, p, &g);
        int w = g.w == 0 && col == 0 ? 1 : g.w;
        if (col + w > width && p > at) {
            if (brk) {
                *next = brk;
                return brk;
            }
            *next = p;
            return p;
        }
        col += w;
        p += g.n;
        if (s[p - g.n] == ' ' && col * 2 > width) brk = p;
    }
    *next = p;
    return p;
}

size_t ui_wrap_row_start(const char *s, size_t len, size_t q, int width)
{
    if (q >= len) q = len ? len - 1 : 0;
    size_t a = ui_anchor_at_or_before(s, len, q), base = a;
    for (size_t i = q; i > a; i--)
        if (s[i - 1] == '\n') {
            base = i;
            break;
        }
    size_t r = base;
    for (;;) {
        size_t nx;
        ui_wrap_row(s, len, r, width, &nx);
        if (nx > q || nx >= len || nx == r) return r;
        r = nx;
    }
}

static unsigned char lc(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

size_t ui_find_ci(const char *hay, size_t from, size_t to, const char *needle, size_t nlen)
{
    if (!nlen || to < from || to - from < nlen) return (size_t)-1;
    unsigned char f = lc((unsigned char)needle[0]);
    for (size_t i = from; i + nlen <= to; i++) {
        if (lc((unsigned char)hay[i]) != f) continue;
        size_t j = 1;
        while (j < nlen && lc((unsigned char)hay[i + j]) == lc((unsigned char)needle[j])) j++;
        if (j == nlen) return i;
    }
    return (size_t)-1;
}
