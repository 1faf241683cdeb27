/* line.c: the one-line editor of line.h. */
#include "line.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

void ui_line_init(ui_line *l)
{
    memset(l, 0, sizeof(*l));
}

void ui_line_free(ui_line *l)
{
    for (size_t i = 0; i < l->nhist; i++) free(l->hist[i]);
    free(l->hist);
    free(l->saved);
    ui_line_init(l);
}

void ui_line_set(ui_line *l, const char *s)
{
    size_t n = strlen(s);
    if (n > UI_LINE_MAX) n = UI_LINE_MAX;
    while (n && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* do not cut a codepoint */
    memcpy(l->buf, s, n);
    l->buf[n] = 0;
    l->len = l->cur = n;
}

static bool cont(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

static size_t prev_cp(const ui_line *l, size_t at)
{
    if (!at) return 0;
    at--;
    while (at && cont(l->buf[at])) at--;
    return at;
}

static size_t next_cp(const ui_line *l, size_t at)
{
    if (at >= l->len) return l->len;
    at++;
    while (at < l->len && cont(l->buf[at])) at++;
    return at;
}

static bool is_space(const ui_line *l, size_t at) { return l->buf[at] == ' ' || l->buf[at] == '\t'; }

static void cut(ui_line *l, size_t a, size_t b)
{
    memmove(l->buf + a, l->buf + b, l->len - b + 1);
    l->len -= b - a;
    l->cur = a;
}

void ui_line_insert(ui_line *l, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    if (l->len + n > UI_LINE_MAX) return;
    memmove(l->buf + l->cur + n, l->buf + l->cur, l->len - l->cur + 1);
    memcpy(l->buf + l->cur, u, n);
    l->len += n;
    l->cur += n;
}

static void hist_go(ui_line *l, size_t to)
{
    if (to == l->hpos || to > l->nhist) return;
    if (l->hpos == l->nhist) {
        free(l->saved);
        l->saved = strdup(l->buf);
    }
    l->hpos = to;
    ui_line_set(l, to == l->nhist ? (l->saved ? l->saved : "") : l->hist[to]);
}

void ui_line_edit(ui_line *l, ui_line_op op)
{
    size_t a;
    switch (op) {
    case UI_LINE_LEFT: l->cur = prev_cp(l, l->cur); break;
    case UI_LINE_RIGHT: l->cur = next_cp(l, l->cur); break;
    case UI_LINE_HOME: l->cur = 0; break;
    case UI_LINE_END: l->cur = l->len; break;
    case UI_LINE_BACKSPACE:
        if (l->cur) cut(l, prev_cp(l, l->cur), l->cur);
        break;
    case UI_LINE_DELETE:
        if (l->cur < l->len) {
            a = l->cur;
            cut(l, a, next_cp(l, a));
        }
        break;
    case UI_LINE_KILL_END:
        l->buf[l->cur] = 0;
        l->len = l->cur;
        break;
    case UI_LINE_KILL_START: cut(l, 0, l->cur); break;
    case UI_LINE_KILL_WORD:
    case UI_LINE_WORD_LEFT:
        a = l->cur;
        while (a && is_space(l, prev_cp(l, a))) a = prev_cp(l, a);
        while (a && !is_space(l, prev_cp(l, a))) a = prev_cp(l, a);
        if (op == UI_LINE_KILL_WORD) cut(l, a, l->cur);
        else l->cur = a;
        break;
    case UI_LINE_WORD_RIGHT:
        a = l->cur;
        while (a < l->len && is_space(l, a)) a = next_cp(l, a);
        while (a < l->len && !is_space(l, a)) a = next_cp(l, a);
        l->cur = a;
        break;
    case UI_LINE_HIST_PREV:
        if (l->hpos) hist_go(l, l->hpos - 1);
        break;
    case UI_LINE_HIST_NEXT:
        if (l->hpos < l->nhist) hist_go(l, l->hpos + 1);
        break;
    }
}

void ui_line_hist_add(ui_line *l, const char *s)
{
    if (*s && !(l->nhist && !strcmp(l->hist[l->nhist - 1], s))) {
        if (l->nhist == l->caphist) {
            size_t nc = l->caphist ? 2 * l->caphist : 16;
            char **h = realloc(l->hist, nc * sizeof(*h));
            if (!h) return;
            l->hist = h;
            l->caphist = nc;
        }
        char *c = strdup(s);
        if (!c) return;
        l->hist[l->nhist++] = c;
    }
    l->hpos = l->nhist;
    free(l->saved);
    l->saved = NULL;
}
