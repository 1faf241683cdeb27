/* backend.h: the interface every compute backend implements (ggml-style table of function
 * pointers), and the registry that finds one by name. engine.c is the only user; nothing outside
 * engine/backend.c knows which backends exist (the CPU one is linked in, the CUDA one is a
 * shared object loaded on demand).
 *
 * A backend sees the opened model (engine/model.h: config + mmap'ed tensor views) and keeps its
 * own private state behind void pointers:
 *   model state  from model_load, freed by model_free (the eng_model outlives it);
 *   seq state    from seq_new/seq_fork, freed by seq_free (the model state outlives it).
 * Every entry returns SALA_OK or a negative status with the reason in *e, never prints. */
#ifndef SALA_BACKEND_H
#define SALA_BACKEND_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/model.h"

/* eng_select_fn is called once for every InfLLM-V2 block selection the forward pass makes
 * (layer = absolute layer index, group = kv group, pos = absolute query position, blocks[0..n)
 * ascending block ids, padded with -1 up to n = topk + window/block). Backends call it from one
 * thread, per layer in order of position, then group. */
/* A greedy pick in place of a decode step's logits row (eng_seq_decode_greedy): the argmax of
 * the row after the repetition penalty over the ids recent[0..nrecent) (engine/sampler.h's
 * greedy rule: a distinct id's logit divided by penalty when positive, multiplied when
 * negative; penalty 1: none; ids outside [0, vocab) ignored; ties to the lowest id) goes to
 * *next. */
typedef struct {
    float penalty;
    const int32_t *recent;
    int64_t nrecent;
    int32_t *next;
} eng_pick;

/* One forward call: the tokens at positions len .. len+n-1 of the sequence. */
typedef struct {
    const int32_t *tokens;      /* [n], already checked to lie in [0, vocab) */
    int64_t n;
    const int64_t *rows;        /* [nrows] ascending indices into tokens whose logits are wanted */
    int64_t nrows;
    float *logits;              /* [nrows, vocab] out, or NULL when nrows == 0 */
    eng_select_fn select_fn;    /* optional */
    void *select_ud;
    double *layer_seconds;      /* optional [num_hidden_layers]: time spent per layer is added */
    const eng_pick *pick;       /* optional, only where pick_native says so: n == 1, nrows == 1,
                                   logits NULL; the row's greedy pick instead of its logits */
} eng_forward_args;

/* The last layer's output feeds only the logits, so a forward step of T tokens whose wanted
 * rows are rows[0..nrows) (ascending, into the step) needs that layer's mixer output, o_proj and
 * MLP only from its first wanted row on; its caches (K/V, compressed keys, linear state) still
 * take all T tokens. Returns that first token: T when no row is wanted, 0 when a selection hook
 * is set (it reports every query's blocks) or SALA_TAIL=full (read per step: the whole layer,
 * for comparisons). Both backends use it, the CUDA one from its shared object, so it is inline. */
static inline int64_t eng_tail_from(const eng_forward_args *a, int64_t T, const int64_t *rows,
                                    int64_t nrows)
{
    const char *v = getenv("SALA_TAIL");
    if (a->select_fn || (v && !strcmp(v, "full"))) return 0;
    return nrows > 0 ? rows[0] : T;
}

/* One batched decode step (forward_batch): n sequences, one token each. */
typedef struct {
    const int32_t *tokens;      /* [n], already checked to lie in [0, vocab) */
    int n;
    float *logits;              /* [n, vocab] out, row b for sequence b, or NULL */
    const eng_select_fn *select_fn;   /* [n] per sequence (entries may be NULL) */
    void *const *select_ud;     /* [n] */
} eng_batch_args;

/* Benchmark profile of a backend (optional entry `profile`): accumulated device seconds per op
 * category and memory high-water mark (bytes in use on the device). */
typedef struct {
    int nops;
    const char *op_name[9];
    double op_seconds[9];
    uint64_t mem_peak, mem_total, weight_bytes;
} eng_profile;

/* Most sequences one forward_batch call carries (engine.c splits larger batches). */
#define ENG_BATCH_MAX 256

