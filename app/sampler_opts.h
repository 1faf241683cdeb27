/* sampler_opts.h: the sampler options shared by `sala generate`, `ask` and `batch`
 * (--temp, --top-k, --top-p, --rep-penalty, --seed): one option table and one parser. */
#ifndef SALA_SAMPLER_OPTS_H
#define SALA_SAMPLER_OPTS_H

#include <getopt.h>

#include "engine/sampler.h"

enum { APP_O_TEMP = 1000, APP_O_TOPK, APP_O_TOPP, APP_O_REP, APP_O_SEED };

/* Entries for a getopt_long option table. */
#define APP_SAMPLER_OPTIONS \
    {"temp", required_argument, 0, APP_O_TEMP}, {"top-k", required_argument, 0, APP_O_TOPK}, \
    {"top-p", required_argument, 0, APP_O_TOPP}, {"rep-penalty", required_argument, 0, APP_O_REP}, \
    {"seed", required_argument, 0, APP_O_SEED}

/* Greedy, no top-k/top-p, no repetition penalty, seed 0. */
eng_sampler_params app_sampler_defaults(void);
/* Apply option ch with argument arg to *sp: 1 when ch is a sampler option and its value is
 * valid, -1 when the value is not (temp < 0, top-k < 0, top-p outside (0, 1], rep-penalty <= 0,
 * not a number), 0 when ch is not a sampler option. */
int app_sampler_opt(int ch, const char *arg, eng_sampler_params *sp);

#endif
