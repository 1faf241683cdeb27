/* test_ingest.c: the ingestion modules one by one: the store (db.c), text decoding and
 * segmentation (text.c), the directory walk and .gitignore (repo.c), worker isolation and
 * limits (worker.c), PDF (pdf.c, on PDFs generated here with cairo and hand-written broken
 * ones) and XML (xml.c, incl. XXE, billion laughs and a gzip bomb). Real fetched documents are
 * in test_ingest_real.c; the `sala` commands end to end in test_ingest_cli.c. */
#include "test.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/db.h"
#include "ingest/doc.h"
#include "ingest/ingest.h"
#include "ingest/pdf.h"
#include "ingest/repo.h"
#include "ingest/text.h"
#include "ingest/worker.h"
#include "ingest/xml.h"

SALA_SUITE(ingest_db);
SALA_SUITE(ingest_text);
SALA_SUITE(ingest_repo);
SALA_SUITE(ingest_worker);
SALA_SUITE(ingest_pdf);
SALA_SUITE(ingest_xml);

static char *path_in(const char *dir, const char *name)
{
    static char buf[16][4400];
    static int slot;
    char *b = buf[slot++ % 16];
    snprintf(b, sizeof(buf[0]), "%s/%s", dir, name);
    return b;
}

static void write_str(const char *path, const char *s)
{
    CU_ASSERT_EQUAL_FATAL(test_write_file(path, s, strlen(s)), 0);
}

/* ---- db ---- */

static int count_cb(const db_corpus_info *c, void *ud)
{
    (void)c;
    (*(int *)ud)++;
    return 0;
}

static int hit_cb(const db_hit *h, void *ud)
{
    char *out = ud;
    snprintf(out + strlen(out), 256 - strlen(out), "%s@%s;", h->doc_name, h->locator);
    return 0;
}

static void t_db_schema(void)
{
    db *d = NULL;
    sala_err e;
    const char *p = path_in(test_tmpdir(), "sub/dir/s.db");
    CU_ASSERT_EQUAL_FATAL(db_open(p, &d, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_schema_version(d), db_schema_count());
    CU_ASSERT(db_schema_count() >= 1);
    CU_ASSERT_EQUAL(db_integrity_check(d, &e), SALA_OK);
    db_close(d);
    /* Reopen: no migration runs twice. */
    CU_ASSERT_EQUAL_FATAL(db_open(p, &d, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_schema_version(d), db_schema_count());
    db_close(d);
    db_close(NULL);
    char cmd[4600], out[256];
    snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'PRAGMA journal_mode; PRAGMA user_version;'", p);
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "wal"));
    /* A store from a newer sala is refused, not damaged. */
    snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'PRAGMA user_version = 999'", p);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    CU_ASSERT_EQUAL(db_open(p, &d, &e), SALA_EUNSUP);
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "newer"));
}

