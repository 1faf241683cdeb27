/* cmd_bench.c: `sala bench SUBCOMMAND`: minimal dispatcher (the tokenizer branch adds
 * `tokenize`; when merging, keep one dispatcher that sends `cpu` to bench_cpu). */
#include "app.h"

#include <stdio.h>
#include <string.h>

#include "bench.h"

SALA_COMMAND(bench, "measure engine speed");

const char cmd_bench_usage[] =
    "usage: sala bench cpu --model DIR [--prefill N] [--decode N] [--layers]\n"
    "       sala bench cpu --real-layers DIR [--prefill N]\n";

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "cpu")) return bench_cpu(argc - 1, argv + 1);
    fputs(cmd_bench_usage, argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
    return argc >= 2 && !strcmp(argv[1], "--help") ? EXIT_OK : EXIT_USER;
}
