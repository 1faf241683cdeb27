/* cu_backend.cu: the CUDA backend's table (engine/backend.h): weights uploaded once in bf16 (the
 * projections of a mixer fused into one matrix q|k|v|gate, the MLP's gate|up into another), norm
 * weights and the RoPE / decay tables in fp32, random full-size weights made on the GPU for the
 * benchmark, sequences (bf16 K/V and compressed-key caches that grow by doubling, fp32 lightning
 * states, checkpoints, scratch for one step), fork and truncate, and the per-op profile.
 * The forward pass is in cu_forward.cu. Exported: sala_cuda_backend, sala_cuda_probe. */
#include "engine/cuda/cu_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

static int64_t nwin(int64_t L, int64_t k, int64_t s) { return L < k ? 0 : (L - k) / s + 1; }

/* ---- host conversion (the .so links nothing of libsala) ---- */
static float h_bf16_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t h_f32_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float h_f16_f32(uint16_t h)
{
    const uint32_t s = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 31, m = h & 0x3ff;
    float f;
    if (ex == 0) {
        f = ldexpf((float)m, -24);
        return s ? -f : f;
    }
    uint32_t u = ex == 31 ? (s | 0x7f800000u | (m << 13)) : (s | ((ex + 112) << 23) | (m << 13));
    memcpy(&f, &u, 4);
    return f;
}

static float h_elem(const st_tensor *t, size_t i)
{
    const unsigned char *p = (const unsigned char *)t->data;
    uint16_t h;
    float f;
    switch (t->dtype) {
    case ST_BF16: memcpy(&h, p + 2 * i, 2); return h_bf16_f32(h);
    case ST_F16: memcpy(&h, p + 2 * i, 2); return h_f16_f32(h);
    default: memcpy(&f, p + 4 * i, 4); return f;   /* ST_F32 (model.c admits only these) */
    }
}

/* Upload tensor t as bf16 to dst (t->numel elements). */
static int up_bf16(cu_model *m, const st_tensor *t, bf16 *dst, sala_err *e)
{
    if (t->dtype == ST_BF16) {
        CUDA_CHECK(cudaMemcpy(dst, t->data, t->nbytes, cudaMemcpyHostToDevice));
        return SALA_OK;
    }
    const size_t step = (size_t)1 << 24;
    uint16_t *buf = (uint16_t *)malloc(step * 2);
    if (!buf) return sala_errf(e, SALA_ENOMEM, "out of memory converting '%s'", t->name);
    for (size_t i0 = 0; i0 < (size_t)t->numel; i0 += step) {
        const size_t n = (size_t)t->numel - i0 < step ? (size_t)t->numel - i0 : step;
        for (size_t i = 0; i < n; i++) buf[i] = h_f32_bf16(h_elem(t, i0 + i));
        cudaError_t err = cudaMemcpy(dst + i0, buf, n * 2, cudaMemcpyHostToDevice);
        if (err != cudaSuccess) {
            free(buf);
            CUDA_CHECK(err);
        }
    }
    free(buf);
    (void)m;
    return SALA_OK;
}

static int up_f32(const st_tensor *t, float **dst, sala_err *e)
{
    float *h = (float *)malloc((size_t)t->numel * sizeof(float) + 4);
    if (!h) return sala_errf(e, SALA_ENOMEM, "out of memory converting '%s'", t->name);
    for (int64_t i = 0; i < t->numel; i++) h[i] = h_elem(t, (size_t)i);
    cudaError_t err = cudaMalloc((void **)dst, (size_t)t->numel * sizeof(float));
    if (err == cudaSuccess)
        err = cudaMemcpy(*dst, h, (size_t)t->numel * sizeof(float), cudaMemcpyHostToDevice);
    free(h);
    CUDA_CHECK(err);
    return SALA_OK;
}

static int dalloc(void **p, size_t bytes, size_t *acc, sala_err *e)
{
    CUDA_CHECK(cudaMalloc(p, bytes ? bytes : 16));
    if (acc) *acc += bytes;
    return SALA_OK;
}

/* The addresses of s's step-scratch pointers: CU_SCR_DEV device allocations, then the pinned
 * host ones (sel_host, hpin). */
static void scratch_fields(cu_seq *s, void **f[CU_SCR_N])
{
    void **a[CU_SCR_N] = {
        (void **)&s->tok, (void **)&s->rows, (void **)&s->x, (void **)&s->a, (void **)&s->proj,
        (void **)&s->o, (void **)&s->gu, (void **)&s->h, (void **)&s->ob, (void **)&s->Qb,
        (void **)&s->act, (void **)&s->hf, (void **)&s->Qh, (void **)&s->Qd, (void **)&s->Kh,
        (void **)&s->Kw, (void **)&s->Vh, (void **)&s->Oh, (void **)&s->Sb, (void **)&s->Ab,
        (void **)&s->logits, (void **)&s->sel, (void **)&s->score, (void **)&s->dstep,
        (void **)&s->sel_host, (void **)&s->hpin};
    memcpy(f, a, sizeof(a));
}

static void scratch_free_all(void *const p[CU_SCR_N])
{
    for (int i = 0; i < CU_SCR_N; i++)
        if (i < CU_SCR_DEV) cudaFree(p[i]); else cudaFreeHost(p[i]);
}

static void cu_model_free(void *bm)
{
    cu_model *m = (cu_model *)bm;
    if (!m) return;
    if (m->L)
        for (int64_t l = 0; l < m->c.num_hidden_layers; l++) {
            cu_layer *L = &m->L[l];
            void *ps[] = {L->w_in, L->w_o, L->w_gu, L->w_down, L->in_norm, L->post_norm,
                          L->q_norm, L->k_norm, L->o_norm};
            for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) cudaFree(ps[i]);
        }
    free(m->L);
    cudaFree(m->embed);
    cudaFree(m->lm_head);
    cudaFree(m->final_norm);
    cudaFree(m->inv_freq);
    cudaFree(m->dec);
    cudaFree(m->blas_ws);
    for (int i = 0; i < CU_PROF_EV; i++)
        if (m->prof.ev[i]) cudaEventDestroy(m->prof.ev[i]);
    for (int i = 0; i < CU_SIDE; i++) {
        if (m->side[i]) cudaStreamDestroy(m->side[i]);
        if (m->ev_join[i]) cudaEventDestroy(m->ev_join[i]);
        cudaFree(m->side_part[i]);
    }
    if (m->ev_fork) cudaEventDestroy(m->ev_fork);
    if (m->blas) cublasDestroy(m->blas);
    cu_lt_free(m->lt);
    if (m->st) cudaStreamDestroy(m->st);
    scratch_free_all(m->spare);
    pthread_mutex_destroy(&m->spare_mu);
    free(m);
}

