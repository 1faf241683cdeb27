/* cmd_benchgpu.c: temporary command `sala bench-gpu ...` = `sala bench gpu ...` until the
 * `bench` dispatcher (branch tok) is merged; then this file goes away. */
#include "app.h"
#include "bench.h"

SALA_COMMAND(bench_gpu, "GPU benchmark (temporary name of 'sala bench gpu')");

const char cmd_bench_gpu_usage[] =
    "usage: sala bench-gpu --random-weights full|tiny [--lengths 8K,32K,...] [--decode N]\n"
    "                      [--peer SCRIPT] [--peer-lengths 8K,...]\n";

int cmd_bench_gpu(int argc, char **argv) { return bench_gpu(argc, argv); }
