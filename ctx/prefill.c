/* prefill.c: `sala prefill`: compute a corpus's context and save it.
 *
 * Reuse (docs/CONTEXTS.md "Append and rewind"): when a state for this corpus and model exists
 * and opens with the same model and tokenizer, the new prefix is compared with the saved token
 * ids; the sequence is loaded and rewound to the latest checkpoint at or below their longest
 * common prefix (the sparse K/V is simply cut there), and only the rest is prefilled. Added
 * documents therefore cost only their own tokens (plus the two closing tokens of the user
 * message); removed or changed last documents rewind to the nearest earlier checkpoint.
 * Checkpoints (lightning states) are taken at document starts, at the end of the document
 * section and at the end of the prefix; within the byte budget the latest ones are kept.
 *
 * Cancel: the flag is checked between chunks; a cancelled prefill saves nothing and leaves
 * the previous state as it was. */
#include "ctx/ctx_int.h"
#include "ctx/state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define PREFILL_CHUNK 1024
#define DEFAULT_CKPT_BUDGET ((uint64_t)1 << 30)

static int64_t lcp(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
    int64_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Checkpoint positions after `from`, ascending: document starts, end of documents, end of the
 * prefix; at most maxk of them (the latest kept; the last two always). *nk receives the count. */
static int64_t *plan_ckpts(const ctx_prefix *p, int64_t from, int64_t maxk, int64_t *nk)
{
    int64_t *v = malloc((size_t)(p->ndocs + 2) * sizeof(int64_t));
    int64_t k = 0;
    if (!v) return NULL;
    for (int64_t i = 0; i < p->ndocs; i++)
        if (p->docs_tab[i].tok0 > from) v[k++] = p->docs_tab[i].tok0;
    if (p->docs_end > from) v[k++] = p->docs_end;
    if (p->n > from) v[k++] = p->n;
    qsort(v, (size_t)k, sizeof(int64_t), cmp_i64);
    int64_t u = 0;
    for (int64_t i = 0; i < k; i++)
        if (!u || v[u - 1] != v[i]) v[u++] = v[i];
    if (u > maxk) {
        memmove(v, v + (u - maxk), (size_t)maxk * sizeof(int64_t));
        u = maxk;
    }
    *nk = u;
    return v;
}

static int mkdir_p(const char *dir, sala_err *e)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n >= sizeof(buf)) return sala_errf(e, SALA_ERANGE, "path too long: %s", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return sala_errf(e, SALA_EIO, "%s: cannot create directory: %s", buf,
                                 strerror(errno));
            buf[i] = c;
        }
    return SALA_OK;
}

/* Load the saved state of path and rewind it to the common prefix with p. On any failure
 * (missing, other model, damaged) returns SALA_ENOTFOUND after logging why, and the caller
 * starts from scratch. */
static int reuse_state(const char *path, const ctx_model *m, const ctx_prefix *p, eng_seq **seq,
                       int64_t *reached)
{
    sala_err e = {0};
    sf_reader *r = NULL;
    int32_t *old = NULL;
    int64_t nold = 0;
    if (access(path, F_OK)) return SALA_ENOTFOUND;   /* first prefill */
    int rc = ctx_state_open(path, m, NULL, &r, &e);
    if (!rc) rc = ctx_state_ids(r, &old, &nold, &e);
    if (!rc) rc = ctx_state_load(r, m, seq, &e);
    sf_close(r);
    if (rc) {
        sala_log(SALA_LOG_WARN, "previous state not reused (prefilling everything): %s", e.msg);
        free(old);
        return SALA_ENOTFOUND;
    }
    int64_t common = lcp(old, nold, p->ids, p->n);
    free(old);
    rc = eng_seq_truncate(*seq, common, reached, &e);
    if (rc) {
        sala_log(SALA_LOG_WARN, "previous state not reused: %s", e.msg);
        eng_seq_free(*seq);
        *seq = NULL;
        return SALA_ENOTFOUND;
    }
    return SALA_OK;
}