typedef struct eng_backend {
    const char *name;
    int (*model_load)(const eng_model *m, void **bm, sala_err *e);
    void (*model_free)(void *bm);
    int (*seq_new)(void *bm, void **bs, sala_err *e);
    void (*seq_free)(void *bs);
    /* A new sequence with the same state (length, caches, checkpoints) as bs. */
    int (*seq_fork)(void *bs, void **out, sala_err *e);
    int64_t (*seq_len)(const void *bs);
    /* Save the recurrent (lightning) states at the current length. */
    int (*seq_checkpoint)(void *bs, sala_err *e);
    /* Go back to the latest checkpoint at or below len (length 0 always qualifies); *reached
     * receives the length actually restored. */
    int (*seq_truncate)(void *bs, int64_t len, int64_t *reached, sala_err *e);
    int (*forward)(void *bs, const eng_forward_args *a, sala_err *e);
    /* Optional (NULL where absent; benchmarks only). model_random: a model of configuration *c
     * with random weights made by the backend itself, freed by model_free. profile: when out is
     * not NULL, read the profile; then enable >= 0 resets it and turns per-op timing on (1:
     * device events around each launch), kernel timing on (2: the kernels' own device time,
     * CUDA through CUPTI; an error where unavailable), or off (0). */
    int (*model_random)(const eng_config *c, uint64_t seed, void **bm, sala_err *e);
    int (*profile)(void *bm, int enable, eng_profile *out);
    /* Persisted state (engine/engine.h "persisted state" for the sections and layouts).
     * seq_save writes lin.S, ckpt.S, sparse.K/V/K1/K2 in that order through fn (engine.c
     * writes eng.header first). seq_load builds a new sequence of length len with the given
     * checkpoint lengths from r, whose sparse sections are of the given dtype (ENG_STATE_F32 or
     * ENG_STATE_BF16; a backend must read both); engine.c has already checked the dtype and
     * every section size against the config, so the backend only reads (e.g. one layer piece
     * at a time, uploading each as it arrives). */
    /* Number of checkpoints; their lengths (ascending) go to lens[0..min(n, cap)). */
    int64_t (*seq_ckpt_lens)(const void *bs, int64_t *lens, int64_t cap);
    int (*seq_save)(void *bs, eng_state_write_fn fn, void *ud, sala_err *e);
    int (*seq_load)(void *bm, int64_t len, const int64_t *ckpt_len, int64_t nckpt, int dtype,
                    const eng_state_reader *r, void **out, sala_err *e);
    /* The dtype of the sparse sections seq_save writes (engine.c puts it in eng.header). */
    int state_dtype;
    /* Optional (NULL: engine.c loops over forward). Advance the distinct sequences bs[0..n)
     * of this model by one token each in one pass (engine/engine.h eng_seq_decode_batch);
     * n <= ENG_BATCH_MAX, each length + 1 already checked against max_position_embeddings. */
    int (*forward_batch)(void *const *bs, const eng_batch_args *a, sala_err *e);
    /* Optional: bytes of the sequence's caches shared with other sequences (forks). */
    uint64_t (*seq_shared_bytes)(const void *bs);
    /* Optional (NULL: no): whether forward takes eng_forward_args.pick now (a backend may read
     * a switch here, so callers ask before each step). Where it does not, engine.c computes
     * the pick from the logits with engine/sampler.c. */
    bool (*pick_native)(void *bm);
} eng_backend;

/* The profile entry of en's backend (benchmarks): as `profile` above; SALA_EUNSUP when the
 * backend has none. */
int eng_engine_profile(eng_engine *en, int enable, eng_profile *out);

/* Find a backend by name ("cpu", "cuda"). NULL name means "cpu". On failure returns NULL with
 * the reason in *e (unknown name; "CUDA backend not available: <reason>"). */
const eng_backend *eng_backend_get(const char *name, sala_err *e);

/* The CPU backend's table (engine/cpu/cpu_backend.c); only the registry refers to it. */
extern const eng_backend eng_cpu_backend;

#endif
