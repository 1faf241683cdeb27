/* tokenizer_int.h: internals shared by tokenizer.c and prompt.c (not a public API).
 * encode_ranges is tok_encode with one extra rule: a special added token written in the text is
 * matched only when it lies wholly inside one of the `trusted` byte ranges (the prompt
 * template's own text); TOK_SPECIAL is ignored when trusted is given. */
#ifndef SALA_TOKENIZER_INT_H
#define SALA_TOKENIZER_INT_H

#include "ingest/tokenizer.h"

typedef struct { size_t start, end; } tok_range;

int tok_encode_ranges(const tok_tokenizer *t, const char *text, size_t len, unsigned flags,
                      const tok_range *trusted, size_t n_trusted, tok_ids *out, sala_err *e);

/* Ensure room for `more` tokens in out (spans too when TOK_SPANS is in flags). */
int tok_ids_reserve(tok_ids *out, size_t more, unsigned flags, sala_err *e);

/* Length of the UTF-8 sequence at s[0..n) if it is well-formed (1..4), else 0; *bad then gets
 * the length of the maximal ill-formed subpart (>= 1), which the encoder reads as U+FFFD. */
size_t tok_utf8_len(const unsigned char *s, size_t n, size_t *bad);

#endif
