/* scr_ask.c: ask a corpus. Panes: the question line (editing, history), the answer (streamed
 * from an ask_backend as poll() produces it, with a thinking toggle), the evidence list (Enter
 * opens the source at the citation) and the earlier questions of this corpus (Enter asks again).
 * Today's backend is retrieval mode (ask.h): the pane title says so on every answer. */
#include "ui.h"
#include "ui/ask.h"

#include <stdlib.h>
#include <string.h>

enum { P_INPUT, P_ANSWER, P_CITES, P_QUESTIONS, P_COUNT };

typedef struct {
    int64_t doc_id;
    char *name, *locator, *excerpt;
} cite;

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

typedef struct {
    ui_screen base;
    int64_t corpus_id;
    char corpus[256], title[320];
    ask_backend *be;
    bool running, show_thinking, follow;
    int focus;
    ui_line in;
    char asked[UI_LINE_MAX + 1];
    sbuf answer, thinking;
    int ans_top, ans_rows;   /* answer scroll (rows) and the row count of the last frame */
    cite *cites;
    ui_list cl;
    ui_list ql;              /* over this corpus's questions, newest first */
    char err[SALA_ERR_MAX];
    double t_start;
} scr_ask;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = SALA_MAX(b->cap * 2, b->len + n + 1);
        if (nc < 256) nc = 256;
        char *p = realloc(b->s, nc);
        if (!p) return;
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void cites_clear(scr_ask *s)
{
    for (int i = 0; i < s->cl.n; i++) free(s->cites[i].name), free(s->cites[i].locator), free(s->cites[i].excerpt);
    free(s->cites);
    s->cites = NULL;
    s->cl = (ui_list){0, 0, 0};
}

static void on_text(void *ud, ask_text_kind k, const char *t, size_t n)
{
    scr_ask *s = ud;
    sb_add(k == ASK_TEXT_THINKING ? &s->thinking : &s->answer, t, n);
}

static void on_cite(void *ud, const ask_cite *c)
{
    scr_ask *s = ud;
    cite *n = realloc(s->cites, (size_t)(s->cl.n + 1) * sizeof(*n));
    if (!n) return;
    s->cites = n;
    cite *x = &n[s->cl.n];
    x->doc_id = c->doc_id;
    x->name = strdup(c->doc_name ? c->doc_name : "?");
    x->locator = strdup(c->locator ? c->locator : "");
    x->excerpt = strdup(c->excerpt ? c->excerpt : "");
    if (!x->name || !x->locator || !x->excerpt) {
        free(x->name), free(x->locator), free(x->excerpt);
        return;
    }
    s->cl.n++;
}

/* The questions of this corpus, newest first: index r of the list -> index in a->qs. */
static int qs_count(const scr_ask *s, const ui_app *a)
{
    int n = 0;
    for (size_t i = 0; i < a->nqs; i++) n += a->qs[i].corpus_id == s->corpus_id;
    return n;
}

static const char *qs_get(const scr_ask *s, const ui_app *a, int r)
{
    for (size_t i = a->nqs; i-- > 0;)
        if (a->qs[i].corpus_id == s->corpus_id && r-- == 0) return a->qs[i].q;
    return NULL;
}

static void ask(scr_ask *s, ui_app *a, const char *q)
{
    sala_err e = {0, ""};
    if (!*q) return;
    if (s->running) s->be->cancel(s->be);
    snprintf(s->asked, sizeof(s->asked), "%s", q);
    s->answer.len = s->thinking.len = 0;
    if (s->answer.s) s->answer.s[0] = 0;
    cites_clear(s);
    s->err[0] = 0;
    s->ans_top = 0;
    s->follow = true;
    ui_line_hist_add(&s->in, q);
    ui_question_add(a, s->corpus_id, q);
    s->ql.n = qs_count(s, a);
    s->ql.sel = 0;
    ui_line_set(&s->in, "");
    s->t_start = sala_now();
    if (s->be->start(s->be, q, &e)) {
        snprintf(s->err, sizeof(s->err), "%s", e.msg);
        s->running = false;
        return;
    }
    s->running = true;
}

