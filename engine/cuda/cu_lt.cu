/* cu_lt.cu: the prefill GEMMs through cuBLASLt, with the algorithm of each shape chosen by timing
 * (issue 6, TTFT). On the first prefill GEMM of a shape (out, in, T, ldy, output type, beta,
 * operand alignment) the top CU_LT_CAND heuristic candidates of cublasLtMatmulAlgoGetHeuristic
 * (workspace up to the model's 64 MiB) are timed on the model's stream, then the three fastest
 * again in turn with cublasGemmEx(CUBLAS_GEMM_DEFAULT) (entry_tune); the shape keeps the fastest
 * Lt algorithm, and uses it only when it beats cublasGemmEx by more than 1% (CU_LT_MARGIN; ties
 * -> cublasGemmEx, the old path).
 *
 * Switch (read at every call): SALA_CUDA_LT=0 the old path (cublasGemmEx) everywhere; =force the
 * fastest Lt candidate even where cublasGemmEx won, an error where none ran (parity tests);
 * otherwise the timed choice.
 * Only full chunks (T == CU_CHUNK) are timed (cu_lt_gemm says why). Invariant: a cached entry's
 * descriptors describe exactly its key; a failing Lt call marks the entry unusable and the caller
 * falls back. */
#include "engine/cuda/cu_int.h"

#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CU_LT_CAND 16
#define CU_LT_SLOTS 64
#define CU_LT_REPS 3                  /* round 1: every candidate */
#define CU_LT_KEEP 3                  /* round 2: the fastest of round 1 and cublasGemmEx ... */
#define CU_LT_REPS2 8                 /* ... CU_LT_REPS2 calls each, CU_LT_ROUNDS times in turn */
#define CU_LT_ROUNDS 2
#define CU_LT_MARGIN 0.99f   /* Lt is used when its time < margin x cublasGemmEx's */

typedef struct {
    int out, in, T, ldy, beta1, align;
    cudaDataType_t yt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    bool have_algo;                   /* a timed Lt candidate ran */
    bool wins;                        /* ... and beat cublasGemmEx */
    float ms_ex, ms_lt;               /* the tuning times (one call) */
} lt_entry;

struct cu_lt {
    cublasLtHandle_t h;
    int n;
    lt_entry e[CU_LT_SLOTS];
};

int cu_lt_new(cu_lt **out, sala_err *e)
{
    *out = NULL;
    cu_lt *lt = (cu_lt *)calloc(1, sizeof(*lt));
    if (!lt) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (cublasLtCreate(&lt->h) != CUBLAS_STATUS_SUCCESS) {
        free(lt);
        return sala_errf(e, SALA_EINTERNAL, "cuBLASLt: cublasLtCreate failed");
    }
    *out = lt;
    return SALA_OK;
}

static void entry_clear(lt_entry *x)
{
    if (x->op) cublasLtMatmulDescDestroy(x->op);
    if (x->la) cublasLtMatrixLayoutDestroy(x->la);
    if (x->lb) cublasLtMatrixLayoutDestroy(x->lb);
    if (x->lc) cublasLtMatrixLayoutDestroy(x->lc);
    memset(x, 0, sizeof(*x));
}

void cu_lt_free(cu_lt *lt)
{
    if (!lt) return;
    for (int i = 0; i < lt->n; i++) entry_clear(&lt->e[i]);
    cublasLtDestroy(lt->h);
    free(lt);
}

int cu_lt_mode(void)
{
    const char *v = getenv("SALA_CUDA_LT");
    if (!v) return CU_LT_TUNED;
    if (!strcmp(v, "0")) return CU_LT_OFF;
    if (!strcmp(v, "force")) return CU_LT_FORCE;
    return CU_LT_TUNED;
}

/* Largest power of two (<= 256) dividing the address. */
static int align_of(const void *p)
{
    const uintptr_t a = (uintptr_t)p;
    int r = 256;
    while (r > 1 && a % (uintptr_t)r) r /= 2;
    return r;
}

/* The cublasGemmEx form of the call (the old path). */
static cublasStatus_t gemm_ex(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T,
                              float alpha, float beta, void *y, int ldy, cudaDataType_t yt)
{
    return cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &alpha, W, CUDA_R_16BF, in,
                        x, CUDA_R_16BF, in, &beta, y, yt, ldy, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
}