static void t_db_docs(void)
{
    db *d = NULL;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(db_open(path_in(test_tmpdir(), "s.db"), &d, &e), SALA_OK);
    int64_t cid, cid2;
    CU_ASSERT_EQUAL(db_corpus_create(d, "c", &cid, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_corpus_create(d, "c", NULL, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(db_corpus_create(d, "a/b", NULL, &e), SALA_EINVAL);
    CU_ASSERT_EQUAL(db_corpus_create(d, "other", &cid2, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_corpus_find(d, "nope", &cid, &e), SALA_ENOTFOUND);
    db_doc doc = {.corpus_id = cid, .path = "/x/a.txt", .name = "a.txt", .kind = "text",
                  .size = 3, .mtime = 1, .pages = -1, .status = "ok", .sha256 = "ab"};
    int64_t id;
    CU_ASSERT_EQUAL_FATAL(db_begin(d, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(db_doc_insert(d, &doc, -1, &id, &e), SALA_OK);
    db_seg s = {.doc_id = id, .ordinal = 0, .locator = "a.txt:1-2", .page = -1, .line_first = 1,
                .line_last = 2, .text = "zebra crossing\nquagga", .text_len = 21};
    int64_t sid;
    CU_ASSERT_EQUAL(db_seg_insert(d, &s, &sid, &e), SALA_OK);
    /* A token stream over two chunks. */
    size_t n = DB_TOKEN_CHUNK + 5;
    int32_t *ids = malloc(n * sizeof(*ids));
    uint32_t *offs = malloc(2 * n * sizeof(*offs));
    CU_ASSERT_FATAL(ids && offs);
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)(i * 7 % 73448);
        offs[2 * i] = (uint32_t)i;
        offs[2 * i + 1] = (uint32_t)i + 1;
    }
    int64_t tid;
    CU_ASSERT_EQUAL(db_tokenizer_intern(d, "ff", "/t.json", &tid, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_tokens_insert(d, sid, tid, ids, offs, n, &e), SALA_OK);
    CU_ASSERT_EQUAL(db_commit(d, &e), SALA_OK);
    int32_t *ids2;
    uint32_t *offs2;
    size_t n2;
    CU_ASSERT_EQUAL(db_tokens_get(d, sid, tid, &ids2, &offs2, &n2, &e), SALA_OK);
    CU_ASSERT_EQUAL(n2, n);
    CU_ASSERT(n2 == n && !memcmp(ids, ids2, n * 4) && !memcmp(offs, offs2, n * 8));
    free(ids2);
    free(offs2);
    free(ids);
    free(offs);
    char hits[256] = "";
    CU_ASSERT_EQUAL(db_search(d, cid, "quagga", 10, hit_cb, hits, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(hits, "a.txt@a.txt:1-2;");
    hits[0] = 0;
    CU_ASSERT_EQUAL(db_search(d, cid2, "quagga", 10, hit_cb, hits, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(hits, "");
    CU_ASSERT_EQUAL(db_search(d, cid, "\"unbalanced", 10, hit_cb, hits, &e), SALA_EINVAL);
    /* A rejected row needs its reason (schema CHECK). */
    db_doc bad = doc;
    bad.path = "/x/b";
    bad.status = "rejected";
    CU_ASSERT_NOT_EQUAL(db_doc_insert(d, &bad, -1, NULL, &e), SALA_OK);
    bad.reason = "why";
    bad.component = "io";
    CU_ASSERT_EQUAL(db_doc_insert(d, &bad, -1, NULL, &e), SALA_OK);
    int nc = 0;
    CU_ASSERT_EQUAL(db_corpus_list(d, count_cb, &nc, &e), SALA_OK);
    CU_ASSERT_EQUAL(nc, 2);
    /* Removing the corpus cascades to documents, segments, tokens and the FTS index. */
    CU_ASSERT_EQUAL(db_corpus_delete(d, "c", &e), SALA_OK);
    CU_ASSERT_EQUAL(db_doc_get(d, id, &doc, &e), SALA_ENOTFOUND);
    CU_ASSERT_EQUAL(db_tokens_get(d, sid, tid, &ids2, &offs2, &n2, &e), SALA_OK);
    CU_ASSERT_EQUAL(n2, 0);
    free(ids2);
    free(offs2);
    CU_ASSERT_EQUAL(db_corpus_create(d, "c", &cid, &e), SALA_OK);
    hits[0] = 0;
    CU_ASSERT_EQUAL(db_search(d, cid, "quagga", 10, hit_cb, hits, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(hits, "");
    CU_ASSERT_EQUAL(db_integrity_check(d, &e), SALA_OK);
    db_close(d);
}

/* ---- text ---- */

static void t_text_decode(void)
{
    char *o;
    size_t n;
    sala_err e;
    CU_ASSERT_EQUAL(text_decode("\xEF\xBB\xBFh\xC3\xA9", 6, &o, &n, &e), SALA_OK);
    CU_ASSERT(n == 3 && !memcmp(o, "h\xC3\xA9", 3));
    free(o);
    CU_ASSERT_EQUAL(text_decode("\xFF\xFEh\0i\0", 6, &o, &n, &e), SALA_OK);
    CU_ASSERT(n == 2 && !memcmp(o, "hi", 2));
    free(o);
    CU_ASSERT_EQUAL(text_decode("caf\xE9 \x93ok\x94", 9, &o, &n, &e), SALA_OK); /* cp1252 */
    CU_ASSERT_STRING_EQUAL(o, "caf\xC3\xA9 \xE2\x80\x9Cok\xE2\x80\x9D");
    free(o);
    CU_ASSERT_EQUAL(text_decode("ab\0cd", 5, &o, &n, &e), SALA_EFORMAT);
    CU_ASSERT_PTR_NULL(o);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "NUL byte at offset 2"));
    char junk[512];
    for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (char)(1 + i % 8);
    CU_ASSERT_EQUAL(text_decode(junk, sizeof(junk), &o, &n, &e), SALA_EFORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "control bytes"));
    CU_ASSERT_STRING_EQUAL(text_lang("src/x.c"), "c");
    CU_ASSERT_STRING_EQUAL(text_lang("a/Makefile"), "make");
    CU_ASSERT_PTR_NULL(text_lang("notes.txt"));
    CU_ASSERT_PTR_NULL(text_lang(".bashrc"));
}

static void t_text_code(void)
{
    /* 1000 lines with a blank line every 25: chunks of 60..120 lines, contiguous, in order. */
    size_t cap = 1000 * 32, len = 0;
    char *src = malloc(cap);
    for (int i = 1; i <= 1000; i++)
        len += (size_t)snprintf(src + len, cap - len, i % 25 == 0 ? "\n" : "int x%d = %d;\n", i, i);
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(text_extract("src/x.c", src, len, TEXT_CODE, &d, &e), SALA_OK);
    int64_t next = 1;
    size_t total = 0;
    for (size_t i = 0; i < d.n; i++) {
        ing_seg *s = &d.segs[i];
        CU_ASSERT_EQUAL(s->line_first, next);
        int64_t lines = s->line_last - s->line_first + 1;
        if (i + 1 < d.n) CU_ASSERT(lines >= 60 && lines <= 120);
        char loc[64];
        snprintf(loc, sizeof(loc), "src/x.c:%lld-%lld", (long long)s->line_first,
                 (long long)s->line_last);
        CU_ASSERT_STRING_EQUAL(s->locator, loc);
        next = s->line_last + 1;
        total += s->len;
    }
    CU_ASSERT_EQUAL(next, 1001);
    CU_ASSERT_EQUAL(total, len); /* every byte in exactly one segment */
    CU_ASSERT_EQUAL(d.segs[0].line_last, 75); /* first blank line at or after line 60 */
    ing_doc_clear(&d);
    free(src);
}

static void t_text_markdown(void)
{
    const char *md = "# Title here\n\nintro para\n\n```\ncode\n\n# not a heading\n```\n\n"
                     "## Section two\n\ntext\n";
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(text_extract("r.md", md, strlen(md), TEXT_MARKDOWN, &d, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(d.title, "Title here");
    /* Small sections stay grouped (under 512 bytes a heading does not cut). */
    CU_ASSERT_EQUAL(d.n, 1);
    CU_ASSERT_STRING_EQUAL(d.segs[0].locator, "r.md:1-13");
    ing_doc_clear(&d);
    /* Big paragraphs: groups of at most ~4 KiB, split at paragraph boundaries. */
    size_t cap = 64 * 1024, len = 0;
    char *t = malloc(cap);
    for (int p = 0; p < 40; p++) {
        for (int l = 0; l < 5; l++)
            len += (size_t)snprintf(t + len, cap - len, "paragraph %d line %d %s\n", p, l,
                                    "lorem ipsum dolor sit amet consectetur");
        len += (size_t)snprintf(t + len, cap - len, "\n");
    }
    CU_ASSERT_EQUAL_FATAL(text_extract("t.txt", t, len, TEXT_PLAIN, &d, &e), SALA_OK);
    CU_ASSERT(d.n >= 3);
    for (size_t i = 0; i < d.n; i++) {
        CU_ASSERT(d.segs[i].len <= 4096);
        /* starts at a paragraph start */
        CU_ASSERT_EQUAL(strncmp(d.segs[i].text, "paragraph ", 10), 0);
    }
    CU_ASSERT_EQUAL(d.segs[d.n - 1].line_last, 240);
    ing_doc_clear(&d);
    free(t);
    CU_ASSERT_EQUAL(text_extract("e.txt", "", 0, TEXT_PLAIN, &d, &e), SALA_EFORMAT);
}

/* ---- repo ---- */

static void t_glob(void)
{
    CU_ASSERT_TRUE(repo_glob_match("*.o", "a.o"));
    CU_ASSERT_FALSE(repo_glob_match("*.o", "d/a.o"));
    CU_ASSERT_TRUE(repo_glob_match("**/foo", "a/b/foo"));
    CU_ASSERT_TRUE(repo_glob_match("**/foo", "foo"));
    CU_ASSERT_TRUE(repo_glob_match("a/**/b", "a/b"));
    CU_ASSERT_TRUE(repo_glob_match("a/**/b", "a/x/y/b"));
    CU_ASSERT_FALSE(repo_glob_match("a/**/b", "a/x/y/c"));
    CU_ASSERT_TRUE(repo_glob_match("abc/**", "abc/x/y"));
    CU_ASSERT_TRUE(repo_glob_match("f?o.[ch]", "foo.c"));
    CU_ASSERT_FALSE(repo_glob_match("f?o.[!ch]", "foo.c"));
    CU_ASSERT_TRUE(repo_glob_match("[a-c]x", "bx"));
    CU_ASSERT_TRUE(repo_glob_match("\\*lit", "*lit"));
    CU_ASSERT_FALSE(repo_glob_match("\\*lit", "xlit"));
}

typedef struct {
    char log[4096];
} walk_log;

static int walk_cb(const char *path, const char *name, const char *reject, void *ud)
{
    walk_log *w = ud;
    (void)path;
    size_t l = strlen(w->log);
    snprintf(w->log + l, sizeof(w->log) - l, "%s%s%s;", name, reject ? "!" : "",
             reject ? reject : "");
    return 0;
}

static void t_repo_walk(void)
{
    const char *r = test_tmpdir();
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && mkdir -p .git src/gen src/keep build docs/sub out && "
             "echo x > .git/config && echo 'int a;' > src/a.c && echo 'b' > src/b.c && "
             "echo g > src/gen/g.c && echo k > src/keep/k.c && echo o > build/o.c && "
             "echo d > docs/sub/d.md && echo l > docs/sub/log.txt && echo t > out/t.txt && "
             "printf 'build/\\n*.txt\\n!/out/t.txt\\nsrc/gen\\n' > .gitignore && "
             "printf 'b.c\\n' > src/.gitignore && printf '!log.txt\\n' > docs/sub/.gitignore && "
             "ln -s .. src/up && ln -s /etc/hostname src/out && ln -s nowhere src/dangle && "
             "ln -s loop2 src/loop1 && ln -s loop1 src/loop2 && ln -s a.c src/alias.c",
             r);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    walk_log w = {""};
    sala_err e;
    CU_ASSERT_EQUAL(repo_walk(r, walk_cb, &w, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(
        w.log,
        ".gitignore;docs/sub/.gitignore;docs/sub/d.md;docs/sub/log.txt;out/t.txt;"
        "src/.gitignore;src/a.c;src/alias.c;src/dangle!dangling symlink;src/keep/k.c;"
        "src/loop1!symlink loop;src/loop2!symlink loop;"
        "src/out!symlink leaves the tree (to /etc/hostname);"
        "src/up!symlink loop (a directory contains itself);");
    /* Deterministic: the same walk gives the same list. */
    walk_log w2 = {""};
    CU_ASSERT_EQUAL(repo_walk(r, walk_cb, &w2, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(w.log, w2.log);
}

/* ---- worker ---- */

static int wk_ok(const char *name, const char *buf, size_t len, int shard, int nshards,
                 ing_doc *doc, sala_err *e)
{
    char loc[32];
    (void)name;
    snprintf(loc, sizeof(loc), "s%d/%d", shard, nshards);
    if (shard == 0) ing_doc_meta_set(doc, "title", "  A   title\n", e);
    return ing_doc_seg_add(doc, loc, shard, -1, -1, buf, len, e);
}

static int wk_crash(const char *name, const char *buf, size_t len, int shard, int nshards,
                    ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards; (void)doc; (void)e;
    raise(SIGSEGV);
    return SALA_OK;
}

static int wk_hang(const char *name, const char *buf, size_t len, int shard, int nshards,
                   ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards; (void)doc; (void)e;
    for (;;) pause();
    return SALA_OK;
}

static int wk_spin(const char *name, const char *buf, size_t len, int shard, int nshards,
                   ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards; (void)doc; (void)e;
    volatile unsigned long x = 0;
    for (;;) x++;
    return SALA_OK;
}

static int wk_flood(const char *name, const char *buf, size_t len, int shard, int nshards,
                    ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards;
    static char block[65536];
    memset(block, 'a', sizeof(block));
    for (int i = 0; i < 64; i++) {
        int rc = ing_doc_seg_add(doc, "x", -1, -1, -1, block, sizeof(block), e);
        if (rc) return rc;
    }
    return SALA_OK;
}

static int wk_net(const char *name, const char *buf, size_t len, int shard, int nshards,
                  ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards; (void)doc;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s >= 0) return sala_errf(e, SALA_EINTERNAL, "socket allowed");
    int s2 = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s2 >= 0) return sala_errf(e, SALA_EINTERNAL, "unix socket allowed");
    if (execl("/bin/true", "true", (char *)NULL) == 0 || errno != EPERM)
        return sala_errf(e, SALA_EINTERNAL, "exec allowed");
    FILE *f = fopen("/tmp/sala-worker-should-not-write", "w");
    if (f && fputs("x", f) >= 0 && fflush(f) == 0) return sala_errf(e, SALA_EINTERNAL, "write");
    return sala_errf(e, SALA_EFORMAT, "denied: %s", strerror(EPERM));
}

#ifndef __SANITIZE_ADDRESS__
static int wk_bomb(const char *name, const char *buf, size_t len, int shard, int nshards,
                   ing_doc *doc, sala_err *e)
{
    (void)name; (void)buf; (void)len; (void)shard; (void)nshards; (void)doc;
    for (size_t total = 0; total < ((size_t)64 << 30); total += (size_t)64 << 20) {
        char *p = malloc((size_t)64 << 20);
        if (!p) return sala_errf(e, SALA_ENOMEM, "allocation failed after %zu MiB", total >> 20);
        memset(p, 1, (size_t)64 << 20);
    }
    return SALA_OK;
}
#endif

static void t_worker(void)
{
    wk_limits lim;
    wk_limits_default(&lim);
    lim.wall_s = 10;
    ing_doc d;
    ing_doc_init(&d);
    sala_err e;
    CU_ASSERT_EQUAL(wk_run("x", "payload", 7, wk_ok, 3, &lim, &d, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(d.n, 3);
    CU_ASSERT_STRING_EQUAL(d.segs[0].locator, "s0/3");
    CU_ASSERT_STRING_EQUAL(d.segs[2].locator, "s2/3");
    CU_ASSERT_STRING_EQUAL(d.segs[1].text, "payload");
    CU_ASSERT_STRING_EQUAL(d.title, "A title");
    ing_doc_clear(&d);

    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_crash, 1, &lim, &d, &e), SALA_EFORMAT);
    CU_ASSERT_STRING_EQUAL(e.msg, "worker: killed by signal 11 (Segmentation fault)");
    CU_ASSERT_EQUAL(d.n, 0);

    lim.wall_s = 0.3;
    double t0 = sala_now();
    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_hang, 2, &lim, &d, &e), SALA_ERANGE);
    CU_ASSERT(sala_now() - t0 < 3);
    CU_ASSERT_STRING_EQUAL(e.msg, "worker: timed out after 0.3 s (killed)");

    lim.wall_s = 10;
    lim.cpu_s = 1;
    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_spin, 1, &lim, &d, &e), SALA_ERANGE);
    CU_ASSERT_STRING_EQUAL(e.msg, "worker: CPU time limit of 1 s exceeded");

    wk_limits_default(&lim);
    lim.out_cap = 1 << 20;
    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_flood, 1, &lim, &d, &e), SALA_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "output over the cap of 1048576 bytes"));

    wk_limits_default(&lim);
    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_net, 1, &lim, &d, &e), SALA_EFORMAT);
    CU_ASSERT_STRING_EQUAL(e.msg, "denied: Operation not permitted");
    CU_ASSERT_NOT_EQUAL(access("/tmp/sala-worker-should-not-write", F_OK), 0);
    unlink("/tmp/sala-worker-should-not-write");
#ifndef __SANITIZE_ADDRESS__
    /* Memory bomb under RLIMIT_AS (not under ASan, which cannot run with RLIMIT_AS). */
    lim.mem_bytes = (size_t)512 << 20;
    CU_ASSERT_EQUAL(wk_run("x", "", 0, wk_bomb, 1, &lim, &d, &e), SALA_ENOMEM);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "allocation failed after"));
#endif
    ing_doc_clear(&d);
}

