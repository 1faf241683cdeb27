/* tui.c: the terminal owner of the TUI: start-up checks, newterm, the event loop (keys, resize,
 * idle ticks), title bar, status bar with the background job, help overlay, the log sink and the
 * drawing helpers every screen uses. Invariant: the terminal is restored (endwin) on every path
 * out of ui_tui_run, and on fatal signals before the default action. */
#include "tui.h"
#include "ui.h"

#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- attributes ---- */

static int attrs[UI_A_COUNT];

static void attrs_init(void)
{
    attrs[UI_A_NORMAL] = UI_NORMAL;
    attrs[UI_A_TITLE] = A_REVERSE | A_BOLD;
    attrs[UI_A_STATUS] = A_REVERSE;
    attrs[UI_A_SEL] = A_REVERSE;
    attrs[UI_A_HL] = A_BOLD | A_UNDERLINE;
    attrs[UI_A_ESC] = A_DIM;
    attrs[UI_A_DIM] = A_DIM;
    attrs[UI_A_HEAD] = A_BOLD | A_UNDERLINE;
    attrs[UI_A_ERR] = A_BOLD;
    attrs[UI_A_LABEL] = A_BOLD;
    if (has_colors() && start_color() == OK) {
        use_default_colors();
        init_pair(1, COLOR_WHITE, COLOR_BLUE);
        init_pair(2, COLOR_BLACK, COLOR_YELLOW);
        init_pair(3, COLOR_MAGENTA, -1);
        init_pair(4, COLOR_RED, -1);
        init_pair(5, COLOR_CYAN, -1);
        attrs[UI_A_TITLE] = COLOR_PAIR(1) | A_BOLD;
        attrs[UI_A_STATUS] = COLOR_PAIR(1);
        attrs[UI_A_HL] = COLOR_PAIR(2) | A_BOLD;
        attrs[UI_A_ESC] = COLOR_PAIR(3);
        attrs[UI_A_ERR] = COLOR_PAIR(4) | A_BOLD;
        attrs[UI_A_LABEL] = COLOR_PAIR(5) | A_BOLD;
    }
}

int ui_attr(int role) { return role >= 0 && role < UI_A_COUNT ? attrs[role] : UI_NORMAL; }

/* ---- drawing helpers ---- */

int ui_put(int y, int x, int maxw, const char *s, size_t len, int attr)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    if (y < 0 || y >= rows || x < 0 || x >= cols || maxw <= 0 || !s) return 0;
    if (maxw > cols - x) maxw = cols - x;
    int col = 0;
    ui_glyph g;
    for (size_t at = 0; at < len && col < maxw; at += g.n) {
        ui_glyph_next(s, len, at, &g);
        const char *p = g.out;
        int w = g.w;
        if (g.newline) p = " ", w = 1;
        if (w == 0 && col == 0) p = " ", w = 1;
        if (col + w > maxw) break;
        attr_t a = g.esc ? ((attr_t)attr & ~A_COLOR) | (attr_t)ui_attr(UI_A_ESC) : (attr_t)attr;
        attrset(a);
        if (w == 0) addstr(p); /* a combining mark: joins the previous cell */
        else mvaddstr(y, x + col, p);
        col += w;
    }
    attrset(UI_NORMAL);
    return col;
}

int ui_puts(int y, int x, int maxw, const char *s, int attr)
{
    return ui_put(y, x, maxw, s, s ? strlen(s) : 0, attr);
}

int ui_printf(int y, int x, int maxw, int attr, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return ui_puts(y, x, maxw, buf, attr);
}

void ui_fill(int y, int x, int w, int attr)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    if (y < 0 || y >= rows || x < 0 || x >= cols) return;
    if (w > cols - x) w = cols - x;
    attrset(attr);
    mvhline(y, x, ' ', w);
    attrset(UI_NORMAL);
}

