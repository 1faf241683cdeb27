/* tui.h: the terminal UI behind `sala tui` (issue 8). The one public entry of ui/.
 *
 * ui_tui_run checks the terminal first (stdin and stdout must be terminals, TERM set and not
 * "dumb") and returns SALA_EINVAL with a message before touching it when they are not; it
 * opens the store, runs until the user quits, and restores the terminal on every way out,
 * fatal signals included. While it runs, sala_log messages go to its status bar. */
#ifndef SALA_UI_TUI_H
#define SALA_UI_TUI_H

#include "common.h"

typedef struct {
    const char *dbopt;       /* --db FILE, or NULL for the default store */
    const char *corpus;      /* open this corpus's documents first; NULL: the corpus list */
    const char *trace_path;  /* when set, one line per key with its key-to-redraw time (ms) */
    const char *model;       /* the model directory for every corpus (NULL: each corpus's own,
                                else $SALA_MODEL; none: retrieval mode) */
    int64_t max_tokens;      /* of a model answer (<= 0: 512) */
} ui_opts;

int ui_tui_run(const ui_opts *o, sala_err *e);

#endif
