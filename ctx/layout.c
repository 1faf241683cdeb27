/* layout.c: the corpus prefix (docs/CONTEXTS.md "Prompt layout"): the system prompt, then one
 * user message holding every ok document of the corpus in corpus order, each framed as
 *     <document id=N title="..." source="NAME">\n
 *     [LOCATOR]\nSEGMENT TEXT\n          (for every segment, in order)
 *     </document>\n
 * encoded with tok_corpus_prefix, so that prefix ++ tok_corpus_question(q) is the ChatML
 * prompt of the two user turns. Every token keeps the docs-string byte offset it came from,
 * and the segment table maps offsets to (document, segment, locator) for evidence. */
#include "ctx/ctx_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

const char ctx_system_prompt[] =
    "You answer questions about the documents the user gives you. Rely on those documents; "
    "quote them verbatim in double quotes when you use them, and say which document and page "
    "or locator each quote comes from. If the documents do not answer the question, say so.";

void ctx_hex64(uint64_t v, char buf[17]) { snprintf(buf, 17, "%016llx", (unsigned long long)v); }

typedef struct {
    ctx_prefix *p;
    size_t cap, doccap, segcap;
    int64_t cur_doc;       /* db id of the document being framed, or -1 */
    int64_t cur_k;         /* its index in docs_tab */
    sala_err *e;
    int rc;
} builder;

static int put(builder *b, const char *s, size_t n)
{
    ctx_prefix *p = b->p;
    size_t need;
    if (sala_add_ovf(&need, p->docs_len, n + 1) || need >= UINT32_MAX)
        return sala_errf(b->e, SALA_ERANGE, "corpus: more than 4 GiB of text");
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < need) cap *= 2;
        char *q = realloc(p->docs, cap);
        if (!q) return sala_errf(b->e, SALA_ENOMEM, "out of memory building the prefix");
        p->docs = q;
        b->cap = cap;
    }
    memcpy(p->docs + p->docs_len, s, n);
    p->docs_len += n;
    p->docs[p->docs_len] = 0;
    return SALA_OK;
}

static int puts_(builder *b, const char *s) { return put(b, s, strlen(s)); }

/* Attribute value: the text with '"' and newlines replaced, so the frame stays one line. */
static int put_attr(builder *b, const char *s)
{
    int rc = SALA_OK;
    for (; s && *s && !rc; s++) {
        char ch = (*s == '"' || *s == '\n' || *s == '\r') ? (*s == '"' ? '\'' : ' ') : *s;
        rc = put(b, &ch, 1);
    }
    return rc;
}

static int doc_close(builder *b)
{
    ctx_prefix *p = b->p;
    if (b->cur_doc < 0) return SALA_OK;
    int rc = puts_(b, "</document>\n");
    ctx_pdoc *d = &p->docs_tab[b->cur_k];
    d->end = p->docs_len;
    d->hash = XXH3_64bits(p->docs + d->off, d->end - d->off);
    b->cur_doc = -1;
    return rc;
}

static int on_doc(const db_doc *doc, void *ud)
{
    builder *b = ud;
    ctx_prefix *p = b->p;
    if (strcmp(doc->status, "ok")) return 0;
    if ((size_t)p->ndocs == b->doccap) {
        size_t cap = b->doccap ? 2 * b->doccap : 16;
        ctx_pdoc *t = realloc(p->docs_tab, cap * sizeof(*t));
        if (!t) return b->rc = sala_errf(b->e, SALA_ENOMEM, "out of memory");
        p->docs_tab = t;
        b->doccap = cap;
    }
    ctx_pdoc *d = &p->docs_tab[p->ndocs];
    memset(d, 0, sizeof(*d));
    d->id = doc->id;
    d->name = strdup(doc->name ? doc->name : "");
    d->title = strdup(doc->title ? doc->title : "");
    p->ndocs++;
    if (!d->name || !d->title) return b->rc = sala_errf(b->e, SALA_ENOMEM, "out of memory");
    return 0;
}

