/* bench_gpu.c: `sala bench gpu --random-weights full`: the CUDA backend on full-size random bf16
 * weights made on the GPU (no weight file): time to first token per prompt length (one prefill
 * call of L random tokens, logits of the last row), decode tokens/s after some of the lengths,
 * peak GPU memory and the per-op device time of each prefill; then, in the same run on the same
 * GPU, the dense-8B PyTorch peer (bench/peer_dense8b.py) and the TTFT ratio. Prints a table and
 * one JSON line per measurement. Uses the backend table directly (engine/backend.h) because the
 * model has no directory. With --context, the cached-context benchmark instead (app/bench_ctx.c:
 * prefill, save, reopen, fork, question, batch of questions). */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "engine/backend.h"
#include "engine/random_model.h"

/* SALA-SPEC §1 / §9: the real MiniCPM-SALA shapes. */
static void config_full(eng_config *c)
{
    memset(c, 0, sizeof(*c));
    c->vocab_size = 73448;
    c->hidden_size = 4096;
    c->intermediate_size = 16384;
    c->num_hidden_layers = 32;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 2;
    c->head_dim = 128;
    c->lightning_nh = c->lightning_nkv = 32;
    c->lightning_head_dim = 128;
    c->max_position_embeddings = 524288;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->scale_emb = 12.0;
    c->scale_depth = 1.4;
    c->dim_model_base = 256.0;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->eos_token_ids[1] = 73440;
    c->n_eos = 2;
    c->sparse = (eng_sparse_config){.block_size = 64, .dense_len = 8192, .init_blocks = 1,
                                    .kernel_size = 32, .kernel_stride = 16, .topk = 64,
                                    .window_size = 2048, .use_nope = true};
    static const int sparse[] = {0, 9, 16, 17, 22, 29, 30, 31};
    for (int l = 0; l < 32; l++) c->mixer[l] = ENG_MIXER_LIGHTNING;
    for (size_t i = 0; i < SALA_ARRAY_LEN(sparse); i++) c->mixer[sparse[i]] = ENG_MIXER_SPARSE;
    c->n_sparse = 8;
    c->n_lightning = 24;
}

/* ../shared/golden tiny-a shapes (a quick functional run). */
static void config_tiny(eng_config *c)
{
    config_full(c);
    c->vocab_size = 4096;
    c->hidden_size = 256;
    c->intermediate_size = 640;
    c->num_hidden_layers = 4;
    c->num_attention_heads = 4;
    c->head_dim = 64;
    c->lightning_nh = c->lightning_nkv = 4;
    c->lightning_head_dim = 64;
    c->dim_model_base = 64;
    c->sparse.topk = 8;
    c->sparse.window_size = 512;
    c->sparse.dense_len = 1024;
    c->mixer[0] = c->mixer[3] = ENG_MIXER_SPARSE;
    c->mixer[1] = c->mixer[2] = ENG_MIXER_LIGHTNING;
    c->n_sparse = 2;
    c->n_lightning = 2;
}

/* "8K,32K,1M,1000" -> tokens; returns the count or -1. */
static int parse_lengths(const char *s, int64_t *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v <= 0) return -1;
        if (*end == 'K' || *end == 'k') v *= 1024, end++;
        else if (*end == 'M' || *end == 'm') v *= 1048576, end++;
        out[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}

typedef struct {
    const eng_backend *be;
    void *bm;
    int64_t vocab;
    float *logits;
} bench;

/* Prefill L random tokens into a new sequence; *sec = wall seconds to the last row's logits. */
static int prefill(bench *b, void *seq, const int32_t *tok, int64_t L, double *sec, sala_err *e)
{
    int64_t row = L - 1;
    eng_forward_args a = {.tokens = tok, .n = L, .rows = &row, .nrows = 1, .logits = b->logits};
    double t0 = sala_now();
    int rc = b->be->forward(seq, &a, e);
    *sec = sala_now() - t0;
    return rc;
}

static int decode(bench *b, void *seq, int steps, double *tps, sala_err *e)
{
    int32_t t = 5;
    int64_t row = 0;
    eng_forward_args a = {.tokens = &t, .n = 1, .rows = &row, .nrows = 1, .logits = b->logits};
    int rc = b->be->forward(seq, &a, e);   /* warm */
    double t0 = sala_now();
    for (int i = 0; i < steps && !rc; i++) {
        rc = b->be->forward(seq, &a, e);
        int64_t best = 0;
        for (int64_t j = 1; j < b->vocab; j++)
            if (b->logits[j] > b->logits[best]) best = j;
        t = (int32_t)best;
    }
    *tps = steps / (sala_now() - t0);
    return rc;
}

