/* cu_forward.cu: the CUDA forward pass over one sequence (SALA-SPEC §3.1, §3.9), op for op the
 * twin of engine/cpu/forward.c. A call is processed in steps of at most CU_CHUNK tokens:
 * activations exist for one step, the sparse K/V and compressed keys grow in device buffers and
 * the lightning states stay on the device. Logits are computed only for the rows asked for.
 *
 * Sparse layers: a query at position p uses InfLLM-V2 iff p + 1 >= dense_len, else dense causal
 * attention (the engine rule of forward.c); K1/K2 are maintained from token 0. */
#include "engine/cuda/cu_int.h"

#include <math.h>
#include <string.h>
#include <time.h>

static int64_t nwin(int64_t L, int64_t k, int64_t s) { return L < k ? 0 : (L - k) / s + 1; }

/* SALA-SPEC §3.1: scale_depth / sqrt(num_hidden_layers) (eng_config_residual_scale; the .so
 * links nothing of libsala). */
static double eng_config_residual_scale_cu(const eng_config *c)
{
    return c->scale_depth / sqrt((double)c->num_hidden_layers);
}

static double sala_now_cu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cu_gemm(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float *y, int ldy,
            sala_err *e)
{
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &one, W,
                              CUDA_R_16BF, in, x, CUDA_R_16BF, in, &zero, y, CUDA_R_32F, ldy,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return SALA_OK;
}

#define GEMM(...) do { cu_prof_mark(m, OP_GEMM); CU_TRY(cu_gemm(m, __VA_ARGS__, e)); } while (0)
#define K(cat, call) do { cu_prof_mark(m, cat); CUDA_CHECK(call); } while (0)

static int sparse_mixer(cu_seq *s, int layer, int64_t p0, int T, const eng_forward_args *fa,
                        sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    const cu_layer *L = &m->L[layer];
    const int li = L->kind_index, D = (int)c->hidden_size;
    const int nh = (int)c->num_attention_heads, nkv = (int)c->num_key_value_heads;
    const int hd = (int)c->head_dim, Kq = (int)(sc->topk + sc->window_size / sc->block_size);
    const float scale = (float)(1.0 / sqrt((double)hd));
    cudaStream_t st = m->st;

    GEMM(L->w_in, L->nin, D, s->h, T, s->proj, L->nin);               /* (T, q|k|v|gate) */
    K(OP_OTHER, k_sparse_prep(st, s->proj, L->nin, T, nh, nkv, hd, s->Qb, s->K[li], s->V[li], p0));
    const int k1 = (int)sc->kernel_size, s1 = (int)sc->kernel_stride;
    const int64_t w1 = nwin(p0 + T, k1, s1), w2 = nwin(p0 + T, 4 * k1, 4 * s1);
    K(OP_SCORE, k_compress(st, s->K[li], nkv * hd, s->n1[li], w1, k1, s1, s->K1[li]));
    K(OP_SCORE, k_compress(st, s->K[li], nkv * hd, s->n2[li], w2, 4 * k1, 4 * s1, s->K2[li]));
    if (w1 > s->n1[li]) s->n1[li] = w1;
    if (w2 > s->n2[li]) s->n2[li] = w2;

    int64_t split = sc->dense_len - 1 - p0;                            /* queries t < split: dense */
    if (split < 0) split = 0;
    if (split > T) split = T;
    const int ts = (int)split;
    attn_args aa = {s->Qb, s->K[li], s->V[li], s->o, s->sel, Kq, p0, 0, ts, nh, nkv, hd,
                    (int)sc->block_size, scale};
    K(OP_DENSE_ATTN, k_attn_dense(st, &aa));
    if (ts < T) {
        const int64_t nbs = (p0 + T - 1) / sc->block_size + 1;
        score_args sa = {s->Qb, s->K1[li], s->K2[li], s->n1[li], s->n2[li], s->score,
                         (int)s->score_nbs, p0, ts, T - ts, nh, nkv, hd, k1, s1,
                         (int)sc->block_size, scale,
                         (int)(sc->window_size / sc->block_size), Kq};
        (void)nbs;
        K(OP_SCORE, k_score(st, &sa));
        topk_args ta = {s->score, (int)s->score_nbs, s->sel, Kq, p0, ts, T - ts, nkv,
                        (int)sc->block_size, (int)sc->init_blocks,
                        (int)(sc->window_size / sc->block_size)};
        K(OP_TOPK, k_topk(st, &ta));
        aa.t0 = ts;
        aa.n = T - ts;
        K(OP_SPARSE_ATTN, k_attn_sparse(st, &aa));
        if (fa->select_fn) {
            const size_t off = (size_t)ts * nkv * Kq, n = (size_t)(T - ts) * nkv * Kq;
            CUDA_CHECK(cudaMemcpyAsync(s->sel_host + off, s->sel + off, n * 4,
                                       cudaMemcpyDeviceToHost, st));
            CUDA_CHECK(cudaStreamSynchronize(st));
            for (int t = ts; t < T; t++)
                for (int g = 0; g < nkv; g++)
                    fa->select_fn(fa->select_ud, layer, g, p0 + t,
                                  s->sel_host + ((size_t)t * nkv + g) * Kq, Kq);
        }
    }
    const int nq = nh * hd;
    K(OP_OTHER, k_gate(st, s->o, s->proj, L->nin, L->nq + L->nk + L->nv, T, nq, s->ob));
    GEMM(L->w_o, D, nq, s->ob, T, s->a, D);
    return SALA_OK;
}

