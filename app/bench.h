/* bench.h: the benchmark entry points behind `sala bench <what>`. */
#ifndef SALA_BENCH_H
#define SALA_BENCH_H

/* `sala bench gpu`: argv[0] is "gpu". Returns an app exit code. */
int bench_gpu(int argc, char **argv);

#endif
