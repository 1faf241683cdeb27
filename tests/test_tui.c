/* test_tui.c: the terminal UI. Unit tests of the curses-free parts (sanitizing, widths, lazy
 * wrapping, the line editor, the retrieval backend, the background job), then the real binary
 * driven through tmux on a corpus the test builds with `sala corpus new` + `sala add`:
 * navigation, viewer, search, ask (retrieval mode) with a jump to a citation, hostile bytes,
 * background ingest, a resize matrix, and the refusals without a terminal; then model mode on a
 * tiny random model with the real tokenizer: the corpora screen's tokens and context column
 * (none, valid after the `p` prefill job, STALE after `sala add`), a streamed answer with
 * evidence opening the viewer, the stored question after a restart, a cancel mid-stream with
 * resizes. The tmux server runs on a private socket and is killed at the end; captures are
 * polled with a bounded wait. */
#include "test.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "engine/random_model.h"
#include "ingest/db.h"
#include "ui/ask.h"
#include "ui/job.h"
#include "ui/line.h"
#include "ui/text.h"

SALA_SUITE(tui);

/* ---- unit: text ---- */

static void glyph(const char *s, ui_glyph *g) { ui_glyph_next(s, strlen(s), 0, g); }

static void test_glyph_sanitize(void)
{
    ui_glyph g;
    ui_text_set_utf8(true);
    glyph("\x1b[2J", &g);
    CU_ASSERT(g.esc && !strcmp(g.out, "^[") && g.n == 1 && g.w == 2);
    glyph("\x07", &g);
    CU_ASSERT(g.esc && !strcmp(g.out, "^G"));
    glyph("\x7f", &g);
    CU_ASSERT(g.esc && !strcmp(g.out, "^?"));
    glyph("\xc2\x9b" "31m", &g); /* C1 CSI, UTF-8 encoded */
    CU_ASSERT(g.esc && !strcmp(g.out, "<9B>") && g.n == 2);
    glyph("\xff", &g);
    CU_ASSERT(g.esc && !strcmp(g.out, "\\xff") && g.n == 1);
    glyph("\xe2\x80\xae", &g); /* RIGHT-TO-LEFT OVERRIDE */
    CU_ASSERT(g.esc && !strcmp(g.out, "<U+202E>"));
    glyph("\xe4\xb8\xad", &g); /* CJK */
    CU_ASSERT(!g.esc && g.w == 2 && g.n == 3);
    glyph("\xf0\x9f\x98\x80", &g); /* emoji */
    CU_ASSERT(!g.esc && g.w == 2 && g.n == 4);
    glyph("\xcc\x81", &g); /* COMBINING ACUTE ACCENT */
    CU_ASSERT(!g.esc && g.w == 0);
    glyph("\t", &g);
    CU_ASSERT(g.w == UI_TAB_WIDTH && !strcmp(g.out, "    "));
    CU_ASSERT_EQUAL(ui_text_width("a\xe4\xb8\xad" "e\xcc\x81", 7), 4);
}

/* What may reach the terminal: valid UTF-8, no C0 but none at all, no DEL, no C1. */
static bool terminal_safe(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f) return false;
        if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) return false;
        if (*p < 0x80) p++;
        else if ((*p & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) p += 2;
        else if ((*p & 0xf0) == 0xe0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) p += 3;
        else if ((*p & 0xf8) == 0xf0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
                 (p[3] & 0xc0) == 0x80) p += 4;
        else return false;
    }
    return true;
}