/* Shapes the kernels support; *c is a checked config. */
static int check_config(const eng_config *c, sala_err *e)
{
    const int64_t G = c->num_key_value_heads ? c->num_attention_heads / c->num_key_value_heads : 0;
    const eng_sparse_config *sc = &c->sparse;
    if (c->lightning_nkv != c->lightning_nh)
        return sala_errf(e, SALA_EUNSUP, "config.json: lightning_nkv %lld != lightning_nh %lld",
                       (long long)c->lightning_nkv, (long long)c->lightning_nh);
    if (!G || c->num_attention_heads % c->num_key_value_heads || G > 16 || 16 % G)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend: q heads per kv group %lld (needs a divisor "
                       "of 16)", (long long)G);
    if (c->head_dim % 16 || c->head_dim > 256 || c->lightning_head_dim % 32 ||
        c->lightning_head_dim > 1024)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend: head_dim %lld / lightning_head_dim %lld "
                       "(needs multiples of 16 up to 256 / of 32 up to 1024)",
                       (long long)c->head_dim, (long long)c->lightning_head_dim);
    if (sc->block_size != CU_KT || sc->kernel_stride <= 0 || CU_KT % sc->kernel_stride ||
        sc->kernel_size <= 0)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend: sparse block_size %lld / kernel_stride "
                       "%lld (needs block 64, stride dividing 64)", (long long)sc->block_size,
                       (long long)sc->kernel_stride);
    if (c->hidden_size > INT32_MAX / 4 || c->intermediate_size > INT32_MAX / 4 ||
        c->vocab_size > INT32_MAX)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend: dimensions too large");
    return SALA_OK;
}

/* Allocate the model's buffers (weights left unset) and the stream, handle and tables. */
static int model_alloc(const eng_config *c, cu_model **out, sala_err *e)
{
    *out = NULL;
    CU_TRY(check_config(c, e));
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend not available: no GPU");
    cu_model *m = (cu_model *)calloc(1, sizeof(*m));
    if (!m) return sala_errf(e, SALA_ENOMEM, "out of memory");
    pthread_mutex_init(&m->spare_mu, NULL);
    m->c = *c;
    m->la_compute = CUBLAS_COMPUTE_32F;
    int rc = SALA_ENOMEM;
    const int64_t D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    size_t *wb = &m->weight_bytes;
    cudaError_t err;
    if ((err = cu_kernels_init()) != cudaSuccess) {
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: kernel setup: %s", cudaGetErrorString(err));
        goto fail;
    }
    if ((err = cudaStreamCreateWithFlags(&m->st, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: stream: %s", cudaGetErrorString(err));
        goto fail;
    }
    if (cublasCreate(&m->blas) != CUBLAS_STATUS_SUCCESS) {
        m->blas = NULL;
        rc = sala_errf(e, SALA_EINTERNAL, "cuBLAS: cublasCreate failed");
        goto fail;
    }
    if ((rc = dalloc(&m->blas_ws, CU_BLAS_WS, NULL, e))) goto fail;
    cublasSetWorkspace(m->blas, m->blas_ws, CU_BLAS_WS);
    if ((rc = cu_lt_new(&m->lt, e))) goto fail;
    cublasSetStream(m->blas, m->st);
    if ((rc = cu_vmm_init(m, e))) goto fail;
    for (int i = 0; i < CU_SIDE; i++) {
        if (cudaStreamCreateWithFlags(&m->side[i], cudaStreamNonBlocking) != cudaSuccess ||
            cudaEventCreateWithFlags(&m->ev_join[i], cudaEventDisableTiming) != cudaSuccess) {
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: side streams: %s",
                           cudaGetErrorString(cudaGetLastError()));
            goto fail;
        }
        if ((rc = dalloc((void **)&m->side_part[i], CU_ATTN_PART_FLOATS * 4, NULL, e))) goto fail;
    }
    if (cudaEventCreateWithFlags(&m->ev_fork, cudaEventDisableTiming) != cudaSuccess) {
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: event: %s", cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    if (!(m->L = (cu_layer *)calloc((size_t)c->num_hidden_layers, sizeof(cu_layer)))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    {
        int ns = 0, nl = 0;
        for (int64_t l = 0; l < c->num_hidden_layers; l++) {
            cu_layer *L = &m->L[l];
            if (c->mixer[l] == ENG_MIXER_SPARSE) {
                L->kind_index = ns++;
                L->nq = L->ng = (int)(c->num_attention_heads * c->head_dim);
                L->nk = L->nv = (int)(c->num_key_value_heads * c->head_dim);
            } else {
                L->kind_index = nl++;
                L->nq = L->nk = L->nv = L->ng = (int)(c->lightning_nh * c->lightning_head_dim);
                const int64_t lhd = c->lightning_head_dim;
                if ((rc = dalloc((void **)&L->q_norm, lhd * 4, wb, e)) ||
                    (rc = dalloc((void **)&L->k_norm, lhd * 4, wb, e)) ||
                    (rc = dalloc((void **)&L->o_norm, (size_t)L->nq * 4, wb, e)))
                    goto fail;
            }
            L->nin = L->nq + L->nk + L->nv + L->ng;
            if ((rc = dalloc((void **)&L->w_in, (size_t)L->nin * D * 2, wb, e)) ||
                (rc = dalloc((void **)&L->w_o, (size_t)D * L->nq * 2, wb, e)) ||
                (rc = dalloc((void **)&L->w_gu, (size_t)2 * I * D * 2, wb, e)) ||
                (rc = dalloc((void **)&L->w_down, (size_t)D * I * 2, wb, e)) ||
                (rc = dalloc((void **)&L->in_norm, D * 4, wb, e)) ||
                (rc = dalloc((void **)&L->post_norm, D * 4, wb, e)))
                goto fail;
        }
    }
    if ((rc = dalloc((void **)&m->embed, (size_t)V * D * 2, wb, e)) ||
        (rc = dalloc((void **)&m->lm_head, (size_t)V * D * 2, wb, e)) ||
        (rc = dalloc((void **)&m->final_norm, D * 4, wb, e)))
        goto fail;
    {
        const int64_t lnh = c->lightning_nh, lhd = c->lightning_head_dim;
        float *inv = (float *)malloc((size_t)(lhd / 2 + 1) * 4);
        float *dec = (float *)malloc((size_t)(lnh * (CU_LA_C + 1)) * 4);
        float *slope = (float *)malloc((size_t)(lnh + 1) * 4);
        if (!inv || !dec || !slope) {
            free(inv), free(dec), free(slope);
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        for (int64_t i = 0; i < lhd / 2; i++)   /* as torch: 1 / theta^(2i/d) in fp32 */
            inv[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)lhd);
        eng_alibi_slopes(slope, lnh);
        for (int64_t n = 0; n < lnh; n++)
            for (int x = 0; x <= CU_LA_C; x++)
                dec[n * (CU_LA_C + 1) + x] = (float)exp(-(double)slope[n] * x);
        rc = dalloc((void **)&m->inv_freq, (size_t)(lhd / 2) * 4, NULL, e);
        if (!rc) rc = dalloc((void **)&m->dec, (size_t)(lnh * (CU_LA_C + 1)) * 4, NULL, e);
        if (!rc && (cudaMemcpy(m->inv_freq, inv, (size_t)(lhd / 2) * 4, cudaMemcpyHostToDevice) ||
                    cudaMemcpy(m->dec, dec, (size_t)(lnh * (CU_LA_C + 1)) * 4,
                               cudaMemcpyHostToDevice)))
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: table upload failed");
        free(inv), free(dec), free(slope);
        if (rc) goto fail;
    }
    for (int i = 0; i < CU_PROF_EV; i++)
        if (cudaEventCreate(&m->prof.ev[i]) != cudaSuccess) {
            rc = sala_errf(e, SALA_EINTERNAL, "CUDA: cudaEventCreate failed");
            goto fail;
        }
    *out = m;
    return SALA_OK;
fail:
    cu_model_free(m);
    return rc;
}

static int cu_model_load(const eng_model *em, void **out, sala_err *e)
{
    cu_model *m;
    *out = NULL;
    CU_TRY(model_alloc(&em->cfg, &m, e));
    const eng_config *c = &m->c;
    const int64_t D = c->hidden_size;
    int rc = SALA_OK;
    for (int64_t l = 0; l < c->num_hidden_layers && !rc; l++) {
        const eng_layer_weights *W = &em->layers[l];
        cu_layer *L = &m->L[l];
        if ((rc = up_bf16(m, W->q, L->w_in, e)) ||
            (rc = up_bf16(m, W->k, L->w_in + (size_t)L->nq * D, e)) ||
            (rc = up_bf16(m, W->v, L->w_in + (size_t)(L->nq + L->nk) * D, e)) ||
            (rc = up_bf16(m, W->gate, L->w_in + (size_t)(L->nq + L->nk + L->nv) * D, e)) ||
            (rc = up_bf16(m, W->o, L->w_o, e)) ||
            (rc = up_bf16(m, W->mlp_gate, L->w_gu, e)) ||
            (rc = up_bf16(m, W->mlp_up, L->w_gu + (size_t)c->intermediate_size * D, e)) ||
            (rc = up_bf16(m, W->mlp_down, L->w_down, e)))
            break;
        float *tmp = NULL;
        if ((rc = up_f32(W->in_norm, &tmp, e))) break;
        cudaFree(L->in_norm), L->in_norm = tmp;
        if ((rc = up_f32(W->post_norm, &tmp, e))) break;
        cudaFree(L->post_norm), L->post_norm = tmp;
        if (c->mixer[l] == ENG_MIXER_LIGHTNING) {
            if ((rc = up_f32(W->q_norm, &tmp, e))) break;
            cudaFree(L->q_norm), L->q_norm = tmp;
            if ((rc = up_f32(W->k_norm, &tmp, e))) break;
            cudaFree(L->k_norm), L->k_norm = tmp;
            if ((rc = up_f32(W->o_norm, &tmp, e))) break;
            cudaFree(L->o_norm), L->o_norm = tmp;
        }
    }
    float *fn = NULL;
    if (!rc && !(rc = up_bf16(m, em->embed, m->embed, e)) &&
        !(rc = up_bf16(m, em->lm_head, m->lm_head, e)) && !(rc = up_f32(em->final_norm, &fn, e))) {
        cudaFree(m->final_norm);
        m->final_norm = fn;
    }
    if (rc) {
        cu_model_free(m);
        return rc;
    }
    cu_mem_sample(m);
    *out = m;
    return SALA_OK;
}

/* Benchmark model: the weight recipe of engine/random_model.h, drawn on the GPU. */
static int cu_model_random(const eng_config *cfg, uint64_t seed, void **out, sala_err *e)
{
    cu_model *m;
    *out = NULL;
    CU_TRY(model_alloc(cfg, &m, e));
    const eng_config *c = &m->c;
    const int64_t D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const float sd = 1.0f / sqrtf((float)D), si = 1.0f / sqrtf((float)I);
    uint64_t k = seed * 1000003ull;
    cudaStream_t st = m->st;
    int rc = SALA_OK;
#define FILLB(p, n, mean, std) do { cudaError_t er_ = k_fill_normal_bf16(st, p, n, ++k, mean, std); \
        if (er_ != cudaSuccess) { rc = sala_errf(e, SALA_EINTERNAL, "CUDA: fill: %s", \
                                               cudaGetErrorString(er_)); goto done; } } while (0)
#define FILLF(p, n, mean, std) do { cudaError_t er_ = k_fill_normal_f32(st, p, n, ++k, mean, std); \
        if (er_ != cudaSuccess) { rc = sala_errf(e, SALA_EINTERNAL, "CUDA: fill: %s", \
                                               cudaGetErrorString(er_)); goto done; } } while (0)
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        cu_layer *L = &m->L[l];
        const bool sp = c->mixer[l] == ENG_MIXER_SPARSE;
        FILLB(L->w_in, (size_t)L->nq * D, 0.0f, sp ? 1.5f * sd : sd);
        FILLB(L->w_in + (size_t)L->nq * D, (size_t)L->nk * D, 0.0f, sp ? 1.5f * sd : sd);
        FILLB(L->w_in + (size_t)(L->nq + L->nk) * D, (size_t)(L->nv + L->ng) * D, 0.0f, sd);
        FILLB(L->w_o, (size_t)D * L->nq, 0.0f, 1.0f / sqrtf((float)L->nq));
        FILLB(L->w_gu, (size_t)2 * I * D, 0.0f, sd);
        FILLB(L->w_down, (size_t)D * I, 0.0f, si);
        FILLF(L->in_norm, (size_t)D, 1.0f, 0.1f);
        FILLF(L->post_norm, (size_t)D, 1.0f, 0.1f);
        if (!sp) {
            FILLF(L->q_norm, (size_t)c->lightning_head_dim, 1.0f, 0.1f);
            FILLF(L->k_norm, (size_t)c->lightning_head_dim, 1.0f, 0.1f);
            FILLF(L->o_norm, (size_t)L->nq, 1.0f, 0.1f);
        }
    }
    FILLB(m->embed, (size_t)V * D, 0.0f, 0.01f);
    FILLB(m->lm_head, (size_t)V * D, 0.0f,
          (float)(4.0 * (D / c->dim_model_base) / sqrt((double)D)));
    FILLF(m->final_norm, (size_t)D, 1.0f, 0.1f);
