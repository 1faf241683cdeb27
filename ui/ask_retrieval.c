/* ask_retrieval.c: retrieval mode of ask.h. start() runs one FTS5 search (bm25 order) for the
 * question's words; each poll() then hands over one passage: a numbered line with its document
 * and locator, the passage text, and its citation. No text is generated: the answer pane says
 * plainly that no model is configured. */
#include "ask.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EXCERPT_MAX 480

typedef struct {
    int64_t doc_id;
    char *name, *locator, *excerpt;
} passage;

typedef struct {
    ask_backend base;
    db *d;
    int64_t corpus;
    int max;
    passage *p;
    size_t n, next;
    int state;        /* 0 idle, 1 header pending, 2 passages, 3 done */
    char query[2048];
} retr;

/* Words that match nearly every passage; left out of the query (English only for now). */
static bool stopword(const char *w, size_t n)
{
    static const char *const stop[] = {
        "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
        "one", "our", "out", "has", "his", "how", "its", "may", "who", "why", "what", "when",
        "where", "which", "does", "did", "this", "that", "these", "those", "with", "from", "into",
        "have", "there", "their", "they", "them", "then", "than", "will", "would", "should",
        "could", "about", "use", "is", "of", "to", "in", "it", "be", "as", "at", "by", "or",
        "an", "on", "if", "do", "so", "we", "me", "my", "no", "us", "am", "i"};
    for (size_t i = 0; i < sizeof(stop) / sizeof(stop[0]); i++)
        if (strlen(stop[i]) == n && !strncasecmp(stop[i], w, n)) return true;
    return false;
}

void ask_fts_query(const char *q, char *out, size_t cap)
{
    size_t o = 0;
    int words = 0;
    if (!cap) return;
    out[0] = 0;
    for (const char *s = q; *s && words < 32;) {
        if (!(isalnum((unsigned char)*s) || ((unsigned char)*s & 0x80))) {
            s++;
            continue;
        }
        const char *w = s;
        while (*s && (isalnum((unsigned char)*s) || ((unsigned char)*s & 0x80) || *s == '_')) s++;
        size_t n = (size_t)(s - w);
        if (n < 2 || stopword(w, n)) continue;
        if (o + n + 8 >= cap) break;
        if (words) memcpy(out + o, " OR ", 4), o += 4;
        out[o++] = '"';
        memcpy(out + o, w, n);
        o += n;
        out[o++] = '"';
        out[o] = 0;
        words++;
    }
}

static void passages_clear(retr *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->p[i].name);
        free(r->p[i].locator);
        free(r->p[i].excerpt);
    }
    free(r->p);
    r->p = NULL;
    r->n = r->next = 0;
}

typedef struct {
    retr *r;
    int err;
} hit_ctx;

/* The FTS snippet marks matches with [ ]; keep the text, drop nothing: the markers stay as the
 * evidence highlight. */
static int on_hit(const db_hit *h, void *ud)
{
    hit_ctx *c = ud;
    retr *r = c->r;
    passage *np = realloc(r->p, (r->n + 1) * sizeof(*np));
    if (!np) return c->err = SALA_ENOMEM;
    r->p = np;
    passage *p = &r->p[r->n];
    p->doc_id = h->doc_id;
    p->name = strdup(h->doc_name ? h->doc_name : "?");
    p->locator = strdup(h->locator ? h->locator : "");
    p->excerpt = strndup(h->snippet ? h->snippet : "", EXCERPT_MAX);
    if (!p->name || !p->locator || !p->excerpt) {
        free(p->name);
        free(p->locator);
        free(p->excerpt);
        return c->err = SALA_ENOMEM;
    }
    r->n++;
    return 0;
}

static int retr_start(ask_backend *b, const char *question, sala_err *e)
{
    retr *r = (retr *)b;
    passages_clear(r);
    ask_fts_query(question, r->query, sizeof(r->query));
    r->state = 1;
    if (!r->query[0]) return SALA_OK;
    hit_ctx c = {r, 0};
    int rc = db_search(r->d, r->corpus, r->query, r->max, on_hit, &c, e);
    if (c.err) return sala_errf(e, c.err, "out of memory collecting passages");
    if (rc) r->state = 0;
    return rc;
}

static void emit(const ask_sink *k, const char *s)
{
    if (k && k->text) k->text(k->ud, ASK_TEXT_ANSWER, s, strlen(s));
}

static int retr_poll(ask_backend *b, const ask_sink *k, sala_err *e)
{
    retr *r = (retr *)b;
    char line[256];
    switch (r->state) {
    case 1:
        if (!r->query[0]) emit(k, "The question has no searchable words.\n");
        else if (!r->n) emit(k, "No passage of this corpus matches the question's words.\n");
        else {
            snprintf(line, sizeof(line), "The %zu best-matching passages (FTS5, bm25):\n", r->n);
            emit(k, line);
        }
        r->state = r->n ? 2 : 3;
        return r->n ? ASK_RUNNING : ASK_DONE;
    case 2: {
        passage *p = &r->p[r->next];
        snprintf(line, sizeof(line), "\n[%zu] %s, %s\n", r->next + 1, p->name, p->locator);
        emit(k, line);
        emit(k, p->excerpt);
        emit(k, "\n");
        if (k && k->cite) {
            ask_cite c = {p->doc_id, p->name, p->locator, p->excerpt, ASK_CITE_PASSAGE, 0};
            k->cite(k->ud, &c);
        }
        if (++r->next == r->n) r->state = 3;
        return r->state == 3 ? ASK_DONE : ASK_RUNNING;
    }
    default:
        (void)e;
        return ASK_DONE;
    }
}

static void retr_cancel(ask_backend *b)
{
    retr *r = (retr *)b;
    r->state = 3;
}

static void retr_free(ask_backend *b)
{
    retr *r = (retr *)b;
    passages_clear(r);
    free(r);
}

ask_backend *ask_retrieval_new(db *d, int64_t corpus_id, int max_passages)
{
    retr *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->base = (ask_backend){.label = "retrieval mode \xe2\x80\x94 no model configured",
                            .start = retr_start, .poll = retr_poll, .cancel = retr_cancel,
                            .free = retr_free};
    r->d = d;
    r->corpus = corpus_id;
    r->max = max_passages > 0 ? max_passages : 8;
    return &r->base;
}

void ask_backend_free(ask_backend *b)
{
    if (b) b->free(b);
}
