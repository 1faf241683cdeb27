/* ask_opts.h: the options `sala ask` and `sala batch` share (--db, --model, --backend, --think,
 * -n MAX_TOKENS and the sampler options of sampler_opts.h): one option table and one parser. */
#ifndef SALA_ASK_OPTS_H
#define SALA_ASK_OPTS_H

#include "app/sampler_opts.h"
#include "ctx/ctx.h"

enum { APP_O_DB = 1100, APP_O_MODEL, APP_O_BACKEND, APP_O_THINK };

/* Entries for a getopt_long option table (with "n:" in its short options). */
#define APP_ASK_OPTIONS \
    {"db", required_argument, 0, APP_O_DB}, {"model", required_argument, 0, APP_O_MODEL}, \
    {"backend", required_argument, 0, APP_O_BACKEND}, {"think", no_argument, 0, APP_O_THINK}, \
    APP_SAMPLER_OPTIONS

typedef struct {
    const char *db, *model, *backend;   /* NULL: not given */
    ctx_ask_opts o;                     /* sampler, max_tokens, think */
} app_ask_args;

/* Defaults: greedy, 512 tokens, no thinking. */
app_ask_args app_ask_defaults(void);
/* Apply option ch with argument arg: 1 when ch is one of these options and its value is valid,
 * -1 when the value is not, 0 when ch is not one of them. */
int app_ask_opt(int ch, const char *arg, app_ask_args *a);

#endif
