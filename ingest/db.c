/* db.c: the SQLite store (see db.h). Migrations come from the schema/NNNN_*.sql files,
 * embedded by the Makefile into build/gen/schema.inc as {name, bytes} pairs in file-name
 * order; migration i brings user_version from i to i+1 inside one transaction.
 * Prepared statements of the hot path (one document's insert) are cached in the handle. */
#include "db.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    const char *name;
    const unsigned char *sql;
} migration;

static const migration migrations[] = {
#include "schema.inc"
};

enum { ST_SEG_INSERT, ST_TOK_INSERT, ST_DOC_INSERT, ST_COUNT };

struct db {
    sqlite3 *h;
    sqlite3_stmt *st[ST_COUNT];
    sqlite3_stmt *find;  /* db_doc_find / db_doc_get: its row backs the returned strings */
    int bind_rc;         /* run(): the status of a bind that failed (SQLITE_OK: none) */
};

/* SQLite's out-of-memory is SALA_ENOMEM (also when run() saw it in a bind, which the finalize
 * may have cleared from the connection); every other failure SALA_EIO. */
static int dberr(db *d, sala_err *e, const char *what)
{
    if (!d || !d->h) return sala_errf(e, SALA_EIO, "database: %s: ?", what);
    const int brc = d->bind_rc;
    d->bind_rc = SQLITE_OK;
    const bool nomem = sqlite3_errcode(d->h) == SQLITE_NOMEM || brc == SQLITE_NOMEM;
    return sala_errf(e, nomem ? SALA_ENOMEM : SALA_EIO, "database: %s: %s", what,
                     brc ? sqlite3_errstr(brc) : sqlite3_errmsg(d->h));
}

int db_schema_count(void) { return (int)SALA_ARRAY_LEN(migrations); }

int db_path_resolve(const char *opt, char *buf, size_t cap, sala_err *e)
{
    int n;
    const char *home = getenv("SALA_HOME"), *xdg = getenv("XDG_DATA_HOME"), *h = getenv("HOME");
    if (opt && *opt) n = snprintf(buf, cap, "%s", opt);
    else if (home && *home) n = snprintf(buf, cap, "%s/sala.db", home);
    else if (xdg && *xdg) n = snprintf(buf, cap, "%s/sala/sala.db", xdg);
    else if (h && *h) n = snprintf(buf, cap, "%s/.local/share/sala/sala.db", h);
    else return sala_errf(e, SALA_EINVAL, "no data directory: set SALA_HOME or pass --db FILE");
    if (n < 0 || (size_t)n >= cap) return sala_errf(e, SALA_ERANGE, "database path too long");
    return SALA_OK;
}

/* mkdir -p of the directory part of path. */
static int mkdirs_for(const char *path, sala_err *e)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return sala_errf(e, SALA_ERANGE, "%s: path too long", path);
    char *slash = strrchr(tmp, '/');
    if (!slash || slash == tmp) return SALA_OK;
    *slash = 0;
    for (char *p = tmp + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return sala_errf(e, SALA_EIO, "%s: cannot create directory: %s", tmp,
                                 strerror(errno));
            *p = c;
            if (c == 0) break;
        }
    }
    return SALA_OK;
}

static int exec_sql(db *d, const char *sql, sala_err *e)
{
    char *msg = NULL;
    const int src = sqlite3_exec(d->h, sql, NULL, NULL, &msg);
    if (src != SQLITE_OK) {
        const int rc = src == SQLITE_NOMEM ? SALA_ENOMEM : SALA_EIO;
        sala_errf(e, rc, "database: %s", msg ? msg : sqlite3_errmsg(d->h));
        sqlite3_free(msg);
        return rc;
    }
    return SALA_OK;
}

static int pragma_int(db *d, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = SALA_EIO;
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) goto fail;
    if (sqlite3_step(st) != SQLITE_ROW) goto fail;
    *out = sqlite3_column_int(st, 0);
    rc = SALA_OK;
fail:
    sqlite3_finalize(st);
    return rc;
}

