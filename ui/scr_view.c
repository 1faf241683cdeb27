/* scr_view.c: the document viewer: the document's segments in order, each under a header row
 * with its locator (page, element path or line range), code and text with line numbers,
 * highlighted search terms, `/` to search inside, n/N between matches, [ ] between segments.
 *
 * Layout is lazy: the state is only the top row's position (segment, byte offset of a row
 * start); each frame wraps the rows on screen and nothing else, and scrolling up finds the
 * previous row start from at most UI_ANCHOR bytes (text.h), so a 10 MB single line costs no
 * more per key than a short one. */
#include "ui.h"

#include <stdlib.h>
#include <string.h>

#define HL_MAX 8

typedef struct {
    char *locator, *text;
    size_t len;
    int64_t page, line_first;
    size_t nl_off;           /* line-number cache: text[0..nl_off) holds nl_count newlines */
    int64_t nl_count;
} vseg;

typedef struct {
    int seg;
    size_t off;
    bool head;               /* the segment's header row */
} vpos;

typedef struct {
    ui_screen base;
    char title[300];
    vseg *segs;
    int nsegs;
    vpos top;
    int width;               /* wrap width used for top (0: not laid out yet) */
    int page;                /* rows of the last frame */
    char *hl[HL_MAX];        /* highlighted terms (ASCII case-insensitive) */
    size_t hllen[HL_MAX];
    int nhl;
    bool finding;
    ui_line find;
    vpos pending;            /* jump target to apply at the first draw (needs the width) */
    size_t pending_off;
    bool has_pending;
} scr_view;

/* ---- rows ---- */

/* The wrap width of segment k in a w-column pane: a 7-column line-number gutter for segments
 * with line numbers when the pane is 30+ columns wide. */
static int gutter_of(const scr_view *s, int k, int w)
{
    return w >= 30 && s->segs[k].line_first >= 0 ? 7 : 0;
}

static int seg_w(const scr_view *s, int k, int w) { return SALA_MAX(1, w - gutter_of(s, k, w)); }

static bool row_next(const scr_view *s, vpos *p, int w)
{
    const vseg *g = &s->segs[p->seg];
    if (p->head && g->len) {
        *p = (vpos){p->seg, 0, false};
        return true;
    }
    if (!p->head) {
        size_t nx;
        ui_wrap_row(g->text, g->len, p->off, seg_w(s, p->seg, w), &nx);
        if (nx < g->len) {
            p->off = nx;
            return true;
        }
    }
    if (p->seg + 1 >= s->nsegs) return false;
    *p = (vpos){p->seg + 1, 0, true};
    return true;
}

static bool row_prev(const scr_view *s, vpos *p, int w)
{
    if (p->head) {
        if (p->seg == 0) return false;
        const vseg *g = &s->segs[p->seg - 1];
        if (!g->len) *p = (vpos){p->seg - 1, 0, true};
        else *p = (vpos){p->seg - 1, ui_wrap_row_start(g->text, g->len, g->len - 1, seg_w(s, p->seg - 1, w)), false};
        return true;
    }
    if (p->off == 0) {
        p->head = true;
        return true;
    }
    const vseg *g = &s->segs[p->seg];
    p->off = ui_wrap_row_start(g->text, g->len, p->off - 1, seg_w(s, p->seg, w));
    return true;
}

static int64_t line_of(vseg *g, size_t off)
{
    if (off < g->nl_off) g->nl_off = 0, g->nl_count = 0;
    const char *p = g->text + g->nl_off, *end = g->text + off;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) p++, g->nl_count++;
    g->nl_off = off;
    return g->line_first + g->nl_count;
}

/* ---- highlight ---- */

static void hl_clear(scr_view *s)
{
    for (int i = 0; i < s->nhl; i++) free(s->hl[i]);
    s->nhl = 0;
}

/* Words of q (3+ bytes, not FTS operators) become the terms; literal keeps q whole. */
static void hl_set(scr_view *s, const char *q, bool literal)
{
    hl_clear(s);
    if (!q || !*q) return;
    if (literal) {
        if ((s->hl[0] = strdup(q))) s->hllen[0] = strlen(q), s->nhl = 1;
        return;
    }
    for (const char *p = q; *p && s->nhl < HL_MAX;) {
        while (*p && !(((unsigned char)*p & 0x80) || (*p >= '0' && *p <= '9') ||
                       ((*p | 32) >= 'a' && (*p | 32) <= 'z') || *p == '_'))
            p++;
        const char *w = p;
        while (*p && (((unsigned char)*p & 0x80) || (*p >= '0' && *p <= '9') ||
                      ((*p | 32) >= 'a' && (*p | 32) <= 'z') || *p == '_'))
            p++;
        size_t n = (size_t)(p - w);
        if (n < 3) continue; /* "a", "of", "is": too common to be worth highlighting */
        if ( (n == 3 && !strncmp(w, "AND", 3)) ||
            (n == 3 && !strncmp(w, "NOT", 3)) || (n == 4 && !strncmp(w, "NEAR", 4)))
            continue;
        if ((s->hl[s->nhl] = strndup(w, n))) s->hllen[s->nhl++] = n;
    }
}

