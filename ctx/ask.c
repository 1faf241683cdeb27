/* ask.c: open a cached context and ask it questions (docs/CONTEXTS.md "Asking").
 *
 * ctx_open rebuilds the corpus prefix from the store (so the token-stream hash can be checked
 * and tokens mapped to locators), opens the state file expecting this model, tokenizer and
 * token stream, and loads the sequence; any mismatch or checksum failure is refused before a
 * live sequence exists. ctx_ask rewinds to the end of the prefix (a checkpoint is kept there,
 * so this costs one copy of the lightning states), prefills the question suffix and decodes.
 *
 * Evidence: the select hook sees every InfLLM-V2 block selection; for queries of the question
 * (suffix positions and the first evidence_steps generated tokens) each selected prefix block
 * that was not forced (init blocks, the local window) counts once per (layer, group, query).
 * A block's count is shared out over its tokens, tokens map to segments through their docs
 * offsets, and segments are ranked by their share of all counted selections. */
#include "ctx/ctx_int.h"
#include "ctx/state.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int ctx_open(db *d, const char *corpus, ctx_model *m, ctx_ctx **out, sala_err *e)
{
    *out = NULL;
    const double t0 = sala_now();
    ctx_ctx *c = calloc(1, sizeof(*c));
    ctx_row row = {0};
    sf_reader *r = NULL;
    int rc;
    if (!c) return sala_errf(e, SALA_ENOMEM, "out of memory");
    c->d = d;
    c->m = m;
    if ((rc = ctx_corpus_id(d, corpus, &c->corpus_id, e))) goto fail;
    if ((rc = ctx_row_get(d, c->corpus_id, m->fp_hex, &row, e))) {
        if (rc == SALA_ENOTFOUND)
            sala_errf(e, rc, "corpus '%s' has no cached context for the model %s: run "
                      "'sala prefill %s --model %s'", corpus, m->dir, corpus, m->dir);
        goto fail;
    }
    c->context_id = row.id;
    if ((rc = ctx_prefix_build(d, c->corpus_id, m->tok, &c->px, e))) goto fail;
    char th[17];
    ctx_hex64(XXH3_64bits(c->px.ids, (size_t)c->px.n * sizeof(int32_t)), th);
    if ((rc = ctx_state_open(row.path, m, th, &r, e))) {
        if (rc == SALA_EINVAL && strstr(e->msg, "tokens_hash"))
            sala_err_prefix(e, "corpus '%s' changed since it was prefilled", corpus);
        goto fail;
    }
    if ((rc = ctx_state_load(r, m, &c->seq, e))) goto fail;
    if (eng_seq_len(c->seq) != c->px.n) {
        rc = sala_errf(e, SALA_EFORMAT, "%s: state length %lld, prefix %lld tokens: run 'sala "
                       "prefill %s' again", row.path, (long long)eng_seq_len(c->seq),
                       (long long)c->px.n, corpus);
        goto fail;
    }
    if ((rc = eng_seq_checkpoint(c->seq, e))) goto fail;   /* questions rewind to here */
    sf_close(r);
    ctx_row_free(&row);
    c->t_open = sala_now() - t0;
    *out = c;
    return SALA_OK;
fail:
    if (rc && rc != SALA_ENOMEM && e && !strstr(e->msg, "sala prefill"))
        sala_err_prefix(e, "cached context of '%s' cannot be used (run 'sala prefill %s' again)",
                        corpus, corpus);
    sf_close(r);
    ctx_row_free(&row);
    ctx_close(c);
    return rc;
}

void ctx_close(ctx_ctx *c)
{
    if (!c) return;
    eng_seq_free(c->seq);
    ctx_prefix_free(&c->px);
    free(c);
}

int64_t ctx_length(const ctx_ctx *c) { return c->px.n; }
double ctx_open_seconds(const ctx_ctx *c) { return c->t_open; }

