/* cmd_grep.c: `sala grep CORPUS REGEX`: PCRE2 (JIT) over the stored text, one line per
 * matching line with its locator. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "ingest/db.h"

SALA_COMMAND(grep, "regular-expression search over the stored text of a corpus");

const char cmd_grep_usage[] =
    "usage: sala grep CORPUS REGEX [-i] [--limit N] [--db FILE]\n\n"
    "Prints every line of the stored text of CORPUS that REGEX (PCRE2 syntax, UTF-8) matches,\n"
    "with its locator: 'src/x.c:130' for code and text, 'name: p. 12' for PDF pages,\n"
    "'name: /TEI/text/body/div[2]/p[5]' for XML elements.\n\n"
    "options:\n"
    "  -i          ignore case\n"
    "  --limit N   stop after N lines (default: no limit)\n";

typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
    long long limit, shown;
    sala_err *e;
} grep_st;

static void print_line(const db_seg *s, size_t ls, size_t le)
{
    if (s->line_first >= 0) {
        long long line = s->line_first;
        for (size_t i = 0; i < ls; i++) line += s->text[i] == '\n';
        const char *colon = strrchr(s->locator, ':');
        int namelen = colon ? (int)(colon - s->locator) : (int)strlen(s->locator);
        printf("%.*s:%lld: ", namelen, s->locator, line);
    } else {
        printf("%s: %s: ", s->doc_name ? s->doc_name : "?", s->locator);
    }
    size_t n = le - ls;
    if (n > 300) n = 300;
    for (size_t i = 0; i < n; i++) {
        char c = s->text[ls + i];
        putchar(c == '\t' || c == '\r' ? ' ' : c);
    }
    if (le - ls > n) fputs("...", stdout);
    putchar('\n');
}

static int grep_seg(const db_seg *s, void *ud)
{
    grep_st *g = ud;
    size_t at = 0;
    while (at <= s->text_len) {
        int r = pcre2_match(g->re, (PCRE2_SPTR)s->text, s->text_len, at, 0, g->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof(msg));
            return sala_errf(g->e, SALA_EINVAL, "%s %s: match failed: %s",
                             s->doc_name ? s->doc_name : "?", s->locator, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(g->md);
        size_t ms = ov[0], ls = ms, le = ms;
        while (ls > 0 && s->text[ls - 1] != '\n') ls--;
        while (le < s->text_len && s->text[le] != '\n') le++;
        print_line(s, ls, le);
        if (g->limit > 0 && ++g->shown >= g->limit) return 1;
        at = le + 1; /* next line: one output line per matching line */
    }
    return 0;
}

int cmd_grep(int argc, char **argv)
{
    static const struct option longopts[] = {{"db", required_argument, NULL, 'd'},
                                             {"limit", required_argument, NULL, 'n'},
                                             {0}};
    const char *dbopt = NULL;
    long long limit = 0;
    uint32_t flags = PCRE2_UTF | PCRE2_MULTILINE | PCRE2_UCP;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hi", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd': dbopt = optarg; break;
        case 'i': flags |= PCRE2_CASELESS; break;
        case 'n':
            limit = strtoll(optarg, &end, 10);
            if (*end || limit <= 0) {
                app_errorf("grep: bad --limit '%s'", optarg);
                return EXIT_USER;
            }
            break;
        default:
            fputs(cmd_grep_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    if (argc - optind != 2) {
        fputs(cmd_grep_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    int64_t cid;
    int errcode;
    PCRE2_SIZE erroff;
    grep_st g = {.limit = limit, .e = &e};
    int rc = SALA_OK;
    g.re = pcre2_compile((PCRE2_SPTR)argv[optind + 1], PCRE2_ZERO_TERMINATED, flags, &errcode,
                         &erroff, NULL);
    if (!g.re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        rc = sala_errf(&e, SALA_EINVAL, "bad regular expression at offset %zu: %s",
                       (size_t)erroff, (char *)msg);
        goto fail;
    }
    pcre2_jit_compile(g.re, PCRE2_JIT_COMPLETE); /* without JIT it still works, slower */
    g.md = pcre2_match_data_create_from_pattern(g.re, NULL);
    if (!g.md) {
        rc = sala_errf(&e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    rc = db_open_resolved(dbopt, &d, &e);
    if (rc == SALA_OK) rc = db_corpus_find(d, argv[optind], &cid, &e);
    if (rc == SALA_OK) rc = db_seg_scan(d, cid, grep_seg, &g, &e);
    if (rc == 1) rc = SALA_OK; /* --limit reached */
fail:
    if (rc) app_errorf("grep: %s", e.msg);
    pcre2_match_data_free(g.md);
    pcre2_code_free(g.re);
    db_close(d);
    if (rc == SALA_OK && g.shown == 0 && limit == 0) return EXIT_OK;
    return app_exit_code(rc);
}
