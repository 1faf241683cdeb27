/* test_ingest_cli.c: the ingestion commands end to end, through the sala binary: a batch of
 * hostile and broken files next to good ones (one line each, a rejected row each, the batch
 * completes, integrity_check ok, the XXE canary never stored), re-adding unchanged and changed
 * files, search/grep/show/docs/rm, a worker killed in the middle of a real 2,415-page PDF, and
 * token streams with the real MiniCPM tokenizer. Needs testdata/ (scripts/fetch-testdata, a
 * prerequisite of `make test`) and ../shared/tokenizer; fails, not skips, without them. */
#include "test.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

SALA_SUITE(ingest_cli);

void test_ingest_bad_pdfs(const char *dir);
void test_ingest_bad_xml(const char *dir);

#define CANARY_TEXT "canary-4f1d9b-secret"
#define OUT_CAP (1 << 20)

/* Run `sala ARGS` with SALA_HOME=home; stdout and stderr to files in home; returns exit code. */
static int sala(const char *home, const char *args)
{
    char cmd[20000];
    snprintf(cmd, sizeof(cmd), "SALA_HOME='%s' SALA_TOKENIZER= '%s' %s >'%s/out' 2>'%s/err'", home,
             test_bin(), args, home, home);
    return test_run(cmd, NULL, 0);
}

static char *slurp(const char *home, const char *which)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", home, which);
    char *buf = NULL;
    size_t len;
    if (sala_file_read(p, OUT_CAP, &buf, &len, NULL) != SALA_OK) return strdup("");
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static const char *testdata(const char *rel)
{
    static char buf[4][4096];
    static int slot;
    char *b = buf[slot++ % 4];
    const char *root = getenv("SALA_TESTDATA");
    snprintf(b, sizeof(buf[0]), "%s/%s", root && *root ? root : "testdata", rel);
    if (access(b, R_OK) != 0)
        fprintf(stderr, "\nmissing test data %s: run scripts/fetch-testdata (make test does)\n", b);
    return b;
}

