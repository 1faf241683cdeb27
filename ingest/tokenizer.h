/* tokenizer.h: the MiniCPM tokenizer (Hugging Face tokenizer.json: BPE with byte fallback),
 * identical in output to the `tokenizers` library, plus decoding and the ChatML prompt builder.
 *
 * Ownership: tok_load returns a tokenizer the caller frees with tok_free (NULL is a no-op).
 * A loaded tokenizer is immutable: encode/decode may run from several threads at once.
 * Every function returns SALA_OK or a negative SALA_E* status with the reason in *e. */
#ifndef SALA_TOKENIZER_H
#define SALA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct tok_tokenizer tok_tokenizer;

/* Byte span [start, end) of the input text that one token came from. */
typedef struct { uint32_t start, end; } tok_span;

/* A growable output of encode; reuse it across calls, release with tok_ids_free. */
typedef struct {
    int32_t *ids;
    tok_span *spans;   /* filled only when TOK_SPANS is asked for */
    size_t n, cap;
} tok_ids;

enum {
    TOK_BOS = 1 << 0,      /* run the post-processor: prepend <s> */
    TOK_SPECIAL = 1 << 1,  /* match added/special tokens written in the text (prompt templates
                              only; document text is encoded without it, so it can never
                              produce control tokens such as <|im_end|>) */
    TOK_SPANS = 1 << 2,    /* also fill spans */
};

int tok_load(const char *path, tok_tokenizer **out, sala_err *e);
void tok_free(tok_tokenizer *t);

/* Append the tokens of text[0..len) to out (out->n grows). */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, unsigned flags, tok_ids *out,
               sala_err *e);
void tok_ids_free(tok_ids *ids);

#endif
