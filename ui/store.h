/* store.h: the few read-only queries the TUI needs that the store's API (ingest/db.h, ctx/ctx.h)
 * does not have, as plain SQL over db_sqlite(): a corpus's token count, its cached context
 * (size, age, valid or stale) and a document's id by name. No curses here.
 *
 * Staleness is the cheap check the corpora screen can afford on every reload: a context is
 * stale when its state file is gone, when it was made for another model than the one the
 * corpus now resolves to, when the count of ok documents with text differs from the
 * context's, or when an ok document was added after the context was made. The authoritative
 * check stays ctx_open's (the hash of the rebuilt prefix's tokens). */
#ifndef SALA_UI_STORE_H
#define SALA_UI_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "ingest/db.h"

/* The corpus's tokens (ok documents; the tokenizer with the most of them) into *n; -1 when no
 * document has token streams. */
int ui_corpus_tokens(db *d, int64_t corpus_id, int64_t *n, sala_err *e);

typedef struct {
    bool have;               /* a contexts row exists */
    bool stale;
    char why[64];            /* when stale: "corpus changed", "other model", "state file missing" */
    int64_t bytes, created, length, documents;
} ui_ctx_info;

/* The cached context of corpus_id, preferring one made with model_dir (may be NULL: the
 * newest); model_dir, when given and different from the row's, makes it stale. */
int ui_ctx_info_get(db *d, int64_t corpus_id, const char *model_dir, ui_ctx_info *out,
                    sala_err *e);

/* The id of the ok document named name in corpus_id, or -1. */
int64_t ui_doc_id_by_name(db *d, int64_t corpus_id, const char *name);

/* "1.2 MB" style size into buf. */
void ui_fmt_bytes(int64_t b, char *buf, size_t cap);

#endif