/* ---- PDF ---- */

/* A PDF with `pages` pages, page i saying "page <i> says <word>", and a title. */
static void make_pdf(const char *path, int pages, const char *title)
{
    cairo_surface_t *s = cairo_pdf_surface_create(path, 595, 842);
    if (title) cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, title);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_AUTHOR, "Test Author");
    cairo_t *c = cairo_create(s);
    cairo_set_font_size(c, 14);
    for (int i = 1; i <= pages; i++) {
        char line[128];
        snprintf(line, sizeof(line), "page %d says %s", i, i % 2 ? "odd" : "even");
        cairo_move_to(c, 50, 100);
        cairo_show_text(c, line);
        cairo_move_to(c, 50, 130);
        cairo_show_text(c, "second line");
        cairo_show_page(c);
    }
    cairo_destroy(c);
    cairo_surface_finish(s);
    CU_ASSERT_EQUAL(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy(s);
    /* Let LeakSanitizer see cairo's and fontconfig's caches freed (FcFini has no header here:
     * fontconfig comes in through cairo). */
    cairo_debug_reset_static_data();
    void *sym = dlsym(RTLD_DEFAULT, "FcFini");
    void (*fc_fini)(void) = NULL;
    if (sym) memcpy(&fc_fini, &sym, sizeof(fc_fini)); /* POSIX: data to function pointer */
    if (fc_fini) fc_fini();
}

