/* fuzz_pdf.c: PDF text extraction (Poppler through pdf_extract) in process, whole document and
 * one shard of two, so that crashes inside Poppler reach the fuzzer instead of the worker. */
#include "ingest/doc.h"
#include "ingest/pdf.h"
#include "tests/fuzz/fuzz.h"

static int one(const uint8_t *data, size_t size)
{
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    if (pdf_extract("fuzz.pdf", (const char *)data, size, 0, 1, &d, &e) == SALA_OK) {
        ing_doc_clear(&d);
        pdf_extract("fuzz.pdf", (const char *)data, size, 1, 2, &d, &e);
    }
    ing_doc_clear(&d);
    return 0;
}

FUZZ_TARGET(pdf, one)