int db_schema_version(db *d)
{
    int v = -1;
    return pragma_int(d, "PRAGMA user_version", &v) == SALA_OK ? v : -1;
}

static int migrate(db *d, const char *path, sala_err *e)
{
    int have = db_schema_version(d);
    int want = db_schema_count();
    if (have < 0) return dberr(d, e, "reading user_version");
    if (have > want)
        return sala_errf(e, SALA_EUNSUP, "%s: schema version %d is newer than this sala (%d)",
                         path, have, want);
    for (int i = have; i < want; i++) {
        char bump[64];
        if (exec_sql(d, "BEGIN IMMEDIATE", e)) return e ? e->code : SALA_EIO;
        /* user_version may have moved while we waited for the lock (another sala migrated). */
        int now = db_schema_version(d);
        if (now > i) {
            exec_sql(d, "COMMIT", NULL);
            i = now - 1;
            continue;
        }
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", i + 1);
        if (exec_sql(d, (const char *)migrations[i].sql, e) || exec_sql(d, bump, e)) {
            sala_err_prefix(e, "schema/%s", migrations[i].name);
            exec_sql(d, "ROLLBACK", NULL);
            return e ? e->code : SALA_EIO;
        }
        if (exec_sql(d, "COMMIT", e)) return e ? e->code : SALA_EIO;
    }
    return SALA_OK;
}

static const char *const stmt_sql[ST_COUNT] = {
    [ST_SEG_INSERT] = "INSERT INTO segments (doc_id, ordinal, locator, page, line_first, "
                      "line_last, text) VALUES (?,?,?,?,?,?,?)",
    [ST_TOK_INSERT] = "INSERT INTO tokens (segment_id, tokenizer_id, chunk, n, ids, offsets) "
                      "VALUES (?,?,?,?,?,?)",
    [ST_DOC_INSERT] = "INSERT INTO documents (corpus_id, path, name, kind, lang, sha256, size, "
                      "mtime, title, author, pages, status, component, reason, ingest_version, "
                      "ord, added) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
};

int db_open(const char *path, db **out, sala_err *e)
{
    *out = NULL;
    db *d = calloc(1, sizeof(*d));
    if (!d) return sala_errf(e, SALA_ENOMEM, "out of memory");
    int rc = mkdirs_for(path, e);
    if (rc) goto fail;
    if (sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = sala_errf(e, SALA_EIO, "%s: cannot open database: %s", path,
                       d->h ? sqlite3_errmsg(d->h) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(d->h, 10000);
    /* WAL and synchronous=NORMAL: a crash loses at most the last transactions, never
     * consistency; each document is one transaction. */
    rc = exec_sql(d, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                     "PRAGMA foreign_keys=ON;", e);
    if (rc) {
        sala_err_prefix(e, "%s", path);
        goto fail;
    }
    int fk = 0;
    if (pragma_int(d, "PRAGMA foreign_keys", &fk) || fk != 1) {
        rc = sala_errf(e, SALA_EUNSUP, "%s: SQLite without foreign key support", path);
        goto fail;
    }
    rc = migrate(d, path, e);
    if (rc) goto fail;
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v2(d->h, stmt_sql[i], -1, &d->st[i], NULL) != SQLITE_OK) {
            rc = dberr(d, e, "prepare");
            goto fail;
        }
    *out = d;
    return SALA_OK;
fail:
    db_close(d);
    return rc;
}

int db_open_resolved(const char *opt, db **out, sala_err *e)
{
    char path[4096];
    *out = NULL;
    int rc = db_path_resolve(opt, path, sizeof(path), e);
    return rc ? rc : db_open(path, out, e);
}

void db_close(db *d)
{
    if (!d) return;
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(d->st[i]);
    sqlite3_finalize(d->find);
    sqlite3_close(d->h);
    free(d);
}

int db_integrity_check(db *d, sala_err *e)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(d->h, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        rc = dberr(d, e, "integrity_check");
        goto fail;
    }
    const char *r = (const char *)sqlite3_column_text(st, 0);
    rc = r && !strcmp(r, "ok") ? SALA_OK
                               : sala_errf(e, SALA_EFORMAT, "integrity_check: %s", r ? r : "?");
fail:
    sqlite3_finalize(st);
    return rc;
}

