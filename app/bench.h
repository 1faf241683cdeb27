/* bench.h: benchmark entry points that `sala bench` dispatches to. */
#ifndef SALA_BENCH_H
#define SALA_BENCH_H

/* `sala bench cpu ...`: argv[0] is "cpu". Returns an exit code. */
int bench_cpu(int argc, char **argv);
extern const char bench_cpu_usage[];

/* `sala bench gpu ...`: argv[0] is "gpu" (app/bench_gpu.c). Returns an exit code. */
int bench_gpu(int argc, char **argv);

#endif
