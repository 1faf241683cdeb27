/* scr_search.c: search a corpus, FTS5 (bm25 order, snippets) or regex (PCRE2, corpus order).
 * Two panes: the query line and the results; Tab moves between them, ^T switches the mode.
 * Enter on a result opens the viewer at the hit with the query highlighted. */
#include "ui.h"
#include "ui/grep.h"

#include <stdlib.h>
#include <string.h>

#define SEARCH_LIMIT 200

typedef struct {
    int64_t doc_id;
    char *name, *locator, *snippet, *match;
    size_t off;
} result;

typedef struct {
    ui_screen base;
    int64_t corpus_id;
    char corpus[256], title[320];
    bool regex, focus_results;
    ui_line q;
    char ran[UI_LINE_MAX + 1];  /* the query the results are for */
    result *res;
    ui_list list;
    char err[SALA_ERR_MAX];
} scr_search;

static void res_clear(scr_search *s)
{
    for (int i = 0; i < s->list.n; i++) {
        result *r = &s->res[i];
        free(r->name), free(r->locator), free(r->snippet), free(r->match);
    }
    free(s->res);
    s->res = NULL;
    s->list = (ui_list){0, 0, 0};
}

static int res_add(scr_search *s, int64_t doc, const char *name, const char *loc, const char *snip,
                   size_t off, const char *match, size_t mlen)
{
    result *n = realloc(s->res, (size_t)(s->list.n + 1) * sizeof(*n));
    if (!n) return SALA_ENOMEM;
    s->res = n;
    result *r = &n[s->list.n];
    r->doc_id = doc;
    r->off = off;
    r->name = strdup(name ? name : "?");
    r->locator = strdup(loc ? loc : "");
    r->snippet = strdup(snip ? snip : "");
    r->match = match ? strndup(match, mlen) : NULL;
    if (!r->name || !r->locator || !r->snippet || (match && !r->match)) {
        free(r->name), free(r->locator), free(r->snippet), free(r->match);
        return SALA_ENOMEM;
    }
    s->list.n++;
    return 0;
}

static int on_fts(const db_hit *h, void *ud)
{
    return res_add(ud, h->doc_id, h->doc_name, h->locator, h->snippet, 0, NULL, 0);
}

static int on_grep(const ui_grep_hit *h, void *ud)
{
    scr_search *s = ud;
    /* The match text is found again in the snippet for highlighting in the viewer. */
    const char *m = h->snippet;
    size_t before = h->off > 60 ? 60 : h->off;
    size_t sl = strlen(h->snippet);
    size_t mo = SALA_MIN(before, sl), ml = SALA_MIN(h->len, sl - mo);
    return res_add(s, h->doc_id, h->doc_name, h->locator, h->snippet, h->off, m + mo, SALA_MIN(ml, 200));
}

static void run(scr_search *s, ui_app *a)
{
    sala_err e = {0, ""};
    res_clear(s);
    s->err[0] = 0;
    snprintf(s->ran, sizeof(s->ran), "%s", s->q.buf);
    if (!s->q.len) return;
    double t0 = sala_now();
    int rc = s->regex ? ui_grep(a->d, s->corpus_id, s->q.buf, true, SEARCH_LIMIT, on_grep, s, &e)
                      : db_search(a->d, s->corpus_id, s->q.buf, SEARCH_LIMIT, on_fts, s, &e);
    if (rc) snprintf(s->err, sizeof(s->err), "%s", e.msg);
    else
        ui_msg(a, SALA_LOG_INFO, "%d result%s in %.0f ms", s->list.n, s->list.n == 1 ? "" : "s",
               (sala_now() - t0) * 1e3);
    if (s->list.n) s->focus_results = true;
    s->base.typing = !s->focus_results;
}