static void print_profile(const eng_profile *p, double ttft)
{
    double sum = 0;
    for (int i = 0; i < p->nops; i++) sum += p->op_seconds[i];
    printf("      ops:");
    for (int i = 0; i < p->nops; i++)
        printf(" %s %.3fs (%.0f%%)", p->op_name[i], p->op_seconds[i],
               sum > 0 ? 100.0 * p->op_seconds[i] / sum : 0.0);
    printf("; device sum %.3fs of %.3fs wall\n", sum, ttft);
}

int bench_gpu(int argc, char **argv)
{
    const char *weights = NULL, *lens = "8K,32K,128K,256K,1M", *peer = NULL;
    const char *peer_lens = "8K,32K,64K,128K";
    const char *ctxs = NULL, *batch_at = "256K";
    int steps = 32;
    bench_ctx_opts co = {.questions = 32, .qtokens = 50, .answer = 32, .state_dir = "/tmp"};
    static const struct option opts[] = {
        {"random-weights", required_argument, 0, 'w'}, {"lengths", required_argument, 0, 'l'},
        {"decode", required_argument, 0, 'd'}, {"peer", required_argument, 0, 'p'},
        {"peer-lengths", required_argument, 0, 'P'}, {"context", required_argument, 0, 'c'},
        {"questions", required_argument, 0, 'q'}, {"question-tokens", required_argument, 0, 'Q'},
        {"answer", required_argument, 0, 'a'}, {"batch-at", required_argument, 0, 'b'},
        {"state-dir", required_argument, 0, 's'}, {"keep", no_argument, 0, 'k'},
        {"batch-width", required_argument, 0, 'W'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'w': weights = optarg; break;
        case 'l': lens = optarg; break;
        case 'd': steps = atoi(optarg); break;
        case 'p': peer = optarg; break;
        case 'P': peer_lens = optarg; break;
        case 'c': ctxs = optarg; break;
        case 'q': co.questions = atoi(optarg); break;
        case 'Q': co.qtokens = atoi(optarg); break;
        case 'a': co.answer = atoi(optarg); break;
        case 'b': batch_at = optarg; break;
        case 's': co.state_dir = optarg; break;
        case 'k': co.keep = true; break;
        case 'W': co.width = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (!weights || (strcmp(weights, "full") && strcmp(weights, "tiny"))) goto usage;
    int64_t L[32], PL[32];
    int nl = parse_lengths(lens, L, 32), npl = parse_lengths(peer_lens, PL, 32);
    if (nl <= 0 || npl <= 0 || steps < 1) goto usage;

    sala_err e = {0};
    eng_config cfg;
    if (!strcmp(weights, "full")) config_full(&cfg);
    else config_tiny(&cfg);
    if (ctxs) {
        co.ncontext = parse_lengths(ctxs, co.context, 32);
        co.nbatch = parse_lengths(batch_at, co.batch_at, 32);
        if (co.ncontext <= 0 || co.nbatch <= 0 || co.questions < 0 || co.qtokens < 1 ||
            co.answer < 1 || co.width < 0 || co.width > 256)
            goto usage;
        return bench_gpu_context(&cfg, &co);
    }
    bench b = {0};
    int rc = SALA_OK;
    int32_t *tok = NULL;
    double ttft[32] = {0}, tps[32] = {0}, peak[32] = {0}, pt[32] = {0};
    b.be = eng_backend_get("cuda", &e);
    if (!b.be) {
        app_errorf("%s", e.msg);
        return EXIT_USER;
    }
    if (!b.be->model_random || !b.be->profile) {
        app_errorf("the cuda backend has no benchmark support");
        return EXIT_INTERNAL;
    }
    if (peer) {   /* the peer in the same run, first, before our weights take the memory */
        char cmd[4096], line[4096];
        snprintf(cmd, sizeof(cmd), "python3 '%s' --lengths ", peer);
        for (int i = 0; i < npl; i++)
            snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), "%s%lld", i ? "," : "",
                     (long long)PL[i]);
        FILE *p = popen(cmd, "r");
        if (!p) {
            app_errorf("cannot run %s", cmd);
        } else {
            while (fgets(line, sizeof(line), p)) {
                fputs(line, stdout);
                long long tk;
                double s;
                const char *q = strstr(line, "\"tokens\": ");
                const char *u = strstr(line, "\"ttft_s\": ");
                if (q && u && sscanf(q + 10, "%lld", &tk) == 1 && sscanf(u + 10, "%lf", &s) == 1)
                    for (int i = 0; i < npl; i++)
                        if (PL[i] == tk) pt[i] = s;
            }
            pclose(p);
        }
    }
    double t0 = sala_now();
    if ((rc = b.be->model_random(&cfg, 1, &b.bm, &e))) goto fail;
    eng_profile prof;
    b.be->profile(b.bm, -1, &prof);
    printf("sala bench gpu: %s random bf16 weights (%.2f GB) made on the GPU in %.1fs; "
           "device memory %.1f GiB\n", weights, prof.weight_bytes / 1e9, sala_now() - t0,
           prof.mem_total / 1073741824.0);
    b.vocab = cfg.vocab_size;
    int64_t Lmax = 8192;
    for (int i = 0; i < nl; i++) Lmax = SALA_MAX(Lmax, L[i]);
    tok = malloc((size_t)Lmax * sizeof(int32_t));
    b.logits = malloc((size_t)cfg.vocab_size * sizeof(float));
    if (!tok || !b.logits) {
        rc = sala_errf(&e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    eng_rng r;
    eng_rng_seed(&r, 7);
    for (int64_t i = 0; i < Lmax; i++) tok[i] = (int32_t)(3 + eng_rng_next(&r) % (cfg.vocab_size - 3));
    {   /* warm-up: library handles, cuBLAS heuristics, first-touch allocations */
        void *seq = NULL;
        double s;
        if ((rc = b.be->seq_new(b.bm, &seq, &e))) goto fail;
        rc = prefill(&b, seq, tok, SALA_MIN((int64_t)8192, Lmax), &s, &e);
        b.be->seq_free(seq);
        if (rc) goto fail;
    }
    for (int i = 0; i < nl; i++) {
        void *seq = NULL;
        if ((rc = b.be->seq_new(b.bm, &seq, &e))) goto fail;
        b.be->profile(b.bm, 1, NULL);
        rc = prefill(&b, seq, tok, L[i], &ttft[i], &e);
        if (!rc) {
            b.be->profile(b.bm, 0, &prof);
            peak[i] = prof.mem_peak / 1073741824.0;
            printf("  prefill %8lld tokens: TTFT %8.3f s  (%.0f tok/s)  peak %.1f GiB\n",
                   (long long)L[i], ttft[i], L[i] / ttft[i], peak[i]);
            print_profile(&prof, ttft[i]);
            printf("{\"bench\":\"sala_gpu_prefill\",\"tokens\":%lld,\"ttft_s\":%.4f,"
                   "\"peak_gib\":%.2f", (long long)L[i], ttft[i], peak[i]);
            for (int k = 0; k < prof.nops; k++)
                printf(",\"%s_s\":%.4f", prof.op_name[k], prof.op_seconds[k]);
            printf("}\n");
            fflush(stdout);
            if (L[i] == 32768 || L[i] == Lmax)
                rc = decode(&b, seq, steps, &tps[i], &e);
            if (!rc && tps[i] > 0) {
                printf("  decode at %8lld tokens: %.1f tokens/s (%d steps)\n", (long long)L[i],
                       tps[i], steps);
                printf("{\"bench\":\"sala_gpu_decode\",\"context\":%lld,\"tokens_per_s\":%.2f}\n",
                       (long long)L[i], tps[i]);
            }
        }
        b.be->seq_free(seq);
        fflush(stdout);
        if (rc) goto fail;
    }
    b.be->model_free(b.bm);
    b.bm = NULL;
    printf("\n| tokens | sala TTFT s | peak GiB | decode tok/s | peer dense-8B TTFT s | peer/sala |\n"
           "|---|---|---|---|---|---|\n");
    for (int i = 0; i < nl; i++) {
        double ps = 0;
        for (int k = 0; k < npl; k++)
            if (PL[k] == L[i]) ps = pt[k];
        printf("| %lld | %.3f | %.1f | ", (long long)L[i], ttft[i], peak[i]);
        if (tps[i] > 0) printf("%.1f | ", tps[i]);
        else printf("- | ");
        if (ps > 0) printf("%.3f | %.2fx |\n", ps, ps / ttft[i]);
        else printf("- | - |\n");
    }
    free(tok);
    free(b.logits);
    return EXIT_OK;
fail:
    app_errorf("%s", e.msg);
    if (b.bm) b.be->model_free(b.bm);
    free(tok);
    free(b.logits);
    return app_exit_code(rc);
usage:
    fputs("usage: sala bench gpu --random-weights full|tiny [--lengths 8K,32K,128K,256K,1M]\n"
          "                      [--decode N] [--peer bench/peer_dense8b.py] "
          "[--peer-lengths 8K,32K,64K,128K]\n"
          "       sala bench gpu --random-weights full|tiny --context 1M,256K [--questions 32]\n"
          "                      [--question-tokens 50] [--answer 32] [--batch-at 256K]\n"
          "                      [--batch-width W] [--state-dir /tmp] [--keep]\n", stderr);
    return EXIT_USER;
}
