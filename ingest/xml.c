/* xml.c: XML documents to segments with libxml2 (see xml.h for the safety rules). */
#include "xml.h"

#include <glib.h>
#include <libxml/entities.h>
#include <libxml/hash.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlmemory.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XML_MAX_PATH 4096

/* libxml2's allocator, so that an allocation that fails inside it is known as such: libxml2
 * reports some as parse errors ("not well-formed", a missing root, an undefined entity after
 * it dropped the internal subset), and a document must not be rejected as malformed, nor
 * accepted shorter, because memory ran out. The flag is per thread (workers may run
 * extractions in threads of one process); xml_extract clears and reads it. */
static _Thread_local bool xml_oom;

static void *xml_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p) xml_oom = true;
    return p;
}

static void *xml_realloc(void *q, size_t n)
{
    void *p = realloc(q, n);
    if (!p) xml_oom = true;
    return p;
}

static char *xml_strdup(const char *t)
{
    char *p = strdup(t);
    if (!p) xml_oom = true;
    return p;
}

/* libxml2 prints some errors (allocation failures, buffer errors) through its generic channel
 * even with XML_PARSE_NOERROR; library code never prints. */
static void xml_silent(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_setup(void) { xmlMemSetup(free, xml_malloc, xml_realloc, xml_strdup); }

/* Never load anything: DTDs, external entities, XIncludes all come through here. */
static xmlParserInputPtr refuse_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    (void)url;
    (void)id;
    (void)ctxt;
    return NULL;
}

typedef struct {
    sala_err *e;
    int rc;
} ent_check;

static void check_entity(void *payload, void *data, const xmlChar *name)
{
    xmlEntityPtr ent = payload;
    ent_check *c = data;
    if (c->rc) return;
    switch (ent->etype) {
    case XML_EXTERNAL_GENERAL_PARSED_ENTITY:
    case XML_EXTERNAL_GENERAL_UNPARSED_ENTITY:
    case XML_EXTERNAL_PARAMETER_ENTITY:
        c->rc = sala_errf(c->e, SALA_EUNSUP, "external entity '%s' (%s) refused", name,
                          ent->SystemID ? (const char *)ent->SystemID : "no system id");
        return;
    default:
        break;
    }
    if (ent->content && (strchr((const char *)ent->content, '&') ||
                         strchr((const char *)ent->content, '%')))
        c->rc = sala_errf(c->e, SALA_EUNSUP,
                          "entity '%s' refers to other entities: refused (expansion bomb guard)",
                          name);
}

static int check_dtd(xmlDtdPtr dtd, sala_err *e)
{
    ent_check c = {e, SALA_OK};
    if (!dtd) return SALA_OK;
    if (dtd->entities) xmlHashScan(dtd->entities, check_entity, &c);
    if (!c.rc && dtd->pentities) xmlHashScan(dtd->pentities, check_entity, &c);
    return c.rc;
}

static bool blank(const xmlChar *s)
{
    for (; s && *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

static bool is_block(xmlNodePtr n)
{
    static const char *const blocks[] = {
        "p", "div", "note", "head", "item", "list", "l", "lg", "para", "sec", "title", "table",
        "row", "cell", "td", "th", "tr", "li", "ul", "ol", "section", "simpara", "entry",
        "listitem", "fig", "caption", "quote", "q", "sp", "speaker", "ab", "label", "byline",
        "dateline", "opener", "closer", "address", "bibl", "abstract",
    };
    for (size_t i = 0; i < SALA_ARRAY_LEN(blocks); i++)
        if (!strcmp((const char *)n->name, blocks[i])) return true;
    return false;
}

/* Append the text under n to out (entity references: their value when it is plain text). */
static void collect(xmlNodePtr n, GString *out)
{
    for (xmlNodePtr c = n->children; c; c = c->next) {
        switch (c->type) {
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE:
            if (c->content) g_string_append(out, (const char *)c->content);
            break;
        case XML_ENTITY_REF_NODE: {
            xmlEntityPtr ent = (xmlEntityPtr)c->children;
            if (ent && ent->type == XML_ENTITY_DECL && ent->content &&
                !strchr((const char *)ent->content, '<'))
                g_string_append(out, (const char *)ent->content);
            break;
        }
        case XML_ELEMENT_NODE: {
            /* Inline elements (<hi>, <emph>) join their neighbours as they stand; empty ones
             * (<lb/>) and block ones (a <p> inside a <note>) are set apart by a space. */
            bool apart = !c->children || is_block(c);
            if (apart) g_string_append_c(out, ' ');
            collect(c, out);
            if (apart) g_string_append_c(out, ' ');
            break;
        }
        default:
            break;
        }
    }
}

/* Fold white space runs to one space and trim, in place; returns the new length. */
static size_t fold_space(char *s, size_t n)
{
    size_t k = 0;
    bool sp = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            sp = k > 0;
            continue;
        }
        if (sp) s[k++] = ' ';
        sp = false;
        s[k++] = ch;
    }
    s[k] = 0;
    return k;
}