static void test_fit_random_bytes(void)
{
    unsigned seed = 12345;
    char in[200], out[2048];
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(rand_r(&seed) % 200);
        for (size_t i = 0; i < n; i++) {
            int r = rand_r(&seed) % 4;
            in[i] = (char)(r == 0 ? rand_r(&seed) % 32 : r == 1 ? 0x80 + rand_r(&seed) % 64
                                                    : r == 2 ? 0xc2 : 0x20 + rand_r(&seed) % 224);
        }
        int maxw = 1 + rand_r(&seed) % 120;
        int w = ui_text_fit(in, n, maxw, out, sizeof(out));
        if (!terminal_safe(out) || w > maxw || ui_text_width(out, strlen(out)) != w) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* Rows from the forward wrap must be what ui_wrap_row_start finds from any byte inside them,
 * and no row may be wider than the width (unless it is one glyph). */
static void check_wrap(const char *t, size_t len, int width, int *bad)
{
    size_t r = 0;
    int rows = 0;
    while (r < len && rows < 1000000) {
        size_t nx, end = ui_wrap_row(t, len, r, width, &nx);
        if (nx <= r || end > nx) {
            (*bad)++;
            return;
        }
        int w = ui_text_width(t + r, end - r);
        ui_glyph g;
        ui_glyph_next(t, len, r, &g);
        if (w > width && g.n != end - r) (*bad)++;
        /* Every row of short texts; for long ones every 61st row and the rows at anchors
         * (each probe may wrap up to UI_ANCHOR bytes). */
        bool probe = len < 10000 || rows % 61 == 0 || ui_anchor_at_or_before(t, len, r) == r;
        size_t probes[3] = {r, r + (nx - r) / 2, nx - 1};
        for (int k = 0; k < (probe ? 3 : 0); k++)
            if (probes[k] < len && ui_wrap_row_start(t, len, probes[k], width) != r) (*bad)++;
        r = nx;
        rows++;
    }
}

static void test_wrap_lazy_consistent(void)
{
    unsigned seed = 7;
    int bad = 0;
    static const char *const pieces[] = {"word ", "a", "\n", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                         "e\xcc\x81", "\t", "\x1b", "\xff", "long-token-without-space"};
    for (int it = 0; it < 40; it++) {
        size_t cap = it < 4 ? 3 * UI_ANCHOR + 777 : 2000, len = 0;
        char *t = malloc(cap + 32);
        bool single = it % 2 == 0; /* half of them one long line */
        while (len < cap) {
            int k = rand_r(&seed) % 10;
            if (single && k == 2) k = 0;
            size_t n = strlen(pieces[k]);
            memcpy(t + len, pieces[k], n);
            len += n;
        }
        t[len] = 0;
        check_wrap(t, len, 1 + rand_r(&seed) % 100, &bad);
        if (len < 10000) check_wrap(t, len, 1, &bad);
        free(t);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_wrap_words(void)
{
    const char *t = "the quick brown fox jumps";
    size_t nx, end = ui_wrap_row(t, strlen(t), 0, 12, &nx);
    CU_ASSERT_EQUAL(end, 10); /* "the quick " */
    CU_ASSERT_EQUAL(nx, 10);
    end = ui_wrap_row("ab\ncd", 5, 0, 80, &nx);
    CU_ASSERT(end == 2 && nx == 3);
}

/* ---- unit: line editor ---- */

static void test_line_edit(void)
{
    ui_line l;
    ui_line_init(&l);
    const char *s = "h\xc3\xa9llo"; /* héllo */
    ui_line_insert(&l, 'h');
    ui_line_insert(&l, 0xe9);
    ui_line_insert(&l, 'l');
    ui_line_insert(&l, 'l');
    ui_line_insert(&l, 'o');
    ui_line_insert(&l, 0x1b); /* ignored */
    CU_ASSERT_STRING_EQUAL(l.buf, s);
    ui_line_edit(&l, UI_LINE_HOME);
    ui_line_edit(&l, UI_LINE_RIGHT);
    ui_line_edit(&l, UI_LINE_RIGHT);
    CU_ASSERT_EQUAL(l.cur, 3);
    ui_line_edit(&l, UI_LINE_BACKSPACE);
    CU_ASSERT_STRING_EQUAL(l.buf, "hllo");
    ui_line_edit(&l, UI_LINE_KILL_END);
    CU_ASSERT_STRING_EQUAL(l.buf, "h");
    ui_line_set(&l, "one two three");
    ui_line_edit(&l, UI_LINE_KILL_WORD);
    CU_ASSERT_STRING_EQUAL(l.buf, "one two ");
    ui_line_hist_add(&l, "first");
    ui_line_hist_add(&l, "second");
    ui_line_set(&l, "draft");
    ui_line_edit(&l, UI_LINE_HIST_PREV);
    CU_ASSERT_STRING_EQUAL(l.buf, "second");
    ui_line_edit(&l, UI_LINE_HIST_PREV);
    ui_line_edit(&l, UI_LINE_HIST_PREV);
    CU_ASSERT_STRING_EQUAL(l.buf, "first");
    ui_line_edit(&l, UI_LINE_HIST_NEXT);
    ui_line_edit(&l, UI_LINE_HIST_NEXT);
    CU_ASSERT_STRING_EQUAL(l.buf, "draft");
    ui_line_free(&l);
}

/* ---- unit: retrieval backend and background job ---- */

static void test_fts_query(void)
{
    char q[256];
    ask_fts_query("What is the warranty, and who pays?", q, sizeof(q));
    CU_ASSERT_STRING_EQUAL(q, "\"warranty\" OR \"pays\"");
    ask_fts_query("a \" OR ) (", q, sizeof(q));
    CU_ASSERT_STRING_EQUAL(q, "");
}

typedef struct {
    char text[8192];
    int ncite;
    char loc[64];
} sink_got;

static void got_text(void *ud, ask_text_kind k, const char *s, size_t n)
{
    sink_got *g = ud;
    (void)k;
    strncat(g->text, s, SALA_MIN(n, sizeof(g->text) - strlen(g->text) - 1));
}

static void got_cite(void *ud, const ask_cite *c)
{
    sink_got *g = ud;
    if (!g->ncite++) snprintf(g->loc, sizeof(g->loc), "%s", c->locator);
}

static void test_retrieval_backend(void)
{
    const char *dir = test_tmpdir();
    char path[4300];
    snprintf(path, sizeof(path), "%s/r.db", dir);
    db *d = NULL;
    sala_err e = {0, ""};
    int64_t cid, did, sid;
    CU_ASSERT_FATAL(db_open(path, &d, &e) == SALA_OK);
    CU_ASSERT_FATAL(db_corpus_create(d, "c", &cid, &e) == SALA_OK);
    db_doc doc = {.corpus_id = cid, .path = "/x/n.txt", .name = "n.txt", .kind = "text",
                  .sha256 = "00", .pages = -1, .status = "ok", .ingest_version = 1};
    CU_ASSERT_FATAL(db_doc_insert(d, &doc, -1, &did, &e) == SALA_OK);
    db_seg sg = {.doc_id = did, .ordinal = 0, .locator = "n.txt:1-2", .page = -1, .line_first = 1,
                 .line_last = 2, .text = "The zanzibar clause.\nNothing else.", .text_len = 34};
    CU_ASSERT_FATAL(db_seg_insert(d, &sg, &sid, &e) == SALA_OK);
    ask_backend *b = ask_retrieval_new(d, cid, 4);
    CU_ASSERT_FATAL(b != NULL);
    CU_ASSERT(strstr(b->label, "no model configured") != NULL);
    sink_got g = {"", 0, ""};
    ask_sink k = {got_text, got_cite, &g};
    CU_ASSERT(b->start(b, "Where is the zanzibar clause?", &e) == SALA_OK);
    int rc, polls = 0;
    while ((rc = b->poll(b, &k, &e)) == ASK_RUNNING && polls < 100) polls++;
    CU_ASSERT_EQUAL(rc, ASK_DONE);
    CU_ASSERT_EQUAL(g.ncite, 1);
    CU_ASSERT_STRING_EQUAL(g.loc, "n.txt:1-2");
    CU_ASSERT(strstr(g.text, "[1] n.txt, n.txt:1-2") != NULL);
    /* No match: says so, no citation. */
    sink_got g2 = {"", 0, ""};
    k.ud = &g2;
    CU_ASSERT(b->start(b, "quokka", &e) == SALA_OK);
    while (b->poll(b, &k, &e) == ASK_RUNNING) {}
    CU_ASSERT(g2.ncite == 0 && strstr(g2.text, "No passage") != NULL);
    ask_backend_free(b);
    db_close(d);
}

static void test_job_parse_and_cancel(void)
{
    ui_job j;
    ui_job_init(&j);
    ui_job_line(&j, 0, "added notes.txt (1 segments)");
    ui_job_line(&j, 0, "unchanged main.c");
    ui_job_line(&j, 1, "/x/blob.bin: text: binary file");
    ui_job_line(&j, 0, "2 added, 1 rejected");
    CU_ASSERT(j.done == 2 && j.rejected == 1);
    CU_ASSERT_STRING_EQUAL(j.summary, "2 added, 1 rejected");
    /* A child that would run for a minute: cancel reaches it, poll reaps it, no blocking. */
    char *argv[] = {"/bin/sh", "-c", "echo 'added a (1 segments)'; exec sleep 60", NULL};
    sala_err e = {0, ""};
    CU_ASSERT_FATAL(ui_job_start(&j, "add", argv, &e) == SALA_OK);
    double t0 = sala_now();
    while (j.done == 0 && sala_now() - t0 < 5) {
        ui_job_poll(&j);
        usleep(10000);
    }
    CU_ASSERT_EQUAL(j.done, 1);
    CU_ASSERT(j.running);
    ui_job_cancel(&j);
    t0 = sala_now();   /* the cancel gets its own bound: a loaded machine may be slow to start */
    while (j.running && sala_now() - t0 < 20) {
        ui_job_poll(&j);
        usleep(10000);
    }
    CU_ASSERT(!j.running && j.cancelled);
    CU_ASSERT_EQUAL(j.exit_code, 128 + SIGTERM);
    ui_job_free(&j);
}

static void test_job_prefill_parse(void)
{
    ui_job j;
    ui_job_init(&j);
    j.prefill = true;
    ui_job_line(&j, 1, "prefill [#####                         ] 200/1200 tokens  812 tok/s  ETA 1s");
    CU_ASSERT(j.tok_done == 200 && j.tok_total == 1200 && j.tok_per_s == 812 && j.eta == 1);
    ui_job_line(&j, 1, "sala: no model: give --model DIR");
    CU_ASSERT_STRING_EQUAL(j.last, "sala: no model: give --model DIR");
    ui_job_line(&j, 0, "context c: 1200 tokens, 3 documents (0 reused, ...)");
    CU_ASSERT(!strncmp(j.summary, "context c: 1200 tokens", 22));
    CU_ASSERT_EQUAL(j.done, 0);
    /* Its cancel is SIGINT (sala prefill stops between chunks and saves nothing), not SIGTERM:
     * a child that exits 3 on SIGINT only. Started while this process ignores SIGINT, as a TUI
     * run as a background job of a non-interactive shell does: the job must not inherit that
     * (a shell cannot trap a signal ignored on entry). */
    char *argv[] = {"/bin/sh", "-c", "trap 'exit 3' INT; echo ready; while :; do sleep 0.05; done",
                    NULL};
    sala_err e = {0, ""};
    struct sigaction ign, old;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigaction(SIGINT, &ign, &old);
    const int started = ui_job_start(&j, "prefill", argv, &e);
    sigaction(SIGINT, &old, NULL);
    CU_ASSERT_FATAL(started == SALA_OK);
    CU_ASSERT(j.prefill);
    double t0 = sala_now();
    while (strcmp(j.last, "ready") != 0 && sala_now() - t0 < 5) {
        ui_job_poll(&j);
        usleep(10000);
    }
    CU_ASSERT_STRING_EQUAL(j.last, "ready"); /* stderr is a pty, stdout a pipe: both are read */
    ui_job_cancel(&j);
    t0 = sala_now();   /* the cancel gets its own bound: a loaded machine may be slow to start */
    while (j.running && sala_now() - t0 < 20) {
        ui_job_poll(&j);
        usleep(10000);
    }
    CU_ASSERT(!j.running && j.cancelled);
    CU_ASSERT_EQUAL(j.exit_code, 3);
    ui_job_free(&j);
}

/* ---- tmux ---- */

typedef struct {
    char sock[64], dir[4200], db[4300];
    char cap[65536];
} tmx;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return test_run(cmd, NULL, 0);
}

static void tmx_capture(tmx *t)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "tmux -L %s capture-pane -p -t tui 2>/dev/null", t->sock);
    test_run(cmd, t->cap, sizeof(t->cap));
}

