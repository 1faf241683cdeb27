/* config.h: the model's config.json (SALA-SPEC §1.1), parsed and checked.
 * Every field the forward pass uses is required; contradictions and values this engine does not
 * implement are refused with a message naming config.json, the field and the value. */
#ifndef SALA_CONFIG_H
#define SALA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

typedef enum { ENG_MIXER_SPARSE = 0, ENG_MIXER_LIGHTNING = 1 } eng_mixer;

#define ENG_MAX_LAYERS 1024
#define ENG_MAX_EOS 16

typedef struct {
    int64_t block_size, dense_len, init_blocks, kernel_size, kernel_stride, topk, window_size;
    bool use_nope;
} eng_sparse_config;

typedef struct {
    int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads, num_key_value_heads, head_dim;      /* sparse layers */
    int64_t lightning_nh, lightning_nkv, lightning_head_dim;         /* lightning layers */
    int64_t max_position_embeddings;
    double rms_norm_eps, rope_theta, scale_emb, scale_depth, dim_model_base;
    int32_t bos_token_id, pad_token_id;
    int32_t eos_token_ids[ENG_MAX_EOS];
    int n_eos;
    eng_sparse_config sparse;
    eng_mixer mixer[ENG_MAX_LAYERS];
    int n_sparse, n_lightning;
} eng_config;

/* Parse config.json text; `label` names the file in messages. */
int eng_config_parse(const char *json, size_t len, const char *label, eng_config *c, sala_err *e);
int eng_config_load(const char *path, eng_config *c, sala_err *e);

/* Derived constants (SALA-SPEC §3.1, §3.6). */
double eng_config_residual_scale(const eng_config *c);   /* scale_depth / sqrt(layers) */
double eng_config_logit_scale(const eng_config *c);      /* dim_model_base / hidden */
int64_t eng_config_topk_blocks(const eng_config *c);     /* topk + window/block */
/* The lightning layers' fixed decay slopes (λ_n = exp(-slope_n)) for nh heads: the ALiBi
 * slopes of SALA-SPEC §3.5 (_build_slope_tensor). Shared by every backend. */
void eng_alibi_slopes(float *slope, int64_t nh);
/* "S L L S" style layer layout into buf. */
void eng_config_layout(const eng_config *c, char *buf, size_t cap);

#endif
