/* text.h: plain text, Markdown and source code to segments, plus the sniffing that decides
 * whether bytes are text at all. Runs in the main process: it is our own code over a buffer
 * already bounded by the size limit, with no library underneath that could crash or hang.
 *
 * Segments carry line ranges (1-based, inclusive) and locators "NAME:FIRST-LAST"; a segment's
 * text is the exact bytes of those lines (after decoding to UTF-8), so that offsets into it map
 * back to the file. Code: chunks of 60..120 lines, ending at a blank line or a closing brace in
 * column 0 where one falls in that window. Text and Markdown: paragraphs grouped up to about
 * 4 KiB; in Markdown a heading starts a new segment, and fenced code blocks are not split at
 * their blank lines. */
#ifndef SALA_TEXT_H
#define SALA_TEXT_H

#include <stddef.h>

#include "common.h"
#include "doc.h"

typedef enum { TEXT_PLAIN, TEXT_MARKDOWN, TEXT_CODE } text_kind;

/* Language of a source file from its name ("c", "python", ...), or NULL when the extension is
 * not a known programming language. */
const char *text_lang(const char *name);

/* Decode buf[0..len) to UTF-8: valid UTF-8 is kept (a BOM dropped), UTF-16 with a BOM is
 * converted, other bytes are read as Windows-1252. Binary data is refused with SALA_EFORMAT
 * ("binary: NUL byte at offset N", "binary: 37% control bytes"). *out is malloc'ed (caller
 * frees), NUL-terminated, *out_len its length. */
int text_decode(const char *buf, size_t len, char **out, size_t *out_len, sala_err *e);

/* Segment UTF-8 text (as produced by text_decode) of a file shown as name. */
int text_extract(const char *name, const char *text, size_t len, text_kind kind, ing_doc *doc,
                 sala_err *e);

#endif