/* Write a PDF from its objects with a correct xref table; trailer_extra goes in the trailer. */
static void write_pdf_objects(const char *path, const char *const *objs, int n,
                              const char *trailer_extra)
{
    char buf[8192];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "%%PDF-1.4\n");
    long off[16];
    for (int i = 0; i < n; i++) {
        off[i] = (long)len;
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%d 0 obj\n%s\nendobj\n", i + 1,
                                objs[i]);
    }
    long xref = (long)len;
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "xref\n0 %d\n0000000000 65535 f \n",
                            n + 1);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%010ld 00000 n \n", off[i]);
    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%ld\n%%%%EOF\n",
                            n + 1, trailer_extra, xref);
    CU_ASSERT_EQUAL(test_write_file(path, buf, len), 0);
}

/* The bad PDFs of the corrupt-input suite, written into dir (also used by the CLI tests). */
void test_ingest_bad_pdfs(const char *dir);
void test_ingest_bad_pdfs(const char *dir)
{
    const char *pages0[] = {"<< /Type /Catalog /Pages 2 0 R >>",
                            "<< /Type /Pages /Kids [] /Count 0 >>"};
    write_pdf_objects(path_in(dir, "zero-pages.pdf"), pages0, 2, "");
    const char *enc[] = {
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        "<< /Filter /Standard /V 1 /R 2 /P -44 "
        "/O <0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef> "
        "/U <fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210> >>"};
    write_pdf_objects(path_in(dir, "encrypted.pdf"), enc, 4,
                      "/Encrypt 4 0 R /ID [<00112233445566778899aabbccddeeff> "
                      "<00112233445566778899aabbccddeeff>]");
    const char *xref =
        "%PDF-1.4\n%\xE2\xE3\xCF\xD3\nxref\n0 4\n0000000000 65535 f \ngarbage here\n"
        "trailer\n<< /Size 4 /Root 3 0 R >>\nstartxref\n999999\n%%EOF\n";
    write_str(path_in(dir, "broken-xref.pdf"), xref);
    /* No xref: Poppler rebuilds it from the "N 0 obj" lines, so object 100000 makes the
     * /Count of 100000 believable; the page tree holds one page, or none. */
    const char *lie =
        "%%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 100000 >>\nendobj\n%s"
        "100000 0 obj\nnull\nendobj\ntrailer\n<< /Size 4 /Root 1 0 R >>\n%%%%EOF\n";
    char buf[1024];
    snprintf(buf, sizeof(buf), lie, "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox "
             "[0 0 612 792] >>\nendobj\n");
    write_str(path_in(dir, "count-lies.pdf"), buf);
    snprintf(buf, sizeof(buf), lie, "");
    write_str(path_in(dir, "count-lies-no-page.pdf"), buf);
}