/* Poll the pane until it shows every needle (NULL-terminated list), at most 10 s (30 s under
 * sanitizers is not needed: each redraw is milliseconds). */
static bool tmx_wait(tmx *t, const char *const *needles)
{
    double t0 = sala_now();
    while (sala_now() - t0 < 10) {
        tmx_capture(t);
        bool all = true;
        for (int i = 0; needles[i] && all; i++) all = strstr(t->cap, needles[i]) != NULL;
        if (all) return true;
        usleep(20000);
    }
    fprintf(stderr, "\n--- tmux pane, waiting for '%s':\n%s---\n", needles[0], t->cap);
    return false;
}
#define WAIT(t, ...) tmx_wait(t, (const char *const[]){__VA_ARGS__, NULL})

static void keys(tmx *t, const char *k) { sh("tmux -L %s send-keys -t tui %s", t->sock, k); }
static void text(tmx *t, const char *s) { sh("tmux -L %s send-keys -t tui -l '%s'", t->sock, s); }

static void tmx_kill(tmx *t) { sh("tmux -L %s kill-server 2>/dev/null", t->sock); }

/* Start `sala tui ARGS` in a w x h pane; its exit status goes to dir/rc, stderr to dir/err. */
static bool tmx_start(tmx *t, int w, int h, const char *args)
{
    snprintf(t->sock, sizeof(t->sock), "sala-test-%d", (int)getpid());
    sh("rm -f '%s/rc' '%s/err'", t->dir, t->dir);
    int rc = sh("tmux -L %s -f /dev/null new-session -d -s tui -x %d -y %d "
                "\"env LANG=C.UTF-8 LC_ALL=C.UTF-8 SALA_HOME='%s' '%s' tui --db '%s' %s "
                "2>'%s/err'; echo \\$? >'%s/rc'\"",
                t->sock, w, h, t->dir, test_bin(), t->db, args, t->dir, t->dir);
    return rc == 0;
}