struct sqlite3 *db_sqlite(db *d) { return d->h; }

int db_begin(db *d, sala_err *e) { return exec_sql(d, "BEGIN IMMEDIATE", e); }
int db_commit(db *d, sala_err *e) { return exec_sql(d, "COMMIT", e); }
void db_rollback(db *d)
{
    if (!sqlite3_get_autocommit(d->h)) exec_sql(d, "ROLLBACK", NULL);
}

/* Prepare sql, bind the given text/int64 arguments (types: 't' text, 'i' int64), step once.
 * Used by the one-off statements; SQLITE_DONE or SQLITE_ROW count as success and the
 * statement is returned for the caller to read rows from (finalize it). */
static int run(db *d, sqlite3_stmt **pst, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    d->bind_rc = SQLITE_OK;
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return SQLITE_ERROR;
    va_list ap;
    va_start(ap, types);
    int brc = SQLITE_OK;
    for (int i = 0; types[i] && brc == SQLITE_OK; i++) {
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);
            brc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)   /* copies: may fail */
                    : sqlite3_bind_null(st, i + 1);
        } else {
            brc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
    }
    va_end(ap);
    if (brc != SQLITE_OK) {   /* a parameter left NULL would change the query's meaning */
        sqlite3_finalize(st);
        d->bind_rc = brc;
        return brc;
    }
    int rc = sqlite3_step(st);
    if (pst) *pst = st;
    else sqlite3_finalize(st);
    return rc;
}

int db_corpus_create(db *d, const char *name, int64_t *id, sala_err *e)
{
    if (!name || !*name || strlen(name) > 200 || strchr(name, '/'))
        return sala_errf(e, SALA_EINVAL, "bad corpus name '%s' (1-200 characters, no '/')",
                         name ? name : "");
    int rc = run(d, NULL, "INSERT INTO corpora (name, created) VALUES (?, ?)", "ti", name,
                 (int64_t)time(NULL));
    if (rc == SQLITE_CONSTRAINT)
        return sala_errf(e, SALA_EINVAL, "corpus '%s' already exists", name);
    if (rc != SQLITE_DONE) return dberr(d, e, "creating corpus");
    if (id) *id = sqlite3_last_insert_rowid(d->h);
    return SALA_OK;
}

int db_corpus_find(db *d, const char *name, int64_t *id, sala_err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = run(d, &st, "SELECT id FROM corpora WHERE name = ?", "t", name);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return SALA_OK;
    if (rc == SQLITE_DONE)
        return sala_errf(e, SALA_ENOTFOUND, "no corpus '%s' (see 'sala corpus list')", name);
    return dberr(d, e, "finding corpus");
}

int db_corpus_delete(db *d, const char *name, sala_err *e)
{
    int64_t id;
    int rc = db_corpus_find(d, name, &id, e);
    if (rc) return rc;
    if (run(d, NULL, "DELETE FROM corpora WHERE id = ?", "i", id) != SQLITE_DONE)
        return dberr(d, e, "deleting corpus");
    return SALA_OK;
}

int db_corpus_list(db *d, db_corpus_fn fn, void *ud, sala_err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = SALA_OK;
    const char *sql =
        "SELECT c.id, c.name, c.created, "
        " (SELECT count(*) FROM documents WHERE corpus_id = c.id AND status = 'ok'), "
        " (SELECT count(*) FROM documents WHERE corpus_id = c.id AND status = 'rejected'), "
        " (SELECT count(*) FROM segments s JOIN documents x ON x.id = s.doc_id "
        "   WHERE x.corpus_id = c.id) "
        "FROM corpora c ORDER BY c.name";
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "list");
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        db_corpus_info c = {
            .id = sqlite3_column_int64(st, 0),
            .name = (const char *)sqlite3_column_text(st, 1),
            .created = sqlite3_column_int64(st, 2),
            .docs_ok = sqlite3_column_int64(st, 3),
            .docs_rejected = sqlite3_column_int64(st, 4),
            .segments = sqlite3_column_int64(st, 5),
        };
        if ((rc = fn(&c, ud)) != 0) break;
    }
    if (rc == SALA_OK && s != SQLITE_DONE) rc = dberr(d, e, "listing corpora");
    sqlite3_finalize(st);
    return rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

