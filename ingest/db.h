/* db.h: the sala store, one SQLite file: corpora, documents, segments, token streams and an
 * FTS5 index over segment text (schema/NNNN_*.sql, embedded in the binary at build time and
 * applied in order under PRAGMA user_version).
 *
 * Invariants: foreign keys on, WAL, synchronous=NORMAL, busy timeout set. A document is written
 * between db_begin and db_commit by its caller, so that it is stored whole or not at all.
 * Ownership: db_open returns a handle the caller closes with db_close (NULL is a no-op). Strings
 * handed to callbacks live only for the duration of the callback. */
#ifndef SALA_DB_H
#define SALA_DB_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct db db;

/* Bumped whenever the extraction of any kind changes, so that re-adding re-extracts. */
#define DB_INGEST_VERSION 1

/* Open (creating when missing, with its directory) and migrate the store at path. */
int db_open(const char *path, db **out, sala_err *e);
void db_close(db *d);
/* The default store path: $SALA_HOME/sala.db, else $XDG_DATA_HOME/sala/sala.db, else
 * $HOME/.local/share/sala/sala.db; opt (a --db argument) wins when non-NULL. */
int db_path_resolve(const char *opt, char *buf, size_t cap, sala_err *e);
/* db_path_resolve + db_open. */
int db_open_resolved(const char *opt, db **out, sala_err *e);
/* Schema version after migration (PRAGMA user_version) and the number of migrations built in. */
int db_schema_version(db *d);
int db_schema_count(void);
/* PRAGMA integrity_check: SALA_OK when it says "ok", else SALA_EFORMAT with its first line. */
int db_integrity_check(db *d, sala_err *e);

int db_begin(db *d, sala_err *e);
int db_commit(db *d, sala_err *e);
void db_rollback(db *d);

/* The underlying SQLite connection, for modules with tables of their own (ctx/store.c). Owned
 * by d. */
struct sqlite3 *db_sqlite(db *d);

/* Corpora. */
int db_corpus_create(db *d, const char *name, int64_t *id, sala_err *e);
int db_corpus_find(db *d, const char *name, int64_t *id, sala_err *e); /* SALA_ENOTFOUND */
int db_corpus_delete(db *d, const char *name, sala_err *e);
typedef struct {
    int64_t id;
    const char *name;
    int64_t created, docs_ok, docs_rejected, segments;
} db_corpus_info;
typedef int (*db_corpus_fn)(const db_corpus_info *c, void *ud);
int db_corpus_list(db *d, db_corpus_fn fn, void *ud, sala_err *e);

/* Documents. Fields are borrowed strings (NULL allowed where the schema allows NULL). */
typedef struct {
    int64_t id, corpus_id;
    const char *path, *name, *kind, *lang, *sha256, *title, *author;
    int64_t size, mtime, pages;   /* pages < 0: NULL */
    const char *status;           /* "ok" | "rejected" */
    const char *component, *reason;
    int64_t ingest_version, ord, segments;
} db_doc;
/* Insert a new document row; ord is taken from the existing row of (corpus, path) when
 * keep_ord >= 0, else the next ord of the corpus. *id receives the new row id. */
int db_doc_insert(db *d, const db_doc *doc, int64_t keep_ord, int64_t *id, sala_err *e);
/* Find a document by (corpus, path); fills *out with the row (strings valid until the next call
 * on d) and returns SALA_OK, or SALA_ENOTFOUND. */
int db_doc_find(db *d, int64_t corpus_id, const char *path, db_doc *out, sala_err *e);
int db_doc_get(db *d, int64_t id, db_doc *out, sala_err *e);
int db_doc_delete(db *d, int64_t id, sala_err *e);
typedef int (*db_doc_fn)(const db_doc *doc, void *ud);
int db_doc_list(db *d, int64_t corpus_id, db_doc_fn fn, void *ud, sala_err *e);

/* Segments. */
typedef struct {
    int64_t id, doc_id, ordinal;
    const char *locator;
    int64_t page, line_first, line_last; /* < 0: NULL */
    const char *text;
    size_t text_len;
    const char *doc_name;                /* filled by search/grep/list only */
} db_seg;
int db_seg_insert(db *d, const db_seg *s, int64_t *id, sala_err *e);
typedef int (*db_seg_fn)(const db_seg *s, void *ud);
/* Segments of one document in order; page >= 0 keeps only that page, locator != NULL only that
 * locator. */
int db_seg_list(db *d, int64_t doc_id, int64_t page, const char *locator, db_seg_fn fn, void *ud,
                sala_err *e);
/* Every segment of a corpus (ok documents, corpus order, then segment order). */
int db_seg_scan(db *d, int64_t corpus_id, db_seg_fn fn, void *ud, sala_err *e);

/* Full-text search (FTS5 MATCH syntax) in one corpus, best bm25 first. */
typedef struct {
    const char *doc_name, *locator, *snippet;
    int64_t doc_id;
    double score;
} db_hit;
typedef int (*db_hit_fn)(const db_hit *h, void *ud);
int db_search(db *d, int64_t corpus_id, const char *query, int limit, db_hit_fn fn, void *ud,
              sala_err *e);

/* Token streams. tokenizer ids are interned by the sha256 of tokenizer.json. */
int db_tokenizer_intern(db *d, const char *sha256, const char *path, int64_t *id, sala_err *e);
/* Store a segment's token stream, cut into chunks of at most DB_TOKEN_CHUNK tokens. */
#define DB_TOKEN_CHUNK 65536
/* offs holds 2 * n values: (start, end) byte offsets of each token into the segment text. */
int db_tokens_insert(db *d, int64_t seg_id, int64_t tokenizer_id, const int32_t *ids,
                     const uint32_t *offs, size_t n, sala_err *e);
/* Read a segment's token stream back (all chunks, in order): *ids and *offs (2 per token) are
 * malloc'ed, the caller frees them. */
int db_tokens_get(db *d, int64_t seg_id, int64_t tokenizer_id, int32_t **ids, uint32_t **offs,
                  size_t *n, sala_err *e);
/* Documents of a corpus with at least one segment lacking tokens for tokenizer_id. */
int db_doc_untokenized(db *d, int64_t corpus_id, int64_t tokenizer_id, db_doc_fn fn, void *ud,
                       sala_err *e);

#endif
