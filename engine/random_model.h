/* random_model.h: write a model directory in the real format (config.json, model.safetensors
 * with random bf16 weights, optionally a tokenizer.json copy) for tests and benchmarks.
 * Weight recipe (like ../shared/golden): projections N(0, 1/fan_in), sparse q/k 1.5x that std,
 * embedding N(0, 0.01), lm_head std 4*(hidden/dim_model_base)/sqrt(hidden), norm weights
 * 1 + 0.1 N(0,1), so that activations stay healthy and logits have std about 4. */
#ifndef SALA_RANDOM_MODEL_H
#define SALA_RANDOM_MODEL_H

#include <stdint.h>

#include "common.h"

int eng_random_model_write(const char *config_path, const char *out_dir, uint64_t seed,
                           const char *tokenizer_path, sala_err *e);

/* A small deterministic generator (xoshiro256**), also used by tests. */
typedef struct { uint64_t s[4]; } eng_rng;
void eng_rng_seed(eng_rng *r, uint64_t seed);
uint64_t eng_rng_next(eng_rng *r);
double eng_rng_uniform(eng_rng *r);   /* [0, 1) */
double eng_rng_normal(eng_rng *r);    /* N(0, 1) */

#endif
