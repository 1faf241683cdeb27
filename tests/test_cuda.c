/* test_cuda.c: the CUDA backend against its CPU twins (make test-cuda; needs a GPU). Registered
 * only when SALA_TEST_CUDA=1, so `make test` on a machine without a GPU neither runs nor pretends
 * these tests.
 *   cuda_ops     every CUDA op on random inputs against the engine/cpu op it mirrors, with the
 *                inputs the kernel reads in bf16 rounded the same way for the CPU; tolerances
 *                are stated per test (bf16 outputs: about 2^-8 relative);
 *   cuda_golden  the whole model through `sala logits --backend cuda` against ../shared/golden
 *                *.bf16 and *.f64 cases with the bf16-engine tolerances of its README §5, and
 *                block-selection agreement (differences allowed only at margin < 1e-2);
 *   cuda_batch   batched decode against single decode of the same sequences, and forks that
 *                share the parent's cache chunks against forks that copy them (bit for bit).
 * libsala_cuda.so is $SALA_CUDA_LIB, else the one next to $SALA_BIN. */
#include "test.h"
#include "batch_cmp.h"
#include "golden_cmp.h"
#include "mem_state.h"

#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"
#include "engine/cpu/infllm.h"
#include "engine/cuda/cuda_ops.h"
#include "engine/engine.h"
#include "engine/random_model.h"
#include "engine/safetensors.h"

SALA_SUITE(cuda_ops);
SALA_SUITE(cuda_golden);
SALA_SUITE(cuda_batch);
SALA_SUITE(cuda_gemm_speed);
SALA_SUITE(cuda_select_speed);
SALA_SUITE(cuda_gemv_speed);

static const sala_cuda_ops *ops(void)
{
    static const sala_cuda_ops *o;
    if (o) return o;
    char so[4200];
    const char *env = getenv("SALA_CUDA_LIB");
    if (env && *env) {
        snprintf(so, sizeof(so), "%s", env);
    } else {
        snprintf(so, sizeof(so), "%s", test_bin());
        char *sl = strrchr(so, '/');
        if (sl) sl[1] = 0; else so[0] = 0;
        strncat(so, "libsala_cuda.so", sizeof(so) - strlen(so) - 1);
    }
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "\ncuda: %s\n", dlerror());
        return NULL;
    }
    const sala_cuda_ops *(*get)(void) = NULL;
    *(void **)&get = dlsym(h, "sala_cuda_ops_get");
    o = get ? get() : NULL;
    return o;
}

#define OPS() const sala_cuda_ops *O = ops(); CU_ASSERT_PTR_NOT_NULL_FATAL(O); sala_err e = {0}

static float bfr(float f)   /* round to bf16, nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static float *randv(eng_rng *r, size_t n, double std, bool round)
{
    float *p = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)(std * eng_rng_normal(r));
        if (round) p[i] = bfr(p[i]);
    }
    return p;
}

/* ‖a-b‖/‖b‖ and max|a-b| / max|b| */
static void diff(const float *a, const float *b, size_t n, double *rel, double *maxrel)
{
    double num = 0, den = 0, mx = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
        if (fabs(d) > mx) mx = fabs(d);
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    *maxrel = mb > 0 ? mx / mb : mx;
}

static void report(const char *what, double rel, double maxrel, double tol_rel, double tol_max)
{
    fprintf(stderr, "\n  %-34s rel_l2 %.2e (<= %.0e)  max/max %.2e (<= %.0e)", what, rel, tol_rel,
            maxrel, tol_max);
    CU_ASSERT(rel <= tol_rel);
    CU_ASSERT(maxrel <= tol_max);
}

static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---- ops ---- */

/* Residual add (a may be absent) + RMSNorm of T rows of D; x16: the residual stream in bf16
 * (the twin rounds x, and x after the add, to bf16). */
static void add_norm_case(int T, int D, bool with_a, bool x16, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    float *x = randv(&r, (size_t)T * D, 3.0, x16), *a = randv(&r, (size_t)T * D, 1.0, false);
    float *w = randv(&r, D, 0.1, false), *xo = malloc((size_t)T * D * 4),
          *ho = malloc((size_t)T * D * 4), *hr = malloc((size_t)T * D * 4);
    for (int i = 0; i < D; i++) w[i] += 1.0f;
    CU_ASSERT_EQUAL_FATAL(O->add_norm(x, with_a ? a : NULL, 0.7f, w, T, D, 1e-6f, x16, xo, ho,
                                      &e), SALA_OK);
    if (with_a)
        for (size_t i = 0; i < (size_t)T * D; i++) {
            x[i] += a[i] * 0.7f;
            if (x16) x[i] = bfr(x[i]);
        }
    cpu_rmsnorm(hr, x, w, T, D, 1e-6f);
    char what[96];
    double rel, mr;
    snprintf(what, sizeof(what), "residual add (%s) T=%d D=%d%s", x16 ? "bf16" : "fp32", T, D,
             with_a ? "" : " no a");
    diff(xo, x, (size_t)T * D, &rel, &mr);
    /* bf16: the device's add (a fused multiply-add) may round the other way at a bf16 tie; one
     * bf16 step of the largest value is < 8e-3 of it, a few such values keep rel_l2 ~1e-7 */
    report(what, rel, mr, x16 ? 1e-5 : 1e-6, x16 ? 8e-3 : 1e-6);
    snprintf(what, sizeof(what), "rmsnorm -> bf16 T=%d D=%d%s", T, D, x16 ? " (x bf16)" : "");
    diff(ho, hr, (size_t)T * D, &rel, &mr);
    report(what, rel, mr, 4e-3, 8e-3);
    free(x), free(a), free(w), free(xo), free(ho), free(hr);
}

/* The vector kernel with 1, 2 and 4 float4 groups a thread (D 4096, 8192, 16384), a partial last
 * warp (D 1000), decode rows (T 1, 3), no residual; the scalar kernel (D % 4 != 0); each of
 * them with the bf16 stream too (prefill's: no residual, rows of 4 groups a thread). */
static void t_add_norm(void)
{
    for (int k = 0; k < 2; k++) {
        add_norm_case(37, 4096, true, k, 1);
        add_norm_case(1, 4096, true, k, 51);
        add_norm_case(3, 4096, false, k, 52);
        add_norm_case(1, 8192, true, k, 53);
        add_norm_case(2, 16384, true, k, 54);
        add_norm_case(2, 1000, true, k, 55);
        add_norm_case(1, 4098, true, k, 56);
    }
    /* a prefill step's norm: rows_kernel (2 / 1 / 1 chunks a thread), then the CTA-a-row form
     * (norm4, 4 groups a thread) it replaced, kept under SALA_CUDA_ROWS=old */
    add_norm_case(300, 4096, false, true, 57);
    add_norm_case(300, 2048, false, true, 58);
    add_norm_case(45, 1024, false, true, 59);
    setenv("SALA_CUDA_ROWS", "old", 1);
    add_norm_case(300, 4096, false, true, 57);
    unsetenv("SALA_CUDA_ROWS");
}

static void t_gemm(void)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, 2);
    const int T = 33, out = 300, in = 512;
    float *W = randv(&r, (size_t)out * in, 0.05, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *y = malloc((size_t)T * out * 4), *yr = malloc((size_t)T * out * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemm(W, out, in, x, T, y, &e), SALA_OK);
    st_tensor t = {.name = "W", .dtype = ST_F32, .ndim = 2, .shape = {out, in},
                   .numel = (int64_t)out * in, .nbytes = (size_t)out * in * 4, .data = W};
    float *tile = malloc((size_t)out * in * 4 * (size_t)omp_get_max_threads());   /* a thread's */
    cpu_matmul(&t, x, T, yr, tile, (int64_t)out * in);
    double rel, mr;
    diff(y, yr, (size_t)T * out, &rel, &mr);
    report("gemm bf16 x bf16 -> fp32", rel, mr, 1e-5, 1e-5);
    free(W), free(x), free(y), free(yr), free(tile);
}

/* o (T, I) from the GPU against silu(g) u of gu (T, 2I) (g, u rounded to bf16 first when
 * round_gu: the twin of a bf16 GEMM output); tolerances of a bf16 result. */
static void swiglu_check(const char *what, const float *gu, int T, int I, bool round_gu,
                         const float *o)
{
    float *ref = malloc((size_t)T * I * 4);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < I; j++) {
            float g = gu[(size_t)t * 2 * I + j], u = gu[(size_t)t * 2 * I + I + j];
            if (round_gu) g = bfr(g), u = bfr(u);
            ref[(size_t)t * I + j] = g * sigm(g) * u;
        }
    double rel, mr;
    diff(o, ref, (size_t)T * I, &rel, &mr);
    report(what, rel, mr, 4e-3, 8e-3);
    free(ref);
}

/* Σ a[i] b[i] in double (the GEMM references below). */
static double dot64(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The GEMM accumulating into a bf16 y (prefill's residual stream): y = bf16(y + alpha W x).
 * cuBLAS's bf16 epilogue rounds alpha W x to bf16 before the add and the sum after it (call m3:
 * values one bf16 step from the exact sum's rounding, 1.6% of them), the two roundings of
 * Hugging Face's bf16 residual add: each value must lie within 2^-7 (|y| + |alpha W x|) of the
 * exact sum (half a step of each rounding, a cancelling sum keeping its terms' error), and be a
 * bf16 value. From y = 0, the median of got / (alpha W x) over the larger half of the products
 * must be 1 within 1e-3: alpha is applied in fp32 (a bf16 alpha would be off by up to 2^-9, 2.3e-3
 * for 0.37). Wx (T, out): the CPU's W x. */
static void acc16_check(const char *what, const float *W, int out, int in, const float *x, int T,
                        float alpha, const float *Wx, eng_rng *r)
{
    OPS();
    const size_t n = (size_t)T * out;
    float *y = randv(r, n, 3.0, true), *ref = malloc(n * 4), *mag = malloc(n * 4),
          *p = malloc(n * 4), *ratio = malloc(n * 4);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            const size_t i = (size_t)t * out + o;
            const double pv = (double)Wx[i] * alpha;
            p[i] = (float)pv;
            ref[i] = (float)((double)y[i] + pv);
            mag[i] = (float)(fabs((double)y[i]) + fabs(pv));
        }
    float *y0 = malloc(n * 4);
    memcpy(y0, y, n * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemm_acc(W, out, in, x, T, alpha, true, y, &e), SALA_OK);
    size_t far = 0, notbf = 0, worst = 0;
    double wq = 0;
    for (size_t i = 0; i < n; i++) {
        const double q = fabs((double)y[i] - ref[i]) / ((double)mag[i] + 1e-30);
        far += q > 1.0 / 128;
        notbf += bfr(y[i]) != y[i];
        if (q > wq) wq = q, worst = i;
    }
    double rel, mr;
    diff(y, ref, n, &rel, &mr);
    fprintf(stderr, "\n  %s into bf16 y: %zu values off by more than 2^-7 (|y| + |a W x|), %zu not "
            "bf16; worst %.2f of it: y %.6g + %.6g -> %.6g (exact %.6g)", what, far, notbf,
            wq * 128, y0[worst], p[worst], y[worst], ref[worst]);
    report(what, rel, mr, 4e-3, 8e-3);
    CU_ASSERT_EQUAL(far, 0);
    CU_ASSERT_EQUAL(notbf, 0);
    memset(y, 0, n * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemm_acc(W, out, in, x, T, alpha, true, y, &e), SALA_OK);
    for (size_t i = 0; i < n; i++) mag[i] = fabsf(p[i]);
    memcpy(ratio, mag, n * 4);
    qsort(ratio, n, 4, cmp_float);
    const float cut = ratio[n / 2];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (mag[i] >= cut && mag[i] > 0) ratio[m++] = y[i] / p[i];
    qsort(ratio, m, 4, cmp_float);
    const double med = m ? ratio[m / 2] : 0;
    fprintf(stderr, "\n  %s from y = 0: median got / (a W x) %.6f over %zu values", what, med, m);
    CU_ASSERT(fabs(med - 1.0) <= 1e-3);
    free(y), free(ref), free(mag), free(p), free(ratio), free(y0);
}

/* Prefill: the residual add in the GEMM, x += 0.37 · W x_in (x fp32 in and out). */
static void t_gemm_acc(void)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, 61);
    const int T = 45, out = 264, in = 512;
    const float alpha = 0.37f;
    float *W = randv(&r, (size_t)out * in, 0.05, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *y = randv(&r, (size_t)T * out, 3.0, false), *yr = malloc((size_t)T * out * 4);
    memcpy(yr, y, (size_t)T * out * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemm_acc(W, out, in, x, T, alpha, false, y, &e), SALA_OK);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++)
            yr[(size_t)t * out + o] += (float)dot64(W + (size_t)o * in, x + (size_t)t * in, in) *
                                       alpha;
    double rel, mr;
    diff(y, yr, (size_t)T * out, &rel, &mr);
    report("gemm acc: y += a W x (fp32)", rel, mr, 1e-5, 1e-5);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++)
            yr[(size_t)t * out + o] = (float)dot64(W + (size_t)o * in, x + (size_t)t * in, in);
    acc16_check("gemm acc (GemmEx)", W, out, in, x, T, alpha, yr, &r);
    free(W), free(x), free(y), free(yr);
}

/* Prefill MLP input: gate/up GEMM to bf16, then SwiGLU from bf16 (the twin rounds gu). fmin:
 * SALA_CUDA_GU_FUSED for the call (NULL: unset, the default minimum), the caller's value restored
 * after; fused: the path mlp_gu must have taken (1: the fused sm_90a kernel, wherever the device
 * runs it). */
