/* cmd_prefill.c: `sala prefill CORPUS`: compute and save the corpus's cached context. */
#include "app.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctx/ctx.h"

SALA_COMMAND(prefill, "read a corpus into the model and save the context");

const char cmd_prefill_usage[] =
    "usage: sala prefill CORPUS [--model DIR] [--db FILE] [--backend B] [--ckpt-budget MB]\n"
    "                   [--fresh]\n\n"
    "Builds the prompt prefix (system prompt, then every document of the corpus framed with its\n"
    "title, source and locators, in corpus order), prefills it and saves the state next to the\n"
    "store (DIR-OF-DB/contexts/). When a state for this corpus and model exists, only what\n"
    "changed is prefilled: added documents cost their own tokens; removed or changed last\n"
    "documents rewind to the nearest earlier checkpoint. Ctrl-C stops cleanly and saves nothing.\n\n"
    "options:\n"
    "  --model DIR        model directory (remembered for the corpus); default: the corpus's\n"
    "                     model, else $SALA_MODEL\n"
    "  --ckpt-budget MB   disk for lightning-state checkpoints at document boundaries (1024)\n"
    "  --fresh            ignore the existing state and prefill everything\n";

static volatile sig_atomic_t cancelled;
static void on_sigint(int sig) { (void)sig; cancelled = 1; }

static void progress(void *ud, const ctx_progress *p)
{
    bool tty = *(bool *)ud;
    if (!tty && p->done != p->total) return;
    const int w = 30;
    int fill = p->total ? (int)(w * p->done / p->total) : w;
    fprintf(stderr, "%sprefill [%.*s%*s] %lld/%lld tokens  %.0f tok/s  ETA %.0fs%s",
            tty ? "\r" : "", fill, "##############################", w - fill, "",
            (long long)p->done, (long long)p->total, p->tok_per_s, p->eta_s,
            tty && p->done != p->total ? "" : "\n");
}

int cmd_prefill(int argc, char **argv)
{
    enum { O_DB = 256, O_MODEL, O_BACKEND, O_BUDGET, O_FRESH };
    static const struct option opts[] = {
        {"db", required_argument, 0, O_DB}, {"model", required_argument, 0, O_MODEL},
        {"backend", required_argument, 0, O_BACKEND}, {"ckpt-budget", required_argument, 0, O_BUDGET},
        {"fresh", no_argument, 0, O_FRESH}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *dbopt = NULL, *model = NULL, *backend = NULL;
    ctx_prefill_opts o = {0};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case O_DB: dbopt = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_BACKEND: backend = optarg; break;
        case O_FRESH: o.fresh = true; break;
        case O_BUDGET: {
            unsigned long long mb = strtoull(optarg, &end, 10);
            if (*end || mb == 0 || mb > (1ull << 40)) goto usage;
            o.ckpt_budget = mb << 20;
            break;
        }
        case 'h': fputs(cmd_prefill_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    if (optind + 1 != argc) goto usage;
    const char *corpus = argv[optind];
    sala_err e = {0};
    db *d = NULL;
    ctx_model *m = NULL;
    char sdir[4096], *owned = NULL;
    const char *dir;
    int rc = db_open_resolved(dbopt, &d, &e);
    if (rc) goto fail;
    if ((rc = ctx_model_resolve(d, corpus, model, &owned, &e))) goto fail;
    if (!(dir = owned)) {
        rc = sala_errf(&e, SALA_EINVAL, "no model: give --model DIR, or 'sala corpus model %s DIR',"
                       " or set SALA_MODEL", corpus);
        goto fail;
    }
    if ((rc = ctx_state_dir(dbopt, sdir, sizeof(sdir), &e))) goto fail;
    if ((rc = ctx_model_open(dir, backend, &m, &e))) goto fail;
    bool tty = isatty(2);
    o.state_dir = sdir;
    o.cancel = &cancelled;
    o.progress = progress;
    o.ud = &tty;
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old);
    ctx_prefill_result r;
    rc = ctx_prefill(d, corpus, m, &o, &r, &e);
    sigaction(SIGINT, &old, NULL);
    if (rc) goto fail;
    if (model && (rc = ctx_corpus_model_set(d, corpus, model, &e))) goto fail;
    printf("context %s: %lld tokens, %lld documents (%lld reused, %lld prefilled in %.2fs, "
           "%.0f tok/s), %lld checkpoints, saved %.1f MB in %.2fs to %s\n", corpus,
           (long long)r.length, (long long)r.documents, (long long)r.reused,
           (long long)r.prefilled, r.seconds, r.seconds > 0 ? r.prefilled / r.seconds : 0.0,
           (long long)r.checkpoints, r.bytes / 1e6, r.save_seconds, r.path);
fail:
    if (rc) app_errorf("%s", e.msg);
    ctx_model_close(m);
    db_close(d);
    free(owned);
    return app_exit_code(rc);
usage:
    fputs(cmd_prefill_usage, stderr);
    return EXIT_USER;
}