#undef FILLB
#undef FILLF
    if (cudaStreamSynchronize(st) != cudaSuccess)
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: random weights: %s",
                     cudaGetErrorString(cudaGetLastError()));
done:
    if (rc) {
        cu_model_free(m);
        return rc;
    }
    cu_mem_sample(m);
    *out = m;
    return SALA_OK;
}

/* ---- profile ---- */
void cu_mem_sample(cu_model *m)
{
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && tot - fr > m->mem_peak) m->mem_peak = tot - fr;
}

void cu_prof_flush(cu_model *m)
{
    cu_prof *p = &m->prof;
    if (p->nev >= 1) cudaEventSynchronize(p->ev[p->nev - 1]);
    for (int i = 0; i + 1 < p->nev; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) == cudaSuccess)
            p->sec[p->cat[i]] += ms * 1e-3;
    }
    if (p->nev >= 1) {   /* the last mark starts the next interval */
        cudaEvent_t t = p->ev[0];
        p->ev[0] = p->ev[p->nev - 1];
        p->ev[p->nev - 1] = t;
        p->cat[0] = p->cat[p->nev - 1];
        p->nev = 1;
    }
}

void cu_prof_mark(cu_model *m, int cat)
{
    cu_prof *p = &m->prof;
    if (!p->on) return;
    if (p->nev == CU_PROF_EV) cu_prof_flush(m);
    cudaEventRecord(p->ev[p->nev], m->st);
    p->cat[p->nev++] = cat;
}

