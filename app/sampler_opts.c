/* sampler_opts.c: see sampler_opts.h. */
#include "app/sampler_opts.h"

#include <stdlib.h>

eng_sampler_params app_sampler_defaults(void)
{
    return (eng_sampler_params){.temperature = 0, .top_k = 0, .top_p = 1.0f,
                                .repetition_penalty = 1.0f, .seed = 0};
}

int app_sampler_opt(int ch, const char *arg, eng_sampler_params *sp)
{
    char *end = NULL;
    switch (ch) {
    case APP_O_TEMP:
        sp->temperature = strtof(arg, &end);
        return *end || !*arg || !(sp->temperature >= 0) ? -1 : 1;
    case APP_O_TOPK: {
        long k = strtol(arg, &end, 10);
        sp->top_k = (int)k;
        return *end || !*arg || k < 0 || k > 1000000000L ? -1 : 1;
    }
    case APP_O_TOPP:
        sp->top_p = strtof(arg, &end);
        return *end || !*arg || !(sp->top_p > 0 && sp->top_p <= 1) ? -1 : 1;
    case APP_O_REP:
        sp->repetition_penalty = strtof(arg, &end);
        return *end || !*arg || !(sp->repetition_penalty > 0) ? -1 : 1;
    case APP_O_SEED:
        sp->seed = strtoull(arg, &end, 10);
        return *end || !*arg || arg[0] == '-' ? -1 : 1;
    }
    return 0;
}