/* The first match of any term in text[from..to), or (size_t)-1; *mlen its length. */
static size_t hl_find(const scr_view *s, const char *t, size_t from, size_t to, size_t *mlen)
{
    size_t best = (size_t)-1;
    for (int i = 0; i < s->nhl; i++) {
        size_t m = ui_find_ci(t, from, to, s->hl[i], s->hllen[i]);
        if (m < best) best = m, *mlen = s->hllen[i];
    }
    return best;
}

/* ---- drawing ---- */

static void draw_text_row(scr_view *s, vseg *g, size_t at, size_t end, int y, int x, int w)
{
    /* Matches overlapping the row, as byte intervals. */
    size_t ms[32], me[32];
    int nm = 0;
    if (s->nhl) {
        size_t maxl = 0;
        for (int i = 0; i < s->nhl; i++) maxl = SALA_MAX(maxl, s->hllen[i]);
        size_t from = at > maxl ? at - maxl + 1 : 0, to = SALA_MIN(g->len, end + maxl);
        size_t ml = 0, m;
        while (nm < 32 && (m = hl_find(s, g->text, from, to, &ml)) != (size_t)-1) {
            if (m + ml > at) ms[nm] = m, me[nm] = m + ml, nm++;
            from = m + 1;
        }
    }
    int col = 0;
    ui_glyph gl;
    for (size_t p = at; p < end && col < w; p += gl.n) {
        ui_glyph_next(g->text, end, p, &gl);
        bool hit = false;
        for (int k = 0; k < nm && !hit; k++) hit = p >= ms[k] && p < me[k];
        int attr = hit ? ui_attr(UI_A_HL) : UI_NORMAL;
        if (gl.w == 0 && col > 0 && !gl.newline) { /* a combining mark joins the cell before */
            attrset(attr);
            addstr(gl.out);
            attrset(UI_NORMAL);
            continue;
        }
        /* One glyph through ui_put keeps the sanitizing in one place. */
        int used = ui_put(y, x + col, w - col, g->text + p, gl.n, attr);
        if (!used && gl.w > 0) break;
        col += used;
    }
}

static void apply_pending(scr_view *s, int tw)
{
    if (!s->has_pending) return;
    s->has_pending = false;
    vseg *g = &s->segs[s->pending.seg];
    size_t off = SALA_MIN(s->pending_off, g->len);
    size_t ml = 0, m = s->nhl ? hl_find(s, g->text, off, g->len, &ml) : (size_t)-1;
    if (m != (size_t)-1) off = m;
    if (off == 0 && m == (size_t)-1) {
        s->top = (vpos){s->pending.seg, 0, true};
        return;
    }
    if (off >= g->len) off = g->len ? g->len - 1 : 0;
    s->top = (vpos){s->pending.seg, g->len ? ui_wrap_row_start(g->text, g->len, off, seg_w(s, s->pending.seg, tw)) : 0, !g->len};
    /* Two rows of context above the target. */
    for (int i = 0; i < 2 && row_prev(s, &s->top, tw); i++) {}
}