static int rewind_prefix(ctx_ctx *c, sala_err *e)
{
    if (eng_seq_len(c->seq) == c->px.n) return SALA_OK;
    int64_t reached;
    int rc = eng_seq_truncate(c->seq, c->px.n, &reached, e);
    if (!rc && reached != c->px.n)
        rc = sala_errf(e, SALA_EINTERNAL, "rewind reached %lld, not the prefix end %lld",
                       (long long)reached, (long long)c->px.n);
    return rc;
}

int ctx_fork(ctx_ctx *c, eng_seq **out, sala_err *e)
{
    int rc = rewind_prefix(c, e);
    return rc ? rc : eng_seq_fork(c->seq, out, e);
}

/* ---- evidence ---- */

typedef struct {
    const eng_sparse_config *sc;
    int64_t P, nblocks;
    double *count;            /* [nblocks] selections per prefix block */
    double total;
    bool on;
} evid;

static void on_select(void *ud, int layer, int group, int64_t pos, const int32_t *blocks, int n)
{
    evid *v = ud;
    (void)layer;
    (void)group;
    if (!v->on || pos < v->P) return;
    const int64_t bs = v->sc->block_size, qb = pos / bs, win = v->sc->window_size / bs;
    for (int i = 0; i < n; i++) {
        const int64_t b = blocks[i];
        if (b < 0 || b < v->sc->init_blocks || b >= qb - win || b >= v->nblocks) continue;
        v->count[b] += 1;
        v->total += 1;
    }
}

static int cmp_score(const void *a, const void *b)
{
    double x = ((const ctx_cite *)a)->score, y = ((const ctx_cite *)b)->score;
    return (x < y) - (x > y);
}

static int evidence_rank(const ctx_ctx *c, const evid *v, int max, ctx_answer *a, sala_err *e)
{
    const ctx_prefix *p = &c->px;
    const int64_t bs = v->sc->block_size;
    if (v->total <= 0 || max <= 0) return SALA_OK;
    double *seg = calloc((size_t)p->nsegs + 1, sizeof(double));
    int64_t *first = malloc(((size_t)p->nsegs + 1) * sizeof(int64_t));
    int64_t *last = malloc(((size_t)p->nsegs + 1) * sizeof(int64_t));
    ctx_cite *all = NULL;
    int rc = SALA_OK;
    if (!seg || !first || !last) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < p->nsegs; i++) first[i] = last[i] = -1;
    for (int64_t b = 0; b < v->nblocks; b++) {
        if (v->count[b] <= 0) continue;
        const int64_t t0 = b * bs, t1 = SALA_MIN((b + 1) * bs, p->n);
        const double share = v->count[b] / (double)(t1 - t0) / v->total;
        for (int64_t t = t0; t < t1; t++) {
            if (p->offs[t] == UINT32_MAX) continue;
            int64_t s = ctx_prefix_seg_at(p, p->offs[t]);
            if (s < 0) continue;
            seg[s] += share;
            if (first[s] < 0) first[s] = t;
            last[s] = t;
        }
    }
    int nall = 0;
    all = calloc((size_t)p->nsegs + 1, sizeof(*all));
    if (!all) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    for (int64_t s = 0; s < p->nsegs; s++)
        if (seg[s] > 0)
            all[nall++] = (ctx_cite){.score = seg[s], .tok_first = first[s], .tok_last = last[s],
                                     .doc_name = (char *)(intptr_t)s};
    qsort(all, (size_t)nall, sizeof(*all), cmp_score);
    nall = SALA_MIN(nall, max);
    a->evidence = calloc((size_t)nall + 1, sizeof(ctx_cite));
    if (!a->evidence) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nall; i++) {
        const ctx_pseg *g = &p->segs[(intptr_t)all[i].doc_name];
        ctx_cite *ci = &a->evidence[i];
        *ci = all[i];
        ci->doc_name = strdup(p->docs_tab[g->doc].name);
        ci->locator = strdup(g->locator);
        a->nevidence++;
        if (!ci->doc_name || !ci->locator) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            break;
        }
    }
done:
    free(seg);
    free(first);
    free(last);
    free(all);
    return rc;
}

/* ---- quotes ---- */

