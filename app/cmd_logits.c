/* cmd_logits.c: `sala logits`: run a golden-layout case file (../shared/golden/README.md §2)
 * through the engine and write the logits rows (and InfLLM-V2 selections) it asks for. This is
 * the conformance entry point, so its flags and output layout are fixed. */
#include "app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/safetensors.h"

SALA_COMMAND(logits, "run a golden case file through the engine and write its logits");

const char cmd_logits_usage[] =
    "usage: sala logits --model DIR --case CASE.safetensors --out OUT.safetensors\n"
    "                   [--backend cpu|cuda] [--chunk N] [--decode-from P]\n\n"
    "Reads int32 input_ids [N], positions [P] and optionally selected_index [E,3]\n"
    "(layer, kv group, position) from CASE.\n"
    "Without --decode-from: prefills all of input_ids (in calls of N tokens with --chunk) and\n"
    "writes float32 logits [P, vocab] for the rows in positions.\n"
    "With --decode-from P: prefills input_ids[:P], feeds input_ids[P:] one token at a time\n"
    "through the decode path, and writes logits for positions P-1 .. N-1 plus argmax_ids.\n"
    "When CASE has selected_index, also writes selected_blocks [E, topk+window/block] (block ids\n"
    "ascending, -1 padded) for those rows, and a copy of selected_index.\n";

typedef struct {
    const int32_t *idx;     /* [E, 3] (layer, group, pos) */
    int64_t E, K;
    int32_t *blocks;        /* [E, K] */
    unsigned char *seen;    /* [E] */
} sel_rec;

static void on_select(void *ud, int layer, int group, int64_t pos, const int32_t *blocks, int n)
{
    sel_rec *r = ud;
    for (int64_t i = 0; i < r->E; i++) {
        const int32_t *t = r->idx + 3 * i;
        if (t[0] == layer && t[1] == group && t[2] == pos) {
            memcpy(r->blocks + i * r->K, blocks, (size_t)SALA_MIN(n, r->K) * sizeof(int32_t));
            r->seen[i] = 1;
        }
    }
}