void ui_line_draw(const ui_line *l, int y, int x, int w, const char *prompt, bool focused)
{
    int pw = ui_puts(y, x, w, prompt, ui_attr(UI_A_LABEL));
    x += pw;
    w -= pw;
    if (w < 2) return;
    ui_fill(y, x, w, focused ? A_UNDERLINE : UI_NORMAL);
    /* Scroll horizontally so that the cursor stays visible. */
    int cw = ui_text_width(l->buf, l->cur);
    size_t from = 0;
    while (cw > w - 2 && from < l->cur) {
        ui_glyph g;
        ui_glyph_next(l->buf, l->len, from, &g);
        from += g.n;
        cw -= g.w;
    }
    ui_put(y, x, w - 1, l->buf + from, l->len - from, focused ? A_UNDERLINE : UI_NORMAL);
    if (focused) {
        int cx = x + ui_text_width(l->buf + from, l->cur - from);
        int rows, cols;
        getmaxyx(stdscr, rows, cols);
        if (cx < cols && y < rows) {
            chtype c = mvinch(y, cx);
            mvaddch(y, cx, (c & A_CHARTEXT) | A_REVERSE);
        }
    }
}

bool ui_line_key(ui_line *l, int key)
{
    switch (key) {
    case UI_FKEY(KEY_LEFT): case UI_CTRL('b'): ui_line_edit(l, UI_LINE_LEFT); return true;
    case UI_FKEY(KEY_RIGHT): case UI_CTRL('f'): ui_line_edit(l, UI_LINE_RIGHT); return true;
    case UI_FKEY(KEY_HOME): case UI_CTRL('a'): ui_line_edit(l, UI_LINE_HOME); return true;
    case UI_FKEY(KEY_END): case UI_CTRL('e'): ui_line_edit(l, UI_LINE_END); return true;
    case UI_FKEY(KEY_BACKSPACE): case 127: case 8: ui_line_edit(l, UI_LINE_BACKSPACE); return true;
    case UI_FKEY(KEY_DC): case UI_CTRL('d'): ui_line_edit(l, UI_LINE_DELETE); return true;
    case UI_CTRL('k'): ui_line_edit(l, UI_LINE_KILL_END); return true;
    case UI_CTRL('u'): ui_line_edit(l, UI_LINE_KILL_START); return true;
    case UI_CTRL('w'): ui_line_edit(l, UI_LINE_KILL_WORD); return true;
    case UI_FKEY(KEY_UP): case UI_CTRL('p'): ui_line_edit(l, UI_LINE_HIST_PREV); return true;
    case UI_FKEY(KEY_DOWN): case UI_CTRL('n'): ui_line_edit(l, UI_LINE_HIST_NEXT); return true;
    case UI_FKEY(0x222): ui_line_edit(l, UI_LINE_WORD_LEFT); return true;   /* ctrl-left (xterm) */
    case UI_FKEY(0x231): ui_line_edit(l, UI_LINE_WORD_RIGHT); return true;  /* ctrl-right (xterm) */
    default:
        if (key >= 0x20 && key < 0x110000 && key != 127) {
            ui_line_insert(l, (uint32_t)key);
            return true;
        }
        return false;
    }
}

bool ui_list_key(ui_list *l, int key, int page)
{
    if (page < 1) page = 1;
    switch (key) {
    case UI_FKEY(KEY_UP): case 'k': l->sel--; break;
    case UI_FKEY(KEY_DOWN): case 'j': l->sel++; break;
    case UI_FKEY(KEY_PPAGE): l->sel -= page; break;
    case UI_FKEY(KEY_NPAGE): case ' ': l->sel += page; break;
    case UI_FKEY(KEY_HOME): case 'g': l->sel = 0; break;
    case UI_FKEY(KEY_END): case 'G': l->sel = l->n - 1; break;
    default: return false;
    }
    if (l->sel >= l->n) l->sel = l->n - 1;
    if (l->sel < 0) l->sel = 0;
    return true;
}

void ui_list_fit(ui_list *l, int h)
{
    if (h < 1) h = 1;
    if (l->sel >= l->n) l->sel = l->n - 1;
    if (l->sel < 0) l->sel = 0;
    if (l->top > l->sel) l->top = l->sel;
    if (l->sel >= l->top + h) l->top = l->sel - h + 1;
    if (l->top > l->n - h) l->top = SALA_MAX(0, l->n - h);
    if (l->top < 0) l->top = 0;
}

