/* test_engine_golden.c: every case of ../shared/golden through `sala logits`, checked against
 * the float64 reference with the fp32-engine tolerances of the golden README §5: logits rel_l2,
 * worst row, max |Δ|; InfLLM-V2 selections identical wherever selection_margin >= 1e-3; argmax
 * identical wherever the reference top1-top2 margin exceeds 0.1. Also runs the dense case with
 * --chunk and the sparse case through chunked prefill. */
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"

SALA_SUITE(engine_golden);

typedef struct {
    double rel_l2, row_rel, max_abs;
    int64_t rows, argmax_checked, argmax_bad;
    int64_t sel_rows, sel_checked, sel_bad, sel_bad_tie;
} golden_cmp;

static const st_tensor *need(const st_file *f, const char *name)
{
    const st_tensor *t = st_find(f, name);
    CU_ASSERT_PTR_NOT_NULL(t);
    return t;
}

/* Compare out (written by sala logits) with the reference case file ref. */
static int compare(const char *refp, const char *outp, golden_cmp *r)
{
    st_file *ref = NULL, *out = NULL;
    sala_err e;
    memset(r, 0, sizeof(*r));
    if (st_open(refp, &ref, &e) || st_open(outp, &out, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        st_close(ref);
        return -1;
    }
    const st_tensor *lr = need(ref, "logits"), *lo = need(out, "logits");
    int rc = -1;
    if (!lr || !lo || lr->numel != lo->numel || lr->ndim != 2) goto done;
    const int64_t P = lr->shape[0], V = lr->shape[1];
    float *a = malloc((size_t)(P * V) * sizeof(float)), *b = malloc((size_t)(P * V) * sizeof(float));
    st_to_f32(lr, 0, (size_t)(P * V), a);
    st_to_f32(lo, 0, (size_t)(P * V), b);
    double num = 0, den = 0;
    for (int64_t i = 0; i < P; i++) {
        double rn = 0, rd = 0;
        int64_t am = 0, bm = 0;
        for (int64_t j = 0; j < V; j++) {
            double d = (double)b[i * V + j] - a[i * V + j];
            rn += d * d;
            rd += (double)a[i * V + j] * a[i * V + j];
            if (fabs(d) > r->max_abs) r->max_abs = fabs(d);
            if (a[i * V + j] > a[i * V + am]) am = j;
            if (b[i * V + j] > b[i * V + bm]) bm = j;
        }
        double second = -INFINITY;
        for (int64_t j = 0; j < V; j++)
            if (j != am && a[i * V + j] > second) second = a[i * V + j];
        if (a[i * V + am] - second > 0.1) {
            r->argmax_checked++;
            if (am != bm) r->argmax_bad++;
        }
        num += rn;
        den += rd;
        if (sqrt(rn / rd) > r->row_rel) r->row_rel = sqrt(rn / rd);
    }
    r->rel_l2 = sqrt(num / den);
    r->rows = P;
    free(a);
    free(b);
    const st_tensor *sr = st_find(ref, "selected_blocks");
    if (sr) {
        const st_tensor *so = need(out, "selected_blocks"), *mr = need(ref, "selection_margin");
        if (!so || !mr || so->numel != sr->numel) goto done;
        const int64_t E = sr->shape[0], K = sr->shape[1];
        int32_t *x = malloc(sr->nbytes), *y = malloc(so->nbytes);
        float *m = malloc((size_t)E * sizeof(float));
        memcpy(x, sr->data, sr->nbytes);
        memcpy(y, so->data, so->nbytes);
        st_to_f32(mr, 0, (size_t)E, m);
        r->sel_rows = E;
        for (int64_t i = 0; i < E; i++) {
            bool same = memcmp(x + i * K, y + i * K, (size_t)K * sizeof(int32_t)) == 0;
            if (m[i] >= 1e-3f) {
                r->sel_checked++;
                if (!same) r->sel_bad++;
            } else if (!same) {
                r->sel_bad_tie++;
            }
        }
        free(x);
        free(y);
        free(m);
    }
    rc = 0;
done:
    st_close(ref);
    st_close(out);
    return rc;
}

/* Run case `name` (extra: more sala logits flags) and check the README §5 fp32 tolerances. */
static void run_case(const char *name, const char *extra, double rel_tol, double max_abs_tol)
{
    char refp[4200], outp[4200], cmd[13000], log[4096];
    snprintf(refp, sizeof(refp), "%s", test_shared("golden/cases/tiny-a/"));
    strncat(refp, name, sizeof(refp) - strlen(refp) - 1);
    strncat(refp, ".f64.safetensors", sizeof(refp) - strlen(refp) - 1);
    snprintf(outp, sizeof(outp), "%s/%s.out.safetensors", test_tmpdir(), name);
    snprintf(cmd, sizeof(cmd), "%s logits --model %s --case %s --out %s %s", test_bin(),
             test_shared("golden/models/tiny-a"), refp, outp, extra);
    int st = test_run(cmd, log, sizeof(log));
    if (st != 0) fprintf(stderr, "\n%s\n-> %d: %s\n", cmd, st, log);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    golden_cmp r;
    CU_ASSERT_EQUAL_FATAL(compare(refp, outp, &r), 0);
    if (getenv("SALA_TEST_VERBOSE"))
        fprintf(stderr, "\n  %s %s: rows %lld rel_l2 %.3g row_rel %.3g max_abs %.3g argmax bad "
                "%lld/%lld; selections bad %lld/%lld (+%lld at margin < 1e-3, of %lld)\n", name,
                extra, (long long)r.rows, r.rel_l2, r.row_rel, r.max_abs, (long long)r.argmax_bad,
                (long long)r.argmax_checked, (long long)r.sel_bad, (long long)r.sel_checked,
                (long long)r.sel_bad_tie, (long long)r.sel_rows);
    CU_ASSERT(r.rows > 0);
    CU_ASSERT(r.rel_l2 <= rel_tol);
    CU_ASSERT(r.row_rel <= 5e-3);
    CU_ASSERT(r.max_abs <= max_abs_tol);
    CU_ASSERT_EQUAL(r.argmax_bad, 0);
    CU_ASSERT_EQUAL(r.sel_bad, 0);
}

static void t_dense(void) { run_case("dense_prefill", "", 1e-3, 2e-2); }
static void t_dense_chunked(void) { run_case("dense_prefill", "--chunk 97", 1e-3, 2e-2); }
static void t_sparse(void) { run_case("sparse_prefill", "", 2e-3, 0.5); }
static void t_sparse_chunked(void) { run_case("sparse_prefill", "--chunk 700", 2e-3, 0.5); }
static void t_decode(void) { run_case("decode", "--decode-from 2990", 1e-3, 0.5); }
static void t_crossing(void) { run_case("crossing", "--decode-from 1000", 1e-3, 0.5); }

void suite_engine_golden(void)
{
    SALA_ADD("engine_golden", {"dense_prefill", t_dense}, {"dense_prefill --chunk 97", t_dense_chunked},
             {"sparse_prefill", t_sparse}, {"sparse_prefill --chunk 700", t_sparse_chunked},
             {"decode", t_decode}, {"crossing", t_crossing});
}
