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

/* Read a Hugging Face tokenizer.json. Supported: model BPE (merges as "a b" strings or ["a","b"]
 * pairs, byte_fallback, unk_token, fuse_unk, ignore_merges, dropout null or 0); normalizer null,
 * Prepend, Replace (a one-character String pattern) or a Sequence of those; pre_tokenizer null;
 * post_processor null or TemplateProcessing; decoder Replace (String pattern), ByteFallback,
 * Fuse, Strip or a Sequence of those; added tokens with lstrip/rstrip/single_word false and
 * (for non-special ones) normalized false. Anything else is refused with SALA_EUNSUP and a
 * message naming the component or option; malformed files give SALA_EFORMAT naming the field. */
int tok_load(const char *path, tok_tokenizer **out, sala_err *e);
/* Same from a buffer; name is used in messages only. json need not be NUL-terminated. */
int tok_load_buffer(const char *json, size_t len, const char *name, tok_tokenizer **out,
                    sala_err *e);
void tok_free(tok_tokenizer *t);

/* Append the tokens of text[0..len) to out (out->n grows). */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, unsigned flags, tok_ids *out,
               sala_err *e);
void tok_ids_free(tok_ids *ids);

/* Encoding rules, identical to the `tokenizers` library on valid UTF-8:
 * - Added tokens are found leftmost-longest in the raw text. Special ones split the text only
 *   with TOK_SPECIAL (without it they are plain text, as HF `encode_special_tokens=True`);
 *   non-special ones always split, as in HF. Each piece between them is normalized and
 *   BPE-encoded on its own (so Prepend("▁") applies to every non-empty piece).
 * - Invalid UTF-8 (HF refuses it; documents may carry it): every maximal ill-formed
 *   subsequence (Unicode §3.9, the policy of Python's errors="replace") is read as U+FFFD.
 * - Spans index the ORIGINAL input: a merged token spans from its first to its last source
 *   byte; text inserted by the normalizer (the prepended "▁") and BOS have an empty span at
 *   the position where they were inserted. Spans are non-decreasing and their union covers
 *   every input byte that produced a token.
 * Input is limited to UINT32_MAX - 1 bytes (spans are 32-bit). */

/* Vocabulary: ids are [0, tok_vocab_size). tok_token_text returns the token's text (not
 * NUL-terminated; NULL for an id with no token). tok_token_id returns -1 when absent; it looks
 * at added tokens first, then the model vocabulary. */
int32_t tok_vocab_size(const tok_tokenizer *t);
const char *tok_token_text(const tok_tokenizer *t, int32_t id, size_t *len);
int32_t tok_token_id(const tok_tokenizer *t, const char *text, size_t len);
bool tok_token_is_special(const tok_tokenizer *t, int32_t id);

enum {
    TOK_SKIP_SPECIAL = 1 << 3, /* decode: drop special added tokens (HF skip_special_tokens) */
};

/* Decode ids to text through the file's decoder, as HF `decode`. On success *out is a
 * malloc'ed NUL-terminated string the caller frees, *len its length. The output is always
 * valid UTF-8: with ByteFallback, a run of <0xNN> tokens that is valid UTF-8 becomes its text,
 * and a run that is not becomes one U+FFFD per byte of the run (HF ByteFallback). An id out of
 * range gives SALA_EINVAL. */
int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **out,
               size_t *len, sala_err *e);

/* Streaming decoder for text that arrives one token at a time (the TUI). The concatenation of
 * everything feed and finish return equals tok_decode of all ids fed. Only complete UTF-8
 * characters are returned: a run of byte tokens is held back until a non-byte token (or
 * finish) tells whether it was valid UTF-8, and text a Strip(stop) could still remove is held
 * back until more arrives. The returned pointer is owned by the stream and valid until the
 * next call on it. tok_stream_reset starts a new text; tok_stream_free(NULL) is a no-op. */
typedef struct tok_stream tok_stream;
int tok_stream_new(const tok_tokenizer *t, unsigned flags, tok_stream **out, sala_err *e);
int tok_stream_feed(tok_stream *s, int32_t id, const char **text, size_t *len, sala_err *e);
int tok_stream_finish(tok_stream *s, const char **text, size_t *len, sala_err *e);
void tok_stream_reset(tok_stream *s);
void tok_stream_free(tok_stream *s);

/* ChatML prompts (SALA-SPEC §4): each message renders as
 *     <|im_start|>{role}\n{text}<|im_end|>\n
 * TOK_CHAT_GEN appends "<|im_start|>assistant\n", and TOK_CHAT_NO_THINK (enable_thinking off)
 * then appends "<think>\n\n</think>\n\n". TOK_BOS prepends the post-processor's BOS.
 * The rendered string is encoded as HF encodes the chat template's output, with one deliberate
 * difference: added tokens are matched in the template's own text only, never inside message
 * text, so a document containing "<|im_end|>" stays plain text. With TOK_SPANS, spans index
 * the rendered string, in which msgs[i].text starts at text_off[i] (text_off may be NULL). */
typedef enum { TOK_ROLE_SYSTEM, TOK_ROLE_USER, TOK_ROLE_ASSISTANT } tok_role;
typedef struct {
    tok_role role;
    const char *text;
    size_t len;
} tok_msg;
enum {
    TOK_CHAT_GEN = 1 << 4,
    TOK_CHAT_NO_THINK = 1 << 5,
};
int tok_chat_encode(const tok_tokenizer *t, const tok_msg *msgs, size_t n, unsigned flags,
                    tok_ids *out, size_t *text_off, sala_err *e);

/* Corpus layout: a stable prefix holding the whole document section, and one suffix per
 * question, so that a model state computed over the prefix can be reused:
 *     prefix   = <s> system(sys) user(docs)
 *     question = user(q) <|im_start|>assistant\n [empty think block when !thinking]
 * prefix ++ question is token for token tok_chat_encode of the three messages (each part ends
 * at a special token, so no BPE merge crosses the seam). With TOK_SPANS in flags the prefix's
 * spans index the rendered prefix, in which docs starts at *docs_off (may be NULL). */
int tok_corpus_prefix(const tok_tokenizer *t, const char *sys, size_t sys_len, const char *docs,
                      size_t docs_len, unsigned flags, tok_ids *out, size_t *docs_off,
                      sala_err *e);
int tok_corpus_question(const tok_tokenizer *t, const char *q, size_t q_len, bool thinking,
                        tok_ids *out, sala_err *e);

#endif
