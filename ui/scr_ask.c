/* scr_ask.c: ask a corpus. Panes: the question line (editing, history), the answer (streamed
 * from an ask_backend as poll() produces it, with a thinking toggle), the evidence list (quotes,
 * verified or not, and the model's evidence; Enter opens the source at the citation) and the
 * earlier questions of this corpus (Enter asks again).
 *
 * The backend: model mode (ask_model_new) when the corpus resolves to a model (--model of
 * `sala tui`, `sala corpus model`, $SALA_MODEL), else retrieval mode; the pane title says which
 * on every answer. In model mode the screen says when the cached context is missing or stale
 * and `p` prefills it in the background; the backend is made again when a prefill ends.
 *
 * Earlier questions: the questions table of the corpus (model answers and `sala ask`'s, both
 * modes), newest first, after this session's retrieval-mode questions, which stay in memory
 * only (the TUI's retrieval mode does not store). */
#include "ui.h"
#include "ui/ask.h"
#include "ui/store.h"

#include <stdlib.h>
#include <string.h>

#include "ctx/ctx.h"

enum { P_INPUT, P_ANSWER, P_CITES, P_QUESTIONS, P_COUNT };

typedef struct {
    int64_t doc_id;
    char *name, *locator, *excerpt;
    ask_cite_kind kind;
    double score;
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
    char *model_dir;         /* NULL: retrieval mode */
    char notice[SALA_ERR_MAX + 64]; /* model mode: the state of the cached context, "" when valid */
    bool ctx_ok;
    char **hist;             /* the questions table of this corpus, newest first */
    int nhist;
    const char *last_status;
    bool running, cancelling, show_thinking, follow;
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
    x->kind = c->kind;
    x->score = c->score;
    x->name = strdup(c->doc_name ? c->doc_name : "?");
    x->locator = strdup(c->locator ? c->locator : "");
    x->excerpt = strdup(c->excerpt ? c->excerpt : "");
    if (!x->name || !x->locator || !x->excerpt) {
        free(x->name), free(x->locator), free(x->excerpt);
        return;
    }
    s->cl.n++;
}

/* The questions of this corpus, newest first: this session's unstored ones (a->qs), then the
 * stored ones (s->hist). */
static int qs_count(const scr_ask *s, const ui_app *a)
{
    int n = 0;
    for (size_t i = 0; i < a->nqs; i++) n += a->qs[i].corpus_id == s->corpus_id;
    return n + s->nhist;
}

static const char *qs_get(const scr_ask *s, const ui_app *a, int r)
{
    for (size_t i = a->nqs; i-- > 0;)
        if (a->qs[i].corpus_id == s->corpus_id && r-- == 0) return a->qs[i].q;
    return r >= 0 && r < s->nhist ? s->hist[r] : "";
}

static void hist_free(scr_ask *s)
{
    for (int i = 0; i < s->nhist; i++) free(s->hist[i]);
    free(s->hist);
    s->hist = NULL;
    s->nhist = 0;
}

static int on_hist(const ctx_history_row *r, void *ud)
{
    scr_ask *s = ud;
    char **n = realloc(s->hist, (size_t)(s->nhist + 1) * sizeof(*n));
    if (!n) return SALA_ENOMEM;
    s->hist = n;
    if (!(n[s->nhist] = strdup(r->question ? r->question : ""))) return SALA_ENOMEM;
    s->nhist++;
    return 0;
}

/* Read the questions table again (oldest first from ctx_history; kept newest first). */
static void hist_load(scr_ask *s, ui_app *a)
{
    sala_err e = {0, ""};
    hist_free(s);
    if (ctx_history(a->d, s->corpus, on_hist, s, &e) && e.msg[0])
        ui_msg(a, SALA_LOG_WARN, "earlier questions: %s", e.msg);
    for (int i = 0, j = s->nhist - 1; i < j; i++, j--) {
        char *t = s->hist[i];
        s->hist[i] = s->hist[j];
        s->hist[j] = t;
    }
}

/* Model mode: what the store says of the cached context (the cheap check of store.h). */
static void ctx_check(scr_ask *s, ui_app *a)
{
    s->notice[0] = 0;
    s->ctx_ok = true;
    if (!s->model_dir) return;
    ui_ctx_info ci;
    sala_err e = {0, ""};
    if (ui_ctx_info_get(a->d, s->corpus_id, s->model_dir, &ci, &e)) {
        snprintf(s->notice, sizeof(s->notice), "%s", e.msg);
        s->ctx_ok = false;
    } else if (!ci.have) {
        snprintf(s->notice, sizeof(s->notice), "No cached context for this corpus and model "
                 "yet: press p to prefill it in the background (i types a question anyway).");
        s->ctx_ok = false;
    } else if (ci.stale) {
        snprintf(s->notice, sizeof(s->notice), "The cached context is stale (%s): press p to "
                 "prefill again (i types a question anyway).", ci.why);
        s->ctx_ok = false;
    }
}