static int on_seg(const db_seg *s, void *ud)
{
    builder *b = ud;
    ctx_prefix *p = b->p;
    int rc;
    if (s->doc_id != b->cur_doc) {
        if ((rc = doc_close(b))) return b->rc = rc;
        int64_t k = 0;
        while (k < p->ndocs && p->docs_tab[k].id != s->doc_id) k++;
        if (k == p->ndocs) return 0;   /* a document listed as not ok: skip */
        /* documents come in corpus order; a document without segments keeps off == end == 0 */
        ctx_pdoc *d = &p->docs_tab[k];
        d->off = p->docs_len;
        char head[64];
        snprintf(head, sizeof(head), "<document id=%lld title=\"", (long long)(k + 1));
        if ((rc = puts_(b, head)) || (rc = put_attr(b, d->title)) || (rc = puts_(b, "\" source=\"")) ||
            (rc = put_attr(b, d->name)) || (rc = puts_(b, "\">\n")))
            return b->rc = rc;
        b->cur_doc = s->doc_id;
        b->cur_k = k;
    }
    if ((rc = puts_(b, "[")) || (rc = put_attr(b, s->locator)) || (rc = puts_(b, "]\n")))
        return b->rc = rc;
    if ((size_t)p->nsegs == b->segcap) {
        size_t cap = b->segcap ? 2 * b->segcap : 64;
        ctx_pseg *t = realloc(p->segs, cap * sizeof(*t));
        if (!t) return b->rc = sala_errf(b->e, SALA_ENOMEM, "out of memory");
        p->segs = t;
        b->segcap = cap;
    }
    ctx_pseg *g = &p->segs[p->nsegs];
    g->off = p->docs_len;
    g->len = s->text_len;
    g->seg_id = s->id;
    g->doc = b->cur_k;
    g->locator = strdup(s->locator ? s->locator : "");
    p->nsegs++;
    if (!g->locator) return b->rc = sala_errf(b->e, SALA_ENOMEM, "out of memory");
    if ((rc = put(b, s->text, s->text_len)) || (rc = puts_(b, "\n"))) return b->rc = rc;
    return 0;
}

int64_t ctx_prefix_seg_at(const ctx_prefix *p, uint64_t off)
{
    int64_t lo = 0, hi = p->nsegs - 1, best = -1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (p->segs[mid].off <= off) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (best >= 0 && off > p->segs[best].off + p->segs[best].len) return -1;   /* in a frame */
    return best;
}

int ctx_prefix_build(db *d, int64_t corpus_id, const tok_tokenizer *tok, ctx_prefix *p,
                     sala_err *e)
{
    memset(p, 0, sizeof(*p));
    builder b = {.p = p, .cur_doc = -1, .e = e};
    tok_ids out = {0};
    int rc = db_doc_list(d, corpus_id, on_doc, &b, e);
    if (!rc && b.rc) rc = b.rc;
    if (!rc) rc = db_seg_scan(d, corpus_id, on_seg, &b, e);
    if (!rc && b.rc) rc = b.rc;
    if (!rc) rc = doc_close(&b);
    if (rc) goto fail;
    /* drop documents without segments from the table: they are not in the prompt */
    int64_t k = 0;
    for (int64_t i = 0; i < p->ndocs; i++) {
        if (p->docs_tab[i].end == 0) {
            free(p->docs_tab[i].name);
            free(p->docs_tab[i].title);
            continue;
        }
        p->docs_tab[k++] = p->docs_tab[i];
    }
    p->ndocs = k;
    for (int64_t i = 0; i < p->nsegs; i++)   /* segment doc indices follow the compaction */
        for (int64_t j = 0; j < p->ndocs; j++)
            if (p->segs[i].off >= p->docs_tab[j].off && p->segs[i].off < p->docs_tab[j].end) {
                p->segs[i].doc = j;
                break;
            }
    if (!p->ndocs) {
        rc = sala_errf(e, SALA_EINVAL, "the corpus has no documents with text (see 'sala add')");
        goto fail;
    }
    size_t docs_off = 0;
    rc = tok_corpus_prefix(tok, ctx_system_prompt, strlen(ctx_system_prompt), p->docs,
                           p->docs_len, TOK_SPANS, &out, &docs_off, e);
    if (rc) goto fail;
    p->n = (int64_t)out.n;
    p->ids = out.ids;
    out.ids = NULL;
    p->offs = malloc((out.n + 1) * sizeof(uint32_t));
    if (!p->offs) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    /* docs-string offsets; tokens of the template get UINT32_MAX */
    int64_t di = 0;
    p->docs_end = p->n;
    for (int64_t t = 0; t < p->n; t++) {
        const uint64_t s = out.spans[t].start;
        const bool inside = s >= docs_off && s < docs_off + p->docs_len;
        p->offs[t] = inside ? (uint32_t)(s - docs_off) : UINT32_MAX;
        if (!inside && s >= docs_off + p->docs_len && p->docs_end == p->n) p->docs_end = t;
        while (inside && di < p->ndocs && p->offs[t] >= p->docs_tab[di].off) {
            p->docs_tab[di].tok0 = t;
            if (di) p->docs_tab[di - 1].tok1 = t;
            di++;
        }
    }
    if (p->ndocs) p->docs_tab[p->ndocs - 1].tok1 = p->docs_end;
    tok_ids_free(&out);
    return SALA_OK;
fail:
    tok_ids_free(&out);
    ctx_prefix_free(p);
    return rc;
}

void ctx_prefix_free(ctx_prefix *p)
{
    if (!p) return;
    for (int64_t i = 0; i < p->ndocs; i++) {
        free(p->docs_tab[i].name);
        free(p->docs_tab[i].title);
    }
    for (int64_t i = 0; i < p->nsegs; i++) free(p->segs[i].locator);
    free(p->docs_tab);
    free(p->segs);
    free(p->docs);
    free(p->ids);
    free(p->offs);
    memset(p, 0, sizeof(*p));
}