void cu_prof_end(cu_model *m)
{
    cu_prof_mark(m, OP_IDLE);
}

static const char *const op_names[OP_N] = {"gemm", "lightning", "sparse_scoring",
                                           "sparse_attn", "dense_attn", "other", "topk",
                                           "idle", "overlap"};

static int cu_profile(void *bm, int enable, eng_profile *out)
{
    cu_model *m = (cu_model *)bm;
    if (m->prof.kern && (out || enable >= 0)) {   /* the kernel records end here */
        cudaDeviceSynchronize();
        cu_kprof_stop(m->prof.sec, NULL);
        m->prof.kern = false;
    }
    if (out) {
        memset(out, 0, sizeof(*out));
        out->nops = OP_N;
        for (int i = 0; i < OP_N; i++) {
            out->op_name[i] = op_names[i];
            out->op_seconds[i] = m->prof.sec[i];
        }
        cu_mem_sample(m);
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        out->mem_peak = m->mem_peak;
        out->mem_total = tot;
        out->weight_bytes = m->weight_bytes;
    }
    if (enable >= 0) {
        m->prof.on = enable == 1;
        m->prof.nev = 0;
        memset(m->prof.sec, 0, sizeof(m->prof.sec));
        m->mem_peak = 0;
        cu_mem_sample(m);
        if (enable == 2) {
            sala_err e;
            memset(&e, 0, sizeof(e));
            int rc = cu_kprof_start(&e);
            if (rc) return rc;
            m->prof.kern = true;
        }
    }
    return SALA_OK;
}

/* ---- sequences ---- */
/* s loses its step scratch: with keep, it becomes the model's spare when larger than the spare
 * (the smaller of the two is freed), so that the next sequence's first step does not allocate
 * (a 16K-token step's scratch is ~20 cudaMalloc and two pinned buffers: ~7 ms before its first
 * kernel, measured on the H100); without, it is freed. The caller has made sure no queued work
 * still uses it, or queues the spare's next user on the same stream. */
static void seq_scratch_drop(cu_seq *s, bool keep)
{
    cu_model *m = s->m;
    void **f[CU_SCR_N], *mine[CU_SCR_N];
    scratch_fields(s, f);
    for (int i = 0; i < CU_SCR_N; i++) mine[i] = *f[i], *f[i] = NULL;
    if (keep && s->tmax > 0) {
        pthread_mutex_lock(&m->spare_mu);
        if (s->tmax > m->spare_tmax) {
            void *old[CU_SCR_N];
            memcpy(old, m->spare, sizeof(old));
            memcpy(m->spare, mine, sizeof(mine));
            m->spare_tmax = s->tmax;
            m->spare_nbs = s->score_nbs;
            memcpy(mine, old, sizeof(old));
        }
        pthread_mutex_unlock(&m->spare_mu);
    }
    scratch_free_all(mine);
    s->tmax = 0;
    s->score_nbs = 0;
}

/* s (no scratch) takes the model's spare when it holds at least T tokens; false: none. */
static bool seq_scratch_take(cu_seq *s, int T)
{
    cu_model *m = s->m;
    bool got = false;
    pthread_mutex_lock(&m->spare_mu);
    if (m->spare_tmax >= T) {
        void **f[CU_SCR_N];
        scratch_fields(s, f);
        for (int i = 0; i < CU_SCR_N; i++) *f[i] = m->spare[i], m->spare[i] = NULL;
        s->tmax = m->spare_tmax;
        s->score_nbs = m->spare_nbs;
        m->spare_tmax = 0;
        m->spare_nbs = 0;
        got = true;
    }
    pthread_mutex_unlock(&m->spare_mu);
    return got;
}

static void state_unref(cu_state *st)
{
    if (st && --st->refs <= 0) {
        cudaFree(st->S);
        free(st);
    }
}

static void ckpt_clear(cu_seq *s, int keep)
{
    for (int i = keep; i < s->nckpt; i++) state_unref(s->ckpt[i].st);
    if (keep < s->nckpt) s->nckpt = keep;
}

static void cu_seq_free(void *bs)
{
    cu_seq *s = (cu_seq *)bs;
    if (!s) return;
    const int ns = s->m->c.n_sparse;
    /* no kernel of ours still reads what is unmapped, or the scratch handed to the model's
     * spare (its next user may queue on another stream) */
    cudaStreamSynchronize(s->m->st);
    if (s->cb)
        for (int i = 0; i < 4 * ns; i++) cu_buf_free(s->m, &s->cb[i]);
    free(s->cb);
    free(s->K), free(s->V), free(s->K1), free(s->K2), free(s->n1), free(s->n2);
    cudaFree(s->S);
    ckpt_clear(s, 0);
    free(s->ckpt);
    seq_scratch_drop(s, true);
    cudaFree(s->pk_mark);
    cudaFree(s->pk_ids);
    cu_graph_free(s);
    free(s);
}

/* Scratch for steps of up to T tokens (grows; contents are per step). */
int cu_seq_scratch(cu_seq *s, int T, sala_err *e)
{
    if (T <= s->tmax) return SALA_OK;
    seq_scratch_drop(s, true);
    if (seq_scratch_take(s, T)) return SALA_OK;
    const eng_config *c = &s->m->c;
    const size_t D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const size_t lnh = c->lightning_nh, lhd = c->lightning_head_dim;
    const size_t nq = c->num_attention_heads * c->head_dim, lw = lnh * lhd;
    size_t nin = 0;
    for (int64_t l = 0; l < c->num_hidden_layers; l++)
        if ((size_t)s->m->L[l].nin > nin) nin = s->m->L[l].nin;
    const size_t t = (size_t)T, Tp = (t + CU_LA_C - 1) / CU_LA_C * CU_LA_C, nch = Tp / CU_LA_C;
    const size_t wq = nq > lw ? nq : lw;
    const size_t K = (size_t)(c->sparse.topk + c->sparse.window_size / c->sparse.block_size);
    const size_t nkv = c->num_key_value_heads;
    const size_t lrows = t < CU_LOGIT_ROWS ? t : CU_LOGIT_ROWS;   /* logits rows of one step */
    int rc;
    if ((rc = dalloc((void **)&s->tok, t * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->rows, CU_LOGIT_ROWS * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->dstep, 32, NULL, e)) ||
        (rc = dalloc((void **)&s->x, t * D * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->a, t * D * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->h, t * D * 2, NULL, e)) ||
        (rc = dalloc((void **)&s->proj, t * nin * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->o, t * nq * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->ob, t * wq * 2, NULL, e)) ||
        (rc = dalloc((void **)&s->Qb, t * nq * 2, NULL, e)) ||
        (rc = dalloc((void **)&s->gu, t * 2 * I * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->act, t * I * 2, NULL, e)) ||
        (rc = dalloc((void **)&s->hf, lrows * D * 2, NULL, e)) ||
        (rc = dalloc((void **)&s->logits, lrows * V * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->sel, t * nkv * K * 4, NULL, e)))
        goto fail;
    {
        float **la[] = {&s->Qh, &s->Qd, &s->Kh, &s->Kw, &s->Vh, &s->Oh};
        for (size_t i = 0; i < 6; i++)
            if ((rc = dalloc((void **)la[i], lnh * Tp * lhd * 4, NULL, e))) goto fail;
    }
    if ((rc = dalloc((void **)&s->Sb, lnh * nch * lhd * lhd * 4, NULL, e)) ||
        (rc = dalloc((void **)&s->Ab, lnh * nch * CU_LA_C * CU_LA_C * 4, NULL, e)))
        goto fail;
    if (cudaMallocHost((void **)&s->sel_host, t * nkv * K * 4) != cudaSuccess) {
        s->sel_host = NULL;
        rc = sala_errf(e, SALA_ENOMEM, "CUDA: no pinned memory for the selections");
        goto fail;
    }
    if (cudaMallocHost((void **)&s->hpin, (4 + V) * 4) != cudaSuccess) {
        s->hpin = NULL;
        rc = sala_errf(e, SALA_ENOMEM, "CUDA: no pinned memory for the step's copies");
        goto fail;
    }
    s->tmax = T;
    return SALA_OK;
fail:
    seq_scratch_drop(s, false);
    return rc;
}