static void t_pdf_generated(void)
{
    const char *dir = test_tmpdir();
    const char *p = path_in(dir, "g.pdf");
    make_pdf(p, 5, "Generated Title");
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(p, 1 << 30, &buf, &len, &e), SALA_OK);
    wk_limits lim;
    wk_limits_default(&lim);
    for (int shards = 1; shards <= 3; shards++) {
        ing_doc d;
        ing_doc_init(&d);
        CU_ASSERT_EQUAL_FATAL(wk_run("g.pdf", buf, len, pdf_extract, shards, &lim, &d, &e),
                              SALA_OK);
        CU_ASSERT_EQUAL(d.pages, 5);
        CU_ASSERT_EQUAL_FATAL(d.n, 5);
        CU_ASSERT_STRING_EQUAL(d.title, "Generated Title");
        CU_ASSERT_STRING_EQUAL(d.author, "Test Author");
        for (int i = 0; i < 5; i++) {
            char loc[16], want[64];
            snprintf(loc, sizeof(loc), "p. %d", i + 1);
            snprintf(want, sizeof(want), "page %d says %s\nsecond line", i + 1,
                     (i + 1) % 2 ? "odd" : "even");
            CU_ASSERT_STRING_EQUAL(d.segs[i].locator, loc);
            CU_ASSERT_EQUAL(d.segs[i].page, i + 1);
            CU_ASSERT_PTR_NOT_NULL(strstr(d.segs[i].text, want));
        }
        ing_doc_clear(&d);
    }
    free(buf);
}