static void scr_view_draw(ui_screen *base, ui_app *a, int y, int h, int w)
{
    scr_view *s = (scr_view *)base;
    (void)a;
    if (s->finding) {
        ui_line_draw(&s->find, y + h - 1, 0, w, "find: ", true);
        h--;
    }
    if (h < 1 || !s->nsegs) {
        if (!s->nsegs && h >= 1) ui_puts(y, 1, w - 1, "This document has no text.", A_DIM);
        return;
    }
    int tw = w;
    bool info = h >= 4;
    int rows = info ? h - 1 : h;
    s->page = rows;
    apply_pending(s, tw);
    if (s->width != tw && !s->top.head) {
        vseg *g = &s->segs[s->top.seg];
        s->top.off = g->len ? ui_wrap_row_start(g->text, g->len, s->top.off, seg_w(s, s->top.seg, tw)) : 0;
    }
    s->width = tw;
    vpos p = s->top;
    for (int r = 0; r < rows; r++) {
        vseg *g = &s->segs[p.seg];
        int yy = y + r;
        if (p.head) {
            int x = ui_puts(yy, 0, w, "\xe2\x94\x80\xe2\x94\x80 ", ui_attr(UI_A_DIM));
            x += ui_puts(yy, x, w - x, g->locator, ui_attr(UI_A_LABEL));
            x += ui_puts(yy, x, w - x, " ", UI_NORMAL);
            for (; x < w; x++) ui_puts(yy, x, 1, "\xe2\x94\x80", ui_attr(UI_A_DIM));
        } else {
            int gut = gutter_of(s, p.seg, w), sw = seg_w(s, p.seg, w);
            size_t nx, end = ui_wrap_row(g->text, g->len, p.off, sw, &nx);
            if (gut && g->line_first >= 0 && (p.off == 0 || g->text[p.off - 1] == '\n'))
                ui_printf(yy, 0, gut, ui_attr(UI_A_DIM), "%*lld ", gut - 1,
                          (long long)line_of(g, p.off));
            draw_text_row(s, g, p.off, end, yy, gut, sw);
        }
        if (!row_next(s, &p, tw)) break;
    }
    if (info) {
        const vseg *g = &s->segs[s->top.seg];
        char pct[16] = "";
        if (g->len > 4096)
            snprintf(pct, sizeof(pct), " %3d%%", (int)(100.0 * (double)s->top.off / (double)g->len));
        ui_fill(y + h - 1 - (s->finding ? 0 : 0), 0, w, A_REVERSE | A_DIM);
        char buf[600];
        snprintf(buf, sizeof(buf), " %s  segment %d/%d%s%s%s", g->locator, s->top.seg + 1, s->nsegs,
                 pct, s->nhl ? "  highlight: " : "", s->nhl ? s->hl[0] : "");
        ui_puts(y + rows, 0, w, buf, A_REVERSE);
    }
}

/* ---- keys ---- */

static void jump_match(scr_view *s, ui_app *a, bool forward)
{
    if (!s->nhl) {
        ui_msg(a, SALA_LOG_INFO, "no search term: press / to find");
        return;
    }
    int tw = s->width ? s->width : 80;
    size_t ml = 0;
    if (forward) {
        size_t from = s->top.head ? 0 : s->top.off;
        /* Skip the matches on the rows already shown above the target's context. */
        vpos q = s->top;
        for (int i = 0; i < 3 && !q.head && q.seg == s->top.seg; i++) {
            size_t nx;
            ui_wrap_row(s->segs[q.seg].text, s->segs[q.seg].len, q.off, seg_w(s, q.seg, tw), &nx);
            from = nx;
            if (!row_next(s, &q, tw) || q.head) break;
        }
        for (int k = s->top.seg; k < s->nsegs; k++, from = 0) {
            size_t m = hl_find(s, s->segs[k].text, from, s->segs[k].len, &ml);
            if (m != (size_t)-1) {
                s->pending = (vpos){k, 0, false};
                s->pending_off = m;
                s->has_pending = true;
                return;
            }
        }
    } else {
        size_t to = s->top.head ? 0 : s->top.off;
        for (int k = s->top.seg; k >= 0; k--) {
            if (k != s->top.seg) to = s->segs[k].len;
            size_t last = (size_t)-1, m, from = 0;
            while ((m = hl_find(s, s->segs[k].text, from, to, &ml)) != (size_t)-1) last = m, from = m + 1;
            if (last != (size_t)-1) {
                s->pending = (vpos){k, 0, false};
                s->pending_off = last;
                s->has_pending = true;
                return;
            }
        }
    }
    ui_msg(a, SALA_LOG_INFO, "no more matches %s", forward ? "below" : "above");
}

