/* scr_docs.c: the documents of one corpus: status, kind, pages, segments, size, and for a
 * rejected file the component and reason. Enter opens the viewer; `i` adds files or
 * directories in the background (a `sala add` child, see job.h). */
#include "ui.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id, pages, segments, size;
    char *name, *kind, *status, *note;
    bool ok;
} doc_row;

typedef struct {
    ui_screen base;
    int64_t corpus_id;
    char corpus[256], title[300];
    doc_row *rows;
    ui_list list;
    char err[SALA_ERR_MAX];
    bool adding;             /* the path prompt is open */
    ui_line path;
} scr_docs;

static char *dup0(const char *s) { return strdup(s ? s : ""); }

static int on_doc(const db_doc *d, void *ud)
{
    scr_docs *s = ud;
    doc_row *n = realloc(s->rows, (size_t)(s->list.n + 1) * sizeof(*n));
    if (!n) return SALA_ENOMEM;
    s->rows = n;
    doc_row *r = &n[s->list.n];
    char note[600] = "";
    bool ok = d->status && !strcmp(d->status, "ok");
    if (!ok) snprintf(note, sizeof(note), "%s: %s", d->component ? d->component : "?",
                      d->reason ? d->reason : "?");
    else if (d->title) snprintf(note, sizeof(note), "%s", d->title);
    *r = (doc_row){d->id, d->pages, d->segments, d->size, dup0(d->name), dup0(d->kind),
                   dup0(d->status), dup0(note), ok};
    if (!r->name || !r->kind || !r->status || !r->note) {
        free(r->name), free(r->kind), free(r->status), free(r->note);
        return SALA_ENOMEM;
    }
    s->list.n++;
    return 0;
}

static void rows_free(scr_docs *s)
{
    for (int i = 0; i < s->list.n; i++) {
        doc_row *r = &s->rows[i];
        free(r->name), free(r->kind), free(r->status), free(r->note);
    }
    free(s->rows);
    s->rows = NULL;
    s->list.n = 0;
}

void scr_docs_reload(ui_screen *base, ui_app *a)
{
    scr_docs *s = (scr_docs *)base;
    sala_err e = {0, ""};
    rows_free(s);
    s->err[0] = 0;
    if (db_doc_list(a->d, s->corpus_id, on_doc, s, &e)) snprintf(s->err, sizeof(s->err), "%s", e.msg);
}

static void fmt_size(int64_t b, char *buf, size_t cap)
{
    if (b < 10000) snprintf(buf, cap, "%lld", (long long)b);
    else if (b < 10000000) snprintf(buf, cap, "%lldK", (long long)(b / 1024));
    else snprintf(buf, cap, "%lldM", (long long)(b / (1024 * 1024)));
}

static void scr_docs_draw(ui_screen *base, ui_app *a, int y, int h, int w)
{
    scr_docs *s = (scr_docs *)base;
    (void)a;
    if (s->adding) {
        ui_line_draw(&s->path, y, 0, w, "add path(s): ", true);
        y++, h--;
        if (h < 1) return;
    }
    if (s->err[0]) {
        ui_puts(y, 0, w, s->err, ui_attr(UI_A_ERR));
        return;
    }
    if (!s->list.n) {
        ui_puts(y, 1, w - 1, "No document yet. Press i to add files or directories.", UI_NORMAL);
        return;
    }
    static const struct { const char *head; int w; } cols[] = {
        {"STATUS", 8}, {"PAGES", 6}, {"SEGS", 6}, {"SIZE", 6}, {"KIND", 8}};
    int ncol = (int)SALA_ARRAY_LEN(cols), need = 0;
    for (int i = 0; i < ncol; i++) need += cols[i].w + 1;
    while (ncol > 0 && w - need < 12) need -= cols[--ncol].w + 1;
    /* The name gets up to 40 columns; the rest is the note (reason or title). */
    int rest = w - need - 1, namew = rest > 60 ? 40 : rest, notew = rest - namew - 1;
    ui_fill(y, 0, w, ui_attr(UI_A_HEAD));
    ui_puts(y, 1, namew, "DOCUMENT", ui_attr(UI_A_HEAD));
    int x = 1 + namew;
    for (int i = 0; i < ncol; x += cols[i].w + 1, i++)
        ui_printf(y, x, cols[i].w + 1, ui_attr(UI_A_HEAD), "%*s", cols[i].w, cols[i].head);
    if (notew > 4) ui_puts(y, x + 1, notew, "REASON / TITLE", ui_attr(UI_A_HEAD));
    if (h < 2) return;
    ui_list_fit(&s->list, h - 1);
    for (int r = 0; r < h - 1 && s->list.top + r < s->list.n; r++) {
        int i = s->list.top + r, yy = y + 1 + r;
        const doc_row *d = &s->rows[i];
        int at = i == s->list.sel ? ui_attr(UI_A_SEL) : UI_NORMAL;
        if (at != UI_NORMAL) ui_fill(yy, 0, w, at);
        ui_puts(yy, 1, namew, d->name, at);
        char v[5][32];
        snprintf(v[0], 32, "%s", d->status);
        if (d->pages >= 0) snprintf(v[1], 32, "%lld", (long long)d->pages);
        else snprintf(v[1], 32, "-");
        snprintf(v[2], 32, "%lld", (long long)d->segments);
        fmt_size(d->size, v[3], 32);
        snprintf(v[4], 32, "%s", d->kind);
        x = 1 + namew;
        for (int k = 0; k < ncol; x += cols[k].w + 1, k++)
            ui_printf(yy, x, cols[k].w + 1, k == 0 && !d->ok ? at | ui_attr(UI_A_ERR) : at, "%*s",
                      cols[k].w, v[k]);
        if (notew > 4) ui_puts(yy, x + 1, notew, d->note, d->ok ? at | (int)A_DIM : at);
    }
}

