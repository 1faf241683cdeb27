/* scr_corpora.c: the corpus list: documents, rejected files, segments, tokens (of the token
 * streams `sala add` stored; "-" without a tokenizer) and the cached context of each corpus:
 * its size, age and "valid" or "STALE" (the cheap check of store.h against the model the
 * corpus resolves to), "none" without one. Enter opens its documents; p prefills it in the
 * background. */
#include "ui.h"
#include "ui/store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctx/ctx.h"

typedef struct {
    int64_t id;
    char *name;
    int64_t docs, rejected, segments, created;
    int64_t tokens;          /* -1: no token streams */
    ui_ctx_info ctx;
} corpus_row;

typedef struct {
    ui_screen base;
    corpus_row *rows;
    ui_list list;
    char err[SALA_ERR_MAX];
} scr_corpora;

static int on_corpus(const db_corpus_info *c, void *ud)
{
    scr_corpora *s = ud;
    corpus_row *n = realloc(s->rows, (size_t)(s->list.n + 1) * sizeof(*n));
    if (!n) return SALA_ENOMEM;
    s->rows = n;
    char *name = strdup(c->name ? c->name : "");
    if (!name) return SALA_ENOMEM;
    n[s->list.n++] = (corpus_row){c->id, name, c->docs_ok, c->docs_rejected, c->segments,
                                   c->created, -1, {0}};
    return 0;
}

static void rows_free(scr_corpora *s)
{
    for (int i = 0; i < s->list.n; i++) free(s->rows[i].name);
    free(s->rows);
    s->rows = NULL;
    s->list.n = 0;
}

void scr_corpora_reload(ui_screen *base, ui_app *a)
{
    scr_corpora *s = (scr_corpora *)base;
    sala_err e = {0, ""};
    rows_free(s);
    s->err[0] = 0;
    if (db_corpus_list(a->d, on_corpus, s, &e)) {
        snprintf(s->err, sizeof(s->err), "%s", e.msg);
        return;
    }
    for (int i = 0; i < s->list.n; i++) {
        corpus_row *c = &s->rows[i];
        char *model = NULL;
        if (ui_corpus_tokens(a->d, c->id, &c->tokens, &e) ||
            ctx_model_resolve(a->d, c->name, a->model_opt, &model, &e) ||
            ui_ctx_info_get(a->d, c->id, model, &c->ctx, &e))
            ui_msg(a, SALA_LOG_WARN, "%s: %s", c->name, e.msg);
        free(model);
    }
}

static void fmt_age(int64_t t, char *buf, size_t cap)
{
    int64_t d = (int64_t)time(NULL) - t;
    if (d < 0) d = 0;
    if (d < 120) snprintf(buf, cap, "%llds ago", (long long)d);
    else if (d < 7200) snprintf(buf, cap, "%lldm ago", (long long)(d / 60));
    else if (d < 172800) snprintf(buf, cap, "%lldh ago", (long long)(d / 3600));
    else snprintf(buf, cap, "%lldd ago", (long long)(d / 86400));
}