/* Tokens of address space a cache reserves beyond max_position_embeddings (VMM), and of room a
 * loaded sequence gets beyond its length, so that the first questions and answers on it (or its
 * forks) do not regrow the caches. */
#define CU_LOAD_HEADROOM 8192

static void seq_views(cu_seq *s)
{
    for (int i = 0; i < s->m->c.n_sparse; i++) {
        s->K[i] = (bf16 *)s->cb[4 * i].p;
        s->V[i] = (bf16 *)s->cb[4 * i + 1].p;
        s->K1[i] = (bf16 *)s->cb[4 * i + 2].p;
        s->K2[i] = (bf16 *)s->cb[4 * i + 3].p;
    }
}

/* Bytes of buffer kind k (0 K, 1 V, 2 K1, 3 K2) for a capacity of cap tokens; false on overflow. */
static bool kind_bytes(const eng_config *c, int k, int64_t cap, size_t *out)
{
    const eng_sparse_config *sc = &c->sparse;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * 2;
    const int64_t rows = k < 2 ? cap : k == 2 ? nwin(cap, sc->kernel_size, sc->kernel_stride) + 1
                                              : nwin(cap, 4 * sc->kernel_size,
                                                     4 * sc->kernel_stride) + 1;
    return rows >= 0 && !__builtin_mul_overflow((size_t)rows, row, out);
}

int cu_seq_cap(cu_seq *s, int64_t need, sala_err *e) { return cu_seq_cap_solid(s, need, 0, e); }

int cu_seq_cap_solid(cu_seq *s, int64_t need, int64_t len, sala_err *e)
{
    if (need <= s->cap) return SALA_OK;
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    int64_t cap;
    if (m->vm_chunk) {   /* chunks are mapped as needed: no doubling */
        cap = (need + 4095) / 4096 * 4096;
    } else {
        cap = need > 2 * s->cap ? need : 2 * s->cap;
        if (cap < 4096) cap = 4096;
    }
    int64_t hint = c->max_position_embeddings > cap ? c->max_position_embeddings : cap;
    if (s->va_want > hint) hint = s->va_want;   /* a longer call: no remap (and drain) midway */
    hint += CU_LOAD_HEADROOM;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * 2;
    for (int i = 0; i < c->n_sparse; i++)
        for (int k = 0; k < 4; k++) {
            size_t bytes, va, solid = 0;
            if (!kind_bytes(c, k, cap, &bytes) || !kind_bytes(c, k, hint, &va) ||
                (len > 0 && !kind_bytes(c, k, len, &solid)))
                return sala_errf(e, SALA_ERANGE, "CUDA: a %lld-token cache overflows",
                                 (long long)cap);
            if (k >= 2 && solid >= row) solid -= row;   /* kind_bytes counts one spare window */
            const int64_t used = k < 2 ? s->len : k == 2 ? s->n1[i] : s->n2[i];
            CU_TRY(cu_buf_reserve(m, &s->cb[4 * i + k], bytes, (size_t)used * row, solid, va, e));
        }
    seq_views(s);
    s->cap = cap;
    return SALA_OK;
}

int cu_seq_writable(cu_seq *s, int64_t p0, int T, sala_err *e)
{
    cu_model *m = s->m;
    if (!m->vm_chunk) return SALA_OK;
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * 2;
    const int64_t w1 = nwin(p0 + T, sc->kernel_size, sc->kernel_stride);
    const int64_t w2 = nwin(p0 + T, 4 * sc->kernel_size, 4 * sc->kernel_stride);
    for (int i = 0; i < c->n_sparse; i++) {
        CU_TRY(cu_buf_writable(m, &s->cb[4 * i], (size_t)p0 * row, (size_t)(p0 + T) * row, e));
        CU_TRY(cu_buf_writable(m, &s->cb[4 * i + 1], (size_t)p0 * row, (size_t)(p0 + T) * row, e));
        CU_TRY(cu_buf_writable(m, &s->cb[4 * i + 2], (size_t)s->n1[i] * row, (size_t)w1 * row, e));
        CU_TRY(cu_buf_writable(m, &s->cb[4 * i + 3], (size_t)s->n2[i] * row, (size_t)w2 * row, e));
    }
    return SALA_OK;
}