static cublasStatus_t lt_run(cu_model *m, const lt_entry *x, const cublasLtMatmulAlgo_t *algo,
                             const bf16 *W, const bf16 *xin, float alpha, float beta, void *y)
{
    return cublasLtMatmul(m->lt->h, x->op, &alpha, W, x->la, xin, x->lb, &beta, y, x->lc, y,
                          x->lc, algo, m->blas_ws, m->blas_ws ? CU_BLAS_WS : 0, m->st);
}

/* Describe the key's GEMM: D (out, T) col-major (ldy) = alpha · op(A) B + beta · C with
 * A = W stored (in, out) col-major, op = transpose; B = x stored (in, T). */
static int entry_init(cu_lt *lt, lt_entry *x, sala_err *e)
{
    const cublasOperation_t tA = CUBLAS_OP_T;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&x->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(x->op, CUBLASLT_MATMUL_DESC_TRANSA, &tA,
                                                sizeof(tA)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&x->la, CUDA_R_16BF, x->in, x->out, x->in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&x->lb, CUDA_R_16BF, x->in, x->T, x->in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&x->lc, x->yt, x->out, x->T, x->ldy));
    (void)lt;
    return SALA_OK;
}

/* Time fn over reps calls after one untimed call: ms a call, or -1 when a call failed. */
template <class F> static float time_it(cu_model *m, cudaEvent_t a, cudaEvent_t b, int reps, F fn)
{
    if (fn() != CUBLAS_STATUS_SUCCESS) return -1;
    cudaEventRecord(a, m->st);
    for (int r = 0; r < reps; r++)
        if (fn() != CUBLAS_STATUS_SUCCESS) return -1;
    cudaEventRecord(b, m->st);
    float ms = -1;
    if (cudaEventSynchronize(b) != cudaSuccess || cudaEventElapsedTime(&ms, a, b) != cudaSuccess)
        return -1;
    return ms / reps;
}

/* With SALA_CUDA_LT_LOG=<file>: one line a tuned shape appended to that file (the heuristic's
 * candidates by index with their tile and stage ids and round-1 ms, round 2's sums for the kept
 * ones, cublasGemmEx's ms and the choice), to see how far apart the candidates are. */
static void entry_log(const lt_entry *x, const cublasLtMatmulHeuristicResult_t *res, int nres,
                      const float *t1, const int *keep, int nkeep, const float *sl)
{
    const char *path = getenv("SALA_CUDA_LT_LOG");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    if (!f) return;
    fprintf(f, "shape out %d in %d T %d out_type %s beta %d: ex %.4f ms, lt %.4f ms, %s\n", x->out,
            x->in, x->T, x->yt == CUDA_R_32F ? "f32" : "bf16", x->beta1, x->ms_ex, x->ms_lt,
            x->wins ? "lt" : "ex");
    for (int i = 0; i < nres; i++) {
        int tile = -1, stages = -1;
        size_t w = 0;
        cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
                                             sizeof(tile), &w);
        cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                             &stages, sizeof(stages), &w);
        float r2 = -1;
        for (int k = 0; k < nkeep; k++)
            if (keep[k] == i) r2 = sl[k] / CU_LT_ROUNDS;
        fprintf(f, "  cand %2d tile %3d stages %3d: round 1 %.4f ms, round 2 %.4f ms\n", i, tile,
                stages, t1[i], r2);
    }
    fclose(f);
}

/* Tune entry x on operands W, xin; the timed calls write y (beta 0) or a scratch copy of the
 * output's size (beta 1: y holds the residual). An Lt failure leaves x->have_algo false. */