static bool scr_ask_tick(ui_screen *base, ui_app *a)
{
    scr_ask *s = (scr_ask *)base;
    (void)a;
    if (!s->running) return false;
    sala_err e = {0, ""};
    ask_sink k = {on_text, on_cite, s};
    int rc = s->be->poll(s->be, &k, &e);
    if (rc < 0) snprintf(s->err, sizeof(s->err), "%s", e.msg);
    if (rc != ASK_RUNNING) s->running = false;
    return true;
}

/* Wrap buf into rows of w columns; draw rows [top, top + h) at y. Returns the total rows. */
static int draw_wrapped(const char *t, size_t len, int y, int x, int w, int h, int top, int attr)
{
    int row = 0;
    size_t at = 0;
    while (at < len) {
        size_t nx, end = ui_wrap_row(t, len, at, w, &nx);
        if (row >= top && row < top + h) ui_put(y + row - top, x, w, t + at, end - at, attr);
        row++;
        if (nx <= at) break;
        at = nx;
    }
    return row;
}

static void pane_head(int y, int x, int w, const char *text, bool focused)
{
    int at = focused ? ui_attr(UI_A_SEL) : ui_attr(UI_A_HEAD);
    ui_fill(y, x, w, at);
    ui_puts(y, x + 1, w - 1, text, at);
}

static void draw_answer(scr_ask *s, int y, int x, int h, int w)
{
    char head[256];
    snprintf(head, sizeof(head), "Answer \xe2\x80\x94 %s%s%s", s->be->label,
             s->running ? "  (streaming)" : "",
             s->thinking.len ? (s->show_thinking ? "  [thinking shown]" : "  [thinking hidden]") : "");
    pane_head(y, x, w, head, s->focus == P_ANSWER);
    y++, h--;
    if (h < 1) return;
    if (s->err[0]) {
        ui_puts(y, x + 1, w - 1, s->err, ui_attr(UI_A_ERR));
        return;
    }
    if (!s->asked[0]) {
        ui_puts(y, x + 1, w - 1, "Type a question and press Enter.", A_DIM);
        return;
    }
    int rows = 0, tw = SALA_MAX(1, w - 1);
    /* Count first (to follow the end while streaming), then draw. */
    int nthink = s->show_thinking && s->thinking.len
                     ? draw_wrapped(s->thinking.s, s->thinking.len, y, x + 1, tw, 0, 0, A_DIM) : 0;
    int nq = draw_wrapped(s->asked, strlen(s->asked), y, x + 1, tw, 0, 0, A_BOLD);
    int nans = s->answer.len ? draw_wrapped(s->answer.s, s->answer.len, y, x + 1, tw, 0, 0, 0) : 0;
    rows = nq + 1 + nthink + nans;
    s->ans_rows = rows;
    if (s->follow) s->ans_top = SALA_MAX(0, rows - h);
    if (s->ans_top > SALA_MAX(0, rows - 1)) s->ans_top = SALA_MAX(0, rows - 1);
    int top = s->ans_top, yy = y;
    /* The question, a blank row, the thinking (when shown), the answer. */
    draw_wrapped(s->asked, strlen(s->asked), yy - top, x + 1, tw, h + top, top, ui_attr(UI_A_LABEL));
    int off = nq + 1;
    if (nthink) draw_wrapped(s->thinking.s, s->thinking.len, yy + off - top, x + 1, tw, h, 0, A_DIM);
    off += nthink;
    if (nans) {
        int skip = top > off ? top - off : 0;
        int at_y = yy + (off > top ? off - top : 0);
        draw_wrapped(s->answer.s, s->answer.len, at_y, x + 1, tw, y + h - at_y, skip, UI_NORMAL);
    }
}