/* pdf_lib_init: the built-in document that holds Poppler's tables opens (if it did not, every
 * document would rebuild them, pdf.c), a second call is a no-op, and documents extracted one
 * after the other in one process with the tables held come out the same each time. */
static void t_pdf_lib_init(void)
{
    CU_ASSERT_TRUE(pdf_lib_init());
    CU_ASSERT_TRUE(pdf_lib_init());
    const char *p = path_in(test_tmpdir(), "held.pdf");
    make_pdf(p, 3, "Held");
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(p, 1 << 30, &buf, &len, &e), SALA_OK);
    for (int round = 0; round < 3; round++) {
        ing_doc d;
        ing_doc_init(&d);
        CU_ASSERT_EQUAL_FATAL(pdf_extract("held.pdf", buf, len, 0, 1, &d, &e), SALA_OK);
        CU_ASSERT_EQUAL(d.pages, 3);
        CU_ASSERT_EQUAL_FATAL(d.n, 3);
        CU_ASSERT_STRING_EQUAL(d.title, "Held");
        CU_ASSERT_PTR_NOT_NULL(strstr(d.segs[1].text, "page 2 says even"));
        ing_doc_clear(&d);
    }
    free(buf);
}

static void t_pdf_bad(void)
{
    const char *dir = test_tmpdir();
    test_ingest_bad_pdfs(dir);
    struct {
        const char *file;
        int rc;
        const char *msg;
    } cases[] = {
        {"zero-pages.pdf", SALA_EFORMAT, "no pages (corrupt or empty PDF)"},
        {"encrypted.pdf", SALA_EUNSUP, "encrypted, and no password is known"},
        {"broken-xref.pdf", SALA_EFORMAT, "cannot open: "},
        {"count-lies-no-page.pdf", SALA_EFORMAT, "no page can be read (broken page tree)"},
    };
    wk_limits lim;
    wk_limits_default(&lim);
    for (size_t i = 0; i < SALA_ARRAY_LEN(cases); i++) {
        char *buf;
        size_t len;
        sala_err e = {0, ""};
        CU_ASSERT_EQUAL_FATAL(sala_file_read(path_in(dir, cases[i].file), 1 << 20, &buf, &len, &e),
                              SALA_OK);
        ing_doc d;
        ing_doc_init(&d);
        int rc = wk_run(cases[i].file, buf, len, pdf_extract, 1, &lim, &d, &e);
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        CU_ASSERT_EQUAL(strncmp(e.msg, cases[i].msg, strlen(cases[i].msg)), 0);
        if (rc != cases[i].rc || strncmp(e.msg, cases[i].msg, strlen(cases[i].msg)))
            fprintf(stderr, "%s: rc %d: %s\n", cases[i].file, rc, e.msg);
        CU_ASSERT_EQUAL(d.n, 0);
        free(buf);
    }
}

