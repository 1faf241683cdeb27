/* cu_testops.cu: the host-pointer op table of cuda_ops.h (parity tests). Each op runs exactly
 * the kernels of the forward pass on uploaded copies of its inputs. */
#include "engine/cuda/cu_int.h"

extern "C" {
#include "engine/cuda/cuda_ops.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

/* A list of device allocations freed together. */
struct Pool {
    void *p[32];
    int n = 0;
    ~Pool() { for (int i = 0; i < n; i++) cudaFree(p[i]); }
    template <class T> T *get(size_t count, cudaError_t *err)
    {
        void *q = nullptr;
        if (*err == cudaSuccess) *err = cudaMalloc(&q, count * sizeof(T) + 16);
        if (*err == cudaSuccess) {
            p[n++] = q;
            cudaMemset(q, 0, count * sizeof(T) + 16);
        }
        return (T *)q;
    }
};

__global__ void f2b_kernel(const float *x, size_t n, bf16 *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}
__global__ void b2f_kernel(const bf16 *x, size_t n, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

/* Upload n floats as bf16. */
int up_b(Pool &P, const float *h, size_t n, bf16 **out, sala_err *e)
{
    cudaError_t err = cudaSuccess;
    float *tmp = P.get<float>(n, &err);
    bf16 *d = P.get<bf16>(n, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemcpy(tmp, h, n * 4, cudaMemcpyHostToDevice));
    f2b_kernel<<<256, 256>>>(tmp, n, d);
    CUDA_CHECK(cudaGetLastError());
    *out = d;
    return SALA_OK;
}

int up_f(Pool &P, const float *h, size_t n, float **out, sala_err *e)
{
    cudaError_t err = cudaSuccess;
    float *d = P.get<float>(n, &err);
    CUDA_CHECK(err);
    if (h) CUDA_CHECK(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
    *out = d;
    return SALA_OK;
}

int down_b(Pool &P, const bf16 *d, size_t n, float *h, sala_err *e)
{
    cudaError_t err = cudaSuccess;
    float *tmp = P.get<float>(n, &err);
    CUDA_CHECK(err);
    b2f_kernel<<<256, 256>>>(d, n, tmp);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpy(h, tmp, n * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

/* The residual stream's upload (x16: rounded to bf16) into *dx, or an empty one (h NULL). */
int up_x(Pool &P, bool x16, const float *h, size_t n, void **dx, sala_err *e)
{
    if (!x16) return up_f(P, h, n, (float **)dx, e);
    if (h) return up_b(P, h, n, (bf16 **)dx, e);
    cudaError_t err = cudaSuccess;
    *dx = P.get<bf16>(n, &err);
    CUDA_CHECK(err);
    return SALA_OK;
}

int down_x(Pool &P, bool x16, const void *dx, size_t n, float *h, sala_err *e)
{
    if (x16) return down_b(P, (const bf16 *)dx, n, h, e);
    CUDA_CHECK(cudaMemcpy(h, dx, n * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

int op_add_norm(const float *x, const float *a, float rs, const float *w, int T, int D, float eps,
                bool x16, float *x_out, float *h_out, sala_err *e)
{
    Pool P;
    void *dx;
    float *da = nullptr, *dw;
    bf16 *dh;
    cudaError_t err = cudaSuccess;
    CU_TRY(up_x(P, x16, x, (size_t)T * D, &dx, e));
    if (a) CU_TRY(up_f(P, a, (size_t)T * D, &da, e));
    CU_TRY(up_f(P, w, D, &dw, e));
    dh = P.get<bf16>((size_t)T * D, &err);
    CUDA_CHECK(err);
    if (x16) CUDA_CHECK(k_add_norm(0, (bf16 *)dx, da, rs, dw, eps, T, D, dh));
    else CUDA_CHECK(k_add_norm(0, (float *)dx, da, rs, dw, eps, T, D, dh));
    CU_TRY(down_x(P, x16, dx, (size_t)T * D, x_out, e));
    return down_b(P, dh, (size_t)T * D, h_out, e);
}

/* A model shell for the GEMMs: cuBLAS handle, cuBLASLt state and the 64 MiB workspace, on the
 * default stream (m->st 0), as model_alloc sets them up. gemm_shell_free undoes it. */
int gemm_shell(cu_model *m, sala_err *e)
{
    memset(m, 0, sizeof(*m));
    CUBLAS_CHECK(cublasCreate(&m->blas));
    CUDA_CHECK(cudaMalloc(&m->blas_ws, CU_BLAS_WS));
    CUBLAS_CHECK(cublasSetWorkspace(m->blas, m->blas_ws, CU_BLAS_WS));
    return cu_lt_new(&m->lt, e);
}
void gemm_shell_free(cu_model *m)
{
    cu_lt_free(m->lt);
    if (m->blas) cublasDestroy(m->blas);
    cudaFree(m->blas_ws);
}

enum { GEMM_F32, GEMM_ACC, GEMM_BF16, GEMM_ACC16 };
int gemm_call(cu_model *m, int kind, const bf16 *dW, int out, int in, const bf16 *dx, int T,
              float alpha, void *dy, sala_err *e)
{
    return kind == GEMM_F32 ? cu_gemm(m, dW, out, in, dx, T, (float *)dy, out, e)
           : kind == GEMM_ACC ? cu_gemm_acc(m, dW, out, in, dx, T, alpha, (float *)dy, out, e)
           : kind == GEMM_ACC16 ? cu_gemm_acc16(m, dW, out, in, dx, T, alpha, (bf16 *)dy, out, e)
                                : cu_gemm_bf16(m, dW, out, in, dx, T, (bf16 *)dy, out, e);
}

/* One GEMM of the forward pass on device operands, with a model shell of its own:
 * GEMM_F32 cu_gemm (fp32 y), GEMM_ACC cu_gemm_acc (fp32 y += alpha ...), GEMM_ACC16
 * cu_gemm_acc16 (the same into bf16 y), GEMM_BF16 cu_gemm_bf16 (bf16 y); synchronized.
 * Prefill shapes go through cu_lt_gemm's choice (SALA_CUDA_LT). */
int gemm_run(int kind, const bf16 *dW, int out, int in, const bf16 *dx, int T, float alpha,
             void *dy, sala_err *e)
{
    cu_model m;
    int rc = gemm_shell(&m, e);
    if (!rc) rc = gemm_call(&m, kind, dW, out, in, dx, T, alpha, dy, e);
    cudaError_t err = cudaDeviceSynchronize();
    gemm_shell_free(&m);
    if (rc) return rc;
    CUDA_CHECK(err);
    return SALA_OK;
}

/* y (T, out) = or += alpha · (the bf16 GEMM), y uploaded first when acc; y16: y is bf16 (acc
 * only). */
int gemm_f32(bool acc, bool y16, const float *W, int out, int in, const float *x, int T,
             float alpha, float *y, sala_err *e)
{
    Pool P;
    bf16 *dW, *dx;
    void *dy;
    CU_TRY(up_b(P, W, (size_t)out * in, &dW, e));
    CU_TRY(up_b(P, x, (size_t)T * in, &dx, e));
    CU_TRY(up_x(P, y16, acc ? y : nullptr, (size_t)T * out, &dy, e));
    CU_TRY(gemm_run(!acc ? GEMM_F32 : y16 ? GEMM_ACC16 : GEMM_ACC, dW, out, in, dx, T, alpha, dy,
                    e));
    return down_x(P, y16, dy, (size_t)T * out, y, e);
}

int op_gemm(const float *W, int out, int in, const float *x, int T, float *y, sala_err *e)
{
    return gemm_f32(false, false, W, out, in, x, T, 1.0f, y, e);
}

int op_swiglu(const float *gu, int T, int I, float *out, sala_err *e)
{
    Pool P;
    float *dg;
    cudaError_t err = cudaSuccess;
    CU_TRY(up_f(P, gu, (size_t)T * 2 * I, &dg, e));
    bf16 *dout = P.get<bf16>((size_t)T * I, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(k_swiglu(0, dg, T, I, dout));
    return down_b(P, dout, (size_t)T * I, out, e);
}

int op_lightning(int T, int nh, int d, int64_t p0, double theta, float eps, const float *proj,
                 const float *qn, const float *kn, const float *on, float *S, float *out,
                 float *o_raw, bool proj16, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    CUDA_CHECK(cu_kernels_init());   /* the sm_90a probe (cu_la_fused), as at load */
    la_args a;
    memset(&a, 0, sizeof(a));
    const int nd = nh * d;
    const int Tp = T == 1 ? 1 : (T + CU_LA_C - 1) / CU_LA_C * CU_LA_C, nch = (Tp + CU_LA_C - 1) / CU_LA_C;
    if (proj16 && (T == 1 || !cu_la_proj16(d)))
        return sala_errf(e, SALA_EINVAL, "lightning op: bf16 proj needs the tensor-core prefill "
                         "(T %d, d %d)", T, d);
    float *dproj = NULL, *dqn, *dkn, *don, *dS, *dinv, *ddec;
    bf16 *dproj16 = NULL;
    if (proj16)
        CU_TRY(up_b(P, proj, (size_t)T * 4 * nd, &dproj16, e));
    else
        CU_TRY(up_f(P, proj, (size_t)T * 4 * nd, &dproj, e));
    CU_TRY(up_f(P, qn, d, &dqn, e));
    CU_TRY(up_f(P, kn, d, &dkn, e));
    CU_TRY(up_f(P, on, nd, &don, e));
    CU_TRY(up_f(P, S, (size_t)nh * d * d, &dS, e));
    float inv[1024], slope[1024];
    float *dec = (float *)malloc((size_t)nh * (CU_LA_C + 1) * 4);
    if (!dec || nh > 1024 || d > 2048) {
        free(dec);
        return sala_errf(e, SALA_EINVAL, "lightning op: nh %d / d %d too large", nh, d);
    }
    for (int i = 0; i < d / 2; i++) inv[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)d);
    eng_alibi_slopes(slope, nh);
    for (int n = 0; n < nh; n++)
        for (int x = 0; x <= CU_LA_C; x++)
            dec[n * (CU_LA_C + 1) + x] = (float)exp(-(double)slope[n] * x);
    int rc = up_f(P, inv, d / 2, &dinv, e);
    if (!rc) rc = up_f(P, dec, (size_t)nh * (CU_LA_C + 1), &ddec, e);
    free(dec);
    if (rc) return rc;
    a.proj = dproj;
    a.proj16 = dproj16;
    a.ld = 4 * nd;
    a.T = T;
    a.Tp = Tp;
    a.nh = nh;
    a.d = d;
    a.p0 = p0;
    a.qn = dqn, a.kn = dkn, a.on = don, a.inv_freq = dinv, a.dec = ddec;
    a.eps = eps;
    a.scale = (float)(1.0 / sqrt((double)d));
    float **bufs[] = {&a.Qh, &a.Qd, &a.Kh, &a.Kw, &a.Vh, &a.Oh};
    for (int i = 0; i < 6; i++) *bufs[i] = P.get<float>((size_t)nh * Tp * d, &err);
    a.Sb = P.get<float>((size_t)nh * nch * d * d, &err);
    a.Ab = P.get<float>((size_t)nh * nch * CU_LA_C * CU_LA_C, &err);
    bf16 *dout = P.get<bf16>((size_t)T * nd, &err);
    CUDA_CHECK(err);
    a.S = dS;
    if (T == 1 && cu_la_decode_fused(&a)) {   /* the graph form: p0 from device memory, a wrong
                                                 value in a.p0 */
        int64_t *dp = P.get<int64_t>(1, &err);
        CUDA_CHECK(err);
        CUDA_CHECK(cudaMemcpy(dp, &p0, 8, cudaMemcpyHostToDevice));
        a.p0d = dp;
        a.p0 = p0 + 977;
    }
    if (T == 1) {
        CUDA_CHECK(k_la_prep(0, &a));
        CUDA_CHECK(k_la_step(0, &a));
    } else {
        cublasHandle_t h;
        CUBLAS_CHECK(cublasCreate(&h));
        rc = cu_lightning_prefill(h, 0, &a, CUBLAS_COMPUTE_32F, e);
        cudaDeviceSynchronize();
        cublasDestroy(h);
        if (rc) return rc;
    }
    CUDA_CHECK(k_la_out(0, &a, dout));
    CUDA_CHECK(cudaMemcpy(S, dS, (size_t)nh * d * d * 4, cudaMemcpyDeviceToHost));
    if (o_raw) {   /* Oh (nh, Tp, d) -> scale · O (T, nh d); o16: bf16(scale O) already */
        const size_t no = (size_t)nh * Tp * d;
        float *h = (float *)malloc(no * 4);
        if (!h) return sala_errf(e, SALA_ENOMEM, "lightning op: out of memory");
        if (a.o16) {
            const int rc = down_b(P, (const bf16 *)a.Oh, no, h, e);
            if (rc) {
                free(h);
                return rc;
            }
        } else if (cudaMemcpy(h, a.Oh, no * 4, cudaMemcpyDeviceToHost) != cudaSuccess) {
            free(h);
            return sala_errf(e, SALA_EINTERNAL, "lightning op: copy of O failed");
        }
        const float sc = a.o16 ? 1.0f : a.scale;
        for (int t = 0; t < T; t++)
            for (int n = 0; n < nh; n++)
                for (int j = 0; j < d; j++)
                    o_raw[((size_t)t * nh + n) * d + j] = sc * h[((size_t)n * Tp + t) * d + j];
        free(h);
    }
    return down_b(P, dout, (size_t)T * nd, out, e);
}

int op_attention(const float *Q, const float *K, const float *V, int64_t L, int64_t p0, int T,
                 int nh, int nkv, int d, const int32_t *sel, int Ksel, float *out, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    bf16 *dQ, *dK, *dV;
    float *dO;
    int32_t *dsel = nullptr;
    CU_TRY(up_b(P, Q, (size_t)T * nh * d, &dQ, e));
    CU_TRY(up_b(P, K, (size_t)L * nkv * d, &dK, e));
    CU_TRY(up_b(P, V, (size_t)L * nkv * d, &dV, e));
    CU_TRY(up_f(P, nullptr, (size_t)T * nh * d, &dO, e));
    if (sel) {
        dsel = P.get<int32_t>((size_t)T * nkv * Ksel, &err);
        CUDA_CHECK(err);
        CUDA_CHECK(cudaMemcpy(dsel, sel, (size_t)T * nkv * Ksel * 4, cudaMemcpyHostToDevice));
    }
    CUDA_CHECK(cu_kernels_init());
    attn_args a = {dQ, dK, dV, dO, dsel, Ksel, p0, 0, T, nh, nkv, d, CU_KT,
                   (float)(1.0 / sqrt((double)d)), NULL, 0};
    if (sel && T > CU_SPLIT_MAXQ) {   /* the band form's state, as the forward's prefill gives
                                         it (fewer queries: the split kernels' own scratch), and
                                         room for the persistent streams' counts after it */
        a.part_cap = (size_t)T * nh * (d + 2) + 1024;
        a.part = P.get<float>(a.part_cap, &err);
        CUDA_CHECK(err);
    }
    CUDA_CHECK(sel ? k_attn_sparse(0, &a) : k_attn_dense(0, &a));
    CUDA_CHECK(cudaMemcpy(out, dO, (size_t)T * nh * d * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

int64_t nw(int64_t L, int64_t k, int64_t s) { return L < k ? 0 : (L - k) / s + 1; }

int op_compress(const float *K, int64_t L, int nkv, int d, int k1, int s1, float *K1, float *K2,
                sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    bf16 *dK;
    const int row = nkv * d;
    const int64_t n1 = nw(L, k1, s1), n2 = nw(L, 4 * k1, 4 * s1);
    CU_TRY(up_b(P, K, (size_t)L * row, &dK, e));
    bf16 *d1 = P.get<bf16>((size_t)(n1 + 1) * row, &err), *d2 = P.get<bf16>((size_t)(n2 + 1) * row, &err);
    CUDA_CHECK(err);
    const int64_t La = L / 3, a1 = nw(La, k1, s1), a2 = nw(La, 4 * k1, 4 * s1);
    CUDA_CHECK(k_compress(0, dK, row, 0, a1, k1, s1, d1));
    CUDA_CHECK(k_compress(0, dK, row, 0, a2, 4 * k1, 4 * s1, d2));
    CUDA_CHECK(k_compress(0, dK, row, a1, n1, k1, s1, d1));
    CUDA_CHECK(k_compress(0, dK, row, a2, n2, 4 * k1, 4 * s1, d2));
    CU_TRY(down_b(P, d1, (size_t)n1 * row, K1, e));
    return down_b(P, d2, (size_t)n2 * row, K2, e);
}

int op_select(const float *Q, int64_t p0, int T, int nh, int nkv, int d, const float *K1,
              int64_t n1, const float *K2, int64_t n2, const eng_sparse_config *sc, int32_t *sel,
              sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    bf16 *dQ, *d1, *d2;
    const int Kq = (int)(sc->topk + sc->window_size / sc->block_size);
    const int64_t nbs = (p0 + T - 1) / sc->block_size + 1;
    CU_TRY(up_b(P, Q, (size_t)T * nh * d, &dQ, e));
    CU_TRY(up_b(P, K1, (size_t)(n1 + 1) * nkv * d, &d1, e));
    CU_TRY(up_b(P, K2, (size_t)(n2 + 1) * nkv * d, &d2, e));
    float *score = P.get<float>((size_t)T * nkv * nbs, &err);
    int32_t *dsel = P.get<int32_t>((size_t)T * nkv * Kq, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cu_kernels_init());
    const float scale = (float)(1.0 / sqrt((double)d));
    score_args sa = {dQ, d1, d2, n1, n2, score, (int)nbs, p0, 0, T, nh, nkv, d,
                     (int)sc->kernel_size, (int)sc->kernel_stride, (int)sc->block_size, scale,
                     (int)(sc->window_size / sc->block_size), Kq};
    CUDA_CHECK(k_score(0, &sa));
    topk_args ta = {score, (int)nbs, dsel, Kq, p0, 0, T, nkv, (int)sc->block_size,
                    (int)sc->init_blocks, (int)(sc->window_size / sc->block_size)};
    CUDA_CHECK(k_topk(0, &ta));
    CUDA_CHECK(cudaMemcpy(sel, dsel, (size_t)T * nkv * Kq * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

int op_gate(const float *o, const float *proj, int ld, int zoff, int T, int W, bool proj16,
            float *out, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    float *dobuf;
    void *dproj;
    CU_TRY(up_f(P, o, (size_t)T * W, &dobuf, e));
    CU_TRY(up_x(P, proj16, proj, (size_t)T * ld, &dproj, e));
    bf16 *dout = P.get<bf16>((size_t)T * W, &err);
    CUDA_CHECK(err);
    if (proj16) CUDA_CHECK(k_gate(0, dobuf, (const bf16 *)dproj, ld, zoff, T, W, dout));
    else CUDA_CHECK(k_gate(0, dobuf, (const float *)dproj, ld, zoff, T, W, dout));
    return down_b(P, dout, (size_t)T * W, out, e);
}

int op_norm_rows(const float *x, int64_t xrows, const int32_t *rows, int n, int D, const float *w,
                 float eps, float scale, bool x16, float *out, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    void *dx;
    float *dw;
    CU_TRY(up_x(P, x16, x, (size_t)xrows * D, &dx, e));
    CU_TRY(up_f(P, w, D, &dw, e));
    int32_t *drows = P.get<int32_t>((size_t)n, &err);
    bf16 *dout = P.get<bf16>((size_t)n * D, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemcpy(drows, rows, (size_t)n * 4, cudaMemcpyHostToDevice));
    if (x16) CUDA_CHECK(k_norm_rows(0, (const bf16 *)dx, drows, n, D, dw, eps, scale, dout));
    else CUDA_CHECK(k_norm_rows(0, (const float *)dx, drows, n, D, dw, eps, scale, dout));
    return down_b(P, dout, (size_t)n * D, out, e);
}

int op_sparse_prep(const float *proj, int ld, int T, int nh, int nkv, int d, int64_t p0,
                   bool proj16, float *Qb, float *Kc, float *Vc, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    void *dproj;
    const size_t nk = (size_t)nkv * d, L = (size_t)p0 + T;
    CU_TRY(up_x(P, proj16, proj, (size_t)T * ld, &dproj, e));
    bf16 *dq = P.get<bf16>((size_t)T * nh * d, &err), *dk = P.get<bf16>(L * nk, &err),
         *dv = P.get<bf16>(L * nk, &err);
    CUDA_CHECK(err);
    if (T == 1) {   /* decode: the graph form, p0 from device memory (a wrong value passed) */
        int64_t *dp = P.get<int64_t>(1, &err);
        CUDA_CHECK(err);
        CUDA_CHECK(cudaMemcpy(dp, &p0, 8, cudaMemcpyHostToDevice));
        CUDA_CHECK(k_sparse_prep(0, (const float *)dproj, ld, T, nh, nkv, d, dq, dk, dv,
                                 p0 + 977, dp));
    } else if (proj16) {
        CUDA_CHECK(k_sparse_prep(0, (const bf16 *)dproj, ld, T, nh, nkv, d, dq, dk, dv, p0, NULL));
    } else {
        CUDA_CHECK(k_sparse_prep(0, (const float *)dproj, ld, T, nh, nkv, d, dq, dk, dv, p0, NULL));
    }
    CU_TRY(down_b(P, dq, (size_t)T * nh * d, Qb, e));
    CU_TRY(down_b(P, dk, L * nk, Kc, e));
    return down_b(P, dv, L * nk, Vc, e);
}

int op_embed(const float *E, int64_t V, const int32_t *tok, int T, int D, float scale, bool x16,
             float *x, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    bf16 *dE;
    void *dx;
    CU_TRY(up_b(P, E, (size_t)V * D, &dE, e));
    CU_TRY(up_x(P, x16, nullptr, (size_t)T * D, &dx, e));
    int32_t *dtok = P.get<int32_t>((size_t)T, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemcpy(dtok, tok, (size_t)T * 4, cudaMemcpyHostToDevice));
    if (x16) CUDA_CHECK(k_embed(0, dE, dtok, T, D, scale, (bf16 *)dx));
    else CUDA_CHECK(k_embed(0, dE, dtok, T, D, scale, (float *)dx));
    return down_x(P, x16, dx, (size_t)T * D, x, e);
}

int op_gemm_acc(const float *W, int out, int in, const float *x, int T, float alpha, bool y16,
                float *y, sala_err *e)
{
    return gemm_f32(true, y16, W, out, in, x, T, alpha, y, e);
}

int op_mlp_gu(const float *W, int I, int in, const float *x, int T, float *out, int *fused,
              sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    CUDA_CHECK(cu_kernels_init());   /* the sm_90a probe and gemm90's SM count, as at load */
    bf16 *dW, *dx;
    CU_TRY(up_b(P, W, (size_t)2 * I * in, &dW, e));
    CU_TRY(up_b(P, x, (size_t)T * in, &dx, e));
    bf16 *dout = P.get<bf16>((size_t)T * I, &err);
    CUDA_CHECK(err);
    *fused = cu_gu_fused_fits(dW, I, in, dx, T, dout);
    if (*fused) {   /* the forward pass's choice for a prefill step (mlp in cu_forward.cu) */
        CUDA_CHECK(k_gu_swiglu(0, dW, I, in, dx, T, dout));
        CUDA_CHECK(cudaDeviceSynchronize());
    } else {
        bf16 *dgu = P.get<bf16>((size_t)T * 2 * I, &err);
        CUDA_CHECK(err);
        CU_TRY(gemm_run(GEMM_BF16, dW, 2 * I, in, dx, T, 1.0f, dgu, e));
        CUDA_CHECK(k_swiglu_bf16(0, dgu, T, I, dout));
    }
    return down_b(P, dout, (size_t)T * I, out, e);
}

__global__ void fill_kernel(bf16 *x, size_t n, uint32_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        x[i] = __float2bfloat16(((float)(h & 0xffff) - 32768.0f) / 32768.0f);
    }
}

/* Seconds a call of the GEMM form kind (out, in, T) takes, averaged over reps calls after the
 * first (which tunes the shape): with SALA_CUDA_LT=0 (sec_ex) and with the timed choice
 * (sec_lt); *lt_won: the shape's tuning picked cuBLASLt. Operands: hashed values in [-1, 1). */
int op_gemm_speed(int kind, int out, int in, int T, int reps, double *sec_ex, double *sec_lt,
                  int *lt_won, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    const size_t ysz = kind == GEMM_BF16 ? 2 : 4;
    bf16 *dW = P.get<bf16>((size_t)out * in, &err), *dx = P.get<bf16>((size_t)T * in, &err);
    char *dy = P.get<char>((size_t)T * out * ysz, &err);
    CUDA_CHECK(err);
    fill_kernel<<<1024, 256>>>(dW, (size_t)out * in, 1u);
    fill_kernel<<<1024, 256>>>(dx, (size_t)T * in, 2u);
    CUDA_CHECK(cudaGetLastError());
    cu_model m;
    int rc = gemm_shell(&m, e);
    cudaEvent_t a = NULL, b = NULL;
    const char *old = getenv("SALA_CUDA_LT");
    char *keep = old ? strdup(old) : NULL;
    double *sec[2] = {sec_ex, sec_lt};
    if (!rc && (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess))
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: events");
    for (int pass = 0; pass < 2 && !rc; pass++) {
        setenv("SALA_CUDA_LT", pass ? "1" : "0", 1);
        rc = gemm_call(&m, kind, dW, out, in, dx, T, 0.5f, dy, e);   /* tunes (pass 1) */
        cudaEventRecord(a, 0);
        for (int r = 0; r < reps && !rc; r++)
            rc = gemm_call(&m, kind, dW, out, in, dx, T, 0.5f, dy, e);
        cudaEventRecord(b, 0);
        float ms = 0;
        if (!rc && (cudaEventSynchronize(b) != cudaSuccess ||
                    cudaEventElapsedTime(&ms, a, b) != cudaSuccess))
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: timing: %s",
                           cudaGetErrorString(cudaGetLastError()));
        *sec[pass] = ms * 1e-3 / reps;
    }
    if (keep) setenv("SALA_CUDA_LT", keep, 1);
    else unsetenv("SALA_CUDA_LT");
    free(keep);
    cu_lt_stat st;
    *lt_won = cu_lt_stats(&m, 0, &st) && st.wins;
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    gemm_shell_free(&m);
    return rc;
}

/* Seconds a stage-1 launch (k_score, its split launches included) and a top-K launch (k_topk)
 * take for T queries at positions L - T .. L - 1 of the model's sparse shape (32 q heads, 2 kv
 * groups, d = 128, K1 32/16, K2 128/64, 96 blocks of 64 with 32 local), averaged over reps rounds
 * of `layers` launches, each layer with its own K1/K2 (hashed values in [-1, 1)), so that with
 * enough layers a launch reads its keys from HBM as a decode step does. The environment switches
 * (SALA_CUDA_SCORE, SALA_CUDA_TOPK, ...) apply as in the forward pass. */
int op_select_speed(int64_t L, int T, int layers, int reps, double *sec_score, double *sec_topk,
                    sala_err *e)
{
    const int nh = 32, nkv = 2, d = 128, K = 96;
    if (T < 1 || L < T || L > ((int64_t)1 << 26) || layers < 1 || layers > 12 || reps < 1)
        return sala_errf(e, SALA_EINVAL, "select_speed: bad shape L=%lld T=%d layers=%d",
                         (long long)L, T, layers);
    Pool P;
    cudaError_t err = cudaSuccess;
    const int64_t n1 = nw(L, 32, 16), n2 = nw(L, 128, 64), nbs = (L - 1) / 64 + 1;
    const size_t row = (size_t)nkv * d;
    bf16 *dQ = P.get<bf16>((size_t)T * nh * d, &err), *K1[12], *K2[12];
    for (int l = 0; l < layers; l++) {
        K1[l] = P.get<bf16>((size_t)(n1 + 1) * row, &err);
        K2[l] = P.get<bf16>((size_t)(n2 + 1) * row, &err);
    }
    float *score = P.get<float>((size_t)T * nkv * nbs, &err);
    int32_t *dsel = P.get<int32_t>((size_t)T * nkv * K, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cu_kernels_init());
    fill_kernel<<<1024, 256>>>(dQ, (size_t)T * nh * d, 7u);
    for (int l = 0; l < layers; l++) {
        fill_kernel<<<1024, 256>>>(K1[l], (size_t)n1 * row, 11u + l);
        fill_kernel<<<1024, 256>>>(K2[l], (size_t)n2 * row, 31u + l);
    }
    CUDA_CHECK(cudaGetLastError());
    const float scale = (float)(1.0 / sqrt((double)d));
    score_args sa = {dQ, nullptr, nullptr, n1, n2, score, (int)nbs, L - T, 0, T, nh, nkv, d,
                     32, 16, 64, scale, 32, K};
    topk_args ta = {score, (int)nbs, dsel, K, L - T, 0, T, nkv, 64, 1, 32};
    cudaEvent_t ev[3];
    for (int i = 0; i < 3; i++) CUDA_CHECK(cudaEventCreate(&ev[i]));
    int rc = SALA_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {           /* pass 0: warm-up */
        const int n = pass ? reps : 1;
        err = cudaEventRecord(ev[0], 0);
        for (int r = 0; r < n && !err; r++)
            for (int l = 0; l < layers && !err; l++) {
                sa.K1 = K1[l], sa.K2 = K2[l];
                err = k_score(0, &sa);
            }
        if (!err) err = cudaEventRecord(ev[1], 0);
        for (int r = 0; r < n && !err; r++)
            for (int l = 0; l < layers && !err; l++) err = k_topk(0, &ta);
        if (!err) err = cudaEventRecord(ev[2], 0);
        if (!err) err = cudaEventSynchronize(ev[2]);
        float m1 = 0, m2 = 0;
        if (!err) err = cudaEventElapsedTime(&m1, ev[0], ev[1]);
        if (!err) err = cudaEventElapsedTime(&m2, ev[1], ev[2]);
        if (err) rc = sala_errf(e, SALA_EINTERNAL, "select_speed: %s", cudaGetErrorString(err));
        *sec_score = m1 * 1e-3 / ((double)n * layers);
        *sec_topk = m2 * 1e-3 / ((double)n * layers);
    }
    for (int i = 0; i < 3; i++) cudaEventDestroy(ev[i]);
    return rc;
}

/* Stage-1 scores of two variants on the same inputs: SALA_CUDA_SCORE = va, then vb ("" unsets
 * it; the caller's value is restored), T queries at positions L - T .. L - 1 of the model's
 * sparse shape (32 q heads, 2 kv groups, d = 128, K1 32/16, K2 128/64, blocks of 64) on hashed
 * keys, local / Ksel as in score_args. Every score slot starts as NaN; a slot counts as bad when
 * one variant wrote it and the other did not, or |a - b| > tol max(|a|, |b|). *max_rel: the
 * largest relative difference over slots both wrote (equal values, infinities too: 0); *nbad;
 * where: the first bad slot (t, g, b, a, b). */
int op_score_diff(int64_t L, int T, int local, int Ksel, const char *va, const char *vb,
                  double tol, double *max_rel, int64_t *nbad, char *where, size_t wlen,
                  sala_err *e)
{
    const int nh = 32, nkv = 2, d = 128;
    if (T < 1 || L < T || L > ((int64_t)1 << 22) || (int64_t)T * ((L - 1) / 64 + 1) > (1 << 26))
        return sala_errf(e, SALA_EINVAL, "score_diff: bad shape L=%lld T=%d", (long long)L, T);
    Pool P;
    cudaError_t err = cudaSuccess;
    const int64_t n1 = nw(L, 32, 16), n2 = nw(L, 128, 64), nbs = (L - 1) / 64 + 1;
    const size_t row = (size_t)nkv * d, ns = (size_t)T * nkv * nbs;
    bf16 *dQ = P.get<bf16>((size_t)T * nh * d, &err);
    bf16 *K1 = P.get<bf16>((size_t)(n1 + 1) * row, &err), *K2 = P.get<bf16>((size_t)(n2 + 1) * row, &err);
    float *sc[2] = {P.get<float>(ns, &err), P.get<float>(ns, &err)};
    CUDA_CHECK(err);
    CUDA_CHECK(cu_kernels_init());
    fill_kernel<<<1024, 256>>>(dQ, (size_t)T * nh * d, 7u);
    fill_kernel<<<1024, 256>>>(K1, (size_t)n1 * row, 11u);
    fill_kernel<<<1024, 256>>>(K2, (size_t)n2 * row, 31u);
    CUDA_CHECK(cudaGetLastError());
    const float scale = (float)(1.0 / sqrt((double)d));
    score_args sa = {dQ, K1, K2, n1, n2, nullptr, (int)nbs, L - T, 0, T, nh, nkv, d,
                     32, 16, 64, scale, local, Ksel};
    const char *old = getenv("SALA_CUDA_SCORE");
    char keep[64];
    snprintf(keep, sizeof(keep), "%s", old ? old : "");
    const char *var[2] = {va, vb};
    for (int v = 0; v < 2 && !err; v++) {
        if (var[v] && *var[v]) setenv("SALA_CUDA_SCORE", var[v], 1);
        else unsetenv("SALA_CUDA_SCORE");
        sa.score = sc[v];
        err = cudaMemset(sc[v], 0xff, ns * 4);               /* NaN: not written */
        if (!err) err = k_score(0, &sa);
        if (!err) err = cudaDeviceSynchronize();
    }
    if (old) setenv("SALA_CUDA_SCORE", keep, 1);
    else unsetenv("SALA_CUDA_SCORE");
    CUDA_CHECK(err);
    float *h = (float *)malloc(ns * 2 * sizeof(float));
    if (!h) return sala_errf(e, SALA_ENOMEM, "score_diff: no host memory");
    err = cudaMemcpy(h, sc[0], ns * 4, cudaMemcpyDeviceToHost);
    if (!err) err = cudaMemcpy(h + ns, sc[1], ns * 4, cudaMemcpyDeviceToHost);
    if (err) {
        free(h);
        CUDA_CHECK(err);
    }
    *max_rel = 0.0;
    *nbad = 0;
    if (wlen) where[0] = 0;
    for (size_t i = 0; i < ns; i++) {
        const float x = h[i], y = h[ns + i];
        bool bad;
        if (isnan(x) || isnan(y)) {
            bad = isnan(x) != isnan(y);
        } else if (x == y) {
            bad = false;
        } else {
            const double m = fmax(fabs((double)x), fabs((double)y));
            const double r = isinf(x) || isinf(y) ? INFINITY : fabs((double)x - (double)y) / m;
            if (r > *max_rel) *max_rel = r;
            bad = r > tol;
        }
        if (bad && (*nbad)++ == 0 && wlen)
            snprintf(where, wlen, "t=%lld g=%lld b=%lld: %g vs %g", (long long)(i / (nkv * nbs)),
                     (long long)(i / nbs % nkv), (long long)(i % nbs), x, y);
    }
    free(h);
    return SALA_OK;
}

/* The GEMV (cu_gemv.cu) itself, whatever SALA_CUDA_GEMV says: y (T, ldy) host fp32 in and out;
 * forms CU_GEMV_BF16 and _SWIGLU (out = 2I rows, y (T, ldy >= I)) upload y as bf16 and return
 * its bf16 values. variant < 0: cu_gemv_pick. */
int op_gemv(const float *W, int out, int in, const float *x, int T, int form, float alpha,
            int variant, float *y, int ldy, sala_err *e)
{
    Pool P;
    bf16 *dW, *dx;
    void *dy;
    const size_t ny = (size_t)T * ldy;
    CU_TRY(up_b(P, W, (size_t)out * in, &dW, e));
    CU_TRY(up_b(P, x, (size_t)T * in, &dx, e));
    const bool b16 = form == CU_GEMV_BF16 || form == CU_GEMV_SWIGLU;
    if (b16) CU_TRY(up_b(P, y, ny, (bf16 **)&dy, e));
    else CU_TRY(up_f(P, y, ny, (float **)&dy, e));
    if (!cu_gemv_fits(dW, in, dx, in, T))
        return sala_errf(e, SALA_EINVAL, "gemv: operands do not fit (in %d, T %d)", in, T);
    const cu_gemv_args a = {dW, out, in, dx, in, T, dy, ldy, alpha, form,
                            variant < 0 ? cu_gemv_pick(out, in, T) : variant};
    CUDA_CHECK(k_gemv(0, &a));
    CUDA_CHECK(cudaDeviceSynchronize());
    if (b16) return down_b(P, (const bf16 *)dy, ny, y, e);
    CUDA_CHECK(cudaMemcpy(y, dy, ny * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

/* Microseconds a call of y (T, out) fp32 = x Wᵀ takes, weights from HBM (calls rotate over
 * copies of W totalling >= 400 MB), slots of cuda_ops.h gemv_speed. */
int op_gemv_speed(int out, int in, int T, double *us, int nus, int *nvar, sala_err *e)
{
    const int nv = cu_gemv_variants();
    *nvar = nv;
    if (out <= 0 || in <= 0) return SALA_OK;   /* the count only */
    if (nus < nv + 4) return sala_errf(e, SALA_EINVAL, "gemv_speed: %d slots, need %d", nus, nv + 4);
    for (int i = 0; i < nus; i++) us[i] = -1;
    Pool P;
    cudaError_t err = cudaSuccess;
    const size_t wb = (size_t)out * in * 2;
    int ncopy = (int)(((size_t)400 << 20) / wb + 1);
    if (ncopy < 2) ncopy = 2;
    if (ncopy > 16) ncopy = 16;
    const int reps = ncopy * (ncopy >= 8 ? 3 : 24 / ncopy);
    bf16 *W[16];
    for (int k = 0; k < ncopy; k++) W[k] = P.get<bf16>((size_t)out * in, &err);
    bf16 *dx = P.get<bf16>((size_t)T * in, &err);
    float *dy = P.get<float>((size_t)T * out, &err);
    uint32_t *sink = P.get<uint32_t>(1, &err);
    CUDA_CHECK(err);
    for (int k = 0; k < ncopy; k++) fill_kernel<<<1024, 256>>>(W[k], (size_t)out * in, 1u + k);
    fill_kernel<<<1024, 256>>>(dx, (size_t)T * in, 99u);
    CUDA_CHECK(cudaGetLastError());
    int sms = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    cu_model m;
    int rc = gemm_shell(&m, e);
    cudaEvent_t a = NULL, b = NULL;
    if (!rc && (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess))
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: events");
    /* us a call of fn(k) over reps calls after a pass over the copies */
    auto timed = [&](auto fn) -> double {
        for (int k = 0; k < ncopy; k++) if (fn(k)) return -1;
        cudaEventRecord(a, 0);
        for (int k = 0; k < reps; k++) if (fn(k)) return -1;
        cudaEventRecord(b, 0);
        float ms = 0;
        if (cudaEventSynchronize(b) != cudaSuccess || cudaEventElapsedTime(&ms, a, b) != cudaSuccess)
            return -1;
        return ms * 1e3 / reps;
    };
    const float one = 1.0f, zero = 0.0f;
    if (!rc) us[0] = timed([&](int k) {
        return (int)cublasGemmEx(m.blas, CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &one,
                                 W[k % ncopy], CUDA_R_16BF, in, dx, CUDA_R_16BF, in, &zero, dy,
                                 CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
    if (!rc) {
        float ms = -1;
        int nc = 0;
        rc = cu_lt_bench(&m, W, ncopy, out, in, dx, T, dy, reps, &ms, &nc, e);
        us[1] = ms < 0 ? -1 : ms * 1e3;
    }
    const char *old = getenv("SALA_CUDA_GEMV_PDL");
    char *keep = old ? strdup(old) : NULL;
    for (int v = 0; v <= nv && !rc; v++) {
        if (v == nv) setenv("SALA_CUDA_GEMV_PDL", "0", 1);
        const cu_gemv_args ga0 = {W[0], out, in, dx, in, T, dy, out, 1.0f, CU_GEMV_F32,
                                  v < nv ? v : cu_gemv_pick(out, in, T)};
        us[2 + v] = timed([&](int k) {
            cu_gemv_args ga = ga0;
            ga.W = W[k % ncopy];
            return (int)k_gemv(0, &ga);
        });
    }
    if (keep) setenv("SALA_CUDA_GEMV_PDL", keep, 1);
    else unsetenv("SALA_CUDA_GEMV_PDL");
    free(keep);
    if (!rc) us[3 + nv] = timed([&](int k) {
        return (int)k_read_floor(0, W[k % ncopy], wb, sink, sms);
    });
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    gemm_shell_free(&m);
    CU_TRY(rc);
    CUDA_CHECK(cudaDeviceSynchronize());
    return SALA_OK;
}

/* The greedy pick (cu_pick.cu) as a decode step runs it: stale[0..nstale) marked with stamp 1
 * first (an earlier step's marks, which must not count), then ids[0..n) with stamp 2. */
int op_pick(const float *logits, int V, float pen, const int32_t *ids, int64_t n,
            const int32_t *stale, int64_t nstale, int32_t *out, sala_err *e)
{
    Pool P;
    cudaError_t err = cudaSuccess;
    float *dl = P.get<float>((size_t)V, &err);
    int32_t *mark = P.get<int32_t>((size_t)V, &err);   /* zeroed */
    int32_t *dids = P.get<int32_t>((size_t)(n > nstale ? n : nstale) + 1, &err);
    int32_t *dout = P.get<int32_t>(1, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemcpy(dl, logits, (size_t)V * 4, cudaMemcpyHostToDevice));
    if (nstale) {
        CUDA_CHECK(cudaMemcpy(dids, stale, (size_t)nstale * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(k_pick_mark(0, dids, nstale, V, mark, 1));
    }
    if (n) {
        CUDA_CHECK(cudaMemcpy(dids, ids, (size_t)n * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(k_pick_mark(0, dids, n, V, mark, 2));
    }
    CUDA_CHECK(k_pick(0, dl, V, pen, mark, 2, dout));
    CUDA_CHECK(cudaMemcpy(out, dout, 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

int op_topk(const float *score, int nbs, int64_t p0, int T, int nkv, int K, int block, int init,
            int local, int32_t *sel, sala_err *e)
{
    if (T <= 0 || nkv <= 0 || K <= 0 || nbs <= 0 || block <= 0 || (p0 + T - 1) / block >= nbs)
        return sala_errf(e, SALA_EINVAL, "topk: bad shape T=%d nkv=%d K=%d nbs=%d", T, nkv, K,
                         nbs);
    Pool P;
    cudaError_t err = cudaSuccess;
    const size_t ns = (size_t)T * nkv * nbs, no = (size_t)T * nkv * K;
    float *ds = P.get<float>(ns, &err);
    int32_t *dsel = P.get<int32_t>(no, &err);
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemcpy(ds, score, ns * 4, cudaMemcpyHostToDevice));
    const topk_args ta = {ds, nbs, dsel, K, p0, 0, T, nkv, block, init, local};
    CUDA_CHECK(k_topk(0, &ta));
    CUDA_CHECK(cudaMemcpy(sel, dsel, no * 4, cudaMemcpyDeviceToHost));
    return SALA_OK;
}

/* After the kernels' setup, whose probe decides it (a test may ask before any op ran). */
int op_sm90a(void) { return cu_kernels_init() == cudaSuccess && cu_sm90a(); }

long op_attn_pers_launches(void) { return cu_attn_pers_launches(); }

int op_la_fused(int d) { return op_sm90a() && cu_la_fused(d); }

const sala_cuda_ops ops = {op_add_norm,  op_gemm,    op_swiglu,      op_lightning,
                           op_attention, op_compress, op_select,     op_gate,
                           op_norm_rows, op_sparse_prep, op_embed,   op_gemm_acc,
                           op_mlp_gu,    op_gemm_speed, op_select_speed, op_gemv,
                           op_gemv_speed, op_score_diff, op_pick,  op_topk,
                           op_sm90a,     op_attn_pers_launches, op_la_fused};

}   // namespace

extern "C" __attribute__((visibility("default"))) const sala_cuda_ops *sala_cuda_ops_get(void)
{
    return &ops;
}
