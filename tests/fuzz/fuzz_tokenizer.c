/* fuzz_tokenizer.c: tok_load_buffer on a hostile tokenizer.json (vocab, merges, added tokens,
 * byte tokens, normalizer/decoder/post-processor), then encode, decode and the streaming
 * decoder with what it accepted. The input is cut at "\n#TEXT#\n": the first part is the
 * JSON, the second (when present) the text to encode; else a fixed text with special tokens,
 * spaces, byte-fallback characters and invalid UTF-8. The streaming decoder's output, joined, must
 * equal tok_decode's (tokenizer.h); a difference aborts. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/tokenizer.h"
#include "tests/fuzz/fuzz.h"

static const char fixed_text[] = "ab a<s>b <|im_end|> \xE2\x96\x81" "ab \xF0\x9F\x98\x80 A\xC3\x28 "
                                 "\xE4\xB8\xAD\xE6\x96\x87\t\n";

static int one(const uint8_t *data, size_t size)
{
    size_t off[2], len[2];
    size_t n = fuzz_split(data, size, "\n#TEXT#\n", 2, off, len);
    tok_tokenizer *t = NULL;
    sala_err e;
    if (tok_load_buffer((const char *)data + off[0], len[0], "tokenizer.json", &t, &e) != SALA_OK)
        return 0;
    const char *text = n == 2 ? (const char *)data + off[1] : fixed_text;
    size_t tlen = n == 2 ? len[1] : sizeof(fixed_text) - 1;
    tok_ids ids = {0};
    unsigned fl[] = {0, TOK_BOS | TOK_SPECIAL | TOK_SPANS};
    for (size_t k = 0; k < 2; k++) {
        ids.n = 0;
        if (tok_encode(t, text, tlen, fl[k], &ids, &e) != SALA_OK) continue;
        unsigned df = k ? TOK_SKIP_SPECIAL : 0;
        char *dec = NULL;
        size_t dl = 0;
        if (tok_decode(t, ids.ids, ids.n, df, &dec, &dl, &e) != SALA_OK) dec = NULL;
        /* tokenizer.h: what the stream returns, joined, equals tok_decode's text */
        tok_stream *s = NULL;
        if (tok_stream_new(t, df, &s, &e) == SALA_OK) {
            size_t got = 0;
            bool same = true;
            for (size_t i = 0; i <= ids.n; i++) {
                const char *p;
                size_t pl;
                if ((i < ids.n ? tok_stream_feed(s, ids.ids[i], &p, &pl, &e)
                               : tok_stream_finish(s, &p, &pl, &e)) != SALA_OK) {
                    same = false;
                    break;
                }
                same = same && dec && got + pl <= dl && !memcmp(dec + got, p, pl);
                got += pl;
            }
            if (dec && (!same || got != dl)) abort();   /* the stream and decode disagree */
            tok_stream_free(s);
        }
        free(dec);
    }
    /* Every id of a small vocabulary, and the edges of a large one. */
    int32_t v = tok_vocab_size(t);
    for (int32_t id = 0; id < v && id < 512; id++) {
        size_t tl;
        const char *tt = tok_token_text(t, id, &tl);
        if (tt) (void)tok_token_id(t, tt, tl);
        (void)tok_token_is_special(t, id);
        char *dec = NULL;
        size_t dl;
        if (tok_decode(t, &id, 1, 0, &dec, &dl, &e) == SALA_OK) free(dec);
    }
    int32_t bad[] = {-1, v, v - 1, INT32_MAX};
    char *dec = NULL;
    size_t dl;
    if (tok_decode(t, bad, 4, 0, &dec, &dl, &e) == SALA_OK) free(dec);
    tok_msg m = {TOK_ROLE_USER, text, tlen};
    ids.n = 0;
    tok_chat_encode(t, &m, 1, TOK_BOS | TOK_CHAT_GEN | TOK_CHAT_NO_THINK | TOK_SPANS, &ids, NULL, &e);
    tok_ids_free(&ids);
    tok_free(t);
    return 0;
}

FUZZ_TARGET(tokenizer, one)
