/* cu_forward.cu: the CUDA forward pass over one sequence (SALA-SPEC §3.1, §3.9), op for op the
 * twin of engine/cpu/forward.c. A call is processed in steps of at most CU_CHUNK tokens:
 * activations exist for one step, the sparse K/V and compressed keys grow in device buffers and
 * the lightning states stay on the device. Logits are computed only for the rows asked for.
 *
 * Sparse layers: a query at position p uses InfLLM-V2 iff p + 1 >= dense_len, else dense causal
 * attention (the engine rule of forward.c); K1/K2 are maintained from token 0. */
#include "engine/cuda/cu_int.h"

#include <math.h>
#include <stdlib.h>
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

/* The three GEMM forms: few rows (T <= cu_gemv_max_t(): decode, a prompt's last few tokens)
 * through the GEMV of cu_gemv.cu when the operands fit it (SALA_CUDA_GEMV=0: never); otherwise
 * cu_lt_gemm (cuBLASLt for prefill shapes, cublasGemmEx otherwise). */
static int gemm_any(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T,
                    float alpha, float beta, void *y, int ldy, int form, sala_err *e)
{
    if (T <= cu_gemv_max_t() && cu_gemv_fits(W, in, x, in, T)) {
        const cu_gemv_args ga = {W, out, in, x, in, T, y, ldy, alpha, form,
                                 cu_gemv_pick(out, in, T)};
        CUDA_CHECK(k_gemv(m->st, &ga));
        return SALA_OK;
    }
    return cu_lt_gemm(m, W, out, in, x, T, alpha, beta, y, ldy,
                      form == CU_GEMV_BF16 ? CUDA_R_16BF : CUDA_R_32F, e);
}

int cu_gemm(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float *y, int ldy,
            sala_err *e)
{
    return gemm_any(m, W, out, in, x, T, 1.0f, 0.0f, y, ldy, CU_GEMV_F32, e);
}

int cu_gemm_acc(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
                float *y, int ldy, sala_err *e)
{
    return gemm_any(m, W, out, in, x, T, alpha, 1.0f, y, ldy, CU_GEMV_ACC, e);
}

int cu_gemm_bf16(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, bf16 *y,
                 int ldy, sala_err *e)
{
    return gemm_any(m, W, out, in, x, T, 1.0f, 0.0f, y, ldy, CU_GEMV_BF16, e);
}

int cu_gemm_acc16(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
                  bf16 *y, int ldy, sala_err *e)
{
    return cu_lt_gemm(m, W, out, in, x, T, alpha, 1.0f, y, ldy, CUDA_R_16BF, e);
}

/* The residual fold of a prefill step: x[r0 + t] += alpha · W v[t] for t < T, x fp32 or bf16 as
 * the step's s->x16 says. */
static int gemm_res(cu_seq *s, const bf16 *W, int out, int in, const bf16 *v, int r0, int T,
                    float alpha, sala_err *e)
{
    const size_t o0 = (size_t)r0 * out;
    if (s->x16) return cu_gemm_acc16(s->m, W, out, in, v, T, alpha, (bf16 *)s->x + o0, out, e);
    return cu_gemm_acc(s->m, W, out, in, v, T, alpha, s->x + o0, out, e);
}

/* Few-row steps: the gate/up product and SwiGLU as one GEMV (form CU_GEMV_SWIGLU: the same bits
 * as the GEMV + k_swiglu) when the GEMV takes the operands; SALA_CUDA_FUSE=0 (read per step):
 * the two launches. *ga: the launch's arguments. */
static bool swiglu_fused(const cu_seq *s, const cu_layer *L, const bf16 *h, int T,
                         cu_gemv_args *ga)
{
    const eng_config *c = &s->m->c;
    const int I = (int)c->intermediate_size, D = (int)c->hidden_size;
    if (cu_env_is("SALA_CUDA_FUSE", "0") || T > cu_gemv_max_t() ||
        !cu_gemv_fits(L->w_gu, D, h, D, T))
        return false;
    const cu_gemv_args a = {L->w_gu, 2 * I, D, h, D, T, s->act, I, 1.0f, CU_GEMV_SWIGLU,
                            cu_gemv_pick(2 * I, D, T)};
    *ga = a;
    return true;
}

/* Pinned host memory for a graph step's upload and logits (s->hpin), unless SALA_CUDA_PINNED=0
 * (read per step: pageable copies from the stack and into the caller's buffer, as before). */
static bool step_pinned(const cu_seq *s)
{
    return s->hpin && !cu_env_is("SALA_CUDA_PINNED", "0");
}

/* Prefill steps (T > CU_FOLD_MIN tokens; decode keeps its own path):
 *   fold: o_proj and down accumulate rs · W o into the residual x in the GEMM (beta 1), so the
 *         norms read x only (SALA_CUDA_RES=old: outputs to a, then k_add_norm adds); x is bf16
 *         (s->x16; Hugging Face's residual stream, SALA-SPEC §3.1: the embedding and each
 *         residual add rounded to bf16, the add in the GEMM's fp32 epilogue) unless
 *         SALA_CUDA_RES=f32 (the fp32 stream of the CPU reference and of decode);
 *   gu16: the gate/up GEMM writes bf16, SwiGLU reads it (SALA_CUDA_GU=f32: fp32 + k_swiglu).
 * Both read at each step. */
#define CU_FOLD_MIN 8

/* A launch: marked in the profile before and after (the time between two launches is OP_IDLE),
 * and skipped while a replayed graph segment has made it (m->gskip). */
#define GEMM(...) do { \
        if (!m->gskip) { \
            cu_prof_mark(m, OP_GEMM); \
            CU_TRY(cu_gemm(m, __VA_ARGS__, e)); \
            cu_prof_end(m); \
        } \
    } while (0)
#define K(cat, call) do { \
        if (!m->gskip) { \
            cu_prof_mark(m, cat); \
            CUDA_CHECK(call); \
            cu_prof_end(m); \
        } \
    } while (0)

static la_args la_of(const cu_seq *s, const cu_layer *L, const float *proj, const bf16 *proj16,
                     int ld, int T, int64_t p0);