static void mlp_gu_case(int T, int I, int in, uint64_t seed, const char *fmin, int fused)
{
    OPS();
    const char *env = getenv("SALA_CUDA_GU_FUSED");
    char *keep = env ? strdup(env) : NULL;
    if (fmin) setenv("SALA_CUDA_GU_FUSED", fmin, 1);
    else unsetenv("SALA_CUDA_GU_FUSED");
    eng_rng r;
    eng_rng_seed(&r, seed);
    float *W = randv(&r, (size_t)2 * I * in, 0.08, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *gu = malloc((size_t)T * 2 * I * 4);
    float *o = malloc((size_t)T * I * 4);
    int took = -1;
    CU_ASSERT_EQUAL_FATAL(O->mlp_gu(W, I, in, x, T, o, &took, &e), SALA_OK);
    if (fused && !O->sm90a()) {
        fprintf(stderr, "\n    NOTE: no sm_90a image on this device: the fused gate/up kernel "
                        "is not tested");
        fused = 0;
    }
    CU_ASSERT_EQUAL(took, fused);
    for (int tt = 0; tt < T; tt++)
        for (int j = 0; j < 2 * I; j++)
            gu[(size_t)tt * 2 * I + j] =
                (float)dot64(W + (size_t)j * in, x + (size_t)tt * in, in);
    char what[80];
    snprintf(what, sizeof(what), "gate/up bf16 + swiglu T=%d I=%d%s", T, I,
             took == 1 ? " (fused)" : "");
    swiglu_check(what, gu, T, I, true, o);
    if (took == 1) {   /* against the unfused path: the same roundings, sums in another order */
        float *o2 = malloc((size_t)T * I * 4);
        setenv("SALA_CUDA_GU_FUSED", "0", 1);
        CU_ASSERT_EQUAL_FATAL(O->mlp_gu(W, I, in, x, T, o2, &took, &e), SALA_OK);
        CU_ASSERT_EQUAL(took, 0);
        double rel, mr;
        size_t same = 0;
        for (size_t i = 0; i < (size_t)T * I; i++) same += o[i] == o2[i];
        diff(o, o2, (size_t)T * I, &rel, &mr);
        fprintf(stderr, "\n    fused vs cuBLAS + swiglu: %zu of %zu equal", same, (size_t)T * I);
        report("fused gate/up vs cuBLAS path", rel, mr, 4e-3, 8e-3);
        free(o2);
    }
    if (keep) setenv("SALA_CUDA_GU_FUSED", keep, 1);
    else unsetenv("SALA_CUDA_GU_FUSED");
    free(keep);
    free(W), free(x), free(gu), free(o);
}

static void t_mlp_gu(void)
{
    mlp_gu_case(37, 1024, 256, 62, NULL, 0);   /* vector kernel (below the fused minimum) */
    mlp_gu_case(9, 1001, 128, 63, NULL, 0);    /* scalar kernel */
    /* the fused kernel at any row count: 3 row tiles (a cluster's second CTA past the end),
     * partial last tile, 16 column tiles; and 2 row tiles x 2 column tiles, K = 2 steps */
    mlp_gu_case(300, 2048, 4096, 66, "1", 1);
    mlp_gu_case(129, 256, 128, 67, "1", 1);
    mlp_gu_case(100, 1001, 128, 68, "1", 0);   /* I % 128 != 0: not taken */
    mlp_gu_case(300, 2048, 4096, 69, "0", 0);  /* switched off */
}

/* The three GEMM forms through cuBLASLt (SALA_CUDA_LT=force: the fastest timed Lt algorithm, an
 * error if none ran) at a prefill shape, against the CPU GEMM; the tolerances of t_gemm. */
static void t_gemm_lt(void)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, 64);
    const int T = 520, out = 4096, in = 4096;
    const float alpha = 0.37f;
    setenv("SALA_CUDA_LT", "force", 1);
    float *W = randv(&r, (size_t)out * in, 0.05, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *y = malloc((size_t)T * out * 4), *yr = malloc((size_t)T * out * 4);
    const int64_t tf = (int64_t)64 * in;   /* 64 rows of W a thread */
    float *tile = malloc((size_t)tf * omp_get_max_threads() * 4);
    st_tensor t = {.name = "W", .dtype = ST_F32, .ndim = 2, .shape = {out, in},
                   .numel = (int64_t)out * in, .nbytes = (size_t)out * in * 4, .data = W};
    cpu_matmul(&t, x, T, yr, tile, tf);
    double rel, mr;
    CU_ASSERT_EQUAL(O->gemm(W, out, in, x, T, y, &e), SALA_OK);
    diff(y, yr, (size_t)T * out, &rel, &mr);
    report("gemm Lt T=520 4096x4096 -> fp32", rel, mr, 1e-5, 1e-5);
    float *y0 = randv(&r, (size_t)T * out, 3.0, false);
    memcpy(y, y0, (size_t)T * out * 4);
    CU_ASSERT_EQUAL(O->gemm_acc(W, out, in, x, T, alpha, false, y, &e), SALA_OK);
    float *wx = malloc((size_t)T * out * 4);
    memcpy(wx, yr, (size_t)T * out * 4);
    for (size_t i = 0; i < (size_t)T * out; i++) yr[i] = y0[i] + alpha * yr[i];
    diff(y, yr, (size_t)T * out, &rel, &mr);
    report("gemm acc Lt T=520: y += a W x", rel, mr, 1e-5, 1e-5);
    acc16_check("gemm acc Lt T=520", W, out, in, x, T, alpha, wx, &r);
    free(wx);
    free(W), free(x), free(y), free(yr), free(tile), free(y0);
    mlp_gu_case(72, 2048, 4096, 65, NULL, 0);   /* bf16 output through Lt */
    unsetenv("SALA_CUDA_LT");
}

/* ref (T, out), malloc'd = x (T, in) · W (out, in)ᵀ through the CPU GEMM (cpu_matmul). */
static float *cpu_gemm_ref(const float *W, int out, int in, const float *x, int T)
{
    float *ref = malloc((size_t)T * out * 4);
    const int64_t tf = (int64_t)64 * in;
    float *tile = malloc((size_t)tf * omp_get_max_threads() * 4);
    st_tensor t = {.name = "W", .dtype = ST_F32, .ndim = 2, .shape = {out, in},
                   .numel = (int64_t)out * in, .nbytes = (size_t)out * in * 4, .data = W};
    cpu_matmul(&t, x, T, ref, tile, tf);
    free(tile);
    return ref;
}

/* The decode GEMV (cu_gemv.cu) against the CPU GEMM (cpu_matmul on the bf16-rounded operands)
 * in its three forms, y with row stride out + 3 whose extra columns must come back untouched.
 * Tolerances: fp32 forms those of t_gemm (1e-5: fp32 sums in another order); bf16 output 4e-3 /
 * 8e-3 (one bf16 rounding of the result). Batch invariance: for every case each token's row must
 * equal, bit for bit, the same token run alone (T = 1), and every variant must give the same
 * bits (the summation order depends on `in` only). */
static void gemv_case(int T, int out, int in, int form, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int ldy = out + 3;
    const float alpha = 0.37f;
    const size_t ny = (size_t)T * ldy;
    float *W = randv(&r, (size_t)out * in, 0.05, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *y0 = randv(&r, ny, 3.0, form == 2), *y = malloc(ny * 4), *yr = malloc(ny * 4);
    float *y1 = malloc((size_t)ldy * 4), *yv = malloc(ny * 4);
    float *ref = cpu_gemm_ref(W, out, in, x, T);
    memcpy(yr, y0, ny * 4);
    for (int tt = 0; tt < T; tt++)
        for (int o = 0; o < out; o++) {
            const float v = ref[(size_t)tt * out + o];
            float *d = yr + (size_t)tt * ldy + o;
            *d = form == 0 ? v : form == 1 ? *d + alpha * v : bfr(v);
        }
    memcpy(y, y0, ny * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x, T, form, alpha, -1, y, ldy, &e), SALA_OK);
    double rel, mr;
    diff(y, yr, ny, &rel, &mr);
    char what[80];
    snprintf(what, sizeof(what), "gemv %s T=%d %dx%d", form == 0 ? "f32" : form == 1 ? "acc" : "bf16",
             T, out, in);
    report(what, rel, mr, form == 2 ? 4e-3 : 1e-5, form == 2 ? 8e-3 : 1e-5);
    int untouched = 1, alone = 1, variants = 1, nvar = 0;
    for (int tt = 0; tt < T; tt++)
        for (int o = out; o < ldy; o++)
            untouched &= y[(size_t)tt * ldy + o] == y0[(size_t)tt * ldy + o];
    for (int tt = 0; tt < T && T > 1; tt++) {   /* token tt alone */
        memcpy(y1, y0 + (size_t)tt * ldy, (size_t)ldy * 4);
        CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x + (size_t)tt * in, 1, form, alpha, -1, y1, ldy,
                                      &e), SALA_OK);
        alone &= !memcmp(y1, y + (size_t)tt * ldy, (size_t)ldy * 4);
    }
    double us[16];
    CU_ASSERT_EQUAL_FATAL(O->gemv_speed(0, 8, 1, us, 16, &nvar, &e), SALA_OK);   /* nvar only */
    for (int v = 0; v < nvar; v++) {
        memcpy(yv, y0, ny * 4);
        CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x, T, form, alpha, v, yv, ldy, &e), SALA_OK);
        variants &= !memcmp(yv, y, ny * 4);
    }
    fprintf(stderr, " | extra columns untouched %d, == alone %d, %d variants equal %d", untouched,
            alone, nvar, variants);
    CU_ASSERT(untouched);
    CU_ASSERT(alone);
    CU_ASSERT(variants);
    free(W), free(x), free(y0), free(y), free(yr), free(y1), free(yv), free(ref);
}

/* The SwiGLU form (W = gate | up, 2I rows): against the CPU twin (cpu_matmul, then silu(g) u;
 * tolerances of a bf16 result, swiglu_check) and, bit for bit, against the unfused pair (the
 * GEMV's fp32 form, then k_swiglu: op_swiglu), which is what decode ran before; each token alone
 * and every variant (those of one row a warp run as two) give the same bits. */
static void gemv_swiglu_case(int T, int I, int in, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int out = 2 * I, ldy = I + 5;
    const size_t ny = (size_t)T * ldy;
    float *W = randv(&r, (size_t)out * in, 0.05, true), *x = randv(&r, (size_t)T * in, 1.0, true);
    float *y0 = randv(&r, ny, 1.0, true), *y = malloc(ny * 4), *yv = malloc(ny * 4);
    float *gu = malloc((size_t)T * out * 4), *ref = cpu_gemm_ref(W, out, in, x, T);
    float *act = malloc((size_t)T * I * 4), *packed = calloc((size_t)T * I, 4);
    float *y1 = malloc((size_t)ldy * 4);
    memcpy(y, y0, ny * 4);
    CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x, T, 3, 0, -1, y, ldy, &e), SALA_OK);
    for (int tt = 0; tt < T; tt++) memcpy(packed + (size_t)tt * I, y + (size_t)tt * ldy, I * 4);
    char what[80];
    snprintf(what, sizeof(what), "gemv swiglu T=%d I=%d in=%d vs CPU", T, I, in);
    swiglu_check(what, ref, T, I, false, packed);
    /* the unfused pair on the GPU: fp32 GEMV (default variant), then k_swiglu */
    CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x, T, 0, 0, -1, gu, out, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(O->swiglu(gu, T, I, act, &e), SALA_OK);
    int same = !memcmp(act, packed, (size_t)T * I * 4), untouched = 1, alone = 1, variants = 1;
    for (int tt = 0; tt < T; tt++)
        for (int o = I; o < ldy; o++)
            untouched &= y[(size_t)tt * ldy + o] == y0[(size_t)tt * ldy + o];
    for (int tt = 0; tt < T && T > 1; tt++) {
        memcpy(y1, y0 + (size_t)tt * ldy, (size_t)ldy * 4);
        CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x + (size_t)tt * in, 1, 3, 0, -1, y1, ldy, &e),
                              SALA_OK);
        alone &= !memcmp(y1, y + (size_t)tt * ldy, (size_t)ldy * 4);
    }
    double us[16];
    int nvar = 0;
    CU_ASSERT_EQUAL_FATAL(O->gemv_speed(0, 8, 1, us, 16, &nvar, &e), SALA_OK);   /* nvar only */
    for (int v = 0; v < nvar; v++) {
        memcpy(yv, y0, ny * 4);
        CU_ASSERT_EQUAL_FATAL(O->gemv(W, out, in, x, T, 3, 0, v, yv, ldy, &e), SALA_OK);
        variants &= !memcmp(yv, y, ny * 4);
    }
    fprintf(stderr, " | == GEMV + k_swiglu bitwise %d, extra columns untouched %d, == alone %d, "
            "%d variants equal %d", same, untouched, alone, nvar, variants);
    CU_ASSERT(same);
    CU_ASSERT(untouched);
    CU_ASSERT(alone);
    CU_ASSERT(variants);
    free(W), free(x), free(y0), free(y), free(yv), free(gu), free(ref), free(act), free(packed);
    free(y1);
}

static void t_gemv(void)
{
    static const struct { int T, out, in, form; } C[] = {
        {1, 4096, 4096, 0}, {2, 301, 512, 0}, {3, 1001, 1000, 0}, {4, 257, 16384, 0},
        {5, 77, 8, 0},      {6, 130, 264, 1}, {7, 8704, 520, 0},  {8, 999, 4096, 0},
        {1, 515, 4096, 1},  {8, 4096, 2048, 1}, {2, 333, 4096, 2}, {8, 1000, 1024, 2},
        {1, 73, 16392, 2},
    };
    for (size_t i = 0; i < sizeof(C) / sizeof(C[0]); i++)
        gemv_case(C[i].T, C[i].out, C[i].in, C[i].form, 70 + i);
    static const struct { int T, I, in; } S[] = {
        {1, 16384, 4096}, {1, 37, 520}, {2, 1001, 1000}, {4, 515, 264}, {8, 258, 4096},
    };
    for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++)
        gemv_swiglu_case(S[i].T, S[i].I, S[i].in, 90 + i);
}

/* Benchmark (SALA_BENCH_GEMV=1): the decode products of the model at T = 1, 2, 4, 8, weights from
 * HBM: cublasGemmEx, the best cuBLASLt candidate, the GEMV variants, a plain read (GB/s of
 * weights). The default GEMV must not be slower than cublasGemmEx by more than 3%. */
static void t_gemv_speed(void)
{
    OPS();
    static const struct { const char *what; int out, in; } S[] = {
        {"sparse q|k|v|gate", 8704, 4096}, {"lightning q|k|v|z", 16384, 4096},
        {"o_proj", 4096, 4096},            {"gate|up", 32768, 4096},
        {"down", 4096, 16384},             {"lm_head", 73448, 4096},
    };
    static const int Ts[] = {1, 2, 4, 8};
    for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++)
        for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
            double us[16];
            int nv = 0;
            const int T = Ts[ti];
            CU_ASSERT_EQUAL_FATAL(O->gemv_speed(S[i].out, S[i].in, T, us, 16, &nv, &e), SALA_OK);
            const double gb = 2.0 * S[i].out * S[i].in * 1e-9;
            fprintf(stderr, "\n  GEMV %-17s %5dx%5d T=%d us(GB/s): Ex %.1f(%.0f) Lt %.1f(%.0f)",
                    S[i].what, S[i].out, S[i].in, T, us[0], gb / us[0] * 1e6, us[1],
                    gb / us[1] * 1e6);
            for (int v = 0; v < nv; v++)
                fprintf(stderr, " v%d %.1f(%.0f)", v, us[2 + v], gb / us[2 + v] * 1e6);
            fprintf(stderr, " nopdl %.1f(%.0f) read %.1f(%.0f)", us[2 + nv],
                    gb / us[2 + nv] * 1e6, us[3 + nv], gb / us[3 + nv] * 1e6);
        }
}

/* Benchmark (SALA_BENCH_GEMM=1): the prefill GEMMs of the model at T = 8192 (one CU_CHUNK step)
 * and 2048, cublasGemmEx vs the timed cuBLASLt choice; the choice must not be slower (5%). */
static void t_gemm_speed(void)
{
    OPS();
    static const struct { const char *what; int kind, out, in; } S[] = {
        {"sparse q|k|v|gate", 0, 8704, 4096}, {"lightning q|k|v|z", 0, 16384, 4096},
        {"o_proj (y +=)", 1, 4096, 4096},     {"gate|up (bf16)", 2, 32768, 4096},
        {"down (y +=)", 1, 4096, 16384},
    };
    static const int Ts[] = {8192, 2048};
    for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++)
        for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++) {
            double sx = 0, sl = 0;
            int won = 0;
            const int T = Ts[ti];
            CU_ASSERT_EQUAL_FATAL(O->gemm_speed(S[i].kind, S[i].out, S[i].in, T, 20, &sx, &sl,
                                                &won, &e), SALA_OK);
            const double fl = 2.0 * T * S[i].out * S[i].in;
            fprintf(stderr, "\n  GEMM %-18s T=%5d %5d x %5d: GemmEx %7.3f ms %6.1f TFLOP/s | "
                    "tuned %7.3f ms %6.1f TFLOP/s (%s) x%.3f", S[i].what, T, S[i].out,
                    S[i].in, sx * 1e3, fl / sx * 1e-12, sl * 1e3, fl / sl * 1e-12,
                    won ? "Lt" : "GemmEx", sx / sl);
            CU_ASSERT(sl <= 1.05 * sx);
        }
}

static void swiglu_case(int T, int I, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    float *gu = randv(&r, (size_t)T * 2 * I, 2.0, false), *o = malloc((size_t)T * I * 4);
    CU_ASSERT_EQUAL_FATAL(O->swiglu(gu, T, I, o, &e), SALA_OK);
    char what[64];
    snprintf(what, sizeof(what), "swiglu -> bf16 T=%d I=%d", T, I);
    swiglu_check(what, gu, T, I, false, o);
    free(gu), free(o);
}

