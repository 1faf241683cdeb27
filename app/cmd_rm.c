/* cmd_rm.c: `sala rm DOC...`: remove documents (with their segments and tokens) by id. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "ingest/db.h"

SALA_COMMAND(rm, "remove documents from the store");

const char cmd_rm_usage[] =
    "usage: sala rm DOC... [--db FILE]\n\n"
    "Removes the documents with these ids ('sala docs CORPUS' lists them), with their text,\n"
    "token streams and search index entries.\n";

int cmd_rm(int argc, char **argv)
{
    const char *dbopt = NULL;
    int opt_rc = app_parse_db_only(argc, argv, cmd_rm_usage, &dbopt);
    if (opt_rc >= 0) return opt_rc;
    if (argc - optind < 1) {
        fputs(cmd_rm_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    int rc = db_open_resolved(dbopt, &d, &e), worst = SALA_OK;
    if (rc) {
        app_errorf("rm: %s", e.msg);
        return app_exit_code(rc);
    }
    for (int i = optind; i < argc; i++) {
        char *end;
        long long id = strtoll(argv[i], &end, 10);
        if (*end || end == argv[i] || id <= 0) {
            app_errorf("rm: '%s' is not a document id", argv[i]);
            worst = worst ? worst : SALA_EINVAL;
            continue;
        }
        rc = db_doc_delete(d, id, &e);
        if (rc) {
            app_errorf("rm: %s", e.msg);
            if (!worst || rc == SALA_EIO) worst = rc;
        } else {
            printf("removed document %lld\n", id);
        }
    }
    db_close(d);
    return app_exit_code(worst);
}
