/* pdf.h: PDF text extraction with Poppler (glib). Meant to run inside a worker (worker.h): it
 * has the wk_fn signature. One segment per page, in page order, locator "p. N" (1-based), the
 * page's text in Poppler's reading order; title and author from the document information.
 * A PDF that Poppler cannot open, that is encrypted (no password is tried but the empty one),
 * or that has 0 pages (Poppler reports some corrupt files that way, without an error) fails. */
#ifndef SALA_PDF_H
#define SALA_PDF_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "doc.h"

/* Load Poppler's process-wide tables once and keep them until the process ends (pdf.c says
 * why: otherwise every document rebuilds them). pdf_extract calls it; a parent that calls it
 * before forking workers (ingest.c) hands the tables to every worker through fork. Idempotent
 * and thread-safe. Returns false when Poppler could not open the built-in one-page document
 * that holds them; pdf_extract works either way. */
bool pdf_lib_init(void);

/* Extract pages [shard*n/nshards, (shard+1)*n/nshards) of the PDF in buf; shard 0 also sets
 * title, author and the page count. */
int pdf_extract(const char *name, const char *buf, size_t len, int shard, int nshards,
                ing_doc *doc, sala_err *e);

#endif
