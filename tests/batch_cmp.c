/* batch_cmp.c: see batch_cmp.h. */
#include "batch_cmp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/random_model.h"

typedef struct {
    uint64_t hash;
    int64_t calls;
} sel_rec;

static void on_sel(void *ud, int layer, int group, int64_t pos, const int32_t *blocks, int n)
{
    sel_rec *r = ud;
    uint64_t h = r->hash ^ 0x9e3779b97f4a7c15ull;
    const int64_t head[3] = {layer, group, pos};
    for (int i = 0; i < 3 + n; i++) {   /* FNV-1a over the call */
        h ^= (uint64_t)(i < 3 ? head[i] : blocks[i - 3]);
        h *= 0x100000001b3ull;
    }
    r->hash = h;
    r->calls++;
}

static int32_t top(const float *x, int64_t V, double *margin)
{
    int64_t b = 0, s = -1;
    for (int64_t j = 1; j < V; j++)
        if (x[j] > x[b]) {
            s = b;
            b = j;
        } else if (s < 0 || x[j] > x[s]) {
            s = j;
        }
    *margin = s >= 0 ? (double)x[b] - x[s] : INFINITY;
    return (int32_t)b;
}

int batch_compare(eng_engine *en, const int64_t *lens, int n, int steps, uint64_t seed,
                  double margin, batch_cmp *r)
{
    const int64_t V = eng_engine_config(en)->vocab_size;
    eng_seq **sb = calloc((size_t)n, sizeof(*sb)), **ss = calloc((size_t)n, sizeof(*ss));
    sel_rec *rec = calloc((size_t)2 * n, sizeof(*rec));
    float *lb = malloc((size_t)n * V * sizeof(float)), *ls = malloc((size_t)n * V * sizeof(float));
    int32_t *tok = malloc((size_t)n * sizeof(int32_t));
    sala_err e = {0};
    int rc = -1;
    memset(r, 0, sizeof(*r));
    r->bitwise = true;
    if (!sb || !ss || !rec || !lb || !ls || !tok) goto done;
    for (int b = 0; b < n; b++) {
        int32_t *ids = malloc((size_t)lens[b] * sizeof(int32_t) + 4);
        eng_rng g;
        eng_rng_seed(&g, seed + 7919 * (uint64_t)b);
        for (int64_t i = 0; i < lens[b]; i++) ids[i] = (int32_t)(3 + eng_rng_next(&g) % (uint64_t)(V - 3));
        const int64_t last = lens[b] - 1;
        int ok = eng_seq_new(en, &sb[b], &e) == 0 && eng_seq_new(en, &ss[b], &e) == 0 &&
                 eng_seq_prefill(sb[b], ids, lens[b], &last, 1, lb + b * V, &e) == 0 &&
                 eng_seq_prefill(ss[b], ids, lens[b], &last, 1, ls + b * V, &e) == 0;
        free(ids);
        if (!ok) {
            fprintf(stderr, "\n  batch_compare: prefill %d: %s", b, e.msg);
            goto done;
        }
        eng_seq_set_select_hook(sb[b], on_sel, &rec[b]);
        eng_seq_set_select_hook(ss[b], on_sel, &rec[n + b]);
    }
    for (int k = 0; k < steps; k++) {
        for (int b = 0; b < n; b++) {
            double mb, ms;
            tok[b] = top(lb + b * V, V, &mb);
            const int32_t t2 = top(ls + b * V, V, &ms);
            if (t2 != tok[b]) r->tok_diff++;
            if (ms > margin) {
                r->tok_checked++;
                if (t2 != tok[b]) r->tok_bad++;
            }
        }
        if (eng_seq_decode_batch(sb, n, tok, lb, &e)) {
            fprintf(stderr, "\n  batch_compare: batched step %d: %s", k, e.msg);
            goto done;
        }
        for (int b = 0; b < n; b++)
            if (eng_seq_decode(ss[b], tok[b], ls + b * V, &e)) {
                fprintf(stderr, "\n  batch_compare: step %d sequence %d: %s", k, b, e.msg);
                goto done;
            }
        for (int b = 0; b < n; b++) {
            double nn = 0, dd = 0;
            for (int64_t j = 0; j < V; j++) {
                const double x = lb[b * V + j], y = ls[b * V + j], d = fabs(x - y);
                if (x != y) r->bitwise = false;
                if (d > r->max_abs) r->max_abs = d;
                nn += d * d;
                dd += y * y;
            }
            const double rr = dd > 0 ? sqrt(nn / dd) : 0;
            if (!(rr <= r->row_rel)) r->row_rel = rr;
        }
    }
    for (int b = 0; b < n; b++) {
        if (eng_seq_len(sb[b]) != lens[b] + steps || eng_seq_len(ss[b]) != lens[b] + steps) {
            fprintf(stderr, "\n  batch_compare: sequence %d has length %lld / %lld, expected %lld",
                    b, (long long)eng_seq_len(sb[b]), (long long)eng_seq_len(ss[b]),
                    (long long)(lens[b] + steps));
            goto done;
        }
        r->sel_calls[0] += rec[b].calls;
        r->sel_calls[1] += rec[n + b].calls;
        if (rec[b].hash != rec[n + b].hash || rec[b].calls != rec[n + b].calls)
            r->sel_seq_differ++;
    }
    rc = 0;
done:
    for (int b = 0; b < n; b++) {
        if (sb) eng_seq_free(sb[b]);
        if (ss) eng_seq_free(ss[b]);
    }
    free(sb), free(ss), free(rec), free(lb), free(ls), free(tok);
    return rc;
}
