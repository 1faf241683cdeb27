/* cmd_docs.c: `sala docs CORPUS`: the documents of a corpus in corpus order, with status. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>

#include "ingest/db.h"

SALA_COMMAND(docs, "list the documents of a corpus");

const char cmd_docs_usage[] =
    "usage: sala docs CORPUS [--db FILE]\n\n"
    "Lists the documents of CORPUS in the order they were added: id (for 'sala show' and\n"
    "'sala rm'), status, kind, pages, segments, name and title; rejected ones with the reason.\n";

static int print_doc(const db_doc *d, void *ud)
{
    (void)ud;
    char pages[24] = "-";
    if (d->pages >= 0) snprintf(pages, sizeof(pages), "%lld", (long long)d->pages);
    printf("%6lld  %-8s %-8s %5s pp %6lld seg  %s", (long long)d->id, d->status, d->kind, pages,
           (long long)d->segments, d->name);
    if (d->reason) printf("  [%s: %s]", d->component ? d->component : "?", d->reason);
    else if (d->title) printf("  \"%s\"", d->title);
    printf("\n");
    return 0;
}

int cmd_docs(int argc, char **argv)
{
    const char *dbopt = NULL;
    int opt_rc = app_parse_db_only(argc, argv, cmd_docs_usage, &dbopt);
    if (opt_rc >= 0) return opt_rc;
    if (argc - optind != 1) {
        fputs(cmd_docs_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    int64_t cid;
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc == SALA_OK) rc = db_corpus_find(d, argv[optind], &cid, &e);
    if (rc == SALA_OK) rc = db_doc_list(d, cid, print_doc, NULL, &e);
    if (rc) app_errorf("docs: %s", e.msg);
    db_close(d);
    return app_exit_code(rc);
}
