/* cmd_add.c: `sala add CORPUS PATH...`: ingest files and directories (ingest/ingest.h).
 * On a terminal, stderr shows a progress bar (files/s, pages/s, ETA); otherwise stdout gets one
 * line per file. Rejections are always one line `path: component: reason` on stderr; the last
 * line on stdout is `N added, M rejected`. Exit code 2 when anything was rejected. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/db.h"
#include "ingest/ingest.h"
#include "ingest/tokenizer.h"

SALA_COMMAND(add, "add files and directories to a corpus");

const char cmd_add_usage[] =
    "usage: sala add CORPUS PATH... [options]\n\n"
    "Adds files (PDF, XML, Markdown, text, source code) and directories (walked recursively,\n"
    "honouring .gitignore) to CORPUS. An unchanged file is skipped; a changed one replaces its\n"
    "old version. A file that cannot be read or parsed is recorded as rejected, with a line\n"
    "'path: component: reason' on stderr, and the batch goes on.\n\n"
    "options:\n"
    "  --db FILE          the store (default $SALA_HOME/sala.db, else $XDG_DATA_HOME/sala/sala.db)\n"
    "  --tokenizer PATH   tokenizer.json, or a model directory holding one, to store token\n"
    "                     streams too (default $SALA_TOKENIZER; without one only text is stored,\n"
    "                     and a later 'sala add CORPUS --tokenizer PATH' adds the missing streams)\n"
    "  --max-size BYTES   largest text or code file (default 2M; suffixes K, M, G)\n"
    "  --jobs N           worker processes for one large PDF (default 2)\n"
    "  --timeout SECONDS  wall-clock limit per file (default 300)\n"
    "  --no-progress      plain lines even on a terminal\n"
    "  --stats            print time per stage at the end\n"
    "exit codes: 0 all added, 1 usage or input error, 2 some files rejected, 3 internal error\n";

typedef struct {
    bool bar;
    size_t last_len;
    double last_draw;
} progress;

static void bar_clear(progress *p)
{
    if (p->bar && p->last_len) {
        fprintf(stderr, "\r%*s\r", (int)p->last_len, "");
        p->last_len = 0;
    }
}

static void bar_draw(progress *p, const ing_event *ev)
{
    double t = ev->elapsed > 1e-6 ? ev->elapsed : 1e-6;
    double fps = (double)ev->done / t, pps = (double)ev->pages_total / t;
    double eta = fps > 0 ? (double)(ev->total - ev->done) / fps : 0;
    int width = 24, fill = ev->total ? (int)((double)width * (double)ev->done / (double)ev->total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    char line[256];
    int n = snprintf(line, sizeof(line), "[%s] %zu/%zu files  %.1f files/s  %.0f pages/s  ETA %d:%02d",
                     bar, ev->done, ev->total, fps, pps, (int)eta / 60, (int)eta % 60);
    if (n < 0) return;
    size_t len = strlen(line);
    fprintf(stderr, "\r%s", line);
    if (len < p->last_len) fprintf(stderr, "%*s", (int)(p->last_len - len), "");
    fflush(stderr);
    p->last_len = len;
    p->last_draw = ev->elapsed;
}

static void on_event(const ing_event *ev, void *ud)
{
    progress *p = ud;
    if (ev->outcome == ING_REJECTED) {
        bar_clear(p);
        fprintf(stderr, "%s: %s: %s\n", ev->path, ev->component, ev->reason);
    } else if (!p->bar && ev->outcome != ING_PLANNED) {
        const char *what = ev->outcome == ING_ADDED ? "added"
                           : ev->outcome == ING_REPLACED ? "replaced"
                           : ev->outcome == ING_UNCHANGED ? "unchanged" : "tokenized";
        if (ev->outcome == ING_TOKENIZED)
            printf("tokenized document %zu/%zu (%lld segments)\n", ev->done, ev->total,
                   (long long)ev->segments);
        else if (ev->pages > 0)
            printf("%s %s (%lld pages, %lld segments)\n", what, ev->name, (long long)ev->pages,
                   (long long)ev->segments);
        else if (ev->outcome == ING_UNCHANGED)
            printf("%s %s\n", what, ev->name);
        else
            printf("%s %s (%lld segments)\n", what, ev->name, (long long)ev->segments);
        fflush(stdout);
    }
    if (p->bar && (ev->done == ev->total || ev->elapsed - p->last_draw > 0.1 ||
                   ev->outcome == ING_REJECTED))
        bar_draw(p, ev);
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (end == s || v < 0) return -1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (*end || v * mul > 1e15) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

/* --tokenizer PATH: a tokenizer.json, or a directory holding one. */
static int tokenizer_path(const char *arg, char *buf, size_t cap)
{
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        int n = snprintf(buf, cap, "%s/tokenizer.json", arg);
        return n < 0 || (size_t)n >= cap ? -1 : 0;
    }
    int n = snprintf(buf, cap, "%s", arg);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int cmd_add(int argc, char **argv)
{
    enum { O_DB = 1000, O_TOK, O_MAX, O_JOBS, O_TIMEOUT, O_NOPROG, O_STATS };
    static const struct option longopts[] = {
        {"db", required_argument, NULL, O_DB},       {"tokenizer", required_argument, NULL, O_TOK},
        {"max-size", required_argument, NULL, O_MAX}, {"jobs", required_argument, NULL, O_JOBS},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"no-progress", no_argument, NULL, O_NOPROG}, {"stats", no_argument, NULL, O_STATS},
        {0}};
    const char *dbopt = NULL, *tokarg = getenv("SALA_TOKENIZER");
    bool noprog = false, stats = false;
    ing_opts o;
    ing_opts_default(&o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case O_DB: dbopt = optarg; break;
        case O_TOK: tokarg = optarg; break;
        case O_MAX:
            if (parse_size(optarg, &o.max_text_bytes)) {
                app_errorf("add: bad --max-size '%s'", optarg);
                return EXIT_USER;
            }
            break;
        case O_JOBS:
            o.jobs = (int)strtol(optarg, &end, 10);
            if (*end || o.jobs < 1 || o.jobs > 16) {
                app_errorf("add: --jobs wants 1..16, not '%s'", optarg);
                return EXIT_USER;
            }
            break;
        case O_TIMEOUT:
            o.limits.wall_s = strtod(optarg, &end);
            if (*end || !(o.limits.wall_s > 0)) {
                app_errorf("add: bad --timeout '%s'", optarg);
                return EXIT_USER;
            }
            if (o.limits.cpu_s > (int)o.limits.wall_s + 1) o.limits.cpu_s = (int)o.limits.wall_s + 1;
            break;
        case O_NOPROG: noprog = true; break;
        case O_STATS: stats = true; break;
        default:
            fputs(cmd_add_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs < 1 || (nargs < 2 && !(tokarg && *tokarg))) {
        fputs(cmd_add_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    tok_tokenizer *tok = NULL;
    char tokpath[4096];
    int rc = SALA_OK;
    ing_stats st = {0};
    if (tokarg && *tokarg) {
        if (tokenizer_path(tokarg, tokpath, sizeof(tokpath))) {
            app_errorf("add: tokenizer path too long");
            return EXIT_USER;
        }
        if ((rc = tok_load(tokpath, &tok, &e))) goto fail;
        o.tok = tok;
        o.tok_path = tokpath;
    }
    if ((rc = db_open_resolved(dbopt, &d, &e))) goto fail;
    progress p = {.bar = !noprog && isatty(2)};
    rc = ing_add(d, args[0], (const char *const *)args + 1, (size_t)nargs - 1, &o, on_event, &p,
                 &st, &e);
    bar_clear(&p);
    if (rc) goto fail;
    if (tok) {
        /* Documents stored earlier without tokens (or with another tokenizer) get them now. */
        ing_stats ts;
        rc = ing_tokenize_missing(d, args[0], &o, on_event, &p, &ts, &e);
        bar_clear(&p);
        if (rc) goto fail;
        st.tokens += ts.tokens;
        st.t_tokenize += ts.t_tokenize;
        st.t_store += ts.t_store;
    }
    printf("%zu added, %zu rejected", st.added + st.replaced, st.rejected);
    if (st.replaced) printf(", %zu replaced", st.replaced);
    if (st.unchanged) printf(", %zu unchanged", st.unchanged);
    printf("\n");
    if (stats)
        printf("%lld pages, %lld segments, %lld tokens, %.1f MB read; time: read %.2f s, "
               "extract %.2f s, tokenize %.2f s, store %.2f s\n",
               (long long)st.pages, (long long)st.segments, (long long)st.tokens,
               (double)st.bytes / 1e6, st.t_read, st.t_extract, st.t_tokenize, st.t_store);
fail:
    if (rc) app_errorf("add: %s", e.msg);
    db_close(d);
    tok_free(tok);
    if (rc) return app_exit_code(rc);
    return st.rejected ? EXIT_PARTIAL : EXIT_OK;
}
