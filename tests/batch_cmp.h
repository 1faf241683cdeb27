/* batch_cmp.h: batched decode (eng_seq_decode_batch) against one-by-one decode (eng_seq_decode)
 * of the same sequences, on any backend: the CPU suite asks for bitwise equality (its batch is a
 * loop), the CUDA suite for its stated tolerance (GEMMs over n rows may sum in another order). */
#ifndef SALA_TEST_BATCH_CMP_H
#define SALA_TEST_BATCH_CMP_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct {
    double row_rel;          /* worst per-row relative L2 of batched vs single logits */
    double max_abs;          /* worst |Δlogit| */
    bool bitwise;            /* every logit identical */
    int64_t tok_diff;        /* greedy tokens that differ (any margin) */
    int64_t tok_checked;     /* greedy tokens whose single-path top-1/top-2 margin > margin */
    int64_t tok_bad;         /* ... of which differ */
    int64_t sel_calls[2];    /* select-hook calls: batched, single */
    int sel_seq_differ;      /* sequences whose selections (hash of every call) differ */
} batch_cmp;

/* Prefill n sequences of lengths lens[] (random tokens from seed, a different stream each)
 * twice on en; advance one set with eng_seq_decode_batch, the other with eng_seq_decode, steps
 * times, both fed the batched path's greedy tokens; select hooks on every sequence. 0 when
 * everything ran, -1 (message on stderr) otherwise. */
int batch_compare(eng_engine *en, const int64_t *lens, int n, int steps, uint64_t seed,
                  double margin, batch_cmp *r);

#endif