/* ---- app ---- */

void ui_push(ui_app *a, ui_screen *s)
{
    if (!s) return;
    if (a->nstack == (int)SALA_ARRAY_LEN(a->stack)) {
        ui_msg(a, SALA_LOG_WARN, "too many screens open; press q to go back");
        s->free(s);
        return;
    }
    a->stack[a->nstack++] = s;
}

void ui_pop(ui_app *a)
{
    if (!a->nstack) return;
    ui_screen *s = a->stack[--a->nstack];
    s->free(s);
    if (!a->nstack) a->quit = true;
}

void ui_msg(ui_app *a, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof(a->msg), fmt, ap);
    va_end(ap);
    a->msg_level = level;
    a->msg_time = sala_now();
}

/* Log messages from other threads (the ask worker's libraries) wait here until the loop's
 * next idle tick: only the main thread touches the app. */
static pthread_t main_thread;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_pending[512];
static int log_pending_level = -1;

static void on_log(sala_log_level lvl, const char *msg, void *ud)
{
    if (lvl == SALA_LOG_DEBUG) return;
    if (pthread_equal(pthread_self(), main_thread)) {
        ui_msg(ud, (int)lvl, "%s", msg);
        return;
    }
    pthread_mutex_lock(&log_mu);
    snprintf(log_pending, sizeof(log_pending), "%s", msg);
    log_pending_level = (int)lvl;
    pthread_mutex_unlock(&log_mu);
}

static bool log_take(ui_app *a)
{
    bool got = false;
    pthread_mutex_lock(&log_mu);
    if (log_pending_level >= 0) {
        ui_msg(a, log_pending_level, "%s", log_pending);
        log_pending_level = -1;
        got = true;
    }
    pthread_mutex_unlock(&log_mu);
    return got;
}

void ui_question_add(ui_app *a, int64_t corpus_id, const char *q)
{
    ui_question *n = realloc(a->qs, (a->nqs + 1) * sizeof(*n));
    if (!n) return;
    a->qs = n;
    char *c = strdup(q);
    if (!c) return;
    a->qs[a->nqs++] = (ui_question){corpus_id, c};
}

int ui_ingest_start(ui_app *a, const char *corpus, const char *paths)
{
    char *argv[48];
    int n = 0;
    char buf[UI_LINE_MAX + 1];
    snprintf(buf, sizeof(buf), "%s", paths);
    argv[n++] = a->self;
    argv[n++] = "add";
    argv[n++] = "--db";
    argv[n++] = a->dbpath;
    argv[n++] = "--no-progress";
    argv[n++] = (char *)corpus;
    int first = n;
    for (char *tok = strtok(buf, " "); tok && n < 46; tok = strtok(NULL, " ")) argv[n++] = tok;
    argv[n] = NULL;
    if (n == first) {
        ui_msg(a, SALA_LOG_WARN, "add: no path given");
        return SALA_EINVAL;
    }
    sala_err e = {0, ""};
    int rc = ui_job_start(&a->job, "add", argv, &e);
    if (rc) ui_msg(a, SALA_LOG_ERROR, "%s", e.msg);
    else ui_msg(a, SALA_LOG_INFO, "adding to %s in the background (^X cancels)", corpus);
    return rc;
}

int ui_prefill_start(ui_app *a, const char *corpus)
{
    char *argv[10];
    int n = 0;
    argv[n++] = a->self;
    argv[n++] = "prefill";
    argv[n++] = "--db";
    argv[n++] = a->dbpath;
    if (a->model_opt) {
        argv[n++] = "--model";
        argv[n++] = (char *)a->model_opt;
    }
    argv[n++] = (char *)corpus;
    argv[n] = NULL;
    sala_err e = {0, ""};
    int rc = ui_job_start(&a->job, "prefill", argv, &e);
    if (rc) ui_msg(a, SALA_LOG_ERROR, "%s", e.msg);
    else ui_msg(a, SALA_LOG_INFO, "prefilling %s in the background (^X cancels)", corpus);
    return rc;
}

/* ---- the frame: title bar, status bar, help ---- */

