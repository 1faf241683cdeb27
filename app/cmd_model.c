/* cmd_model.c: `sala model info DIR` and `sala model random --config C --out DIR`. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/random_model.h"

SALA_COMMAND(model, "inspect a model directory or write one with random weights");

const char cmd_model_usage[] =
    "usage: sala model info DIR\n"
    "       sala model random --config CONFIG.json --out DIR [--seed S] [--tokenizer FILE]\n\n"
    "info    check a Hugging Face MiniCPM-SALA directory (config.json, model.safetensors or\n"
    "        shards + model.safetensors.index.json) and print its configuration, layer layout,\n"
    "        parameter count, bytes on disk, dtypes and shard count.\n"
    "random  write a model directory in the real format with random bf16 weights for tests\n"
    "        and benchmarks; --tokenizer copies a tokenizer.json into it.\n";

static void human(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

static int model_info(const char *dir)
{
    eng_model *m;
    sala_err e;
    int rc = eng_model_open(dir, &m, &e);
    if (rc) {
        app_errorf("%s", e.msg);
        return app_exit_code(rc);
    }
    const eng_config *c = &m->cfg;
    char layout[2 * ENG_MAX_LAYERS + 4], sz[32];
    eng_config_layout(c, layout, sizeof(layout));
    human((double)m->bytes_on_disk, sz, sizeof(sz));
    printf("model        %s\n", dir);
    printf("layers       %lld (%d sparse InfLLM-V2, %d lightning)\n", (long long)c->num_hidden_layers,
           c->n_sparse, c->n_lightning);
    printf("layout       %s\n", layout);
    printf("hidden       %lld, intermediate %lld, vocab %lld\n", (long long)c->hidden_size,
           (long long)c->intermediate_size, (long long)c->vocab_size);
    printf("sparse attn  %lld q heads / %lld kv heads x %lld, NoPE, output gate\n",
           (long long)c->num_attention_heads, (long long)c->num_key_value_heads, (long long)c->head_dim);
    printf("lightning    %lld heads x %lld, RoPE theta %g, qk-norm, output norm + gate\n",
           (long long)c->lightning_nh, (long long)c->lightning_head_dim, c->rope_theta);
    printf("InfLLM-V2    block %lld, kernel %lld/%lld, init %lld, topk %lld + window %lld "
           "(%lld blocks), dense below %lld tokens\n",
           (long long)c->sparse.block_size, (long long)c->sparse.kernel_size,
           (long long)c->sparse.kernel_stride, (long long)c->sparse.init_blocks,
           (long long)c->sparse.topk, (long long)c->sparse.window_size,
           (long long)eng_config_topk_blocks(c), (long long)c->sparse.dense_len);
    printf("muP          scale_emb %g, residual %.6g, logits x %.6g\n", c->scale_emb,
           eng_config_residual_scale(c), eng_config_logit_scale(c));
    printf("tokens       bos %d, eos", c->bos_token_id);
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_token_ids[i]);
    printf(", max positions %lld\n", (long long)c->max_position_embeddings);
    printf("parameters   %lld (%.3f B)\n", (long long)m->n_params, (double)m->n_params / 1e9);
    printf("tensors      %zu", m->n_tensors);
    if (m->n_extra) printf(" (%zu unexpected, ignored)", m->n_extra);
    printf(", dtypes");
    for (int t = 0; t < ST_NDTYPE; t++)
        if (m->dtype_count[t]) printf(" %s x%zu", st_dtype_name((st_dtype)t), m->dtype_count[t]);
    printf("\n");
    printf("files        %zu safetensors file%s, %s on disk\n", m->nfiles, m->nfiles == 1 ? "" : "s", sz);
    printf("tokenizer    %s\n", m->tokenizer_path ? m->tokenizer_path : "(none in the directory)");
    printf("fingerprint  %016llx\n", (unsigned long long)m->fingerprint);
    eng_model_close(m);
    return EXIT_OK;
}

static int model_random(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"out", required_argument, 0, 'o'},
        {"seed", required_argument, 0, 's'},   {"tokenizer", required_argument, 0, 't'},
        {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL, *tok = NULL;
    unsigned long long seed = 1;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:o:s:t:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'o': out = optarg; break;
        case 't': tok = optarg; break;
        case 's': {
            char *end;
            seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg) {
                app_errorf("model random: --seed takes a non-negative integer");
                return EXIT_USER;
            }
            break;
        }
        default: fputs(cmd_model_usage, stderr); return EXIT_USER;
        }
    }
    if (!config || !out || optind != argc) {
        fputs(cmd_model_usage, stderr);
        return EXIT_USER;
    }
    sala_err e;
    int rc = eng_random_model_write(config, out, seed, tok, &e);
    if (rc) {
        app_errorf("%s", e.msg);
        return app_exit_code(rc);
    }
    printf("wrote %s (seed %llu)\n", out, seed);
    return EXIT_OK;
}

int cmd_model(int argc, char **argv)
{
    if (argc < 2 || app_wants_help(argc, argv)) {
        fputs(cmd_model_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USER : EXIT_OK;
    }
    if (!strcmp(argv[1], "info")) {
        if (argc != 3) {
            fputs(cmd_model_usage, stderr);
            return EXIT_USER;
        }
        return model_info(argv[2]);
    }
    if (!strcmp(argv[1], "random")) return model_random(argc - 1, argv + 1);
    app_errorf("model: unknown subcommand '%s'", argv[1]);
    return EXIT_USER;
}
