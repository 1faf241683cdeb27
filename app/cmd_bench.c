/* cmd_bench.c: `sala bench WHAT ...`: benchmarks. Each WHAT is one function bench_<what> in
 * the table below (add a row for a new benchmark); the dispatcher only picks the row. Results
 * are printed on stdout in one line per measurement, to be copied into docs/BENCHMARKS.md with
 * the command that produced them. */
#include "app.h"
#include "ingest/tokenizer.h"
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SALA_COMMAND(bench, "run a benchmark (tokenize, cpu, gpu)");

const char cmd_bench_usage[] =
    "usage: sala bench WHAT [ARGS...]\n"
    "\n"
    "benchmarks:\n"
    "  tokenize [--tokenizer FILE | --model DIR] [--repeat N] [--spans] FILE\n"
    "      encode FILE as one document text (one call, special tokens literal, one thread)\n"
    "      N times (default 3) and print the best and median throughput in MB/s (10^6 bytes).\n"
    "      The tokenizer defaults to $SALA_SHARED/tokenizer/tokenizer.json, else\n"
    "      ../shared/tokenizer/tokenizer.json. --spans also fills byte spans.\n"
    "  cpu --model DIR [--prefill N] [--decode N] [--layers]\n"
    "      CPU engine prefill and decode tokens/s on a model directory.\n"
    "  cpu --real-layers DIR [--prefill N]\n"
    "      time of one real-width layer of each kind (random bf16 weights written to DIR).\n"
    "  gpu --random-weights full|tiny [--lengths 8K,32K,128K,256K,1M] [--decode N]\n"
    "      [--peer bench/peer_dense8b.py] [--peer-lengths 8K,32K,64K,128K]\n"
    "      [--peer-sdpa bench/peer_sdpa_layer.py]\n"
    "      CUDA engine: TTFT per length, decode tokens/s, peak GPU memory, per-op time, and\n"
    "      the dense-8B PyTorch peer in the same run (needs a GPU); --peer-sdpa: one sparse\n"
    "      layer (attention, stage 1, top-K) against one layer of PyTorch SDPA.\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *model_dir = NULL, *file = NULL;
    int repeat = 3;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (!strcmp(a, "--model") && i + 1 < argc) model_dir = argv[++i];
        else if (!strcmp(a, "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(a, "--spans")) flags |= TOK_SPANS;
        else if (a[0] != '-' && !file) file = a;
        else {
            app_errorf("bench tokenize: unknown or incomplete argument '%s'", a);
            return EXIT_USER;
        }
    }
    if (!file || repeat < 1 || repeat > 1000) {
        app_errorf("bench tokenize: give FILE (and --repeat in 1..1000); see 'sala bench --help'");
        return EXIT_USER;
    }
    char pathbuf[4096];
    if (model_dir && !tok_path) {
        snprintf(pathbuf, sizeof(pathbuf), "%s/tokenizer.json", model_dir);
        tok_path = pathbuf;
    } else if (!tok_path) {
        const char *sh = getenv("SALA_SHARED");
        snprintf(pathbuf, sizeof(pathbuf), "%s/tokenizer/tokenizer.json",
                 sh && *sh ? sh : "../shared");
        tok_path = pathbuf;
    }
    sala_err e;
    tok_tokenizer *t;
    double t0 = sala_now();
    int rc = tok_load(tok_path, &t, &e);
    if (rc) {
        app_errorf("%s", e.msg);
        return app_exit_code(rc);
    }
    double load_s = sala_now() - t0;
    char *text;
    size_t len;
    if ((rc = sala_file_read(file, (size_t)UINT32_MAX - 1, &text, &len, &e))) {
        app_errorf("%s", e.msg);
        tok_free(t);
        return app_exit_code(rc);
    }
    double *secs = calloc((size_t)repeat, sizeof(double));
    tok_ids ids = {0};
    for (int r = 0; r < repeat && !rc; r++) {
        ids.n = 0;
        double a = sala_now();
        rc = tok_encode(t, text, len, flags, &ids, &e);
        secs[r] = sala_now() - a;
    }
    if (rc) {
        app_errorf("bench tokenize: %s", e.msg);
    } else {
        qsort(secs, (size_t)repeat, sizeof(double), cmp_double);
        double mb = (double)len / 1e6;
        printf("bench tokenize: %s: %.2f MB, %zu tokens (%.2f bytes/token), tokenizer load %.2f s\n",
               file, mb, ids.n, ids.n ? (double)len / (double)ids.n : 0.0, load_s);
        printf("bench tokenize: best %.3f s = %.1f MB/s, median %.3f s = %.1f MB/s (%d runs, 1 "
               "thread%s)\n", secs[0], mb / secs[0], secs[repeat / 2], mb / secs[repeat / 2],
               repeat, (flags & TOK_SPANS) ? ", with spans" : "");
    }
    free(secs);
    tok_ids_free(&ids);
    free(text);
    tok_free(t);
    return app_exit_code(rc);
}

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);   /* argv[0] is the benchmark's name */
} bench_entry;

static const bench_entry benches[] = {
    {"tokenize", bench_tokenize},
    {"cpu", bench_cpu},
    {"gpu", bench_gpu},
};

int cmd_bench(int argc, char **argv)
{
    if (argc < 2) {
        fputs(cmd_bench_usage, stderr);
        return EXIT_USER;
    }
    for (size_t i = 0; i < SALA_ARRAY_LEN(benches); i++)
        if (!strcmp(benches[i].name, argv[1])) return benches[i].fn(argc - 1, argv + 1);
    app_errorf("unknown bench '%s' (known: tokenize, cpu, gpu; see 'sala bench --help')", argv[1]);
    return EXIT_USER;
}