static void draw_cites(scr_ask *s, int y, int x, int h, int w)
{
    char head[64];
    snprintf(head, sizeof(head), "Evidence (%d)  Enter opens the source", s->cl.n);
    pane_head(y, x, w, head, s->focus == P_CITES);
    y++, h--;
    if (h < 1) return;
    ui_list_fit(&s->cl, h);
    for (int r = 0; r < h && s->cl.top + r < s->cl.n; r++) {
        int i = s->cl.top + r;
        const cite *c = &s->cites[i];
        bool sel = i == s->cl.sel && s->focus == P_CITES;
        int at = sel ? ui_attr(UI_A_SEL) : UI_NORMAL;
        if (sel) ui_fill(y + r, x, w, at);
        int cx = x + ui_printf(y + r, x, w, at, " [%d] ", i + 1);
        cx += ui_puts(y + r, cx, x + w - cx, c->name, at | A_BOLD);
        cx += ui_puts(y + r, cx, x + w - cx, ", ", at);
        cx += ui_puts(y + r, cx, x + w - cx, c->locator, sel ? at : ui_attr(UI_A_LABEL));
        ui_puts(y + r, cx + 2, x + w - cx - 2, c->excerpt, at | A_DIM);
    }
}

static void draw_questions(scr_ask *s, ui_app *a, int y, int x, int h, int w)
{
    s->ql.n = qs_count(s, a);
    char head[64];
    snprintf(head, sizeof(head), "Earlier questions (%d)", s->ql.n);
    pane_head(y, x, w, head, s->focus == P_QUESTIONS);
    y++, h--;
    if (h < 1) return;
    ui_list_fit(&s->ql, h);
    for (int r = 0; r < h && s->ql.top + r < s->ql.n; r++) {
        int i = s->ql.top + r;
        bool sel = i == s->ql.sel && s->focus == P_QUESTIONS;
        int at = sel ? ui_attr(UI_A_SEL) : UI_NORMAL;
        if (sel) ui_fill(y + r, x, w, at);
        ui_puts(y + r, x + 1, w - 1, qs_get(s, a, i), at);
    }
}

static void scr_ask_draw(ui_screen *base, ui_app *a, int y, int h, int w)
{
    scr_ask *s = (scr_ask *)base;
    ui_line_draw(&s->in, y, 0, w, "ask: ", s->focus == P_INPUT);
    y++, h--;
    if (h < 1) return;
    if (h < 8) { /* small terminal: one pane, the focused one (the answer while typing) */
        switch (s->focus) {
        case P_CITES: draw_cites(s, y, 0, h, w); break;
        case P_QUESTIONS: draw_questions(s, a, y, 0, h, w); break;
        default: draw_answer(s, y, 0, h, w); break;
        }
        return;
    }
    if (w >= 100) {
        int lw = w * 3 / 5, rw = w - lw - 1;
        draw_answer(s, y, 0, h, lw);
        for (int r = 0; r < h; r++) ui_puts(y + r, lw, 1, "\xe2\x94\x82", ui_attr(UI_A_DIM));
        int ch = h * 3 / 5;
        draw_cites(s, y, lw + 1, ch, rw);
        draw_questions(s, a, y + ch, lw + 1, h - ch, rw);
        return;
    }
    int ah = h * 11 / 20, ch = (h - ah) * 3 / 5;
    draw_answer(s, y, 0, ah, w);
    draw_cites(s, y + ah, 0, ch, w);
    draw_questions(s, a, y + ah + ch, 0, h - ah - ch, w);
}

static void open_cite(scr_ask *s, ui_app *a)
{
    if (!s->cl.n) return;
    const cite *c = &s->cites[s->cl.sel];
    ui_push(a, scr_view_new(a, c->doc_id, c->locator, 0, s->asked));
}