static void bind_int_or_null(sqlite3_stmt *st, int i, int64_t v)
{
    if (v >= 0) sqlite3_bind_int64(st, i, v);
    else sqlite3_bind_null(st, i);
}

int db_doc_insert(db *d, const db_doc *doc, int64_t keep_ord, int64_t *id, sala_err *e)
{
    int64_t ord = keep_ord;
    if (ord < 0) {
        sqlite3_stmt *q = NULL;
        int rc = run(d, &q, "SELECT coalesce(max(ord), -1) + 1 FROM documents WHERE corpus_id = ?",
                     "i", doc->corpus_id);
        if (rc == SQLITE_ROW) ord = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (rc != SQLITE_ROW) return dberr(d, e, "next document order");
    }
    sqlite3_stmt *st = d->st[ST_DOC_INSERT];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, doc->corpus_id);
    bind_text_or_null(st, 2, doc->path);
    bind_text_or_null(st, 3, doc->name);
    bind_text_or_null(st, 4, doc->kind);
    bind_text_or_null(st, 5, doc->lang);
    bind_text_or_null(st, 6, doc->sha256);
    bind_int_or_null(st, 7, doc->size);
    bind_int_or_null(st, 8, doc->mtime);
    bind_text_or_null(st, 9, doc->title);
    bind_text_or_null(st, 10, doc->author);
    bind_int_or_null(st, 11, doc->pages);
    bind_text_or_null(st, 12, doc->status);
    bind_text_or_null(st, 13, doc->component);
    bind_text_or_null(st, 14, doc->reason);
    sqlite3_bind_int64(st, 15, DB_INGEST_VERSION);
    sqlite3_bind_int64(st, 16, ord);
    sqlite3_bind_int64(st, 17, (int64_t)time(NULL));
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return dberr(d, e, "inserting document");
    if (id) *id = sqlite3_last_insert_rowid(d->h);
    return SALA_OK;
}

#define DOC_COLS "d.id, d.corpus_id, d.path, d.name, d.kind, d.lang, d.sha256, d.size, d.mtime, " \
                 "d.title, d.author, coalesce(d.pages, -1), d.status, d.component, d.reason, " \
                 "d.ingest_version, d.ord, " \
                 "(SELECT count(*) FROM segments s WHERE s.doc_id = d.id)"

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static void doc_from_row(sqlite3_stmt *st, db_doc *o)
{
    o->id = sqlite3_column_int64(st, 0);
    o->corpus_id = sqlite3_column_int64(st, 1);
    o->path = col_text(st, 2);
    o->name = col_text(st, 3);
    o->kind = col_text(st, 4);
    o->lang = col_text(st, 5);
    o->sha256 = col_text(st, 6);
    o->size = sqlite3_column_int64(st, 7);
    o->mtime = sqlite3_column_int64(st, 8);
    o->title = col_text(st, 9);
    o->author = col_text(st, 10);
    o->pages = sqlite3_column_int64(st, 11);
    o->status = col_text(st, 12);
    o->component = col_text(st, 13);
    o->reason = col_text(st, 14);
    o->ingest_version = sqlite3_column_int64(st, 15);
    o->ord = sqlite3_column_int64(st, 16);
    o->segments = sqlite3_column_int64(st, 17);
}

static int doc_lookup(db *d, const char *sql, const char *types, int64_t a, const char *b,
                      db_doc *out, sala_err *e)
{
    sqlite3_finalize(d->find);
    d->find = NULL;
    int rc = types[1] ? run(d, &d->find, sql, types, a, b) : run(d, &d->find, sql, types, a);
    if (rc == SQLITE_ROW) {
        doc_from_row(d->find, out);
        return SALA_OK;
    }
    if (rc == SQLITE_DONE) return sala_errf(e, SALA_ENOTFOUND, "no such document");
    return dberr(d, e, "finding document");
}