static void scr_corpora_draw(ui_screen *base, ui_app *a, int y, int h, int w)
{
    scr_corpora *s = (scr_corpora *)base;
    (void)a;
    if (s->err[0]) {
        ui_puts(y, 0, w, s->err, ui_attr(UI_A_ERR));
        return;
    }
    if (!s->list.n) {
        ui_puts(y, 1, w - 1, "No corpus yet. Create one: sala corpus new NAME; sala add NAME FILES...",
                UI_NORMAL);
        return;
    }
    /* Columns from the right are dropped when the terminal is narrow. */
    static const struct { const char *head; int w; } cols[] = {
        {"DOCS", 6}, {"REJECTED", 9}, {"SEGMENTS", 9}, {"TOKENS", 9}, {"CONTEXT", 22}, {"CREATED", 10}};
    int ncol = (int)SALA_ARRAY_LEN(cols), need = 0;
    for (int i = 0; i < ncol; i++) need += cols[i].w + 1;
    while (ncol > 0 && w - need < 12) need -= cols[--ncol].w + 1;
    int namew = w - need - 1;
    ui_fill(y, 0, w, ui_attr(UI_A_HEAD));
    ui_puts(y, 1, namew, "CORPUS", ui_attr(UI_A_HEAD));
    for (int i = 0, x = 1 + namew; i < ncol; x += cols[i].w + 1, i++)
        ui_printf(y, x, cols[i].w + 1, ui_attr(UI_A_HEAD), "%*s", cols[i].w, cols[i].head);
    if (h < 2) return;
    ui_list_fit(&s->list, h - 1);
    for (int r = 0; r < h - 1 && s->list.top + r < s->list.n; r++) {
        int i = s->list.top + r, yy = y + 1 + r;
        const corpus_row *c = &s->rows[i];
        int at = i == s->list.sel ? ui_attr(UI_A_SEL) : UI_NORMAL;
        if (at != UI_NORMAL) ui_fill(yy, 0, w, at);
        ui_puts(yy, 1, namew, c->name, at);
        char v[6][64], age[24];
        fmt_age(c->created, age, sizeof(age));
        snprintf(v[0], 64, "%lld", (long long)c->docs);
        snprintf(v[1], 64, "%lld", (long long)c->rejected);
        snprintf(v[2], 64, "%lld", (long long)c->segments);
        if (c->tokens >= 0) snprintf(v[3], 64, "%lld", (long long)c->tokens);
        else snprintf(v[3], 64, "-");
        if (c->ctx.have) {
            char sz[16], cage[24];
            ui_fmt_bytes(c->ctx.bytes, sz, sizeof(sz));
            fmt_age(c->ctx.created, cage, sizeof(cage));
            snprintf(v[4], 64, "%s %s %s", sz, cage, c->ctx.stale ? "STALE" : "valid");
        } else {
            snprintf(v[4], 64, "none");
        }
        snprintf(v[5], 64, "%s", age);
        for (int k = 0, x = 1 + namew; k < ncol; x += cols[k].w + 1, k++)
            ui_printf(yy, x, cols[k].w + 1, at, "%*s", cols[k].w, v[k]);
    }
}

static int scr_corpora_key(ui_screen *base, ui_app *a, int key)
{
    scr_corpora *s = (scr_corpora *)base;
    if (ui_list_key(&s->list, key, a->rows - 4)) return UI_KEY_HANDLED;
    if (!s->list.n) return UI_KEY_UNHANDLED;
    const corpus_row *c = &s->rows[s->list.sel];
    switch (key) {
    case '\r': case '\n': case UI_FKEY(KEY_ENTER): case UI_FKEY(KEY_RIGHT): case 'l':
        ui_push(a, scr_docs_new(a, c->id, c->name));
        return UI_KEY_HANDLED;
    case '/': ui_push(a, scr_search_new(a, c->id, c->name)); return UI_KEY_HANDLED;
    case 'a': ui_push(a, scr_ask_new(a, c->id, c->name)); return UI_KEY_HANDLED;
    case 'r': scr_corpora_reload(base, a); return UI_KEY_HANDLED;
    case 'p': ui_prefill_start(a, c->name); return UI_KEY_HANDLED;
    default: return UI_KEY_UNHANDLED;
    }
}

static void scr_corpora_free(ui_screen *base)
{
    scr_corpora *s = (scr_corpora *)base;
    rows_free(s);
    free(s);
}

ui_screen *scr_corpora_new(ui_app *a)
{
    scr_corpora *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base = (ui_screen){
        .title = "Corpora",
        .draw = scr_corpora_draw,
        .key = scr_corpora_key,
        .free = scr_corpora_free,
        .hints = "Enter documents  / search  a ask  p prefill  r reload  ? help  q quit",
        .help = "Corpora\n"
                "  Enter, l         the corpus's documents\n"
                "  /  a             search it, ask it\n"
                "  p                prefill its cached context in the background (^X cancels)\n"
                "  r                reload\n"
                "  TOKENS: of the stored token streams ('-': added without a tokenizer)\n"
                "  CONTEXT: the cached context: size, age, valid or STALE (the corpus or its\n"
                "  model changed since the prefill: p prefills again); none: never prefilled",
    };
    scr_corpora_reload(&s->base, a);
    return &s->base;
}