static void t_swiglu(void)
{
    swiglu_case(19, 1000, 3);
    swiglu_case(1, 16384, 57);    /* decode, real width */
    swiglu_case(2, 1001, 58);     /* scalar kernel */
}

/* Output gate of T rows of W read from proj (T, ld) at zoff; ld = zoff + W + 4 (the sparse and
 * lightning layouts end in the gate). */
static void gate_case(int T, int W, int zoff, bool p16, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int ld = zoff + W + 4;
    float *o = randv(&r, (size_t)T * W, 1.0, false), *proj = randv(&r, (size_t)T * ld, 2.0, p16);
    float *g = malloc((size_t)T * W * 4), *ref = malloc((size_t)T * W * 4);
    CU_ASSERT_EQUAL_FATAL(O->gate(o, proj, ld, zoff, T, W, p16, g, &e), SALA_OK);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < W; j++)
            ref[(size_t)t * W + j] = o[(size_t)t * W + j] * sigm(proj[(size_t)t * ld + zoff + j]);
    char what[64];
    double rel, mr;
    snprintf(what, sizeof(what), "gate -> bf16 T=%d W=%d zoff=%d%s", T, W, zoff,
             p16 ? " (z bf16)" : "");
    diff(g, ref, (size_t)T * W, &rel, &mr);
    report(what, rel, mr, 4e-3, 8e-3);
    free(o), free(proj), free(g), free(ref);
}

static void t_gate(void)
{
    for (int k = 0; k < 2; k++) {   /* z in fp32 (decode) and bf16 (a prefill step's product) */
        gate_case(1, 4096, 4608, k, 59);   /* decode, sparse-layer layout (q | k | v | gate) */
        gate_case(5, 4096, 12288, k, 60);  /* lightning layout */
        gate_case(3, 250, 7, k, 61);       /* scalar kernel (odd offset) */
    }
    gate_case(300, 4096, 4608, true, 62);  /* a prefill step's sparse layer */
}

/* Final norm of the rows asked for (rows in any order) against cpu_rmsnorm · scale; x16: x in
 * bf16 (the twin reads the same rounded values). */
static void norm_rows_case(int xrows, int n, int D, bool x16, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    float *x = randv(&r, (size_t)xrows * D, 2.0, x16), *w = randv(&r, D, 0.1, false);
    for (int i = 0; i < D; i++) w[i] += 1.0f;
    int32_t *rows = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) rows[i] = (int32_t)((i * 7 + 3) % xrows);
    float *g = malloc((size_t)n * D * 4), *ref = malloc((size_t)n * D * 4);
    CU_ASSERT_EQUAL_FATAL(O->norm_rows(x, xrows, rows, n, D, w, 1e-6f, 0.0625f, x16, g, &e),
                          SALA_OK);
    for (int i = 0; i < n; i++) {
        cpu_rmsnorm(ref + (size_t)i * D, x + (size_t)rows[i] * D, w, 1, D, 1e-6f);
        for (int j = 0; j < D; j++) ref[(size_t)i * D + j] *= 0.0625f;
    }
    char what[64];
    double rel, mr;
    snprintf(what, sizeof(what), "norm_rows -> bf16 n=%d D=%d%s", n, D, x16 ? " (x bf16)" : "");
    diff(g, ref, (size_t)n * D, &rel, &mr);
    report(what, rel, mr, 4e-3, 8e-3);
    free(x), free(w), free(rows), free(g), free(ref);
}

static void t_norm_rows(void)
{
    for (int k = 0; k < 2; k++) {
        norm_rows_case(1, 1, 4096, k, 62);
        norm_rows_case(20, 9, 4096, k, 63);
        norm_rows_case(5, 3, 258, k, 64);   /* scalar kernel */
    }
}

/* Sparse-layer q/k/v split into bf16 Qb and the cache rows p0.. (exact: a bf16 rounding; p16:
 * proj read as bf16, a prefill step's form: then a copy). */
static void sparse_prep_case(int T, int nh, int nkv, int d, int64_t p0, bool p16, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int nq = nh * d, nk = nkv * d, ld = nq + 2 * nk + nq;
    const size_t L = (size_t)p0 + T;
    float *proj = randv(&r, (size_t)T * ld, 1.0, false);
    float *Q = malloc((size_t)T * nq * 4), *Kc = malloc(L * nk * 4), *Vc = malloc(L * nk * 4);
    CU_ASSERT_EQUAL_FATAL(O->sparse_prep(proj, ld, T, nh, nkv, d, p0, p16, Q, Kc, Vc, &e),
                          SALA_OK);
    size_t bad = 0;
    for (int t = 0; t < T; t++) {
        const float *pr = proj + (size_t)t * ld;
        for (int i = 0; i < nq; i++) bad += Q[(size_t)t * nq + i] != bfr(pr[i]);
        for (int i = 0; i < nk; i++) {
            bad += Kc[((size_t)p0 + t) * nk + i] != bfr(pr[nq + i]);
            bad += Vc[((size_t)p0 + t) * nk + i] != bfr(pr[nq + nk + i]);
        }
    }
    for (size_t i = 0; i < (size_t)p0 * nk; i++) bad += Kc[i] != 0.0f || Vc[i] != 0.0f;
    fprintf(stderr, "\n  sparse_prep T=%d nh=%d nkv=%d d=%d p0=%lld%s: %zu values differ", T, nh,
            nkv, d, (long long)p0, p16 ? " (bf16 proj)" : "", bad);
    CU_ASSERT_EQUAL(bad, 0);
    free(proj), free(Q), free(Kc), free(Vc);
}

static void t_sparse_prep(void)
{
    sparse_prep_case(1, 32, 2, 128, 70, false, 65);   /* decode, real heads (position read from
                                                         device memory, the graph form) */
    for (int k = 0; k < 2; k++) {
        sparse_prep_case(7, 4, 2, 64, 3, k, 66);
        sparse_prep_case(2, 3, 1, 5, 1, k, 67);        /* scalar kernel (odd d) */
    }
    sparse_prep_case(300, 32, 2, 128, 5000, true, 68);   /* a prefill step's split (16 bytes a
                                                            thread) */
    setenv("SALA_CUDA_ROWS", "old", 1);                  /* its pairs form */
    sparse_prep_case(300, 32, 2, 128, 5000, true, 69);
    unsetenv("SALA_CUDA_ROWS");
}

/* Embedding rows of a bf16 table times the scale (exact up to the fp32 product; x16: that
 * product rounded to bf16). */
static void embed_case(int T, int D, bool x16, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int64_t V = 50;
    float *E = randv(&r, (size_t)V * D, 1.0, true), *x = malloc((size_t)T * D * 4);
    int32_t *tok = malloc((size_t)T * 4);
    for (int t = 0; t < T; t++) tok[t] = (int32_t)((t * 13 + 5) % V);
    CU_ASSERT_EQUAL_FATAL(O->embed(E, V, tok, T, D, 12.0f, x16, x, &e), SALA_OK);
    size_t bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) {
            const float want = E[(size_t)tok[t] * D + i] * 12.0f;
            bad += x[(size_t)t * D + i] != (x16 ? bfr(want) : want);
        }
    fprintf(stderr, "\n  embed T=%d D=%d%s: %zu values differ", T, D, x16 ? " (bf16 x)" : "", bad);
    CU_ASSERT_EQUAL(bad, 0);
    free(E), free(x), free(tok);
}

static void t_embed(void)
{
    for (int k = 0; k < 2; k++) {
        embed_case(1, 4096, k, 68);
        embed_case(9, 256, k, 69);
        embed_case(2, 130, k, 70);   /* scalar kernel */
    }
}

/* Lightning core over ncall calls of Ts[i] tokens from position p0 with a random initial state
 * carried from call to call, against the CPU twin (forward.c's lightning_mixer between the
 * projections) after every call: the state, the core output scale·O before o_norm (o_raw) and
 * the bf16 output after o_norm and the gate. blas: the cuBLAS path (SALA_CUDA_LA_BLAS=1) instead
 * of the tensor-core kernels. p16: the tensor-core prefill calls (T > 1) read q|k|v|z as bf16
 * and keep k after RoPE in bf16 (the forward's prefill form, HF's rounding); the twin is given
 * the same bf16-rounded proj and rounds its k the same way. Tolerances: state 1e-5 (fp32, or
 * 3xTF32 on the tensor cores; 1e-4 / 2e-3 once a call has rounded k to bf16, see below);
 * o_raw 1e-5 for fp32 arithmetic (decode, cuBLAS), 2e-3 for the TF32 products (expected ~4e-4),
 * 4e-3 / 8e-3 for the fused kernel (O left rounded to bf16, as HF has it before o_norm; with q
 * rounded after RoPE as the twin is then given it); out 4e-3 / 8e-3 (bf16 rounding). */
static void lightning_calls(const int *Ts, int ncall, int nh, int d, int64_t p0, uint64_t seed,
                            bool blas, bool p16)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int nd = nh * d;
    float *qn = randv(&r, d, 0.1, false), *kn = randv(&r, d, 0.1, false),
          *on = randv(&r, nd, 0.1, false);
    for (int i = 0; i < d; i++) qn[i] += 1.0f, kn[i] += 1.0f;
    for (int i = 0; i < nd; i++) on[i] += 1.0f;
    float *S0 = randv(&r, (size_t)nh * d * d, 0.3, false);
    float *Sg = malloc((size_t)nh * d * d * 4);
    memcpy(Sg, S0, (size_t)nh * d * d * 4);
    float inv[512], slope[256];
    float *dec = malloc((size_t)nh * (CPU_LA_CHUNK + 1) * 4);
    float *scr = malloc((size_t)cpu_lightning_scratch(d) * 4);
    cpu_rope_init(inv, d, 10000.0);
    eng_alibi_slopes(slope, nh);
    for (int n = 0; n < nh; n++)
        for (int x = 0; x <= CPU_LA_CHUNK; x++)
            dec[n * (CPU_LA_CHUNK + 1) + x] = (float)exp(-(double)slope[n] * x);
    int64_t p = p0;
    bool hk = false;
    for (int call = 0; call < ncall; call++) {
        const int T = Ts[call];
        float *proj = randv(&r, (size_t)T * 4 * nd, 1.0, false);
        float *og = malloc((size_t)T * nd * 4), *rawg = malloc((size_t)T * nd * 4);
        const char *pv = getenv("SALA_CUDA_LA_PREP");
        const bool tc = T > 1 && !blas && (d == 64 || d == 128);
        const bool h16 = p16 && tc && !(pv && !strcmp(pv, "old"));
        hk = hk || h16;   /* a bf16-k call so far: its rounding stays in the state */
        if (h16)   /* what the op uploads, and the twin's input */
            for (size_t i = 0; i < (size_t)T * 4 * nd; i++) proj[i] = bfr(proj[i]);
        if (blas) setenv("SALA_CUDA_LA_BLAS", "1", 1);
        const int rc = O->lightning(T, nh, d, p, 10000.0, 1e-6f, proj, qn, kn, on, Sg, og, rawg,
                                    h16, &e);
        if (blas) unsetenv("SALA_CUDA_LA_BLAS");
        CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
        /* CPU */
        float *q = malloc((size_t)T * nd * 4), *k = malloc((size_t)T * nd * 4),
              *v = malloc((size_t)T * nd * 4), *o = malloc((size_t)T * nd * 4);
        for (int t = 0; t < T; t++) {
            memcpy(q + (size_t)t * nd, proj + (size_t)t * 4 * nd, (size_t)nd * 4);
            memcpy(k + (size_t)t * nd, proj + (size_t)t * 4 * nd + nd, (size_t)nd * 4);
            memcpy(v + (size_t)t * nd, proj + (size_t)t * 4 * nd + 2 * nd, (size_t)nd * 4);
        }
        cpu_rmsnorm(q, q, qn, (int64_t)T * nh, d, 1e-6f);
        cpu_rmsnorm(k, k, kn, (int64_t)T * nh, d, 1e-6f);
        cpu_rope(q, T, nh, d, p, inv);
        cpu_rope(k, T, nh, d, p, inv);
        if (h16)   /* the bf16 form rounds k after RoPE (Kh in bf16, HF's k) */
            for (size_t i = 0; i < (size_t)T * nd; i++) k[i] = bfr(k[i]);
        if (h16 && O->la_fused(d))   /* the fused kernel rounds q so too (HF's q) */
            for (size_t i = 0; i < (size_t)T * nd; i++) q[i] = bfr(q[i]);
        cpu_lightning(T, nh, d, dec, (float)(1.0 / sqrt((double)d)), q, k, v, S0, o, scr);
        const char *path = T == 1    ? "step"
                           : blas    ? "cublas"
                           : h16     ? (O->la_fused(d) ? "fused" : "tc bf16-proj")
                                     : "tc";
        char what[160];
        double rel, mr;
        snprintf(what, sizeof(what), "lightning %s T=%d nh=%d d=%d p0=%lld: state", path, T, nh,
                 d, (long long)p);
        diff(Sg, S0, (size_t)nh * d * d, &rel, &mr);
        /* bf16 k: where the device's fp32 k and the twin's differ in the last bit (the norm's
         * sum order; sincos at large positions) the bf16 rounding can go the other way, a
         * bf16 step in a few k values (call m4: rel_l2 up to 4.7e-5, max/max 8.3e-4 at
         * positions ~1e5-9e5, 3e-7 near 0); the state carries them to later calls */
        if (h16 || hk) report(what, rel, mr, 1e-4, 2e-3);
        else report(what, rel, mr, 1e-5, 1e-5);
        snprintf(what, sizeof(what), "lightning %s T=%d nh=%d d=%d: o_raw", path, T, nh, d);
        diff(rawg, o, (size_t)T * nd, &rel, &mr);
        /* a decode step after a bf16-k call reads the state with its few bf16 steps (call f1:
         * 1.5e-5 / 2.4e-5 against 1e-5): the state's bound */
        /* the fused kernel leaves bf16(scale O), HF's rounding before o_norm: out's bounds */
        if (tc && h16 && O->la_fused(d)) report(what, rel, mr, 4e-3, 8e-3);
        else report(what, rel, mr, tc ? 2e-3 : hk ? 1e-4 : 1e-5, tc || hk ? 2e-3 : 1e-5);
        cpu_rmsnorm(o, o, on, T, nd, 1e-6f);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < nd; i++)
                o[(size_t)t * nd + i] *= sigm(proj[(size_t)t * 4 * nd + 3 * nd + i]);
        snprintf(what, sizeof(what), "lightning %s T=%d nh=%d d=%d: out", path, T, nh, d);
        diff(og, o, (size_t)T * nd, &rel, &mr);
        report(what, rel, mr, 4e-3, 8e-3);
        free(proj), free(og), free(rawg), free(q), free(k), free(v), free(o);
        p += T;
    }
    free(qn), free(kn), free(on), free(S0), free(Sg), free(dec), free(scr);
}

/* One call; the prefill on bf16 proj (the forward's default form). */
static void lightning_case(int T, int nh, int d, int64_t p0, uint64_t seed)
{
    lightning_calls(&T, 1, nh, d, p0, seed, false, true);
}