int db_doc_find(db *d, int64_t corpus_id, const char *path, db_doc *out, sala_err *e)
{
    return doc_lookup(d, "SELECT " DOC_COLS " FROM documents d WHERE corpus_id = ? AND path = ?",
                      "it", corpus_id, path, out, e);
}

int db_doc_get(db *d, int64_t id, db_doc *out, sala_err *e)
{
    int rc = doc_lookup(d, "SELECT " DOC_COLS " FROM documents d WHERE id = ?", "i", id, NULL,
                        out, e);
    if (rc == SALA_ENOTFOUND) sala_errf(e, rc, "no document %lld (see 'sala docs CORPUS')",
                                        (long long)id);
    return rc;
}

int db_doc_delete(db *d, int64_t id, sala_err *e)
{
    if (run(d, NULL, "DELETE FROM documents WHERE id = ?", "i", id) != SQLITE_DONE)
        return dberr(d, e, "deleting document");
    if (sqlite3_changes(d->h) == 0)
        return sala_errf(e, SALA_ENOTFOUND, "no document %lld", (long long)id);
    return SALA_OK;
}

static int doc_iter(db *d, const char *sql, int64_t a, int64_t b, int nargs, db_doc_fn fn,
                    void *ud, sala_err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = SALA_OK, s;
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "prepare");
    sqlite3_bind_int64(st, 1, a);
    if (nargs > 1) sqlite3_bind_int64(st, 2, b);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        db_doc doc;
        doc_from_row(st, &doc);
        if ((rc = fn(&doc, ud)) != 0) break;
    }
    if (rc == SALA_OK && s != SQLITE_DONE) rc = dberr(d, e, "listing documents");
    sqlite3_finalize(st);
    return rc;
}

int db_doc_list(db *d, int64_t corpus_id, db_doc_fn fn, void *ud, sala_err *e)
{
    return doc_iter(d, "SELECT " DOC_COLS " FROM documents d WHERE corpus_id = ? ORDER BY ord",
                    corpus_id, 0, 1, fn, ud, e);
}

int db_doc_untokenized(db *d, int64_t corpus_id, int64_t tokenizer_id, db_doc_fn fn, void *ud,
                       sala_err *e)
{
    return doc_iter(d,
                    "SELECT " DOC_COLS " FROM documents d WHERE corpus_id = ? AND status = 'ok' "
                    "AND EXISTS (SELECT 1 FROM segments s WHERE s.doc_id = d.id AND NOT EXISTS "
                    " (SELECT 1 FROM tokens t WHERE t.segment_id = s.id AND t.tokenizer_id = ?)) "
                    "ORDER BY ord",
                    corpus_id, tokenizer_id, 2, fn, ud, e);
}

int db_seg_insert(db *d, const db_seg *s, int64_t *id, sala_err *e)
{
    if (s->text_len > INT_MAX) return sala_errf(e, SALA_ERANGE, "segment of %zu bytes", s->text_len);
    sqlite3_stmt *st = d->st[ST_SEG_INSERT];
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, s->doc_id);
    sqlite3_bind_int64(st, 2, s->ordinal);
    sqlite3_bind_text(st, 3, s->locator, -1, SQLITE_STATIC);
    bind_int_or_null(st, 4, s->page);
    bind_int_or_null(st, 5, s->line_first);
    bind_int_or_null(st, 6, s->line_last);
    sqlite3_bind_text(st, 7, s->text, (int)s->text_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return dberr(d, e, "inserting segment");
    if (id) *id = sqlite3_last_insert_rowid(d->h);
    return SALA_OK;
}

static void seg_from_row(sqlite3_stmt *st, db_seg *s)
{
    s->id = sqlite3_column_int64(st, 0);
    s->doc_id = sqlite3_column_int64(st, 1);
    s->ordinal = sqlite3_column_int64(st, 2);
    s->locator = col_text(st, 3);
    s->page = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
    s->line_first = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
    s->line_last = sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 6);
    s->text = col_text(st, 7);
    s->text_len = (size_t)sqlite3_column_bytes(st, 7);
    s->doc_name = col_text(st, 8);
    if (!s->text) s->text = "";
}