/* A page tree that claims 100,000 pages and holds one: page 1 is read, and the walk stops after
 * a short run of missing pages (pdf.c) instead of visiting the other 99,999 (a fuzzer found
 * such files taking over 10 s under ASan, and millions of claimed pages are possible). */
static void t_pdf_count_lies(void)
{
    const char *dir = test_tmpdir();
    test_ingest_bad_pdfs(dir);
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(path_in(dir, "count-lies.pdf"), 1 << 20, &buf, &len, &e),
                          SALA_OK);
    ing_doc d;
    ing_doc_init(&d);
    CU_ASSERT_EQUAL_FATAL(pdf_extract("count-lies.pdf", buf, len, 0, 1, &d, &e), SALA_OK);
    CU_ASSERT_EQUAL(d.pages, 100000);
    CU_ASSERT_TRUE(d.n >= 1 && d.n <= 100);
    if (d.n >= 1) CU_ASSERT_EQUAL(d.segs[0].page, 1);
    ing_doc_clear(&d);
    free(buf);
}

/* ---- XML ---- */

static int xml_run(const char *xml, ing_doc *d, sala_err *e)
{
    wk_limits lim;
    wk_limits_default(&lim);
    lim.wall_s = 20;
    ing_doc_init(d);
    return wk_run("t.xml", xml, strlen(xml), xml_extract, 1, &lim, d, e);
}

