/* sampler.h: next-token choice from a logits row: greedy, temperature, top-k, top-p (nucleus)
 * and repetition penalty, driven by a seeded generator so that a run is reproducible.
 *
 * Order of operations (as Hugging Face's logits processors): repetition penalty (a seen token's
 * logit is divided by the penalty when positive, multiplied when negative), then temperature,
 * then top-k, then top-p over the softmax of what remains, then a draw. temperature <= 0 means
 * greedy (argmax after the penalty; ties: lowest id).
 *
 * Ownership: eng_sampler_new returns a sampler (with its vocab-sized scratch, allocated once)
 * freed by eng_sampler_free (NULL ok). */
#ifndef SALA_SAMPLER_H
#define SALA_SAMPLER_H

#include <stdint.h>

#include "common.h"

typedef struct {
    float temperature;         /* <= 0: greedy */
    int top_k;                 /* <= 0: off */
    float top_p;               /* >= 1: off */
    float repetition_penalty;  /* 1: off; must be > 0 */
    uint64_t seed;
} eng_sampler_params;

typedef struct eng_sampler eng_sampler;

int eng_sampler_new(const eng_sampler_params *p, int64_t vocab, eng_sampler **out, sala_err *e);
void eng_sampler_free(eng_sampler *s);
/* Choose a token from logits [vocab] (not modified), given the tokens seen so far
 * (history[0..nhist), for the repetition penalty). */
int32_t eng_sampler_sample(eng_sampler *s, const float *logits, const int32_t *history,
                           int64_t nhist);

#endif
