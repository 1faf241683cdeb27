/* main.c: the `sala` command: dispatch to subcommands, global --help and --version.
 * Exit codes (documented in README.md and `sala --help`): 0 ok, 1 user/input error,
 * 2 partial failure in a batch, 3 internal error. */
#include "app.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define X(name, summary) SALA_COMMAND(name, summary);
#include "commands.inc"
#undef X

typedef struct {
    const char *name;
    const char *summary;
    const char *usage;
    int (*fn)(int, char **);
} command;

static const command commands[] = {
#define X(name, summary) {#name, summary, cmd_##name##_usage, cmd_##name},
#include "commands.inc"
#undef X
    {NULL, NULL, NULL, NULL},
};

int app_exit_code(int status)
{
    switch (status) {
    case SALA_OK: return EXIT_OK;
    case SALA_EINVAL: case SALA_EFORMAT: case SALA_ERANGE: case SALA_ENOTFOUND: case SALA_EUNSUP:
    case SALA_ECANCEL:
        return EXIT_USER;
    default: return EXIT_INTERNAL;
    }
}

void app_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sala: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int app_parse_db_only(int argc, char **argv, const char *usage, const char **dbopt)
{
    static const struct option longopts[] = {{"db", required_argument, NULL, 'd'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'd') {
            *dbopt = optarg;
            continue;
        }
        fputs(usage, c == 'h' ? stdout : stderr);
        return c == 'h' ? EXIT_OK : EXIT_USER;
    }
    return -1;
}

bool app_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    }
    return false;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sala [--version] [--help] COMMAND [ARGS...]\n\n"
               "Ask questions of a whole document collection with MiniCPM-SALA.\n\ncommands:\n");
    for (size_t i = 0; commands[i].name; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'sala COMMAND --help' describes one command.\n"
               "exit codes: 0 ok, 1 usage or input error, 2 partial failure in a batch, "
               "3 internal error\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USER;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        if (argc > 2 && strcmp(name, "help") == 0) {
            for (size_t i = 0; commands[i].name; i++)
                if (!strcmp(commands[i].name, argv[2])) {
                    fputs(commands[i].usage, stdout);
                    return EXIT_OK;
                }
            app_errorf("no command '%s' (see 'sala --help')", argv[2]);
            return EXIT_USER;
        }
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(name, "--version")) {
        printf("sala %s\n", SALA_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; commands[i].name; i++) {
        if (strcmp(commands[i].name, name) != 0) continue;
        /* `sala CMD --help` directly after the command: the command's full usage. Nested
         * subcommands (`sala model info --help`) are handled by the command itself. */
        if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            fputs(commands[i].usage, stdout);
            return EXIT_OK;
        }
        int rc = commands[i].fn(argc - 1, argv + 1);
        fflush(stdout);
        if (ferror(stdout)) {
            app_errorf("write error on standard output");
            return rc ? rc : EXIT_INTERNAL;
        }
        return rc;
    }
    app_errorf("unknown command '%s' (see 'sala --help')", name);
    return EXIT_USER;
}
