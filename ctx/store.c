/* store.c: the tables of schema/0002_contexts.sql: a corpus's configured model, the contexts
 * (one row per corpus and model, pointing at its state file) and the questions asked. */
#include "ctx/ctx_int.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int sqlerr(db *d, sala_err *e, const char *what)
{
    return sala_errf(e, SALA_EIO, "database: %s: %s", what, sqlite3_errmsg(db_sqlite(d)));
}

static int prep(db *d, const char *sql, sqlite3_stmt **st, sala_err *e)
{
    if (sqlite3_prepare_v2(db_sqlite(d), sql, -1, st, NULL) != SQLITE_OK)
        return sqlerr(d, e, "prepare");
    return SALA_OK;
}

static int corpus_id(db *d, const char *corpus, int64_t *id, sala_err *e)
{
    int rc = db_corpus_find(d, corpus, id, e);
    if (rc == SALA_ENOTFOUND)
        return sala_errf(e, SALA_ENOTFOUND, "no corpus '%s' (see 'sala corpus list')", corpus);
    return rc;
}

int ctx_corpus_model_set(db *d, const char *corpus, const char *dir, sala_err *e)
{
    int64_t id;
    sqlite3_stmt *st;
    int rc = corpus_id(d, corpus, &id, e);
    if (rc || (rc = prep(d, "INSERT INTO corpus_models (corpus_id, model_dir) VALUES (?, ?) "
                            "ON CONFLICT (corpus_id) DO UPDATE SET model_dir = excluded.model_dir",
                         &st, e)))
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, dir, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? SALA_OK : sqlerr(d, e, "setting the corpus model");
    sqlite3_finalize(st);
    return rc;
}

int ctx_corpus_model_get(db *d, const char *corpus, char **dir, sala_err *e)
{
    int64_t id;
    sqlite3_stmt *st;
    *dir = NULL;
    int rc = corpus_id(d, corpus, &id, e);
    if (rc || (rc = prep(d, "SELECT model_dir FROM corpus_models WHERE corpus_id = ?", &st, e)))
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *dir = strdup((const char *)sqlite3_column_text(st, 0));
        rc = *dir ? SALA_OK : sala_errf(e, SALA_ENOMEM, "out of memory");
    } else {
        rc = s == SQLITE_DONE ? sala_errf(e, SALA_ENOTFOUND, "corpus '%s' has no model", corpus)
                              : sqlerr(d, e, "reading the corpus model");
    }
    sqlite3_finalize(st);
    return rc;
}

int ctx_row_get(db *d, int64_t cid, const char *model_fp, ctx_row *r, sala_err *e)
{
    sqlite3_stmt *st;
    memset(r, 0, sizeof(*r));
    int rc = prep(d, "SELECT id, path, tokens_hash, length FROM contexts "
                     "WHERE corpus_id = ? AND model_fp = ?", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, cid);
    sqlite3_bind_text(st, 2, model_fp, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        r->id = sqlite3_column_int64(st, 0);
        r->path = strdup((const char *)sqlite3_column_text(st, 1));
        r->tokens_hash = strdup((const char *)sqlite3_column_text(st, 2));
        r->length = sqlite3_column_int64(st, 3);
        rc = r->path && r->tokens_hash ? SALA_OK : sala_errf(e, SALA_ENOMEM, "out of memory");
    } else {
        rc = s == SQLITE_DONE ? SALA_ENOTFOUND : sqlerr(d, e, "reading contexts");
        if (rc == SALA_ENOTFOUND) sala_errf(e, rc, "no cached context for this model");
    }
    sqlite3_finalize(st);
    return rc;
}

void ctx_row_free(ctx_row *r)
{
    free(r->path);
    free(r->tokens_hash);
    memset(r, 0, sizeof(*r));
}