static int scr_docs_key(ui_screen *base, ui_app *a, int key)
{
    scr_docs *s = (scr_docs *)base;
    if (s->adding) {
        if (key == '\r' || key == '\n' || key == UI_FKEY(KEY_ENTER)) {
            s->adding = base->typing = false;
            ui_line_hist_add(&s->path, s->path.buf);
            ui_ingest_start(a, s->corpus, s->path.buf);
        } else if (key == UI_ESC || key == UI_CTRL('g')) {
            s->adding = base->typing = false;
        } else {
            ui_line_key(&s->path, key);
        }
        return UI_KEY_HANDLED;
    }
    if (ui_list_key(&s->list, key, a->rows - 4)) return UI_KEY_HANDLED;
    switch (key) {
    case 'i':
        s->adding = base->typing = true;
        ui_line_set(&s->path, "");
        return UI_KEY_HANDLED;
    case '/': ui_push(a, scr_search_new(a, s->corpus_id, s->corpus)); return UI_KEY_HANDLED;
    case 'a': ui_push(a, scr_ask_new(a, s->corpus_id, s->corpus)); return UI_KEY_HANDLED;
    case 'r': scr_docs_reload(base, a); return UI_KEY_HANDLED;
    case 'p': ui_prefill_start(a, s->corpus); return UI_KEY_HANDLED;
    case '\r': case '\n': case UI_FKEY(KEY_ENTER): case UI_FKEY(KEY_RIGHT): case 'l':
        if (!s->list.n) return UI_KEY_HANDLED;
        if (!s->rows[s->list.sel].ok) {
            ui_msg(a, SALA_LOG_WARN, "rejected: %s", s->rows[s->list.sel].note);
            return UI_KEY_HANDLED;
        }
        ui_push(a, scr_view_new(a, s->rows[s->list.sel].id, NULL, 0, NULL));
        return UI_KEY_HANDLED;
    case UI_FKEY(KEY_LEFT): case 'h': ui_pop(a); return UI_KEY_HANDLED;
    default: return UI_KEY_UNHANDLED;
    }
}

static void scr_docs_free(ui_screen *base)
{
    scr_docs *s = (scr_docs *)base;
    rows_free(s);
    ui_line_free(&s->path);
    free(s);
}

ui_screen *scr_docs_new(ui_app *a, int64_t corpus_id, const char *corpus)
{
    scr_docs *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->corpus_id = corpus_id;
    snprintf(s->corpus, sizeof(s->corpus), "%s", corpus);
    snprintf(s->title, sizeof(s->title), "Documents \xe2\x80\xba %s", corpus);
    ui_line_init(&s->path);
    s->base = (ui_screen){
        .title = s->title,
        .draw = scr_docs_draw,
        .key = scr_docs_key,
        .free = scr_docs_free,
        .hints = "Enter open  / search  a ask  i add  p prefill  r reload  ? help  q back",
        .help = "Documents\n"
                "  Enter, l         open the document (a rejected one: its reason)\n"
                "  i                add files or directories (space-separated paths), in the\n"
                "                   background; ^X cancels\n"
                "  /  a             search the corpus, ask it\n"
                "  p                prefill its cached context in the background; ^X cancels\n"
                "  r                reload",
    };
    scr_docs_reload(&s->base, a);
    return &s->base;
}