static int lightning_mixer(cu_seq *s, int layer, int64_t p0, int T, sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const cu_layer *L = &m->L[layer];
    const int D = (int)c->hidden_size, nh = (int)c->lightning_nh, d = (int)c->lightning_head_dim;
    cudaStream_t st = m->st;

    GEMM(L->w_in, L->nin, D, s->h, T, s->proj, L->nin);               /* (T, q|k|v|z) */
    la_args la;
    la.proj = s->proj;
    la.ld = L->nin;
    la.T = T;
    la.Tp = T == 1 ? 1 : (T + CU_LA_C - 1) / CU_LA_C * CU_LA_C;
    la.nh = nh;
    la.d = d;
    la.p0 = p0;
    la.qn = L->q_norm;
    la.kn = L->k_norm;
    la.on = L->o_norm;
    la.inv_freq = m->inv_freq;
    la.dec = m->dec;
    la.eps = (float)c->rms_norm_eps;
    la.scale = (float)(1.0 / sqrt((double)d));
    la.Qh = s->Qh, la.Qd = s->Qd, la.Kh = s->Kh, la.Kw = s->Kw, la.Vh = s->Vh, la.Oh = s->Oh;
    la.Sb = s->Sb;
    la.Ab = s->Ab;
    la.S = s->S + (size_t)L->kind_index * nh * d * d;
    if (T == 1) {
        K(OP_LIGHTNING, k_la_prep(st, &la));
        K(OP_LIGHTNING, k_la_step(st, &la));
    } else {
        cu_prof_mark(m, OP_LIGHTNING);
        CU_TRY(cu_lightning_prefill(m->blas, st, &la, m->la_compute, e));
    }
    K(OP_LIGHTNING, k_la_out(st, &la, s->ob));
    GEMM(L->w_o, D, nh * d, s->ob, T, s->a, D);
    return SALA_OK;
}

