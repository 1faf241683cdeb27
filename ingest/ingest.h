/* ingest.h: the batch driver behind `sala add`: files and directories in, documents out.
 *
 * For each file, in a deterministic order: read it (size limits), hash it (sha256), skip it when
 * the store already has it unchanged, find its kind (PDF, XML, Markdown, code, text), extract it
 * (Poppler and libxml2 in worker processes, text in process), tokenize it when a tokenizer is
 * given, and store it in one transaction, replacing an older version of the same path. A file
 * that fails any step gets a `rejected` row with the component and the reason, and the batch
 * goes on; only a failure of the store itself (I/O) or running out of memory in this process
 * (not in a worker) stops the batch.
 *
 * The library never prints: progress and rejections reach the caller through ing_progress_fn. */
#ifndef SALA_INGEST_H
#define SALA_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "db.h"
#include "tokenizer.h"
#include "worker.h"

typedef struct {
    size_t max_text_bytes;   /* text, Markdown and code files above this are rejected (2 MB) */
    size_t max_doc_bytes;    /* PDF and XML files above this are rejected (512 MiB) */
    int jobs;                /* worker processes per large PDF (pages split between them) */
    wk_limits limits;        /* per worker */
    const tok_tokenizer *tok;/* NULL: store text only (tokens can be added later) */
    const char *tok_path;    /* the tokenizer.json tok was loaded from (identity = its sha256) */
} ing_opts;

void ing_opts_default(ing_opts *o);

typedef enum {
    ING_PLANNED,    /* before the first file: total is known */
    ING_ADDED,      /* a new document */
    ING_REPLACED,   /* a changed file replaced its older version */
    ING_UNCHANGED,  /* already stored, same content: nothing done */
    ING_REJECTED,   /* stored as a rejected row; component and reason say why */
    ING_TOKENIZED,  /* an already stored document got its token streams */
} ing_outcome;

typedef struct {
    ing_outcome outcome;
    size_t total, done;      /* files planned, files finished (this one included) */
    const char *path, *name; /* this file (NULL for ING_PLANNED) */
    const char *component;   /* rejected: "io", "repo", "pdf", "xml", "text", "worker" */
    const char *reason;
    int64_t pages, segments; /* this file's */
    int64_t pages_total;     /* pages of every file so far */
    double elapsed;          /* seconds since the batch started */
} ing_event;
typedef void (*ing_progress_fn)(const ing_event *ev, void *ud);

typedef struct {
    size_t added, replaced, unchanged, rejected, tokenized;
    int64_t pages, segments, tokens, bytes;
    double t_read, t_extract, t_tokenize, t_store; /* seconds per stage */
} ing_stats;

/* Add paths (files or directories) to the named corpus. Returns SALA_OK when the batch ran
 * (look at st->rejected), or a status for a failure that stopped it (no such corpus, the store
 * failed). st may be NULL; fn may be NULL. */
int ing_add(db *d, const char *corpus, const char *const *paths, size_t npaths,
            const ing_opts *o, ing_progress_fn fn, void *ud, ing_stats *st, sala_err *e);

/* Give every ok document of the corpus that lacks token streams for o->tok its streams
 * (one transaction per document). */
int ing_tokenize_missing(db *d, const char *corpus, const ing_opts *o, ing_progress_fn fn,
                         void *ud, ing_stats *st, sala_err *e);

/* The sha256 of buf[0..len) as 64 lowercase hex digits plus NUL into hex[65]. */
void ing_sha256_hex(const void *buf, size_t len, char hex[65]);

#endif
