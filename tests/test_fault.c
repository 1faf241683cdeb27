/* test_fault.c: fault-injection sweeps (tests/fault.h). Each sweep runs one operation with the
 * n-th allocation, write, fsync or rename failing, for n = 1, 2, ... until the operation
 * completes without reaching the fault, and checks after every run: a clean error (status and a
 * message; I/O errors name the file), the old data intact (state files open, verify and hold
 * the old or, once the rename happened, the new contents; the store passes PRAGMA
 * integrity_check and still has its earlier document) and no temp file left behind. Leaks are
 * checked by LeakSanitizer under `make check`. Operations: the model loader (single file and
 * sharded), state file save and load, and one document ingest (Markdown, in process) into a
 * SQLite store. The printed counts are the sweep sizes. */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/model.h"
#include "engine/random_model.h"
#include "engine/statefile.h"
#include "ingest/db.h"
#include "ingest/ingest.h"
#include "ingest/doc.h"
#include "ingest/xml.h"
#include "json.h"
#include "tests/fault.h"
#include "tests/fuzz/fuzz_model_config.h"

#define SWEEP_MAX 20000

static char *path_in(const char *dir, const char *name)
{
    static char buf[8][4400];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof(buf[0]), "%s/%s", dir, name);
    return b;
}

/* ---- model loader ---- */

static const char *model_dir(bool sharded)
{
    static const char *dirs[2];
    if (dirs[sharded]) return dirs[sharded];
    const char *d = test_tmpdir(), *scratch = test_tmpdir();
    CU_ASSERT_EQUAL_FATAL(test_write_file(path_in(scratch, "config.json"), fuzz_model_config,
                                          strlen(fuzz_model_config)), 0);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(eng_random_model_write(path_in(scratch, "config.json"), d, 3, NULL, &e),
                          SALA_OK);
    if (sharded) {
        /* Two shards and an index, from the single file. */
        st_file *f;
        CU_ASSERT_EQUAL_FATAL(st_open(path_in(d, "model.safetensors"), &f, &e), SALA_OK);
        st_writer *w[2] = {st_writer_new(), st_writer_new()};
        char idx[16384];
        size_t k = (size_t)snprintf(idx, sizeof(idx), "{\"weight_map\":{");
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            CU_ASSERT_EQUAL(st_writer_add(w[i % 2], t->name, t->dtype, t->ndim, t->shape, t->data, &e),
                            SALA_OK);
            k += (size_t)snprintf(idx + k, sizeof(idx) - k, "%s\"%s\":\"s%zu.safetensors\"",
                                  i ? "," : "", t->name, i % 2);
        }
        k += (size_t)snprintf(idx + k, sizeof(idx) - k, "}}");
        CU_ASSERT_EQUAL(st_writer_write(w[0], path_in(d, "s0.safetensors"), &e), SALA_OK);
        CU_ASSERT_EQUAL(st_writer_write(w[1], path_in(d, "s1.safetensors"), &e), SALA_OK);
        st_writer_free(w[0]);
        st_writer_free(w[1]);
        st_close(f);
        CU_ASSERT_EQUAL(unlink(path_in(d, "model.safetensors")), 0);
        CU_ASSERT_EQUAL(test_write_file(path_in(d, "model.safetensors.index.json"), idx, k), 0);
    }
    eng_model *m;
    CU_ASSERT_EQUAL_FATAL(eng_model_open(d, &m, &e), SALA_OK);
    eng_model_close(m);
    dirs[sharded] = d;
    return d;
}

/* cJSON's own allocations are counted too (common/json.c's hooks), and one that fails must
 * read as out of memory, not as a file that is "not valid JSON". */
