/* bench_cpu.c: `sala bench cpu`: CPU engine prefill and decode speed on a model directory, and
 * the time of one real-width layer of each kind (SALA-SPEC §2.2 shapes, random bf16 weights). */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "engine/engine.h"
#include "engine/random_model.h"

const char bench_cpu_usage[] =
    "usage: sala bench cpu --model DIR [--prefill N] [--decode N] [--layers]\n"
    "       sala bench cpu --real-layers DIR [--prefill N]\n\n"
    "--model        prefill N tokens (default 1024) in one call, then decode N tokens (default\n"
    "               64) one at a time; prints tokens/s of each. --layers also prints the prefill\n"
    "               time of every layer.\n"
    "--real-layers  writes into DIR (once) a 2-layer model of the real widths (hidden 4096,\n"
    "               intermediate 16384, 32 heads x 128, sparse kv 2; layer 0 InfLLM-V2, layer 1\n"
    "               Lightning; vocab 1024) with random bf16 weights, prefills N tokens (default\n"
    "               4096) and prints the time of each layer.\n";

/* Real widths of SALA-SPEC §1.1, two layers, a small vocabulary. */
static const char real_config[] =
    "{\"architectures\": [\"MiniCPMSALAForCausalLM\"], \"attention_bias\": false,\n"
    " \"attn_use_output_gate\": true, \"attn_use_rope\": false, \"bos_token_id\": 1,\n"
    " \"dim_model_base\": 256, \"eos_token_id\": [2], \"head_dim\": 128,\n"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"intermediate_size\": 16384,\n"
    " \"lightning_head_dim\": 128, \"lightning_nh\": 32, \"lightning_nkv\": 32,\n"
    " \"lightning_scale\": \"1/sqrt(d)\", \"lightning_use_rope\": true,\n"
    " \"max_position_embeddings\": 524288, \"mixer_types\": [\"minicpm4\", \"lightning-attn\"],\n"
    " \"model_type\": \"minicpm_sala\", \"num_attention_heads\": 32, \"num_hidden_layers\": 2,\n"
    " \"num_key_value_heads\": 2, \"pad_token_id\": 2, \"qk_norm\": true, \"rms_norm_eps\": 1e-06,\n"
    " \"rope_scaling\": null, \"rope_theta\": 10000.0, \"scale_depth\": 1.4, \"scale_emb\": 12,\n"
    " \"sparse_config\": {\"block_size\": 64, \"dense_len\": 8192, \"init_blocks\": 1,\n"
    "   \"kernel_size\": 32, \"kernel_stride\": 16, \"topk\": 64, \"use_nope\": false,\n"
    "   \"window_size\": 2048},\n"
    " \"tie_word_embeddings\": false, \"use_output_gate\": true, \"use_output_norm\": true,\n"
    " \"vocab_size\": 1024}\n";

static int make_real(const char *dir, sala_err *e)
{
    char cfg[4200], probe[4200];
    snprintf(probe, sizeof(probe), "%s/model.safetensors", dir);
    FILE *f = fopen(probe, "rb");
    if (f) {
        fclose(f);
        return SALA_OK;   /* written by an earlier run */
    }
    snprintf(cfg, sizeof(cfg), "%s.config.json", dir);
    f = fopen(cfg, "w");
    if (!f) return sala_errf(e, SALA_EIO, "%s: cannot write", cfg);
    fputs(real_config, f);
    if (fclose(f)) return sala_errf(e, SALA_EIO, "%s: cannot write", cfg);
    fprintf(stderr, "writing a real-width 2-layer model with random bf16 weights to %s ...\n", dir);
    return eng_random_model_write(cfg, dir, 1, NULL, e);
}

int bench_cpu(int argc, char **argv)
{
    const char *model = NULL, *real = NULL;
    long long npre = -1, ndec = 64;
    bool layers = false;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"real-layers", required_argument, 0, 'r'},
        {"prefill", required_argument, 0, 'p'}, {"decode", required_argument, 0, 'd'},
        {"layers", no_argument, 0, 'l'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'r': real = optarg; break;
        case 'p': npre = strtoll(optarg, &end, 10); if (*end || npre < 1) goto usage; break;
        case 'd': ndec = strtoll(optarg, &end, 10); if (*end || ndec < 0) goto usage; break;
        case 'l': layers = true; break;
        case 'h': fputs(bench_cpu_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    if (!!model == !!real || optind != argc) goto usage;
    sala_err e = {0};
    int rc = SALA_OK;
    eng_engine *en = NULL;
    eng_seq *seq = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    double *lsec = NULL;
    if (real) {
        if ((rc = make_real(real, &e))) goto fail;
        model = real;
        layers = true;
        ndec = 0;
        if (npre < 0) npre = 4096;
    }
    if (npre < 0) npre = 1024;
    if ((rc = eng_engine_open(model, "cpu", &en, &e))) goto fail;
    const eng_config *c = eng_engine_config(en);
    ids = malloc((size_t)(npre + ndec + 1) * sizeof(int32_t));
    logits = malloc((size_t)c->vocab_size * sizeof(float));
    lsec = calloc((size_t)c->num_hidden_layers, sizeof(double));
    if (!ids || !logits || !lsec) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
    eng_rng rng;
    eng_rng_seed(&rng, 5);
    for (long long i = 0; i < npre + ndec; i++)
        ids[i] = i ? 3 + (int32_t)(eng_rng_next(&rng) % (uint64_t)(c->vocab_size - 3)) : 1;
    if ((rc = eng_seq_new(en, &seq, &e))) goto fail;
    if (layers) eng_seq_set_layer_timer(seq, lsec);
    int64_t last = npre - 1;
    double t0 = sala_now();
    if ((rc = eng_seq_prefill(seq, ids, npre, &last, 1, logits, &e))) goto fail;
    double tp = sala_now() - t0;
    eng_seq_set_layer_timer(seq, NULL);
    t0 = sala_now();
    for (long long i = 0; i < ndec; i++)
        if ((rc = eng_seq_decode(seq, ids[npre + i], logits, &e))) goto fail;
    double td = sala_now() - t0;
    printf("model     %s (%lld layers, hidden %lld)\n", model, (long long)c->num_hidden_layers,
           (long long)c->hidden_size);
    printf("prefill   %lld tokens in %.3f s: %.1f tokens/s\n", npre, tp, (double)npre / tp);
    if (ndec)
        printf("decode    %lld tokens after %lld in %.3f s: %.2f tokens/s (%.1f ms/token)\n", ndec,
               npre, td, (double)ndec / td, 1e3 * td / (double)ndec);
    if (layers)
        for (int64_t l = 0; l < c->num_hidden_layers; l++)
            printf("layer %-3lld %-9s %8.3f s for %lld tokens (%.1f tokens/s)\n", (long long)l,
                   c->mixer[l] == ENG_MIXER_SPARSE ? "sparse" : "lightning", lsec[l], npre,
                   (double)npre / lsec[l]);
fail:
    if (rc) app_errorf("%s", e.msg);
    eng_seq_free(seq);
    eng_engine_close(en);
    free(ids);
    free(logits);
    free(lsec);
    return app_exit_code(rc);
usage:
    fputs(bench_cpu_usage, stderr);
    return EXIT_USER;
}