/* ---- CUDA graph of a single-sequence decode step (T = 1, one logits row) ----
 * The step's launches fall into static segments (their arguments are the same at every step:
 * shapes and device addresses; the position is read from s->dstep by the two kernels that need
 * it, sparse_prep and the fused lightning decode) and, in each sparse layer, one dynamic segment
 * (compression, stage 1, top-K, attention: grids and arguments that follow the length; cu_infllm
 * takes them by value) launched directly every step. A static segment is captured once
 * (cudaStreamBeginCapture .. EndCapture, instantiated) and replayed with cudaGraphLaunch while
 * the host code runs as before with its launches skipped (host-side state such as n1/n2 keeps
 * moving). The segments are re-captured when any device address they baked in changes (graph_key:
 * scratch regrown, caches moved, a loaded state). No graph: SALA_CUDA_GRAPH=0 (read per step),
 * event profiling (mode 1; CUPTI's mode 2 keeps the graph), select hooks, per-layer timing,
 * SALA_CUDA_DECODE=old, a lightning shape without the fused decode kernel. */

static const int64_t *step_pos(const cu_seq *s)
{
    return s->m->gmode != CU_G_OFF ? (const int64_t *)(s->dstep + 2) : NULL;
}

/* Start of a static segment: capture it, or launch its graph and skip its launches. */
static int seg_begin(cu_seq *s, sala_err *e)
{
    cu_model *m = s->m;
    if (m->gmode == CU_G_OFF) return SALA_OK;
    if (m->gseg >= s->g.nseg)
        return sala_errf(e, SALA_EINTERNAL, "CUDA graph: segment %d of %d", m->gseg, s->g.nseg);
    if (m->gmode == CU_G_CAPTURE) {
        CUDA_CHECK(cudaStreamBeginCapture(m->st, cudaStreamCaptureModeThreadLocal));
    } else {
        CUDA_CHECK(cudaGraphLaunch(s->g.ex[m->gseg], m->st));
        m->gskip = true;
    }
    return SALA_OK;
}

/* End of a static segment: instantiate and launch what was captured. */
static int seg_end(cu_seq *s, sala_err *e)
{
    cu_model *m = s->m;
    if (m->gmode == CU_G_OFF) return SALA_OK;
    if (m->gmode == CU_G_CAPTURE) {
        cudaGraph_t gr = NULL;
        CUDA_CHECK(cudaStreamEndCapture(m->st, &gr));
        cudaGraphExec_t ex = NULL;
        const cudaError_t err = cudaGraphInstantiate(&ex, gr, 0);
        cudaGraphDestroy(gr);
        CUDA_CHECK(err);
        s->g.ex[m->gseg] = ex;
        CUDA_CHECK(cudaGraphLaunch(ex, m->st));
    }
    m->gskip = false;
    m->gseg++;
    return SALA_OK;
}

static void graph_drop(cu_graph *g)
{
    for (int i = 0; i < g->nseg; i++)
        if (g->ex[i]) cudaGraphExecDestroy(g->ex[i]);
    free(g->ex);
    free(g->key);
    g->ex = NULL;
    g->key = NULL;
    g->nseg = g->nkey = 0;
    g->ok = false;
}

void cu_graph_free(cu_seq *s)
{
    graph_drop(&s->g);
}

/* The device addresses a decode step's static segments bake in (k: room for graph_key_n). */
static int graph_key_n(const cu_model *m) { return 26 + 2 * (int)m->c.n_sparse; }
static int graph_key(const cu_seq *s, void **k)
{
    int n = 0;
    void *fixed[] = {s->x, s->a, s->proj, s->o, s->gu, s->h, s->ob, s->Qb, s->act, s->hf,
                     s->logits, s->dstep, s->S, s->Qh, s->Qd, s->Kh, s->Kw, s->Vh, s->Oh,
                     s->Sb, s->Ab, (void *)(intptr_t)s->tmax,
                     /* the step's form: the SwiGLU GEMV or GEMV + k_swiglu; row norms with
                        programmatic dependent launch or without */
                     (void *)(intptr_t)cu_env_is("SALA_CUDA_FUSE", "0"),
                     (void *)(intptr_t)cu_row_pdl(1)};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) k[n++] = fixed[i];
    for (int64_t i = 0; i < s->m->c.n_sparse; i++) {
        k[n++] = s->K[i];
        k[n++] = s->V[i];
    }
    return n;
}

/* Whether this step (T tokens, nout logits rows) runs through the graph; sets m->gmode to
 * CU_G_REPLAY (s's graph fits) or CU_G_CAPTURE (s's graph dropped, room for a new one). */
static int graph_setup(cu_seq *s, int T, int64_t nout, const eng_forward_args *fa, sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    m->gmode = CU_G_OFF;
    m->gseg = 0;
    m->gskip = false;
    if (T != 1 || nout != 1 || cu_env_is("SALA_CUDA_GRAPH", "0")) return SALA_OK;
    /* SALA_CUDA_GRAPH=force (tests): a decode step that cannot take the graph is an error */
    const int no = cu_env_is("SALA_CUDA_GRAPH", "force") ? SALA_EUNSUP : SALA_OK;
    if (fa->select_fn || fa->layer_seconds || m->prof.on || cu_decode_old())
        return no ? sala_errf(e, no, "CUDA graph forced: hooks, timing or SALA_CUDA_DECODE=old")
                  : SALA_OK;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (c->mixer[l] != ENG_MIXER_SPARSE) {
            la_args la = la_of(s, &m->L[l], s->proj, NULL, m->L[l].nin, 1, s->len);
            if (!cu_la_decode_fused(&la))
                return no ? sala_errf(e, no, "CUDA graph forced: no fused lightning decode")
                          : SALA_OK;
        }
    void *k[26 + 2 * 64];
    if (graph_key_n(m) > (int)(sizeof(k) / sizeof(k[0])))
        return no ? sala_errf(e, no, "CUDA graph forced: %lld sparse layers",
                              (long long)c->n_sparse) : SALA_OK;
    const int nk = graph_key(s, k);
    cu_graph *g = &s->g;
    if (g->ok && g->nkey == nk && !memcmp(g->key, k, (size_t)nk * sizeof(void *))) {
        m->gmode = CU_G_REPLAY;
        return SALA_OK;
    }
    graph_drop(g);
    const int nseg = 1 + (int)c->n_sparse;
    g->ex = (cudaGraphExec_t *)calloc((size_t)nseg, sizeof(cudaGraphExec_t));
    g->key = (void **)malloc((size_t)nk * sizeof(void *));
    if (!g->ex || !g->key) {
        graph_drop(g);
        return sala_errf(e, SALA_ENOMEM, "CUDA graph: out of memory");
    }
    g->nseg = nseg;
    memcpy(g->key, k, (size_t)nk * sizeof(void *));
    g->nkey = nk;
    g->captures++;
    m->gmode = CU_G_CAPTURE;
    return SALA_OK;
}

