/* fuzz_xml.c: XML text extraction (libxml2 with our safety settings, the entity checks, the
 * segment walk and TEI/DocBook/JATS metadata) in process: the worker contains crashes in
 * production, the fuzzer must see them. */
#include "ingest/doc.h"
#include "ingest/xml.h"
#include "tests/fuzz/fuzz.h"

static int one(const uint8_t *data, size_t size)
{
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    xml_extract("fuzz.xml", (const char *)data, size, 0, 1, &d, &e);
    ing_doc_clear(&d);
    return 0;
}

FUZZ_TARGET(xml, one)