static int quote_add(const ctx_ctx *c, ctx_answer *a, const char *q, size_t n, int *cap,
                     sala_err *e)
{
    if (a->nquotes == *cap) {
        int nc = *cap ? 2 * *cap : 4;
        ctx_cite *t = realloc(a->quotes, (size_t)nc * sizeof(*t));
        if (!t) return sala_errf(e, SALA_ENOMEM, "out of memory");
        a->quotes = t;
        *cap = nc;
    }
    ctx_cite *ci = &a->quotes[a->nquotes++];
    memset(ci, 0, sizeof(*ci));
    ci->tok_first = ci->tok_last = -1;
    if (!(ci->quote = strndup(q, n))) return sala_errf(e, SALA_ENOMEM, "out of memory");
    /* verbatim inside one segment's stored text */
    const ctx_prefix *p = &c->px;
    const char *hay = p->docs;
    size_t left = p->docs_len;
    while (left >= n) {
        const char *hit = memmem(hay, left, q, n);
        if (!hit) break;
        const uint64_t off = (uint64_t)(hit - p->docs);
        int64_t s = ctx_prefix_seg_at(p, off);
        if (s >= 0 && off + n <= p->segs[s].off + p->segs[s].len) {
            ci->verified = true;
            ci->doc_name = strdup(p->docs_tab[p->segs[s].doc].name);
            ci->locator = strdup(p->segs[s].locator);
            if (!ci->doc_name || !ci->locator) return sala_errf(e, SALA_ENOMEM, "out of memory");
            break;
        }
        left -= (size_t)(hit - hay) + 1;
        hay = hit + 1;
    }
    return SALA_OK;
}

/* Quoted spans of at least 8 bytes: "..." or “...” (U+201C/U+201D). */
static int quotes_check(const ctx_ctx *c, ctx_answer *a, sala_err *e)
{
    const char *s = a->text;
    int cap = 0, rc = SALA_OK;
    while (s && *s && !rc) {
        const char *open = NULL, *close_tag = NULL;
        size_t ol = 0;
        const char *q1 = strchr(s, '"'), *q2 = strstr(s, "\xe2\x80\x9c");
        if (q1 && (!q2 || q1 < q2)) {
            open = q1;
            ol = 1;
            close_tag = "\"";
        } else if (q2) {
            open = q2;
            ol = 3;
            close_tag = "\xe2\x80\x9d";
        } else {
            break;
        }
        const char *end = strstr(open + ol, close_tag);
        if (!end) break;
        const size_t n = (size_t)(end - open - ol);
        if (n >= 8) rc = quote_add(c, a, open + ol, n, &cap, e);
        s = end + strlen(close_tag);
    }
    return rc;
}

/* ---- the visible text: thinking hidden unless asked for ---- */

typedef struct {
    ctx_text_fn fn;
    void *ud;
    bool show_think, hidden, stop;
    char *held;               /* text that may still be the start of a tag */
    size_t nheld, capheld;
    char *text;               /* everything shown */
    size_t ntext, captext;
} vis;

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    char *q = realloc(*p, c);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int vis_emit(vis *v, const char *s, size_t n)
{
    if (!n) return 0;
    if (grow(&v->text, &v->captext, v->ntext + n + 1)) return -1;
    memcpy(v->text + v->ntext, s, n);
    v->ntext += n;
    v->text[v->ntext] = 0;
    if (v->fn && !v->stop && v->fn(v->ud, s, n)) v->stop = true;
    return 0;
}