/* After the step: a capture that completed every segment makes s's graph valid; a failed step
 * ends a capture still open and drops the graph. */
static void graph_finish(cu_seq *s, int rc)
{
    cu_model *m = s->m;
    if (m->gmode == CU_G_OFF) return;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(m->st, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone) {
        cudaGraph_t gr = NULL;
        if (cudaStreamEndCapture(m->st, &gr) == cudaSuccess && gr) cudaGraphDestroy(gr);
        cudaGetLastError();
    }
    if (m->gmode == CU_G_CAPTURE) {
        if (!rc && m->gseg == s->g.nseg) s->g.ok = true;
        else graph_drop(&s->g);
    } else if (rc) {
        graph_drop(&s->g);
    }
    m->gmode = CU_G_OFF;
    m->gseg = 0;
    m->gskip = false;
}

/* The shapes a sparse layer's launches need. */
typedef struct {
    int li, D, nh, nkv, hd, nq, Kq, k1, s1;
    float scale;
} sp_shape;

static sp_shape sp_shape_of(const cu_model *m, int layer)
{
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    sp_shape z;
    z.li = m->L[layer].kind_index;
    z.D = (int)c->hidden_size;
    z.nh = (int)c->num_attention_heads;
    z.nkv = (int)c->num_key_value_heads;
    z.hd = (int)c->head_dim;
    z.nq = z.nh * z.hd;
    z.Kq = (int)(sc->topk + sc->window_size / sc->block_size);
    z.k1 = (int)sc->kernel_size;
    z.s1 = (int)sc->kernel_stride;
    z.scale = (float)(1.0 / sqrt((double)z.hd));
    return z;
}

/* T tokens of s at p0 into sparse layer z.li: q rows to Qb (T, nh, hd), k/v into s's cache,
 * then s's compressed keys K1/K2 up to p0 + T. proj16: proj holds bf16 values. */
static int sparse_append(cu_seq *s, const sp_shape *z, const float *proj, bool proj16, int ld,
                         int T, int64_t p0, bf16 *Qb, sala_err *e)
{
    cu_model *m = s->m;
    const cudaStream_t st = m->st;
    const int li = z->li, k1 = z->k1, s1 = z->s1, row = z->nkv * z->hd;
    if (proj16)
        K(OP_OTHER, k_sparse_prep(st, (const bf16 *)proj, ld, T, z->nh, z->nkv, z->hd, Qb,
                                  s->K[li], s->V[li], p0, step_pos(s)));
    else
        K(OP_OTHER, k_sparse_prep(st, proj, ld, T, z->nh, z->nkv, z->hd, Qb, s->K[li], s->V[li],
                                  p0, step_pos(s)));
    CU_TRY(seg_end(s, e));   /* a graph step: the rest of the layer's attention is dynamic */
    const int64_t w1 = nwin(p0 + T, k1, s1), w2 = nwin(p0 + T, 4 * k1, 4 * s1);
    K(OP_SCORE, k_compress(st, s->K[li], row, s->n1[li], w1, k1, s1, s->K1[li]));
    K(OP_SCORE, k_compress(st, s->K[li], row, s->n2[li], w2, 4 * k1, 4 * s1, s->K2[li]));
    if (w1 > s->n1[li]) s->n1[li] = w1;
    if (w2 > s->n2[li]) s->n2[li] = w2;
    return SALA_OK;
}

/* The mixer's o_proj of the rows [r0, T) of o (T, in): into s->a's, or with fold (rs != NULL)
 * x += rs · W o. */
static int out_proj(cu_seq *s, const bf16 *W, int out, int in, const bf16 *o, int r0, int T,
                    const float *rs, sala_err *e)
{
    cu_model *m = s->m;
    if (m->gskip || r0 == T) return SALA_OK;
    const bf16 *or0 = o + (size_t)r0 * in;
    cu_prof_mark(m, OP_GEMM);
    if (rs) CU_TRY(gemm_res(s, W, out, in, or0, r0, T - r0, *rs, e));
    else CU_TRY(cu_gemm(m, W, out, in, or0, T - r0, s->a + (size_t)r0 * out, out, e));
    cu_prof_end(m);
    return SALA_OK;
}

/* Sparse layer: K/V and the compressed keys of all T tokens; attention, gate and o_proj for the
 * queries [r0, T) (r0 > 0 only in the last layer, eng_tail_from). */
static int sparse_mixer(cu_seq *s, int layer, int64_t p0, int T, int r0,
                        const eng_forward_args *fa, const float *fold, sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    const cu_layer *L = &m->L[layer];
    const sp_shape z = sp_shape_of(m, layer);
    const int li = z.li, D = z.D, nh = z.nh, nkv = z.nkv, hd = z.hd, Kq = z.Kq;
    const int k1 = z.k1, s1 = z.s1;
    const float scale = z.scale;
    cudaStream_t st = m->st;

    /* (T, q|k|v|gate); rows before r0 need only k|v (their q and gate columns are left as they
     * were: sparse_prep copies them into Qb rows no query reads). Prefill steps: in bf16 (p16,
     * as lightning_mixer; the split rounds q|k|v to bf16 either way, the gate reads z rounded as
     * Hugging Face's bf16 model has it; SALA_CUDA_SP_PROJ=f32 at each step: fp32). */
    const bool p16 = T > CU_FOLD_MIN && !cu_env_is("SALA_CUDA_SP_PROJ", "f32");
    bf16 *pb = (bf16 *)s->proj;
    const bf16 *wkv = L->w_in + (size_t)L->nq * D;
    const size_t o0 = (size_t)r0 * L->nin;
    if (p16) {   /* never a graph step (T > 1) */
        cu_prof_mark(m, OP_GEMM);
        if (r0 > 0)
            CU_TRY(cu_gemm_bf16(m, wkv, L->nk + L->nv, D, s->h, r0, pb + L->nq, L->nin, e));
        if (r0 < T)
            CU_TRY(cu_gemm_bf16(m, L->w_in, L->nin, D, s->h + (size_t)r0 * D, T - r0, pb + o0,
                                L->nin, e));
        cu_prof_end(m);
    } else {
        if (r0 > 0) GEMM(wkv, L->nk + L->nv, D, s->h, r0, s->proj + L->nq, L->nin);
        if (r0 < T) GEMM(L->w_in, L->nin, D, s->h + (size_t)r0 * D, T - r0, s->proj + o0, L->nin);
    }
    CU_TRY(sparse_append(s, &z, s->proj, p16, L->nin, T, p0, s->Qb, e));

    int64_t split = sc->dense_len - 1 - p0;                            /* queries t < split: dense */
    if (split < 0) split = 0;
    if (split > T) split = T;
    const int ts = (int)split < r0 ? r0 : (int)split;                  /* first sparse query */
    attn_args aa = {s->Qb, s->K[li], s->V[li], s->o, s->sel, Kq, p0, r0, ts - r0, nh, nkv, hd,
                    (int)sc->block_size, scale, NULL, 0};
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
        /* a prefill step's band form: its state (n, nh, hd + 2) in gu (T, 2I), free until the
         * MLP (decode keeps the split kernels' own scratch) */
        if (T > CU_FOLD_MIN) {
            aa.part = s->gu;
            aa.part_cap = (size_t)T * 2 * (size_t)c->intermediate_size;
        }
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
    CU_TRY(seg_begin(s, e));
    if (r0 == T) return SALA_OK;
    const int zoff = L->nq + L->nk + L->nv;
    if (p16)
        K(OP_OTHER, k_gate(st, s->o + (size_t)r0 * nq, pb + (size_t)r0 * L->nin, L->nin, zoff,
                           T - r0, nq, s->ob + (size_t)r0 * nq));
    else
        K(OP_OTHER, k_gate(st, s->o + (size_t)r0 * nq, s->proj + (size_t)r0 * L->nin, L->nin,
                           zoff, T - r0, nq, s->ob + (size_t)r0 * nq));
    return out_proj(s, L->w_o, D, nq, s->ob, r0, T, fold, e);
}