static void scr_search_draw(ui_screen *base, ui_app *a, int y, int h, int w)
{
    scr_search *s = (scr_search *)base;
    (void)a;
    char prompt[32];
    snprintf(prompt, sizeof(prompt), "%s: ", s->regex ? "regex" : "fts");
    ui_line_draw(&s->q, y, 0, w, prompt, !s->focus_results);
    if (h < 2) return;
    y++, h--;
    if (s->err[0]) {
        ui_puts(y, 1, w - 1, s->err, ui_attr(UI_A_ERR));
        return;
    }
    if (!s->ran[0]) {
        ui_puts(y, 1, w - 1,
                s->regex ? "Type a PCRE2 pattern (case-insensitive), Enter to search."
                         : "Type words (FTS5 syntax: AND OR NOT \"phrase\" prefix*), Enter to search.",
                A_DIM);
        return;
    }
    ui_printf(y, 0, w, ui_attr(UI_A_HEAD), " %d result%s for %s", s->list.n,
              s->list.n == 1 ? "" : "s", s->ran);
    y++, h--;
    /* Two rows per result when there is room: "name  locator" and the snippet. */
    int per = h >= 6 ? 2 : 1, vis = SALA_MAX(1, h / per);
    ui_list_fit(&s->list, vis);
    for (int r = 0; r < vis && s->list.top + r < s->list.n; r++) {
        int i = s->list.top + r, yy = y + r * per;
        const result *res = &s->res[i];
        bool sel = i == s->list.sel && s->focus_results;
        int at = sel ? ui_attr(UI_A_SEL) : UI_NORMAL;
        if (sel) ui_fill(yy, 0, w, at);
        int x = ui_puts(yy, 1, w - 1, res->name, at | A_BOLD);
        x += 1 + ui_puts(yy, x + 2, w - x - 2, res->locator, sel ? at : ui_attr(UI_A_LABEL));
        if (per == 2) ui_puts(yy + 1, 3, w - 3, res->snippet, A_DIM);
        else if (w - x - 4 > 8) ui_puts(yy, x + 3, w - x - 3, res->snippet, at | A_DIM);
    }
}

static int scr_search_key(ui_screen *base, ui_app *a, int key)
{
    scr_search *s = (scr_search *)base;
    if (key == UI_CTRL('t')) {
        s->regex = !s->regex;
        if (s->ran[0]) run(s, a);
        return UI_KEY_HANDLED;
    }
    if (key == '\t' || key == UI_FKEY(KEY_BTAB)) {
        s->focus_results = !s->focus_results && s->list.n;
        base->typing = !s->focus_results;
        return UI_KEY_HANDLED;
    }
    if (!s->focus_results) {
        if (key == '\r' || key == '\n' || key == UI_FKEY(KEY_ENTER)) {
            ui_line_hist_add(&s->q, s->q.buf);
            run(s, a);
            return UI_KEY_HANDLED;
        }
        if (key == UI_ESC) return UI_KEY_UNHANDLED;
        return ui_line_key(&s->q, key) ? UI_KEY_HANDLED : UI_KEY_UNHANDLED;
    }
    if (ui_list_key(&s->list, key, SALA_MAX(1, (a->rows - 4) / 2))) return UI_KEY_HANDLED;
    switch (key) {
    case '/': case UI_FKEY(KEY_BACKSPACE): case 127:
        s->focus_results = false;
        base->typing = true;
        return UI_KEY_HANDLED;
    case 'm': s->regex = !s->regex; run(s, a); return UI_KEY_HANDLED;
    case '\r': case '\n': case UI_FKEY(KEY_ENTER): case 'l': case UI_FKEY(KEY_RIGHT): {
        if (!s->list.n) return UI_KEY_HANDLED;
        const result *r = &s->res[s->list.sel];
        char hl[UI_LINE_MAX + 16];
        if (s->regex) snprintf(hl, sizeof(hl), "regex:%s", r->match ? r->match : "");
        else snprintf(hl, sizeof(hl), "%s", s->ran);
        ui_push(a, scr_view_new(a, r->doc_id, r->locator, r->off, hl));
        return UI_KEY_HANDLED;
    }
    default: return UI_KEY_UNHANDLED;
    }
}

static void scr_search_free(ui_screen *base)
{
    scr_search *s = (scr_search *)base;
    res_clear(s);
    ui_line_free(&s->q);
    free(s);
}

ui_screen *scr_search_new(ui_app *a, int64_t corpus_id, const char *corpus)
{
    (void)a;
    scr_search *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->corpus_id = corpus_id;
    snprintf(s->corpus, sizeof(s->corpus), "%s", corpus);
    snprintf(s->title, sizeof(s->title), "Search \xe2\x80\xba %s", corpus);
    ui_line_init(&s->q);
    s->base = (ui_screen){
        .title = s->title,
        .draw = scr_search_draw,
        .key = scr_search_key,
        .free = scr_search_free,
        .hints = "Enter search/open  Tab pane  ^T fts/regex  Esc back",
        .help = "Search\n"
                "  Enter            run the query / open the result at the hit\n"
                "  Tab              query line <-> results;  / back to the query\n"
                "  ^T (m in results) switch FTS5 <-> regex (PCRE2, case-insensitive)\n"
                "  Up/Down          results, or the query history on the query line\n"
                "  line editing     ^A ^E ^B ^F ^K ^U ^W, Home End Del",
        .typing = true,
    };
    return &s->base;
}
