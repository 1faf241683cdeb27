/* cmd_search.c: `sala search CORPUS QUERY`: full-text search (SQLite FTS5, bm25 ranking). */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/db.h"

SALA_COMMAND(search, "full-text search in a corpus");

const char cmd_search_usage[] =
    "usage: sala search CORPUS QUERY... [--limit N] [--raw] [--db FILE]\n\n"
    "Finds the segments that contain every word of QUERY, best first (bm25), and prints each\n"
    "with its document, locator and a snippet with the matches in [brackets].\n\n"
    "options:\n"
    "  --limit N   at most N results (default 20)\n"
    "  --raw       QUERY is an FTS5 query as it stands (\"phrase\", OR, NOT, NEAR(), prefix*)\n";

static int print_hit(const db_hit *h, void *ud)
{
    int *n = ud;
    (*n)++;
    printf("%s  %s  (doc %lld)\n    ", h->doc_name, h->locator, (long long)h->doc_id);
    /* One line per hit: fold the snippet's newlines. */
    for (const char *p = h->snippet ? h->snippet : ""; *p; p++)
        putchar(*p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p);
    putchar('\n');
    return 0;
}

/* Each word becomes an FTS5 string ("word", quotes doubled): implicit AND, no syntax errors. */
static char *quote_words(int n, char **w)
{
    size_t cap = 1;
    for (int i = 0; i < n; i++) cap += 2 * strlen(w[i]) + 4;
    char *q = malloc(cap), *o = q;
    if (!q) return NULL;
    for (int i = 0; i < n; i++) {
        for (const char *s = w[i]; *s;) {
            while (*s == ' ' || *s == '\t' || *s == '\n') s++;
            if (!*s) break;
            if (o != q) *o++ = ' ';
            *o++ = '"';
            for (; *s && *s != ' ' && *s != '\t' && *s != '\n'; s++) {
                if (*s == '"') *o++ = '"';
                *o++ = *s;
            }
            *o++ = '"';
        }
    }
    *o = 0;
    return q;
}

int cmd_search(int argc, char **argv)
{
    static const struct option longopts[] = {{"db", required_argument, NULL, 'd'},
                                             {"limit", required_argument, NULL, 'n'},
                                             {"raw", no_argument, NULL, 'r'},
                                             {0}};
    const char *dbopt = NULL;
    int limit = 20, c;
    bool raw = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd': dbopt = optarg; break;
        case 'r': raw = true; break;
        case 'n':
            limit = (int)strtol(optarg, &end, 10);
            if (*end || limit <= 0) {
                app_errorf("search: bad --limit '%s'", optarg);
                return EXIT_USER;
            }
            break;
        default:
            fputs(cmd_search_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    if (argc - optind < 2) {
        fputs(cmd_search_usage, stderr);
        return EXIT_USER;
    }
    char *q = raw ? NULL : quote_words(argc - optind - 1, argv + optind + 1);
    const char *query = raw ? argv[optind + 1] : q;
    sala_err e = {0, ""};
    db *d = NULL;
    int64_t cid;
    int hits = 0, rc = query ? SALA_OK : sala_errf(&e, SALA_ENOMEM, "out of memory");
    if (rc == SALA_OK && !*query) rc = sala_errf(&e, SALA_EINVAL, "empty query");
    if (rc == SALA_OK) rc = db_open_resolved(dbopt, &d, &e);
    if (rc == SALA_OK) rc = db_corpus_find(d, argv[optind], &cid, &e);
    if (rc == SALA_OK) rc = db_search(d, cid, query, limit, print_hit, &hits, &e);
    if (rc == SALA_OK && hits == 0) printf("no match\n");
    if (rc) app_errorf("search: %s", e.msg);
    free(q);
    db_close(d);
    return app_exit_code(rc);
}
