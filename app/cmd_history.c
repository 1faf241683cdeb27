/* cmd_history.c: `sala history CORPUS`: the questions asked of a corpus, with their answers. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <time.h>

#include "ctx/ctx.h"

SALA_COMMAND(history, "list the questions asked of a corpus");

const char cmd_history_usage[] =
    "usage: sala history CORPUS [--db FILE] [--full]\n\n"
    "Lists the questions asked of the corpus ('sala ask', 'sala batch'), oldest first, with\n"
    "their answers (first line; --full: whole answer, citations and timings as JSON).\n";

static int show(const ctx_history_row *r, void *ud)
{
    bool full = *(bool *)ud;
    char when[32] = "?";
    time_t t = (time_t)r->asked;
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
    printf("#%lld  %s  [%s]  %s\n", (long long)r->id, when, r->mode, r->question);
    if (full) {
        printf("%s\ncitations: %s\ntimings: %s\n\n", r->answer, r->citations, r->timings);
    } else {
        int n = 0;
        while (r->answer[n] && r->answer[n] != '\n' && n < 100) n++;
        printf("    %.*s%s\n", n, r->answer, r->answer[n] ? " ..." : "");
    }
    return 0;
}

int cmd_history(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"full", no_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *dbopt = NULL;
    bool full = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'd') dbopt = optarg;
        else if (ch == 'f') full = true;
        else {
            fputs(cmd_history_usage, ch == 'h' ? stdout : stderr);
            return ch == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    if (optind + 1 != argc) {
        fputs(cmd_history_usage, stderr);
        return EXIT_USER;
    }
    sala_err e = {0};
    db *d = NULL;
    int rc = db_open_resolved(dbopt, &d, &e);
    if (!rc) rc = ctx_history(d, argv[optind], show, &full, &e);
    if (rc) app_errorf("%s", e.msg);
    db_close(d);
    return app_exit_code(rc);
}
