/* golden_cmp.h: compare a `sala logits` output with a ../shared/golden case file (README §2
 * layouts): logits rel_l2 over the whole tensor, the worst row's relative error, max |Δ|, argmax
 * agreement where the reference top-1/top-2 margin exceeds 0.1, and InfLLM-V2 selections. Used
 * by the CPU golden suite and the CUDA one, each with its own tolerances. */
#ifndef SALA_TEST_GOLDEN_CMP_H
#define SALA_TEST_GOLDEN_CMP_H

#include <stdint.h>

typedef struct {
    double rel_l2, row_rel, max_abs;
    int64_t rows, argmax_checked, argmax_bad;
    int64_t sel_rows;      /* selection rows in the reference */
    int64_t sel_diff;      /* rows whose selected blocks differ */
    int64_t sel_checked;   /* rows with selection_margin >= sel_margin ... */
    int64_t sel_bad;       /* ... of which differ */
} golden_cmp;

/* 0 when both files could be read and compared (the numbers in *r), -1 otherwise. */
int golden_compare(const char *refp, const char *outp, float sel_margin, golden_cmp *r);

#endif
