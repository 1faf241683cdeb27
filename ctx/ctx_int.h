/* ctx_int.h: internals of the cached-context module (not a public header): the corpus prefix
 * (layout.c), the context store tables (store.c), and the handles. */
#ifndef SALA_CTX_INT_H
#define SALA_CTX_INT_H

#include "ctx/ctx.h"

struct sqlite3;

struct ctx_model {
    char *dir;
    eng_engine *en;
    tok_tokenizer *tok;
    char fp_hex[17];          /* model fingerprint */
    char tok_hex[17];         /* xxh3 of tokenizer.json */
};

/* One segment of the prefix: where its text starts in the documents string. */
typedef struct {
    uint64_t off;             /* byte offset of the segment text in the docs string */
    uint64_t len;
    int64_t seg_id, doc;      /* doc: index into ctx_prefix.docs */
    char *locator;
} ctx_pseg;

typedef struct {
    int64_t id;
    char *name, *title;
    uint64_t off, end;        /* the framed document in the docs string */
    uint64_t hash;            /* xxh3 of the framed text */
    int64_t tok0, tok1;       /* its tokens in the prefix [tok0, tok1) */
} ctx_pdoc;

/* The corpus prefix: tokens of <s> system(sys) user(docs) and, per token, the byte offset in
 * the docs string it came from (UINT32_MAX for template tokens outside docs). */
typedef struct {
    char *docs;               /* the rendered document section */
    size_t docs_len;
    ctx_pdoc *docs_tab;
    int64_t ndocs;
    ctx_pseg *segs;
    int64_t nsegs;
    int32_t *ids;
    uint32_t *offs;           /* [n] docs-string byte offset of each token */
    int64_t n;
    int64_t docs_end;         /* token index where the document section ends (before the
                                 closing <|im_end|>\n of the user message) */
} ctx_prefix;

extern const char ctx_system_prompt[];

/* Build the prefix of corpus from the store with tokenizer tok. */
int ctx_prefix_build(db *d, int64_t corpus_id, const tok_tokenizer *tok, ctx_prefix *p,
                     sala_err *e);
void ctx_prefix_free(ctx_prefix *p);
/* Index of the segment holding docs-string offset off, or -1. */
int64_t ctx_prefix_seg_at(const ctx_prefix *p, uint64_t off);

/* Hex of a 64-bit hash into buf[17]. */
void ctx_hex64(uint64_t v, char buf[17]);

/* store.c: the contexts table. */
typedef struct {
    int64_t id;
    char *path, *tokens_hash;
    int64_t length;
} ctx_row;
int ctx_row_get(db *d, int64_t corpus_id, const char *model_fp, ctx_row *r, sala_err *e);
void ctx_row_free(ctx_row *r);
int ctx_row_put(db *d, int64_t corpus_id, const ctx_model *m, const char *tokens_hash,
                const ctx_prefill_result *res, int64_t *id, sala_err *e);

int ctx_corpus_id(db *d, const char *corpus, int64_t *id, sala_err *e);
int ctx_retrieval_store(db *d, int64_t cid, const char *question, const char *answer,
                        const char *citations, sala_err *e);

/* The state file name for (corpus, model) in state_dir. */
int ctx_state_path(const char *state_dir, int64_t corpus_id, const char *fp_hex, char *buf,
                   size_t cap, sala_err *e);

/* open.c internals shared with prefill.c: read the prefix token ids of a saved state. */
struct ctx_ctx {
    db *d;
    ctx_model *m;
    int64_t corpus_id, context_id;
    ctx_prefix px;            /* docs/segs/offs from the live corpus (equal to the state's) */
    eng_seq *seq;             /* positioned at px.n after ctx_ask rewinds */
    double t_open;
};

#endif