static int seg_iter(db *d, sqlite3_stmt *st, db_seg_fn fn, void *ud, sala_err *e)
{
    int rc = SALA_OK, s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        db_seg seg;
        seg_from_row(st, &seg);
        if ((rc = fn(&seg, ud)) != 0) break;
    }
    if (rc == SALA_OK && s != SQLITE_DONE) rc = dberr(d, e, "reading segments");
    sqlite3_finalize(st);
    return rc;
}

#define SEG_COLS "s.id, s.doc_id, s.ordinal, s.locator, s.page, s.line_first, s.line_last, " \
                 "s.text, d.name"

int db_seg_list(db *d, int64_t doc_id, int64_t page, const char *locator, db_seg_fn fn, void *ud,
                sala_err *e)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT " SEG_COLS " FROM segments s JOIN documents d ON d.id = s.doc_id "
                      "WHERE s.doc_id = ?1 AND (?2 < 0 OR s.page = ?2) "
                      "AND (?3 IS NULL OR s.locator = ?3) ORDER BY s.ordinal";
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "prepare");
    sqlite3_bind_int64(st, 1, doc_id);
    sqlite3_bind_int64(st, 2, page);
    bind_text_or_null(st, 3, locator);
    return seg_iter(d, st, fn, ud, e);
}

int db_seg_scan(db *d, int64_t corpus_id, db_seg_fn fn, void *ud, sala_err *e)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT " SEG_COLS " FROM documents d JOIN segments s ON s.doc_id = d.id "
                      "WHERE d.corpus_id = ? AND d.status = 'ok' ORDER BY d.ord, s.ordinal";
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "prepare");
    sqlite3_bind_int64(st, 1, corpus_id);
    return seg_iter(d, st, fn, ud, e);
}

int db_search(db *d, int64_t corpus_id, const char *query, int limit, db_hit_fn fn, void *ud,
              sala_err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = SALA_OK, s;
    const char *sql =
        "SELECT d.name, s.locator, "
        " snippet(segments_fts, 0, '[', ']', '...', 16), d.id, bm25(segments_fts) "
        "FROM segments_fts JOIN segments s ON s.id = segments_fts.rowid "
        "JOIN documents d ON d.id = s.doc_id "
        "WHERE segments_fts MATCH ?1 AND d.corpus_id = ?2 ORDER BY bm25(segments_fts) LIMIT ?3";
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "prepare");
    sqlite3_bind_text(st, 1, query, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, corpus_id);
    sqlite3_bind_int(st, 3, limit);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        db_hit h = {
            .doc_name = col_text(st, 0),
            .locator = col_text(st, 1),
            .snippet = col_text(st, 2),
            .doc_id = sqlite3_column_int64(st, 3),
            .score = sqlite3_column_double(st, 4),
        };
        if ((rc = fn(&h, ud)) != 0) break;
    }
    if (rc == SALA_OK && s != SQLITE_DONE) {
        /* A malformed MATCH expression is the user's error, not an I/O failure. */
        const char *m = sqlite3_errmsg(d->h);
        rc = sqlite3_errcode(d->h) == SQLITE_ERROR
                 ? sala_errf(e, SALA_EINVAL, "bad search query '%s': %s", query, m)
                 : dberr(d, e, "search");
    }
    sqlite3_finalize(st);
    return rc;
}

int db_tokenizer_intern(db *d, const char *sha256, const char *path, int64_t *id, sala_err *e)
{
    if (run(d, NULL, "INSERT OR IGNORE INTO tokenizers (sha256, path) VALUES (?, ?)", "tt",
            sha256, path) != SQLITE_DONE)
        return dberr(d, e, "storing tokenizer");
    sqlite3_stmt *st = NULL;
    int rc = run(d, &st, "SELECT id FROM tokenizers WHERE sha256 = ?", "t", sha256);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SALA_OK : dberr(d, e, "finding tokenizer");
}