static int entry_tune(cu_model *m, lt_entry *x, const bf16 *W, const bf16 *xin, void *y,
                      sala_err *e)
{
    cublasLtMatmulPreference_t pref = NULL;
    cudaEvent_t a = NULL, b = NULL;
    void *scratch = NULL;
    int rc = SALA_OK;
    cublasLtMatmulHeuristicResult_t res[CU_LT_CAND];
    int nres = 0;
    const uint64_t ws = m->blas_ws ? CU_BLAS_WS : 0;
    const uint32_t al = (uint32_t)x->align;
    const size_t esz = x->yt == CUDA_R_32F ? 4 : 2;
    size_t ybytes;
    if (__builtin_mul_overflow((size_t)x->ldy, (size_t)x->T, &ybytes) ||
        __builtin_mul_overflow(ybytes, esz, &ybytes))
        return sala_errf(e, SALA_EINTERNAL, "cuBLASLt: output of %d x %d too large", x->T, x->ldy);
    void *dst = y;
    if (x->beta1) {
        if (cudaMalloc(&scratch, ybytes) != cudaSuccess) {
            cudaGetLastError();
            return SALA_OK;   /* no room to tune: cublasGemmEx */
        }
        dst = scratch;
        if (cudaMemsetAsync(scratch, 0, ybytes, m->st) != cudaSuccess) goto done;
    }
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) goto done;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                         sizeof(al));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                         sizeof(al));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                         sizeof(al));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                         sizeof(al));
    if (cublasLtMatmulAlgoGetHeuristic(m->lt->h, x->op, x->la, x->lb, x->lc, x->lc, pref,
                                       CU_LT_CAND, res, &nres) != CUBLAS_STATUS_SUCCESS)
        nres = 0;
    if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess) {
        cudaGetLastError();
        goto done;
    }
    {
        /* Round 1: every candidate, CU_LT_REPS calls. Round 2: cublasGemmEx and the CU_LT_KEEP
         * fastest, CU_LT_REPS2 calls each, CU_LT_ROUNDS times in turn (clock drift and
         * power throttling hit all of them alike); the sums decide. */
        const float alpha = 1.0f, beta = x->beta1 ? 1.0f : 0.0f;
        auto ex = [&] {
            return gemm_ex(m, W, x->out, x->in, xin, x->T, alpha, beta, dst, x->ldy, x->yt);
        };
        float t1[CU_LT_CAND];
        int keep[CU_LT_KEEP], nkeep = 0;
        for (int i = 0; i < nres; i++) {
            t1[i] = -1;
            if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
            t1[i] = time_it(m, a, b, CU_LT_REPS, [&] {
                return lt_run(m, x, &res[i].algo, W, xin, alpha, beta, dst);
            });
        }
        for (int k = 0; k < CU_LT_KEEP; k++) {   /* the fastest of round 1, in order */
            int bi = -1;
            for (int i = 0; i < nres; i++) {
                bool taken = false;
                for (int j = 0; j < nkeep; j++) taken |= keep[j] == i;
                if (!taken && t1[i] >= 0 && (bi < 0 || t1[i] < t1[bi])) bi = i;
            }
            if (bi >= 0) keep[nkeep++] = bi;
        }
        float sx = 0, sl[CU_LT_KEEP] = {0};
        for (int r = 0; r < CU_LT_ROUNDS; r++) {
            const float tx = time_it(m, a, b, CU_LT_REPS2, ex);
            sx = tx < 0 || sx < 0 ? -1 : sx + tx;
            for (int k = 0; k < nkeep; k++) {
                const float tl = time_it(m, a, b, CU_LT_REPS2, [&] {
                    return lt_run(m, x, &res[keep[k]].algo, W, xin, alpha, beta, dst);
                });
                sl[k] = tl < 0 || sl[k] < 0 ? -1 : sl[k] + tl;
            }
        }
        x->ms_ex = sx < 0 ? -1 : sx / CU_LT_ROUNDS;
        float best = -1;
        for (int k = 0; k < nkeep; k++)
            if (sl[k] >= 0 && (best < 0 || sl[k] < best)) best = sl[k], x->algo = res[keep[k]].algo;
        x->have_algo = best >= 0;
        x->ms_lt = best < 0 ? -1 : best / CU_LT_ROUNDS;
        x->wins = x->have_algo && (x->ms_ex < 0 || x->ms_lt < CU_LT_MARGIN * x->ms_ex);
        entry_log(x, res, nres, t1, keep, nkeep, sl);
    }
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    if (scratch) {
        cudaError_t err = cudaStreamSynchronize(m->st);
        cudaFree(scratch);
        if (err != cudaSuccess)
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: tuning: %s", cudaGetErrorString(err));
    }
    cudaGetLastError();   /* a failed candidate's launch error is not the caller's */
    return rc;
}

/* The entry of this call's key, made and tuned on first use; NULL when the table is full or the
 * descriptors could not be made (cublasGemmEx then). */
static lt_entry *entry_get(cu_model *m, const bf16 *W, int out, int in, const bf16 *xin, int T,
                           int beta1, void *y, int ldy, cudaDataType_t yt, sala_err *e, int *rc)
{
    cu_lt *lt = m->lt;
    int al = align_of(W);
    if (align_of(xin) < al) al = align_of(xin);
    if (align_of(y) < al) al = align_of(y);
    for (int i = 0; i < lt->n; i++) {
        lt_entry *x = &lt->e[i];
        if (x->out == out && x->in == in && x->T == T && x->ldy == ldy && x->yt == yt &&
            x->beta1 == beta1 && x->align == al)
            return x;
    }
    if (lt->n == CU_LT_SLOTS) return NULL;
    lt_entry *x = &lt->e[lt->n];
    memset(x, 0, sizeof(*x));
    x->out = out, x->in = in, x->T = T, x->ldy = ldy, x->yt = yt, x->beta1 = beta1, x->align = al;
    if ((*rc = entry_init(lt, x, e)) != SALA_OK) {
        entry_clear(x);
        return NULL;
    }
    lt->n++;
    if ((*rc = entry_tune(m, x, W, xin, y, e)) != SALA_OK) return NULL;
    return x;
}

