/* app.h: what the thin command mains share. Each app/cmd_<name>.c declares itself with one line
 *     SALA_COMMAND(name, "one-line summary");
 * at the start of a line, and defines
 *     const char cmd_<name>_usage[];          full --help text
 *     int cmd_<name>(int argc, char **argv);  argv[0] is the command name
 * The Makefile collects those lines into the dispatch table; nothing else needs editing.
 * Commands return one of the exit codes below; only app/main.c calls exit(). */
#ifndef SALA_APP_H
#define SALA_APP_H

#include "common.h"

enum {
    EXIT_OK = 0,       /* everything done */
    EXIT_USER = 1,     /* bad usage or bad input (a file, a model directory, ...) */
    EXIT_PARTIAL = 2,  /* a batch ran but some items failed (e.g. rejected files) */
    EXIT_INTERNAL = 3, /* a bug or an environment failure (out of memory, I/O) */
};

#define SALA_COMMAND(name, summary) \
    extern const char cmd_##name##_usage[]; \
    int cmd_##name(int argc, char **argv)

/* Map a library status to an exit code: input problems are the user's, the rest internal. */
int app_exit_code(int status);

/* Print "sala: <msg>" on stderr (commands only; library code uses sala_log). */
void app_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse the options of a command whose only option is --db FILE (and -h). On success returns
 * -1 with *dbopt set (or left NULL) and optind at the first operand; otherwise the exit code to
 * return (usage printed: on stdout for -h, on stderr for an unknown option). */
int app_parse_db_only(int argc, char **argv, const char *usage, const char **dbopt);

/* True when argv contains -h or --help (commands use it for nested subcommands). */
bool app_wants_help(int argc, char **argv);

#endif