static bool has_own_text(xmlNodePtr n)
{
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && !blank(c->content))
            return true;
        if (c->type == XML_ENTITY_REF_NODE) return true;
    }
    return false;
}

static void node_name(xmlNodePtr n, char *buf, size_t cap)
{
    if (n->ns && n->ns->prefix)
        snprintf(buf, cap, "%s:%s", (const char *)n->ns->prefix, (const char *)n->name);
    else
        snprintf(buf, cap, "%s", (const char *)n->name);
}

typedef struct {
    ing_doc *doc;
    sala_err *e;
    GString *text;
} walk_st;

/* Walk element n whose path (ending with its own step) is path[0..plen). */
static int walk(walk_st *w, xmlNodePtr n, char *path, size_t plen)
{
    if (has_own_text(n)) {
        g_string_truncate(w->text, 0);
        collect(n, w->text);
        size_t k = fold_space(w->text->str, w->text->len);
        if (k == 0) return SALA_OK;
        return ing_doc_seg_add(w->doc, path, -1, -1, -1, w->text->str, k, w->e);
    }
    /* Positions among same-named siblings: count first, then number. */
    GHashTable *total = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    char nm[512];
    int rc = SALA_OK;
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) continue;
        node_name(c, nm, sizeof(nm));
        gpointer v = g_hash_table_lookup(total, nm);
        g_hash_table_insert(total, g_strdup(nm), GSIZE_TO_POINTER(GPOINTER_TO_SIZE(v) + 1));
    }
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) continue;
        node_name(c, nm, sizeof(nm));
        size_t count = GPOINTER_TO_SIZE(g_hash_table_lookup(total, nm));
        size_t idx = GPOINTER_TO_SIZE(g_hash_table_lookup(seen, nm)) + 1;
        g_hash_table_insert(seen, g_strdup(nm), GSIZE_TO_POINTER(idx));
        int k = count > 1 ? snprintf(path + plen, XML_MAX_PATH - plen, "/%s[%zu]", nm, idx)
                          : snprintf(path + plen, XML_MAX_PATH - plen, "/%s", nm);
        if (k < 0 || (size_t)k >= XML_MAX_PATH - plen) {
            rc = sala_errf(w->e, SALA_ERANGE, "element path longer than %d bytes", XML_MAX_PATH);
            break;
        }
        rc = walk(w, c, path, plen + (size_t)k);
        path[plen] = 0;
        if (rc) break;
    }
    g_hash_table_destroy(total);
    g_hash_table_destroy(seen);
    return rc;
}

/* First element child of n with local name `name`, or NULL. */
static xmlNodePtr child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, name)) return c;
    return NULL;
}

/* Follow a '/'-separated chain of local names from n. */
static xmlNodePtr follow(xmlNodePtr n, const char *chain)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", chain);
    char *save = NULL;
    for (char *t = strtok_r(buf, "/", &save); t && n; t = strtok_r(NULL, "/", &save))
        n = child(n, t);
    return n;
}

static int set_meta(ing_doc *doc, const char *key, xmlNodePtr n, sala_err *e)
{
    if (!n) return SALA_OK;
    GString *s = g_string_new(NULL);
    collect(n, s);
    fold_space(s->str, s->len);
    int rc = ing_doc_meta_set(doc, key, s->str, e);
    g_string_free(s, TRUE);
    return rc;
}

