/* cmd_generate.c: `sala generate`: prefill a prompt and stream sampled tokens. */
#include "app.h"
#include "app/sampler_opts.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "ingest/tokenizer.h"

SALA_COMMAND(generate, "generate tokens from a prompt");

const char cmd_generate_usage[] =
    "usage: sala generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [-n N] [--temp T]\n"
    "                     [--top-k K] [--top-p P] [--rep-penalty R] [--seed S] [--backend B]\n\n"
    "Prefills the prompt, then samples N tokens (default 32; stops early at an eos id) and\n"
    "prints them as they are produced: as text when the model directory has tokenizer.json\n"
    "(--prompt TEXT is encoded with it, BOS first, as plain text), else one id per line.\n"
    "--temp 0 (the default) is greedy. Runs are reproducible for a given --seed.\n";

/* Parse "1,2,3" into a malloc'ed array. */
static int parse_ids(const char *s, int32_t **out, int64_t *n, sala_err *e)
{
    int64_t cap = 16, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof(int32_t));
    if (!v) return sala_errf(e, SALA_ENOMEM, "out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        long long x = strtoll(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return sala_errf(e, SALA_EINVAL, "--prompt-ids: bad list '%s'", s);
        }
        if (k == cap) {
            int32_t *q = realloc(v, (size_t)(cap *= 2) * sizeof(int32_t));
            if (!q) {
                free(v);
                return sala_errf(e, SALA_ENOMEM, "out of memory");
            }
            v = q;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (!k) {
        free(v);
        return sala_errf(e, SALA_EINVAL, "--prompt-ids: empty list");
    }
    *out = v;
    *n = k;
    return SALA_OK;
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL, *backend = "cpu";
    long long ntok = 32;
    eng_sampler_params sp = app_sampler_defaults();
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"prompt-ids", required_argument, 0, 'i'}, APP_SAMPLER_OPTIONS,
        {"backend", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        char *end = NULL;
        int so = app_sampler_opt(ch, optarg, &sp);
        if (so < 0) goto usage;
        if (so > 0) continue;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'i': prompt_ids = optarg; break;
        case 'b': backend = optarg; break;
        case 'n': ntok = strtoll(optarg, &end, 10); if (*end || ntok < 0) goto usage; break;
        case 'h': fputs(cmd_generate_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    if (!model || !!prompt == !!prompt_ids || optind != argc) goto usage;

    sala_err e = {0};
    int rc;
    eng_engine *en = NULL;
    eng_seq *seq = NULL;
    eng_sampler *smp = NULL;
    int32_t *hist = NULL;
    float *logits = NULL;
    int64_t n = 0;
    tok_tokenizer *tok = NULL;
    tok_stream *ts = NULL;
    if (prompt_ids && (rc = parse_ids(prompt_ids, &hist, &n, &e))) goto fail;
    if ((rc = eng_engine_open(model, backend, &en, &e))) goto fail;
    const char *tp = eng_engine_tokenizer_path(en);
    if (prompt && !tp) {
        rc = sala_errf(&e, SALA_EINVAL, "%s: no tokenizer.json: --prompt needs one; use "
                       "--prompt-ids", model);
        goto fail;
    }
    if (tp) {
        if ((rc = tok_load(tp, &tok, &e)) || (rc = tok_stream_new(tok, 0, &ts, &e))) goto fail;
    }
    if (prompt) {
        tok_ids ids = {0};
        if ((rc = tok_encode(tok, prompt, strlen(prompt), TOK_BOS, &ids, &e))) {
            tok_ids_free(&ids);
            goto fail;
        }
        hist = ids.ids;
        n = (int64_t)ids.n;
        if (!n) {
            free(hist);
            hist = NULL;
            rc = sala_errf(&e, SALA_EINVAL, "--prompt: no tokens");
            goto fail;
        }
    }
    const eng_config *c = eng_engine_config(en);
    int32_t *h2 = realloc(hist, (size_t)(n + ntok + 1) * sizeof(int32_t));
    logits = malloc((size_t)c->vocab_size * sizeof(float));
    if (!h2 || !logits) {
        rc = sala_errf(&e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    hist = h2;
    if ((rc = eng_sampler_new(&sp, c->vocab_size, &smp, &e))) goto fail;
    if ((rc = eng_seq_new(en, &seq, &e))) goto fail;
    int64_t last = n - 1;
    if ((rc = eng_seq_prefill(seq, hist, n, &last, 1, logits, &e))) goto fail;
    /* the first token from the prompt's logits; then, with a greedy sampler, the engine picks
     * each next one (on the device where the backend can: the sampler's token, no logits row) */
    int32_t t = eng_sampler_sample(smp, logits, hist, n);
    for (long long i = 0; i < ntok; i++) {
        hist[n++] = t;
        bool eos = false;
        for (int j = 0; j < c->n_eos; j++) eos |= t == c->eos_token_ids[j];
        if (ts) {
            const char *txt;
            size_t tl;
            if (!eos && (rc = tok_stream_feed(ts, t, &txt, &tl, &e))) goto fail;
            if (!eos) fwrite(txt, 1, tl, stdout);
        } else {
            printf("%d\n", t);
        }
        fflush(stdout);
        if (eos || i + 1 == ntok) break;
        if (sp.temperature <= 0) {
            if ((rc = eng_seq_decode_greedy(seq, t, &sp, hist, n, &t, &e))) goto fail;
        } else {
            if ((rc = eng_seq_decode(seq, t, logits, &e))) goto fail;
            t = eng_sampler_sample(smp, logits, hist, n);
        }
    }
    if (ts) {
        const char *txt;
        size_t tl;
        if ((rc = tok_stream_finish(ts, &txt, &tl, &e))) goto fail;
        fwrite(txt, 1, tl, stdout);
        putchar('\n');
    }
fail:
    if (rc) app_errorf("%s", e.msg);
    tok_stream_free(ts);
    tok_free(tok);
    eng_sampler_free(smp);
    eng_seq_free(seq);
    eng_engine_close(en);
    free(hist);
    free(logits);
    return app_exit_code(rc);
usage:
    fputs(cmd_generate_usage, stderr);
    return EXIT_USER;
}