/* Wait for the TUI to exit; returns its exit status or -1. */
static int tmx_exit(tmx *t)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/rc", t->dir);
    for (double t0 = sala_now(); sala_now() - t0 < 20; usleep(20000)) {
        FILE *f = fopen(p, "r");
        int rc = -1;
        if (f) {
            int ok = fscanf(f, "%d", &rc);
            fclose(f);
            if (ok == 1) return rc;
        }
    }
    return -1;
}

static char *read_err(tmx *t)
{
    char p[4300], *buf = NULL;
    size_t len;
    snprintf(p, sizeof(p), "%s/err", t->dir);
    if (sala_file_read(p, 1 << 20, &buf, &len, NULL) != SALA_OK) return strdup("(no err file)");
    return buf;
}

static bool sala_cmd(tmx *t, const char *args)
{
    return sh("SALA_HOME='%s' '%s' %s --db '%s' >/dev/null 2>&1", t->dir, test_bin(), args, t->db) <= 2;
}

/* The corpus: a text with a rare word, a C file, a file full of terminal escapes, a file whose
 * name holds an ESC, and a binary file that is rejected; added one by one so the order is known. */
static bool corpus_build(tmx *t)
{
    snprintf(t->dir, sizeof(t->dir), "%s", test_tmpdir());
    snprintf(t->db, sizeof(t->db), "%s/store.db", t->dir);
    char p[4400];
    const char notes[] = "Meeting notes\n\nThe zanzibar clause covers shipping delays.\n"
                         "Payment is due in thirty days.\n";
    const char code[] = "#include <stdio.h>\n\nint main(void)\n{\n    puts(\"hello\");\n    return 0;\n}\n";
    const char evil[] = "before \x1b[2J\x1b]0;pwned\x07 middle \xc2\x9b" "31m after\n"
                        "wide \xe4\xb8\xad\xe6\x96\x87 emoji \xf0\x9f\x98\x80 cafe\xcc\x81\n";
    const char blob[] = "\x7f" "ELF\0\0\0\0binary\0\0\0";
    snprintf(p, sizeof(p), "%s/in", t->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/in/notes.txt", t->dir);
    if (test_write_file(p, notes, sizeof(notes) - 1)) return false;
    snprintf(p, sizeof(p), "%s/in/main.c", t->dir);
    if (test_write_file(p, code, sizeof(code) - 1)) return false;
    snprintf(p, sizeof(p), "%s/in/evil.txt", t->dir);
    if (test_write_file(p, evil, sizeof(evil) - 1)) return false;
    snprintf(p, sizeof(p), "%s/in/esc\x1b[31mname.txt", t->dir);
    if (test_write_file(p, "plain\n", 6)) return false;
    snprintf(p, sizeof(p), "%s/in/blob.bin", t->dir);
    if (test_write_file(p, blob, sizeof(blob) - 1)) return false;
    snprintf(p, sizeof(p), "%s/more", t->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/more/later.md", t->dir);
    if (test_write_file(p, "# Later\n\nAdded from the TUI: quetzal.\n", 37)) return false;
    if (!sala_cmd(t, "corpus new testc")) return false;
    static const char *const files[] = {"notes.txt", "main.c", "evil.txt", "esc*name.txt", "blob.bin"};
    for (size_t i = 0; i < SALA_ARRAY_LEN(files); i++) {
        char a[4600];
        snprintf(a, sizeof(a), "add testc %s/in/%s", t->dir, files[i]);
        if (!sala_cmd(t, a)) return false;
    }
    return true;
}

static bool have_tmux(void)
{
    if (test_run("tmux -V", NULL, 0) == 0) return true;
    fprintf(stderr, "tmux is not installed (scripts/setup installs it): the TUI tests fail\n");
    return false;
}

static void test_tui_session(void)
{
    static tmx t;
    CU_ASSERT_FATAL(have_tmux());
    CU_ASSERT_FATAL(corpus_build(&t));
    CU_ASSERT_FATAL(tmx_start(&t, 80, 24, ""));
    /* Corpora: title, column headers, the corpus row with 4 documents and 1 rejected. */
    CU_ASSERT(WAIT(&t, "sala \xe2\x80\xba Corpora", "CORPUS", "DOCS", "REJECTED", "CONTEXT"));
    CU_ASSERT(strstr(t.cap, "testc") != NULL);
    CU_ASSERT(WAIT(&t, "Enter documents"));
    /* Help overlay. */
    keys(&t, "?");
    CU_ASSERT(WAIT(&t, "Keys everywhere", "cancel the background job"));
    keys(&t, "Space");
    /* Documents: status, pages, the rejected file with its reason. */
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "Documents \xe2\x80\xba testc", "DOCUMENT", "STATUS", "notes.txt", "main.c",
                   "rejected"));
    CU_ASSERT(strstr(t.cap, "esc^[[31mname.txt") != NULL); /* the ESC of the name, shown escaped */
    /* The viewer: main.c with line numbers and its locator. */
    keys(&t, "j Enter");
    CU_ASSERT(WAIT(&t, "Viewer \xe2\x80\xba main.c", "main.c:1-", "3 int main(void)"));
    keys(&t, "q");
    /* Hostile bytes: shown escaped, never interpreted (the screen was not cleared either). */
    keys(&t, "j Enter");
    CU_ASSERT(WAIT(&t, "Viewer \xe2\x80\xba evil.txt", "before ^[[2J^[]0;pwned^G middle <9B>31m after"));
    CU_ASSERT(strstr(t.cap, "wide \xe4\xb8\xad\xe6\x96\x87 emoji") != NULL);
    keys(&t, "q");
    /* Search (FTS5), Enter opens the source at the hit. */
    keys(&t, "/");
    CU_ASSERT(WAIT(&t, "Search \xe2\x80\xba testc", "fts:"));
    text(&t, "zanzibar");
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "1 result for zanzibar", "notes.txt"));
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "Viewer \xe2\x80\xba notes.txt", "highlight: zanzibar", "The zanzibar clause"));
    keys(&t, "q");
    /* Regex mode. */
    keys(&t, "/ C-u C-t");
    text(&t, "pay[a-z]+ is");
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "regex:", "1 result for pay[a-z]+ is", "notes.txt"));
    keys(&t, "Escape");
    /* Ask in retrieval mode: the label, the passage, the evidence; Enter on it opens the source. */
    keys(&t, "a");
    CU_ASSERT(WAIT(&t, "Ask \xe2\x80\xba testc", "ask:", "Evidence (0)", "Earlier questions (0)"));
    text(&t, "Which clause covers zanzibar shipping?");
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "retrieval mode \xe2\x80\x94 no model configured", "[1] notes.txt",
                   "Evidence (1)", "Earlier questions (1)"));
    keys(&t, "Tab Tab Enter");
    CU_ASSERT(WAIT(&t, "Viewer \xe2\x80\xba notes.txt", "notes.txt:1-", "zanzibar clause"));
    keys(&t, "q");
    /* History on the question line. */
    keys(&t, "Tab Tab Up");
    CU_ASSERT(WAIT(&t, "ask: Which clause covers zanzibar shipping?"));
    keys(&t, "Escape");
    /* Background ingest from the documents screen; the list reloads when it ends. */
    keys(&t, "i");
    CU_ASSERT(WAIT(&t, "add path(s):"));
    char more[4400];
    snprintf(more, sizeof(more), "%s/more", t.dir);
    text(&t, more);
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "add finished: 1 added, 0 rejected", "later.md"));
    /* Resize matrix: no crash, and 20x5 still shows where we are. */
    static const int sizes[][2] = {{1, 1}, {20, 5}, {250, 80}, {2, 2}, {80, 24}};
    for (size_t i = 0; i < SALA_ARRAY_LEN(sizes); i++) {
        sh("tmux -L %s resize-window -t tui -x %d -y %d", t.sock, sizes[i][0], sizes[i][1]);
        keys(&t, "j");
        if (sizes[i][0] == 20) CU_ASSERT(WAIT(&t, "sala \xe2\x80\xba Docum"));
        if (sizes[i][0] == 250) CU_ASSERT(WAIT(&t, "REASON / TITLE"));
    }
    CU_ASSERT(WAIT(&t, "Documents \xe2\x80\xba testc", "DOCUMENT"));
    /* Small-terminal ask and viewer, then quit through every screen. */
    sh("tmux -L %s resize-window -t tui -x 20 -y 5", t.sock);
    keys(&t, "a");
    CU_ASSERT(WAIT(&t, "ask:"));
    keys(&t, "Escape Escape Escape");
    CU_ASSERT_EQUAL(tmx_exit(&t), 0);
    char *err = read_err(&t);
    CU_ASSERT_STRING_EQUAL(err, "");
    if (*err) fprintf(stderr, "tui stderr:\n%s\n", err);
    free(err);
    tmx_kill(&t);
}