/* Titles and authors of the vocabularies we know (TEI P5, JATS, DocBook 4/5). */
static int find_meta(xmlNodePtr root, ing_doc *doc, sala_err *e)
{
    const char *r = (const char *)root->name;
    xmlNodePtr title = NULL, author = NULL;
    if (!strcmp(r, "TEI") || !strcmp(r, "teiCorpus")) {
        xmlNodePtr ts = follow(root, "teiHeader/fileDesc/titleStmt");
        title = child(ts, "title");
        author = child(ts, "author");
    } else if (!strcmp(r, "article") && child(root, "front")) {
        xmlNodePtr meta = follow(root, "front/article-meta");
        title = follow(meta, "title-group/article-title");
        author = follow(meta, "contrib-group/contrib/name");
    } else {
        static const char *const infos[] = {"info", "bookinfo", "articleinfo", "chapterinfo"};
        for (size_t i = 0; i < SALA_ARRAY_LEN(infos) && !title; i++) {
            xmlNodePtr info = child(root, infos[i]);
            title = child(info, "title");
            if (!author) author = child(info, "author");
            if (!author) author = follow(info, "authorgroup/author");
        }
        if (!title) title = child(root, "title");
    }
    int rc = set_meta(doc, "title", title, e);
    if (rc == SALA_OK) rc = set_meta(doc, "author", author, e);
    return rc;
}

int xml_extract(const char *name, const char *buf, size_t len, int shard, int nshards,
                ing_doc *doc, sala_err *e)
{
    (void)nshards;
    if (shard != 0) return SALA_OK;
    if (len > INT32_MAX) return sala_errf(e, SALA_ERANGE, "%zu bytes is too large for libxml2", len);
    xmlParserCtxtPtr ctxt = NULL;
    xmlDocPtr x = NULL;
    GString *text = NULL;
    char *path = NULL;
    int rc = SALA_OK;
    pthread_once(&xml_once, xml_setup);
    xmlSetGenericErrorFunc(NULL, xml_silent);
    xml_oom = false;
    xmlSetExternalEntityLoader(refuse_loader);
    ctxt = xmlNewParserCtxt();
    path = g_malloc(XML_MAX_PATH);
    if (!ctxt) {
        rc = sala_errf(e, SALA_ENOMEM, "cannot create a parser");
        goto fail;
    }
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA |
               XML_PARSE_NOXINCNODE;
    x = xmlCtxtReadMemory(ctxt, buf, (int)len, name, NULL, opts);
    if (!x) {
        const xmlError *er = xmlCtxtGetLastError(ctxt);
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", er && er->message ? er->message : "not well-formed");
        size_t ml = strlen(msg);
        while (ml && msg[ml - 1] == '\n') msg[--ml] = 0;
        rc = sala_errf(e, SALA_EFORMAT, "line %d: %s", er ? er->line : 0, msg);
        goto fail;
    }
    rc = check_dtd(x->intSubset, e);
    if (rc) goto fail;
    xmlNodePtr root = xmlDocGetRootElement(x);
    if (!root) {
        rc = sala_errf(e, SALA_EFORMAT, "no root element");
        goto fail;
    }
    rc = find_meta(root, doc, e);
    if (rc) goto fail;
    char nm[512];
    node_name(root, nm, sizeof(nm));
    int k = snprintf(path, XML_MAX_PATH, "/%s", nm);
    text = g_string_new(NULL);
    walk_st w = {doc, e, text};
    rc = walk(&w, root, path, (size_t)k);
    if (rc == SALA_OK && doc->n == 0) rc = sala_errf(e, SALA_EFORMAT, "no text");
fail:
    if (text) g_string_free(text, TRUE);
    g_free(path);
    xmlFreeDoc(x);
    xmlFreeParserCtxt(ctxt);
    if (xml_oom) {   /* whatever libxml2 made of it, the document was not read whole */
        ing_doc_clear(doc);
        rc = sala_errf(e, SALA_ENOMEM, "out of memory (libxml2)");
    }
    return rc;
}