static int cu_seq_new(void *bm, void **out, sala_err *e)
{
    cu_model *m = (cu_model *)bm;
    const eng_config *c = &m->c;
    *out = NULL;
    cu_seq *s = (cu_seq *)calloc(1, sizeof(*s));
    if (!s) return sala_errf(e, SALA_ENOMEM, "out of memory");
    s->m = m;
    const size_t ns = (size_t)c->n_sparse + 1;
    s->K = (bf16 **)calloc(ns, sizeof(bf16 *));
    s->V = (bf16 **)calloc(ns, sizeof(bf16 *));
    s->K1 = (bf16 **)calloc(ns, sizeof(bf16 *));
    s->K2 = (bf16 **)calloc(ns, sizeof(bf16 *));
    s->n1 = (int64_t *)calloc(ns, sizeof(int64_t));
    s->n2 = (int64_t *)calloc(ns, sizeof(int64_t));
    s->cb = (cu_buf *)calloc(4 * ns, sizeof(cu_buf));
    if (!s->K || !s->V || !s->K1 || !s->K2 || !s->n1 || !s->n2 || !s->cb) {
        cu_seq_free(s);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    s->S_floats = (size_t)c->n_lightning * c->lightning_nh * c->lightning_head_dim *
                  c->lightning_head_dim;
    int rc = dalloc((void **)&s->S, s->S_floats * 4, NULL, e);
    if (!rc && cudaMemset(s->S, 0, s->S_floats * 4) != cudaSuccess)
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: cudaMemset failed");
    if (rc) {
        cu_seq_free(s);
        return rc;
    }
    *out = s;
    return SALA_OK;
}

static int64_t cu_seq_len(const void *bs) { return ((const cu_seq *)bs)->len; }

static int ckpt_room(cu_seq *s, sala_err *e)
{
    if (s->nckpt < s->ckpt_cap) return SALA_OK;
    int ncap = s->ckpt_cap ? 2 * s->ckpt_cap : 4;
    cu_ckpt *p = (cu_ckpt *)realloc(s->ckpt, (size_t)ncap * sizeof(*p));
    if (!p) return sala_errf(e, SALA_ENOMEM, "out of memory for a checkpoint");
    s->ckpt = p;
    s->ckpt_cap = ncap;
    return SALA_OK;
}

/* A new unshared state holding a copy of src (device). */
static int state_new(cu_seq *s, const float *src, cu_state **out, sala_err *e)
{
    cu_state *st = (cu_state *)calloc(1, sizeof(*st));
    if (!st) return sala_errf(e, SALA_ENOMEM, "out of memory for a checkpoint");
    int rc = dalloc((void **)&st->S, s->S_floats * 4, NULL, e);
    if (!rc && cudaMemcpy(st->S, src, s->S_floats * 4, cudaMemcpyDeviceToDevice) != cudaSuccess)
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: checkpoint copy failed");
    if (rc) {
        cudaFree(st->S);
        free(st);
        return rc;
    }
    st->refs = 1;
    *out = st;
    return SALA_OK;
}

static int ckpt_push(cu_seq *s, int64_t len, const float *src, sala_err *e)
{
    cu_state *st;
    CU_TRY(ckpt_room(s, e));
    CU_TRY(state_new(s, src, &st, e));
    s->ckpt[s->nckpt++] = cu_ckpt{len, st};
    return SALA_OK;
}

/* The copy is complete when this returns (the model stream is synchronised before and after), so
 * that timing a fork times the copy. The sparse caches are shared chunk by chunk with src
 * (cu_buf_fork; SALA_CUDA_FORK_COPY=1 copies them instead, for comparisons), the checkpoints are
 * shared (refcounted), the lightning states copied. */
static int cu_seq_fork(void *bs, void **out, sala_err *e)
{
    cu_seq *src = (cu_seq *)bs, *s;
    cu_model *m = src->m;
    CUDA_CHECK(cudaStreamSynchronize(m->st));
    CU_TRY(cu_seq_new(m, (void **)&s, e));
    const eng_config *c = &m->c;
    const char *cp = getenv("SALA_CUDA_FORK_COPY");
    const bool share = !(cp && *cp && strcmp(cp, "0"));
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * 2;
    int rc = SALA_OK;
    for (int i = 0; i < c->n_sparse && !rc; i++) {
        for (int k = 0; k < 4 && !rc; k++) {
            const int64_t rows = k < 2 ? src->len : k == 2 ? src->n1[i] : src->n2[i];
            rc = cu_buf_fork(m, &s->cb[4 * i + k], &src->cb[4 * i + k], (size_t)rows * row, share,
                             e);
        }
        s->n1[i] = src->n1[i];
        s->n2[i] = src->n2[i];
    }
    if (!rc) {
        seq_views(s);
        s->cap = m->vm_chunk ? 0 : src->cap;   /* VMM: the next step maps what it needs */
    }
    if (!rc && cudaMemcpyAsync(s->S, src->S, s->S_floats * 4, cudaMemcpyDeviceToDevice, m->st))
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: fork copy failed");
    for (int i = 0; i < src->nckpt && !rc; i++) {
        if (!(rc = ckpt_room(s, e))) {
            src->ckpt[i].st->refs++;
            s->ckpt[s->nckpt++] = src->ckpt[i];
        }
    }
    if (!rc && cudaStreamSynchronize(m->st) != cudaSuccess)
        rc = sala_errf(e, SALA_EINTERNAL, "CUDA: fork copy failed");
    if (rc) {
        cu_seq_free(s);
        return rc;
    }
    s->len = src->len;
    *out = s;
    return SALA_OK;
}

static uint64_t cu_seq_shared_bytes(const void *bs)
{
    const cu_seq *s = (const cu_seq *)bs;
    uint64_t n = 0;
    for (int i = 0; i < 4 * s->m->c.n_sparse; i++) n += cu_buf_shared_bytes(s->m, &s->cb[i]);
    return n;
}

static int cu_seq_checkpoint(void *bs, sala_err *e)
{
    cu_seq *s = (cu_seq *)bs;
    if (s->nckpt && s->ckpt[s->nckpt - 1].len == s->len) {   /* refresh the same length */
        cu_ckpt *k = &s->ckpt[s->nckpt - 1];
        if (k->st->refs > 1) {   /* shared with a fork: a private copy replaces it */
            cu_state *st;
            CU_TRY(state_new(s, s->S, &st, e));
            state_unref(k->st);
            k->st = st;
            return SALA_OK;
        }
        CUDA_CHECK(cudaMemcpy(k->st->S, s->S, s->S_floats * 4, cudaMemcpyDeviceToDevice));
        return SALA_OK;
    }
    return ckpt_push(s, s->len, s->S, e);
}

static int cu_seq_truncate(void *bs, int64_t len, int64_t *reached, sala_err *e)
{
    cu_seq *s = (cu_seq *)bs;
    const eng_sparse_config *sc = &s->m->c.sparse;
    int k = s->nckpt - 1;
    while (k >= 0 && s->ckpt[k].len > len) k--;
    const int64_t to = k >= 0 ? s->ckpt[k].len : 0;
    if (k >= 0)
        CUDA_CHECK(cudaMemcpy(s->S, s->ckpt[k].st->S, s->S_floats * 4, cudaMemcpyDeviceToDevice));
    else
        CUDA_CHECK(cudaMemset(s->S, 0, s->S_floats * 4));
    ckpt_clear(s, k + 1);
    for (int i = 0; i < s->m->c.n_sparse; i++) {
        const int64_t w1 = nwin(to, sc->kernel_size, sc->kernel_stride);
        const int64_t w2 = nwin(to, 4 * sc->kernel_size, 4 * sc->kernel_stride);
        if (s->n1[i] > w1) s->n1[i] = w1;
        if (s->n2[i] > w2) s->n2[i] = w2;
    }
    s->len = to;
    *reached = to;
    return SALA_OK;
}

/* ---- persisted state (engine/engine.h "persisted state"): lightning states fp32, sparse caches
 * of dtype bf16 (ENG_STATE_BF16). Save streams through a pinned staging buffer in chunks of
 * CU_IO_FLOATS values; load runs on several threads in pieces (below); neither side ever holds a
 * whole cache on the host. The bf16 caches (K, V, K1, K2) are written as they are, so a state
 * saved by this backend loads back bit for bit; an f32 state (saved by the CPU backend) is
 * rounded to bf16 (nearest even) on load, exactly as its forward pass would round fresh keys. */
#define CU_IO_FLOATS ((size_t)4 << 20)

namespace {
struct io_buf {
    float *f = nullptr;
    bf16 *b = nullptr;
    ~io_buf()
    {
        if (f) cudaFreeHost(f);
        if (b) cudaFreeHost(b);
    }
    int open(sala_err *e)
    {
        if (cudaMallocHost((void **)&f, CU_IO_FLOATS * 4) != cudaSuccess ||
            cudaMallocHost((void **)&b, CU_IO_FLOATS * 2) != cudaSuccess)
            return sala_errf(e, SALA_ENOMEM, "CUDA: no pinned memory for the state transfer");
        return SALA_OK;
    }
};
}   // namespace

static int save_f32(io_buf &io, eng_state_write_fn fn, void *ud, const char *name,
                    const float *src, size_t n, sala_err *e)
{
    if (!n) return fn(ud, name, NULL, 0, e);
    for (size_t o = 0; o < n; o += CU_IO_FLOATS) {
        const size_t k = n - o < CU_IO_FLOATS ? n - o : CU_IO_FLOATS;
        CUDA_CHECK(cudaMemcpy(io.f, src + o, k * 4, cudaMemcpyDeviceToHost));
        CU_TRY(fn(ud, name, io.f, k * 4, e));
    }
    return SALA_OK;
}

static int save_bf16(io_buf &io, eng_state_write_fn fn, void *ud, const char *name,
                     const bf16 *src, size_t n, sala_err *e)
{
    if (!n) return fn(ud, name, NULL, 0, e);
    for (size_t o = 0; o < n; o += CU_IO_FLOATS) {
        const size_t k = n - o < CU_IO_FLOATS ? n - o : CU_IO_FLOATS;
        CUDA_CHECK(cudaMemcpy(io.b, src + o, k * 2, cudaMemcpyDeviceToHost));
        CU_TRY(fn(ud, name, io.b, k * 2, e));   /* dtype bf16: the caches as they are */
    }
    return SALA_OK;
}

static int64_t cu_seq_ckpt_lens(const void *bs, int64_t *lens, int64_t cap)
{
    const cu_seq *s = (const cu_seq *)bs;
    for (int i = 0; i < s->nckpt && i < cap; i++) lens[i] = s->ckpt[i].len;
    return s->nckpt;
}

static const char *const state_names[4] = {"sparse.K", "sparse.V", "sparse.K1", "sparse.K2"};

static int cu_seq_save(void *bs, eng_state_write_fn fn, void *ud, sala_err *e)
{
    cu_seq *s = (cu_seq *)bs;
    const eng_config *c = &s->m->c;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim);
    io_buf io;
    CU_TRY(io.open(e));
    CUDA_CHECK(cudaStreamSynchronize(s->m->st));
    CU_TRY(save_f32(io, fn, ud, "lin.S", s->S, s->S_floats, e));
    for (int i = 0; i < s->nckpt; i++)
        CU_TRY(save_f32(io, fn, ud, "ckpt.S", s->ckpt[i].st->S, s->S_floats, e));
    if (!s->nckpt) CU_TRY(fn(ud, "ckpt.S", NULL, 0, e));
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < c->n_sparse; i++) {
            const bf16 *buf = k == 0 ? s->K[i] : k == 1 ? s->V[i] : k == 2 ? s->K1[i] : s->K2[i];
            const int64_t rows = k < 2 ? s->len : k == 2 ? s->n1[i] : s->n2[i];
            CU_TRY(save_bf16(io, fn, ud, state_names[k], buf, (size_t)rows * row, e));
        }
    return SALA_OK;
}