static void t_lightning(void)
{
    OPS();
    /* on the sm_90a image the bf16 prefill cases below must run the fused kernel (the forward's
     * default), not fall back to the two-pass form unnoticed */
    if (O->sm90a()) CU_ASSERT(O->la_fused(64) && O->la_fused(128));
    (void)e;
    lightning_case(1, 4, 64, 1234, 4);        /* decode step */
    lightning_case(150, 4, 64, 37, 5);        /* chunks of 64 + a partial chunk */
    lightning_case(300, 32, 128, 100000, 6);  /* real head shape, large positions */
    lightning_case(1030, 8, 128, 5000, 7);    /* 17 chunks, partial last */
    lightning_case(37, 4, 128, 0, 8);         /* one partial chunk */
    lightning_case(1100, 32, 128, 120000, 12); /* real heads, 4 per prep warp, angles > 1e5 */
    /* the output norm + gate of prefill rows: rows_kernel above (nh d = 4096 and 1024; 256 takes
     * la_out4), la_out4 under SALA_CUDA_ROWS=old */
    setenv("SALA_CUDA_ROWS", "old", 1);
    lightning_case(300, 32, 128, 100000, 6);
    unsetenv("SALA_CUDA_ROWS");
    /* fp32 proj (SALA_CUDA_LA_PROJ=f32 in the forward): the same cases */
    static const int f32[][4] = {{150, 4, 64, 37}, {300, 32, 128, 100000}, {1030, 8, 128, 5000},
                                 {37, 4, 128, 0}, {1100, 32, 128, 120000}};
    for (int i = 0; i < 5; i++)
        lightning_calls(&f32[i][0], 1, f32[i][1], f32[i][2], f32[i][3], 5 + i, false, false);
    /* decode steps (the fused prep + step kernel, 32-column slices): real shape far out, every
     * head size it takes, and one it does not (d 96: prep + the per-head step kernel) */
    lightning_case(1, 32, 128, 1048576 + 5, 40);
    lightning_case(1, 8, 64, 3, 41);
    lightning_case(1, 4, 32, 77, 42);
    lightning_case(1, 2, 256, 500000, 43);
    lightning_case(1, 3, 96, 9, 44);
}

/* The tensor-core state walk over chunk ranges run in parallel (start states fixed up by
 * la_combine_kernel and la_chunk_kernel): SALA_CUDA_LA_RANGES=1 is the single walk (also with
 * SALA_CUDA_LA_PREP=old, Q prepared by la_prep_kernel instead of in la_chunk_kernel), 7 more
 * ranges than the device default picks at these shapes, also with the state carried over calls
 * (the default, device-sized split, runs in t_lightning). */
static void t_lightning_ranges(void)
{
    static const int calls[] = {700, 1, 333};
    setenv("SALA_CUDA_LA_FUSED", "0", 1);   /* bf16 proj: the walk too, not the fused kernel */
    setenv("SALA_CUDA_LA_RANGES", "1", 1);
    lightning_case(1030, 8, 128, 5000, 7);
    setenv("SALA_CUDA_LA_PREP", "old", 1);   /* with the prep that writes Qh: the fourth version */
    lightning_case(1030, 8, 128, 5000, 7);
    lightning_case(150, 4, 64, 37, 5);
    unsetenv("SALA_CUDA_LA_PREP");
    setenv("SALA_CUDA_LA_RANGES", "7", 1);
    lightning_case(2100, 4, 128, 300, 70);          /* 33 chunks: 7 ranges of 5, last 3 */
    lightning_calls(calls, 3, 8, 64, 77777, 71, false, true);
    lightning_calls(calls, 3, 8, 64, 77777, 71, false, false);
    unsetenv("SALA_CUDA_LA_RANGES");
    unsetenv("SALA_CUDA_LA_FUSED");
}

/* The state carried across calls (prefill, decode steps, more prefill) at the real head shape
 * far from 0, on the tensor-core path and on the cuBLAS path. */
static void t_lightning_calls(void)
{
    static const int real[] = {200, 1, 77, 130, 1, 64, 2};
    static const int small[] = {65, 128, 3};
    lightning_calls(real, 7, 32, 128, 900000, 9, false, true);
    setenv("SALA_CUDA_LA_FUSED", "0", 1);   /* bf16 proj on the walk, its device-sized ranges */
    lightning_calls(real, 7, 32, 128, 900000, 9, false, true);
    unsetenv("SALA_CUDA_LA_FUSED");
    lightning_calls(real, 7, 32, 128, 900000, 9, false, false);
    lightning_calls(small, 3, 4, 64, 3, 10, false, true);
    lightning_calls(small, 3, 4, 64, 3, 10, false, false);
    lightning_calls(real, 3, 32, 128, 700000, 11, true, false);
}

/* Random ascending block lists with block 0 and the query's block. */
static int32_t *rand_sel(eng_rng *r, int64_t p0, int T, int nkv, int K)
{
    int32_t *sel = malloc((size_t)T * nkv * K * 4);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++) {
            int32_t *s = sel + ((size_t)t * nkv + g) * K;
            const int64_t qb = (p0 + t) / 64;
            const double pk = fmin(0.3, 0.9 * K / (double)(qb + 1));   /* spread over 0..qb */
            int n = 0;
            for (int64_t b = 0; b <= qb && n < K; b++)
                if (b == 0 || b == qb || eng_rng_uniform(r) < pk) s[n++] = (int32_t)b;
            if (s[n - 1] != qb) s[n - 1] = (int32_t)qb;
            for (int i = n; i < K; i++) s[i] = -1;
        }
    return sel;
}

/* InfLLM-V2-shaped lists: block 0, the local blocks qb - local .. qb and random others up to K
 * (every block when qb + 1 <= K), ascending, no padding past K; neighbouring queries share the
 * forced blocks as in the model. Lists of group `empty_g` (-1 for none) are all -1. */
static int32_t *model_sel(eng_rng *r, int64_t p0, int T, int nkv, int K, int local, int empty_g)
{
    int32_t *sel = malloc((size_t)T * nkv * K * 4);
    const int64_t nbmax = (p0 + T - 1) / 64 + 1;
    unsigned char *mark = malloc((size_t)nbmax);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++) {
            int32_t *s = sel + ((size_t)t * nkv + g) * K;
            const int64_t qb = (p0 + t) / 64, nb = qb + 1;
            int n = 0;
            if (g == empty_g) {
                for (int i = 0; i < K; i++) s[i] = -1;
                continue;
            }
            for (int64_t b = 0; b < nb; b++) {
                mark[b] = b == 0 || b >= qb - local || nb <= K;
                n += mark[b];
            }
            while (n < K && n < nb) {                       /* the scored blocks */
                const int64_t b = (int64_t)(eng_rng_uniform(r) * (double)nb);
                if (b < nb && !mark[b]) {
                    mark[b] = 1;
                    n++;
                }
            }
            n = 0;
            for (int64_t b = 0; b < nb; b++)
                if (mark[b]) s[n++] = (int32_t)b;
            for (int i = n; i < K; i++) s[i] = -1;
        }
    free(mark);
    return sel;
}

/* The block-sparse kernels a sparse case runs under (SALA_CUDA_SATTN, read at every launch):
 * the default (the split kernels for at most 16 queries, else the band form: k_band90 for block
 * 0 and the local window, then the 11 consumer ring for keys up to 32K and the per-warp streams
 * beyond over the picks (on the persistent grid past 256K), for queries whose lists have the
 * model's structure; any other query and d = 64 as without band:
 * the cases of both sides take both), the default without band, each ring size, the users-only
 * TMA rings (15 and 11 consumer warps, in order and with slots reused out of order), the band
 * forms on either ring and on the per-warp streams (12 warps x 4 pieces, on the plain and the
 * persistent grid; G = 16 only, other shapes as noband), and the second version's kernel. */
static const char *const sattn_variants[] = {"", "noband", "ring7", "ring11", "ring15", "tma15",
                                             "tma11", "tma15o", "tma11o", "band15", "band11",
                                             "stream", "streamp", "old"};
/* The dense prefill kernels a dense case runs under (SALA_CUDA_DATTN, read at every launch): the
 * default (d = 128 on sm_90a: dense90_kernel, 3 K/V stages; elsewhere dense_kernel), its 2-stage
 * form, dense_kernel (128 queries of one head a CTA, mma.sync) and flash_kernel (64/G queries x
 * G heads a CTA). Cases of at most 16 queries take the split kernels under all. */
static const char *const dattn_variants[] = {"", "wg2", "mma", "old"};

/* Attention of T random queries at p0.. against the CPU twin; sparse: sel (T, nkv, K) (NULL:
 * rand_sel), run under every kernel variant. Tolerance: bf16 Q/K/V and P, fp32 softmax. */
static void attn_run(bool sparse, int nh, int nkv, int d, int64_t p0, int T, int K, int32_t *sel,
                     uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int64_t L = p0 + T;
    float *Q = randv(&r, (size_t)T * nh * d, 1.0, true), *Kc = randv(&r, (size_t)L * nkv * d, 1.0, true),
          *Vc = randv(&r, (size_t)L * nkv * d, 1.0, true);
    if (sparse && !sel) sel = rand_sel(&r, p0, T, nkv, K);
    float *og = malloc((size_t)T * nh * d * 4), *o = malloc((size_t)T * nh * d * 4);
    const int G = nh / nkv;
    const float scale = (float)(1.0 / sqrt((double)d));
    float *scr = malloc((size_t)(cpu_attn_dense_scratch(G, d) + 64 + K * 64) * 4);
    eng_sparse_config sc = {.block_size = 64, .kernel_size = 32, .kernel_stride = 16,
                            .topk = K, .window_size = 0};
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++) {
            const float *qt = Q + (size_t)t * nh * d;
            float *ot = o + ((size_t)t * nh + g * G) * d;
            if (sparse)
                infllm_attend(&sc, nh, nkv, d, scale, qt, g, p0 + t, Kc, Vc,
                              sel + ((size_t)t * nkv + g) * K, K, scr, ot);
            else
                cpu_attn_dense(qt + g * G * d, G, nkv, d, g, Kc, Vc, p0 + t + 1, scale, scr, ot);
        }
    const char *const *vars = sparse ? sattn_variants : dattn_variants;
    const char *env = sparse ? "SALA_CUDA_SATTN" : "SALA_CUDA_DATTN";
    const int nv = sparse ? (int)(sizeof(sattn_variants) / sizeof(sattn_variants[0]))
                          : (int)(sizeof(dattn_variants) / sizeof(dattn_variants[0]));
    for (int v = 0; v < nv; v++) {
        setenv(env, vars[v], 1);
        for (size_t i = 0; i < (size_t)T * nh * d; i++) og[i] = NAN;
        const int rc = O->attention(Q, Kc, Vc, L, p0, T, nh, nkv, d, sel, K, og, &e);
        CU_ASSERT_EQUAL(rc, SALA_OK);
        char what[128];
        double rel, mr;
        snprintf(what, sizeof(what), "%s%s%s attn nh=%d nkv=%d d=%d L=%lld K=%d",
                 sparse ? "sparse" : "dense", *vars[v] ? " " : "", vars[v], nh, nkv, d,
                 (long long)L, K);
        diff(og, o, (size_t)T * nh * d, &rel, &mr);
        report(what, rel, mr, 8e-3, 3e-2);
    }
    unsetenv(env);
    free(Q), free(Kc), free(Vc), free(sel), free(og), free(o), free(scr);
}

static void attn_case_k(bool sparse, int nh, int nkv, int d, int64_t p0, int T, int K,
                        uint64_t seed)
{
    attn_run(sparse, nh, nkv, d, p0, T, K, NULL, seed);
}

static void attn_case(bool sparse, int nh, int nkv, int d, int64_t p0, int T, uint64_t seed)
{
    attn_case_k(sparse, nh, nkv, d, p0, T, 16, seed);
}

static void t_attn_dense(void)
{
    attn_case(false, 4, 2, 64, 100, 200, 7);
    attn_case(false, 32, 2, 128, 500, 300, 8);
    /* register (mma.sync) kernel: a partial last CTA, a prefix from 0, G = 8 */
    attn_case(false, 32, 2, 128, 0, 777, 21);
    attn_case(false, 16, 2, 128, 64, 131, 22);
    /* prefill-like (dense_kernel: 24 CTAs of 128 / 47 of 64 queries a head, the last partial,
     * causal limits inside the diagonal tiles of every CTA), G = 16 */
    attn_case(false, 32, 2, 128, 0, 3000, 25);
    /* after a cached prefix (p0 = 8 x 128 + 13): the wgmma kernel's first consumer of each CTA
     * ends a tile before its second; the last CTA (60 queries) leaves the second idle */
    attn_case(false, 32, 2, 128, 1037, 700, 26);
    /* few queries (the split kernels): one query near dense_len, a few, 16 queries (the
     * partials need 2 blocks a warp), G = 8 / d = 64 / G = 2, a query in block 0 */
    attn_case(false, 32, 2, 128, 8190, 1, 71);
    attn_case(false, 32, 2, 128, 5000, 3, 72);
    attn_case(false, 32, 2, 128, 8100, 16, 73);
    attn_case(false, 16, 2, 128, 3333, 2, 74);
    attn_case(false, 8, 2, 64, 1000, 1, 75);
    attn_case(false, 4, 2, 64, 0, 5, 76);
}

static void t_attn_sparse(void)
{
    attn_case(true, 4, 2, 64, 1500, 100, 9);
    attn_case(true, 32, 2, 128, 3000, 64, 10);
    /* real shape: K = 96 blocks at long positions, a partial last CTA, G = 4 */
    attn_case_k(true, 32, 2, 128, 40000, 37, 96, 23);
    attn_case_k(true, 8, 2, 64, 9000, 50, 96, 24);
    eng_rng r;
    eng_rng_seed(&r, 31);
    /* the same real shape with the model's lists (the band forms take it: a first CTA that
     * starts 64 rows before t0, a last one half full) and with a band CTA per 128 positions
     * over 4 of them (p0 + T = 40512: the last 64 queries in a CTA of their own) */
    attn_run(true, 32, 2, 128, 40000, 37, 96, model_sel(&r, 40000, 37, 2, 96, 32, -1), 37);
    attn_run(true, 32, 2, 128, 40000 - 64, 576, 96, model_sel(&r, 40000 - 64, 576, 2, 96, 32, -1),
             38);
    /* ring kernel (fourth version), model-shaped lists (block 0 + 33 local + 62 scored = 96):
     * 32/2 x 128 far past dense_len with partial query blocks and a partial last CTA for every
     * ring size (61 = 8 x 7 + 5 = 5 x 11 + 6 = 4 x 15 + 1), so the union stream wraps the ring
     * many times; queries whose block starts mid-list (qb + 1 <= K: every block, partial last) */
    attn_run(true, 32, 2, 128, 120000 - 17, 61, 96, model_sel(&r, 120000 - 17, 61, 2, 96, 32, -1),
             32);
    attn_run(true, 32, 2, 128, 6100, 150, 96, model_sel(&r, 6100, 150, 2, 96, 32, -1), 33);
    /* a whole group of -1 lists (empty stream: zeros) beside a full one; G = 8 and G = 1
     * (16 queries per m16 tile: 2 consumer warps) */
    attn_run(true, 32, 2, 128, 20000, 9, 96, model_sel(&r, 20000, 9, 2, 96, 32, 1), 34);
    attn_run(true, 16, 2, 128, 30011, 40, 96, model_sel(&r, 30011, 40, 2, 96, 32, -1), 35);
    attn_run(true, 2, 2, 64, 9000, 70, 96, model_sel(&r, 9000, 70, 2, 96, 32, -1), 36);
    /* decode shapes (the split kernels by default): one query far past dense_len with the
     * model's 96-block lists, 16 queries, a query whose list holds every block (qb + 1 <= K),
     * -1-padded lists (rand_sel) and a group of empty lists, G = 8 and G = 2 / d = 64 */
    attn_run(true, 32, 2, 128, 150000 - 3, 1, 96, model_sel(&r, 150000 - 3, 1, 2, 96, 32, -1), 77);
    attn_run(true, 32, 2, 128, 40000, 16, 96, model_sel(&r, 40000, 16, 2, 96, 32, -1), 78);
    attn_run(true, 32, 2, 128, 3000, 1, 96, model_sel(&r, 3000, 1, 2, 96, 32, -1), 79);
    attn_case_k(true, 32, 2, 128, 20000, 2, 16, 80);
    attn_run(true, 32, 2, 128, 30000, 1, 96, model_sel(&r, 30000, 1, 2, 96, 32, 0), 81);
    attn_run(true, 16, 2, 128, 12345, 3, 96, model_sel(&r, 12345, 3, 2, 96, 32, -1), 82);
    attn_run(true, 4, 2, 64, 9001, 1, 24, model_sel(&r, 9001, 1, 2, 24, 8, -1), 83);
}