/* Feed decoded text; final flushes what is held. */
static int vis_feed(vis *v, const char *s, size_t n, bool final)
{
    if (grow(&v->held, &v->capheld, v->nheld + n + 1)) return -1;
    memcpy(v->held + v->nheld, s, n);
    v->nheld += n;
    v->held[v->nheld] = 0;
    if (v->show_think) {
        int rc = vis_emit(v, v->held, v->nheld);
        v->nheld = 0;
        return rc;
    }
    for (;;) {
        const char *tag = v->hidden ? "</think>" : "<think>";
        const size_t tl = strlen(tag);
        char *hit = memmem(v->held, v->nheld, tag, tl);
        if (hit) {
            size_t pre = (size_t)(hit - v->held);
            if (!v->hidden && vis_emit(v, v->held, pre)) return -1;
            memmove(v->held, hit + tl, v->nheld - pre - tl);
            v->nheld -= pre + tl;
            v->hidden = !v->hidden;
            continue;
        }
        /* keep the longest tail that is a proper prefix of the tag */
        size_t keep = 0;
        if (!final)
            for (size_t k = SALA_MIN(tl - 1, v->nheld); k > 0; k--)
                if (!memcmp(v->held + v->nheld - k, tag, k)) {
                    keep = k;
                    break;
                }
        if (!v->hidden && vis_emit(v, v->held, v->nheld - keep)) return -1;
        memmove(v->held, v->held + v->nheld - keep, keep);
        v->nheld = keep;
        return 0;
    }
}

/* ---- one question in flight: a slot. ctx_ask runs one on the context's own sequence (rewound
 * to the prefix), ctx_ask_batch up to `width` on forks of it. A slot lives at a fixed address
 * while its sequence exists (the select hook points into it). ---- */

typedef struct {
    eng_seq *seq;             /* where the answer is generated */
    bool owned;               /* seq is a fork, freed with the slot */
    bool active, done;
    int64_t index;            /* ctx_ask_batch: index of the question */
    tok_ids q;
    eng_sampler *smp;
    tok_stream *ts;
    int32_t *hist;            /* [q.n + maxtok + 1]: question, then answer tokens */
    int64_t nh, ngen, maxtok;
    int steps;
    int32_t next;             /* the sampled token to feed next */
    int32_t im_end;
    vis v;
    evid ev;
    double t0, td;            /* start of the question; time of the first answer token */
    ctx_answer a;
} slot;

static void slot_free(slot *s)
{
    if (s->seq) {
        eng_seq_set_select_hook(s->seq, NULL, NULL);
        if (s->owned) eng_seq_free(s->seq);
    }
    tok_ids_free(&s->q);
    eng_sampler_free(s->smp);
    tok_stream_free(s->ts);
    free(s->hist);
    free(s->ev.count);
    free(s->v.held);
    free(s->v.text);
    ctx_answer_free(&s->a);
    memset(s, 0, sizeof(*s));
}

/* Set up slot s for question on seq (positioned at the prefix end; owned: a fork the slot
 * frees) and prefill the question; its last row's logits go to logits [vocab]. t0: when the
 * question started (before any fork). On failure the caller frees the slot. */
static int slot_open(ctx_ctx *c, slot *s, const char *question, const ctx_ask_opts *o,
                     ctx_text_fn fn, void *ud, eng_seq *seq, bool owned, double t0,
                     float *logits, sala_err *e)
{
    const eng_config *cf = eng_engine_config(c->m->en);
    s->seq = seq;
    s->owned = owned;
    s->active = true;
    s->t0 = t0;
    s->maxtok = o->max_tokens > 0 ? o->max_tokens : 512;
    s->steps = o->evidence_steps > 0 ? o->evidence_steps : 16;
    s->v = (vis){.fn = fn, .ud = ud, .show_think = o->think};
    s->ev = (evid){.sc = &cf->sparse, .P = c->px.n};
    s->a.t_open = c->t_open;
    int rc = tok_corpus_question(c->m->tok, question, strlen(question), o->think, &s->q, e);
    if (rc) return rc;
    s->a.question_tokens = (int64_t)s->q.n;
    s->ev.nblocks = (c->px.n + cf->sparse.block_size - 1) / cf->sparse.block_size;
    s->ev.count = calloc((size_t)s->ev.nblocks + 1, sizeof(double));
    size_t nhist;
    if (sala_add_ovf(&nhist, s->q.n, (size_t)s->maxtok + 1) ||
        sala_mul_ovf(&nhist, nhist, sizeof(int32_t)))
        return sala_errf(e, SALA_ERANGE, "max_tokens %lld is too large", (long long)s->maxtok);
    s->hist = malloc(nhist);
    if (!s->ev.count || !s->hist) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if ((rc = eng_sampler_new(&o->sampler, cf->vocab_size, &s->smp, e))) return rc;
    if ((rc = tok_stream_new(c->m->tok, TOK_SKIP_SPECIAL, &s->ts, e))) return rc;
    s->im_end = tok_token_id(c->m->tok, "<|im_end|>", 10);
    s->ev.on = true;
    eng_seq_set_select_hook(seq, on_select, &s->ev);
    int64_t last = (int64_t)s->q.n - 1;
    rc = eng_seq_prefill(seq, s->q.ids, (int64_t)s->q.n, &last, 1, logits, e);
    s->a.t_question = sala_now() - t0;
    if (rc) return rc;
    memcpy(s->hist, s->q.ids, s->q.n * sizeof(int32_t));
    s->nh = (int64_t)s->q.n;
    return SALA_OK;
}