static void sweep_model(bool sharded)
{
    const char *dir = model_dir(sharded);
    long n;
    int fails = 0;
    sala_json_init();
    for (n = 1; n < SWEEP_MAX; n++) {
        eng_model *m = NULL;
        sala_err e = {0};
        fault_arm(FAULT_ALLOC, n, 0);
        int rc = eng_model_open(dir, &m, &e);
        fault_disarm();
        bool fired = fault_fired();
        if (rc == SALA_OK) {
            CU_ASSERT_PTR_NOT_NULL(m);
            eng_model_close(m);
            if (!fired) break;
            /* Every allocation of the loader is needed: success after a failed one means a
             * failure was mistaken for something else (it happened: a missing tokenizer). */
            fprintf(stderr, "\n  n=%ld: the allocation failed but the model opened\n", n);
            CU_FAIL("an allocation failure was ignored");
            continue;
        }
        fails++;
        CU_ASSERT(fired);
        CU_ASSERT_PTR_NULL(m);
        CU_ASSERT(e.msg[0] != 0);
        if (rc != SALA_ENOMEM) fprintf(stderr, "\n  n=%ld: status %d: %s\n", n, rc, e.msg);
        CU_ASSERT_EQUAL(rc, SALA_ENOMEM);
    }
    CU_ASSERT(n < SWEEP_MAX);
    fprintf(stderr, " [%s model + cJSON: %ld allocation points, %d failed cleanly] ",
            sharded ? "sharded" : "single-file", n - 1, fails);
}

static void t_model_alloc(void) { sweep_model(false); }
static void t_model_sharded_alloc(void) { sweep_model(true); }

/* ---- state files ---- */

/* Save a state file of generation gen: meta gen, sections "kv" (big bytes) and "tok". */
static int save_state(const char *path, const char *gen, size_t big, sala_err *e)
{
    sf_field meta[] = {{"gen", gen}, {"model", "m"}};
    sf_writer *w;
    int rc = sf_create(path, meta, 2, &w, e);
    if (rc) return rc;
    unsigned char *buf = malloc(big ? big : 1);
    if (!buf) {
        sf_abort(w);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < big; i++) buf[i] = (unsigned char)(i * 31 + gen[0]);
    size_t half = big / 2;
    if ((rc = sf_write(w, "kv", buf, half, e)) || (rc = sf_write(w, "kv", buf + half, big - half, e)) ||
        (rc = sf_write(w, "tok", gen, strlen(gen), e))) {
        free(buf);
        sf_abort(w);
        return rc;
    }
    free(buf);
    return sf_commit(w, e);
}

/* The generation in path after opening and verifying it, or NULL (with the reason printed). */
static const char *state_gen(const char *path)
{
    static char gen[32];
    sf_reader *r;
    sala_err e;
    if (sf_open(path, NULL, 0, &r, &e) != SALA_OK || sf_verify(r, &e) != SALA_OK) {
        fprintf(stderr, "\n  %s\n", e.msg);
        if (r) sf_close(r);
        return NULL;
    }
    snprintf(gen, sizeof(gen), "%s", sf_meta(r, "gen") ? sf_meta(r, "gen") : "?");
    sf_close(r);
    return gen;
}

static void sweep_save(unsigned kinds, int err, size_t big, const char *label)
{
    const char *dir = test_tmpdir(), *path = path_in(dir, "ctx.sala");
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(save_state(path, "old", 1000, &e), SALA_OK);
    long n;
    int fails = 0;
    sala_json_init();
    for (n = 1; n < SWEEP_MAX; n++) {
        e.msg[0] = 0;
        fault_arm(kinds, n, err);
        int rc = save_state(path, "new", big, &e);
        fault_disarm();
        bool fired = fault_fired();
        const char *gen = state_gen(path);
        CU_ASSERT_PTR_NOT_NULL(gen);
        CU_ASSERT_EQUAL(test_count_tmp(dir), 0);
        if (rc == SALA_OK) {
            CU_ASSERT(gen && !strcmp(gen, "new"));
            if (!fired) break;
            CU_ASSERT(kinds & FAULT_SHORT);   /* only a short write may go unnoticed */
            CU_ASSERT_EQUAL_FATAL(save_state(path, "old", 1000, &e), SALA_OK);
            continue;
        }
        fails++;
        CU_ASSERT(fired);
        CU_ASSERT(e.msg[0] != 0);
        if (kinds & FAULT_ALLOC) {
            if (rc != SALA_ENOMEM) fprintf(stderr, "\n  n=%ld: status %d: %s\n", n, rc, e.msg);
            CU_ASSERT_EQUAL(rc, SALA_ENOMEM);
        } else {
            CU_ASSERT_EQUAL(rc, SALA_EIO);
            CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, path));        /* names the file */
            if (err == ENOSPC) CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "disk full"));
        }
        if (gen && !strcmp(gen, "new")) {
            /* Only a failure after the rename (the directory fsync) leaves the new file. */
            CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "directory fsync"));
            CU_ASSERT_EQUAL_FATAL(save_state(path, "old", 1000, &e), SALA_OK);
        } else {
            CU_ASSERT(gen && !strcmp(gen, "old"));
        }
    }
    CU_ASSERT(n < SWEEP_MAX);
    fprintf(stderr, " [save, %s: %ld points, %d failed cleanly] ", label, n - 1, fails);
}