/* Lightning arguments for T tokens of sequence s at p0 of layer L, q|k|v|z read from proj or,
 * when proj16 is not NULL, from proj16 (bf16; proj NULL) (row stride ld), with s's scratch and
 * state. */
static la_args la_of(const cu_seq *s, const cu_layer *L, const float *proj, const bf16 *proj16,
                     int ld, int T, int64_t p0)
{
    const cu_model *m = s->m;
    const eng_config *c = &m->c;
    const int nh = (int)c->lightning_nh, d = (int)c->lightning_head_dim;
    la_args la;
    memset(&la, 0, sizeof(la));
    la.proj = proj;
    la.proj16 = proj16;
    la.ld = ld;
    la.T = T;
    la.Tp = T == 1 ? 1 : (T + CU_LA_C - 1) / CU_LA_C * CU_LA_C;
    la.nh = nh;
    la.d = d;
    la.p0 = p0;
    la.p0d = step_pos(s);
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
    return la;
}

/* Lightning layer: the state takes all T tokens, o_proj the rows [r0, T). Prefill steps
 * (T > CU_FOLD_MIN) whose lightning prefill takes bf16 (cu_la_proj16) have the input GEMM
 * write q|k|v|z in bf16 (fp32 accumulation; HF's bf16 model rounds them so too) into the first
 * half of proj: half the bytes written and read (SALA_CUDA_LA_PROJ=f32, read at each step:
 * fp32 as decode). */
static int lightning_mixer(cu_seq *s, int layer, int64_t p0, int T, int r0, const float *fold,
                           sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const cu_layer *L = &m->L[layer];
    const int D = (int)c->hidden_size, nh = (int)c->lightning_nh, d = (int)c->lightning_head_dim;
    cudaStream_t st = m->st;

    const bool p16 =
        T > CU_FOLD_MIN && !cu_env_is("SALA_CUDA_LA_PROJ", "f32") && cu_la_proj16(d);
    bf16 *pb = (bf16 *)s->proj;
    if (p16) {   /* (T, q|k|v|z) bf16 */
        cu_prof_mark(m, OP_GEMM);
        CU_TRY(cu_gemm_bf16(m, L->w_in, L->nin, D, s->h, T, pb, L->nin, e));
        cu_prof_end(m);
    } else {
        GEMM(L->w_in, L->nin, D, s->h, T, s->proj, L->nin);           /* (T, q|k|v|z) */
    }
    la_args la = la_of(s, L, p16 ? NULL : s->proj, p16 ? pb : NULL, L->nin, T, p0);
    if (T == 1) {
        K(OP_LIGHTNING, k_la_prep(st, &la));
        K(OP_LIGHTNING, k_la_step(st, &la));
    } else {
        cu_prof_mark(m, OP_LIGHTNING);
        CU_TRY(cu_lightning_prefill(m->blas, st, &la, m->la_compute, e));
        cu_prof_end(m);
    }
    K(OP_LIGHTNING, k_la_out(st, &la, s->ob));
    return out_proj(s, L->w_o, D, nh * d, s->ob, r0, T, fold, e);
}

int cu_seq_score_room(cu_seq *s, int64_t end, sala_err *e)
{
    const eng_config *c = &s->m->c;
    const eng_sparse_config *sc = &c->sparse;
    if (end < sc->dense_len) return SALA_OK;
    const int64_t nbs = (end - 1) / sc->block_size + 1;   /* (tmax, nkv, nbs) */
    if (nbs * 4 > 200 * 1024)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend: %lld tokens exceed the top-k kernel's "
                         "%d blocks", (long long)end, 200 * 1024 / 4);
    if (nbs <= s->score_nbs) return SALA_OK;
    /* headroom for the steps after: a quarter, at most 1,024 blocks (64K tokens of decode
     * between two regrowths; a quarter of a 1M call was 0.375 GiB of the peak) */
    int64_t want = nbs + (nbs / 4 < 1024 ? nbs / 4 : 1024) + 64;
    want = (want + 3) & ~(int64_t)3;   /* rows 16-byte aligned: top-K's float4 loads (a prompt
                                          of any length; the benchmark's round ones always were) */
    if (want > 200 * 1024 / 4) want = 200 * 1024 / 4;
    cudaFree(s->score);
    s->score = NULL;
    s->score_nbs = 0;
    CUDA_CHECK(cudaMalloc((void **)&s->score, (size_t)s->tmax * c->num_key_value_heads *
                          (size_t)want * 4));
    s->score_nbs = want;
    return SALA_OK;
}

/* ---- greedy pick of a decode step (eng_seq_decode_greedy; cu_pick.cu) ----
 * Launched directly after the step's last graph segment (its arguments change with the
 * penalty), so the graph is the same with and without a pick. */