/* The users-only rings (tma15 / tma11 and their out-of-order forms tma15o / tma11o: TMA into
 * swizzled slots) and the band forms (band15 / band11: the same blocks, the forced ones summed
 * first by k_band90; P is rounded to bf16 against another running max, so they differ from
 * ring15 by about each kernel's own distance from the CPU twin, ~1.5e-3 (call b1: 1.73e-3):
 * bound 3e-3 rel_l2 / 1e-2 max, under the twin tolerance 8e-3) against ring15
 * on many CTAs of model-shaped lists with random picks (each union block has few users, so consumers
 * skip most of the stream and the ring wraps often): same blocks, same order, same arithmetic
 * per warp, so the outputs should be equal; tolerance 1e-6 rel_l2 / 1e-5 max (no CPU twin: the
 * other cases compare every variant with it). Outputs are poisoned with NaN before each run. */
static void ring_vs_user(int nh, int d, int64_t p0, int T, uint64_t seed)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    const int nkv = 2, K = 96;
    const int64_t L = p0 + T;
    float *Q = randv(&r, (size_t)T * nh * d, 1.0, true), *Kc = randv(&r, (size_t)L * nkv * d, 1.0, true),
          *Vc = randv(&r, (size_t)L * nkv * d, 1.0, true);
    int32_t *sel = model_sel(&r, p0, T, nkv, K, 32, -1);
    const size_t n = (size_t)T * nh * d;
    enum { NV = 9, BAND15 = 5 };
    float *o[NV];
    const char *const v[NV] = {"ring15", "tma15", "tma11", "tma15o", "tma11o", "band15",
                               "band11", "stream", "streamp"};
    long pers = 0;
    for (int i = 0; i < NV; i++) {
        o[i] = malloc(n * 4);
        for (size_t j = 0; j < n; j++) o[i][j] = NAN;
        setenv("SALA_CUDA_SATTN", v[i], 1);
        const long before = O->attn_pers_launches();
        CU_ASSERT_EQUAL(O->attention(Q, Kc, Vc, L, p0, T, nh, nkv, d, sel, K, o[i], &e), SALA_OK);
        if (!strcmp(v[i], "streamp")) pers = O->attn_pers_launches() - before;
    }
    /* the persistent grid really ran where the stream form applies (G = 16, d = 128, sm_90a) */
    CU_ASSERT_EQUAL(pers, nh / nkv == 16 && d == 128 && O->sm90a() ? 1 : 0);
    unsetenv("SALA_CUDA_SATTN");
    for (int i = 1; i < NV; i++) {
        char what[128];
        double rel, mr;
        snprintf(what, sizeof(what), "%s vs ring15 nh=%d d=%d L=%lld T=%d", v[i], nh, d,
                 (long long)L, T);
        diff(o[i], o[0], n, &rel, &mr);
        const bool stream = !strncmp(v[i], "stream", 6), band = stream || !strncmp(v[i], "band", 4);
        report(what, rel, mr, band ? 3e-3 : 1e-6, band ? 1e-2 : 1e-5);
        /* d = 128 on an sm_90a device: the band form really ran, so the sums' order differs
         * from ring15's somewhere (d = 64, or no sm_90a image: no band form, equal) */
        if (band) CU_ASSERT(d == 128 && O->sm90a() ? rel > 0.0 : rel == 0.0);
        /* the streams walk band15's blocks in its order with its per-block arithmetic (at
         * G = 16; elsewhere both fall back to the same ring): equal bit for bit */
        if (stream) {
            snprintf(what, sizeof(what), "%s vs band15 nh=%d d=%d L=%lld T=%d", v[i], nh, d,
                     (long long)L, T);
            CU_ASSERT(memcmp(o[i], o[BAND15], n * 4) == 0);
            diff(o[i], o[BAND15], n, &rel, &mr);
            report(what, rel, mr, 0.0, 0.0);
        }
    }
    for (int i = 0; i < NV; i++) free(o[i]);
    free(Q), free(Kc), free(Vc), free(sel);
}

static void t_attn_sparse_rings(void)
{
    ring_vs_user(32, 128, 30000 - 5, 3000, 91);   /* G = 16: 200 CTAs a group, partial last */
    ring_vs_user(8, 64, 50000, 1111, 92);         /* G = 4, d = 64: 4 queries a warp */
}

static void t_compress(void)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, 11);
    const int64_t L = 1000;
    const int nkv = 2, d = 128, row = nkv * d;
    float *K = randv(&r, (size_t)L * row, 1.0, true);
    const int64_t n1 = infllm_n_windows(L, 32, 16), n2 = infllm_n_windows(L, 128, 64);
    float *g1 = malloc((size_t)(n1 + 1) * row * 4), *g2 = malloc((size_t)(n2 + 1) * row * 4);
    float *c1 = malloc((size_t)(n1 + 1) * row * 4), *c2 = malloc((size_t)(n2 + 1) * row * 4);
    CU_ASSERT_EQUAL_FATAL(O->compress(K, L, nkv, d, 32, 16, g1, g2, &e), SALA_OK);
    eng_sparse_config sc = {.block_size = 64, .kernel_size = 32, .kernel_stride = 16};
    int64_t m1 = 0, m2 = 0;
    infllm_compress(&sc, nkv, d, K, L, c1, &m1, c2, &m2);
    CU_ASSERT_EQUAL(m1, n1);
    CU_ASSERT_EQUAL(m2, n2);
    double rel, mr;
    diff(g1, c1, (size_t)n1 * row, &rel, &mr);
    report("compress K1 (bf16 means)", rel, mr, 4e-3, 8e-3);
    diff(g2, c2, (size_t)n2 * row, &rel, &mr);
    report("compress K2 (bf16 means)", rel, mr, 4e-3, 8e-3);
    free(K), free(g1), free(g2), free(c1), free(c2);
}

/* Selection agreement on random data; K1/K2 rounded to bf16 for both sides. A differing row is
 * accepted only when the CPU's margin at the K/K+1 boundary is below 1e-3 (fp32 vs double).
 * flat: every key the same vector, so every scored block ties exactly (the same bf16 windows
 * give the same fp32 sums on both sides): the lower block ids must win on both, and every row
 * must be identical (no margin allowance). */
static void select_case_f(int nh, int nkv, int d, int64_t topk, int64_t window, int64_t p0, int T,
                          uint64_t seed, bool flat)
{
    OPS();
    eng_rng r;
    eng_rng_seed(&r, seed);
    eng_sparse_config sc = {.block_size = 64, .dense_len = 0, .init_blocks = 1, .kernel_size = 32,
                            .kernel_stride = 16, .topk = topk, .window_size = window};
    const int64_t L = p0 + T, row = (int64_t)nkv * d;
    const int Kq = (int)(topk + window / 64);
    /* keys with a slowly varying component so that block scores differ */
    float *Kc = malloc((size_t)L * row * 4);
    float *dir = randv(&r, (size_t)row * 8, 1.0, false);
    for (int64_t j = 0; j < L; j++)
        for (int64_t i = 0; i < row; i++)
            Kc[j * row + i] = flat ? bfr(dir[i])
                                   : bfr((float)(0.5 * eng_rng_normal(&r) +
                                                 dir[((j / 200) % 8) * row + i]));
    float *Q = randv(&r, (size_t)T * nh * d, 1.0, true);
    const int64_t n1 = infllm_n_windows(L, 32, 16), n2 = infllm_n_windows(L, 128, 64);
    float *K1 = malloc((size_t)(n1 + 1) * row * 4), *K2 = malloc((size_t)(n2 + 1) * row * 4);
    int64_t m1 = 0, m2 = 0;
    infllm_compress(&sc, nkv, d, Kc, L, K1, &m1, K2, &m2);
    for (int64_t i = 0; i < n1 * row; i++) K1[i] = bfr(K1[i]);
    for (int64_t i = 0; i < n2 * row; i++) K2[i] = bfr(K2[i]);
    int32_t *sg = malloc((size_t)T * nkv * Kq * 4), *sr = malloc((size_t)Kq * 4);
    CU_ASSERT_EQUAL_FATAL(O->select(Q, p0, T, nh, nkv, d, K1, n1, K2, n2, &sc, sg, &e), SALA_OK);
    float *scr = malloc((size_t)infllm_select_scratch(&sc, nh, L) * 4 + 64);
    const float scale = (float)(1.0 / sqrt((double)d));
    int bad = 0, tie = 0, rows = 0;
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++) {
            float margin;
            const int64_t p = p0 + t;
            infllm_select(&sc, nh, nkv, d, scale, Q + (size_t)t * nh * d, g, p, K1,
                          infllm_n_windows(p + 1, 32, 16), K2, infllm_n_windows(p + 1, 128, 64),
                          scr, sr, &margin);
            rows++;
            if (memcmp(sr, sg + ((size_t)t * nkv + g) * Kq, (size_t)Kq * 4)) {
                if (margin < 1e-3f && !flat) tie++;
                else bad++;
            }
        }
    fprintf(stderr, "\n  select nh=%d d=%d K=%d L=%lld: %d/%d rows identical, %d differ at margin "
            "< 1e-3, %d differ above", nh, d, Kq, (long long)L, rows - bad - tie, rows, tie, bad);
    CU_ASSERT_EQUAL(bad, 0);
    free(Kc), free(dir), free(Q), free(K1), free(K2), free(sg), free(sr), free(scr);
}

static void select_case(int nh, int nkv, int d, int64_t topk, int64_t window, int64_t p0, int T,
                        uint64_t seed)
{
    select_case_f(nh, nkv, d, topk, window, p0, T, seed, false);
}

static void t_select(void)
{
    select_case(4, 2, 64, 8, 512, 2000, 100, 12);
    select_case(32, 2, 128, 64, 2048, 12000, 48, 13);
    /* the real 16-heads-per-group shape at long positions: many K1/K2 tiles, a CTA of 8
     * queries crossing a block boundary, a partial last CTA */
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(16, 2, 128, 64, 2048, 30000, 40, 15);
    /* decode: one query far out, stage 1 split over many CTAs (pass-1 partials merged, pass 2
     * ranges with a carried window); then the unsplit single-CTA stream at the same kind of
     * shape */
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    setenv("SALA_CUDA_NOSPLIT", "1", 1);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    unsetenv("SALA_CUDA_NOSPLIT");
    /* short decode shapes: the second stage-1 version splits from 1 K2 / 2 K1 tiles on (ranges
     * of 1 and 2 tiles) */
    select_case(32, 2, 128, 64, 2048, 9000, 1, 17);
    select_case(32, 2, 128, 64, 2048, 33001, 1, 18);
    select_case(16, 2, 64, 64, 2048, 20000, 1, 19);
    /* exact ties: the filter top-K (all candidates tie) and its radix fallback (more than 2048
     * candidates, nb = 2101) */
    select_case_f(32, 2, 128, 64, 2048, 40000, 3, 20, true);
    select_case_f(32, 2, 128, 64, 2048, 2100 * 64, 1, 21, true);
    /* the kernels before (SALA_CUDA_SCORE=old: in-loop divisions, exp2f, old split thresholds;
     * SALA_CUDA_TOPK=old: 32-pass radix with the row in shared memory) */
    setenv("SALA_CUDA_SCORE", "old", 1);
    setenv("SALA_CUDA_TOPK", "old", 1);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    unsetenv("SALA_CUDA_SCORE");
    /* the filter top-K on every launch (SALA_CUDA_TOPK=filter: short rows and prefill shapes
     * too) */
    setenv("SALA_CUDA_TOPK", "filter", 1);
    select_case(4, 2, 64, 8, 512, 2000, 100, 12);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(16, 2, 128, 64, 2048, 30000, 40, 15);
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    select_case(16, 2, 64, 64, 2048, 20000, 1, 19);
    select_case_f(32, 2, 128, 64, 2048, 40000, 3, 20, true);
    unsetenv("SALA_CUDA_TOPK");
    /* the transposed stage-1 kernel (default for split launches at G = 16; SALA_CUDA_SCORE=t:
     * every launch) at d = 64, prefill and decode shapes; queries before the first K2 window
     * (P = 0) next to ones after it (K = 2 blocks, 1 local); V2 on every launch
     * (SALA_CUDA_SCORE=v2, the default before) */
    select_case(32, 2, 64, 64, 2048, 30000, 40, 22);
    select_case(32, 2, 64, 64, 2048, 20000, 1, 23);
    select_case(32, 2, 128, 1, 64, 100, 100, 24);
    setenv("SALA_CUDA_SCORE", "t", 1);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(16, 2, 64, 64, 2048, 30000, 40, 15);
    select_case(32, 2, 64, 64, 2048, 30000, 40, 22);
    select_case(32, 2, 128, 1, 64, 100, 100, 24);
    select_case_f(32, 2, 128, 64, 2048, 40000, 3, 20, true);
    setenv("SALA_CUDA_SCORE", "v2", 1);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    select_case_f(32, 2, 128, 64, 2048, 40000, 3, 20, true);
    /* the wgmma kernel (sm_90a; SALA_CUDA_SCORE=w: every unsplit launch at d = 128, G = 16, K1
     * stride 16, an error where its image does not run; other shapes fall back to V2): every
     * case above again, single-query launches unsplit too */
    setenv("SALA_CUDA_SCORE", "w", 1);
    select_case(4, 2, 64, 8, 512, 2000, 100, 12);
    select_case(32, 2, 128, 64, 2048, 12000, 48, 13);
    select_case(32, 2, 128, 64, 2048, 100000 - 4, 21, 14);
    select_case(16, 2, 128, 64, 2048, 30000, 40, 15);
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    select_case(32, 2, 128, 1, 64, 100, 100, 24);
    select_case(32, 2, 64, 64, 2048, 30000, 40, 22);
    select_case_f(32, 2, 128, 64, 2048, 40000, 21, 20, true);
    setenv("SALA_CUDA_NOSPLIT", "1", 1);
    select_case(32, 2, 128, 64, 2048, 200003, 1, 16);
    select_case(32, 2, 128, 64, 2048, 9000, 1, 17);
    select_case_f(32, 2, 128, 64, 2048, 2100 * 64, 1, 21, true);
    unsetenv("SALA_CUDA_NOSPLIT");
    unsetenv("SALA_CUDA_SCORE");
}

/* Block scores of the wgmma stage-1 kernel (SALA_CUDA_SCORE=w) against V2 on the same inputs,
 * slot by slot (the same slots written, relative difference <= 1e-4: fp32 sums in another order,
 * the same ex2.approx): prefill shapes of 8K-token chunks' kind (a partial last CTA, a start
 * that is not block-aligned), the forced blocks skipped (local 32, K 96) or every block scored
 * (queries before the first K2 window, P = 0), one query. */