/* ---- parallel load: the state is cut into pieces of CU_LOAD_FLOATS values; CU_LOAD_THREADS
 * workers each take the next piece, read it through r (checksums verified by the reader) into
 * one of their two pinned slots and upload it on their own stream, so that reading and hashing
 * run on several cores and overlap the copies. Sparse sections of a bf16 state (what
 * cu_seq_save writes) go up as read; those of an f32 state (saved by the CPU backend) are
 * rounded to bf16 first. The reader must allow concurrent reads (engine.h). */
#define CU_LOAD_FLOATS ((size_t)2 << 20)
#define CU_LOAD_THREADS 8

namespace {
struct load_job {
    const char *name;    /* section */
    size_t off;          /* byte offset in the section */
    void *dst;           /* device: bf16 when half, else fp32 */
    size_t n;            /* values */
    bool half;           /* dst is bf16 */
    bool src_half;       /* the section holds bf16 (only with half) */
};

struct load_pool {
    const eng_state_reader *r;
    const std::vector<load_job> *jobs;
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    int rc = SALA_OK;
    sala_err err{};
    void fail(int code, const sala_err &e)
    {
        std::lock_guard<std::mutex> g(mu);
        if (!rc) {
            rc = code;
            err = e;
        }
        stop = true;
    }
};
}   // namespace

static int load_work(load_pool *p, cudaStream_t st, cudaEvent_t *ev, float **f, bf16 **b,
                     sala_err *e)
{
    const std::vector<load_job> &jobs = *p->jobs;
    for (int k = 0; !p->stop; k ^= 1) {
        const size_t j = p->next.fetch_add(1);
        if (j >= jobs.size()) break;
        const load_job &J = jobs[j];
        CUDA_CHECK(cudaEventSynchronize(ev[k]));   /* the slot's previous upload is done */
        if (J.src_half) {
            CU_TRY(p->r->read(p->r->ud, J.name, J.off, b[k], J.n * 2, e));
            CUDA_CHECK(cudaMemcpyAsync(J.dst, b[k], J.n * 2, cudaMemcpyHostToDevice, st));
            CUDA_CHECK(cudaEventRecord(ev[k], st));
            continue;
        }
        CU_TRY(p->r->read(p->r->ud, J.name, J.off, f[k], J.n * 4, e));
        if (J.half) {
            for (size_t i = 0; i < J.n; i++) b[k][i] = __float2bfloat16_rn(f[k][i]);
            CUDA_CHECK(cudaMemcpyAsync(J.dst, b[k], J.n * 2, cudaMemcpyHostToDevice, st));
        } else {
            CUDA_CHECK(cudaMemcpyAsync(J.dst, f[k], J.n * 4, cudaMemcpyHostToDevice, st));
        }
        CUDA_CHECK(cudaEventRecord(ev[k], st));
    }
    CUDA_CHECK(cudaStreamSynchronize(st));
    return SALA_OK;
}

static void load_worker(load_pool *p, int dev)
{
    sala_err e{};
    cudaStream_t st = nullptr;
    cudaEvent_t ev[2] = {nullptr, nullptr};
    float *f[2] = {nullptr, nullptr};
    bf16 *b[2] = {nullptr, nullptr};
    int rc = SALA_OK;
    if (cudaSetDevice(dev) != cudaSuccess ||
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess)
        rc = sala_errf(&e, SALA_EINTERNAL, "CUDA: no stream for the state load");
    for (int k = 0; k < 2 && !rc; k++)
        if (cudaEventCreateWithFlags(&ev[k], cudaEventDisableTiming) != cudaSuccess ||
            cudaMallocHost((void **)&f[k], CU_LOAD_FLOATS * 4) != cudaSuccess ||
            cudaMallocHost((void **)&b[k], CU_LOAD_FLOATS * 2) != cudaSuccess)
            rc = sala_errf(&e, SALA_ENOMEM, "CUDA: no pinned memory for the state load");
    if (!rc) rc = load_work(p, st, ev, f, b, &e);
    if (st) cudaStreamSynchronize(st);   /* nothing of ours in flight before the slots go */
    for (int k = 0; k < 2; k++) {
        if (f[k]) cudaFreeHost(f[k]);
        if (b[k]) cudaFreeHost(b[k]);
        if (ev[k]) cudaEventDestroy(ev[k]);
    }
    if (st) cudaStreamDestroy(st);
    if (rc) p->fail(rc, e);
}