static void put_u32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int db_tokens_insert(db *d, int64_t seg_id, int64_t tokenizer_id, const int32_t *ids,
                     const uint32_t *offs, size_t n, sala_err *e)
{
    size_t cap = SALA_MIN(n, (size_t)DB_TOKEN_CHUNK);
    unsigned char *bi = malloc(4 * cap + 1), *bo = malloc(8 * cap + 1);
    int rc = SALA_OK;
    if (!bi || !bo) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory for a token chunk");
        goto fail;
    }
    sqlite3_stmt *st = d->st[ST_TOK_INSERT];
    size_t chunk = 0, at = 0;
    do {
        size_t k = SALA_MIN(n - at, (size_t)DB_TOKEN_CHUNK);
        for (size_t i = 0; i < k; i++) {
            put_u32le(bi + 4 * i, (uint32_t)ids[at + i]);
            put_u32le(bo + 8 * i, offs[2 * (at + i)]);
            put_u32le(bo + 8 * i + 4, offs[2 * (at + i) + 1]);
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, seg_id);
        sqlite3_bind_int64(st, 2, tokenizer_id);
        sqlite3_bind_int64(st, 3, (int64_t)chunk);
        sqlite3_bind_int64(st, 4, (int64_t)k);
        sqlite3_bind_blob(st, 5, bi, (int)(4 * k), SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, bo, (int)(8 * k), SQLITE_STATIC);
        int s = sqlite3_step(st);
        sqlite3_reset(st);
        if (s != SQLITE_DONE) {
            rc = dberr(d, e, "inserting tokens");
            goto fail;
        }
        at += k;
        chunk++;
    } while (at < n);
fail:
    free(bi);
    free(bo);
    return rc;
}

int db_tokens_get(db *d, int64_t seg_id, int64_t tokenizer_id, int32_t **ids, uint32_t **offs,
                  size_t *n, sala_err *e)
{
    *ids = NULL;
    *offs = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    int rc = SALA_OK, s;
    size_t total = 0;
    const char *sql = "SELECT n, ids, offsets FROM tokens WHERE segment_id = ? AND "
                      "tokenizer_id = ? ORDER BY chunk";
    if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK) return dberr(d, e, "prepare");
    sqlite3_bind_int64(st, 1, seg_id);
    sqlite3_bind_int64(st, 2, tokenizer_id);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(st, 0);
        const unsigned char *bi = sqlite3_column_blob(st, 1), *bo = sqlite3_column_blob(st, 2);
        size_t need, bytes;
        if (k < 0 || k > DB_TOKEN_CHUNK || sqlite3_column_bytes(st, 1) != 4 * k ||
            sqlite3_column_bytes(st, 2) != 8 * k) {
            rc = sala_errf(e, SALA_EFORMAT, "tokens of segment %lld: chunk of bad size",
                           (long long)seg_id);
            goto fail;
        }
        if (sala_add_ovf(&need, total, (size_t)k) || sala_mul_ovf(&bytes, need, 8)) {
            rc = sala_errf(e, SALA_ERANGE, "token stream too long");
            goto fail;
        }
        int32_t *ni = realloc(*ids, need * 4 + 4);
        if (ni) *ids = ni;
        uint32_t *no = realloc(*offs, bytes + 8);
        if (no) *offs = no;
        if (!ni || !no) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        for (int64_t i = 0; i < k; i++) {
            (*ids)[total + (size_t)i] = (int32_t)get_u32le(bi + 4 * i);
            (*offs)[2 * (total + (size_t)i)] = get_u32le(bo + 8 * i);
            (*offs)[2 * (total + (size_t)i) + 1] = get_u32le(bo + 8 * i + 4);
        }
        total = need;
    }
    if (s != SQLITE_DONE) rc = dberr(d, e, "reading tokens");
fail:
    sqlite3_finalize(st);
    if (rc) {
        free(*ids);
        free(*offs);
        *ids = NULL;
        *offs = NULL;
    } else {
        *n = total;
    }
    return rc;
}
