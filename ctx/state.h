/* state.h (internal to ctx/): save and open a context's state file (ctx/state.c). */
#ifndef SALA_CTX_STATE_H
#define SALA_CTX_STATE_H

#include "ctx/ctx_int.h"
#include "engine/statefile.h"

/* Write seq (length p->n) with the prefix ids and document table to path, atomically. */
int ctx_state_save(const char *path, const ctx_model *m, const char *tokens_hex,
                   const char *corpus, const ctx_prefix *p, eng_seq *seq, sala_err *e);
/* Open path expecting format, model, tokenizer and (when tokens_hex != NULL) token stream. */
int ctx_state_open(const char *path, const ctx_model *m, const char *tokens_hex,
                   sf_reader **out, sala_err *e);
/* A new sequence from the state (every chunk read is checksummed). */
int ctx_state_load(sf_reader *r, const ctx_model *m, eng_seq **seq, sala_err *e);
/* The prefix token ids of the state (malloc'ed). */
int ctx_state_ids(sf_reader *r, int32_t **ids, int64_t *n, sala_err *e);
uint64_t ctx_file_size(const char *path);

#endif