/* Read an int32 tensor of rank ndim into a malloc'ed array (NULL + message on mismatch). */
static int32_t *read_i32(const st_file *f, const char *path, const char *name, int ndim,
                         int64_t inner, int64_t *count, bool required, sala_err *e)
{
    const st_tensor *t = st_find(f, name);
    *count = 0;
    if (!t) {
        if (required) sala_errf(e, SALA_EFORMAT, "%s: no tensor '%s'", path, name);
        else e->code = SALA_OK;
        return NULL;
    }
    if (t->dtype != ST_I32 || t->ndim != ndim || (ndim == 2 && t->shape[1] != inner)) {
        sala_errf(e, SALA_EFORMAT, "%s: tensor '%s' must be int32 of rank %d%s", path, name, ndim,
                  ndim == 2 ? " [E, 3]" : "");
        return NULL;
    }
    int32_t *p = malloc((size_t)t->nbytes + 4);
    if (!p) {
        sala_errf(e, SALA_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(p, t->data, t->nbytes);
    *count = t->shape[0];
    return p;
}

int cmd_logits(int argc, char **argv)
{
    const char *model = NULL, *casep = NULL, *outp = NULL, *backend = "cpu";
    long long chunk = 0, decode_from = -1;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"case", required_argument, 0, 'c'},
        {"out", required_argument, 0, 'o'}, {"backend", required_argument, 0, 'b'},
        {"chunk", required_argument, 0, 'k'}, {"decode-from", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'c': casep = optarg; break;
        case 'o': outp = optarg; break;
        case 'b': backend = optarg; break;
        case 'k': chunk = strtoll(optarg, &end, 10); if (*end || chunk < 1) goto usage; break;
        case 'd': decode_from = strtoll(optarg, &end, 10); if (*end || decode_from < 1) goto usage; break;
        case 'h': fputs(cmd_logits_usage, stdout); return EXIT_OK;
        default: goto usage;
        }
    }
    if (!model || !casep || !outp || optind != argc) goto usage;

    sala_err e = {0};
    int rc = SALA_OK;
    st_file *cf = NULL;
    eng_engine *en = NULL;
    eng_seq *seq = NULL;
    st_writer *w = NULL;
    int32_t *ids = NULL, *pos = NULL, *sidx = NULL, *argmax = NULL;
    int64_t N, P, E, *rows = NULL;
    float *logits = NULL;
    sel_rec rec = {0};

    if ((rc = st_open(casep, &cf, &e))) goto fail;
    if (!(ids = read_i32(cf, casep, "input_ids", 1, 0, &N, true, &e))) { rc = e.code; goto fail; }
    if (!(pos = read_i32(cf, casep, "positions", 1, 0, &P, true, &e))) { rc = e.code; goto fail; }
    sidx = read_i32(cf, casep, "selected_index", 2, 3, &E, false, &e);
    if (!sidx && e.code) { rc = e.code; goto fail; }
    if (N < 1) { rc = sala_errf(&e, SALA_EINVAL, "%s: input_ids is empty", casep); goto fail; }
    if (decode_from > N) {
        rc = sala_errf(&e, SALA_EINVAL, "--decode-from %lld is past the %lld input tokens",
                       decode_from, (long long)N);
        goto fail;
    }
    if ((rc = eng_engine_open(model, backend, &en, &e))) goto fail;
    const eng_config *c = eng_engine_config(en);
    const int64_t V = c->vocab_size;
    if ((rc = eng_seq_new(en, &seq, &e))) goto fail;
    if (sidx) {
        rec.idx = sidx;
        rec.E = E;
        rec.K = eng_config_topk_blocks(c);
        rec.blocks = malloc((size_t)(E * rec.K + 1) * sizeof(int32_t));
        rec.seen = calloc((size_t)E + 1, 1);
        if (!rec.blocks || !rec.seen) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
        for (int64_t i = 0; i < E * rec.K; i++) rec.blocks[i] = -1;
        eng_seq_set_select_hook(seq, on_select, &rec);
    }

    /* rows wanted: positions (prefill mode) or P-1 .. N-1 (decode mode) */
    int64_t nout = decode_from > 0 ? N - decode_from + 1 : P;
    rows = malloc((size_t)(nout + 1) * sizeof(int64_t));
    logits = malloc((size_t)nout * (size_t)V * sizeof(float) + 4);
    if (!rows || !logits) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
    if (decode_from < 0) {
        for (int64_t i = 0; i < P; i++) {
            if (pos[i] < 0 || pos[i] >= N || (i && pos[i] <= pos[i - 1])) {
                rc = sala_errf(&e, SALA_EINVAL, "%s: positions[%lld] = %d is not ascending inside "
                               "[0, %lld)", casep, (long long)i, pos[i], (long long)N);
                goto fail;
            }
            rows[i] = pos[i];
        }
    }
    double t0 = sala_now();
    const int64_t plen = decode_from > 0 ? decode_from : N;
    const int64_t step = chunk > 0 ? chunk : plen;
    int64_t r = 0;
    for (int64_t s0 = 0; s0 < plen; s0 += step) {
        const int64_t n = SALA_MIN(step, plen - s0);
        int64_t local[1], nr = 0, *rr = local;
        if (decode_from > 0) {
            if (s0 + n == plen) local[nr++] = n - 1;   /* row P-1 */
        } else {
            rr = rows + r;
            while (r + nr < P && rows[r + nr] < s0 + n) {
                rows[r + nr] -= s0;
                nr++;
            }
        }
        if ((rc = eng_seq_prefill(seq, ids + s0, n, rr, nr, logits + r * V, &e))) goto fail;
        r += nr;
    }
    for (int64_t p = plen; p < N; p++) {
        if ((rc = eng_seq_decode(seq, ids[p], logits + r * V, &e))) goto fail;
        r++;
    }
    sala_log(SALA_LOG_DEBUG, "logits: %lld tokens in %.2f s", (long long)N, sala_now() - t0);

    w = st_writer_new();
    if (!w) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
    int64_t shp[2] = {nout, V};
    if ((rc = st_writer_add(w, "logits", ST_F32, 2, shp, logits, &e))) goto fail;
    if (decode_from > 0) {
        argmax = malloc((size_t)nout * sizeof(int32_t));
        if (!argmax) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
        for (int64_t i = 0; i < nout; i++) {
            const float *lr = logits + i * V;
            int64_t best = 0;
            for (int64_t j = 1; j < V; j++) if (lr[j] > lr[best]) best = j;
            argmax[i] = (int32_t)best;
        }
        if ((rc = st_writer_add(w, "argmax_ids", ST_I32, 1, &nout, argmax, &e))) goto fail;
        int32_t *pp = malloc((size_t)nout * sizeof(int32_t));
        if (!pp) { rc = sala_errf(&e, SALA_ENOMEM, "out of memory"); goto fail; }
        for (int64_t i = 0; i < nout; i++) pp[i] = (int32_t)(decode_from - 1 + i);
        rc = st_writer_add(w, "positions", ST_I32, 1, &nout, pp, &e);
        free(pp);
        if (rc) goto fail;
    } else if ((rc = st_writer_add(w, "positions", ST_I32, 1, &P, pos, &e))) {
        goto fail;
    }
    if (sidx) {
        for (int64_t i = 0; i < E; i++)
            if (!rec.seen[i]) {
                rc = sala_errf(&e, SALA_EINVAL, "%s: selected_index row %lld (layer %d, group %d, "
                               "position %d) was not computed by the InfLLM-V2 path", casep,
                               (long long)i, sidx[3 * i], sidx[3 * i + 1], sidx[3 * i + 2]);
                goto fail;
            }
        int64_t bs[2] = {E, rec.K}, is[2] = {E, 3};
        if ((rc = st_writer_add(w, "selected_blocks", ST_I32, 2, bs, rec.blocks, &e)) ||
            (rc = st_writer_add(w, "selected_index", ST_I32, 2, is, sidx, &e)))
            goto fail;
    }
    rc = st_writer_write(w, outp, &e);
fail:
    if (rc) app_errorf("%s", e.msg);
    st_writer_free(w);
    eng_seq_free(seq);
    eng_engine_close(en);
    st_close(cf);
    free(ids);
    free(pos);
    free(sidx);
    free(rows);
    free(logits);
    free(argmax);
    free(rec.blocks);
    free(rec.seen);
    return app_exit_code(rc);
usage:
    fputs(cmd_logits_usage, stderr);
    return EXIT_USER;
}