static void t_bad_batch(void)
{
    const char *home = test_tmpdir(), *dir = test_tmpdir();
    char cmd[16384];
    test_ingest_bad_pdfs(dir);
    test_ingest_bad_xml(dir);
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && head -c 100000 /dev/urandom > junk.txt && ln -s loop-b loop-a && "
             "ln -s loop-a loop-b && echo 'you cannot read me' > unreadable.txt && "
             "chmod 000 unreadable.txt && printf 'good text about walruses\\n' > good.txt && "
             "printf '# Good\\n\\nmarkdown about narwhals\\n' > good.md && "
             "chmod 755 '%s' && chmod -R a+rwX '%s' && chmod 000 unreadable.txt",
             dir, home, home);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    /* As root every file is readable: run the batch as nobody so that 'unreadable' is. */
    const char *as = geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
    if (*as) {
        snprintf(cmd, sizeof(cmd), "chmod a+rx \"$(dirname '%s')\" '%s' && chmod a+r '%s'/*.pdf "
                 "'%s'/*.xml '%s'/junk.txt '%s'/good.* '%s'/canary.secret", dir, dir, dir, dir,
                 dir, dir, dir);
        CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    }
    static const char *const files[] = {
        "broken-xref.pdf", "encrypted.pdf", "zero-pages.pdf", "xxe.xml", "xxe-param.xml",
        "billion-laughs.xml", "gzip-bomb.xml", "junk.txt", "loop-a", "unreadable.txt",
        "good.txt", "good.md"};
    static const char *const comps[] = {"pdf", "pdf", "pdf", "xml", "xml", "xml", "xml", "text",
                                        "io", "io"};
    char args[8192];
    size_t n = (size_t)snprintf(args, sizeof(args), "corpus new bad && %s'%s' add bad", as,
                                test_bin());
    const char *as_corpus = as;
    for (size_t i = 0; i < SALA_ARRAY_LEN(files); i++)
        n += (size_t)snprintf(args + n, sizeof(args) - n, " '%s/%s'", dir, files[i]);
    snprintf(cmd, sizeof(cmd), "export SALA_HOME='%s'; %s'%s' %s >'%s/out' 2>'%s/err'", home,
             as_corpus, test_bin(), args, home, home);
    int rc = test_run(cmd, NULL, 0);
    CU_ASSERT_EQUAL(rc, 2);
    char *out = slurp(home, "out"), *err = slurp(home, "err");
    /* Exactly one line per rejected file, `path: component: reason`, in order. */
    CU_ASSERT_EQUAL(count_lines(err), 10);
    const char *line = err;
    for (size_t i = 0; i < SALA_ARRAY_LEN(comps); i++) {
        char want[4600];
        snprintf(want, sizeof(want), "%s/%s: %s: ", dir, files[i], comps[i]);
        CU_ASSERT_EQUAL(strncmp(line, want, strlen(want)), 0);
        if (strncmp(line, want, strlen(want))) fprintf(stderr, "\nwant %s\ngot  %.200s\n", want, line);
        const char *nl = strchr(line, '\n');
        if (!nl) break;
        line = nl + 1;
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "encrypted.pdf: pdf: encrypted, and no password is known"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "zero-pages.pdf: pdf: no pages"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "junk.txt: text: binary"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "loop-a: io: symlink loop"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "unreadable.txt: io: cannot open: Permission denied"));
    CU_ASSERT_PTR_NULL(strstr(err, CANARY_TEXT));
    const char *last = out + strlen(out);
    while (last > out && last[-1] == '\n') last--;
    while (last > out && last[-1] != '\n') last--;
    CU_ASSERT_STRING_EQUAL(last, "2 added, 10 rejected\n");
    free(out);
    free(err);
    /* Rejected rows, the store intact, the canary nowhere in it (db, WAL). */
    CU_ASSERT_EQUAL(sala(home, "docs bad"), 0);
    out = slurp(home, "out");
    int rejected = 0;
    for (const char *p = out; (p = strstr(p, " rejected ")); p++) rejected++;
    CU_ASSERT_EQUAL(rejected, 10);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "[xml: external entity 'xxe'"));
    free(out);
    snprintf(cmd, sizeof(cmd), "sqlite3 '%s/sala.db' 'PRAGMA integrity_check'", home);
    char res[256];
    CU_ASSERT_EQUAL(test_run(cmd, res, sizeof(res)), 0);
    CU_ASSERT_STRING_EQUAL(res, "ok\n");
    snprintf(cmd, sizeof(cmd), "cat '%s'/sala.db* | grep -c '%s'", home, CANARY_TEXT);
    CU_ASSERT_EQUAL(test_run(cmd, res, sizeof(res)), 1); /* grep: no line matched */
    CU_ASSERT_EQUAL(sala(home, "search bad walruses"), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "good.txt  good.txt:1-1"));
    free(out);
}