static const char help_global[] =
    "Keys everywhere\n"
    "  Up/Down, j/k     move          PgUp/PgDn, g/G   page, first/last\n"
    "  Enter            open          Tab              next pane\n"
    "  /                search        a                ask (in a corpus)\n"
    "  q, Esc           back / quit   ^C               quit\n"
    "  ^X               cancel the background job (ingest, prefill)\n"
    "  ?                this help (any key closes it)";

static void draw_help(ui_app *a, int rows, int cols)
{
    const ui_screen *s = a->nstack ? a->stack[a->nstack - 1] : NULL;
    const char *parts[2] = {help_global, s && s->help ? s->help : NULL};
    int nl = 0, wmax = 0;
    for (int p = 0; p < 2; p++) {
        if (!parts[p]) continue;
        for (const char *l = parts[p]; l && *l;) {
            const char *e = strchr(l, '\n');
            size_t n = e ? (size_t)(e - l) : strlen(l);
            wmax = SALA_MAX(wmax, ui_text_width(l, n));
            nl++;
            l = e ? e + 1 : NULL;
        }
        nl++;
    }
    int w = SALA_MIN(cols, wmax + 4), h = SALA_MIN(rows, nl + 2);
    int y0 = (rows - h) / 2, x0 = (cols - w) / 2;
    for (int y = 0; y < h; y++) ui_fill(y0 + y, x0, w, A_REVERSE);
    ui_puts(y0, x0 + 1, w - 2, " Help ", A_REVERSE | A_BOLD);
    int y = y0 + 1;
    for (int p = 0; p < 2; p++) {
        if (!parts[p]) continue;
        for (const char *l = parts[p]; l && *l && y < y0 + h; y++) {
            const char *e = strchr(l, '\n');
            size_t n = e ? (size_t)(e - l) : strlen(l);
            ui_put(y, x0 + 2, w - 3, l, n, A_REVERSE);
            l = e ? e + 1 : NULL;
        }
        y++;
    }
}

static void job_text(const ui_job *j, char *buf, size_t cap)
{
    buf[0] = 0;
    if (j->running && j->prefill && j->tok_total > 0)
        snprintf(buf, cap, "prefill %lld/%lld tok, %.0f tok/s, ETA %.0fs  ^X cancel",
                 j->tok_done, j->tok_total, j->tok_per_s, j->eta);
    else if (j->running && j->prefill)
        snprintf(buf, cap, "prefill: opening the model, %.0fs  ^X cancel", sala_now() - j->started);
    else if (j->running)
        snprintf(buf, cap, "%s: %zu done, %zu rejected, %.0fs  ^X cancel", j->title, j->done,
                 j->rejected, sala_now() - j->started);
    else if (j->finished > 0 && sala_now() - j->finished < 30)
        snprintf(buf, cap, "%s %s: %s", j->title,
                 j->cancelled ? "cancelled"
                 : j->exit_code == 0 || (!j->prefill && j->exit_code <= 2) ? "finished" : "failed",
                 j->summary[0] ? j->summary : j->last);
}

static void draw_all(ui_app *a)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    a->rows = rows;
    a->cols = cols;
    erase();
    if (rows < 1 || cols < 1) return;
    ui_screen *s = a->nstack ? a->stack[a->nstack - 1] : NULL;
    int top = rows >= 3 ? 1 : 0, bottom = rows >= 2 ? 1 : 0;
    if (top) {
        ui_fill(0, 0, cols, ui_attr(UI_A_TITLE));
        char t[512];
        snprintf(t, sizeof(t), " sala \xe2\x80\xba %s", s ? s->title : "");
        ui_puts(0, 0, cols, t, ui_attr(UI_A_TITLE));
        if (cols > 40) ui_puts(0, cols - 8, 8, "? help ", ui_attr(UI_A_TITLE));
    }
    if (s && rows - top - bottom > 0) s->draw(s, a, top, rows - top - bottom, cols);
    if (bottom) {
        int y = rows - 1;
        ui_fill(y, 0, cols, ui_attr(UI_A_STATUS));
        char jt[512];
        job_text(&a->job, jt, sizeof(jt));
        int jw = jt[0] ? SALA_MIN(ui_text_width(jt, strlen(jt)) + 1, cols / 2) : 0;
        bool fresh = a->msg[0] && sala_now() - a->msg_time < 8;
        const char *left = fresh ? a->msg : s && s->hints ? s->hints : "";
        int la = ui_attr(UI_A_STATUS);
        if (fresh && a->msg_level >= SALA_LOG_WARN) la |= A_BOLD;
        ui_puts(y, 1, cols - jw - 2, left, la);
        if (jw) ui_puts(y, cols - jw, jw, jt, ui_attr(UI_A_STATUS) | A_BOLD);
    }
    if (a->help) draw_help(a, rows, cols);
}

