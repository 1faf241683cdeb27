/* cmd_tui.c: `sala tui [CORPUS]`: the terminal UI (ui/tui.h). */
#include "app.h"

#include <getopt.h>
#include <stdio.h>

#include "ui/tui.h"

SALA_COMMAND(tui, "browse, search and ask corpora in a terminal UI");

const char cmd_tui_usage[] =
    "usage: sala tui [CORPUS] [--db FILE]\n\n"
    "A full-screen terminal UI: corpora, documents, a document viewer, search (FTS5 and regex)\n"
    "and ask (retrieval mode until a model is configured). '?' inside shows the keys.\n"
    "Needs an interactive terminal (stdin and stdout) and TERM set to a real terminal type.\n\n"
    "options:\n"
    "  --db FILE      the store (default $SALA_HOME/sala.db, else $XDG_DATA_HOME/sala/sala.db)\n"
    "  --trace FILE   write each key's key-to-redraw time to FILE (for benchmarks)\n"
    "exit codes: 0 ok, 1 no terminal, no such corpus or a bad store, 3 internal error\n";

int cmd_tui(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'}, {"trace", required_argument, NULL, 't'}, {0}};
    ui_opts o = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'd') o.dbopt = optarg;
        else if (c == 't') o.trace_path = optarg;
        else {
            fputs(cmd_tui_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? EXIT_OK : EXIT_USER;
        }
    }
    if (argc - optind > 1) {
        fputs(cmd_tui_usage, stderr);
        return EXIT_USER;
    }
    if (argc - optind == 1) o.corpus = argv[optind];
    sala_err e = {0, ""};
    int rc = ui_tui_run(&o, &e);
    if (rc) app_errorf("%s", e.msg);
    return app_exit_code(rc);
}