static int forward_step(cu_seq *s, const int32_t *tok, int T, const int64_t *rows, int64_t nout,
                        float *logits, const eng_forward_args *fa, sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    const int D = (int)c->hidden_size, I = (int)c->intermediate_size, V = (int)c->vocab_size;
    const float eps = (float)c->rms_norm_eps, rs = (float)eng_config_residual_scale_cu(c);
    const int64_t p0 = s->len;
    cudaStream_t st = m->st;

    CU_TRY(cu_seq_scratch(s, T, e));
    CU_TRY(cu_seq_cap(s, p0 + T, e));
    if (p0 + T >= sc->dense_len) {   /* InfLLM-V2 block scores (tmax, nkv, nbs) */
        const int64_t nbs = (p0 + T - 1) / sc->block_size + 1;
        if (nbs * 4 > 200 * 1024)
            return sala_errf(e, SALA_EUNSUP, "CUDA backend: %lld tokens exceed the top-k kernel's "
                           "%d blocks", (long long)(p0 + T), 200 * 1024 / 4);
        if (nbs > s->score_nbs) {
            int64_t want = nbs + nbs / 4 + 64;
            if (want > 200 * 1024 / 4) want = 200 * 1024 / 4;
            cudaFree(s->score);
            s->score = NULL;
            s->score_nbs = 0;
            CUDA_CHECK(cudaMalloc((void **)&s->score, (size_t)s->tmax * c->num_key_value_heads *
                                  (size_t)want * 4));
            s->score_nbs = want;
        }
    }
    CUDA_CHECK(cudaMemcpyAsync(s->tok, tok, (size_t)T * 4, cudaMemcpyHostToDevice, st));
    K(OP_OTHER, k_embed(st, m->embed, s->tok, T, D, (float)c->scale_emb, s->x));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const double t0 = fa->layer_seconds ? sala_now_cu() : 0;
        const cu_layer *L = &m->L[l];
        K(OP_OTHER, k_add_norm(st, s->x, l ? s->a : NULL, rs, L->in_norm, eps, T, D, s->h));
        if (c->mixer[l] == ENG_MIXER_SPARSE)
            CU_TRY(sparse_mixer(s, l, p0, T, fa, e));
        else
            CU_TRY(lightning_mixer(s, l, p0, T, e));
        K(OP_OTHER, k_add_norm(st, s->x, s->a, rs, L->post_norm, eps, T, D, s->h));
        GEMM(L->w_gu, 2 * I, D, s->h, T, s->gu, 2 * I);               /* (T, gate|up) */
        K(OP_OTHER, k_swiglu(st, s->gu, T, I, s->act));
        GEMM(L->w_down, D, I, s->act, T, s->a, D);
        if (fa->layer_seconds) {
            CUDA_CHECK(cudaStreamSynchronize(st));
            fa->layer_seconds[l] += sala_now_cu() - t0;
        }
    }
    K(OP_OTHER, k_add_norm(st, s->x, s->a, rs, NULL, eps, T, D, NULL));
    s->len = p0 + T;
    /* logits = lm_head(RMSNorm(x) * dim_model_base / hidden), requested rows only */
    const float ls = (float)(c->dim_model_base / (double)c->hidden_size);
    for (int64_t r0 = 0; r0 < nout; r0 += CU_LOGIT_ROWS) {
        const int n = (int)(nout - r0 < CU_LOGIT_ROWS ? nout - r0 : CU_LOGIT_ROWS);
        int32_t rr[CU_LOGIT_ROWS];
        for (int i = 0; i < n; i++) rr[i] = (int32_t)rows[r0 + i];
        CUDA_CHECK(cudaMemcpyAsync(s->rows, rr, (size_t)n * 4, cudaMemcpyHostToDevice, st));
        K(OP_OTHER, k_norm_rows(st, s->x, s->rows, n, D, m->final_norm, eps, ls, s->hf));
        GEMM(m->lm_head, V, D, s->hf, n, s->logits, V);
        CUDA_CHECK(cudaMemcpyAsync(logits + r0 * V, s->logits, (size_t)n * V * 4,
                                   cudaMemcpyDeviceToHost, st));
        CUDA_CHECK(cudaStreamSynchronize(st));   /* rr and the host rows live on this frame */
    }
    cu_prof_mark(m, OP_OTHER);
    cu_mem_sample(m);
    return SALA_OK;
}

int cu_forward(cu_seq *s, const eng_forward_args *a, sala_err *e)
{
    cu_model *m = s->m;
    const int64_t V = m->c.vocab_size;
    int64_t r = 0;
    int64_t rows[CU_CHUNK];
    cu_prof_mark(m, OP_OTHER);
    for (int64_t t0 = 0; t0 < a->n; t0 += CU_CHUNK) {
        const int T = (int)(a->n - t0 < CU_CHUNK ? a->n - t0 : CU_CHUNK);
        const int64_t r0 = r;
        int64_t nout = 0;
        while (r < a->nrows && a->rows[r] < t0 + T) rows[nout++] = a->rows[r++] - t0;
        int rc = forward_step(s, a->tokens + t0, T, rows, nout,
                              nout ? a->logits + r0 * V : NULL, a, e);
        if (rc) return rc;
    }
    cudaError_t err = cudaStreamSynchronize(m->st);
    if (m->prof.on) {
        cu_prof_flush(m);
        m->prof.nev = 0;
    }
    CUDA_CHECK(err);
    return SALA_OK;
}
