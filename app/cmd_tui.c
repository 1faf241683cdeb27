/* cmd_tui.c: `sala tui [CORPUS]`: the terminal UI (ui/tui.h). */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "ui/tui.h"

SALA_COMMAND(tui, "browse, search and ask corpora in a terminal UI");

const char cmd_tui_usage[] =
    "usage: sala tui [CORPUS] [--db FILE] [--model DIR] [--max-tokens N]\n\n"
    "A full-screen terminal UI: corpora (with their cached contexts), documents, a document\n"
    "viewer, search (FTS5 and regex) and ask: the corpus's cached context answers when a model\n"
    "is configured (streamed, with quotes and evidence, stored in the history), else retrieval\n"
    "mode. 'p' prefills a corpus in the background. '?' inside shows the keys.\n"
    "Needs an interactive terminal (stdin and stdout) and TERM set to a real terminal type.\n\n"
    "options:\n"
    "  --db FILE      the store (default $SALA_HOME/sala.db, else $XDG_DATA_HOME/sala/sala.db)\n"
    "  --model DIR    the model for every corpus (default: the corpus's, sala corpus model,\n"
    "                 else $SALA_MODEL; none: retrieval mode)\n"
    "  --max-tokens N longest model answer in tokens (512)\n"
    "  --trace FILE   write each key's key-to-redraw time to FILE (for benchmarks)\n"
    "exit codes: 0 ok, 1 no terminal, no such corpus or a bad store, 3 internal error\n";

int cmd_tui(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'}, {"trace", required_argument, NULL, 't'},
        {"model", required_argument, NULL, 'm'}, {"max-tokens", required_argument, NULL, 'n'},
        {0}};
    ui_opts o = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'd') o.dbopt = optarg;
        else if (c == 't') o.trace_path = optarg;
        else if (c == 'm') o.model = optarg;
        else if (c == 'n') {
            char *end;
            o.max_tokens = strtoll(optarg, &end, 10);
            if (*end || o.max_tokens <= 0) {
                fputs(cmd_tui_usage, stderr);
                return EXIT_USER;
            }
        } else {
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