int ctx_prefill(db *d, const char *corpus, ctx_model *m, const ctx_prefill_opts *o,
                ctx_prefill_result *r, sala_err *e)
{
    ctx_prefix p = {0};
    eng_seq *seq = NULL;
    int64_t *ck = NULL, cid;
    int rc;
    memset(r, 0, sizeof(*r));
    if ((rc = ctx_corpus_id(d, corpus, &cid, e))) return rc;
    if ((rc = ctx_prefix_build(d, cid, m->tok, &p, e))) return rc;
    const eng_config *c = eng_engine_config(m->en);
    if (p.n > c->max_position_embeddings) {
        rc = sala_errf(e, SALA_ERANGE, "corpus '%s' is %lld tokens, more than the model's %lld "
                       "(max_position_embeddings)", corpus, (long long)p.n,
                       (long long)c->max_position_embeddings);
        goto fail;
    }
    if ((rc = mkdir_p(o->state_dir, e))) goto fail;
    int removed = sf_cleanup(o->state_dir, NULL);
    if (removed > 0) sala_log(SALA_LOG_INFO, "removed %d stale temporary state files", removed);
    if ((rc = ctx_state_path(o->state_dir, cid, m->fp_hex, r->path, sizeof(r->path), e))) goto fail;

    int64_t reached = 0;
    if (o->fresh || reuse_state(r->path, m, &p, &seq, &reached) != SALA_OK) {
        reached = 0;
        if ((rc = eng_seq_new(m->en, &seq, e))) goto fail;
    }
    r->reused = reached;
    const uint64_t cb = eng_state_ckpt_bytes(c);
    const uint64_t budget = o->ckpt_budget ? o->ckpt_budget : DEFAULT_CKPT_BUDGET;
    int64_t nk = 0, maxk = cb ? (int64_t)SALA_MIN(budget / cb, (uint64_t)1 << 20) : 2;
    if (!(ck = plan_ckpts(&p, reached, SALA_MAX(maxk, 2), &nk))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    const double t0 = sala_now();
    int64_t pos = reached, ki = 0;
    const int64_t total = p.n - reached;
    while (pos < p.n) {
        if (o->cancel && *o->cancel) {
            rc = sala_errf(e, SALA_ECANCEL, "prefill cancelled at token %lld of %lld; nothing "
                           "saved, the previous state is unchanged", (long long)pos,
                           (long long)p.n);
            goto fail;
        }
        while (ki < nk && ck[ki] <= pos) ki++;
        int64_t stop = SALA_MIN(pos + PREFILL_CHUNK, p.n);
        if (ki < nk) stop = SALA_MIN(stop, ck[ki]);
        if ((rc = eng_seq_prefill(seq, p.ids + pos, stop - pos, NULL, 0, NULL, e))) goto fail;
        pos = stop;
        if (ki < nk && ck[ki] == pos && (rc = eng_seq_checkpoint(seq, e))) goto fail;
        if (o->progress) {
            const double dt = sala_now() - t0;
            const int64_t done = pos - reached;
            ctx_progress pr = {done, total, dt > 0 ? done / dt : 0, 0};
            pr.eta_s = pr.tok_per_s > 0 ? (total - done) / pr.tok_per_s : 0;
            o->progress(o->ud, &pr);
        }
    }
    r->seconds = sala_now() - t0;
    r->prefilled = p.n - reached;
    r->length = p.n;
    r->documents = p.ndocs;
    char th[17];
    ctx_hex64(XXH3_64bits(p.ids, (size_t)p.n * sizeof(int32_t)), th);
    const double ts = sala_now();
    if ((rc = ctx_state_save(r->path, m, th, corpus, &p, seq, e))) goto fail;
    r->save_seconds = sala_now() - ts;
    r->bytes = ctx_file_size(r->path);
    r->checkpoints = eng_seq_checkpoint_count(seq);
    rc = ctx_row_put(d, cid, m, th, r, NULL, e);
fail:
    free(ck);
    eng_seq_free(seq);
    ctx_prefix_free(&p);
    return rc;
}