/* Take t as the next answer token; stream its text. Sets s->done at <|im_end|>/eos, at
 * max_tokens or when the text callback asked to stop; else s->next is the token to feed. */
static int slot_accept(ctx_ctx *c, slot *s, int32_t t, sala_err *e)
{
    const eng_config *cf = eng_engine_config(c->m->en);
    if (s->ngen == 0) {
        s->a.t_first = sala_now() - s->t0;
        s->td = sala_now();
    }
    bool eos = t == s->im_end;
    for (int j = 0; j < cf->n_eos; j++) eos |= t == cf->eos_token_ids[j];
    if (eos) {
        s->a.stopped = true;
        s->done = true;
        return SALA_OK;
    }
    s->hist[s->nh++] = t;
    s->ngen++;
    const char *txt;
    size_t tl;
    int rc = tok_stream_feed(s->ts, t, &txt, &tl, e);
    if (rc) return rc;
    if (vis_feed(&s->v, txt, tl, false)) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (s->v.stop || s->ngen == s->maxtok) {
        s->done = true;
        return SALA_OK;
    }
    if (s->ngen >= s->steps) s->ev.on = false;
    s->next = t;
    return SALA_OK;
}

/* Sample the next answer token from logits [vocab] and take it (slot_accept). */
static int slot_take(ctx_ctx *c, slot *s, const float *logits, sala_err *e)
{
    return slot_accept(c, s, eng_sampler_sample(s->smp, logits, s->hist, s->nh), e);
}

/* Feed s->next and take the token after it: with a greedy sampler the engine picks it
 * (eng_seq_decode_greedy: on the device where the backend can, the same token as the sampler on
 * the logits), else the logits row goes through s's sampler. */
static int slot_step(ctx_ctx *c, slot *s, const eng_sampler_params *sp, float *logits,
                     sala_err *e)
{
    int rc;
    if (sp->temperature <= 0) {
        int32_t t;
        rc = eng_seq_decode_greedy(s->seq, s->next, sp, s->hist, s->nh, &t, e);
        return rc ? rc : slot_accept(c, s, t, e);
    }
    rc = eng_seq_decode(s->seq, s->next, logits, e);
    return rc ? rc : slot_take(c, s, logits, e);
}

/* The finished answer into s->a: text, tokens, tokens/s, quotes, evidence. */
static int slot_finish(ctx_ctx *c, slot *s, int max_evidence, sala_err *e)
{
    ctx_answer *a = &s->a;
    s->ev.on = false;
    const double now = sala_now();
    if (s->ngen > 1 && now > s->td) a->tok_per_s = (double)(s->ngen - 1) / (now - s->td);
    const char *txt;
    size_t tl;
    int rc = tok_stream_finish(s->ts, &txt, &tl, e);
    if (rc) return rc;
    if (vis_feed(&s->v, txt, tl, false) || vis_feed(&s->v, "", 0, true))
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    a->text = s->v.text ? s->v.text : strdup("");
    s->v.text = NULL;
    a->ntokens = s->ngen;
    a->tokens = malloc((size_t)(s->ngen + 1) * sizeof(int32_t));
    if (!a->text || !a->tokens) return sala_errf(e, SALA_ENOMEM, "out of memory");
    memcpy(a->tokens, s->hist + s->q.n, (size_t)s->ngen * sizeof(int32_t));
    if ((rc = quotes_check(c, a, e))) return rc;
    return evidence_rank(c, &s->ev, max_evidence > 0 ? max_evidence : 8, a, e);
}