static void test_tui_open_corpus_and_small(void)
{
    static tmx t;
    CU_ASSERT_FATAL(have_tmux());
    CU_ASSERT_FATAL(corpus_build(&t));
    /* Started at 1x1 (nothing fits, nothing crashes), grown to 20x5: usable. */
    CU_ASSERT_FATAL(tmx_start(&t, 1, 1, "testc"));
    usleep(200000);
    keys(&t, "j k Enter q");
    sh("tmux -L %s resize-window -t tui -x 20 -y 5", t.sock);
    CU_ASSERT(WAIT(&t, "sala \xe2\x80\xba Docum", "DOCUMENT"));
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "Viewer"));
    keys(&t, "C-c");
    CU_ASSERT_EQUAL(tmx_exit(&t), 0);
    tmx_kill(&t);
    /* A corpus that does not exist: a message and exit 1, terminal restored (never opened). */
    CU_ASSERT_FATAL(tmx_start(&t, 80, 24, "nosuch"));
    CU_ASSERT_EQUAL(tmx_exit(&t), 1);
    char *err = read_err(&t);
    CU_ASSERT(strstr(err, "nosuch") != NULL);
    free(err);
    tmx_kill(&t);
}

static void test_tui_no_terminal(void)
{
    char out[4096], cmd[4600];
    const char *dir = test_tmpdir();
    snprintf(cmd, sizeof(cmd), "TERM=xterm '%s' tui --db '%s/x.db' </dev/null", test_bin(), dir);
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 1);
    CU_ASSERT(strstr(out, "standard input is not a terminal") != NULL);
    CU_ASSERT(strchr(out, '\x1b') == NULL); /* no escape sequence was written */
    snprintf(cmd, sizeof(cmd), "TERM=xterm '%s' tui --db '%s/x.db' >/dev/null", test_bin(), dir);
    CU_ASSERT_EQUAL(test_run(cmd, out, sizeof(out)), 1);
    /* TERM unset and dumb, on a real terminal (tmux). */
    CU_ASSERT_FATAL(have_tmux());
    static tmx t;
    snprintf(t.dir, sizeof(t.dir), "%s", dir);
    snprintf(t.db, sizeof(t.db), "%s/x.db", dir);
    static const char *const terms[] = {"TERM=dumb", "-u TERM"};
    for (int i = 0; i < 2; i++) {
        snprintf(t.sock, sizeof(t.sock), "sala-test-%d", (int)getpid());
        sh("rm -f '%s/rc'", t.dir);
        sh("tmux -L %s -f /dev/null new-session -d -s tui -x 80 -y 24 "
           "\"env %s '%s' tui --db '%s' 2>'%s/err'; echo \\$? >'%s/rc'\"",
           t.sock, terms[i], test_bin(), t.db, t.dir, t.dir);
        CU_ASSERT_EQUAL(tmx_exit(&t), 1);
        char *err = read_err(&t);
        CU_ASSERT(strstr(err, i == 0 ? "TERM=dumb" : "TERM is not set") != NULL);
        free(err);
        tmx_kill(&t);
    }
}