static void t_save_alloc(void) { sweep_save(FAULT_ALLOC, 0, 3000, "allocations"); }
static void t_save_eio(void)
{
    sweep_save(FAULT_WRITE | FAULT_FSYNC | FAULT_RENAME, EIO, SF_CHUNK + 4096, "write/fsync/rename EIO");
}
static void t_save_enospc(void)
{
    sweep_save(FAULT_WRITE | FAULT_FSYNC | FAULT_RENAME, ENOSPC, SF_CHUNK + 4096,
               "write/fsync/rename ENOSPC");
}
static void t_save_short(void)
{
    sweep_save(FAULT_WRITE | FAULT_SHORT, 0, SF_CHUNK + 4096, "short writes");
}

static void t_load_alloc(void)
{
    const char *path = path_in(test_tmpdir(), "ctx.sala");
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(save_state(path, "old", SF_CHUNK + 100, &e), SALA_OK);
    long n;
    int fails = 0;
    sala_json_init();
    for (n = 1; n < SWEEP_MAX; n++) {
        sf_reader *r = NULL;
        e.msg[0] = 0;
        const sf_field want[] = {{"model", "m"}};
        unsigned char buf[64];
        fault_arm(FAULT_ALLOC, n, 0);
        int rc = sf_open(path, want, 1, &r, &e);
        if (rc == SALA_OK) rc = sf_read(r, "kv", SF_CHUNK - 10, buf, 20, &e);
        if (rc == SALA_OK) rc = sf_verify(r, &e);
        fault_disarm();
        sf_close(r);
        if (rc == SALA_OK && !fault_fired()) break;
        CU_ASSERT_NOT_EQUAL(rc, SALA_OK);   /* no allocation of a load is optional */
        if (rc == SALA_OK) continue;
        fails++;
        CU_ASSERT(fault_fired());
        CU_ASSERT(e.msg[0] != 0);
        if (rc != SALA_ENOMEM) fprintf(stderr, "\n  n=%ld: status %d: %s\n", n, rc, e.msg);
        CU_ASSERT_EQUAL(rc, SALA_ENOMEM);
    }
    CU_ASSERT(n < SWEEP_MAX);
    CU_ASSERT_STRING_EQUAL(state_gen(path), "old");
    fprintf(stderr, " [load + cJSON: %ld allocation points, %d failed cleanly] ", n - 1, fails);
}

/* ---- one document ingest ---- */

typedef struct { int64_t added, rejected; } ing_count;
static void on_ev(const ing_event *ev, void *ud)
{
    ing_count *c = ud;
    if (ev->outcome == ING_ADDED || ev->outcome == ING_REPLACED) c->added++;
    if (ev->outcome == ING_REJECTED) c->rejected++;
}

static int count_segs(const db_seg *s, void *ud)
{
    (void)s;
    ++*(int *)ud;
    return 0;
}