/* The backend for this corpus: model mode when a model resolves, else retrieval. */
static int backend_make(scr_ask *s, ui_app *a)
{
    sala_err e = {0, ""};
    free(s->model_dir);
    s->model_dir = NULL;
    if (ctx_model_resolve(a->d, s->corpus, a->model_opt, &s->model_dir, &e))
        ui_msg(a, SALA_LOG_WARN, "model: %s", e.msg);
    ask_backend *b = s->model_dir
                         ? ask_model_new(a->d, a->dbpath, s->corpus_id, s->corpus, s->model_dir,
                                         a->max_tokens)
                         : ask_retrieval_new(a->d, s->corpus_id, 8);
    if (!b) return SALA_ENOMEM;
    ask_backend_free(s->be);
    s->be = b;
    ctx_check(s, a);
    return SALA_OK;
}

void scr_ask_reload(ui_screen *base, ui_app *a)
{
    scr_ask *s = (scr_ask *)base;
    if (s->running) return;
    if (backend_make(s, a)) ui_msg(a, SALA_LOG_ERROR, "out of memory");
    hist_load(s, a);
}

static void ask(scr_ask *s, ui_app *a, const char *q)
{
    sala_err e = {0, ""};
    if (!*q) return;
    if (s->running) s->be->cancel(s->be);
    s->cancelling = false;
    snprintf(s->asked, sizeof(s->asked), "%s", q);
    s->answer.len = s->thinking.len = 0;
    if (s->answer.s) s->answer.s[0] = 0;
    cites_clear(s);
    s->err[0] = 0;
    s->ans_top = 0;
    s->follow = true;
    ui_line_hist_add(&s->in, q);
    if (!s->be->stores) ui_question_add(a, s->corpus_id, q);
    s->ql.n = qs_count(s, a);
    s->ql.sel = 0;
    ui_line_set(&s->in, "");
    s->t_start = sala_now();
    s->be->think = s->show_thinking;
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
    if (!s->running) return false;
    sala_err e = {0, ""};
    ask_sink k = {on_text, on_cite, s};
    int rc = s->be->poll(s->be, &k, &e);
    if (s->be->status != s->last_status) {
        s->last_status = s->be->status;
        if (s->be->status) ui_msg(a, SALA_LOG_INFO, "%s", s->be->status);
        else a->msg[0] = 0;
    }
    if (rc < 0) {
        snprintf(s->err, sizeof(s->err), "%s", e.msg);
        if (s->model_dir && strstr(e.msg, "sala prefill")) s->ctx_ok = false;
    }
    if (rc != ASK_RUNNING) {
        s->running = false;
        if (s->cancelling) sb_add(&s->answer, "\n[stopped]\n", 11);
        else if (rc == ASK_DONE && s->be->stores) hist_load(s, a);
        s->cancelling = false;
        s->ql.n = qs_count(s, a);
    }
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
    bool opening = s->running && s->be->status && !strncmp(s->be->status, "opening", 7);
    snprintf(head, sizeof(head), "Answer \xe2\x80\x94 %s%s%s", s->be->label,
             s->cancelling ? "  (stopping)" : opening ? "  (opening context\xe2\x80\xa6)"
             : s->running ? "  (streaming)" : "",
             s->thinking.len ? (s->show_thinking ? "  [thinking shown]" : "  [thinking hidden]") : "");
    pane_head(y, x, w, head, s->focus == P_ANSWER);
    y++, h--;
    if (h < 1) return;
    int tw0 = SALA_MAX(1, w - 1);
    if (s->err[0]) {
        int n = draw_wrapped(s->err, strlen(s->err), y, x + 1, tw0, h, 0, ui_attr(UI_A_ERR));
        if (!s->ctx_ok && n < h)
            ui_puts(y + n, x + 1, w - 1, "p prefills the corpus in the background.", A_DIM);
        return;
    }
    if (!s->asked[0]) {
        if (s->notice[0]) {
            draw_wrapped(s->notice, strlen(s->notice), y, x + 1, tw0, h, 0, ui_attr(UI_A_LABEL));
            return;
        }
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
        if (c->kind == ASK_CITE_QUOTE || c->kind == ASK_CITE_QUOTE_NOT_FOUND) {
            bool ok = c->kind == ASK_CITE_QUOTE;
            cx += ui_puts(y + r, cx, x + w - cx, ok ? "quote \xe2\x9c\x93 " : "quote NOT FOUND ",
                          ok ? at : (sel ? at : ui_attr(UI_A_ERR)));
            if (ok) {
                cx += ui_puts(y + r, cx, x + w - cx, c->name, at | A_BOLD);
                cx += ui_puts(y + r, cx, x + w - cx, ", ", at);
                cx += ui_puts(y + r, cx, x + w - cx, c->locator, sel ? at : ui_attr(UI_A_LABEL));
                cx += 2;
            }
            cx += ui_puts(y + r, cx, x + w - cx, "\xe2\x80\x9c", at | A_DIM);
            ui_puts(y + r, cx, x + w - cx, c->excerpt, at | A_DIM);
            continue;
        }
        cx += ui_puts(y + r, cx, x + w - cx, c->name, at | A_BOLD);
        cx += ui_puts(y + r, cx, x + w - cx, ", ", at);
        cx += ui_puts(y + r, cx, x + w - cx, c->locator, sel ? at : ui_attr(UI_A_LABEL));
        if (c->kind == ASK_CITE_EVIDENCE) ui_printf(y + r, cx + 2, x + w - cx - 2, at | A_DIM, "score %.2f", c->score);
        else ui_puts(y + r, cx + 2, x + w - cx - 2, c->excerpt, at | A_DIM);
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
    if (c->doc_id < 0) {
        ui_msg(a, SALA_LOG_WARN, "this quote is not in the corpus: nothing to open");
        return;
    }
    ui_push(a, scr_view_new(a, c->doc_id, c->locator, 0,
                            c->kind == ASK_CITE_QUOTE ? c->excerpt : s->asked));
}

static int scr_ask_key(ui_screen *base, ui_app *a, int key)
{
    scr_ask *s = (scr_ask *)base;
    bool enter = key == '\r' || key == '\n' || key == UI_FKEY(KEY_ENTER);
    if (key == '\t') s->focus = (s->focus + 1) % P_COUNT;
    else if (key == UI_FKEY(KEY_BTAB)) s->focus = (s->focus + P_COUNT - 1) % P_COUNT;
    else if (key == UI_CTRL('t')) s->show_thinking = !s->show_thinking;
    else if (key == UI_CTRL('g')) {
        if (s->running && !s->cancelling) {
            s->be->cancel(s->be); /* poll says DONE once the backend has stopped */
            s->cancelling = true;
        }
    } else if (key == 'p' && s->focus != P_INPUT) {
        if (!s->model_dir) ui_msg(a, SALA_LOG_WARN, "no model configured: sala corpus model %s DIR", s->corpus);
        else ui_prefill_start(a, s->corpus);
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
    free(s->model_dir);
    hist_free(s);
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
    s->corpus_id = corpus_id;
    snprintf(s->corpus, sizeof(s->corpus), "%s", corpus);
    if (backend_make(s, a)) {
        free(s->model_dir);
        free(s);
        ui_msg(a, SALA_LOG_ERROR, "out of memory");
        return NULL;
    }
    hist_load(s, a);
    snprintf(s->title, sizeof(s->title), "Ask \xe2\x80\xba %s", corpus);
    ui_line_init(&s->in);
    /* The question line's history: this corpus's earlier questions, oldest first. */
    for (int i = s->nhist; i-- > 0;) ui_line_hist_add(&s->in, s->hist[i]);
    for (size_t i = 0; i < a->nqs; i++)
        if (a->qs[i].corpus_id == corpus_id) ui_line_hist_add(&s->in, a->qs[i].q);
    s->ql.n = qs_count(s, a);
    s->base = (ui_screen){
        .title = s->title,
        .draw = scr_ask_draw,
        .key = scr_ask_key,
        .tick = scr_ask_tick,
        .free = scr_ask_free,
        .hints = "Enter ask/open  Tab pane  ^T thinking  ^G stop  p prefill  Esc back",
        .help = "Ask\n"
                "  Enter            ask (question line) / open the source (evidence) /\n"
                "                   ask again (earlier questions)\n"
                "  Tab, Shift-Tab   question -> answer -> evidence -> earlier questions\n"
                "  Up/Down          question history on the question line; move in lists\n"
                "  ^T, t            think (model mode) and show it      ^G  stop the answer\n"
                "  p                prefill the corpus's cached context (outside the question line)\n"
                "  With a model (sala corpus model, --model, $SALA_MODEL) the cached context\n"
                "  answers and the answer is stored; without one the answer is retrieval mode:\n"
                "  the passages that match best.",
        .typing = true,
    };
    if (s->model_dir && !s->ctx_ok) { /* start where p works: the answer pane */
        s->focus = P_ANSWER;
        s->base.typing = false;
    }
    return &s->base;
}
