/* line.h: a one-line text editor with history, no curses (the ask and search inputs use it).
 * The buffer is UTF-8 and always valid: insertion takes whole codepoints, deletion and cursor
 * motion step over whole codepoints. Ownership: ui_line_free releases the text and history. */
#ifndef SALA_UI_LINE_H
#define SALA_UI_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UI_LINE_MAX 4096   /* bytes; input past this is ignored */

typedef struct {
    char buf[UI_LINE_MAX + 1];
    size_t len, cur;        /* bytes; cur is at a codepoint start */
    char **hist;            /* oldest first, owned */
    size_t nhist, caphist;
    size_t hpos;            /* == nhist when editing a fresh line */
    char *saved;            /* the fresh line kept while browsing history */
} ui_line;

typedef enum {
    UI_LINE_LEFT, UI_LINE_RIGHT, UI_LINE_HOME, UI_LINE_END, UI_LINE_BACKSPACE, UI_LINE_DELETE,
    UI_LINE_KILL_END, UI_LINE_KILL_START, UI_LINE_KILL_WORD, UI_LINE_WORD_LEFT,
    UI_LINE_WORD_RIGHT, UI_LINE_HIST_PREV, UI_LINE_HIST_NEXT,
} ui_line_op;

void ui_line_init(ui_line *l);
void ui_line_free(ui_line *l);
void ui_line_set(ui_line *l, const char *s);
/* Insert one codepoint at the cursor (controls and invalid codepoints are ignored). */
void ui_line_insert(ui_line *l, uint32_t cp);
void ui_line_edit(ui_line *l, ui_line_op op);
/* Append s to the history (skipping empty lines and an immediate repeat); resets browsing. */
void ui_line_hist_add(ui_line *l, const char *s);

#endif