/* ---- signals ---- */

static volatile sig_atomic_t got_quit;
static struct sigaction old_fatal[32];
static const int fatal_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

static void on_quit(int sig) { got_quit = sig; }

static void on_fatal(int sig)
{
    endwin(); /* restore the terminal first, then let the previous handler or default act */
    if (sig > 0 && sig < 32) sigaction(sig, &old_fatal[sig], NULL);
    if (sig == SIGABRT) raise(sig);
}

static void signals_install(bool on)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < SALA_ARRAY_LEN(fatal_sigs); i++) {
        int sig = fatal_sigs[i];
        if (on) {
            sa.sa_handler = on_fatal;
            sigaction(sig, &sa, &old_fatal[sig]);
        } else {
            sigaction(sig, &old_fatal[sig], NULL);
        }
    }
    sa.sa_handler = on ? on_quit : SIG_DFL;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on ? SIG_IGN : SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL);
}

/* ---- the loop ---- */

static bool global_key(ui_app *a, int key)
{
    ui_screen *s = a->stack[a->nstack - 1];
    switch (key) {
    case 'q': case UI_ESC: ui_pop(a); return true;
    case '?': case UI_FKEY(KEY_F(1)): a->help = true; return true;
    case UI_CTRL('c'): a->quit = true; return true;
    case UI_CTRL('l'): clearok(curscr, TRUE); return true;
    default: (void)s; return false;
    }
}

static void handle_key(ui_app *a, int key)
{
    if (a->help) { /* any key closes the overlay */
        a->help = false;
        if (key == 'q' || key == '?') return;
    }
    if (key == UI_CTRL('x')) {
        if (a->job.running) {
            ui_job_cancel(&a->job);
            ui_msg(a, SALA_LOG_INFO, "cancelling %s ...", a->job.title);
        } else {
            ui_msg(a, SALA_LOG_INFO, "no background job to cancel");
        }
        return;
    }
    ui_screen *s = a->stack[a->nstack - 1];
    if (s->typing && key == UI_CTRL('c')) {
        a->quit = true;
        return;
    }
    if (s->key(s, a, key) == UI_KEY_HANDLED) return;
    global_key(a, key);
}

static void job_finished(ui_app *a)
{
    for (int i = 0; i < a->nstack; i++) {
        ui_screen *s = a->stack[i];
        if (s->title && !strncmp(s->title, "Documents", 9)) scr_docs_reload(s, a);
        if (s->title && !strcmp(s->title, "Corpora")) scr_corpora_reload(s, a);
        if (s->title && !strncmp(s->title, "Ask", 3)) scr_ask_reload(s, a);
    }
}

static int term_check(sala_err *e)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return sala_errf(e, SALA_EINVAL,
                         "tui: standard %s is not a terminal; 'sala tui' needs an interactive "
                         "terminal (use 'sala search' or 'sala docs' in scripts)",
                         !isatty(STDIN_FILENO) ? "input" : "output");
    const char *term = getenv("TERM");
    if (!term || !*term)
        return sala_errf(e, SALA_EINVAL, "tui: TERM is not set; set it to your terminal type "
                                         "(e.g. TERM=xterm-256color)");
    if (!strcmp(term, "dumb"))
        return sala_errf(e, SALA_EINVAL, "tui: TERM=dumb cannot move the cursor; 'sala tui' "
                                         "needs a full-screen terminal");
    return SALA_OK;
}

