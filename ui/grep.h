/* grep.h: regular-expression search over a corpus's segments (PCRE2, JIT when available),
 * written over db_seg_scan because db.h has no regex search yet. No curses here.
 * Matches are reported in corpus order with their segment's locator, the byte offset of the
 * match in the segment text and a short context snippet. */
#ifndef SALA_UI_GREP_H
#define SALA_UI_GREP_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "ingest/db.h"

typedef struct {
    int64_t doc_id;
    const char *doc_name, *locator;
    size_t off, len;         /* the match in the segment text */
    const char *snippet;     /* up to ~60 bytes before and ~100 after, on codepoint bounds */
} ui_grep_hit;
typedef int (*ui_grep_fn)(const ui_grep_hit *h, void *ud); /* non-zero stops */

/* Search corpus_id for pattern (case-insensitive when caseless), at most limit hits. A bad
 * pattern is SALA_EINVAL with PCRE2's message and offset. */
int ui_grep(db *d, int64_t corpus_id, const char *pattern, bool caseless, int limit,
            ui_grep_fn fn, void *ud, sala_err *e);

#endif