/* ---- tmux: model mode ---- */

static bool write_words(const char *path, unsigned seed, int n)
{
    static const char *const w[] = {"contract", "licence", "party", "shall", "warranty", "zebra",
                                    "giraffe", "keeper", "river", "the", "of", "and", "notice",
                                    "penguin", "habitat", "clause", "visitor", "enclosure"};
    FILE *f = fopen(path, "w");
    if (!f) return false;
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        fprintf(f, "%s%s", w[(seed >> 16) % SALA_ARRAY_LEN(w)], i % 12 == 11 ? ".\n" : " ");
    }
    return fclose(f) == 0;
}

/* The row of the pane that holds s, or "" (into t->cap's own storage: a copy). */
static void pane_row(const tmx *t, const char *s, char *out, size_t cap)
{
    const char *p = strstr(t->cap, s);
    out[0] = 0;
    if (!p) return;
    const char *b = p;
    while (b > t->cap && b[-1] != '\n') b--;
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - b) : strlen(b);
    snprintf(out, cap, "%.*s", (int)SALA_MIN(n, cap - 1), b);
}

static bool model_corpus_build(tmx *t, char *model, size_t cap, long long *tokens)
{
    snprintf(t->dir, sizeof(t->dir), "%s", test_tmpdir());
    snprintf(t->db, sizeof(t->db), "%s/store.db", t->dir);
    char p[4400], a[20000];
    snprintf(model, cap, "%s/tiny-model", t->dir);
    sala_err e;
    /* the toy configuration `make demo` uses (2 sparse layers, dense_len 256: evidence) */
    if (eng_random_model_write("samples/models/tiny-random.json", model, 3,
                               test_shared("tokenizer/tokenizer.json"), &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return false;
    }
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/zoo%d.txt", t->dir, i);
        if (!write_words(p, (unsigned)i + 11, 300)) return false;
    }
    snprintf(p, sizeof(p), "%s/late.txt", t->dir);
    if (!write_words(p, 99, 80)) return false;
    if (!sala_cmd(t, "corpus new zoo")) return false;
    snprintf(a, sizeof(a), "SALA_TOKENIZER='%s' '%s' add --db '%s' zoo '%s/zoo0.txt' "
             "'%s/zoo1.txt' '%s/zoo2.txt' >/dev/null 2>&1", test_shared("tokenizer/tokenizer.json"),
             test_bin(), t->db, t->dir, t->dir, t->dir);
    if (sh("%s", a)) return false;
    snprintf(a, sizeof(a), "corpus model zoo '%s'", model);
    if (!sala_cmd(t, a)) return false;
    /* The token count the corpora screen must show, straight from the table. */
    sqlite3 *h;
    sqlite3_stmt *st;
    *tokens = -1;
    if (sqlite3_open(t->db, &h) != SQLITE_OK) return false;
    if (sqlite3_prepare_v2(h, "SELECT SUM(n) FROM tokens", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) *tokens = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return *tokens > 0;
}

static void test_tui_model(void)
{
    static tmx t;
    char model[4400], row[1024], num[32];
    long long tokens;
    CU_ASSERT_FATAL(have_tmux());
    CU_ASSERT_FATAL(model_corpus_build(&t, model, sizeof(model), &tokens));
    CU_ASSERT_FATAL(tmx_start(&t, 100, 30, "--max-tokens 40"));
    /* Corpora: real token count, no context yet. */
    CU_ASSERT(WAIT(&t, "CONTEXT", "zoo"));
    pane_row(&t, " zoo ", row, sizeof(row));
    snprintf(num, sizeof(num), " %lld ", tokens);
    CU_ASSERT(strstr(row, num) != NULL && strstr(row, "none") != NULL);
    /* Ask before any prefill: model mode says there is no context and offers p. */
    keys(&t, "a");
    CU_ASSERT(WAIT(&t, "Ask \xe2\x80\xba zoo", "model tiny-model", "No cached context", "press p"));
    /* p: the prefill job; when it ends the ask screen has a valid context. */
    keys(&t, "p");
    CU_ASSERT(WAIT(&t, "prefill finished: context zoo"));
    CU_ASSERT(WAIT(&t, "Type a question"));
    keys(&t, "i");
    text(&t, "Who feeds the penguin?");
    keys(&t, "Enter");
    /* The answer: streamed text under the question, then evidence; stored (earlier questions). */
    CU_ASSERT(WAIT(&t, "Earlier questions (1)", "Evidence (", "zoo", ".txt:1-"));
    CU_ASSERT(strstr(t.cap, "Evidence (0)") == NULL);
    CU_ASSERT(strstr(t.cap, "(streaming)") == NULL);
    {   /* the row two below the question holds generated text */
        const char *q = strstr(t.cap, "Who feeds the penguin?");
        const char *r2 = q ? strchr(q, '\n') : NULL;
        r2 = r2 ? strchr(r2 + 1, '\n') : NULL;
        int nonblank = 0;
        for (int i = 1; r2 && r2[i] && r2[i] != '\n' && i < 40; i++) nonblank += r2[i] != ' ';
        CU_ASSERT(nonblank > 5);
    }
    /* Enter on the first evidence row opens the viewer at its locator. */
    keys(&t, "Tab Tab Enter");
    CU_ASSERT(WAIT(&t, "Viewer \xe2\x80\xba zoo", ".txt:1-"));
    keys(&t, "q Escape");
    /* Corpora: the context is valid now. */
    CU_ASSERT(WAIT(&t, "sala \xe2\x80\xba Corpora", "valid"));
    keys(&t, "q");
    CU_ASSERT_EQUAL(tmx_exit(&t), 0);
    char *err = read_err(&t);
    CU_ASSERT_STRING_EQUAL(err, "");
    free(err);
    tmx_kill(&t);

    /* Restart with long answers: the question is in the stored history; cancel mid-stream,
     * resizing while it streams. */
    CU_ASSERT_FATAL(tmx_start(&t, 100, 30, "zoo --max-tokens 4000"));
    CU_ASSERT(WAIT(&t, "Documents \xe2\x80\xba zoo"));
    keys(&t, "a");
    CU_ASSERT(WAIT(&t, "Earlier questions (1)", "Who feeds the penguin?"));
    text(&t, "Where is the river habitat?");
    keys(&t, "Enter");
    CU_ASSERT(WAIT(&t, "(streaming)"));
    static const int sizes[][2] = {{30, 8}, {1, 1}, {160, 50}, {60, 12}, {100, 30}};
    for (size_t i = 0; i < SALA_ARRAY_LEN(sizes); i++) {
        sh("tmux -L %s resize-window -t tui -x %d -y %d", t.sock, sizes[i][0], sizes[i][1]);
        usleep(100000);
    }
    CU_ASSERT(WAIT(&t, "(streaming)", "Where is the river habitat?"));
    keys(&t, "C-g");
    CU_ASSERT(WAIT(&t, "[stopped]"));
    CU_ASSERT(strstr(t.cap, "(streaming)") == NULL);
    CU_ASSERT(strstr(t.cap, "Earlier questions (1)") != NULL); /* a cancelled answer is not stored */
    /* A new file: the context is stale. */
    char a[9000];
    snprintf(a, sizeof(a), "add zoo '%s/late.txt'", t.dir);
    CU_ASSERT(sala_cmd(&t, a));
    keys(&t, "Escape Escape");
    CU_ASSERT(WAIT(&t, "sala \xe2\x80\xba Corpora"));
    keys(&t, "r");
    CU_ASSERT(WAIT(&t, "STALE"));
    keys(&t, "q");
    CU_ASSERT_EQUAL(tmx_exit(&t), 0);
    err = read_err(&t);
    CU_ASSERT_STRING_EQUAL(err, "");
    if (*err) fprintf(stderr, "tui stderr:\n%s\n", err);
    free(err);
    tmx_kill(&t);
}

void suite_tui(void)
{
    SALA_ADD("tui", {"glyph sanitize and widths", test_glyph_sanitize},
             {"fit: random bytes stay terminal-safe", test_fit_random_bytes},
             {"wrap: lazy row starts match the forward wrap", test_wrap_lazy_consistent},
             {"wrap: words and newlines", test_wrap_words}, {"line editor", test_line_edit},
             {"retrieval query words", test_fts_query},
             {"retrieval backend on a real store", test_retrieval_backend},
             {"background job: parse, cancel", test_job_parse_and_cancel},
             {"prefill job progress lines", test_job_prefill_parse},
             {"tmux: full session", test_tui_session},
             {"tmux: corpus argument, 1x1, 20x5", test_tui_open_corpus_and_small},
             {"no terminal, TERM unset or dumb", test_tui_no_terminal},
             {"tmux: model mode (prefill, stream, evidence, history, cancel, stale)", test_tui_model});
}