int ui_tui_run(const ui_opts *o, sala_err *e)
{
    ui_app a;
    memset(&a, 0, sizeof(a));
    ui_job_init(&a.job);
    a.model_opt = o->model;
    a.max_tokens = o->max_tokens;
    main_thread = pthread_self();
    FILE *trace = NULL;
    SCREEN *scr = NULL;
    int rc;
    setlocale(LC_ALL, "");
    if ((rc = term_check(e))) return rc;
    ui_text_set_utf8(strcmp(nl_langinfo(CODESET), "UTF-8") == 0);
    if ((rc = db_path_resolve(o->dbopt, a.dbpath, sizeof(a.dbpath), e))) return rc;
    if ((rc = db_open(a.dbpath, &a.d, e))) return rc;
    ssize_t sl = readlink("/proc/self/exe", a.self, sizeof(a.self) - 1);
    if (sl <= 0) snprintf(a.self, sizeof(a.self), "sala");
    int64_t cid = -1;
    if (o->corpus && (rc = db_corpus_find(a.d, o->corpus, &cid, e))) goto fail;
    if (o->trace_path && !(trace = fopen(o->trace_path, "w"))) {
        rc = sala_errf(e, SALA_EIO, "%s: %s", o->trace_path, strerror(errno));
        goto fail;
    }
    const char *term = getenv("TERM");
    scr = newterm(term, stdout, stdin);
    if (!scr) {
        rc = sala_errf(e, SALA_EINVAL, "tui: cannot use terminal type '%s' (no terminfo entry?)",
                       term);
        goto fail;
    }
    set_term(scr);
    signals_install(true);
    sala_log_set(on_log, &a);
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    set_escdelay(25);
    curs_set(0);
    attrs_init();
    timeout(50);

    ui_push(&a, scr_corpora_new(&a));
    if (cid >= 0) ui_push(&a, scr_docs_new(&a, cid, o->corpus));
    if (!a.nstack) {
        rc = sala_errf(e, SALA_ENOMEM, "tui: cannot open the first screen: %s", a.msg);
        goto fail;
    }
    bool dirty = true;
    while (!a.quit && a.nstack) {
        if (dirty) {
            draw_all(&a);
            refresh();
            dirty = false;
        }
        wint_t ch;
        int r = get_wch(&ch);
        if (got_quit) break;
        if (r == ERR) {
            bool was = a.job.running;
            if (ui_job_poll(&a.job)) dirty = true;
            if (was && !a.job.running) job_finished(&a);
            if (a.job.running || (a.job.finished > 0 && sala_now() - a.job.finished < 31))
                dirty = true; /* the elapsed seconds and the fading summary */
            ui_screen *s = a.stack[a.nstack - 1];
            if (s->tick && s->tick(s, &a)) dirty = true;
            if (log_take(&a)) dirty = true;
            if (a.msg[0] && sala_now() - a.msg_time > 8 && sala_now() - a.msg_time < 8.2) dirty = true;
            continue;
        }
        double t0 = sala_now();
        int key;
        if (r == KEY_CODE_YES) {
            if (ch == KEY_RESIZE) {
                dirty = true;
                continue;
            }
            key = UI_FKEY((int)ch);
        } else {
            key = (int)ch;
        }
        handle_key(&a, key);
        if (a.quit || !a.nstack) break;
        draw_all(&a);
        refresh();
        dirty = false;
        if (trace) {
            fprintf(trace, "key %d %.3f ms\n", key, (sala_now() - t0) * 1e3);
            fflush(trace);
        }
    }
    rc = SALA_OK;
fail:
    if (scr) {
        endwin();
        signals_install(false);
        sala_log_set(NULL, NULL);
        delscreen(scr);
    }
    while (a.nstack) {
        ui_screen *s = a.stack[--a.nstack];
        s->free(s);
    }
    ui_job_free(&a.job);
    for (size_t i = 0; i < a.nqs; i++) free(a.qs[i].q);
    free(a.qs);
    if (trace) fclose(trace);
    db_close(a.d);
    if (got_quit && rc == SALA_OK) rc = sala_errf(e, SALA_ECANCEL, "tui: stopped by signal %d", (int)got_quit);
    return rc;
}
