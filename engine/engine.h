/* engine.h: the sala inference engine's public API (opaque handles).
 *
 *   eng_engine  a model directory loaded on one backend ("cpu" now, "cuda" later);
 *   eng_seq     one token sequence on an engine: its caches (sparse-layer K/V and compressed
 *               keys, lightning recurrent states) and scratch, sized once per sequence.
 *
 * Positions are implicit: a sequence of length L feeds its next token at position L.
 * prefill may be called repeatedly with any number of tokens; results do not depend on how a
 * prompt is split across calls (up to fp32 rounding in the lightning chunked form).
 *
 * Ownership: eng_engine_open returns an engine the caller frees with eng_engine_close after
 * every sequence on it is freed; eng_seq_new/eng_seq_fork return sequences freed with
 * eng_seq_free. Both free functions accept NULL. Every function returns SALA_OK or a negative
 * SALA_E* status with the reason in *e (which may be NULL); nothing prints. */
#ifndef SALA_ENGINE_H
#define SALA_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "engine/config.h"
#include "engine/sampler.h"

typedef struct eng_engine eng_engine;
typedef struct eng_seq eng_seq;

/* Open model directory dir on backend (NULL = "cpu"). */
int eng_engine_open(const char *dir, const char *backend, eng_engine **out, sala_err *e);
/* An engine over a model of configuration *c whose random weights the backend makes itself
 * (benchmarks: `sala bench gpu --context`); SALA_EUNSUP when the backend has no model_random.
 * No directory and no tokenizer; the fingerprint is xxh3 of the config, seeded with seed. */
int eng_engine_random(const eng_config *c, const char *backend, uint64_t seed, eng_engine **out,
                      sala_err *e);
void eng_engine_close(eng_engine *en);
const eng_config *eng_engine_config(const eng_engine *en);
const char *eng_engine_backend(const eng_engine *en);
/* The dtype this engine's backend writes for the sparse caches of a saved state
 * (ENG_STATE_F32 or ENG_STATE_BF16), and its name ("f32", "bf16") for file metadata. */
int eng_engine_state_dtype(const eng_engine *en);
const char *eng_state_dtype_name(int dtype);
/* DIR/tokenizer.json when the model directory has one, else NULL. */
const char *eng_engine_tokenizer_path(const eng_engine *en);

int eng_seq_new(eng_engine *en, eng_seq **out, sala_err *e);
void eng_seq_free(eng_seq *s);
int64_t eng_seq_len(const eng_seq *s);

/* Feed tokens[0..n). When nrows > 0, logits receives [nrows, vocab] floats: row r holds the
 * next-token logits after tokens[rows[r]] (rows ascending, each in [0, n)). Token ids outside
 * [0, vocab) are refused before anything changes. */
int eng_seq_prefill(eng_seq *s, const int32_t *tokens, int64_t n, const int64_t *rows,
                    int64_t nrows, float *logits, sala_err *e);
/* Feed one token; logits receives [vocab] floats (NULL: not wanted). */
int eng_seq_decode(eng_seq *s, int32_t token, float *logits, sala_err *e);
/* Feed one token and return in *next the token a greedy sampler (engine/sampler.h with
 * p->temperature <= 0; p->repetition_penalty over the ids recent[0..n)) picks from the next-token
 * logits, exactly as eng_sampler_sample would on the logits eng_seq_decode returns. A backend
 * that can pick on its device does so (no logits row leaves it); otherwise the logits go
 * through engine/sampler.c. Refuses (SALA_EINVAL, nothing changed) a non-greedy *p. */
int eng_seq_decode_greedy(eng_seq *s, int32_t token, const eng_sampler_params *p,
                          const int32_t *recent, int64_t n, int32_t *next, sala_err *e);

/* Feed one token to each of the distinct sequences s[0..n) (all on one engine, lengths may
 * differ): tokens[b] goes to s[b] at its own next position, logits receives [n, vocab] floats,
 * row b for s[b] (NULL: not wanted). A backend with a batched forward advances all of them in
 * one pass (the weights are read once for the n rows: GEMMs, norms and gates over n rows,
 * attention and recurrent states per sequence); otherwise this loops over eng_seq_decode.
 * Results equal n calls of eng_seq_decode up to fp32 rounding (GEMMs of n rows may sum in
 * another order). Each sequence's select hook sees its own selections; layer timers are not
 * fed. Everything is checked (ids, lengths, duplicates) before any sequence changes; on a
 * failure inside the forward the sequences' states are unspecified (free them). */
int eng_seq_decode_batch(eng_seq *const *s, int n, const int32_t *tokens, float *logits,
                         sala_err *e);
/* True when the backend decodes a batch in one forward (eng_seq_decode_batch is not a loop). */
bool eng_engine_batch_native(const eng_engine *en);

/* A sequence with the state of s, independent from then on: appending to either never changes
 * the other. The CPU backend copies the caches; the CUDA backend maps the chunks of s's sparse
 * caches that lie wholly below its length into the fork (shared, copy-on-write) and copies
 * only the chunk holding the boundary, so a fork costs O(one chunk) instead of O(length). */