static void t_readd_and_commands(void)
{
    const char *home = test_tmpdir(), *dir = test_tmpdir();
    char cmd[8192], args[8192];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && mkdir -p repo/src repo/.git && printf 'build/\\n' > repo/.gitignore && "
             "mkdir -p repo/build && echo 'int ignored_symbol;' > repo/build/x.c && "
             "for i in $(seq 1 150); do echo \"int fn_$i(void) { return $i; }\"; done "
             "> repo/src/big.c && printf 'Alpha beta gamma.\\n\\nSecond paragraph.\\n' > "
             "notes.txt", dir);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    CU_ASSERT_EQUAL(sala(home, "corpus new c"), 0);
    CU_ASSERT_EQUAL(sala(home, "corpus new c"), 1);
    snprintf(args, sizeof(args), "add c '%s/repo' '%s/notes.txt'", dir, dir);
    CU_ASSERT_EQUAL(sala(home, args), 0);
    char *out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "added src/big.c (2 segments)"));
    CU_ASSERT_PTR_NULL(strstr(out, "build/x.c"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "3 added, 0 rejected\n"));
    free(out);
    /* Unchanged: nothing happens. */
    CU_ASSERT_EQUAL(sala(home, args), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "0 added, 0 rejected, 3 unchanged\n"));
    free(out);
    /* Changed: replaced, keeping its place; the old text is gone from search. */
    snprintf(cmd, sizeof(cmd), "printf 'Delta epsilon.\\n' > '%s/notes.txt'", dir);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 0);
    CU_ASSERT_EQUAL(sala(home, args), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "replaced notes.txt (1 segments)"));
    free(out);
    CU_ASSERT_EQUAL(sala(home, "search c gamma"), 0);
    out = slurp(home, "out");
    CU_ASSERT_STRING_EQUAL(out, "no match\n");
    free(out);
    CU_ASSERT_EQUAL(sala(home, "docs c"), 0);
    out = slurp(home, "out");
    CU_ASSERT_EQUAL(count_lines(out), 3);
    const char *notes = strstr(out, "notes.txt"), *big = strstr(out, "src/big.c");
    CU_ASSERT(notes && big && big < notes); /* order kept after replace */
    free(out);
    CU_ASSERT_EQUAL(sala(home, "grep c 'fn_1[23]0\\b'"), 0);
    out = slurp(home, "out");
    CU_ASSERT_STRING_EQUAL(out, "src/big.c:120: int fn_120(void) { return 120; }\n"
                                "src/big.c:130: int fn_130(void) { return 130; }\n");
    free(out);
    CU_ASSERT_EQUAL(sala(home, "grep c '('"), 1);
    CU_ASSERT_EQUAL(sala(home, "search c 'fn_150'"), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "src/big.c  src/big.c:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "[fn_150]"));
    free(out);
    CU_ASSERT_EQUAL(sala(home, "show 2 --at src/big.c:140"), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "== src/big.c:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "fn_140(void)"));
    CU_ASSERT_PTR_NULL(strstr(out, "fn_1(void)"));
    free(out);
    CU_ASSERT_EQUAL(sala(home, "show 2 --page 3"), 1);
    CU_ASSERT_EQUAL(sala(home, "show 999"), 1);
    CU_ASSERT_EQUAL(sala(home, "rm 2"), 0);
    CU_ASSERT_EQUAL(sala(home, "search c fn_150"), 0);
    out = slurp(home, "out");
    CU_ASSERT_STRING_EQUAL(out, "no match\n");
    free(out);
    CU_ASSERT_EQUAL(sala(home, "corpus rm c"), 0);
    CU_ASSERT_EQUAL(sala(home, "docs c"), 1);
    CU_ASSERT_EQUAL(sala(home, "corpus list"), 0);
    out = slurp(home, "out");
    CU_ASSERT_STRING_EQUAL(out, "");
    free(out);
}

static void t_worker_killed(void)
{
    const char *home = test_tmpdir(), *dir = test_tmpdir();
    const char *big = testdata("deb/usr/share/R/doc/manual/fullrefman.pdf");
    CU_ASSERT_EQUAL_FATAL(access(big, R_OK), 0);
    char cmd[16384];
    snprintf(cmd, sizeof(cmd), "echo 'after the crash' > '%s/after.txt'", dir);
    CU_ASSERT_EQUAL_FATAL(test_run(cmd, NULL, 0), 0);
    CU_ASSERT_EQUAL(sala(home, "corpus new k"), 0);
    /* Start the batch, wait for a worker (a child of sala), kill it with SIGSEGV. */
    snprintf(cmd, sizeof(cmd),
             "SALA_HOME='%s' '%s' add k '%s' '%s/after.txt' >'%s/out' 2>'%s/err' & p=$!; "
             "w=; for i in $(seq 200); do w=$(pgrep -P $p | head -n 1); [ -n \"$w\" ] && break; "
             "sleep 0.02; done; sleep 0.3; [ -n \"$w\" ] && kill -SEGV $w; wait $p",
             home, test_bin(), big, dir, home, home);
    CU_ASSERT_EQUAL(test_run(cmd, NULL, 0), 2);
    char *err = slurp(home, "err"), *out = slurp(home, "out");
    char want[4600], abs[4096];
    CU_ASSERT_PTR_NOT_NULL_FATAL(realpath(big, abs));
    snprintf(want, sizeof(want), "%s: worker: killed by signal 11 (Segmentation fault)\n", abs);
    CU_ASSERT_STRING_EQUAL(err, want);
    if (strcmp(err, want)) fprintf(stderr, "\ngot %s\n", err);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "added after.txt"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "1 added, 1 rejected"));
    free(err);
    free(out);
    /* A wall-clock timeout also rejects only that file. */
    snprintf(cmd, sizeof(cmd), "add k '%s' --timeout 0.5", big);
    CU_ASSERT_EQUAL(sala(home, cmd), 2);
    err = slurp(home, "err");
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ": worker: timed out after 0.5 s (killed)"));
    free(err);
}

