/* fuzz_xml.c: XML text extraction (libxml2 with our safety settings, the entity checks, the
 * segment walk and TEI/DocBook/JATS metadata) in process: the worker contains crashes in
 * production, the fuzzer must see them. */
#include <libxml/xmlerror.h>

#include "ingest/doc.h"
#include "ingest/xml.h"
#include "tests/fuzz/fuzz.h"

/* libxml2 prints some errors (duplicate IDs) through its generic handler even with
 * XML_PARSE_NOERROR; in the worker stderr is /dev/null, here they would flood the log. */
static void quiet(void *ctx, const char *msg, ...)
{
    (void)ctx, (void)msg;
}

static int one(const uint8_t *data, size_t size)
{
    static int init;
    if (!init++) xmlSetGenericErrorFunc(NULL, quiet);
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    xml_extract("fuzz.xml", (const char *)data, size, 0, 1, &d, &e);
    ing_doc_clear(&d);
    return 0;
}

FUZZ_TARGET(xml, one)