int ctx_ask(ctx_ctx *c, const char *question, const ctx_ask_opts *o, ctx_text_fn fn, void *ud,
            ctx_answer *a, sala_err *e)
{
    memset(a, 0, sizeof(*a));
    const eng_config *cf = eng_engine_config(c->m->en);
    const double t0 = sala_now();
    slot s = {0};
    float *logits = malloc((size_t)cf->vocab_size * sizeof(float));
    int rc = logits ? rewind_prefix(c, e) : sala_errf(e, SALA_ENOMEM, "out of memory");
    if (!rc) rc = slot_open(c, &s, question, o, fn, ud, c->seq, false, t0, logits, e);
    if (!rc) rc = slot_take(c, &s, logits, e);
    while (!rc && !s.done) rc = slot_step(c, &s, &o->sampler, logits, e);
    if (!rc) rc = slot_finish(c, &s, o->max_evidence, e);
    if (!rc) {
        *a = s.a;
        memset(&s.a, 0, sizeof(s.a));
    }
    slot_free(&s);
    free(logits);
    return rc;
}

/* Errors after which nothing more can be asked (the batch stops). */
static bool fatal(int rc)
{
    return rc == SALA_ENOMEM || rc == SALA_EIO || rc == SALA_EINTERNAL || rc == SALA_ECANCEL;
}

/* Start question i in the free slot s: fork the prefix, prefill, sample the first token. A
 * question that fails is reported through fn and its slot freed; *stop is set when fn asked
 * to stop. Returns a fatal status only. */
static int batch_start(ctx_ctx *c, slot *s, int64_t i, const char *question,
                       const ctx_ask_opts *o, float *logits, ctx_batch_fn fn, void *ud,
                       bool *stop, sala_err *e)
{
    sala_err qe = {0};
    const double t0 = sala_now();
    eng_seq *f = NULL;
    int rc = eng_seq_fork(c->seq, &f, &qe);
    const double t_fork = sala_now() - t0;
    if (!rc) {
        rc = slot_open(c, s, question, o, NULL, NULL, f, true, t0, logits, &qe);
        s->a.t_fork = t_fork;
    }
    if (!rc) {
        s->index = i;
        rc = slot_take(c, s, logits, &qe);
    }
    if (!rc) return SALA_OK;
    if (!s->seq) eng_seq_free(f);
    slot_free(s);
    if (fn(ud, i, rc, NULL, &qe)) *stop = true;
    if (fatal(rc)) {
        if (e) *e = qe;
        return rc;
    }
    return SALA_OK;
}