static void t_score_diff(void)
{
    OPS();
    static const struct { int64_t L; int T, local, Ksel; } S[] = {
        {70001, 1027, 32, 96}, {300, 300, -1, 0}, {9000, 61, -1, 0}, {131072, 1, 32, 96},
    };
    /* the wgmma kernel against V2 */
    static const char *const P[][2] = {{"w", "v2"}};
    setenv("SALA_CUDA_NOSPLIT", "1", 1);                   /* both unsplit, one query too */
    for (size_t p = 0; p < sizeof(P) / sizeof(P[0]); p++)
        for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++) {
            double rel = 0;
            int64_t nbad = 0;
            char where[128];
            CU_ASSERT_EQUAL_FATAL(O->score_diff(S[i].L, S[i].T, S[i].local, S[i].Ksel, P[p][0],
                                                P[p][1], 1e-4, &rel, &nbad, where, sizeof(where),
                                                &e), SALA_OK);
            fprintf(stderr, "\n  score %s vs %s L=%lld T=%d local=%d: max rel %.3g, %lld bad%s%s",
                    P[p][0], P[p][1], (long long)S[i].L, S[i].T, S[i].local, rel,
                    (long long)nbad, nbad ? ", first " : "", nbad ? where : "");
            CU_ASSERT_EQUAL(nbad, 0);
        }
    unsetenv("SALA_CUDA_NOSPLIT");
}

/* Benchmark (SALA_BENCH_SELECT=1): stage 1 and top-K of one layer, decode (T = 1, 8 layers'
 * keys in turn, so they come from HBM) at 32K / 256K / 1M and prefill (the last 8,192-token
 * chunk) at 128K / 1M, for the variants of SALA_BENCH_SELECT_VARIANTS ("label:VAR=val,VAR=val;
 * ..."; default: the current default, V2 everywhere (SALA_CUDA_SCORE=v2, the default before)
 * and the transposed kernel everywhere (=t)). Each variant's switches are set, run, unset. */
static void t_select_speed(void)
{
    OPS();
    static const struct { int64_t L; int T, layers, reps; } S[] = {
        {32768, 1, 8, 20}, {262144, 1, 8, 20}, {1048576, 1, 8, 20},
        {131072, 8192, 1, 3}, {1048576, 8192, 1, 2},
    };
    const char *vs = getenv("SALA_BENCH_SELECT_VARIANTS");
    char list[1024];
    snprintf(list, sizeof(list), "%s",
             vs && *vs ? vs : "new:;v2:SALA_CUDA_SCORE=v2;t:SALA_CUDA_SCORE=t");
    char *save = NULL;
    for (char *v = strtok_r(list, ";", &save); v; v = strtok_r(NULL, ";", &save)) {
        char *colon = strchr(v, ':');
        const char *env = colon ? colon + 1 : "";
        if (colon) *colon = 0;
        sala_env_spec(env, true);
        for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++) {
            double ss = 0, st = 0;
            CU_ASSERT_EQUAL_FATAL(O->select_speed(S[i].L, S[i].T, S[i].layers, S[i].reps, &ss,
                                                  &st, &e), SALA_OK);
            fprintf(stderr, "\n  select %-8s L=%8lld T=%5d: stage 1 %9.4f ms  top-K %8.4f ms  "
                    "(%s)", v, (long long)S[i].L, S[i].T, ss * 1e3, st * 1e3, env);
        }
        sala_env_spec(env, false);
    }
}

/* The device's greedy pick (cu_pick.cu) against engine/sampler.c's greedy rule on the same row:
 * equal ids (exact: the pick is a comparison, the penalty one IEEE division or product). */
static int pick_case(int V, float pen, const float *row, const int32_t *ids, int64_t n,
                     const int32_t *stale, int64_t nstale, const char *what)
{
    OPS();
    eng_sampler *smp = NULL;
    const eng_sampler_params sp = {.temperature = 0, .top_p = 1.0f, .repetition_penalty = pen};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&sp, V, &smp, &e), SALA_OK);
    const int32_t want = eng_sampler_sample(smp, row, ids, n);
    int32_t got = -1;
    CU_ASSERT_EQUAL_FATAL(O->pick(row, V, pen, ids, n, stale, nstale, &got, &e), SALA_OK);
    eng_sampler_free(smp);
    fprintf(stderr, "\n  pick V=%d pen %g (%lld ids, %lld stale) %s: device %d, sampler %d", V,
            pen, (long long)n, (long long)nstale, what, got, want);
    CU_ASSERT_EQUAL(got, want);
    return want;
}

static void t_pick(void)
{
    const int V = 73448;
    eng_rng r;
    eng_rng_seed(&r, 91);
    float *row = randv(&r, V, 3.0, false);
    int32_t ids[300], stale[300];
    pick_case(V, 1.0f, row, NULL, 0, NULL, 0, "random");
    /* ties: values on a coarse grid cut at 4, the maximum held by many ids */
    for (int i = 0; i < V; i++) row[i] = fminf(roundf(row[i]), 4.0f);
    int32_t top = pick_case(V, 1.0f, row, NULL, 0, NULL, 0, "ties");
    int nt = 0;
    for (int i = 0; i < V; i++) nt += row[i] == row[top];
    fprintf(stderr, " (%d ids hold the maximum)", nt);
    CU_ASSERT(nt > 1);
    /* penalty on the tied maxima (with duplicates, ids out of range), stale marks elsewhere */
    int n = 0;
    for (int i = 0; i < V && n < 200; i++)
        if (row[i] == row[top]) ids[n++] = i, ids[n++] = i;
    ids[n++] = -5, ids[n++] = V, ids[n++] = V + 100;
    for (int i = 0; i < 300; i++) stale[i] = (int32_t)(eng_rng_next(&r) % (uint64_t)V);
    const int32_t p1 = pick_case(V, 1.3f, row, ids, n, stale, 300, "ties penalized");
    CU_ASSERT(p1 != top);
    pick_case(V, 0.5f, row, ids, n, stale, 300, "ties boosted");
    /* negative rows: the penalty multiplies */
    for (int i = 0; i < V; i++) row[i] = -1.0f - fabsf(row[i]) - (float)(i % 7) * 0.25f;
    n = 0;
    for (int i = 0; i < 300; i++) ids[n++] = (int32_t)(eng_rng_next(&r) % (uint64_t)V);
    pick_case(V, 1.7f, row, ids, n, NULL, 0, "negative");
    pick_case(V, 0.9f, row, ids, n, stale, 300, "negative boosted");
    /* NaN away from id 0 never wins; at id 0 the sampler keeps 0; all -inf: 0 */
    row[17] = NAN, row[V - 1] = NAN;
    pick_case(V, 1.0f, row, NULL, 0, NULL, 0, "NaN inside");
    row[0] = NAN;
    CU_ASSERT_EQUAL(pick_case(V, 1.2f, row, ids, n, NULL, 0, "NaN at 0"), 0);
    for (int i = 0; i < V; i++) row[i] = -INFINITY;
    row[5] = NAN;
    CU_ASSERT_EQUAL(pick_case(V, 1.0f, row, NULL, 0, NULL, 0, "all -inf"), 0);
    /* small vocabularies */
    float small[37];
    for (int i = 0; i < 37; i++) small[i] = (float)((i * 11) % 5);
    pick_case(37, 1.0f, small, NULL, 0, NULL, 0, "V=37");
    const int32_t sid[3] = {4, 4, 9};
    pick_case(37, 2.0f, small, sid, 3, NULL, 0, "V=37 penalized");
    pick_case(1, 1.5f, small, sid, 0, NULL, 0, "V=1");
    free(row);
}

/* The top-K rule (SALA-SPEC §3.6 step 4) on the host: the K largest of the row's keys (forced
 * blocks b < init and b >= qb - local count as +inf; equal keys: lower block first), ascending,
 * -1 padded. */
static const float *tk_row;
static int64_t tk_init, tk_local0;
static float tk_key(int64_t b)
{
    return b < tk_init || b >= tk_local0 ? INFINITY : tk_row[b];
}
static int tk_cmp(const void *x, const void *y)
{
    const int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    const float ka = tk_key(a), kb = tk_key(b);
    if (ka != kb) return ka > kb ? -1 : 1;
    return a < b ? -1 : a > b;
}
static int asc32(const void *x, const void *y)
{
    const int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}
static void topk_ref(const float *row, int64_t p, int block, int init, int local, int K,
                     int32_t *out)
{
    const int64_t qb = p / block, nb = qb + 1;
    if (nb <= K) {
        for (int k = 0; k < K; k++) out[k] = k < nb ? k : -1;
        return;
    }
    int32_t *id = malloc((size_t)nb * 4);
    for (int64_t b = 0; b < nb; b++) id[b] = (int32_t)b;
    tk_row = row, tk_init = init, tk_local0 = qb - local;
    qsort(id, (size_t)nb, 4, tk_cmp);
    memcpy(out, id, (size_t)K * 4);
    qsort(out, (size_t)K, 4, asc32);
    free(id);
}

/* k_topk against topk_ref, every kernel (SALA_CUDA_TOPK=warp, filter, old, and the default
 * pick), bit for bit: scores on a coarse grid (many exact ties) with some -inf, rows that fit
 * whole (nb <= K) next to ones that do not, K = 16 / 96 / 128 (one, three and four keys a lane
 * in the warp kernel), rows of 1.6K and 16K blocks, an odd row stride (unaligned rows), and a
 * flat case (every key equal: more candidates than the warp kernel's 512 slots). */
static void topk_case(int64_t p0, int T, int K, int local, int nbs_pad, bool flat, uint64_t seed)
{
    OPS();
    const int nkv = 2, block = 64, init = 1;
    const int nbs = (int)((p0 + T - 1) / block + 1) + nbs_pad;
    eng_rng r;
    eng_rng_seed(&r, seed);
    const size_t ns = (size_t)T * nkv * nbs;
    float *sc = malloc(ns * 4);
    for (size_t i = 0; i < ns; i++) {
        const uint64_t u = eng_rng_next(&r);
        sc[i] = flat ? 0.5f : u % 97 == 0 ? -INFINITY : ((float)(u % 64) - 32.0f) * 0.25f + 0.125f;
    }
    int32_t *ref = malloc((size_t)T * nkv * K * 4), *got = malloc((size_t)T * nkv * K * 4);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++)
            topk_ref(sc + ((size_t)t * nkv + g) * nbs, p0 + t, block, init, local, K,
                     ref + ((size_t)t * nkv + g) * K);
    static const char *const kinds[4] = {"warp", "filter", "old", NULL};
    for (int v = 0; v < 4; v++) {
        if (kinds[v]) setenv("SALA_CUDA_TOPK", kinds[v], 1);
        else unsetenv("SALA_CUDA_TOPK");
        memset(got, 0x55, (size_t)T * nkv * K * 4);
        CU_ASSERT_EQUAL_FATAL(O->topk(sc, nbs, p0, T, nkv, K, block, init, local, got, &e),
                              SALA_OK);
        int bad = 0;
        for (int i = 0; i < T * nkv; i++)
            bad += memcmp(got + (size_t)i * K, ref + (size_t)i * K, (size_t)K * 4) != 0;
        fprintf(stderr, "\n  topk p0=%lld T=%d K=%d nbs=%d%s %s: %d of %d rows differ",
                (long long)p0, T, K, nbs, flat ? " flat" : "", kinds[v] ? kinds[v] : "default",
                bad, T * nkv);
        CU_ASSERT_EQUAL(bad, 0);
    }
    unsetenv("SALA_CUDA_TOPK");
    free(sc), free(ref), free(got);
}

static void t_topk(void)
{
    topk_case(96 * 64 - 100, 200, 96, 32, 0, false, 101);   /* nb <= K and above */
    topk_case(100000, 40, 96, 32, 1, false, 102);
    topk_case(1040000, 20, 96, 32, 0, false, 103);
    topk_case(3000, 50, 16, 8, 3, false, 104);
    topk_case(30000, 24, 128, 32, 0, false, 105);
    topk_case(50000, 20, 96, 32, 0, true, 106);
}

void suite_cuda_ops(void)
{
    if (!getenv("SALA_TEST_CUDA")) return;
    SALA_ADD("cuda_ops", {"add_norm", t_add_norm}, {"gemm", t_gemm}, {"swiglu", t_swiglu},
             {"gemm acc", t_gemm_acc}, {"mlp gate/up bf16", t_mlp_gu},
             {"gemm cuBLASLt (forced) at a prefill shape", t_gemm_lt}, {"gemv (decode)", t_gemv},
             {"gate", t_gate}, {"norm_rows", t_norm_rows}, {"sparse_prep", t_sparse_prep},
             {"embed", t_embed},
             {"lightning", t_lightning}, {"lightning calls", t_lightning_calls},
             {"lightning ranges", t_lightning_ranges},
             {"attention dense", t_attn_dense}, {"attention sparse", t_attn_sparse},
             {"attention sparse rings", t_attn_sparse_rings},
             {"compress", t_compress},
             {"stage 1 wgmma vs V2 scores", t_score_diff}, {"select", t_select},
             {"greedy pick", t_pick}, {"top-K kernels == the host rule", t_topk});
}

void suite_cuda_gemm_speed(void)
{
    if (!getenv("SALA_TEST_CUDA") || !getenv("SALA_BENCH_GEMM")) return;
    SALA_ADD("cuda_gemm_speed", {"prefill GEMMs: cublasGemmEx vs cuBLASLt tuned", t_gemm_speed});
}

void suite_cuda_select_speed(void)
{
    if (!getenv("SALA_TEST_CUDA") || !getenv("SALA_BENCH_SELECT")) return;
    SALA_ADD("cuda_select_speed", {"stage 1 and top-K: decode and prefill launches",
                                   t_select_speed});
}

void suite_cuda_gemv_speed(void)
{
    if (!getenv("SALA_TEST_CUDA") || !getenv("SALA_BENCH_GEMV")) return;
    SALA_ADD("cuda_gemv_speed", {"decode products: cuBLAS, cuBLASLt, GEMV, read", t_gemv_speed});
}

/* ---- whole model against ../shared/golden ---- */


/* README §5, bf16 engine: rel_l2 <= 2e-2 (3e-2 sparse_prefill), row_rel <= 5e-2 (1e-1 sparse),
 * max_abs <= 1.0 dense/decode (2.0 sparse), selections identical where margin >= 1e-2, argmax
 * identical where the reference top-1/top-2 margin > 0.1 (checked against the f64 file). */
static void gcase(const char *name, const char *extra, double rel, double row, double mabs)
{
    char outp[4200], cmd[13000], log[4096];
    snprintf(outp, sizeof(outp), "%s/%s.cuda.safetensors", test_tmpdir(), name);
    char refb[4200], reff[4200];
    snprintf(refb, sizeof(refb), "%s%s.bf16.safetensors", test_shared("golden/cases/tiny-a/"), name);
    snprintf(reff, sizeof(reff), "%s%s.f64.safetensors", test_shared("golden/cases/tiny-a/"), name);
    snprintf(cmd, sizeof(cmd), "%s logits --backend cuda --model %s --case %s --out %s %s",
             test_bin(), test_shared("golden/models/tiny-a"), reff, outp, extra);
    int st = test_run(cmd, log, sizeof(log));
    if (st != 0) fprintf(stderr, "\n%s\n-> %d: %s\n", cmd, st, log);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    for (int k = 0; k < 2; k++) {
        golden_cmp r;
        const char *refp = k ? reff : refb;
        CU_ASSERT_EQUAL_FATAL(golden_compare(refp, outp, 1e-2f, &r), 0);
        fprintf(stderr, "\n  %-15s %-18s vs %-4s rows %3lld rel_l2 %.2e row_rel %.2e max_abs %.3f "
                "argmax bad %lld/%lld sel differ %lld/%lld (bad at margin>=1e-2: %lld/%lld)",
                name, extra, k ? "f64" : "bf16", (long long)r.rows, r.rel_l2, r.row_rel,
                r.max_abs, (long long)r.argmax_bad, (long long)r.argmax_checked, (long long)r.sel_diff,
                (long long)r.sel_rows, (long long)r.sel_bad, (long long)r.sel_checked);
        CU_ASSERT(r.rows > 0);
        CU_ASSERT(r.rel_l2 <= rel);
        CU_ASSERT(r.row_rel <= row);
        CU_ASSERT(r.max_abs <= mabs);
        CU_ASSERT_EQUAL(r.sel_bad, 0);
        if (k) CU_ASSERT_EQUAL(r.argmax_bad, 0);
    }
}

