/* doc.h: a document as extracted, before it is stored: metadata plus segments in reading order.
 * Every parser (pdf.c, xml.c, text.c) fills one; worker.c carries it from the child process to
 * the parent; ingest.c stores it in one transaction.
 *
 * Ownership: an ing_doc owns every string in it; ing_doc_clear frees them and leaves an empty,
 * reusable doc. Text is UTF-8 (parsers make it so); locators are short ASCII/UTF-8 strings. */
#ifndef SALA_DOC_H
#define SALA_DOC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    char *locator;                        /* `p. 12`, `/TEI/text/body/div[2]/p[5]`, `x.c:1-60` */
    int64_t page, line_first, line_last;  /* -1 where the locator has none */
    char *text;
    size_t len;
} ing_seg;

typedef struct {
    char *title, *author;                 /* NULL when unknown */
    int64_t pages;                        /* PDFs: page count; else -1 */
    ing_seg *segs;
    size_t n, cap;
    size_t bytes;                         /* sum of segment text lengths */
} ing_doc;

void ing_doc_init(ing_doc *d);
void ing_doc_clear(ing_doc *d);
/* Append a segment (copies locator and text[0..len)). */
int ing_doc_seg_add(ing_doc *d, const char *locator, int64_t page, int64_t line_first,
                    int64_t line_last, const char *text, size_t len, sala_err *e);
/* Set title or author (copies; trims surrounding white space, folds inner runs to one space,
 * caps at 500 bytes; an empty value leaves the field NULL). key is "title" or "author". */
int ing_doc_meta_set(ing_doc *d, const char *key, const char *val, sala_err *e);
/* Move all segments of src to the end of dst (src is left empty; its metadata is kept). */
int ing_doc_append(ing_doc *dst, ing_doc *src, sala_err *e);

#endif
