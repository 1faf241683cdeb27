/* cmd_show.c: `sala show DOC [--page N | --at LOCATOR]`: a stored document's text. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/db.h"

SALA_COMMAND(show, "print a stored document, a page of it or the text at a locator");

const char cmd_show_usage[] =
    "usage: sala show DOC [--page N | --at LOCATOR] [--db FILE]\n\n"
    "Prints the text of document DOC (an id from 'sala docs'), segment by segment, each under\n"
    "its locator. --page N keeps page N of a PDF; --at LOCATOR keeps the segment with that\n"
    "locator ('p. 12', '/TEI/text/body/div[2]/p[5]', 'src/x.c:61-120'), or for a line locator\n"
    "'NAME:LINE' or 'NAME:FIRST-LAST' the segments holding those lines.\n";

typedef struct {
    const char *at;       /* exact locator, or NULL */
    long long l0, l1;     /* line filter when > 0 */
    int shown;
} show_st;

static int print_seg(const db_seg *s, void *ud)
{
    show_st *st = ud;
    if (st->at && strcmp(s->locator, st->at) != 0) {
        if (st->l0 <= 0 || s->line_first < 0) return 0;
        if (s->line_last < st->l0 || s->line_first > st->l1) return 0;
    }
    printf("== %s ==\n", s->locator);
    fwrite(s->text, 1, s->text_len, stdout);
    if (s->text_len == 0 || s->text[s->text_len - 1] != '\n') fputc('\n', stdout);
    st->shown++;
    return 0;
}

/* "name:12" or "name:12-40" -> lines; returns 0 when at has that shape. */
static int parse_lines(const char *at, long long *l0, long long *l1)
{
    const char *colon = strrchr(at, ':');
    if (!colon) return -1;
    char *end;
    *l0 = strtoll(colon + 1, &end, 10);
    if (end == colon + 1 || *l0 <= 0) return -1;
    *l1 = *l0;
    if (*end == '-') {
        const char *p = end + 1;
        *l1 = strtoll(p, &end, 10);
        if (end == p || *l1 < *l0) return -1;
    }
    return *end ? -1 : 0;
}

int cmd_show(int argc, char **argv)
{
    static const struct option longopts[] = {{"db", required_argument, NULL, 'd'},
                                             {"page", required_argument, NULL, 'p'},
                                             {"at", required_argument, NULL, 'a'},
                                             {0}};
    const char *dbopt = NULL, *at = NULL;
    long long page = -1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd': dbopt = optarg; break;
        case 'a': at = optarg; break;
        case 'p':
            page = strtoll(optarg, &end, 10);
            if (*end || page <= 0) {
                app_errorf("show: bad --page '%s'", optarg);
                return EXIT_USER;
            }
            break;
        default:
            fputs(cmd_show_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    if (argc - optind != 1 || (at && page > 0)) {
        fputs(cmd_show_usage, stderr);
        return EXIT_USER;
    }
    char *end;
    long long id = strtoll(argv[optind], &end, 10);
    if (*end || id <= 0) {
        app_errorf("show: '%s' is not a document id (see 'sala docs CORPUS')", argv[optind]);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    db_doc doc;
    show_st st = {.at = at};
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc == SALA_OK) rc = db_doc_get(d, id, &doc, &e);
    if (rc) goto fail;
    printf("# %s (%s%s%s)\n", doc.name, doc.kind, doc.title ? ": " : "", doc.title ? doc.title : "");
    if (doc.reason) printf("# rejected: %s: %s\n", doc.component ? doc.component : "?", doc.reason);
    if (at && parse_lines(at, &st.l0, &st.l1) != 0) st.l0 = st.l1 = 0;
    rc = db_seg_list(d, id, page > 0 ? page : -1, NULL, print_seg, &st, &e);
    if (rc == SALA_OK && st.shown == 0 && page > 0)
        rc = sala_errf(&e, SALA_ENOTFOUND, "document %lld has no page %lld", id, page);
    if (rc == SALA_OK && st.shown == 0 && at)
        rc = sala_errf(&e, SALA_ENOTFOUND, "document %lld has nothing at '%s'", id, at);
fail:
    if (rc) app_errorf("show: %s", e.msg);
    db_close(d);
    return app_exit_code(rc);
}
