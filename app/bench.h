/* bench.h: benchmark entry points that `sala bench` dispatches to. */
#ifndef SALA_BENCH_H
#define SALA_BENCH_H

/* `sala bench cpu ...`: argv[0] is "cpu". Returns an exit code. */
int bench_cpu(int argc, char **argv);
extern const char bench_cpu_usage[];

/* `sala bench gpu ...`: argv[0] is "gpu" (app/bench_gpu.c). Returns an exit code. */
int bench_gpu(int argc, char **argv);

#include <stdbool.h>
#include <stdint.h>

#include "engine/config.h"

/* `sala bench gpu --context ...` (app/bench_ctx.c): cached-context timings on the CUDA backend
 * with random weights of configuration *cfg. */
typedef struct {
    int64_t context[32];
    int ncontext;
    int64_t batch_at[32];       /* lengths that also get the batch of questions */
    int nbatch;
    int questions, qtokens, answer;
    int width;                  /* questions decoding together (0: all of them) */
    const char *state_dir;
    bool keep;                  /* keep the state files */
} bench_ctx_opts;
int bench_gpu_context(const eng_config *cfg, const bench_ctx_opts *o);

#endif
