/* ask.h: what the ask screen needs from whatever answers questions, as a table of function
 * pointers, so that the screen does not know whether a model, a cached context or plain retrieval
 * is behind it. Two implementations: retrieval mode (ask_retrieval_new): the best-matching
 * passages of the corpus from the FTS5 index with their locators, labelled "retrieval mode —
 * no model configured"; and model mode (ask_model_new, ask_model.c): the corpus's cached
 * context asked through ctx_ask in a worker thread, its text streamed through the sink, then
 * its quotes and evidence as citations, the answer stored in the questions table.
 *
 * Protocol: start(question) once, then poll() repeatedly (non-blocking, each call does a bounded
 * amount of work and hands new text and citations to the sink) until it returns ASK_DONE or an
 * error; cancel() stops a running answer (poll then returns ASK_DONE). start may be called again
 * after DONE. free(NULL) is not allowed through the table; ask_backend_free(NULL) is a no-op. */
#ifndef SALA_UI_ASK_H
#define SALA_UI_ASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "ingest/db.h"

typedef enum { ASK_TEXT_ANSWER, ASK_TEXT_THINKING } ask_text_kind;

/* What a citation is: a retrieved passage, a quote of the answer found verbatim in the corpus,
 * a quote not found (no document: doc_id -1), or evidence (the model's attention). */
typedef enum { ASK_CITE_PASSAGE, ASK_CITE_QUOTE, ASK_CITE_QUOTE_NOT_FOUND, ASK_CITE_EVIDENCE } ask_cite_kind;

/* A citation: a place in a document. Strings are borrowed for the duration of the callback. */
typedef struct {
    int64_t doc_id;          /* -1: none (a quote that was not found) */
    const char *doc_name, *locator;
    const char *excerpt;     /* the evidence, a short passage or the quote (may be NULL) */
    ask_cite_kind kind;
    double score;            /* evidence: share of the counted block selections */
} ask_cite;

typedef struct {
    void (*text)(void *ud, ask_text_kind kind, const char *s, size_t len);
    void (*cite)(void *ud, const ask_cite *c);
    void *ud;
} ask_sink;

enum { ASK_DONE = 0, ASK_RUNNING = 1 };

typedef struct ask_backend ask_backend;
struct ask_backend {
    const char *label;       /* shown above every answer, e.g. "retrieval mode — no model configured" */
    bool think;              /* set by the screen before start: let the model think, show it */
    bool stores;             /* answers go to the questions table (the screen need not remember) */
    const char *status;      /* after poll: what it is doing ("opening context…"), or NULL */
    int (*start)(ask_backend *b, const char *question, sala_err *e);
    int (*poll)(ask_backend *b, const ask_sink *sink, sala_err *e); /* ASK_RUNNING/DONE or < 0 */
    void (*cancel)(ask_backend *b);
    void (*free)(ask_backend *b);
};

/* Retrieval mode over corpus_id of d (borrowed; must outlive the backend). Returns NULL on
 * out of memory. */
ask_backend *ask_retrieval_new(db *d, int64_t corpus_id, int max_passages);
void ask_backend_free(ask_backend *b);

/* Model mode over the cached context of corpus (corpus_id) with the model in model_dir: the
 * worker thread opens its own connection to the store at dbpath, the model and the context
 * (kept open for the next questions), asks with at most max_tokens (<= 0: 512) and stores the
 * answer (not when cancelled). d (borrowed, main thread only) finds the documents of citations.
 * A failure to open (no or a stale context) is poll's error; its message names the cause and
 * ends with "sala prefill". Returns NULL on out of memory. */
ask_backend *ask_model_new(db *d, const char *dbpath, int64_t corpus_id, const char *corpus,
                           const char *model_dir, int64_t max_tokens);

/* The FTS5 query retrieval mode runs for a free-text question: its words (letters and digits,
 * 2+ bytes, common English words left out), each quoted, joined by OR, at most 32 of them. Writes "" when there is no word.
 * Exposed for tests. */
void ask_fts_query(const char *question, char *out, size_t cap);

#endif