static int scr_ask_key(ui_screen *base, ui_app *a, int key)
{
    scr_ask *s = (scr_ask *)base;
    bool enter = key == '\r' || key == '\n' || key == UI_FKEY(KEY_ENTER);
    if (key == '\t') s->focus = (s->focus + 1) % P_COUNT;
    else if (key == UI_FKEY(KEY_BTAB)) s->focus = (s->focus + P_COUNT - 1) % P_COUNT;
    else if (key == UI_CTRL('t')) s->show_thinking = !s->show_thinking;
    else if (key == UI_CTRL('g')) {
        if (s->running) {
            s->be->cancel(s->be);
            s->running = false;
            sb_add(&s->answer, "\n[stopped]\n", 11);
        }
    } else if (s->focus == P_INPUT) {
        if (enter) {
            char q[UI_LINE_MAX + 1];
            snprintf(q, sizeof(q), "%s", s->in.buf);
            ask(s, a, q);
        } else if (key == UI_ESC) {
            return UI_KEY_UNHANDLED;
        } else if (!ui_line_key(&s->in, key)) {
            return UI_KEY_UNHANDLED;
        }
    } else if (s->focus == P_ANSWER) {
        int page = SALA_MAX(1, a->rows / 2);
        switch (key) {
        case 'j': case UI_FKEY(KEY_DOWN): s->ans_top++; s->follow = false; break;
        case 'k': case UI_FKEY(KEY_UP): s->ans_top = SALA_MAX(0, s->ans_top - 1); s->follow = false; break;
        case ' ': case UI_FKEY(KEY_NPAGE): s->ans_top += page; s->follow = false; break;
        case 'b': case UI_FKEY(KEY_PPAGE): s->ans_top = SALA_MAX(0, s->ans_top - page); s->follow = false; break;
        case 'g': s->ans_top = 0; s->follow = false; break;
        case 'G': s->follow = true; break;
        case 't': s->show_thinking = !s->show_thinking; break;
        case '/': case 'i': s->focus = P_INPUT; break;
        default: return UI_KEY_UNHANDLED;
        }
    } else if (s->focus == P_CITES) {
        if (ui_list_key(&s->cl, key, 5)) {}
        else if (enter || key == 'l' || key == UI_FKEY(KEY_RIGHT)) open_cite(s, a);
        else if (key == '/' || key == 'i') s->focus = P_INPUT;
        else if (key == 't') s->show_thinking = !s->show_thinking;
        else return UI_KEY_UNHANDLED;
    } else {
        s->ql.n = qs_count(s, a);
        if (ui_list_key(&s->ql, key, 5)) {}
        else if (enter && s->ql.n) {
            char q[UI_LINE_MAX + 1];
            snprintf(q, sizeof(q), "%s", qs_get(s, a, s->ql.sel));
            ask(s, a, q);
            s->focus = P_ANSWER;
        } else if (key == '/' || key == 'i') s->focus = P_INPUT;
        else return UI_KEY_UNHANDLED;
    }
    base->typing = s->focus == P_INPUT;
    return UI_KEY_HANDLED;
}

static void scr_ask_free(ui_screen *base)
{
    scr_ask *s = (scr_ask *)base;
    ask_backend_free(s->be);
    cites_clear(s);
    free(s->answer.s);
    free(s->thinking.s);
    ui_line_free(&s->in);
    free(s);
}

ui_screen *scr_ask_new(ui_app *a, int64_t corpus_id, const char *corpus)
{
    scr_ask *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->be = ask_retrieval_new(a->d, corpus_id, 8);
    if (!s->be) {
        free(s);
        ui_msg(a, SALA_LOG_ERROR, "out of memory");
        return NULL;
    }
    s->corpus_id = corpus_id;
    snprintf(s->corpus, sizeof(s->corpus), "%s", corpus);
    snprintf(s->title, sizeof(s->title), "Ask \xe2\x80\xba %s", corpus);
    ui_line_init(&s->in);
    /* The question line's history: this corpus's earlier questions, oldest first. */
    for (size_t i = 0; i < a->nqs; i++)
        if (a->qs[i].corpus_id == corpus_id) ui_line_hist_add(&s->in, a->qs[i].q);
    s->ql.n = qs_count(s, a);
    s->base = (ui_screen){
        .title = s->title,
        .draw = scr_ask_draw,
        .key = scr_ask_key,
        .tick = scr_ask_tick,
        .free = scr_ask_free,
        .hints = "Enter ask/open  Tab pane  ^T thinking  ^G stop  Esc back",
        .help = "Ask\n"
                "  Enter            ask (question line) / open the source (evidence) /\n"
                "                   ask again (earlier questions)\n"
                "  Tab, Shift-Tab   question -> answer -> evidence -> earlier questions\n"
                "  Up/Down          question history on the question line; move in lists\n"
                "  ^T, t            show/hide the model's thinking      ^G  stop the answer\n"
                "  Without a model the answer is retrieval mode: the passages that match best.",
        .typing = true,
    };
    return &s->base;
}
