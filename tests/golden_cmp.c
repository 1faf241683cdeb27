/* golden_cmp.c: see golden_cmp.h. */
#include "golden_cmp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors.h"
#include "test.h"

static const st_tensor *need(const st_file *f, const char *name)
{
    const st_tensor *t = st_find(f, name);
    CU_ASSERT_PTR_NOT_NULL(t);
    return t;
}

int golden_compare(const char *refp, const char *outp, float sel_margin, golden_cmp *r)
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
            if (!same) r->sel_diff++;
            if (m[i] >= sel_margin) {
                r->sel_checked++;
                if (!same) r->sel_bad++;
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
