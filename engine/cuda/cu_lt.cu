/* cu_lt.cu: the prefill GEMMs through cuBLASLt, with the algorithm of each shape chosen by timing
 * (issue 6, TTFT). On the first prefill GEMM of a shape (out, in, T, ldy, output type, beta,
 * operand alignment) the top CU_LT_CAND heuristic candidates of cublasLtMatmulAlgoGetHeuristic
 * (workspace up to the model's 64 MiB) are timed on the model's stream (round 1, the same call
 * repeated); the CU_LT_KEEP fastest and cublasGemmEx(CUBLAS_GEMM_DEFAULT) then take turns on the
 * shape's next real calls, CU_LT_SAMP each, timed by events around each call (the trial: the
 * weights, the L2 contents and the clocks of the model's own steps, which repeated calls on one
 * weight matrix do not reproduce; measured: isolated timing picked tiles 4-10% slower in the
 * model).
 * The shape keeps the Lt candidate of the least median time, and uses it only when it beats
 * cublasGemmEx's median by more than 1% (CU_LT_MARGIN; ties -> cublasGemmEx, the old path).
 * Until the trial's last event has completed, calls go through cublasGemmEx.
 *
 * Switch (read at every call): SALA_CUDA_LT=0 the old path (cublasGemmEx) everywhere; =force the
 * fastest round-1 candidate even where cublasGemmEx won, an error where none ran (parity
 * tests); otherwise the timed choice. SALA_CUDA_LT_LOG=<file>: each decided shape's times.
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
#define CU_LT_KEEP 4                  /* the trial: the fastest of round 1 and cublasGemmEx ... */
#define CU_LT_SAMP 3                  /* ... CU_LT_SAMP real calls each, in turn */
#define CU_LT_TRIAL ((CU_LT_KEEP + 1) * CU_LT_SAMP)
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
    /* the trial: candidate 0 = cublasGemmEx, 1.. = cand[0..ncand); call i of the trial runs
     * candidate i % (ncand + 1) between ev[i][0] and ev[i][1]; trial = calls made, -1 decided */
    cublasLtMatmulAlgo_t cand[CU_LT_KEEP];
    float r1[CU_LT_KEEP];             /* their round-1 times */
    bool bad[CU_LT_KEEP + 1];         /* a call of this candidate failed */
    int ncand, trial;
    cudaEvent_t ev[CU_LT_TRIAL][2];
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
    for (int i = 0; i < CU_LT_TRIAL; i++)
        for (int j = 0; j < 2; j++)
            if (x->ev[i][j]) cudaEventDestroy(x->ev[i][j]);
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
        /* Round 1: every candidate, CU_LT_REPS calls; the CU_LT_KEEP fastest go to the trial */
        const float alpha = 1.0f, beta = x->beta1 ? 1.0f : 0.0f;
        float t1[CU_LT_CAND];
        for (int i = 0; i < nres; i++) {
            t1[i] = -1;
            if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
            t1[i] = time_it(m, a, b, CU_LT_REPS, [&] {
                return lt_run(m, x, &res[i].algo, W, xin, alpha, beta, dst);
            });
        }
        bool taken[CU_LT_CAND] = {false};
        for (int k = 0; k < CU_LT_KEEP; k++) {   /* the fastest of round 1, in order */
            int bi = -1;
            for (int i = 0; i < nres; i++)
                if (!taken[i] && t1[i] >= 0 && (bi < 0 || t1[i] < t1[bi])) bi = i;
            if (bi < 0) break;
            taken[bi] = true;
            x->cand[x->ncand] = res[bi].algo;
            x->r1[x->ncand++] = t1[bi];
        }
        x->have_algo = x->ncand > 0;
        if (x->have_algo) x->algo = x->cand[0];   /* SALA_CUDA_LT=force: round 1's fastest */
        x->ms_lt = x->have_algo ? x->r1[0] : -1;
        x->trial = -1;                               /* decided (cublasGemmEx) unless ... */
        for (int i = 0; i < CU_LT_TRIAL && x->have_algo; i++)
            for (int j = 0; j < 2; j++)
                if (cudaEventCreate(&x->ev[i][j]) != cudaSuccess) {
                    cudaGetLastError();
                    goto done;                       /* no trial: cublasGemmEx */
                }
        if (x->have_algo) x->trial = 0;              /* ... the trial can run */
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
    x->trial = -1;   /* no trial unless entry_tune starts one */
    x->ms_ex = x->ms_lt = -1;
    if ((*rc = entry_init(lt, x, e)) != SALA_OK) {
        entry_clear(x);
        return NULL;
    }
    lt->n++;
    if ((*rc = entry_tune(m, x, W, xin, y, e)) != SALA_OK) return NULL;
    return x;
}