int ctx_ask_batch(ctx_ctx *c, const char *const *questions, int64_t n, const ctx_ask_opts *o,
                  int width, ctx_batch_fn fn, void *ud, sala_err *e)
{
    eng_engine *en = c->m->en;
    const size_t V = (size_t)eng_engine_config(en)->vocab_size;
    if (n <= 0) return SALA_OK;
    if (width <= 0) width = eng_engine_batch_native(en) ? CTX_BATCH_WIDTH : 1;
    if (width > CTX_BATCH_MAX) width = CTX_BATCH_MAX;
    if (width > n) width = (int)n;
    slot *sl = calloc((size_t)width, sizeof(*sl));
    float *lg = malloc((size_t)width * V * sizeof(float));
    eng_seq **seqs = malloc((size_t)width * sizeof(*seqs));
    int32_t *toks = malloc((size_t)width * sizeof(*toks));
    int *map = malloc((size_t)width * sizeof(*map));
    int64_t next = 0;
    bool stop = false;
    int rc = sl && lg && seqs && toks && map ? rewind_prefix(c, e)
                                            : sala_errf(e, SALA_ENOMEM, "out of memory");
    while (!rc && !stop) {
        /* every free slot takes the next question; finished slots report and free */
        int nact = 0;
        for (int k = 0; k < width && !rc && !stop; k++) {
            slot *s = &sl[k];
            if (!s->active && next < n) {
                const int64_t i = next++;
                rc = batch_start(c, s, i, questions[i], o, lg, fn, ud, &stop, e);
            }
            if (rc || !s->active) continue;
            if (s->done) {
                sala_err fe = {0};
                const int frc = slot_finish(c, s, o->max_evidence, &fe);
                if (fn(ud, s->index, frc, frc ? NULL : &s->a, &fe)) stop = true;
                if (fatal(frc)) {
                    rc = frc;
                    if (e) *e = fe;
                }
                slot_free(s);
                k--;   /* the slot is free again: it may take the next question now */
                continue;
            }
            seqs[nact] = s->seq;
            toks[nact] = s->next;
            map[nact++] = k;
        }
        if (rc || stop) break;
        if (!nact) {
            if (next >= n) break;
            continue;   /* every started question failed or finished: start more */
        }
        /* one batched step for every unfinished question */
        if ((rc = eng_seq_decode_batch(seqs, nact, toks, lg, e))) break;
        for (int j = 0; j < nact && !rc; j++)
            rc = slot_take(c, &sl[map[j]], lg + (size_t)j * V, e);
    }
    if (!rc && stop) rc = sala_errf(e, SALA_ECANCEL, "batch stopped by the caller");
    for (int k = 0; sl && k < width; k++) slot_free(&sl[k]);
    free(sl);
    free(lg);
    free(seqs);
    free(toks);
    free(map);
    return rc;
}

static void cites_free(ctx_cite *c, int n)
{
    for (int i = 0; i < n; i++) {
        free(c[i].doc_name);
        free(c[i].locator);
        free(c[i].quote);
    }
    free(c);
}

void ctx_answer_free(ctx_answer *a)
{
    if (!a) return;
    free(a->text);
    free(a->tokens);
    cites_free(a->quotes, a->nquotes);
    cites_free(a->evidence, a->nevidence);
    memset(a, 0, sizeof(*a));
}

char *ctx_answer_citations_json(const ctx_answer *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *q = cJSON_AddArrayToObject(o, "quotes"), *ev = cJSON_AddArrayToObject(o, "evidence");
    if (!o || !q || !ev) goto fail;
    for (int i = 0; i < a->nquotes; i++) {
        const ctx_cite *c = &a->quotes[i];
        cJSON *x = cJSON_CreateObject();
        if (!x) goto fail;
        cJSON_AddItemToArray(q, x);
        cJSON_AddStringToObject(x, "text", c->quote ? c->quote : "");
        cJSON_AddBoolToObject(x, "verified", c->verified);
        if (c->verified) {
            cJSON_AddStringToObject(x, "document", c->doc_name);
            cJSON_AddStringToObject(x, "locator", c->locator);
        }
    }
    for (int i = 0; i < a->nevidence; i++) {
        const ctx_cite *c = &a->evidence[i];
        cJSON *x = cJSON_CreateObject(), *r = cJSON_CreateArray();
        if (!x || !r) {
            cJSON_Delete(x);
            cJSON_Delete(r);
            goto fail;
        }
        cJSON_AddItemToArray(ev, x);
        cJSON_AddStringToObject(x, "document", c->doc_name);
        cJSON_AddStringToObject(x, "locator", c->locator);
        cJSON_AddNumberToObject(x, "score", c->score);
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)c->tok_first));
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)c->tok_last));
        cJSON_AddItemToObject(x, "tokens", r);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
fail:
    cJSON_Delete(o);
    return NULL;
}

char *ctx_answer_timings_json(const ctx_answer *a)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"open_s\":%.6f,\"fork_s\":%.6f,\"question_prefill_s\":%.6f,"
             "\"first_token_s\":%.6f,\"tokens_per_s\":%.3f,\"question_tokens\":%lld,"
             "\"answer_tokens\":%lld}",
             a->t_open, a->t_fork, a->t_question, a->t_first, a->tok_per_s,
             (long long)a->question_tokens,
             (long long)a->ntokens);
    return strdup(buf);
}

