/* ask_model.c: model mode of ask.h: a question asked of the corpus's cached context with
 * ctx_ask, in a worker thread so that the UI keeps drawing while the model opens (seconds) and
 * generates.
 *
 * Threads: start() creates the worker; the worker alone touches its store connection (wd), the
 * model, the context and the answer until it sets `finished` (under mu). Its text callback
 * appends each complete UTF-8 piece to `pending` (under mu) and returns the cancel flag, so a
 * cancel stops generation at the next token. poll() (main thread) takes the pending text, and
 * once finished joins the worker and hands over the quotes and evidence. Nothing here prints or
 * touches curses. A new start() or free() cancels and joins a running worker: quick while it
 * generates (the next token), but ctx_open cannot be interrupted, so leaving the screen while
 * the context opens waits for the open to end. */
#include "ask.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctx/ctx.h"
#include "ui/store.h"

enum { PH_IDLE, PH_OPENING, PH_ASKING };

typedef struct {
    ask_backend base;
    db *d;                      /* main thread: citations' documents */
    char dbpath[4096], corpus[256], model_dir[4096];
    int64_t corpus_id, max_tokens;
    char label[512];
    /* the worker's (between start and the join in poll/free) */
    db *wd;
    ctx_model *m;
    ctx_ctx *c;
    ctx_answer ans;
    char *question;
    bool think;
    /* shared */
    pthread_t th;
    bool live;                  /* th is to be joined */
    atomic_int cancel;
    pthread_mutex_t mu;
    char *pending;              /* under mu */
    size_t plen, pcap;
    int phase;                  /* under mu */
    bool finished;              /* under mu */
    int rc;                     /* under mu, once finished */
    sala_err err;
    /* main thread */
    bool in_think;              /* inside <think> of the stream (think mode) */
} mdl;

static int on_text(void *ud, const char *s, size_t n)
{
    mdl *m = ud;
    pthread_mutex_lock(&m->mu);
    if (m->plen + n + 1 > m->pcap) {
        size_t nc = m->pcap ? m->pcap : 1024;
        while (nc < m->plen + n + 1) nc *= 2;
        char *p = realloc(m->pending, nc);
        if (p) m->pending = p, m->pcap = nc;
    }
    if (m->plen + n + 1 <= m->pcap) {
        memcpy(m->pending + m->plen, s, n);
        m->plen += n;
        m->pending[m->plen] = 0;
    }
    pthread_mutex_unlock(&m->mu);
    return atomic_load(&m->cancel);
}

static void set_phase(mdl *m, int ph)
{
    pthread_mutex_lock(&m->mu);
    m->phase = ph;
    pthread_mutex_unlock(&m->mu);
}

