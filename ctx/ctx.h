/* ctx.h: cached contexts: a corpus read once into the model's state, kept on disk, and asked
 * question after question (docs/CONTEXTS.md has the prompt layout, the file format and the
 * save protocol).
 *
 *   ctx_model    a model directory opened for contexts: engine + its tokenizer + their hashes;
 *   ctx_prefill  build the corpus prefix, prefill what is not already in the saved state
 *                (append/rewind by longest common token prefix and checkpoints), save it
 *                atomically, record it in SQLite;
 *   ctx_ctx      an opened context: the loaded state (refused before anything live changes
 *                when it does not match model, tokenizer or corpus, or fails a checksum) and
 *                the map from prefix tokens to documents and locators;
 *   ctx_ask      one question against it: answer streamed through a callback, quotes checked
 *                against the stored text, evidence from the sparse layers' block selections.
 *   ctx_retrieve the no-model fallback: full-text passages with locators.
 *
 * Ownership: every *_open returns a handle freed by its *_close (NULL is a no-op); ctx_answer
 * is released with ctx_answer_free. A ctx_ctx borrows the db and ctx_model it was opened with
 * (they must outlive it). Nothing here prints; progress and text go through callbacks. */
#ifndef SALA_CTX_H
#define SALA_CTX_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "ingest/db.h"
#include "ingest/tokenizer.h"

#define CTX_FORMAT "sala-context"
#define CTX_FORMAT_VERSION "1"

typedef struct ctx_model ctx_model;
typedef struct ctx_ctx ctx_ctx;

/* Open model directory dir on backend (NULL: cpu); it must hold tokenizer.json. */
int ctx_model_open(const char *dir, const char *backend, ctx_model **out, sala_err *e);
void ctx_model_close(ctx_model *m);
eng_engine *ctx_model_engine(ctx_model *m);
const tok_tokenizer *ctx_model_tokenizer(ctx_model *m);

/* The directory for state files next to the store: dirname(db path)/contexts. */
int ctx_state_dir(const char *dbopt, char *buf, size_t cap, sala_err *e);

/* The model a corpus answers with: `sala corpus model` / `sala prefill --model`. get gives
 * SALA_ENOTFOUND when none is configured; *dir is malloc'ed (caller frees). */
int ctx_corpus_model_set(db *d, const char *corpus, const char *dir, sala_err *e);
int ctx_corpus_model_get(db *d, const char *corpus, char **dir, sala_err *e);

/* The model for corpus: opt when given, else the corpus's configured model, else $SALA_MODEL;
 * *dir is malloc'ed (caller frees), NULL when none is configured (not an error). */
int ctx_model_resolve(db *d, const char *corpus, const char *opt, char **dir, sala_err *e);

/* ---- prefill ---- */
typedef struct {
    int64_t done, total;        /* tokens of this run */
    double tok_per_s, eta_s;
} ctx_progress;
typedef void (*ctx_progress_fn)(void *ud, const ctx_progress *p);

typedef struct {
    const char *state_dir;            /* where the state file goes (created when missing) */
    uint64_t ckpt_budget;             /* bytes of checkpoints to keep (0: default 1 GiB) */
    volatile sig_atomic_t *cancel;    /* checked between chunks; set: stop, save nothing */
    ctx_progress_fn progress;         /* optional, called after every chunk */
    void *ud;
    bool fresh;                       /* ignore an existing state: prefill everything */
} ctx_prefill_opts;

typedef struct {
    int64_t length;                   /* prefix tokens */
    int64_t reused;                   /* tokens taken from the previous state */
    int64_t prefilled;                /* tokens computed now */
    int64_t documents, checkpoints;
    uint64_t bytes;                   /* size of the state file */
    double seconds;                   /* prefill time */
    double save_seconds;
    char path[4096];                  /* the state file */
} ctx_prefill_result;

/* Returns SALA_ECANCEL (nothing saved, the previous state untouched) when *o->cancel was set.
 * A corpus with no ok documents is refused. */
int ctx_prefill(db *d, const char *corpus, ctx_model *m, const ctx_prefill_opts *o,
                ctx_prefill_result *r, sala_err *e);

/* ---- open and ask ---- */
int ctx_open(db *d, const char *corpus, ctx_model *m, ctx_ctx **out, sala_err *e);
void ctx_close(ctx_ctx *c);
int64_t ctx_length(const ctx_ctx *c);
double ctx_open_seconds(const ctx_ctx *c);

typedef struct {
    eng_sampler_params sampler;       /* temperature <= 0: greedy */
    int64_t max_tokens;               /* <= 0: 512 */
    bool think;                       /* enable thinking in the prompt and show it */
    int evidence_steps;               /* decode steps whose selections count (default 16) */
    int max_evidence;                 /* ranked evidence entries kept (default 8) */
} ctx_ask_opts;

/* Text of the answer as it is produced (complete UTF-8 only; thinking left out unless
 * think). Return non-zero to stop generation. */
typedef int (*ctx_text_fn)(void *ud, const char *text, size_t len);