static int scr_view_key(ui_screen *base, ui_app *a, int key)
{
    scr_view *s = (scr_view *)base;
    int tw = s->width ? s->width : SALA_MAX(1, a->cols);
    int page = SALA_MAX(1, s->page - 1);
    if (s->finding) {
        if (key == '\r' || key == '\n' || key == UI_FKEY(KEY_ENTER)) {
            s->finding = base->typing = false;
            ui_line_hist_add(&s->find, s->find.buf);
            hl_set(s, s->find.buf, true);
            jump_match(s, a, true);
        } else if (key == UI_ESC || key == UI_CTRL('g')) {
            s->finding = base->typing = false;
        } else {
            ui_line_key(&s->find, key);
        }
        return UI_KEY_HANDLED;
    }
    if (!s->nsegs) return UI_KEY_UNHANDLED;
    vpos p;
    switch (key) {
    case UI_FKEY(KEY_DOWN): case 'j': case UI_CTRL('n'): row_next(s, &s->top, tw); break;
    case UI_FKEY(KEY_UP): case 'k': case UI_CTRL('p'): row_prev(s, &s->top, tw); break;
    case UI_FKEY(KEY_NPAGE): case ' ': case UI_CTRL('f'):
        for (int i = 0; i < page && row_next(s, &s->top, tw); i++) {}
        break;
    case UI_FKEY(KEY_PPAGE): case 'b': case UI_CTRL('b'):
        for (int i = 0; i < page && row_prev(s, &s->top, tw); i++) {}
        break;
    case UI_FKEY(KEY_HOME): case 'g': s->top = (vpos){0, 0, true}; break;
    case UI_FKEY(KEY_END): case 'G': {
        const vseg *g = &s->segs[s->nsegs - 1];
        s->top = g->len ? (vpos){s->nsegs - 1, ui_wrap_row_start(g->text, g->len, g->len - 1, seg_w(s, s->nsegs - 1, tw)), false}
                        : (vpos){s->nsegs - 1, 0, true};
        for (int i = 0; i < page && row_prev(s, &s->top, tw); i++) {}
        break;
    }
    case ']': if (s->top.seg + 1 < s->nsegs) s->top = (vpos){s->top.seg + 1, 0, true}; break;
    case '[':
        p = s->top;
        if (p.head && p.seg) p.seg--;
        s->top = (vpos){p.seg, 0, true};
        break;
    case '/': case UI_CTRL('s'):
        s->finding = base->typing = true;
        ui_line_set(&s->find, "");
        break;
    case 'n': jump_match(s, a, true); break;
    case 'N': jump_match(s, a, false); break;
    case UI_FKEY(KEY_LEFT): case 'h': ui_pop(a); break;
    default: return UI_KEY_UNHANDLED;
    }
    return UI_KEY_HANDLED;
}

static void scr_view_free(ui_screen *base)
{
    scr_view *s = (scr_view *)base;
    for (int i = 0; i < s->nsegs; i++) free(s->segs[i].locator), free(s->segs[i].text);
    free(s->segs);
    hl_clear(s);
    ui_line_free(&s->find);
    free(s);
}

static int on_seg(const db_seg *g, void *ud)
{
    scr_view *s = ud;
    vseg *n = realloc(s->segs, (size_t)(s->nsegs + 1) * sizeof(*n));
    if (!n) return SALA_ENOMEM;
    s->segs = n;
    vseg *v = &n[s->nsegs];
    memset(v, 0, sizeof(*v));
    v->locator = strdup(g->locator ? g->locator : "");
    v->text = malloc(g->text_len + 1);
    if (!v->locator || !v->text) {
        free(v->locator), free(v->text);
        return SALA_ENOMEM;
    }
    memcpy(v->text, g->text, g->text_len);
    v->text[g->text_len] = 0;
    v->len = g->text_len;
    v->page = g->page;
    v->line_first = g->line_first;
    if (!s->nsegs && g->doc_name)
        snprintf(s->title, sizeof(s->title), "Viewer \xe2\x80\xba %s", g->doc_name);
    s->nsegs++;
    return 0;
}

ui_screen *scr_view_new(ui_app *a, int64_t doc_id, const char *locator, size_t off, const char *hl)
{
    scr_view *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    sala_err e = {0, ""};
    snprintf(s->title, sizeof(s->title), "Viewer");
    ui_line_init(&s->find);
    s->base = (ui_screen){
        .title = s->title,
        .draw = scr_view_draw,
        .key = scr_view_key,
        .free = scr_view_free,
        .hints = "j/k scroll  Space/b page  [ ] segment  / find  n/N next/prev  q back",
        .help = "Viewer\n"
                "  j/k, Up/Down     one row        Space/b, PgDn/PgUp  one page\n"
                "  g/G              start/end      [ ]                 previous/next segment\n"
                "  /                find (case-insensitive)   n/N      next/previous match\n"
                "  The row above each segment is its locator (page, element, lines).",
    };
    if (db_seg_list(a->d, doc_id, -1, NULL, on_seg, s, &e)) {
        ui_msg(a, SALA_LOG_ERROR, "cannot open document %lld: %s", (long long)doc_id, e.msg);
        scr_view_free(&s->base);
        return NULL;
    }
    s->top = (vpos){0, 0, true};
    if (hl && !strncmp(hl, "regex:", 6)) hl_set(s, hl + 6, true);
    else hl_set(s, hl, false);
    int target = 0;
    if (locator) {
        target = -1;
        for (int i = 0; i < s->nsegs && target < 0; i++)
            if (!strcmp(s->segs[i].locator, locator)) target = i;
        if (target < 0) {
            ui_msg(a, SALA_LOG_WARN, "locator '%s' is no longer in the document", locator);
            target = 0;
        }
    }
    if (s->nsegs && (locator || s->nhl)) {
        s->pending = (vpos){target, 0, false};
        s->pending_off = off;
        s->has_pending = true;
    }
    return &s->base;
}