static void t_xml_structure(void)
{
    ing_doc d;
    sala_err e;
    const char *tei =
        "<?xml version=\"1.0\"?>\n<TEI xmlns=\"http://www.tei-c.org/ns/1.0\"><teiHeader>"
        "<fileDesc><titleStmt><title>The  Title</title><author>A. Writer</author></titleStmt>"
        "</fileDesc></teiHeader><text><body><div><p>one</p></div><div><p>two "
        "<hi>bold</hi>ly</p><p>three<lb/>four &amp; &lt;five&gt;</p></div></body></text></TEI>";
    CU_ASSERT_EQUAL_FATAL(xml_run(tei, &d, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(d.title, "The Title");
    CU_ASSERT_STRING_EQUAL(d.author, "A. Writer");
    CU_ASSERT_EQUAL_FATAL(d.n, 5);
    CU_ASSERT_STRING_EQUAL(d.segs[2].locator, "/TEI/text/body/div[1]/p");
    CU_ASSERT_STRING_EQUAL(d.segs[3].locator, "/TEI/text/body/div[2]/p[1]");
    CU_ASSERT_STRING_EQUAL(d.segs[3].text, "two boldly");
    CU_ASSERT_STRING_EQUAL(d.segs[4].locator, "/TEI/text/body/div[2]/p[2]");
    CU_ASSERT_STRING_EQUAL(d.segs[4].text, "three four & <five>");
    ing_doc_clear(&d);
    const char *jats = "<article><front><article-meta><title-group><article-title>On JATS"
                       "</article-title></title-group></article-meta></front><body><sec><p>x"
                       "</p></sec></body></article>";
    CU_ASSERT_EQUAL_FATAL(xml_run(jats, &d, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(d.title, "On JATS");
    ing_doc_clear(&d);
    const char *dbk = "<book xmlns=\"http://docbook.org/ns/docbook\" "
                      "xmlns:x=\"urn:x\"><info><title>DocBook Book</title></info>"
                      "<chapter><para>p1</para><x:note>ns</x:note></chapter></book>";
    CU_ASSERT_EQUAL_FATAL(xml_run(dbk, &d, &e), SALA_OK);
    CU_ASSERT_STRING_EQUAL(d.title, "DocBook Book");
    CU_ASSERT_STRING_EQUAL(d.segs[d.n - 1].locator, "/book/chapter/x:note");
    ing_doc_clear(&d);
    CU_ASSERT_EQUAL(xml_run("<a><b>unclosed</a>", &d, &e), SALA_EFORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "line 1"));
    CU_ASSERT_EQUAL(xml_run("<a/>", &d, &e), SALA_EFORMAT);
    CU_ASSERT_STRING_EQUAL(e.msg, "no text");
}

/* The hostile XML files (also used by the CLI tests); the canary file holds CANARY_TEXT. */
#define CANARY_TEXT "canary-4f1d9b-secret"
void test_ingest_bad_xml(const char *dir);
void test_ingest_bad_xml(const char *dir)
{
    char x[8192];
    write_str(path_in(dir, "canary.secret"), CANARY_TEXT "\n");
    snprintf(x, sizeof(x),
             "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file://%s\">]>\n"
             "<r><p>before &xxe; after</p></r>\n", path_in(dir, "canary.secret"));
    write_str(path_in(dir, "xxe.xml"), x);
    snprintf(x, sizeof(x),
             "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY %% pe SYSTEM \"file://%s\"> %%pe;]>\n"
             "<r><p>param</p></r>\n", path_in(dir, "canary.secret"));
    write_str(path_in(dir, "xxe-param.xml"), x);
    size_t n = (size_t)snprintf(x, sizeof(x), "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n"
                                              "<!ENTITY lol \"lol\">\n");
    for (int i = 1; i <= 9; i++) {
        n += (size_t)snprintf(x + n, sizeof(x) - n, "<!ENTITY lol%d \"", i);
        char prev[8] = "";
        if (i > 1) snprintf(prev, sizeof(prev), "%d", i - 1);
        for (int k = 0; k < 10; k++) n += (size_t)snprintf(x + n, sizeof(x) - n, "&lol%s;", prev);
        n += (size_t)snprintf(x + n, sizeof(x) - n, "\">\n");
    }
    snprintf(x + n, sizeof(x) - n, "]>\n<lolz><p>&lol9;</p></lolz>\n");
    write_str(path_in(dir, "billion-laughs.xml"), x);
    char cmd[4600];
    snprintf(cmd, sizeof(cmd), "head -c 64000000 /dev/zero | gzip -9 > '%s'",
             path_in(dir, "gzip-bomb.xml"));
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
}

static void t_xml_hostile(void)
{
    const char *dir = test_tmpdir();
    test_ingest_bad_xml(dir);
    struct {
        const char *file, *msg;
    } cases[] = {
        {"xxe.xml", "external entity 'xxe' (file://"},
        {"xxe-param.xml", "external entity 'pe' (file://"},
        {"billion-laughs.xml", ""},
        {"gzip-bomb.xml", "line 1: "},
    };
    for (size_t i = 0; i < SALA_ARRAY_LEN(cases); i++) {
        char *buf;
        size_t len;
        sala_err e = {0, ""};
        CU_ASSERT_EQUAL_FATAL(sala_file_read(path_in(dir, cases[i].file), 1 << 30, &buf, &len, &e),
                              SALA_OK);
        wk_limits lim;
        wk_limits_default(&lim);
        ing_doc d;
        ing_doc_init(&d);
        int rc = wk_run(cases[i].file, buf, len, xml_extract, 1, &lim, &d, &e);
        CU_ASSERT_NOT_EQUAL(rc, SALA_OK);
        CU_ASSERT_EQUAL(d.n, 0);
        CU_ASSERT_EQUAL(strncmp(e.msg, cases[i].msg, strlen(cases[i].msg)), 0);
        CU_ASSERT_PTR_NULL(strstr(e.msg, CANARY_TEXT));
        if (strncmp(e.msg, cases[i].msg, strlen(cases[i].msg)))
            fprintf(stderr, "%s: %s\n", cases[i].file, e.msg);
        free(buf);
    }
    /* An external DTD is named but never loaded (no network, no file). */
    ing_doc d;
    sala_err e;
    CU_ASSERT_EQUAL(xml_run("<!DOCTYPE r SYSTEM \"http://127.0.0.1:9/x.dtd\"><r><p>ok</p></r>", &d,
                            &e), SALA_OK);
    CU_ASSERT_EQUAL(d.n, 1);
    ing_doc_clear(&d);
}

void suite_ingest_db(void)
{
    SALA_ADD("ingest_db", {"schema, pragmas, migration counter", t_db_schema},
             {"corpora, documents, segments, tokens, FTS, cascade", t_db_docs});
}

void suite_ingest_text(void)
{
    SALA_ADD("ingest_text", {"decode and binary sniffing", t_text_decode},
             {"code chunks of 60..120 lines", t_text_code},
             {"markdown and text paragraphs", t_text_markdown});
}

void suite_ingest_repo(void)
{
    SALA_ADD("ingest_repo", {"gitignore globs", t_glob},
             {"walk: gitignore, .git, symlinks, order", t_repo_walk});
}

void suite_ingest_worker(void)
{
    SALA_ADD("ingest_worker", {"shards, crash, hang, CPU, cap, no network", t_worker});
}

void suite_ingest_pdf(void)
{
    SALA_ADD("ingest_pdf", {"generated PDF, 1..3 workers", t_pdf_generated},
             {"zero pages, encrypted, broken xref, no readable page", t_pdf_bad},
             {"page count that lies: 100,000 claimed, one held", t_pdf_count_lies},
             {"Poppler's tables held across documents", t_pdf_lib_init});
}

void suite_ingest_xml(void)
{
    SALA_ADD("ingest_xml", {"TEI, JATS, DocBook, paths, namespaces", t_xml_structure},
             {"XXE, billion laughs, gzip bomb, external DTD", t_xml_hostile});
}