static void sweep_ingest(unsigned kinds, int err, bool sqlite_alloc, const char *label)
{
    if (sqlite_alloc) CU_ASSERT_EQUAL_FATAL(fault_sqlite_alloc(true), 0);
    const char *dir = test_tmpdir();
    const char *dbp = path_in(dir, "s.db"), *a = path_in(dir, "a.md"), *b = path_in(dir, "b.md");
    const char *ta = "# Alpha\n\nThe first document.\n\nIt stays.\n";
    char tb[8192];
    size_t k = 0;
    for (int i = 0; i < 60; i++)
        k += (size_t)snprintf(tb + k, sizeof(tb) - k, "## Part %d\n\nParagraph %d of the second one.\n\n", i, i);
    CU_ASSERT_EQUAL_FATAL(test_write_file(a, ta, strlen(ta)), 0);
    CU_ASSERT_EQUAL_FATAL(test_write_file(b, tb, k), 0);
    db *d;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(db_open(dbp, &d, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(db_corpus_create(d, "c", NULL, &e), SALA_OK);
    ing_opts o;
    ing_opts_default(&o);
    const char *pa[] = {a}, *pb[] = {b};
    CU_ASSERT_EQUAL_FATAL(ing_add(d, "c", pa, 1, &o, NULL, NULL, NULL, &e), SALA_OK);
    if (kinds & ~FAULT_ALLOC) CU_ASSERT_EQUAL_FATAL(fault_sqlite_io(true), 0);
    long n;
    int fails = 0, rejected = 0;
    for (n = 1; n < SWEEP_MAX; n++) {
        ing_count c = {0, 0};
        e.msg[0] = 0;
        fault_arm(kinds, n, err);
        int rc = ing_add(d, "c", pb, 1, &o, on_ev, &c, NULL, &e);
        fault_disarm();
        bool fired = fault_fired();
        if (rc != SALA_OK) {
            fails++;
            CU_ASSERT(fired);
            CU_ASSERT(e.msg[0] != 0);
            if (getenv("SALA_FAULT_VERBOSE")) fprintf(stderr, "\n  n=%ld: %s\n", n, e.msg);
            /* names the file, or the corpus when the store failed before any file */
            CU_ASSERT(strstr(e.msg, b) || strstr(e.msg, "corpus 'c'"));
            if (sqlite_alloc && strstr(e.msg, "out of memory") && rc != SALA_ENOMEM)
                fprintf(stderr, "\n  n=%ld: status %d: %s\n", n, rc, e.msg);
            if (sqlite_alloc && strstr(e.msg, "out of memory")) CU_ASSERT_EQUAL(rc, SALA_ENOMEM);
        } else if (c.rejected) {
            rejected++;   /* the file was refused with a reason; the batch went on */
        }
        /* The store is intact, the first document still there, and after a restart too. */
        CU_ASSERT_EQUAL(db_integrity_check(d, &e), SALA_OK);
        db_close(d);
        d = NULL;
        CU_ASSERT_EQUAL_FATAL(db_open(dbp, &d, &e), SALA_OK);
        CU_ASSERT_EQUAL(db_integrity_check(d, &e), SALA_OK);
        int64_t cid;
        CU_ASSERT_EQUAL_FATAL(db_corpus_find(d, "c", &cid, &e), SALA_OK);
        db_doc doc;
        CU_ASSERT_EQUAL(db_doc_find(d, cid, a, &doc, &e), SALA_OK);
        int64_t aid = doc.id;
        int nseg = 0;
        CU_ASSERT_EQUAL(db_seg_list(d, aid, -1, NULL, count_segs, &nseg, &e), SALA_OK);
        CU_ASSERT(nseg > 0);
        /* b is stored whole, or not at all, or as a rejected row with no segments. */
        if (db_doc_find(d, cid, b, &doc, &e) == SALA_OK) {
            int64_t bid = doc.id;
            bool ok = !strcmp(doc.status, "ok");
            nseg = 0;
            CU_ASSERT_EQUAL(db_seg_list(d, bid, -1, NULL, count_segs, &nseg, &e), SALA_OK);
            CU_ASSERT(ok ? nseg > 1 : nseg == 0);
            if (!fired) {
                CU_ASSERT(ok);
                break;
            }
            CU_ASSERT_EQUAL(db_doc_delete(d, bid, &e), SALA_OK);
        } else {
            CU_ASSERT(fired);
        }
    }
    if (kinds & ~FAULT_ALLOC) fault_sqlite_io(false);
    db_close(d);
    if (sqlite_alloc) CU_ASSERT_EQUAL(fault_sqlite_alloc(false), 0);
    CU_ASSERT(n < SWEEP_MAX);
    /* Out of memory is the machine's state, not the file's fault: it stops the batch and the
     * file is not stored as rejected. */
    if (kinds == FAULT_ALLOC) CU_ASSERT_EQUAL(rejected, 0);
    fprintf(stderr, " [ingest, %s: %ld points, %d stopped with an error, %d rejected the file] ",
            label, n - 1, fails, rejected);
}

static void t_ingest_alloc(void) { sweep_ingest(FAULT_ALLOC, 0, false, "allocations"); }
static void t_ingest_sqlite_alloc(void)
{
    sweep_ingest(FAULT_ALLOC, 0, true, "allocations, SQLite's too");
}
static void t_ingest_eio(void)
{
    sweep_ingest(FAULT_WRITE | FAULT_FSYNC | FAULT_RENAME, EIO, false, "SQLite writes EIO");
}
static void t_ingest_enospc(void)
{
    sweep_ingest(FAULT_WRITE | FAULT_FSYNC | FAULT_RENAME, ENOSPC, false, "SQLite writes ENOSPC");
}

/* ---- XML extraction, libxml2's allocations too ----
 * xml_extract in this process with every allocation counted (ours and libxml2's, routed by
 * xmlMemSetup): each failing point ends in SALA_ENOMEM, or, where libxml2 absorbs the failure,
 * in exactly the text of a run without faults (never a silently shorter document); LSan
 * (make check) reports any leak. GLib's allocations (g_malloc aborts) are not counted. */
static void sweep_xml(void)
{
    static const char xml[] =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE art [<!ENTITY co \"Walrus and Co\">]>\n"
        "<art xmlns=\"urn:a\" xmlns:m=\"urn:m\"><front><title>On &co;</title>"
        "<m:author>Ann Lee</m:author></front><body><sec id=\"s1\"><title>One</title>"
        "<p>First <i>para</i> graph.</p><p>Second &#x263A; para.</p></sec>"
        "<sec><title>Two</title><list><item>a</item><item>b</item></list>"
        "<p>Third <![CDATA[raw <b>]]> text.</p></sec></body></art>\n";
    sala_err e;
    ing_doc base;
    ing_doc_init(&base);
    const int brc = xml_extract("a.xml", xml, sizeof(xml) - 1, 0, 1, &base, &e);
    if (brc) fprintf(stderr, "\n  xml: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(brc, SALA_OK);
    CU_ASSERT_TRUE_FATAL(base.n > 0);
    long n;
    int fails = 0, absorbed = 0;
    for (n = 1; n < SWEEP_MAX; n++) {
        ing_doc d;
        ing_doc_init(&d);
        e.msg[0] = 0;
        fault_arm(FAULT_ALLOC, n, 0);
        int rc = xml_extract("a.xml", xml, sizeof(xml) - 1, 0, 1, &d, &e);
        fault_disarm();
        const bool fired = fault_fired();
        if (rc == SALA_OK) {
            bool same = d.n == base.n;
            for (size_t i = 0; same && i < d.n; i++)
                same = !strcmp(d.segs[i].text, base.segs[i].text) &&
                       !strcmp(d.segs[i].locator, base.segs[i].locator);
            if (!same) fprintf(stderr, "\n  n=%ld: succeeded with other text\n", n);
            CU_ASSERT_TRUE(same);
            absorbed += fired;
        } else {
            fails++;
            CU_ASSERT(fired);
            if (rc != SALA_ENOMEM) fprintf(stderr, "\n  n=%ld: status %d: %s\n", n, rc, e.msg);
            CU_ASSERT_EQUAL(rc, SALA_ENOMEM);
        }
        ing_doc_clear(&d);
        if (rc == SALA_OK && !fired) break;
    }
    CU_ASSERT(n < SWEEP_MAX);
    ing_doc_clear(&base);
    fprintf(stderr, " [xml + libxml2: %ld allocation points, %d failed cleanly, %d absorbed] ",
            n - 1, fails, absorbed);
}

SALA_SUITE(fault)
{
    SALA_ADD("fault", {"model loader: every allocation, cJSON's too", t_model_alloc},
             {"sharded model loader: every allocation, cJSON's too", t_model_sharded_alloc},
             {"state save: every allocation", t_save_alloc},
             {"state save: every write/fsync/rename, EIO", t_save_eio},
             {"state save: every write/fsync/rename, ENOSPC", t_save_enospc},
             {"state save: every write short", t_save_short},
             {"state load: every allocation", t_load_alloc},
             {"ingest one document: every allocation", t_ingest_alloc},
             {"ingest one document: every allocation, SQLite's too", t_ingest_sqlite_alloc},
             {"ingest one document: every SQLite write, EIO", t_ingest_eio},
             {"ingest one document: every SQLite write, ENOSPC", t_ingest_enospc},
             {"XML extraction: every allocation, libxml2's too", sweep_xml});
}