int cu_lt_gemm(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
               float beta, void *y, int ldy, cudaDataType_t yt, sala_err *e)
{
    const int mode = cu_lt_mode();
    /* Timed algorithms only for full prefill chunks (T == CU_CHUNK), where a long prefill
     * spends its GEMM time and a shape is tuned once per model. Any other T (a prompt's last
     * chunk, a question, a batched decode step) would be a new shape to tune for one call:
     * cublasGemmEx. SALA_CUDA_LT=force: every T > CU_LT_MIN_T (the parity tests). */
    const bool want = mode == CU_LT_FORCE ? T > CU_LT_MIN_T : T == CU_CHUNK;
    if (mode != CU_LT_OFF && m->lt && want && (beta == 0.0f || beta == 1.0f)) {
        int rc = SALA_OK;
        lt_entry *le = entry_get(m, W, out, in, x, T, beta != 0.0f, y, ldy, yt, e, &rc);
        if (rc) return rc;
        if (le && le->have_algo && (le->wins || mode == CU_LT_FORCE)) {
            if (lt_run(m, le, &le->algo, W, x, alpha, beta, y) == CUBLAS_STATUS_SUCCESS)
                return SALA_OK;
            le->have_algo = false;   /* never again; this call through cublasGemmEx */
        }
        if (mode == CU_LT_FORCE)
            return sala_errf(e, SALA_EINTERNAL, "cuBLASLt: SALA_CUDA_LT=force: no algorithm ran "
                             "for the GEMM (%d x %d) x %d", out, in, T);
    }
    CUBLAS_CHECK(gemm_ex(m, W, out, in, x, T, alpha, beta, y, ldy, yt));
    return SALA_OK;
}

int cu_lt_stats(const cu_model *m, int i, cu_lt_stat *s)
{
    if (!m->lt || i < 0 || i >= m->lt->n) return 0;
    const lt_entry *x = &m->lt->e[i];
    s->out = x->out, s->in = x->in, s->T = x->T;
    s->bf16_out = x->yt == CUDA_R_16BF;
    s->beta1 = x->beta1;
    s->ms_ex = x->ms_ex, s->ms_lt = x->have_algo ? x->ms_lt : -1;
    s->wins = x->have_algo && x->wins;
    return 1;
}

int cu_lt_bench(cu_model *m, const bf16 *const *W, int ncopy, int out, int in, const bf16 *x,
                int T, float *y, int reps, float *best_ms, int *ncand, sala_err *e)
{
    lt_entry x0;
    memset(&x0, 0, sizeof(x0));
    x0.out = out, x0.in = in, x0.T = T, x0.ldy = out, x0.yt = CUDA_R_32F, x0.align = 16;
    *best_ms = -1;
    *ncand = 0;
    int rc = entry_init(m->lt, &x0, e);
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[CU_LT_CAND];
    int nres = 0;
    cudaEvent_t a = NULL, b = NULL;
    const uint64_t ws = m->blas_ws ? CU_BLAS_WS : 0;
    if (!rc && (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS ||
                cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess))
        rc = sala_errf(e, SALA_EINTERNAL, "cuBLASLt bench: preference or events");
    if (!rc) {
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof(ws));
        if (cublasLtMatmulAlgoGetHeuristic(m->lt->h, x0.op, x0.la, x0.lb, x0.lc, x0.lc, pref,
                                           CU_LT_CAND, res, &nres) != CUBLAS_STATUS_SUCCESS)
            nres = 0;
    }
    for (int i = 0; i < nres && !rc; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        int k = 0;
        const float ms = time_it(m, a, b, reps, [&] {
            const bf16 *Wk = W[k++ % ncopy];
            return lt_run(m, &x0, &res[i].algo, Wk, x, 1.0f, 0.0f, y);
        });
        if (ms < 0) continue;
        (*ncand)++;
        if (*best_ms < 0 || ms < *best_ms) *best_ms = ms;
    }
    cudaGetLastError();
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    entry_clear(&x0);
    return rc;
}