/* Ends x's trial once its last event has completed (false: not yet): each candidate's median
 * of CU_LT_SAMP calls; the fastest Lt candidate is kept, and used when it beats cublasGemmEx's
 * median by more than CU_LT_MARGIN. SALA_CUDA_LT_LOG appends the times to that file. */
static bool trial_end(lt_entry *x)
{
    const cudaError_t q = cudaEventQuery(x->ev[CU_LT_TRIAL - 1][1]);
    if (q != cudaSuccess) {
        if (q == cudaErrorNotReady) cudaGetLastError();   /* not the caller's error; any other
                                                              stays for the caller to see */
        return false;
    }
    const int nc = x->ncand + 1;
    float med[CU_LT_KEEP + 1];
    for (int k = 0; k < nc; k++) {
        float t[CU_LT_SAMP];
        int n = 0;
        for (int i = k; i < nc * CU_LT_SAMP; i += nc) {
            float ms = -1;
            if (cudaEventElapsedTime(&ms, x->ev[i][0], x->ev[i][1]) != cudaSuccess) {
                cudaGetLastError();
                ms = -1;
            }
            if (ms >= 0) t[n++] = ms;
        }
        for (int i = 1; i < n; i++)   /* insertion sort: a few samples */
            for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
                const float u = t[j];
                t[j] = t[j - 1], t[j - 1] = u;
            }
        med[k] = x->bad[k] || n < CU_LT_SAMP ? -1 : t[n / 2];
    }
    int best = -1;
    for (int k = 1; k < nc; k++)
        if (med[k] >= 0 && (best < 0 || med[k] < med[best])) best = k;
    x->ms_ex = med[0];
    x->have_algo = best > 0;
    if (best > 0) x->algo = x->cand[best - 1], x->ms_lt = med[best];
    x->wins = x->have_algo && (x->ms_ex < 0 || x->ms_lt < CU_LT_MARGIN * x->ms_ex);
    x->trial = -1;
    for (int i = 0; i < CU_LT_TRIAL; i++)
        for (int j = 0; j < 2; j++) {
            cudaEventDestroy(x->ev[i][j]);
            x->ev[i][j] = NULL;
        }
    const char *path = getenv("SALA_CUDA_LT_LOG");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f, "shape out %d in %d T %d out_type %s beta %d: median of %d calls, ex %.4f ms",
                x->out, x->in, x->T, x->yt == CUDA_R_32F ? "f32" : "bf16", x->beta1, CU_LT_SAMP,
                med[0]);
        for (int k = 1; k < nc; k++) {
            int tile = -1, stages = -1;
            size_t w = 0;
            cublasLtMatmulAlgoConfigGetAttribute(&x->cand[k - 1], CUBLASLT_ALGO_CONFIG_TILE_ID,
                                                 &tile, sizeof(tile), &w);
            cublasLtMatmulAlgoConfigGetAttribute(&x->cand[k - 1], CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                                 &stages, sizeof(stages), &w);
            fprintf(f, ", lt%d (tile %d, stages %d; round 1 %.4f) %.4f ms", k, tile, stages,
                    x->r1[k - 1], med[k]);
        }
        fprintf(f, ": %s\n", x->wins ? "lt" : "ex");
        fclose(f);
    }
    return true;
}

/* One call of x's trial (x->trial >= 0): the next candidate in turn, between its two events;
 * after the trial's calls, cublasGemmEx until trial_end has decided. */
static cublasStatus_t trial_call(cu_model *m, lt_entry *x, const bf16 *W, const bf16 *xin,
                                 float alpha, float beta, void *y)
{
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(m->st, &cap) != cudaSuccess) cudaGetLastError();
    const int i = x->trial, nc = x->ncand + 1;
    auto ex = [&] { return gemm_ex(m, W, x->out, x->in, xin, x->T, alpha, beta, y, x->ldy, x->yt); };
    if (i >= CU_LT_TRIAL || cap != cudaStreamCaptureStatusNone) {
        if (i >= CU_LT_TRIAL && trial_end(x) && x->have_algo && x->wins &&
            lt_run(m, x, &x->algo, W, xin, alpha, beta, y) == CUBLAS_STATUS_SUCCESS)
            return CUBLAS_STATUS_SUCCESS;
        return ex();
    }
    const int k = i % nc;
    cublasStatus_t r;
    cudaEventRecord(x->ev[i][0], m->st);
    r = k ? lt_run(m, x, &x->cand[k - 1], W, xin, alpha, beta, y) : ex();
    cudaEventRecord(x->ev[i][1], m->st);
    x->trial++;
    if (r != CUBLAS_STATUS_SUCCESS && k) {   /* never again; this call through cublasGemmEx */
        x->bad[k] = true;
        cudaGetLastError();
        return ex();
    }
    return r;
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
        if (le && le->trial >= 0 && mode == CU_LT_TUNED) {
            CUBLAS_CHECK(trial_call(m, le, W, x, alpha, beta, y));
            return SALA_OK;
        }
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