typedef struct {
    char *doc_name, *locator;
    char *quote;                      /* quotes: the quoted text */
    bool verified;                    /* quotes: found verbatim in the stored text */
    double score;                     /* evidence: share of the counted block selections */
    int64_t tok_first, tok_last;      /* evidence: prefix token range behind it */
} ctx_cite;

typedef struct {
    char *text;                       /* the answer (thinking left out unless think) */
    int32_t *tokens;                  /* every generated token, stop token excluded */
    int64_t ntokens;
    ctx_cite *quotes, *evidence;
    int nquotes, nevidence;
    double t_open, t_question, t_first, tok_per_s;   /* seconds; decode tokens/s */
    double t_fork;                    /* ctx_ask_batch: seconds to fork the prefix state (part
                                         of t_question); 0 for ctx_ask */
    int64_t question_tokens;
    bool stopped;                     /* ended at <|im_end|> / eos (not at max_tokens) */
} ctx_answer;
void ctx_answer_free(ctx_answer *a);

/* Ask one question: rewind to the prefix (checkpoint at its end: O(lightning state)), prefill
 * the question suffix, generate. Results do not depend on earlier questions on c. */
int ctx_ask(ctx_ctx *c, const char *question, const ctx_ask_opts *o, ctx_text_fn fn, void *ud,
            ctx_answer *out, sala_err *e);
/* ---- many questions (sala batch) ----
 * Every question gets a fork of the prefix state (the corpus is never prefilled again; on the
 * CUDA backend a fork shares the prefix K/V), its suffix is prefilled on the fork, and then all
 * unfinished questions decode together, one eng_seq_decode_batch step for all (one read of the
 * weights per step on a backend with a batched forward; a loop elsewhere). As a question
 * finishes its slot takes the next one (continuous batching), so answers complete in finishing
 * order, not input order. Each question has its own sampler seeded with o->sampler.seed, as
 * ctx_ask would: an answer does not depend on which questions share its batch (up to the fp32
 * rounding of batched GEMMs). */
#define CTX_BATCH_WIDTH 32            /* default width where the backend decodes batches */
#define CTX_BATCH_MAX 256
/* Called once per question as it completes: i indexes questions, rc is its status (a is the
 * answer when rc == 0, else NULL and *e says why). a and e are only valid during the call
 * (store or print them then). Return non-zero to stop the batch. */
typedef int (*ctx_batch_fn)(void *ud, int64_t i, int rc, const ctx_answer *a, const sala_err *e);
/* Answer questions[0..n) with up to width decoding together (<= 0: CTX_BATCH_WIDTH where the
 * engine decodes batches natively, else 1, since a loop gains nothing from width and a CPU fork
 * copies the caches). A question that fails (too long for the model, ...) is reported through
 * fn and the others go on. Returns SALA_OK when every question was reported; a fatal error
 * (out of memory, a failed batched step, SALA_ECANCEL when fn asked to stop) ends the batch,
 * and the questions in flight are not reported. */
int ctx_ask_batch(ctx_ctx *c, const char *const *questions, int64_t n, const ctx_ask_opts *o,
                  int width, ctx_batch_fn fn, void *ud, sala_err *e);

/* The answer's citations as JSON {"quotes": [...], "evidence": [...]}; timings as JSON.
 * malloc'ed strings (caller frees), NULL when out of memory. */
char *ctx_answer_citations_json(const ctx_answer *a);
char *ctx_answer_timings_json(const ctx_answer *a);
/* Store question and answer in the questions table. */
int ctx_answer_store(db *d, ctx_ctx *c, const char *question, const ctx_answer *a, sala_err *e);

/* Fork of the opened prefix state (for benchmarks and batch decoding): a new sequence freed
 * with eng_seq_free. */
int ctx_fork(ctx_ctx *c, eng_seq **out, sala_err *e);

/* ---- retrieval mode (no model) ---- */
typedef struct {
    char *doc_name, *locator, *snippet;
    double score;
} ctx_passage;
/* The best max full-text passages for question (its words, OR'ed) into *out (malloc'ed array,
 * free with ctx_passages_free). Stores the question with mode 'retrieval' when store. */
int ctx_retrieve(db *d, const char *corpus, const char *question, int max, bool store,
                 ctx_passage **out, int *n, sala_err *e);
void ctx_passages_free(ctx_passage *p, int n);

/* ---- history ---- */
typedef struct {
    int64_t id, asked;
    const char *mode, *question, *answer, *citations, *timings;
} ctx_history_row;
typedef int (*ctx_history_fn)(const ctx_history_row *r, void *ud);
int ctx_history(db *d, const char *corpus, ctx_history_fn fn, void *ud, sala_err *e);

/* Test seam: called before every piece the state writer writes (section name, bytes so far);
 * crash tests kill the process from it. NULL: off. */
typedef void (*ctx_save_hook_fn)(const char *section, uint64_t written);
void ctx_set_save_hook(ctx_save_hook_fn fn);

#endif
