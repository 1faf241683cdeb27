/* prompt.c: ChatML prompts for MiniCPM-SALA (SALA-SPEC §4) and the corpus layout (a stable
 * document prefix plus one suffix per question).
 *
 * The prompt is rendered to one string exactly as the model's chat_template renders it, and
 * encoded as one text, so the ids equal what `tokenizers` gives for the rendered template;
 * the only difference is that added tokens are matched in the template's own text only (the
 * `trusted` ranges), never in message text. */
#include "ingest/tokenizer_int.h"

#include <stdlib.h>
#include <string.h>

static const char IM_START[] = "<|im_start|>";
static const char IM_END[] = "<|im_end|>";
static const char NO_THINK[] = "<think>\n\n</think>\n\n";

typedef struct {
    char *p;
    size_t n, cap;
    tok_range *tr;
    size_t ntr, trcap;
    sala_err *e;
} render;

static int r_add(render *r, const char *s, size_t n, bool trusted)
{
    size_t need;
    if (sala_add_ovf(&need, r->n, n) || need >= UINT32_MAX)
        return sala_errf(r->e, SALA_ERANGE, "prompt: more than 4 GiB of text");
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < need) cap *= 2;
        char *p = realloc(r->p, cap);
        if (!p) return sala_errf(r->e, SALA_ENOMEM, "prompt: out of memory");
        r->p = p;
        r->cap = cap;
    }
    if (trusted && n) {
        if (r->ntr && r->tr[r->ntr - 1].end == r->n) {
            r->tr[r->ntr - 1].end += n;
        } else {
            if (r->ntr == r->trcap) {
                size_t cap = r->trcap ? r->trcap * 2 : 16;
                tok_range *t = realloc(r->tr, cap * sizeof(*t));
                if (!t) return sala_errf(r->e, SALA_ENOMEM, "prompt: out of memory");
                r->tr = t;
                r->trcap = cap;
            }
            r->tr[r->ntr++] = (tok_range){r->n, r->n + n};
        }
    }
    if (n) memcpy(r->p + r->n, s, n);
    r->n += n;
    return SALA_OK;
}

static int r_str(render *r, const char *s) { return r_add(r, s, strlen(s), true); }

static int need_special(const tok_tokenizer *t, const char *s, sala_err *e)
{
    int32_t id = tok_token_id(t, s, strlen(s));
    if (id < 0 || !tok_token_is_special(t, id))
        return sala_errf(e, SALA_EUNSUP, "tokenizer has no special token %s: not a ChatML model", s);
    return SALA_OK;
}

int tok_chat_encode(const tok_tokenizer *t, const tok_msg *msgs, size_t n, unsigned flags,
                    tok_ids *out, size_t *text_off, sala_err *e)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    int rc;
    if ((rc = need_special(t, IM_START, e)) || (rc = need_special(t, IM_END, e))) return rc;
    render r = {.e = e};
    for (size_t i = 0; i < n && !rc; i++) {
        if ((unsigned)msgs[i].role >= SALA_ARRAY_LEN(roles)) {
            rc = sala_errf(e, SALA_EINVAL, "prompt: message %zu has no valid role", i);
            break;
        }
        if (!msgs[i].text && msgs[i].len) {
            rc = sala_errf(e, SALA_EINVAL, "prompt: message %zu has NULL text", i);
            break;
        }
        if ((rc = r_str(&r, IM_START)) || (rc = r_str(&r, roles[msgs[i].role])) ||
            (rc = r_str(&r, "\n")))
            break;
        if (text_off) text_off[i] = r.n;
        if ((rc = r_add(&r, msgs[i].text, msgs[i].len, false)) || (rc = r_str(&r, IM_END)) ||
            (rc = r_str(&r, "\n")))
            break;
    }
    if (!rc && (flags & TOK_CHAT_GEN)) {
        rc = r_str(&r, IM_START);
        if (!rc) rc = r_str(&r, "assistant\n");
        if (!rc && (flags & TOK_CHAT_NO_THINK)) rc = r_str(&r, NO_THINK);
    }
    if (!rc)
        rc = tok_encode_ranges(t, r.p ? r.p : "", r.n, flags & (TOK_BOS | TOK_SPANS), r.tr, r.ntr,
                               out, e);
    free(r.p);
    free(r.tr);
    return rc;
}

int tok_corpus_prefix(const tok_tokenizer *t, const char *sys, size_t sys_len, const char *docs,
                      size_t docs_len, unsigned flags, tok_ids *out, size_t *docs_off,
                      sala_err *e)
{
    tok_msg m[2] = {{TOK_ROLE_SYSTEM, sys, sys_len}, {TOK_ROLE_USER, docs, docs_len}};
    size_t off[2];
    int rc = tok_chat_encode(t, m, 2, TOK_BOS | (flags & TOK_SPANS), out, off, e);
    if (!rc && docs_off) *docs_off = off[1];
    return rc;
}

int tok_corpus_question(const tok_tokenizer *t, const char *q, size_t q_len, bool thinking,
                        tok_ids *out, sala_err *e)
{
    tok_msg m = {TOK_ROLE_USER, q, q_len};
    return tok_chat_encode(t, &m, 1, TOK_CHAT_GEN | (thinking ? 0 : TOK_CHAT_NO_THINK), out, NULL,
                           e);
}