int ctx_row_put(db *d, int64_t cid, const ctx_model *m, const char *tokens_hash,
                const ctx_prefill_result *res, int64_t *id, sala_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(d, "INSERT INTO contexts (corpus_id, model_fp, model_dir, tokenizer_hash, "
                     "tokens_hash, length, documents, checkpoints, bytes, path, created, "
                     "prefill_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                     "ON CONFLICT (corpus_id, model_fp) DO UPDATE SET model_dir = excluded.model_dir, "
                     "tokenizer_hash = excluded.tokenizer_hash, tokens_hash = excluded.tokens_hash, "
                     "length = excluded.length, documents = excluded.documents, "
                     "checkpoints = excluded.checkpoints, bytes = excluded.bytes, "
                     "path = excluded.path, created = excluded.created, "
                     "prefill_seconds = excluded.prefill_seconds RETURNING id", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, cid);
    sqlite3_bind_text(st, 2, m->fp_hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->dir, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->tok_hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, tokens_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, res->length);
    sqlite3_bind_int64(st, 7, res->documents);
    sqlite3_bind_int64(st, 8, res->checkpoints);
    sqlite3_bind_int64(st, 9, (int64_t)res->bytes);
    sqlite3_bind_text(st, 10, res->path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, (int64_t)time(NULL));
    sqlite3_bind_double(st, 12, res->seconds);
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (id) *id = sqlite3_column_int64(st, 0);
        rc = SALA_OK;
    } else {
        rc = sqlerr(d, e, "recording the context");
    }
    sqlite3_finalize(st);
    return rc;
}

int ctx_answer_store(db *d, ctx_ctx *c, const char *question, const ctx_answer *a, sala_err *e)
{
    char *cit = ctx_answer_citations_json(a), *tim = ctx_answer_timings_json(a);
    sqlite3_stmt *st = NULL;
    int rc = !cit || !tim ? sala_errf(e, SALA_ENOMEM, "out of memory") : SALA_OK;
    if (!rc) rc = prep(d, "INSERT INTO questions (corpus_id, context_id, mode, question, answer, "
                          "citations, timings, asked) VALUES (?, ?, 'model', ?, ?, ?, ?, ?)", &st, e);
    if (!rc) {
        sqlite3_bind_int64(st, 1, c->corpus_id);
        sqlite3_bind_int64(st, 2, c->context_id);
        sqlite3_bind_text(st, 3, question, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, a->text ? a->text : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, cit, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, tim, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)time(NULL));
        rc = sqlite3_step(st) == SQLITE_DONE ? SALA_OK : sqlerr(d, e, "storing the question");
    }
    sqlite3_finalize(st);
    free(cit);
    free(tim);
    return rc;
}

int ctx_retrieval_store(db *d, int64_t cid, const char *question, const char *answer,
                        const char *citations, sala_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(d, "INSERT INTO questions (corpus_id, context_id, mode, question, answer, "
                     "citations, timings, asked) VALUES (?, NULL, 'retrieval', ?, ?, ?, '{}', ?)",
                  &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, cid);
    sqlite3_bind_text(st, 2, question, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, answer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, citations, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (int64_t)time(NULL));
    rc = sqlite3_step(st) == SQLITE_DONE ? SALA_OK : sqlerr(d, e, "storing the question");
    sqlite3_finalize(st);
    return rc;
}

int ctx_history(db *d, const char *corpus, ctx_history_fn fn, void *ud, sala_err *e)
{
    int64_t id;
    sqlite3_stmt *st;
    int rc = corpus_id(d, corpus, &id, e);
    if (rc || (rc = prep(d, "SELECT id, asked, mode, question, answer, citations, timings "
                            "FROM questions WHERE corpus_id = ? ORDER BY id", &st, e)))
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        ctx_history_row r = {
            .id = sqlite3_column_int64(st, 0), .asked = sqlite3_column_int64(st, 1),
            .mode = (const char *)sqlite3_column_text(st, 2),
            .question = (const char *)sqlite3_column_text(st, 3),
            .answer = (const char *)sqlite3_column_text(st, 4),
            .citations = (const char *)sqlite3_column_text(st, 5),
            .timings = (const char *)sqlite3_column_text(st, 6),
        };
        if ((rc = fn(&r, ud)) != 0) break;
    }
    if (rc == SALA_OK && s != SQLITE_DONE) rc = sqlerr(d, e, "reading history");
    sqlite3_finalize(st);
    return rc;
}

int ctx_corpus_id(db *d, const char *corpus, int64_t *id, sala_err *e)
{
    return corpus_id(d, corpus, id, e);
}
