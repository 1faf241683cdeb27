/* ui.h: what the files of ui/ share (internal; only ui/ includes it, since it brings curses).
 *
 * The TUI is a stack of screens. A screen is a plain state struct that starts with ui_screen,
 * whose draw function paints its area from the state and whose key function changes the state;
 * neither blocks for long. The loop in tui.c owns the terminal: title bar, status bar, help
 * overlay, resize, background job and the log sink. All text from documents goes through
 * ui_put (sanitized by text.c); no screen writes raw bytes to the terminal. */
#ifndef SALA_UI_H
#define SALA_UI_H

#include <curses.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "ingest/db.h"
#include "ui/job.h"
#include "ui/line.h"
#include "ui/text.h"

typedef struct ui_app ui_app;
typedef struct ui_screen ui_screen;

/* A key: a Unicode codepoint for a character, UI_FKEY(KEY_x) for a curses function key. */
#define UI_FKEY(k) (0x200000 + (k))
#define UI_CTRL(c) ((c) & 0x1f)
#define UI_ESC 27

enum { UI_KEY_UNHANDLED = 0, UI_KEY_HANDLED = 1 };
#define UI_NORMAL 0  /* A_NORMAL as an int, for attribute arithmetic */

struct ui_screen {
    const char *title;
    /* Paint rows y .. y+h-1 (all w columns); h and w may be as small as 1. */
    void (*draw)(ui_screen *s, ui_app *a, int y, int h, int w);
    /* Handle a key; UI_KEY_UNHANDLED lets the loop apply the global keys (q, ?, ...). */
    int (*key)(ui_screen *s, ui_app *a, int key);
    /* Called while idle (about every 50 ms); returns true when it needs a redraw. May be NULL. */
    bool (*tick)(ui_screen *s, ui_app *a);
    void (*free)(ui_screen *s);
    const char *hints;       /* status bar key hints */
    const char *help;        /* the screen's part of the help overlay, lines separated by \n */
    bool typing;             /* a text input has focus: printable keys are the screen's */
};

#define UI_QHIST_MAX 64
typedef struct {
    int64_t corpus_id;
    char *q;
} ui_question;

struct ui_app {
    db *d;
    char dbpath[4096];
    char self[4096];         /* the sala binary, for background jobs */
    ui_screen *stack[16];
    int nstack;
    ui_job job;
    char msg[512];           /* last log message, raw */
    int msg_level;
    double msg_time;
    bool help, quit;
    const char *model_opt;   /* --model of sala tui, or NULL */
    int64_t max_tokens;      /* of a model answer (<= 0: 512) */
    ui_question *qs;         /* unstored questions asked this session, oldest first */
    size_t nqs;
    int rows, cols;
};

/* Colors/attributes by role. */
enum { UI_A_NORMAL, UI_A_TITLE, UI_A_STATUS, UI_A_SEL, UI_A_HL, UI_A_ESC, UI_A_DIM, UI_A_HEAD,
       UI_A_ERR, UI_A_LABEL, UI_A_COUNT };
int ui_attr(int role);

/* Write s[0..len) sanitized at (y, x), at most maxw columns, in attr; escapes are shown in the
 * escape attribute. Returns the columns written. Clips to the screen. */
int ui_put(int y, int x, int maxw, const char *s, size_t len, int attr);
int ui_puts(int y, int x, int maxw, const char *s, int attr);
/* printf into ui_puts. */
int ui_printf(int y, int x, int maxw, int attr, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void ui_fill(int y, int x, int w, int attr);
/* A one-line editor at (y, x), w columns, with prompt; shows the cursor when focused. */
void ui_line_draw(const ui_line *l, int y, int x, int w, const char *prompt, bool focused);
/* Apply an editing key to l; returns true when it was one. Enter is not an editing key. */
bool ui_line_key(ui_line *l, int key);

/* A scrolling selection over n rows. */
typedef struct {
    int n, sel, top;
} ui_list;
/* Up/down/j/k/PgUp/PgDn/Home/End/g/G; page is the visible row count. True when handled. */
bool ui_list_key(ui_list *l, int key, int page);
/* Keep sel within [0, n) and visible in a window of h rows. */
void ui_list_fit(ui_list *l, int h);

void ui_push(ui_app *a, ui_screen *s);
void ui_pop(ui_app *a);
void ui_msg(ui_app *a, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Start `sala add` of paths into the corpus as the background job. */
int ui_ingest_start(ui_app *a, const char *corpus, const char *paths);
void ui_question_add(ui_app *a, int64_t corpus_id, const char *q);
/* Start `sala prefill` of the corpus as the background job. */
int ui_prefill_start(ui_app *a, const char *corpus);

/* Screens. Each returns NULL (after ui_msg) on failure. */
ui_screen *scr_corpora_new(ui_app *a);
ui_screen *scr_docs_new(ui_app *a, int64_t corpus_id, const char *corpus);
/* Open a document at the segment with locator (NULL: the start), at byte off of that segment,
 * highlighting the words of hl (may be NULL; "regex" matches are highlighted literally). */
ui_screen *scr_view_new(ui_app *a, int64_t doc_id, const char *locator, size_t off,
                        const char *hl);
ui_screen *scr_search_new(ui_app *a, int64_t corpus_id, const char *corpus);
ui_screen *scr_ask_new(ui_app *a, int64_t corpus_id, const char *corpus);

/* Re-read the store (after an ingest): screens that list things reload. */
void scr_docs_reload(ui_screen *s, ui_app *a);
void scr_corpora_reload(ui_screen *s, ui_app *a);
/* Make the ask screen's backend again (after a prefill), unless it is answering. */
void scr_ask_reload(ui_screen *s, ui_app *a);

#endif