static void g_dense(void) { gcase("dense_prefill", "", 2e-2, 5e-2, 1.0); }
static void g_dense_chunked(void) { gcase("dense_prefill", "--chunk 97", 2e-2, 5e-2, 1.0); }
static void g_sparse(void) { gcase("sparse_prefill", "", 3e-2, 1e-1, 2.0); }
static void g_sparse_chunked(void) { gcase("sparse_prefill", "--chunk 700", 3e-2, 1e-1, 2.0); }
static void g_decode(void) { gcase("decode", "--decode-from 2990", 2e-2, 5e-2, 1.0); }
static void g_crossing(void) { gcase("crossing", "--decode-from 1000", 2e-2, 5e-2, 1.0); }

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* Save on CUDA, load on CUDA (engine/engine.h "persisted state", the sections through an
 * in-memory store): the state is of dtype bf16 (the caches as the GPU holds them, half the f32
 * size); the loaded sequence must give the same logits as the original when both continue, past
 * dense_len (sparse path) and after a rewind to the saved checkpoint. The same state loads on
 * the CPU backend (bf16 widened) and continues within the bf16 tolerances of the golden cases
 * (sparse: per-row relative L2 1e-1, max |dlogit| 2) of the CUDA sequence. */
static void g_save_load(void)
{
    sala_err e = {0};
    eng_engine *en = NULL;
    int rc = eng_engine_open(test_shared("golden/models/tiny-a"), "cuda", &en, &e);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    const eng_config *c = eng_engine_config(en);
    const int64_t V = c->vocab_size, n0 = 700, n1 = 1400;
    int32_t *tok = malloc((size_t)(n1 + 16) * 4);
    eng_rng r;
    eng_rng_seed(&r, 31);
    for (int64_t i = 0; i < n1 + 16; i++) tok[i] = (int32_t)(eng_rng_next(&r) % (uint64_t)V);
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4), *lc = malloc((size_t)V * 4);
    eng_seq *s = NULL, *s2 = NULL, *sc = NULL;
    eng_engine *ec = NULL;
    mem_store ms = {.ns = 0};
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, tok, n0, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(s, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, tok + n0, n1 - n0, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_save(s, mem_write, &ms, &e), SALA_OK);
    const eng_state_reader rd = {mem_size, mem_read, &ms};
    rc = eng_seq_load(en, &rd, &s2, &e);
    if (rc) fprintf(stderr, "\n  load: %s", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_len(s2), n1);
    CU_ASSERT_EQUAL(eng_seq_checkpoint_count(s2), 1);
    /* dtype bf16, sparse sections of 2 bytes a value */
    const mem_sec *hd = mem_find(&ms, "eng.header", false), *sk = mem_find(&ms, "sparse.K", false);
    CU_ASSERT_FATAL(hd != NULL && hd->n >= 32 && sk != NULL);
    CU_ASSERT_EQUAL(hd->d[12], ENG_STATE_BF16);
    CU_ASSERT_EQUAL(sk->n, (size_t)c->n_sparse * (size_t)n1 * (size_t)c->num_key_value_heads *
                               (size_t)c->head_dim * 2);
    uint64_t total = 0;
    for (int i = 0; i < ms.ns; i++) total += ms.s[i].n;
    CU_ASSERT_EQUAL(total, eng_state_bytes(c, n1, 1, ENG_STATE_BF16));
    /* the same state on the CPU backend */
    rc = eng_engine_open(test_shared("golden/models/tiny-a"), "cpu", &ec, &e);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    rc = eng_seq_load(ec, &rd, &sc, &e);
    if (rc) fprintf(stderr, "\n  CPU load: %s", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(eng_seq_len(sc), n1);
    double worst = 0, cpu_abs = 0, cpu_rel = 0;
    for (int k = 0; k < 8; k++) {
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(s, tok[n1 + k], la, &e), SALA_OK);
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(s2, tok[n1 + k], lb, &e), SALA_OK);
        CU_ASSERT_EQUAL_FATAL(eng_seq_decode(sc, tok[n1 + k], lc, &e), SALA_OK);
        const double d = max_abs_diff(la, lb, (size_t)V);
        if (!(d <= worst)) worst = d;
        const double dc = max_abs_diff(la, lc, (size_t)V);
        if (!(dc <= cpu_abs)) cpu_abs = dc;
        const double rr = test_row_rel(lc, la, 1, V);
        if (!(rr <= cpu_rel)) cpu_rel = rr;
    }
    fprintf(stderr, "\n  CUDA-saved (bf16) state on the CPU: 8 decode steps vs CUDA row_rel %.2e "
            "max |dlogit| %.3g", cpu_rel, cpu_abs);
    CU_ASSERT(cpu_rel <= 1e-1);
    CU_ASSERT(cpu_abs <= 2.0);
    eng_seq_free(sc);
    eng_engine_close(ec);
    /* rewind both to the checkpoint, prefill the rest again, one more step */
    int64_t r1 = -1, r2 = -2;
    CU_ASSERT_EQUAL_FATAL(eng_seq_truncate(s, n1 - 100, &r1, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_truncate(s2, n1 - 100, &r2, &e), SALA_OK);
    CU_ASSERT_EQUAL(r1, n0);
    CU_ASSERT_EQUAL(r2, n0);
    const int64_t row = n1 - 1 - n0;
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, tok + n0, n1 - n0, &row, 1, la, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s2, tok + n0, n1 - n0, &row, 1, lb, &e), SALA_OK);
    const double d2 = max_abs_diff(la, lb, (size_t)V);
    fprintf(stderr, "\n  save/load on CUDA (len %lld, %d sections): 8 decode steps max |dlogit| "
            "%.3g, after rewind to %lld and re-prefill %.3g", (long long)n1, ms.ns, worst,
            (long long)r2, d2);
    CU_ASSERT(worst <= 1e-6);
    CU_ASSERT(d2 <= 1e-6);
    eng_seq_free(s);
    eng_seq_free(s2);
    mem_free(&ms);
    free(tok), free(la), free(lb), free(lc);
    eng_engine_close(en);
}

/* The last layer's tail (attention output, o_proj, MLP) runs only from a step's first wanted
 * row on (engine/backend.h eng_tail_from) against the whole layer (SALA_TAIL=full), on the tiny
 * model: one call of 3000 tokens (sparse queries) with the last row, two wanted rows at the
 * dense/sparse switch in calls of 700, none (then decode), and 17000 tokens in one call (two
 * or more CUDA steps, the first with no row: the last layer's tail skipped whole). The caches are the
 * same operations on the same rows either way, so the two decode steps after each prefill must
 * match bit for bit; the prefill rows go through other GEMM shapes (the GEMV for few rows):
 * per-row relative L2 <= 1e-2 and |dlogit| <= 0.5 (the batched-decode tolerances). */
static void g_tail(void)
{
    eng_engine *en = NULL;
    sala_err e = {0};
    CU_ASSERT_EQUAL_FATAL(eng_engine_open(test_shared("golden/models/tiny-a"), "cuda", &en, &e),
                          SALA_OK);
    const int64_t V = eng_engine_config(en)->vocab_size;
    static const int64_t r3000[] = {2999}, rsw[] = {1023, 1024}, rlong[] = {16999};
    static const struct { int64_t n, call; const int64_t *rows; int nrows; } cases[] = {
        {3000, 3000, r3000, 1}, {2100, 700, rsw, 2}, {3000, 3000, NULL, 0},
        {17000, 17000, rlong, 1}};
    int32_t *tok = malloc((size_t)17002 * 4);
    eng_rng r;
    eng_rng_seed(&r, 41);
    for (int i = 0; i < 17002; i++) tok[i] = (int32_t)(eng_rng_next(&r) % (uint64_t)V);
    float *lg[2] = {malloc((size_t)4 * V * 4), malloc((size_t)4 * V * 4)};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const int64_t n = cases[c].n;
        for (int k = 0; k < 2; k++) {   /* k = 0: SALA_TAIL=full */
            if (k) unsetenv("SALA_TAIL");
            else setenv("SALA_TAIL", "full", 1);
            eng_seq *s = NULL;
            CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &s, &e), SALA_OK);
            int64_t ri = 0;
            for (int64_t t0 = 0; t0 < n; t0 += cases[c].call) {
                const int64_t m = n - t0 < cases[c].call ? n - t0 : cases[c].call;
                int64_t loc[2], nl = 0;
                while (ri + nl < cases[c].nrows && cases[c].rows[ri + nl] < t0 + m) {
                    loc[nl] = cases[c].rows[ri + nl] - t0;
                    nl++;
                }
                CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(s, tok + t0, m, loc, nl, lg[k] + ri * V,
                                                      &e), SALA_OK);
                ri += nl;
            }
            float *dl = lg[k] + ri * V;
            CU_ASSERT_EQUAL_FATAL(eng_seq_decode(s, tok[n], dl, &e), SALA_OK);
            CU_ASSERT_EQUAL_FATAL(eng_seq_decode(s, tok[n + 1], dl + V, &e), SALA_OK);
            eng_seq_free(s);
        }
        unsetenv("SALA_TAIL");
        const int nr = cases[c].nrows;
        const double rel = test_row_rel(lg[0], lg[1], nr, V);
        const double mx = max_abs_diff(lg[0], lg[1], (size_t)nr * V);
        const double dec = max_abs_diff(lg[0] + nr * V, lg[1] + nr * V, (size_t)(2 * V));
        fprintf(stderr, "\n  tail vs whole last layer, %lld tokens in calls of %lld, %d rows: "
                "row_rel %.2e max |dlogit| %.3g; decode after: max |dlogit| %.3g",
                (long long)n, (long long)cases[c].call, nr, rel, mx, dec);
        CU_ASSERT(rel <= 1e-2);
        CU_ASSERT(mx <= 0.5);
        CU_ASSERT(dec == 0);
    }
    free(lg[0]), free(lg[1]), free(tok);
    eng_engine_close(en);
}

void suite_cuda_golden(void)
{
    if (!getenv("SALA_TEST_CUDA")) return;
    SALA_ADD("cuda_golden", {"dense_prefill", g_dense}, {"dense_prefill --chunk 97", g_dense_chunked},
             {"sparse_prefill", g_sparse}, {"sparse_prefill --chunk 700", g_sparse_chunked},
             {"decode", g_decode}, {"crossing", g_crossing}, {"save/load", g_save_load},
             {"last layer's tail == whole layer", g_tail});
}

/* ---- batched decode and shared forks ---- */

static eng_engine *open_cuda(void)
{
    eng_engine *en = NULL;
    sala_err e = {0};
    int rc = eng_engine_open(test_shared("golden/models/tiny-a"), "cuda", &en, &e);
    if (rc) fprintf(stderr, "\n  %s", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SALA_OK);
    return en;
}

/* Six sequences on the tiny model (random weights), lengths below dense_len, at it, past it and
 * far past it, 16 steps: eng_seq_decode_batch (one forward for all) against eng_seq_decode one
 * by one, both fed the batched path's greedy tokens. Tolerance: the batched GEMMs sum n rows in
 * another order, so bf16 activations may differ by an ulp: per-row relative L2 <= 1e-2 and
 * |Δlogit| <= 0.5 (the bf16-engine golden tolerances are 5e-2 / 1.0), greedy tokens identical
 * where the single path's top-2 margin exceeds 0.1, every selection reported to its sequence's
 * hook (same number of calls). */
static void b_parity(void)
{
    eng_engine *en = open_cuda();
    CU_ASSERT(eng_engine_batch_native(en));
    const int64_t lens[6] = {5, 700, 1023, 1100, 3000, 9000};
    batch_cmp r;
    CU_ASSERT_EQUAL_FATAL(batch_compare(en, lens, 6, 16, 23, 0.1, &r), 0);
    fprintf(stderr, "\n  batched vs single decode (6 sequences x 16 steps): row_rel %.2e max "
            "|dlogit| %.3g bitwise %d; greedy differ %lld (bad at margin > 0.1: %lld/%lld); "
            "hook calls %lld / %lld, sequences whose selections differ %d", r.row_rel,
            r.max_abs, (int)r.bitwise, (long long)r.tok_diff, (long long)r.tok_bad,
            (long long)r.tok_checked, (long long)r.sel_calls[0], (long long)r.sel_calls[1],
            r.sel_seq_differ);
    CU_ASSERT(r.row_rel <= 1e-2);
    CU_ASSERT(r.max_abs <= 0.5);
    CU_ASSERT_EQUAL(r.tok_bad, 0);
    CU_ASSERT(r.sel_calls[0] > 0);
    CU_ASSERT_EQUAL(r.sel_calls[0], r.sel_calls[1]);
    eng_engine_close(en);
}

/* Decode tokens tok[0..n) on a and b; the largest |Δlogit| of any step (0: bit for bit). */
static double twin_decode(eng_seq *a, eng_seq *b, const int32_t *tok, int n, int64_t V)
{
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
    double worst = 0;
    sala_err e = {0};
    for (int i = 0; i < n; i++) {
        if (eng_seq_decode(a, tok[i], la, &e) || eng_seq_decode(b, tok[i], lb, &e)) {
            fprintf(stderr, "\n  decode: %s", e.msg);
            worst = INFINITY;
            break;
        }
        const double d = max_abs_diff(la, lb, (size_t)V);
        if (!(d <= worst)) worst = d;
    }
    free(la), free(lb);
    return worst;
}

/* Rewind a and b to len (a checkpoint), prefill tok[0..n) on both: |Δlogit| of the last row. */
static double twin_rewrite(eng_seq *a, eng_seq *b, int64_t len, const int32_t *tok, int64_t n,
                           int64_t V)
{
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
    int64_t ra = -1, rb = -1, last = n - 1;
    sala_err e = {0};
    double d = INFINITY;
    if (!eng_seq_truncate(a, len, &ra, &e) && !eng_seq_truncate(b, len, &rb, &e) && ra == len &&
        rb == len && !eng_seq_prefill(a, tok, n, &last, 1, la, &e) &&
        !eng_seq_prefill(b, tok, n, &last, 1, lb, &e))
        d = max_abs_diff(la, lb, (size_t)V);
    else
        fprintf(stderr, "\n  rewrite to %lld: reached %lld / %lld: %s", (long long)len,
                (long long)ra, (long long)rb, e.msg);
    free(la), free(lb);
    return d;
}

/* *s saved into memory and loaded back as a new sequence, which replaces it (the old one freed);
 * on failure *s is left as it was. */
static int seq_reload(eng_engine *en, eng_seq **s)
{
    sala_err e = {0};
    mem_store ms = {.ns = 0};
    const eng_state_reader rd = {mem_size, mem_read, &ms};
    eng_seq *L = NULL;
    int rc = eng_seq_save(*s, mem_write, &ms, &e);
    if (!rc) rc = eng_seq_load(en, &rd, &L, &e);
    mem_free(&ms);
    if (rc) {
        fprintf(stderr, "\n  save/load: %s", e.msg);
        return rc;
    }
    eng_seq_free(*s);
    *s = L;
    return SALA_OK;
}

static int fork_copy(eng_seq *s, eng_seq **out)
{
    sala_err e = {0};
    setenv("SALA_CUDA_FORK_COPY", "1", 1);
    int rc = eng_seq_fork(s, out, &e);
    unsetenv("SALA_CUDA_FORK_COPY");
    if (rc) fprintf(stderr, "\n  fork (copy): %s", e.msg);
    return rc;
}

