/* store.c: read-only queries of the TUI over db_sqlite() (store.h). */
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int prep(db *d, const char *sql, sqlite3_stmt **st, sala_err *e)
{
    sqlite3 *h = db_sqlite(d);
    if (sqlite3_prepare_v2(h, sql, -1, st, NULL) != SQLITE_OK)
        return sala_errf(e, SALA_EIO, "store: %s", sqlite3_errmsg(h));
    return SALA_OK;
}

int ui_corpus_tokens(db *d, int64_t corpus_id, int64_t *n, sala_err *e)
{
    sqlite3_stmt *st;
    *n = -1;
    int rc = prep(d, "SELECT MAX(s) FROM (SELECT SUM(t.n) AS s FROM tokens t"
                     " JOIN segments g ON g.id = t.segment_id JOIN documents c ON c.id = g.doc_id"
                     " WHERE c.corpus_id = ?1 AND c.status = 'ok' GROUP BY t.tokenizer_id)",
                  &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) *n = sqlite3_column_int64(st, 0);
    else if (s != SQLITE_ROW && s != SQLITE_DONE)
        rc = sala_errf(e, SALA_EIO, "store: %s", sqlite3_errmsg(db_sqlite(d)));
    sqlite3_finalize(st);
    return rc;
}

int ui_ctx_info_get(db *d, int64_t corpus_id, const char *model_dir, ui_ctx_info *out,
                    sala_err *e)
{
    sqlite3_stmt *st;
    memset(out, 0, sizeof(*out));
    int rc = prep(d,
                  "SELECT x.bytes, x.created, x.length, x.documents, x.path, x.model_dir,"
                  " (SELECT COUNT(*) FROM documents c WHERE c.corpus_id = ?1 AND c.status = 'ok'"
                  "   AND EXISTS (SELECT 1 FROM segments g WHERE g.doc_id = c.id)),"
                  " (SELECT MAX(added) FROM documents c WHERE c.corpus_id = ?1 AND c.status = 'ok')"
                  " FROM contexts x WHERE x.corpus_id = ?1"
                  " ORDER BY (x.model_dir = ?2) DESC, x.created DESC, x.id DESC LIMIT 1",
                  &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, corpus_id);
    if (model_dir) sqlite3_bind_text(st, 2, model_dir, -1, SQLITE_STATIC);   /* no copy: cannot fail */
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        out->have = true;
        out->bytes = sqlite3_column_int64(st, 0);
        out->created = sqlite3_column_int64(st, 1);
        out->length = sqlite3_column_int64(st, 2);
        out->documents = sqlite3_column_int64(st, 3);
        const char *path = (const char *)sqlite3_column_text(st, 4);
        const char *mdir = (const char *)sqlite3_column_text(st, 5);
        int64_t ndocs = sqlite3_column_int64(st, 6), added = sqlite3_column_int64(st, 7);
        struct stat sb;
        const char *why = NULL;
        if (!path || stat(path, &sb) != 0) why = "state file missing";
        else if (model_dir && (!mdir || strcmp(mdir, model_dir) != 0)) why = "other model";
        else if (ndocs != out->documents || added > out->created) why = "corpus changed";
        if (why) {
            out->stale = true;
            snprintf(out->why, sizeof(out->why), "%s", why);
        }
    } else if (s != SQLITE_DONE) {
        rc = sala_errf(e, SALA_EIO, "store: %s", sqlite3_errmsg(db_sqlite(d)));
    }
    sqlite3_finalize(st);
    return rc;
}

int64_t ui_doc_id_by_name(db *d, int64_t corpus_id, const char *name)
{
    sqlite3_stmt *st;
    sala_err e;
    int64_t id = -1;
    if (!name || prep(d, "SELECT id FROM documents WHERE corpus_id = ? AND name = ? AND"
                         " status = 'ok' ORDER BY ord DESC LIMIT 1", &st, &e))
        return -1;
    sqlite3_bind_int64(st, 1, corpus_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);   /* no copy: cannot fail */
    if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

void ui_fmt_bytes(int64_t b, char *buf, size_t cap)
{
    if (b < 1000) snprintf(buf, cap, "%lld B", (long long)b);
    else if (b < 1000000) snprintf(buf, cap, "%.1f kB", b / 1e3);
    else if (b < 1000000000) snprintf(buf, cap, "%.1f MB", b / 1e6);
    else snprintf(buf, cap, "%.1f GB", b / 1e9);
}