int eng_seq_fork(eng_seq *s, eng_seq **out, sala_err *e);
/* Bytes of s's caches that are physically shared with other sequences (0 on backends that
 * copy; for benchmarks and tests). */
uint64_t eng_seq_shared_bytes(const eng_seq *s);
/* Save a checkpoint of the lightning states at the current length. */
int eng_seq_checkpoint(eng_seq *s, sala_err *e);
/* Number of checkpoints s holds (0 when the backend cannot tell). */
int64_t eng_seq_checkpoint_count(const eng_seq *s);
/* Rewind to the latest checkpoint at or below len (0 always qualifies) and return the length
 * reached in *reached; the caller prefills the rest again. Linear states cannot be rewound
 * otherwise. len > current length is refused. */
int eng_seq_truncate(eng_seq *s, int64_t len, int64_t *reached, sala_err *e);

/* ---- persisted state (cached contexts; docs/CONTEXTS.md) ----
 * A sequence is exported as named sections through a callback, so that the caller chooses the
 * container (engine/statefile.h) and a backend can stream each piece to or from its device as
 * it goes. Sections, all little-endian; lin.S and ckpt.S are always fp32 (IEEE binary32), the
 * sparse caches (K, V, K1, K2) are of the header's dtype: 0 = f32, 1 = bf16 (the upper 16 bits
 * of the fp32 value, rounded to nearest even). The CPU backend saves f32 (what it holds), the
 * CUDA backend bf16 (what it holds); both load either (CPU widens bf16 exactly).
 *   eng.header   ENG_STATE_MAGIC (8 bytes), u32 version, u32 dtype (ENG_STATE_F32/BF16),
 *                i64 len, i64 nckpt, then nckpt x i64 checkpoint lengths (ascending)
 *   lin.S        f32 [n_lightning, lightning_nh, lhd, lhd]   lightning states at len
 *   ckpt.S       f32 [nckpt, n_lightning, lightning_nh, lhd, lhd]  the checkpoints' states
 *   sparse.K     dtype [n_sparse][len, nkv, hd]      keys, layer after layer
 *   sparse.V     dtype [n_sparse][len, nkv, hd]
 *   sparse.K1    dtype [n_sparse][w1(len), nkv, hd]  compressed keys (w1 = complete windows of
 *   sparse.K2    dtype [n_sparse][w2(len), nkv, hd]   kernel k / stride s; w2 of 4k / 4s)
 * A section is written in one or more consecutive calls with the same name (one per layer for
 * the sparse ones). Readers are asked for byte ranges. */
#define ENG_STATE_MAGIC "SALASEQ1"
#define ENG_STATE_F32 0
#define ENG_STATE_BF16 1
#define ENG_STATE_VERSION 1
typedef int (*eng_state_write_fn)(void *ud, const char *section, const void *data, size_t n,
                                  sala_err *e);
typedef struct {
    /* Size of a section in bytes (SALA_ENOTFOUND when absent). */
    int (*size)(void *ud, const char *section, size_t *n, sala_err *e);
    /* Read n bytes at byte offset off of a section into dst (checksums are the reader's).
     * A backend may call it from several threads at once (disjoint ranges): it must allow that. */
    int (*read)(void *ud, const char *section, size_t off, void *dst, size_t n, sala_err *e);
    void *ud;
} eng_state_reader;

/* Write s (its length, lightning states, checkpoints and sparse caches) as the sections above.
 * Stops at the first error of fn and returns it. s is not changed. */
int eng_seq_save(eng_seq *s, eng_state_write_fn fn, void *ud, sala_err *e);
/* A new sequence on en with the state r holds. The header and every section size are checked
 * against en's config before anything is allocated (a mismatch names the section, expected and
 * actual sizes); *out is freed with eng_seq_free. */
int eng_seq_load(eng_engine *en, const eng_state_reader *r, eng_seq **out, sala_err *e);
/* Bytes a state of len tokens with nckpt checkpoints takes with sparse caches of dtype
 * (ENG_STATE_F32 or ENG_STATE_BF16; for disk budgets), or 0 on overflow or an unknown dtype. */
uint64_t eng_state_bytes(const eng_config *c, int64_t len, int64_t nckpt, int dtype);
/* Bytes of one checkpoint (the lightning states). */
uint64_t eng_state_ckpt_bytes(const eng_config *c);
/* xxh3-64 of config.json and every tensor header: what a persisted state must match. */
uint64_t eng_engine_fingerprint(const eng_engine *en);

/* Optional observers of later forward calls (NULL fn: off).
 * select: every InfLLM-V2 block selection (see engine/backend.h eng_select_fn).
 * layer_seconds: [num_hidden_layers] accumulators of time spent per layer. */
typedef void (*eng_select_fn)(void *ud, int layer, int group, int64_t pos, const int32_t *blocks,
                              int n);
void eng_seq_set_select_hook(eng_seq *s, eng_select_fn fn, void *ud);
void eng_seq_set_layer_timer(eng_seq *s, double *layer_seconds);

#endif
