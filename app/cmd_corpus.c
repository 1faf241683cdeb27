/* cmd_corpus.c: `sala corpus new|list|rm`: named document collections in the store. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctx/ctx.h"
#include "ingest/db.h"

SALA_COMMAND(corpus, "create, list or remove corpora");

const char cmd_corpus_usage[] =
    "usage: sala corpus new NAME [--db FILE]\n"
    "       sala corpus list [--db FILE]\n"
    "       sala corpus rm NAME [--db FILE]\n"
    "       sala corpus model NAME [DIR] [--db FILE]\n\n"
    "A corpus is a named collection of documents ('sala add' fills it).\n"
    "'rm' removes the corpus with all its documents.\n"
    "'model' shows or sets the model directory 'sala prefill' and 'sala ask' use for it.\n\n"
    "options:\n"
    "  --db FILE   the store (default $SALA_HOME/sala.db, else $XDG_DATA_HOME/sala/sala.db)\n";

static int print_corpus(const db_corpus_info *c, void *ud)
{
    (void)ud;
    char when[32] = "?";
    time_t t = (time_t)c->created;
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
    printf("%-20s %6lld docs %6lld rejected %8lld segments  created %s\n", c->name,
           (long long)c->docs_ok, (long long)c->docs_rejected, (long long)c->segments, when);
    return 0;
}

int cmd_corpus(int argc, char **argv)
{
    const char *dbopt = NULL;
    int opt_rc = app_parse_db_only(argc, argv, cmd_corpus_usage, &dbopt);
    if (opt_rc >= 0) return opt_rc;
    int nargs = argc - optind;
    char **args = argv + optind;
    bool is_model = nargs >= 1 && !strcmp(args[0], "model");
    if (nargs < 1 || (strcmp(args[0], "list") && !is_model && nargs != 2) ||
        (is_model && nargs != 2 && nargs != 3) || (!strcmp(args[0], "list") && nargs != 1)) {
        fputs(cmd_corpus_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0, ""};
    db *d = NULL;
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc) goto fail;
    if (!strcmp(args[0], "new")) {
        rc = db_corpus_create(d, args[1], NULL, &e);
        if (rc == SALA_OK) printf("created corpus %s\n", args[1]);
    } else if (!strcmp(args[0], "rm")) {
        rc = db_corpus_delete(d, args[1], &e);
        if (rc == SALA_OK) printf("removed corpus %s\n", args[1]);
    } else if (is_model && nargs == 3) {
        rc = ctx_corpus_model_set(d, args[1], args[2], &e);
        if (rc == SALA_OK) printf("corpus %s answers with the model %s\n", args[1], args[2]);
    } else if (is_model) {
        char *dir = NULL;
        rc = ctx_corpus_model_get(d, args[1], &dir, &e);
        if (rc == SALA_OK) printf("%s\n", dir);
        free(dir);
    } else if (!strcmp(args[0], "list")) {
        rc = db_corpus_list(d, print_corpus, NULL, &e);
    } else {
        app_errorf("corpus: unknown subcommand '%s' (new, list, rm)", args[0]);
        db_close(d);
        return EXIT_USER;
    }
fail:
    if (rc) app_errorf("%s", e.msg);
    db_close(d);
    return app_exit_code(rc);
}