/* ---- retrieval mode ---- */

typedef struct {
    ctx_passage *p;
    int n, cap;
    int rc;
} hits;

static int on_hit(const db_hit *h, void *ud)
{
    hits *H = ud;
    if (H->n == H->cap) return 1;
    ctx_passage *p = &H->p[H->n];
    p->doc_name = strdup(h->doc_name ? h->doc_name : "");
    p->locator = strdup(h->locator ? h->locator : "");
    p->snippet = strdup(h->snippet ? h->snippet : "");
    p->score = -h->score;   /* bm25: lower is better; shown as higher is better */
    H->n++;
    if (!p->doc_name || !p->locator || !p->snippet) return H->rc = SALA_ENOMEM;
    return 0;
}

/* The question's words as an FTS5 query: "w1" OR "w2" ... (quotes neutralise the syntax). */
static char *fts_query(const char *q)
{
    size_t cap = strlen(q) * 4 + 64, n = 0;
    char *out = malloc(cap);
    int words = 0;
    if (!out) return NULL;
    const unsigned char *s = (const unsigned char *)q;
    while (*s && words < 32) {
        while (*s && !(*s >= 0x80 || (*s >= '0' && *s <= '9') || ((*s | 32) >= 'a' && (*s | 32) <= 'z')))
            s++;
        const unsigned char *w = s;
        while (*s >= 0x80 || (*s >= '0' && *s <= '9') || ((*s | 32) >= 'a' && (*s | 32) <= 'z')) s++;
        if (s - w < 3) continue;   /* short words carry little (and "a", "of", ...) */
        n += (size_t)snprintf(out + n, cap - n, "%s\"%.*s\"", words ? " OR " : "", (int)(s - w),
                              (const char *)w);
        words++;
    }
    out[n] = 0;
    return out;
}

int ctx_retrieve(db *d, const char *corpus, const char *question, int max, bool store,
                 ctx_passage **out, int *n, sala_err *e)
{
    int64_t cid;
    *out = NULL;
    *n = 0;
    int rc = ctx_corpus_id(d, corpus, &cid, e);
    if (rc) return rc;
    char *fq = fts_query(question);
    hits H = {calloc((size_t)SALA_MAX(max, 1), sizeof(ctx_passage)), 0, SALA_MAX(max, 1), 0};
    if (!fq || !H.p) {
        free(fq);
        free(H.p);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    rc = *fq ? db_search(d, cid, fq, max, on_hit, &H, e) : SALA_OK;
    free(fq);
    if (!rc && H.rc) rc = sala_errf(e, SALA_ENOMEM, "out of memory");
    if (!rc && store) {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < H.n; i++) {
            cJSON *x = cJSON_CreateObject();
            if (!x) break;
            cJSON_AddItemToArray(a, x);
            cJSON_AddStringToObject(x, "document", H.p[i].doc_name);
            cJSON_AddStringToObject(x, "locator", H.p[i].locator);
            cJSON_AddStringToObject(x, "snippet", H.p[i].snippet);
        }
        cJSON *o = cJSON_CreateObject();
        if (o && a) cJSON_AddItemToObject(o, "passages", a);
        else cJSON_Delete(a);
        char *js = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        rc = js ? ctx_retrieval_store(d, cid, question, "retrieval mode: no model configured", js, e)
                : sala_errf(e, SALA_ENOMEM, "out of memory");
        free(js);
    }
    if (rc) {
        ctx_passages_free(H.p, H.n);
        return rc;
    }
    *out = H.p;
    *n = H.n;
    return SALA_OK;
}

void ctx_passages_free(ctx_passage *p, int n)
{
    for (int i = 0; p && i < n; i++) {
        free(p[i].doc_name);
        free(p[i].locator);
        free(p[i].snippet);
    }
    free(p);
}
