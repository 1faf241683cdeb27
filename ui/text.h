/* text.h: terminal-safe text for the TUI, without curses: decoding, sanitizing, display widths
 * (utf8proc) and lazy line wrapping. Pure functions, unit-tested in tests/test_tui.c.
 *
 * Invariants: every byte of document text or file name that reaches the terminal first goes
 * through ui_glyph_next, which never lets C0/C1 controls, DEL, ESC or invalid UTF-8 through:
 * they come back as visible escapes ("^[", "<85>", "\xff") with esc set. Wrapping never lets a
 * row cross a newline or an anchor (a codepoint boundary at every UI_ANCHOR bytes), so that the
 * row containing any offset can be found from at most UI_ANCHOR bytes of text. */
#ifndef SALA_UI_TEXT_H
#define SALA_UI_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UI_ANCHOR 8192   /* bytes; a long line gets a forced row break this often */
#define UI_TAB_WIDTH 4

typedef struct {
    size_t n;        /* bytes of input consumed (>= 1) */
    int w;           /* display columns of out (0 for a combining mark) */
    bool esc;        /* out is an escape shown in place of a control or invalid byte */
    bool newline;    /* the input was '\n' (out is empty, w 0; callers decide) */
    char out[16];    /* what to write to the terminal, UTF-8, NUL-terminated */
    size_t outlen;
} ui_glyph;

/* Set once: whether the terminal's locale is UTF-8 (else non-ASCII is shown as '?'). */
void ui_text_set_utf8(bool on);

/* Decode the glyph at s[at] (at < len) into *g. Never fails; see the invariant above. */
void ui_glyph_next(const char *s, size_t len, size_t at, ui_glyph *g);

/* Display width of s[0..len) with newlines counted as one column. */
int ui_text_width(const char *s, size_t len);

/* Sanitize s[0..len) into out (capacity cap, NUL-terminated), at most maxw columns, newlines
 * and tabs shown as one space. Returns the columns used. A wide glyph that does not fit is
 * dropped. Safe to write to the terminal as is. */
int ui_text_fit(const char *s, size_t len, int maxw, char *out, size_t cap);

/* The first anchor strictly after `at`, or len. Anchors are the codepoint starts at or after
 * each multiple of UI_ANCHOR. */
size_t ui_anchor_after(const char *s, size_t len, size_t at);
/* The last anchor at or before `at` (0 when none). */
size_t ui_anchor_at_or_before(const char *s, size_t len, size_t at);

/* Lay out one row of at most width columns (>= 1) starting at `at` (< len). Breaks after the
 * last space when the row is full and a space exists in its second half, else at the column
 * limit; never crosses '\n' (which ends the row and is consumed) nor an anchor. Returns the
 * row's end (exclusive, the newline not included); *next receives the next row's start. */
size_t ui_wrap_row(const char *s, size_t len, size_t at, int width, size_t *next);

/* The start of the row that contains byte q (q < len): the row the forward wrap from 0 would
 * give, computed from at most UI_ANCHOR bytes before q. */
size_t ui_wrap_row_start(const char *s, size_t len, size_t q, int width);

/* ASCII case-insensitive search for needle in hay[from..to); returns the offset or (size_t)-1. */
size_t ui_find_ci(const char *hay, size_t from, size_t to, const char *needle, size_t nlen);

#endif