/* A parent P of 20000 tokens (tiny model: 256 B of K per layer and token, so 2 MiB chunks hold
 * 8192 tokens: chunks 0 and 1 lie wholly below the length, chunk 2 holds the boundary) with
 * checkpoints at 4000 and 9000. A = shared fork, B and R = copying forks (twins of A and P).
 * Every comparison is bit for bit:
 *   A vs B decoding the same tokens;          P vs R decoding (parent unaffected by A);
 *   A and B rewound to 9000 and re-prefilled (the child writes into chunk 1, shared: copy on
 *   write), then P vs R decoding again (the parent unaffected by the child's rewrite);
 *   P and R rewound to 4000 and re-prefilled (the parent writes into chunk 0, shared with A),
 *   then A vs B decoding (the child unaffected); no chunk is shared any more;
 *   C = shared fork of A, D = copying fork of A, A freed: C vs D decoding (refcounts keep
 *   A's chunks alive for C).
 * vmm: the engine maps chunks (else it copies: nothing shared, the same equalities). loaded: P
 * is saved and loaded back first, so its caches below the length are one solid chunk per buffer
 * (what a context opened from a file has): the child's rewrite copies that whole chunk, after
 * which nothing is shared. */
static void fork_scenario(eng_engine *en, bool vmm, bool loaded)
{
    const int64_t V = eng_engine_config(en)->vocab_size, N = 20000;
    int32_t *ids = malloc((size_t)(N + 8000) * 4);
    eng_rng g;
    eng_rng_seed(&g, 41);
    for (int64_t i = 0; i < N + 8000; i++) ids[i] = (int32_t)(3 + eng_rng_next(&g) % (uint64_t)(V - 3));
    const int32_t *y = ids + N, *x = ids + N + 100, *w = ids + N + 200, *z = ids + N + 4000;
    sala_err e = {0};
    eng_seq *P = NULL, *A = NULL, *B = NULL, *R = NULL, *C = NULL, *D = NULL;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &P, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(P, ids, 4000, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(P, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(P, ids + 4000, 5000, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(P, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(P, ids + 9000, N - 9000, NULL, 0, NULL, &e), SALA_OK);
    if (loaded) {
        CU_ASSERT_EQUAL_FATAL(seq_reload(en, &P), SALA_OK);
    }
    double t0 = sala_now();
    CU_ASSERT_EQUAL_FATAL(eng_seq_fork(P, &A, &e), SALA_OK);
    const double t_share = sala_now() - t0;
    t0 = sala_now();
    CU_ASSERT_EQUAL_FATAL(fork_copy(P, &B), SALA_OK);
    const double t_copy = sala_now() - t0;
    CU_ASSERT_EQUAL_FATAL(fork_copy(P, &R), SALA_OK);
    const uint64_t shA = eng_seq_shared_bytes(A), shP = eng_seq_shared_bytes(P);
    const uint64_t want = vmm ? (uint64_t)2 * 2 * 2 * (2u << 20) : 0;   /* 2 layers x K,V x 2 */
    CU_ASSERT_EQUAL(shA, want);
    CU_ASSERT_EQUAL(shP, want);
    CU_ASSERT_EQUAL(eng_seq_shared_bytes(B), 0);
    CU_ASSERT_EQUAL(eng_seq_len(A), N);
    CU_ASSERT_EQUAL(eng_seq_checkpoint_count(A), 2);
    double d[6];
    d[0] = twin_decode(A, B, y, 8, V);
    d[1] = twin_decode(P, R, x, 8, V);
    d[2] = twin_rewrite(A, B, 9000, w, 3000, V);   /* child writes into shared chunk 1 */
    d[3] = twin_decode(P, R, x + 8, 8, V);
    const uint64_t shP2 = eng_seq_shared_bytes(P);
    d[4] = twin_rewrite(P, R, 4000, z, 3000, V);   /* parent writes into shared chunk 0 */
    d[5] = twin_decode(A, B, y + 8, 8, V);
    const uint64_t shP3 = eng_seq_shared_bytes(P), shA3 = eng_seq_shared_bytes(A);
    CU_ASSERT_EQUAL(shP2, loaded ? 0 : want / 2);
    CU_ASSERT_EQUAL(shP3, 0);
    CU_ASSERT_EQUAL(shA3, 0);
    CU_ASSERT_EQUAL_FATAL(eng_seq_fork(A, &C, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(fork_copy(A, &D), SALA_OK);
    /* (A's rewritten solid chunk reaches past A's length: C copies it, nothing to share) */
    CU_ASSERT(!vmm || loaded || eng_seq_shared_bytes(C) > 0);
    eng_seq_free(A);
    A = NULL;
    const double d6 = twin_decode(C, D, y + 16, 8, V);
    fprintf(stderr, "\n  fork %s%s at %lld tokens: shared %.1f MiB, fork %.2f ms (copying fork "
            "%.2f ms); max |dlogit| vs copies: %g %g %g %g %g %g %g; shared after the rewrites "
            "%.1f / %.1f MiB", vmm ? "(VMM)" : "(plain)", loaded ? " of a loaded state" : "",
            (long long)N, shA / 1048576.0,
            t_share * 1e3, t_copy * 1e3, d[0], d[1], d[2], d[3], d[4], d[5], d6,
            shP3 / 1048576.0, shA3 / 1048576.0);
    for (int i = 0; i < 6; i++) CU_ASSERT(d[i] == 0);
    CU_ASSERT(d6 == 0);
    eng_seq_free(P), eng_seq_free(B), eng_seq_free(R), eng_seq_free(C), eng_seq_free(D);
    free(ids);
}

static void b_fork_shared(void)
{
    eng_engine *en = open_cuda();
    const char *nv = getenv("SALA_CUDA_NOVMM");
    fork_scenario(en, !(nv && *nv && strcmp(nv, "0")), false);
    fork_scenario(en, !(nv && *nv && strcmp(nv, "0")), true);
    eng_engine_close(en);
}

/* Decode step t of g (SALA_CUDA_GRAPH=force: a replayed or captured CUDA graph, an error if the
 * step cannot take one; row-kernel launch mode rp (SALA_CUDA_ROW_PDL), NULL: the default) and
 * of p (SALA_CUDA_GRAPH=0: plain launches, SALA_CUDA_ROW_PDL=0), same token: |dlogit|. */
static double graph_twin_step(eng_seq *g, eng_seq *p, int32_t t, float *lg, float *lp, int64_t V,
                              const char *rp)
{
    sala_err e = {0};
    setenv("SALA_CUDA_GRAPH", "force", 1);
    if (rp) setenv("SALA_CUDA_ROW_PDL", rp, 1);
    int rc = eng_seq_decode(g, t, lg, &e);
    setenv("SALA_CUDA_GRAPH", "0", 1);
    setenv("SALA_CUDA_ROW_PDL", "0", 1);
    if (!rc) rc = eng_seq_decode(p, t, lp, &e);
    unsetenv("SALA_CUDA_GRAPH");
    unsetenv("SALA_CUDA_ROW_PDL");
    if (rc) {
        fprintf(stderr, "\n  decode: %s", e.msg);
        return INFINITY;
    }
    return max_abs_diff(lg, lp, (size_t)V);
}

/* The CUDA graph of a decode step against plain launches, bit for bit (same kernels, same
 * arguments; the position comes from device memory in the graph). Tiny model (dense_len 1024,
 * K1 windows every 16 tokens, K2 every 64): G and P (a copying fork of G) from 1000 tokens,
 * 100 steps in turn (the dense -> sparse crossing at 1023, compression windows completed at
 * many steps, two sequences' steps interleaved on one model); then G saved and loaded back (new
 * caches: a re-capture) and G regrown by a 2000-token prefill (new scratch: a re-capture) and
 * rewound to the checkpoint before that prefill, with P doing the same, 20 steps after each.
 * The row kernels' launches: the graph side in the default mode (programmatic dependent launch)
 * or plain (SALA_CUDA_ROW_PDL=0: in the first run's second half, and every other step after the
 * rewind: a re-capture each time), the plain side plain: launch order only, the same bits. */
static void b_graph(void)
{
    eng_engine *en = open_cuda();
    const int64_t V = eng_engine_config(en)->vocab_size, N = 1000;
    int32_t *ids = malloc((size_t)(N + 2400) * 4);
    float *lg = malloc((size_t)V * 4), *lp = malloc((size_t)V * 4);
    eng_rng r;
    eng_rng_seed(&r, 53);
    for (int64_t i = 0; i < N + 2400; i++)
        ids[i] = (int32_t)(3 + eng_rng_next(&r) % (uint64_t)(V - 3));
    sala_err e = {0};
    eng_seq *G = NULL, *P = NULL;
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &G, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(G, ids, N, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(fork_copy(G, &P), SALA_OK);
    double d[4] = {0, 0, 0, 0};
    for (int i = 0; i < 100; i++) {
        const double x = graph_twin_step(G, P, ids[N + i], lg, lp, V, i < 50 ? NULL : "0");
        if (!(x <= d[0])) d[0] = x;
    }
    CU_ASSERT_EQUAL_FATAL(seq_reload(en, &G), SALA_OK);
    for (int i = 0; i < 20; i++) {
        const double x = graph_twin_step(G, P, ids[N + 100 + i], lg, lp, V, NULL);
        if (!(x <= d[1])) d[1] = x;
    }
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(G, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_checkpoint(P, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(G, ids + N + 120, 2000, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(P, ids + N + 120, 2000, NULL, 0, NULL, &e), SALA_OK);
    for (int i = 0; i < 20; i++) {
        const double x = graph_twin_step(G, P, ids[N + 2120 + i], lg, lp, V, NULL);
        if (!(x <= d[2])) d[2] = x;
    }
    int64_t rg = -1, rp = -1;
    CU_ASSERT_EQUAL_FATAL(eng_seq_truncate(G, N + 120, &rg, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_truncate(P, N + 120, &rp, &e), SALA_OK);
    CU_ASSERT(rg == N + 120 && rp == N + 120);
    for (int i = 0; i < 20; i++) {
        const double x = graph_twin_step(G, P, ids[N + 2200 + i], lg, lp, V, i % 2 ? "0" : "1");
        if (!(x <= d[3])) d[3] = x;
    }
    fprintf(stderr, "\n  graph vs plain decode: max |dlogit| %g (100 steps from %lld), %g "
            "(loaded), %g (after a 2000-token prefill), %g (rewound to %lld)", d[0],
            (long long)N, d[1], d[2], d[3], (long long)(N + 120));
    for (int i = 0; i < 4; i++) CU_ASSERT(d[i] == 0);
    eng_seq_free(G), eng_seq_free(P);
    free(ids), free(lg), free(lp);
    eng_engine_close(en);
}

/* eng_seq_decode_greedy with the pick on the device (G) against eng_seq_decode and
 * engine/sampler.c on the logits row (P, a copying fork), each fed its own picks: equal tokens
 * at every step (the rows are the same bits, the rule the same). Steps through the graph and
 * with plain launches, without and with a repetition penalty over the tokens so far (each
 * twice) and the row's unpenalized pick (so the penalty moves the pick); every 13th step
 * feeds another token than the pick; then the engine's fallback (SALA_CUDA_PICK=0: the row to
 * the host, the sampler) on G. */
static void b_pick(void)
{
    eng_engine *en = open_cuda();
    const int64_t V = eng_engine_config(en)->vocab_size, N = 1000;
    int32_t *ids = malloc((size_t)N * 4), hist[3 * 160];
    float *lg = malloc((size_t)V * 4);
    eng_rng r;
    eng_rng_seed(&r, 57);
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)(3 + eng_rng_next(&r) % (uint64_t)(V - 3));
    sala_err e = {0};
    eng_seq *G = NULL, *P = NULL;
    eng_sampler *smp[2] = {NULL, NULL};
    eng_sampler_params sp = {.temperature = 0, .top_p = 1.0f, .repetition_penalty = 1.0f};
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&sp, V, &smp[0], &e), SALA_OK);
    sp.repetition_penalty = 1.4f;
    CU_ASSERT_EQUAL_FATAL(eng_sampler_new(&sp, V, &smp[1], &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_new(en, &G, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(eng_seq_prefill(G, ids, N, NULL, 0, NULL, &e), SALA_OK);
    CU_ASSERT_EQUAL_FATAL(fork_copy(G, &P), SALA_OK);
    int32_t tg = ids[N - 1], tp = tg;
    int bad = 0, nh = 0, rc = SALA_OK, moved = 0;
    for (int i = 0; i < 160 && !rc; i++) {
        const int k = i >= 80;
        sp.repetition_penalty = k ? 1.4f : 1.0f;
        if (i % 40 >= 20) setenv("SALA_CUDA_GRAPH", "0", 1);
        if (i >= 140) setenv("SALA_CUDA_PICK", "0", 1);
        if (i % 13 == 12) tg = tp = ids[i];   /* not the pick */
        rc = eng_seq_decode(P, tp, lg, &e);
        const int32_t plain = eng_sampler_sample(smp[0], lg, hist, nh);
        if (k) hist[nh++] = plain;
        tp = eng_sampler_sample(smp[k], lg, hist, nh);
        moved += tp != plain;
        if (!rc) rc = eng_seq_decode_greedy(G, tg, &sp, hist, nh, &tg, &e);
        unsetenv("SALA_CUDA_PICK");
        unsetenv("SALA_CUDA_GRAPH");
        bad += tg != tp;
        hist[nh++] = tp;
        hist[nh++] = tp;
    }
    if (rc) fprintf(stderr, "\n  decode: %s", e.msg);
    fprintf(stderr, "\n  greedy pick on the device vs the sampler on the logits: %d of 160 "
            "steps differ (the penalty moved %d of 80)", bad, moved);
    CU_ASSERT_EQUAL(rc, SALA_OK);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(moved > 0);
    sp.temperature = 0.5f;
    CU_ASSERT_EQUAL(eng_seq_decode_greedy(G, tg, &sp, NULL, 0, &tg, &e), SALA_EINVAL);
    eng_sampler_free(smp[0]), eng_sampler_free(smp[1]);
    eng_seq_free(G), eng_seq_free(P);
    free(ids), free(lg);
    eng_engine_close(en);
}

/* The fallback where VMM is off: caches in one allocation each, forks copy. */
static void b_fork_plain(void)
{
    const char *old = getenv("SALA_CUDA_NOVMM");
    char keep[64] = "";
    if (old) snprintf(keep, sizeof(keep), "%s", old);
    setenv("SALA_CUDA_NOVMM", "1", 1);
    eng_engine *en = open_cuda();
    if (old) setenv("SALA_CUDA_NOVMM", keep, 1);
    else unsetenv("SALA_CUDA_NOVMM");
    fork_scenario(en, false, false);
    const int64_t lens[3] = {5, 1100, 3000};
    batch_cmp r;
    CU_ASSERT_EQUAL(batch_compare(en, lens, 3, 4, 29, 0.1, &r), 0);
    CU_ASSERT(r.row_rel <= 1e-2);
    CU_ASSERT_EQUAL(r.tok_bad, 0);
    eng_engine_close(en);
}

void suite_cuda_batch(void)
{
    if (!getenv("SALA_TEST_CUDA")) return;
    SALA_ADD("cuda_batch", {"batched decode == single decode (6 lengths, 16 steps)", b_parity},
             {"shared fork == copied fork; copy-on-write both ways (VMM)", b_fork_shared},
             {"decode through the CUDA graph == plain launches (bit for bit)", b_graph},
             {"greedy pick on the device == sampler on the logits", b_pick},
             {"fallback without VMM: copying forks, batched decode", b_fork_plain});
}