/* Mark pk's penalized ids with a new stamp (the mark and id buffers allocated or grown here). */
static int pick_marks(cu_seq *s, const eng_pick *pk, sala_err *e)
{
    cudaStream_t st = s->m->st;
    const size_t V = (size_t)s->m->c.vocab_size;
    const int64_t n = pk->nrecent;
    if (n > (int64_t)(SIZE_MAX / 8))
        return sala_errf(e, SALA_ERANGE, "greedy pick: %lld penalized ids", (long long)n);
    if (!s->pk_mark) {
        if (cudaMalloc((void **)&s->pk_mark, V * 4) != cudaSuccess) {
            s->pk_mark = NULL;
            cudaGetLastError();
            return sala_errf(e, SALA_ENOMEM, "CUDA: no memory for the pick's marks (%zu bytes)",
                             V * 4);
        }
        CUDA_CHECK(cudaMemsetAsync(s->pk_mark, 0, V * 4, st));
        s->pk_stamp = 0;
    }
    if (n > s->pk_cap) {
        const int64_t cap = n > 2 * s->pk_cap ? n : 2 * s->pk_cap;
        cudaFree(s->pk_ids);   /* synchronizes: no kernel still reads the old ids */
        s->pk_cap = 0;
        if (cudaMalloc((void **)&s->pk_ids, (size_t)cap * 4) != cudaSuccess) {
            s->pk_ids = NULL;
            cudaGetLastError();
            return sala_errf(e, SALA_ENOMEM, "CUDA: no memory for %lld penalized ids",
                             (long long)cap);
        }
        s->pk_cap = cap;
    }
    if (s->pk_stamp == INT32_MAX) {   /* stamps would repeat: clear the marks */
        CUDA_CHECK(cudaMemsetAsync(s->pk_mark, 0, V * 4, st));
        s->pk_stamp = 0;
    }
    s->pk_stamp++;
    CUDA_CHECK(cudaMemcpyAsync(s->pk_ids, pk->recent, (size_t)n * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(k_pick_mark(st, s->pk_ids, n, (int)V, s->pk_mark, s->pk_stamp));
    return SALA_OK;
}

/* The step's logits row s->logits[0 .. V) to the caller, then wait for the stream: with pk, its
 * greedy pick into *pk->next (4 bytes: the kernel writes them into the pinned s->hpin when pin,
 * else they are copied back from dstep[4]); else the row into logits. pin: through the pinned
 * buffer s->hpin. */
static int step_out(cu_seq *s, float *logits, const eng_pick *pk, bool pin, sala_err *e)
{
    cu_model *m = s->m;
    const int V = (int)m->c.vocab_size;
    cudaStream_t st = m->st;
    if (pk) {
        const bool pen = pk->penalty != 1.0f && pk->nrecent > 0;
        int32_t one, *h = pin ? s->hpin + 4 : &one;   /* pinned: mapped (UVA), written there */
        K(OP_OTHER, k_pick(st, s->logits, V, pk->penalty, pen ? s->pk_mark : NULL, s->pk_stamp,
                           pin ? h : s->dstep + 4));
        if (!pin) CUDA_CHECK(cudaMemcpyAsync(h, s->dstep + 4, 4, cudaMemcpyDeviceToHost, st));
        CUDA_CHECK(cudaStreamSynchronize(st));
        *pk->next = *h;
        return SALA_OK;
    }
    float *hl = pin ? (float *)(s->hpin + 4) : logits;
    CUDA_CHECK(cudaMemcpyAsync(hl, s->logits, (size_t)V * 4, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    if (pin) memcpy(logits, hl, (size_t)V * 4);
    return SALA_OK;
}

/* The MLP of layer L over the n rows from r0: h (n, D) -> down(SwiGLU(gate|up h)), added as
 * rs · into x's rows with fold (rs != NULL), else written to a (n, D). gu16 as in step_run. */
static int mlp(cu_seq *s, const cu_layer *L, const bf16 *h, int r0, int n, bool gu16,
               const float *rs, float *a, sala_err *e)
{
    cu_model *m = s->m;
    const int D = (int)m->c.hidden_size, I = (int)m->c.intermediate_size;
    cudaStream_t st = m->st;
    cu_gemv_args ga;
    if (gu16 && cu_gu_fused_fits(L->w_gu, I, D, h, n, s->act)) {   /* one kernel, cu_gemm90.cu */
        K(OP_GEMM, k_gu_swiglu(st, L->w_gu, I, D, h, n, s->act));
    } else if (gu16) {   /* (n, gate|up) bf16 in the fp32 buffer's first half */
        bf16 *gb = (bf16 *)s->gu;
        cu_prof_mark(m, OP_GEMM);
        CU_TRY(cu_gemm_bf16(m, L->w_gu, 2 * I, D, h, n, gb, 2 * I, e));
        cu_prof_end(m);
        K(OP_OTHER, k_swiglu_bf16(st, gb, n, I, s->act));
    } else if (swiglu_fused(s, L, h, n, &ga)) {   /* (n, I) act straight from the product */
        K(OP_GEMM, k_gemv(st, &ga));
    } else {
        GEMM(L->w_gu, 2 * I, D, h, n, s->gu, 2 * I);                  /* (n, gate|up) */
        K(OP_OTHER, k_swiglu(st, s->gu, n, I, s->act));
    }
    if (rs) {
        cu_prof_mark(m, OP_GEMM);
        CU_TRY(gemm_res(s, L->w_down, D, I, s->act, r0, n, *rs, e));
        cu_prof_end(m);
    } else {
        GEMM(L->w_down, D, I, s->act, n, a, D);
    }
    return SALA_OK;
}

static int step_run(cu_seq *s, const int32_t *tok, int T, const int64_t *rows, int64_t nout,
                    float *logits, const eng_forward_args *fa, sala_err *e)
{
    cu_model *m = s->m;
    const eng_config *c = &m->c;
    const int D = (int)c->hidden_size, V = (int)c->vocab_size;
    const float eps = (float)c->rms_norm_eps, rs = (float)eng_config_residual_scale_cu(c);
    const int64_t p0 = s->len;
    cudaStream_t st = m->st;
    const bool fold = T > CU_FOLD_MIN && !cu_env_is("SALA_CUDA_RES", "old");
    const bool x16 = fold && !cu_env_is("SALA_CUDA_RES", "f32");
    const bool gu16 = T > CU_FOLD_MIN && !cu_env_is("SALA_CUDA_GU", "f32");
    const float *frs = fold ? &rs : NULL;
    const int tail = (int)eng_tail_from(fa, T, rows, nout);   /* the last layer's rows */

    const int tmax0 = s->tmax;
    const int64_t cap0 = s->cap, nbs0 = s->score_nbs;
    CU_TRY(cu_seq_scratch(s, T, e));   /* may move s->a: res is taken after it */
    const float *res = fold ? NULL : s->a;   /* what the norms still add */
    s->x16 = x16;                    /* this step's (read by gemm_res) */
    bf16 *const xb = (bf16 *)s->x;   /* x16's view of the stream (x16: T > CU_FOLD_MIN, never a
                                        graph step: the tokens are in s->tok) */
    CU_TRY(cu_seq_cap_solid(s, p0 + T, T > 1 ? p0 + T : 0, e));
    CU_TRY(cu_seq_writable(s, p0, T, e));
    CU_TRY(cu_seq_score_room(s, p0 + T, e));
    CU_TRY(graph_setup(s, T, nout, fa, e));
    const bool graph = m->gmode != CU_G_OFF;
    const bool pin = graph && step_pinned(s);
    if (graph) {   /* token, logits row 0, position: what a replayed step reads */
        int32_t stk[4], *up = pin ? s->hpin : stk;   /* hpin: the last step's copies are done */
        up[0] = tok[0];
        up[1] = 0;
        memcpy(up + 2, &p0, sizeof(p0));
        CUDA_CHECK(cudaMemcpyAsync(s->dstep, up, 16, cudaMemcpyHostToDevice, st));
    } else {
        CUDA_CHECK(cudaMemcpyAsync(s->tok, tok, (size_t)T * 4, cudaMemcpyHostToDevice, st));
    }
    if (fa->pick && fa->pick->penalty != 1.0f && fa->pick->nrecent > 0)
        CU_TRY(pick_marks(s, fa->pick, e));   /* before the first segment: never captured */
    CU_TRY(seg_begin(s, e));
    if (x16) K(OP_OTHER, k_embed(st, m->embed, s->tok, T, D, (float)c->scale_emb, xb));
    else K(OP_OTHER, k_embed(st, m->embed, graph ? s->dstep : s->tok, T, D, (float)c->scale_emb,
                             s->x));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const double t0 = fa->layer_seconds ? sala_now_cu() : 0;
        const cu_layer *L = &m->L[l];
        const int r0 = l == c->num_hidden_layers - 1 ? tail : 0, n = T - r0;
        const size_t o0 = (size_t)r0 * D;
        if (x16) K(OP_OTHER, k_add_norm(st, xb, NULL, rs, L->in_norm, eps, T, D, s->h));
        else K(OP_OTHER, k_add_norm(st, s->x, l ? res : NULL, rs, L->in_norm, eps, T, D, s->h));
        if (c->mixer[l] == ENG_MIXER_SPARSE)
            CU_TRY(sparse_mixer(s, l, p0, T, r0, fa, frs, e));
        else
            CU_TRY(lightning_mixer(s, l, p0, T, r0, frs, e));
        if (n > 0) {
            if (x16)
                K(OP_OTHER, k_add_norm(st, xb + o0, NULL, rs, L->post_norm, eps, n, D,
                                         s->h + o0));
            else
                K(OP_OTHER, k_add_norm(st, s->x + o0, res ? res + o0 : NULL, rs, L->post_norm,
                                       eps, n, D, s->h + o0));
            CU_TRY(mlp(s, L, s->h + o0, r0, n, gu16 && n > CU_FOLD_MIN, frs, s->a + o0, e));
        }
        if (fa->layer_seconds) {
            CUDA_CHECK(cudaStreamSynchronize(st));
            fa->layer_seconds[l] += sala_now_cu() - t0;
        }
    }
    if (!fold && tail < T)
        K(OP_OTHER, k_add_norm(st, s->x + (size_t)tail * D, s->a + (size_t)tail * D, rs, NULL, eps,
                               T - tail, D, NULL));
    s->len = p0 + T;
    /* logits = lm_head(RMSNorm(x) * dim_model_base / hidden), requested rows only */
    const float ls = (float)(c->dim_model_base / (double)c->hidden_size);
    if (graph) {   /* rows == {0}, uploaded with the token */
        K(OP_OTHER, k_norm_rows(st, s->x, s->dstep + 1, 1, D, m->final_norm, eps, ls, s->hf));
        GEMM(m->lm_head, V, D, s->hf, 1, s->logits, V);
        CU_TRY(seg_end(s, e));
        CU_TRY(step_out(s, logits, fa->pick, pin, e));
        nout = 0;
    }
    for (int64_t r0 = 0; r0 < nout; r0 += CU_LOGIT_ROWS) {
        const int n = (int)(nout - r0 < CU_LOGIT_ROWS ? nout - r0 : CU_LOGIT_ROWS);
        int32_t rr[CU_LOGIT_ROWS];
        for (int i = 0; i < n; i++) rr[i] = (int32_t)rows[r0 + i];
        CUDA_CHECK(cudaMemcpyAsync(s->rows, rr, (size_t)n * 4, cudaMemcpyHostToDevice, st));
        if (x16) K(OP_OTHER, k_norm_rows(st, xb, s->rows, n, D, m->final_norm, eps, ls, s->hf));
        else K(OP_OTHER, k_norm_rows(st, s->x, s->rows, n, D, m->final_norm, eps, ls, s->hf));
        GEMM(m->lm_head, V, D, s->hf, n, s->logits, V);
        if (fa->pick) {   /* n == 1 (cu_forward) */
            CU_TRY(step_out(s, NULL, fa->pick, step_pinned(s), e));
            continue;
        }
        CUDA_CHECK(cudaMemcpyAsync(logits + r0 * V, s->logits, (size_t)n * V * 4,
                                   cudaMemcpyDeviceToHost, st));
        CUDA_CHECK(cudaStreamSynchronize(st));   /* rr and the host rows live on this frame */
    }
    cu_prof_end(m);
    /* the high-water mark (cudaMemGetInfo, host time a decode step would wait for): after a
     * prefill step, an allocation, or while profiling */
    if (T > 1 || m->prof.on || s->tmax != tmax0 || s->cap != cap0 || s->score_nbs != nbs0)
        cu_mem_sample(m);
    return SALA_OK;
}

static int forward_step(cu_seq *s, const int32_t *tok, int T, const int64_t *rows, int64_t nout,
                        float *logits, const eng_forward_args *fa, sala_err *e)
{
    const int rc = step_run(s, tok, T, rows, nout, logits, fa, e);
    graph_finish(s, rc);
    return rc;
}

int cu_forward(cu_seq *s, const eng_forward_args *a, sala_err *e)
{
    cu_model *m = s->m;
    const int64_t V = m->c.vocab_size;
    int64_t r = 0;
    int64_t rows[CU_CHUNK];
    if (a->pick && (a->n != 1 || a->nrows != 1 || a->logits))
        return sala_errf(e, SALA_EINVAL, "CUDA: a greedy pick is for one token and one row, "
                         "without logits (n=%lld, nrows=%lld)", (long long)a->n,
                         (long long)a->nrows);
    cu_prof_mark(m, OP_OTHER);
    s->va_want = s->len + a->n;
    if (a->n > CU_CHUNK) {   /* the score buffer for the whole call at once: a regrowth's
                              * cudaFree would drain the device between two steps */
        CU_TRY(cu_seq_scratch(s, CU_CHUNK, e));
        CU_TRY(cu_seq_score_room(s, s->len + a->n, e));
    }
    for (int64_t t0 = 0; t0 < a->n; t0 += CU_CHUNK) {
        const int T = (int)(a->n - t0 < CU_CHUNK ? a->n - t0 : CU_CHUNK);
        const int64_t r0 = r;
        int64_t nout = 0;
        while (r < a->nrows && a->rows[r] < t0 + T) rows[nout++] = a->rows[r++] - t0;
        int rc = forward_step(s, a->tokens + t0, T, rows, nout,
                              nout && a->logits ? a->logits + r0 * V : NULL, a, e);
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

/* ---- batched decode: n sequences, one token each, one pass over the weights ----
 * The activations of the n rows live in S[0]'s scratch (sized for n tokens): embedding, norms,
 * every GEMM, SwiGLU and the output gates run once over the n rows. What belongs to one sequence
 * runs per sequence on its row b with the single-sequence launchers: sparse prep into its own
 * K/V, compression, dense or stage-1 + top-K + block-sparse attention at its own position, the
 * lightning step on its own state (attention and lightning steps on side streams, below).
 * Select hooks get each sequence's selections (one copy and sync per layer for all of them). */

/* Side streams for the per-sequence attention and lightning steps: SALA_CUDA_SIDE_STREAMS
 * (0: none, every launch on the model stream). */
static int side_streams(int n)
{
    const char *v = getenv("SALA_CUDA_SIDE_STREAMS");
    int k = v && *v ? atoi(v) : CU_SIDE;
    if (k < 0) k = 0;
    if (k > CU_SIDE) k = CU_SIDE;
    return k < n ? k : n;
}

/* Per sequence on the model stream: sparse prep, compression, stage 1 and top-K (stage 1's
 * split scan keeps its partials in one static buffer, so those launches stay in order on one
 * stream); then its attention (dense or block-sparse, reading only its own caches, selection
 * and row of Qb, writing its row of o) goes to a side stream behind an event, so the
 * attentions of the n sequences overlap; joined before the gate. */
static int batch_sparse(cu_seq *const *S, int n, int layer, const eng_batch_args *ba, sala_err *e)
{
    cu_seq *s0 = S[0];
    cu_model *m = s0->m;
    const eng_config *c = &m->c;
    const eng_sparse_config *sc = &c->sparse;
    const cu_layer *L = &m->L[layer];
    const sp_shape z = sp_shape_of(m, layer);
    const int li = z.li, D = z.D, nh = z.nh, nkv = z.nkv, hd = z.hd, Kq = z.Kq, nq = z.nq;
    const int k1 = z.k1, s1 = z.s1;
    const float scale = z.scale;
    cudaStream_t st = m->st;
    bool hooks = false;
    const int ns = side_streams(n);

    GEMM(L->w_in, L->nin, D, s0->h, n, s0->proj, L->nin);              /* (n, q|k|v|gate) */
    for (int b = 0; b < n; b++) {
        cu_seq *s = S[b];
        const int64_t p = s->len;
        const float *proj = s0->proj + (size_t)b * L->nin;
        bf16 *Qb = s0->Qb + (size_t)b * nq;
        float *o = s0->o + (size_t)b * nq;
        CU_TRY(sparse_append(s, &z, proj, false, L->nin, 1, p, Qb, e));
        attn_args aa = {Qb, s->K[li], s->V[li], o, s->sel, Kq, p, 0, 1, nh, nkv, hd,
                        (int)sc->block_size, scale, NULL, 0};
        const bool dense = p + 1 < sc->dense_len;
        if (!dense) {   /* stage 1 and top-K, in order on the model stream */
            score_args sa = {Qb, s->K1[li], s->K2[li], s->n1[li], s->n2[li], s->score,
                             (int)s->score_nbs, p, 0, 1, nh, nkv, hd, k1, s1,
                             (int)sc->block_size, scale,
                             (int)(sc->window_size / sc->block_size), Kq};
            K(OP_SCORE, k_score(st, &sa));
            topk_args ta = {s->score, (int)s->score_nbs, s->sel, Kq, p, 0, 1, nkv,
                            (int)sc->block_size, (int)sc->init_blocks,
                            (int)(sc->window_size / sc->block_size)};
            K(OP_TOPK, k_topk(st, &ta));
        }
        if (ns) {   /* its attention on a side stream, after what the model stream has so far */
            const cudaStream_t side = m->side[b % ns];
            aa.part = m->side_part[b % ns];   /* streams never share split scratch */
            aa.part_cap = CU_ATTN_PART_FLOATS;
            CUDA_CHECK(cudaEventRecord(m->ev_fork, st));
            CUDA_CHECK(cudaStreamWaitEvent(side, m->ev_fork, 0));
            CUDA_CHECK(dense ? k_attn_dense(side, &aa) : k_attn_sparse(side, &aa));
        } else {
            K(dense ? OP_DENSE_ATTN : OP_SPARSE_ATTN,
              dense ? k_attn_dense(st, &aa) : k_attn_sparse(st, &aa));
        }
        if (!dense && ba->select_fn[b]) {
            CUDA_CHECK(cudaMemcpyAsync(s->sel_host, s->sel, (size_t)nkv * Kq * 4,
                                       cudaMemcpyDeviceToHost, st));
            hooks = true;
        }
    }
    cu_prof_mark(m, OP_SPARSE_ATTN);   /* with side streams: what is left of them at the join */
    for (int k = 0; k < ns; k++) {
        CUDA_CHECK(cudaEventRecord(m->ev_join[k], m->side[k]));
        CUDA_CHECK(cudaStreamWaitEvent(st, m->ev_join[k], 0));
    }
    if (hooks) {
        CUDA_CHECK(cudaStreamSynchronize(st));
        for (int b = 0; b < n; b++)
            if (ba->select_fn[b] && S[b]->len + 1 >= sc->dense_len)
                for (int g = 0; g < nkv; g++)
                    ba->select_fn[b](ba->select_ud[b], layer, g, S[b]->len,
                                     S[b]->sel_host + (size_t)g * Kq, Kq);
    }
    K(OP_OTHER, k_gate(st, s0->o, s0->proj, L->nin, L->nq + L->nk + L->nv, n, nq, s0->ob));
    GEMM(L->w_o, D, nq, s0->ob, n, s0->a, D);
    return SALA_OK;
}

/* Each sequence's lightning step reads its row of proj and writes its row of ob, with its own
 * state and scratch, so the n of them are independent: with side streams they run round-robin
 * on CU_SIDE streams between a fork and a join event on the model stream (the profile counts
 * the whole span as lightning). */
static int batch_lightning(cu_seq *const *S, int n, int layer, sala_err *e)
{
    cu_seq *s0 = S[0];
    cu_model *m = s0->m;
    const eng_config *c = &m->c;
    const cu_layer *L = &m->L[layer];
    const int D = (int)c->hidden_size, nh = (int)c->lightning_nh, d = (int)c->lightning_head_dim;
    cudaStream_t st = m->st;
    const int ns = side_streams(n);

    GEMM(L->w_in, L->nin, D, s0->h, n, s0->proj, L->nin);              /* (n, q|k|v|z) */
    cu_prof_mark(m, OP_LIGHTNING);
    if (ns) {
        CUDA_CHECK(cudaEventRecord(m->ev_fork, st));
        for (int k = 0; k < ns; k++) CUDA_CHECK(cudaStreamWaitEvent(m->side[k], m->ev_fork, 0));
    }
    for (int b = 0; b < n; b++) {
        cu_seq *s = S[b];
        cudaStream_t sb = ns ? m->side[b % ns] : st;
        const la_args la = la_of(s, L, s0->proj + (size_t)b * L->nin, NULL, L->nin, 1, s->len);
        CUDA_CHECK(k_la_prep(sb, &la));
        CUDA_CHECK(k_la_step(sb, &la));
        CUDA_CHECK(k_la_out(sb, &la, s0->ob + (size_t)b * nh * d));
    }
    for (int k = 0; k < ns; k++) {
        CUDA_CHECK(cudaEventRecord(m->ev_join[k], m->side[k]));
        CUDA_CHECK(cudaStreamWaitEvent(st, m->ev_join[k], 0));
    }
    GEMM(L->w_o, D, nh * d, s0->ob, n, s0->a, D);
    return SALA_OK;
}

static int batch_step(cu_seq *const *S, const eng_batch_args *a, sala_err *e)
{
    cu_seq *s0 = S[0];
    cu_model *m = s0->m;
    const eng_config *c = &m->c;
    const int n = a->n;
    const int D = (int)c->hidden_size, I = (int)c->intermediate_size, V = (int)c->vocab_size;
    const float eps = (float)c->rms_norm_eps, rs = (float)eng_config_residual_scale_cu(c);
    cudaStream_t st = m->st;

    if (n < 1 || n > CU_LOGIT_ROWS)
        return sala_errf(e, SALA_EINVAL, "CUDA: a decode batch of %d sequences (1..%d)", n,
                         CU_LOGIT_ROWS);
    CU_TRY(cu_seq_scratch(s0, n, e));
    for (int b = 0; b < n; b++) {
        if (S[b]->m != m) return sala_errf(e, SALA_EINVAL, "CUDA: a batch across models");
        CU_TRY(cu_seq_scratch(S[b], 1, e));
        CU_TRY(cu_seq_cap(S[b], S[b]->len + 1, e));
        CU_TRY(cu_seq_writable(S[b], S[b]->len, 1, e));
        CU_TRY(cu_seq_score_room(S[b], S[b]->len + 1, e));
    }
    CUDA_CHECK(cudaMemcpyAsync(s0->tok, a->tokens, (size_t)n * 4, cudaMemcpyHostToDevice, st));
    K(OP_OTHER, k_embed(st, m->embed, s0->tok, n, D, (float)c->scale_emb, s0->x));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const cu_layer *L = &m->L[l];
        K(OP_OTHER, k_add_norm(st, s0->x, l ? s0->a : NULL, rs, L->in_norm, eps, n, D, s0->h));
        if (c->mixer[l] == ENG_MIXER_SPARSE)
            CU_TRY(batch_sparse(S, n, l, a, e));
        else
            CU_TRY(batch_lightning(S, n, l, e));
        K(OP_OTHER, k_add_norm(st, s0->x, s0->a, rs, L->post_norm, eps, n, D, s0->h));
        GEMM(L->w_gu, 2 * I, D, s0->h, n, s0->gu, 2 * I);
        K(OP_OTHER, k_swiglu(st, s0->gu, n, I, s0->act));
        GEMM(L->w_down, D, I, s0->act, n, s0->a, D);
    }
    K(OP_OTHER, k_add_norm(st, s0->x, s0->a, rs, NULL, eps, n, D, NULL));
    for (int b = 0; b < n; b++) S[b]->len++;
    if (a->logits) {
        const float ls = (float)(c->dim_model_base / (double)c->hidden_size);
        int32_t rr[CU_LOGIT_ROWS];
        for (int i = 0; i < n; i++) rr[i] = i;
        CUDA_CHECK(cudaMemcpyAsync(s0->rows, rr, (size_t)n * 4, cudaMemcpyHostToDevice, st));
        K(OP_OTHER, k_norm_rows(st, s0->x, s0->rows, n, D, m->final_norm, eps, ls, s0->hf));
        GEMM(m->lm_head, V, D, s0->hf, n, s0->logits, V);
        CUDA_CHECK(cudaMemcpyAsync(a->logits, s0->logits, (size_t)n * V * 4,
                                   cudaMemcpyDeviceToHost, st));
        CUDA_CHECK(cudaStreamSynchronize(st));   /* rr lives on this frame */
    }
    cu_prof_mark(m, OP_OTHER);
    cu_mem_sample(m);
    return SALA_OK;
}

int cu_forward_batch(cu_seq *const *S, const eng_batch_args *a, sala_err *e)
{
    cu_model *m = S[0]->m;
    cu_prof_mark(m, OP_OTHER);
    const int rc = batch_step(S, a, e);
    cudaError_t err = cudaStreamSynchronize(m->st);
    if (m->prof.on) {
        cu_prof_flush(m);
        m->prof.nev = 0;
    }
    if (rc) return rc;
    CUDA_CHECK(err);
    return SALA_OK;
}