static void t_real_documents(void)
{
    const char *home = test_tmpdir();
    const char *zoo = testdata("deb/usr/lib/R/site-library/zoo/doc");
    const char *tei = testdata("npm/CETEIcean/tutorial_en/fpn-washington.xml");
    const char *tok = test_shared("tokenizer/tokenizer.json");
    CU_ASSERT_EQUAL_FATAL(access(zoo, R_OK), 0);
    CU_ASSERT_EQUAL_FATAL(access(tei, R_OK), 0);
    CU_ASSERT_EQUAL_FATAL(access(tok, R_OK), 0);
    char args[8192];
    CU_ASSERT_EQUAL(sala(home, "corpus new r"), 0);
    /* The zoo package's doc dir: 5 PDF vignettes, their .R/.Rnw sources, demo texts, an HTML
     * index and two binary .rda files (rejected as binary). */
    snprintf(args, sizeof(args), "add r '%s' '%s' --tokenizer '%s'", zoo, tei, tok);
    CU_ASSERT_EQUAL(sala(home, args), 2);
    char *out = slurp(home, "out"), *err = slurp(home, "err");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "added zoo.pdf (30 pages, 30 segments)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "added zoo-faq.pdf (15 pages, 15 segments)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "added fpn-washington.xml ("));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "MSFT.rda: text: binary"));
    CU_ASSERT_EQUAL(count_lines(err), 2);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(sala(home, "docs r"), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"Up From Slavery: An Autobiography: Electronic Edition.\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"zoo FAQ\""));
    free(out);
    CU_ASSERT_EQUAL(sala(home, "search r 'Tuskegee' --limit 1"), 0);
    out = slurp(home, "out");
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "fpn-washington.xml  /TEI/text/body/div"));
    free(out);
    CU_ASSERT_EQUAL(sala(home, "grep r 'rollapply\\(' --limit 1"), 0);
    out = slurp(home, "out");
    CU_ASSERT_EQUAL(count_lines(out), 1);
    free(out);
    /* Every ok segment has a token stream whose spans tile its text. */
    char cmd[8192], res[512];
    snprintf(cmd, sizeof(cmd),
             "sqlite3 '%s/sala.db' \"SELECT count(*) FROM segments s WHERE NOT EXISTS (SELECT 1 "
             "FROM tokens t WHERE t.segment_id = s.id); SELECT count(*) FROM tokens WHERE "
             "length(ids) != 4 * n; SELECT sum(n) > 100000 FROM tokens; "
             "PRAGMA integrity_check;\"", home);
    CU_ASSERT_EQUAL(test_run(cmd, res, sizeof(res)), 0);
    CU_ASSERT_STRING_EQUAL(res, "0\n0\n1\nok\n");
}

void suite_ingest_cli(void)
{
    SALA_ADD("ingest_cli", {"bad-input batch", t_bad_batch},
             {"re-add, replace, search, grep, show, rm", t_readd_and_commands},
             {"worker killed mid-parse, timeout", t_worker_killed},
             {"real PDFs, TEI and tokens", t_real_documents});
}