static void jobs_add(std::vector<load_job> &jobs, const char *name, size_t off, void *dst,
                     size_t n, bool half, bool src_half)
{
    const size_t esz = src_half ? 2 : 4;
    for (size_t o = 0; o < n; o += CU_LOAD_FLOATS) {
        const size_t k = n - o < CU_LOAD_FLOATS ? n - o : CU_LOAD_FLOATS;
        void *d = half ? (void *)((bf16 *)dst + o) : (void *)((float *)dst + o);
        jobs.push_back(load_job{name, off + o * esz, d, k, half, src_half});
    }
}

static int seq_load_into(cu_seq *s, int64_t len, const int64_t *ckpt_len, int64_t nckpt,
                         int dtype, const eng_state_reader *r, sala_err *e)
{
    const eng_config *c = &s->m->c;
    const eng_sparse_config *sc = &c->sparse;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim);
    if (dtype != ENG_STATE_F32 && dtype != ENG_STATE_BF16)   /* engine.c refuses these */
        return sala_errf(e, SALA_EUNSUP, "state: dtype %d is unknown", dtype);
    const bool sh = dtype == ENG_STATE_BF16;
    const size_t esz = sh ? 2 : 4;
    if (len > 0) CU_TRY(cu_seq_cap_solid(s, len + CU_LOAD_HEADROOM, len, e));
    for (int64_t i = 0; i < nckpt; i++) CU_TRY(ckpt_push(s, ckpt_len[i], s->S, e));
    CUDA_CHECK(cudaDeviceSynchronize());   /* allocations and copies above before the uploads */
    const int64_t w1 = nwin(len, sc->kernel_size, sc->kernel_stride);
    const int64_t w2 = nwin(len, 4 * sc->kernel_size, 4 * sc->kernel_stride);
    std::vector<load_job> jobs;
    try {
        jobs_add(jobs, "lin.S", 0, s->S, s->S_floats, false, false);
        for (int64_t i = 0; i < nckpt; i++)
            jobs_add(jobs, "ckpt.S", (size_t)i * s->S_floats * 4, s->ckpt[i].st->S, s->S_floats, false,
                     false);
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < c->n_sparse; i++) {
                bf16 *buf = k == 0 ? s->K[i] : k == 1 ? s->V[i] : k == 2 ? s->K1[i] : s->K2[i];
                const size_t n = (size_t)(k < 2 ? len : k == 2 ? w1 : w2) * row;
                if (n) jobs_add(jobs, state_names[k], (size_t)i * n * esz, buf, n, true, sh);
            }
    } catch (...) {
        return sala_errf(e, SALA_ENOMEM, "out of memory for the state load");
    }
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    load_pool p;
    p.r = r;
    p.jobs = &jobs;
    unsigned nt = std::thread::hardware_concurrency();
    nt = nt < 1 ? 1 : nt > CU_LOAD_THREADS ? CU_LOAD_THREADS : nt;
    if (nt > jobs.size()) nt = jobs.size() ? (unsigned)jobs.size() : 1;
    std::vector<std::thread> th;
    try {
        for (unsigned t = 1; t < nt; t++) th.emplace_back(load_worker, &p, dev);
    } catch (...) {
        p.fail(SALA_ENOMEM, sala_err{});   /* the workers already started stop; error below */
    }
    load_worker(&p, dev);
    for (auto &t : th) t.join();
    if (p.rc) {
        if (e) *e = p.err;
        if (!p.err.msg[0]) return sala_errf(e, p.rc, "CUDA: could not start the state load threads");
        return p.rc;
    }
    for (int i = 0; i < c->n_sparse; i++) {
        s->n1[i] = w1;
        s->n2[i] = w2;
    }
    s->len = len;
    return SALA_OK;
}

static int cu_seq_load(void *bm, int64_t len, const int64_t *ckpt_len, int64_t nckpt, int dtype,
                       const eng_state_reader *r, void **out, sala_err *e)
{
    cu_seq *s;
    *out = NULL;
    CU_TRY(cu_seq_new(bm, (void **)&s, e));
    const int rc = seq_load_into(s, len, ckpt_len, nckpt, dtype, r, e);
    if (rc) {
        cu_seq_free(s);
        return rc;
    }
    *out = s;
    return SALA_OK;
}

static int cu_forward_entry(void *bs, const eng_forward_args *a, sala_err *e)
{
    return cu_forward((cu_seq *)bs, a, e);
}

static int cu_forward_batch_entry(void *const *bs, const eng_batch_args *a, sala_err *e)
{
    return cu_forward_batch((cu_seq *const *)bs, a, e);
}

/* Greedy picks on the device unless SALA_CUDA_PICK=0 (read per step: the logits row goes to
 * the host and engine/sampler.c picks, as before). */
static bool cu_pick_native(void *bm)
{
    (void)bm;
    return !cu_env_is("SALA_CUDA_PICK", "0");
}

static const eng_backend cu_backend = {
    /* .name = */ "cuda",
    /* .model_load = */ cu_model_load,
    /* .model_free = */ cu_model_free,
    /* .seq_new = */ cu_seq_new,
    /* .seq_free = */ cu_seq_free,
    /* .seq_fork = */ cu_seq_fork,
    /* .seq_len = */ cu_seq_len,
    /* .seq_checkpoint = */ cu_seq_checkpoint,
    /* .seq_truncate = */ cu_seq_truncate,
    /* .forward = */ cu_forward_entry,
    /* .model_random = */ cu_model_random,
    /* .profile = */ cu_profile,
    /* .seq_ckpt_lens = */ cu_seq_ckpt_lens,
    /* .seq_save = */ cu_seq_save,
    /* .seq_load = */ cu_seq_load,
    /* .state_dtype = */ ENG_STATE_BF16,   /* its caches are bf16: saved as they are */
    /* .forward_batch = */ cu_forward_batch_entry,
    /* .seq_shared_bytes = */ cu_seq_shared_bytes,
    /* .pick_native = */ cu_pick_native,
};

extern "C" __attribute__((visibility("default"))) const eng_backend *sala_cuda_backend(void)
{
    return &cu_backend;
}

/* 0 when a usable GPU is present, else -1 with the reason in why. */
extern "C" __attribute__((visibility("default"))) int sala_cuda_probe(char *why, size_t cap)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        snprintf(why, cap, "%s", cudaGetErrorString(err));
        return -1;
    }
    if (n < 1) {
        snprintf(why, cap, "no GPU found");
        return -1;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess && p.major < 9) {
        snprintf(why, cap, "GPU 0 (%s) is compute capability %d.%d; this build needs 9.0",
                 p.name, p.major, p.minor);
        return -1;
    }
    return 0;
}
