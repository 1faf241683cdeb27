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

int ctx_ask(ctx_ctx *c, const char *question, const ctx_ask_opts *o, ctx_text_fn fn, void *ud,
            ctx_answer *a, sala_err *e)
{
    memset(a, 0, sizeof(*a));
    const eng_config *cf = eng_engine_config(c->m->en);
    const int64_t maxtok = o->max_tokens > 0 ? o->max_tokens : 512;
    const int steps = o->evidence_steps > 0 ? o->evidence_steps : 16;
    tok_ids q = {0};
    eng_sampler *smp = NULL;
    tok_stream *ts = NULL;
    float *logits = NULL;
    int32_t *hist = NULL;
    vis v = {.fn = fn, .ud = ud, .show_think = o->think};
    evid ev = {.sc = &cf->sparse, .P = c->px.n};
    int rc;
    const double t0 = sala_now();
    a->t_open = c->t_open;
    if ((rc = rewind_prefix(c, e))) goto done;
    if ((rc = tok_corpus_question(c->m->tok, question, strlen(question), o->think, &q, e)))
        goto done;
    a->question_tokens = (int64_t)q.n;
    ev.nblocks = (c->px.n + cf->sparse.block_size - 1) / cf->sparse.block_size;
    ev.count = calloc((size_t)ev.nblocks + 1, sizeof(double));
    logits = malloc((size_t)cf->vocab_size * sizeof(float));
    hist = malloc((size_t)(q.n + (size_t)maxtok + 1) * sizeof(int32_t));
    if (!ev.count || !logits || !hist) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = eng_sampler_new(&o->sampler, cf->vocab_size, &smp, e))) goto done;
    if ((rc = tok_stream_new(c->m->tok, TOK_SKIP_SPECIAL, &ts, e))) goto done;
    const int32_t im_end = tok_token_id(c->m->tok, "<|im_end|>", 10);
    ev.on = true;
    eng_seq_set_select_hook(c->seq, on_select, &ev);
    int64_t last = (int64_t)q.n - 1;
    rc = eng_seq_prefill(c->seq, q.ids, (int64_t)q.n, &last, 1, logits, e);
    a->t_question = sala_now() - t0;
    if (rc) goto done;
    memcpy(hist, q.ids, q.n * sizeof(int32_t));
    int64_t nh = (int64_t)q.n;
    double td = 0;
    for (int64_t i = 0; i < maxtok; i++) {
        int32_t t = eng_sampler_sample(smp, logits, hist, nh);
        if (i == 0) {
            a->t_first = sala_now() - t0;
            td = sala_now();
        }
        bool eos = t == im_end;
        for (int j = 0; j < cf->n_eos; j++) eos |= t == cf->eos_token_ids[j];
        if (eos) {
            a->stopped = true;
            break;
        }
        hist[nh++] = t;
        const char *txt;
        size_t tl;
        if ((rc = tok_stream_feed(ts, t, &txt, &tl, e))) goto done;
        if (vis_feed(&v, txt, tl, false)) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto done;
        }
        if (v.stop || i + 1 == maxtok) break;
        if (i + 1 >= steps) ev.on = false;
        if ((rc = eng_seq_decode(c->seq, t, logits, e))) goto done;
    }
    ev.on = false;
    const int64_t ngen = nh - (int64_t)q.n;
    if (ngen > 1 && sala_now() > td) a->tok_per_s = (double)(ngen - 1) / (sala_now() - td);
    const char *txt;
    size_t tl;
    if ((rc = tok_stream_finish(ts, &txt, &tl, e))) goto done;
    if (vis_feed(&v, txt, tl, false) || vis_feed(&v, "", 0, true)) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    a->text = v.text ? v.text : strdup("");
    v.text = NULL;
    a->ntokens = ngen;
    a->tokens = malloc((size_t)(ngen + 1) * sizeof(int32_t));
    if (!a->text || !a->tokens) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(a->tokens, hist + q.n, (size_t)ngen * sizeof(int32_t));
    if ((rc = quotes_check(c, a, e))) goto done;
    rc = evidence_rank(c, &ev, o->max_evidence > 0 ? o->max_evidence : 8, a, e);
done:
    eng_seq_set_select_hook(c->seq, NULL, NULL);
    tok_ids_free(&q);
    eng_sampler_free(smp);
    tok_stream_free(ts);
    free(logits);
    free(hist);
    free(ev.count);
    free(v.held);
    free(v.text);
    if (rc) ctx_answer_free(a);
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
             "{\"open_s\":%.6f,\"question_prefill_s\":%.6f,\"first_token_s\":%.6f,"
             "\"tokens_per_s\":%.3f,\"question_tokens\":%lld,\"answer_tokens\":%lld}",
             a->t_open, a->t_question, a->t_first, a->tok_per_s, (long long)a->question_tokens,
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
