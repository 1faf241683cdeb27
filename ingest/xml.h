/* xml.h: XML text extraction with libxml2. Meant to run inside a worker (worker.h): it has the
 * wk_fn signature.
 *
 * The bytes come from memory (xmlCtxtReadMemory); the parser never touches the network, never
 * loads a DTD, never substitutes entities, never runs XInclude and keeps libxml2's default size
 * limits (no XML_PARSE_HUGE); an external entity loader that refuses everything is installed.
 * A document that declares an external entity, or an entity whose value refers to other
 * entities (the shape of "billion laughs"), is refused outright, so that neither a file named by
 * an entity nor an expansion ever reaches the store.
 *
 * Segments: one per block element, i.e. an element with non-blank text of its own; its text is
 * the text of its whole subtree with white space folded. Locators are element paths with local
 * names (prefixed where the source used a prefix) and 1-based positions among same-named
 * siblings where there are several: /TEI/text/body/div[2]/p[5]. Titles (and authors) of TEI,
 * DocBook and JATS documents are recognised. */
#ifndef SALA_XML_H
#define SALA_XML_H

#include <stddef.h>

#include "common.h"
#include "doc.h"

/* shard != 0 does nothing (XML is extracted by one worker). */
int xml_extract(const char *name, const char *buf, size_t len, int shard, int nshards,
                ing_doc *doc, sala_err *e);

#endif
