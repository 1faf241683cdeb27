/* pdf.c: PDF pages to segments with poppler-glib (see pdf.h). The bytes come from memory (the
 * parent read them); Poppler is never given a file name or a URI. Page text is made valid UTF-8
 * and form feeds are dropped; an empty page still gets its (empty) segment so that page numbers
 * and ordinals stay aligned. */
#include "pdf.h"

#include <poppler.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Poppler (22.x) builds its process-wide tables (GlobalParams: name-to-Unicode maps, encodings,
 * about 9 M instructions) when the first PopplerDocument is created and frees them when the last
 * one is freed, so a process that opens one document at a time rebuilds them for every document
 * (two thirds of the work of a small PDF). Holding one tiny document for the life of the process
 * keeps them. It is never freed: it is still reachable, so leak checkers do not report it. */
static const char keep_pdf[] =
    "%PDF-1.4\n"
    "1 0 obj\n<</Type/Catalog/Pages 2 0 R>>\nendobj\n"
    "2 0 obj\n<</Type/Pages/Kids[3 0 R]/Count 1>>\nendobj\n"
    "3 0 obj\n<</Type/Page/Parent 2 0 R/MediaBox[0 0 1 1]>>\nendobj\n"
    "xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000054 00000 n \n"
    "0000000105 00000 n \n"
    "trailer\n<</Size 4/Root 1 0 R>>\nstartxref\n166\n%%EOF\n";
static PopplerDocument *keep_doc;

/* Consecutive pages Poppler cannot load after which the rest of the document is taken as absent
 * (each missing page before that still gets its empty segment, as an empty page does). */
#define PDF_MISSING_RUN 64
static pthread_once_t keep_once = PTHREAD_ONCE_INIT;

static void keep_open(void)
{
    GBytes *bytes = g_bytes_new_static(keep_pdf, sizeof(keep_pdf) - 1);
    keep_doc = poppler_document_new_from_bytes(bytes, NULL, NULL);
    g_bytes_unref(bytes);
}

bool pdf_lib_init(void)
{
    pthread_once(&keep_once, keep_open);
    return keep_doc != NULL;
}

int pdf_extract(const char *name, const char *buf, size_t len, int shard, int nshards,
                ing_doc *doc, sala_err *e)
{
    GError *err = NULL;
    PopplerDocument *pd = NULL;
    pdf_lib_init();   /* on failure each document builds Poppler's tables itself, as before */
    GBytes *bytes = g_bytes_new_static(buf, len);
    int rc = SALA_OK;
    pd = poppler_document_new_from_bytes(bytes, NULL, &err);
    if (!pd) {
        if (err && g_error_matches(err, POPPLER_ERROR, POPPLER_ERROR_ENCRYPTED))
            rc = sala_errf(e, SALA_EUNSUP, "encrypted, and no password is known");
        else
            rc = sala_errf(e, SALA_EFORMAT, "cannot open: %s",
                           err && err->message ? err->message : "unknown Poppler error");
        goto fail;
    }
    int n = poppler_document_get_n_pages(pd);
    if (n <= 0) {
        rc = sala_errf(e, SALA_EFORMAT, "no pages (corrupt or empty PDF)");
        goto fail;
    }
    if (shard == 0) {
        doc->pages = n;
        char *t = poppler_document_get_title(pd), *a = poppler_document_get_author(pd);
        rc = ing_doc_meta_set(doc, "title", t, e);
        if (rc == SALA_OK) rc = ing_doc_meta_set(doc, "author", a, e);
        g_free(t);
        g_free(a);
        if (rc) goto fail;
    }
    int first = (int)((int64_t)n * shard / nshards), last = (int)((int64_t)n * (shard + 1) / nshards);
    int missing = 0, loaded = 0;
    for (int i = first; i < last; i++) {
        PopplerPage *pg = poppler_document_get_page(pd, i);
        /* A page tree whose /Count claims more pages than it holds (Poppler takes counts up
         * to the number of xref entries, which a broken file can make millions) yields no
         * page past its end: stop after a run of missing pages instead of walking them all. */
        missing = pg ? 0 : missing + 1;
        if (missing > PDF_MISSING_RUN) break;
        loaded += pg != NULL;
        char *txt = pg ? poppler_page_get_text(pg) : NULL;
        if (pg) g_object_unref(pg);
        char loc[32];
        snprintf(loc, sizeof(loc), "p. %d", i + 1);
        char *valid = g_utf8_make_valid(txt ? txt : "", -1);
        g_free(txt);
        size_t k = 0;
        for (size_t j = 0; valid[j]; j++)
            if (valid[j] != '\f') valid[k++] = valid[j];
        valid[k] = 0;
        rc = ing_doc_seg_add(doc, loc, i + 1, -1, -1, valid, k, e);
        g_free(valid);
        if (rc) goto fail;
    }
    if (shard == 0 && first < last && loaded == 0)   /* none of its pages */
        rc = sala_errf(e, SALA_EFORMAT, "no page can be read (broken page tree)");
fail:
    if (pd) g_object_unref(pd);
    g_bytes_unref(bytes);
    if (err) g_error_free(err);
    (void)name;
    return rc;
}
