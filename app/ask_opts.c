/* ask_opts.c: see ask_opts.h. */
#include "app/ask_opts.h"

#include <stdlib.h>

app_ask_args app_ask_defaults(void)
{
    return (app_ask_args){.o = {.sampler = app_sampler_defaults(), .max_tokens = 512}};
}

int app_ask_opt(int ch, const char *arg, app_ask_args *a)
{
    char *end = NULL;
    switch (ch) {
    case APP_O_DB: a->db = arg; return 1;
    case APP_O_MODEL: a->model = arg; return 1;
    case APP_O_BACKEND: a->backend = arg; return 1;
    case APP_O_THINK: a->o.think = true; return 1;
    case 'n':
        a->o.max_tokens = strtoll(arg, &end, 10);
        return *end || a->o.max_tokens <= 0 ? -1 : 1;
    default: return app_sampler_opt(ch, arg, &a->o.sampler);
    }
}