static void *worker(void *arg)
{
    mdl *m = arg;
    sala_err e = {0, ""};
    int rc = SALA_OK;
    if (!m->c) {
        set_phase(m, PH_OPENING);
        if (!m->wd && (rc = db_open(m->dbpath, &m->wd, &e))) goto out;
        if (!m->m && (rc = ctx_model_open(m->model_dir, NULL, &m->m, &e))) goto out;
        if ((rc = ctx_open(m->wd, m->corpus, m->m, &m->c, &e))) goto out;
    }
    if (atomic_load(&m->cancel)) goto out;
    set_phase(m, PH_ASKING);
    ctx_ask_opts o = {.sampler = {.temperature = 0, .top_k = 0, .top_p = 1.0f,
                                  .repetition_penalty = 1.0f},
                      .max_tokens = m->max_tokens, .think = m->think};
    rc = ctx_ask(m->c, m->question, &o, on_text, m, &m->ans, &e);
    if (!rc && !atomic_load(&m->cancel)) rc = ctx_answer_store(m->wd, m->c, m->question, &m->ans, &e);
out:
    pthread_mutex_lock(&m->mu);
    m->rc = rc;
    m->err = e;
    m->finished = true;
    m->phase = PH_IDLE;
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void join(mdl *m)
{
    if (!m->live) return;
    pthread_join(m->th, NULL);
    m->live = false;
}

static int mdl_start(ask_backend *b, const char *question, sala_err *e)
{
    mdl *m = (mdl *)b;
    atomic_store(&m->cancel, 1);
    join(m);
    ctx_answer_free(&m->ans);
    memset(&m->ans, 0, sizeof(m->ans));
    free(m->question);
    if (!(m->question = strdup(question))) return sala_errf(e, SALA_ENOMEM, "out of memory");
    m->think = b->think;
    m->in_think = false;
    m->plen = 0;
    m->finished = false;
    m->rc = SALA_OK;
    /* m->c is the worker's from pthread_create on (it opens the context): read it before. */
    const bool opened = m->c != NULL;
    m->phase = opened ? PH_ASKING : PH_OPENING;
    atomic_store(&m->cancel, 0);
    int er = pthread_create(&m->th, NULL, worker, m);
    if (er) return sala_errf(e, SALA_EIO, "ask: cannot start a thread: %s", strerror(er));
    m->live = true;
    b->status = opened ? "generating\xe2\x80\xa6" : "opening context\xe2\x80\xa6";
    return SALA_OK;
}

/* Hand text to the sink, splitting <think>...</think> into thinking (think mode only; the
 * markers are whole special tokens, so they arrive whole). */
static void emit(mdl *m, const ask_sink *k, const char *s, size_t n)
{
    while (n) {
        const char *tag = m->in_think ? "</think>" : "<think>";
        size_t tl = strlen(tag);
        const char *hit = m->think ? memmem(s, n, tag, tl) : NULL;
        size_t part = hit ? (size_t)(hit - s) : n;
        if (part && k && k->text)
            k->text(k->ud, m->in_think ? ASK_TEXT_THINKING : ASK_TEXT_ANSWER, s, part);
        if (!hit) return;
        m->in_think = !m->in_think;
        s += part + tl;
        n -= part + tl;
    }
}

static void cite(mdl *m, const ask_sink *k, const ctx_cite *c, ask_cite_kind kind)
{
    if (!k || !k->cite) return;
    ask_cite a = {ui_doc_id_by_name(m->d, m->corpus_id, c->doc_name), c->doc_name, c->locator,
                  c->quote, kind, c->score};
    if (!c->doc_name) a.doc_id = -1;
    k->cite(k->ud, &a);
}

static int mdl_poll(ask_backend *b, const ask_sink *k, sala_err *e)
{
    mdl *m = (mdl *)b;
    if (!m->live) return ASK_DONE;
    char *text = NULL;
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    bool fin = m->finished;
    int ph = m->phase;
    if (m->plen) {
        text = m->pending;
        n = m->plen;
        m->pending = NULL;
        m->plen = m->pcap = 0;
    }
    pthread_mutex_unlock(&m->mu);
    b->status = ph == PH_OPENING ? "opening context\xe2\x80\xa6" : ph == PH_ASKING ? "generating\xe2\x80\xa6" : NULL;
    if (text) emit(m, k, text, n);
    free(text);
    if (!fin) return ASK_RUNNING;
    join(m);
    b->status = NULL;
    if (m->rc) {
        if (e) *e = m->err;
        if (!m->c) { /* opening failed: try again from scratch next time */
            ctx_model_close(m->m);
            m->m = NULL;
        }
        return m->rc;
    }
    for (int i = 0; i < m->ans.nquotes; i++)
        cite(m, k, &m->ans.quotes[i], m->ans.quotes[i].verified ? ASK_CITE_QUOTE : ASK_CITE_QUOTE_NOT_FOUND);
    for (int i = 0; i < m->ans.nevidence; i++) cite(m, k, &m->ans.evidence[i], ASK_CITE_EVIDENCE);
    return ASK_DONE;
}

static void mdl_cancel(ask_backend *b)
{
    mdl *m = (mdl *)b;
    atomic_store(&m->cancel, 1);
}

static void mdl_free(ask_backend *b)
{
    mdl *m = (mdl *)b;
    atomic_store(&m->cancel, 1);
    join(m);
    ctx_answer_free(&m->ans);
    ctx_close(m->c);
    ctx_model_close(m->m);
    db_close(m->wd);
    free(m->question);
    free(m->pending);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

ask_backend *ask_model_new(db *d, const char *dbpath, int64_t corpus_id, const char *corpus,
                           const char *model_dir, int64_t max_tokens)
{
    mdl *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    if (pthread_mutex_init(&m->mu, NULL)) {
        free(m);
        return NULL;
    }
    atomic_init(&m->cancel, 0);
    m->d = d;
    m->corpus_id = corpus_id;
    m->max_tokens = max_tokens > 0 ? max_tokens : 512;
    snprintf(m->dbpath, sizeof(m->dbpath), "%s", dbpath);
    snprintf(m->corpus, sizeof(m->corpus), "%s", corpus);
    snprintf(m->model_dir, sizeof(m->model_dir), "%s", model_dir);
    const char *base = strrchr(model_dir, '/');
    base = base && base[1] ? base + 1 : model_dir;
    snprintf(m->label, sizeof(m->label), "model %s, cached context", base);
    m->base = (ask_backend){.label = m->label, .stores = true, .start = mdl_start,
                            .poll = mdl_poll, .cancel = mdl_cancel, .free = mdl_free};
    return &m->base;
}
