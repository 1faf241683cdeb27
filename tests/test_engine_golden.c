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

#include "golden_cmp.h"

SALA_SUITE(engine_golden);


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
    CU_ASSERT_EQUAL_FATAL(golden_compare(refp, outp, 1e-3f, &r), 0);
    if (getenv("SALA_TEST_VERBOSE"))
        fprintf(stderr, "\n  %s %s: rows %lld rel_l2 %.3g row_rel %.3g max_abs %.3g argmax bad "
                "%lld/%lld; selections bad %lld/%lld (+%lld at margin < 1e-3, of %lld)\n", name,
                extra, (long long)r.rows, r.rel_l2, r.row_rel, r.max_abs, (long long)r.argmax_bad,
                (long long)r.argmax_checked, (long long)r.sel_bad, (long long)r.sel_checked,
                (long long)(r.sel_diff - r.sel_bad), (long long)r.sel_rows);
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
