/* cu_int.h: internals of the CUDA backend (engine/backend.h table, built into libsala_cuda.so).
 * Device pointers never leave engine/cuda: the engine sees only the backend table, the tests only
 * the host-pointer op table of cuda_ops.h.
 *
 * Precision (docs/CUDA.md): weights bf16; the residual stream fp32; GEMMs through cuBLAS with
 * bf16 inputs and fp32 accumulation and output (bf16 output for the prefill's gate/up and
 * lightning q|k|v|z; the prefill's gate/up + SwiGLU on sm_90a in our own kernel, cu_gemm90.cu);
 * lightning state fp32 (q/k/v fp32 in decode), the chunked
 * state products 3xTF32 (fp32-equivalent) and the output products TF32 on the tensor cores (fp32
 * with SALA_CUDA_LA_BLAS=1); attention scores/softmax fp32 with bf16 Q/K/V and bf16
 * probabilities on the tensor cores (WMMA); InfLLM-V2 compressed keys bf16 (fp32 means), stage-1 sums fp32.
 *
 * Every function that calls CUDA returns SALA_OK or a negative status; CUDA_CHECK/CUBLAS_CHECK
 * turn a failure into SALA_EINTERNAL with the statement, file and line (needs `sala_err *e`). */
#ifndef SALA_CU_INT_H
#define SALA_CU_INT_H

#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "engine/backend.h"
}

typedef __nv_bfloat16 bf16;

/* An environment switch equal to val (the CUDA env switches are read at every call, so tests
 * can flip them). */
static inline bool cu_env_is(const char *name, const char *val)
{
    const char *v = getenv(name);
    return v && !strcmp(v, val);
}

#define CUDA_CHECK(stmt) do { \
        cudaError_t err_ = (stmt); \
        if (err_ != cudaSuccess) \
            return sala_errf(e, SALA_EINTERNAL, "CUDA: %s: %s (%s:%d)", #stmt, \
                           cudaGetErrorString(err_), __FILE__, __LINE__); \
    } while (0)
#define CUBLAS_CHECK(stmt) do { \
        cublasStatus_t st_ = (stmt); \
        if (st_ != CUBLAS_STATUS_SUCCESS) \
            return sala_errf(e, SALA_EINTERNAL, "cuBLAS: %s: %s (%s:%d)", #stmt, \
                           cublasGetStatusString(st_), __FILE__, __LINE__); \
    } while (0)
#define CU_TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

/* Tokens one forward step processes (activations exist for one step; -DCU_CHUNK=... builds
 * another size for measurements); lightning chunk. */
#ifndef CU_CHUNK
#define CU_CHUNK 16384
#endif
#define CU_LA_C 64
/* Side streams of a batched decode step (SALA_CUDA_SIDE_STREAMS=0..CU_SIDE, default CU_SIDE). */
#define CU_SIDE 8
/* Key tile of the attention and stage-1 kernels (== the InfLLM-V2 block of 64 in the model). */
#define CU_KT 64
/* Bytes of the cuBLAS / cuBLASLt workspace of a model (m->blas_ws). */
#define CU_BLAS_WS ((size_t)64 << 20)

/* ---- op categories of the profile (bench) ----
 * OP_IDLE: from the end of one launch (cu_prof_end) to the next mark: the device waiting for the
 * host (launch overhead it could not hide), and the host's time between calls; with kernel
 * records (mode 2) the device's idle spans of >= 10 us between two kernels (waits for the host,
 * e.g. at a decode step's boundary), not counted as busy.
 * OP_OVERLAP (kernel records, mode 2): the seconds in which two or more kernels were on the
 * device at once, counted in each one's category (a kernel launched with programmatic dependent
 * launch is resident while it waits for the one before): categories minus it = device busy. */
enum { OP_GEMM, OP_LIGHTNING, OP_SCORE, OP_SPARSE_ATTN, OP_DENSE_ATTN, OP_OTHER, OP_TOPK, OP_IDLE,
       OP_OVERLAP, OP_N };
/* Events of the profile between flushes (a decode step makes about 900: two per launch). */
#define CU_PROF_EV 4096

/* ---- kernels (cu_kernels.cu, cu_attn.cu, cu_infllm.cu, cu_lightning.cu) ----
 * Launchers enqueue on st and return cudaGetLastError(). Shapes in the comments. */
cudaError_t cu_kernels_init(void);   /* raise the dynamic shared-memory limits once */
/* SALA_CUDA_DECODE=old (read once): the launches before the decode kernels (fifth version,
 * docs/CUDA.md "Decode kernels"), for same-run comparisons. */
bool cu_decode_old(void);

/* cu_pick.cu: the greedy pick of a logits row (V) into out[0] (engine/sampler.c's greedy rule),
 * the ids marked with stamp in mark (V) penalized by pen (pen 1 or mark NULL: none).
 * k_pick_mark marks ids[0..n) (ids outside [0, V) skipped). */
cudaError_t k_pick_mark(cudaStream_t st, const int32_t *ids, int64_t n, int V, int32_t *mark,
                        int32_t stamp);
cudaError_t k_pick(cudaStream_t st, const float *logits, int V, float pen, const int32_t *mark,
                   int32_t stamp, int32_t *out);

/* The residual stream x in fp32 or bf16 (the overloads on bf16: prefill steps, cu_seq.x16; a
 * bf16 x stores each value rounded to nearest even). */
cudaError_t k_embed(cudaStream_t st, const bf16 *E, const int32_t *tok, int T, int D, float scale,
                    float *x);                                   /* x (T, D) = E[tok] * scale */
cudaError_t k_embed(cudaStream_t st, const bf16 *E, const int32_t *tok, int T, int D,
                      float scale, bf16 *x);
/* x (T, D) += rs * a (a may be NULL); then h = bf16(rmsnorm(x) * w) when h != NULL. */
cudaError_t k_add_norm(cudaStream_t st, float *x, const float *a, float rs, const float *w,
                       float eps, int T, int D, bf16 *h);
cudaError_t k_add_norm(cudaStream_t st, bf16 *x, const float *a, float rs, const float *w,
                         float eps, int T, int D, bf16 *h);
/* out (n, D) = bf16(rmsnorm(x[rows[r]]) * w * scale) */
cudaError_t k_norm_rows(cudaStream_t st, const float *x, const int32_t *rows, int n, int D,
                        const float *w, float eps, float scale, bf16 *out);
cudaError_t k_norm_rows(cudaStream_t st, const bf16 *x, const int32_t *rows, int n, int D,
                          const float *w, float eps, float scale, bf16 *out);
/* out (T, I) = bf16(silu(gu[:, :I]) * gu[:, I:]) for gu (T, 2I) */
cudaError_t k_swiglu(cudaStream_t st, const float *gu, int T, int I, bf16 *out);
/* Prefill form: the same from gu (T, 2I) already in bf16 (the gate/up GEMM's bf16 output). */
cudaError_t k_swiglu_bf16(cudaStream_t st, const bf16 *gu, int T, int I, bf16 *out);
/* out (T, W) = bf16(o * sigmoid(z)) with z = proj[:, zoff : zoff+W] (row stride ld); proj fp32
 * or bf16 (a prefill step's bf16 input product) */
cudaError_t k_gate(cudaStream_t st, const float *o, const float *proj, int ld, int zoff, int T,
                   int W, bf16 *out);
cudaError_t k_gate(cudaStream_t st, const float *o, const bf16 *proj, int ld, int zoff, int T,
                   int W, bf16 *out);
/* Sparse layer: q -> Qb (T, nh, d) bf16; k, v -> Kc/Vc rows p0.. (cap, nkv, d) bf16; proj fp32
 * or bf16 (a copy then). p0d: when not NULL, p0 is read from device memory (a decode step
 * replayed from a CUDA graph). */
cudaError_t k_sparse_prep(cudaStream_t st, const float *proj, int ld, int T, int nh, int nkv,
                          int d, bf16 *Qb, bf16 *Kc, bf16 *Vc, int64_t p0, const int64_t *p0d);
cudaError_t k_sparse_prep(cudaStream_t st, const bf16 *proj, int ld, int T, int nh, int nkv,
                          int d, bf16 *Qb, bf16 *Kc, bf16 *Vc, int64_t p0, const int64_t *p0d);
/* K1/K2 windows [from, to) of kernel k, stride s over the cache Kc (L, row): C (nw, row). */
cudaError_t k_compress(cudaStream_t st, const bf16 *Kc, int row, int64_t from, int64_t to,
                       int k, int s, bf16 *C);

/* Lightning (SALA-SPEC §3.5). dec (nh, CU_LA_C + 1): dec[n, e] = λ_n^e. */
typedef struct {
    const float *proj; int ld;            /* (T, ld): q at 0, k at nh*d, v at 2nh*d, z at 3nh*d */
    const bf16 *proj16;                   /* not NULL (proj NULL): the same rows in bf16, the
                                             prefill's bf16 input GEMM output (cu_la_proj16);
                                             read by the tensor-core prefill and k_la_out only */
    int T, Tp, nh, d;                     /* Tp = T rounded up to CU_LA_C */
    int64_t p0;
    const int64_t *p0d;                   /* not NULL: the fused decode step reads p0 here (a
                                             step replayed from a CUDA graph) */
    const float *qn, *kn, *on;            /* q_norm, k_norm (d), o_norm (nh*d) */
    const float *inv_freq, *dec;
    float eps, scale;
    float *Qh, *Qd, *Kh, *Kw, *Vh, *Oh;   /* (nh, Tp, d) */
    float *Sb;                            /* (nh, Tp/C, d, d): S_in per chunk */
    float *Ab;                            /* (nh, Tp/C, C, C); the tensor-core path: the state
                                             walk's range states (nh, R, d, d), R d² <= Tp C */
    float *S;                             /* (nh, d, d) the layer's state */
    int o16;                              /* set by cu_lightning_prefill: Oh holds bf16(scale O)
                                             (nh, Tp, d) (the fused kernel), else fp32 O */
} la_args;
/* Prep: Qh, Kh (and Qd, Kw, Vh when not NULL). For a decode step (T == Tp == 1, d 32, 64, 128
 * or 256) it does nothing: k_la_step then reads q/k/v from proj and does the prep itself. */
cudaError_t k_la_prep(cudaStream_t st, const la_args *a);
cudaError_t k_la_mask(cudaStream_t st, const la_args *a);
cudaError_t k_la_scan(cudaStream_t st, const la_args *a);
cudaError_t k_la_step(cudaStream_t st, const la_args *a);   /* T == 1 recurrence -> Oh, S */
/* Whether a T == 1 step of a takes the fused decode kernel (prep inside, p0d honoured). */
bool cu_la_decode_fused(const la_args *a);
/* out (T, nh*d) = bf16(rmsnorm(scale*O) * on * sigmoid(z)); O as a->o16 says */
cudaError_t k_la_out(cudaStream_t st, const la_args *a, bf16 *out);
/* Chunked prefill (T > 1, cu_lightning.cu): prep, then the tensor-core kernels (d 64 or 128;
 * their prep writes Kh and a rotation table in Qd, their state walk's range states go to Ab),
 * or with SALA_CUDA_LA_BLAS=1 (and other d) the cuBLAS products with compute ct
 * (CUBLAS_COMPUTE_32F or _TF32), or on the sm_90a image the fused kernel (cu_la_fused). Leaves
 * the unscaled output in Oh (the fused kernel: bf16(scale O), a->o16 set) and the new state in
 * S; Kw and Vh are used by the cuBLAS path only (and Qd there as Qh λ^{τ+1}). */
int cu_lightning_prefill(cublasHandle_t h, cudaStream_t st, la_args *a,
                         cublasComputeType_t ct, sala_err *e);
/* Whether a chunked prefill of head size d can read q|k|v|z as bf16 (proj16): the tensor-core
 * path with its own prep (d 64 or 128, neither SALA_CUDA_LA_BLAS nor SALA_CUDA_LA_PREP=old;
 * read at each call). */
bool cu_la_proj16(int d);
/* Whether such a bf16 prefill takes the fused kernel (cu_la_proj16, the sm_90a image runs,
 * tensor maps can be made, and SALA_CUDA_LA_FUSED is not 0; read at each call): q rounded to
 * bf16 after RoPE as k, O left as bf16(scale O). */
bool cu_la_fused(int d);

/* Attention over the bf16 cache (WMMA). Queries t in [t0, t0+n) of Qb (row t = position p0+t),
 * out O (T, nh, d) fp32 rows t. Dense: keys 0..p. Sparse: keys j <= p of the blocks of
 * sel (T, nkv, K) (ascending, -1 padded). A launch of few queries (decode) splits each query's
 * blocks over many CTAs and merges the partials in a second kernel: from part (part_cap floats)
 * when given, else from one per-device buffer, so launches without part that may overlap must
 * be ordered on one stream (as the stage-1 split scan's); launches on different streams give
 * each its own part. */
typedef struct {
    const bf16 *Q, *K, *V;
    float *O;
    const int32_t *sel; int K_sel;
    int64_t p0; int t0, n;
    int nh, nkv, d, block;
    float scale;
    float *part; size_t part_cap;         /* optional split scratch (NULL: the shared one); a
                                             band launch's state (n, nh, d + 2) (NULL or too
                                             small: no band form) */
} attn_args;
/* Queries of a split launch (cu_attn.cu's few-query kernels), at most: longer sparse launches
 * take the band form where a->part holds its state. */
#define CU_SPLIT_MAXQ 16
/* Local blocks before a query's own block that the top-K forces (window 2048 / block 64,
 * SALA-SPEC §3.6): the band form of a sparse prefill launch (docs/CUDA.md "Sparse attention
 * 11") takes block 0 and blocks qb - CU_BAND_LOCAL .. qb on the dense wgmma kernel. */
#define CU_BAND_LOCAL 32
/* Floats of split scratch a side stream's attention launches need (cu_model.side_part). */
#define CU_ATTN_PART_FLOATS ((size_t)1 << 20)
cudaError_t k_attn_dense(cudaStream_t st, const attn_args *a);
cudaError_t k_attn_sparse(cudaStream_t st, const attn_args *a);
/* Sparse launches taken by the persistent streams' grid since the process began (tests). */
long cu_attn_pers_launches(void);

/* InfLLM-V2 stage 1 (SALA-SPEC §3.6 steps 2-3): block scores score (T, nkv, nbs) for queries
 * [t0, t0+n), blocks b <= qb. */
typedef struct {
    const bf16 *Q, *K1, *K2;
    int64_t n1, n2;                      /* windows present */
    float *score; int nbs;
    int64_t p0; int t0, n;
    int nh, nkv, d;
    int k1, s1, block;                   /* k2 = 4 k1, s2 = 4 s1 */
    float scale;
    /* Blocks the top-K forces are not scored when local >= 0 (only b < qb_max - local of the
     * CTA's queries, and nothing when every query has qb + 1 <= Ksel); -1: score every block. */
    int local, Ksel;
} score_args;
cudaError_t k_score(cudaStream_t st, const score_args *a);
/* Step 4: top-K blocks per (query, group) -> sel (T, nkv, K) ascending, -1 padded. */
typedef struct {
    const float *score; int nbs;
    int32_t *sel; int K;
    int64_t p0; int t0, n, nkv;
    int block, init_blocks, local;       /* local = window / block */
} topk_args;
cudaError_t k_topk(cudaStream_t st, const topk_args *a);

/* Random bf16 N(mean, std) fill (benchmark weights), deterministic in (seed, index). */
cudaError_t k_fill_normal_bf16(cudaStream_t st, bf16 *p, size_t n, uint64_t seed, float mean,
                               float std);
cudaError_t k_fill_normal_f32(cudaStream_t st, float *p, size_t n, uint64_t seed, float mean,
                              float std);

/* ---- model and sequence state (cu_backend.cu, cu_forward.cu) ---- */
typedef struct {
    int kind_index;
    int nin;                          /* rows of w_in: q | k | v | gate (z) */
    int nq, nk, nv, ng;
    bf16 *w_in;                       /* (nin, D) */
    bf16 *w_o;                        /* (D, nq) */
    bf16 *w_gu;                       /* (2I, D): mlp gate | up */
    bf16 *w_down;                     /* (D, I) */
    float *in_norm, *post_norm;       /* (D) */
    float *q_norm, *k_norm, *o_norm;  /* lightning: (d), (d), (nh*d) */
} cu_layer;

typedef struct {
    bool on;                          /* events around each launch (profile enable = 1) */
    bool kern;                        /* CUPTI kernel records (enable = 2) */
    cudaEvent_t ev[CU_PROF_EV];
    int cat[CU_PROF_EV];
    int nev;
    double sec[OP_N];
} cu_prof;

/* Allocations of a sequence's step scratch: 24 device buffers, then 2 pinned host ones. */
#define CU_SCR_DEV 24
#define CU_SCR_N (CU_SCR_DEV + 2)

/* cuBLASLt state of a model (cu_lt.cu): the handle and the tuned shapes. */
typedef struct cu_lt cu_lt;

typedef struct {
    eng_config c;
    int dev;
    size_t vm_chunk;                  /* bytes of a cache chunk (VMM); 0: plain cudaMalloc caches */
    cu_layer *L;
    bf16 *embed, *lm_head;            /* (V, D) */
    float *final_norm;                /* (D) */
    float *inv_freq;                  /* (lhd/2) */
    float *dec;                       /* (lnh, CU_LA_C + 1) */
    cublasHandle_t blas;
    cudaStream_t st;
    void *blas_ws;                    /* CU_BLAS_WS bytes, shared by cuBLAS and cuBLASLt */
    cu_lt *lt;                        /* NULL: every GEMM through cublasGemmEx */
    size_t weight_bytes;
    cublasComputeType_t la_compute;
    cu_prof prof;
    size_t mem_peak;                  /* device bytes in use, high-water mark (cudaMemGetInfo) */
    /* batched decode: per-sequence lightning steps spread over side streams (fork/join events) */
    cudaStream_t side[CU_SIDE];
    cudaEvent_t ev_fork, ev_join[CU_SIDE];
    float *side_part[CU_SIDE];        /* split-attention scratch of each side stream */
    /* CUDA graph of the current decode step (cu_forward.cu): CU_G_OFF, _CAPTURE or _REPLAY,
     * the next segment, and whether launches are skipped (the replayed segment made them) */
    int gmode, gseg;
    bool gskip;
    /* the step scratch of a freed sequence, for the next one that needs no more than spare_tmax
     * tokens (cu_backend.cu seq_scratch_drop / cu_seq_scratch): its CU_SCR_N allocations in
     * scratch_fields' order, its score buffer's block count; guarded by spare_mu */
    void *spare[CU_SCR_N];
    int spare_tmax;
    int64_t spare_nbs;
    pthread_mutex_t spare_mu;
} cu_model;

enum { CU_G_OFF, CU_G_CAPTURE, CU_G_REPLAY };

/* A checkpoint: the lightning states at len. Forks share them (refs); never written once made
 * except by cu_seq_checkpoint at the same length, which copies first when shared. */
typedef struct {
    float *S;                         /* device (n_lightning, lnh, lhd, lhd) */
    int refs;
} cu_state;
typedef struct {
    int64_t len;
    cu_state *st;
} cu_ckpt;

/* ---- sparse-cache buffers (cu_cache.cu): chunks mapped into a reserved range (VMM) or one
 * cudaMalloc (plain). A chunk with refs > 1 is shared by forks and never written: writers call
 * cu_buf_writable on the range first (copy-on-write). ---- */
typedef struct cu_chunk cu_chunk;
typedef struct {
    char *p;                          /* device base address */
    size_t bytes;                     /* usable bytes from p */
    CUdeviceptr va;                   /* VMM: the reservation, va_bytes long */
    size_t va_bytes;
    cu_chunk **ch;                    /* VMM: chunk i mapped at va + i * vm_chunk */
    int64_t nch, ch_cap;
} cu_buf;
/* Sets m->dev and m->vm_chunk (0 without VMM support or with SALA_CUDA_NOVMM=1). */
int cu_vmm_init(cu_model *m, sala_err *e);
/* At least bytes usable, content kept (plain mode copies the first keep bytes). VMM: the new
 * granules below solid bytes become one chunk (a loaded state's part below its length, so that
 * forks map it in one call), the others one granule each; va_hint is the reservation to make on
 * first use (more chunks are mapped later without moving). */
int cu_buf_reserve(cu_model *m, cu_buf *b, size_t bytes, size_t keep, size_t solid,
                   size_t va_hint, sala_err *e);
/* dst (empty) gets src's first used bytes: share maps src's chunks wholly below used and copies
 * the boundary chunk; otherwise (or in plain mode) everything is copied. Copies are enqueued on
 * m->st. */
int cu_buf_fork(cu_model *m, cu_buf *dst, const cu_buf *src, size_t used, bool share,
                sala_err *e);
/* Make bytes [from, to) private before they are written (copy-on-write of shared chunks). */
int cu_buf_writable(cu_model *m, cu_buf *b, size_t from, size_t to, sala_err *e);
void cu_buf_free(cu_model *m, cu_buf *b);
uint64_t cu_buf_shared_bytes(const cu_model *m, const cu_buf *b);

/* The CUDA graph of a sequence's single-token decode step (cu_forward.cu): one executable graph
 * per static segment (the launches whose arguments do not change from step to step), valid for
 * the device addresses in key. */
typedef struct {
    cudaGraphExec_t *ex;              /* [nseg] */
    int nseg;
    void **key;                       /* [nkey] */
    int nkey;
    bool ok;
    int64_t captures;                 /* captures made (statistics) */
} cu_graph;

typedef struct {
    cu_model *m;
    int64_t len, cap;
    int64_t va_want;                  /* tokens the current forward call will reach: the caches'
                                         first address reservation covers them (cu_seq_cap) */
    cu_buf *cb;                       /* [4 n_sparse]: K, V, K1, K2 of sparse layer i at 4i+0..3 */
    bf16 **K, **V, **K1, **K2;        /* views of cb (refreshed when a buffer moves):
                                         (cap, nkv, hd), (nw(cap)+1, nkv, hd) */
    int64_t *n1, *n2;
    float *S;                         /* (n_lightning, lnh, lhd, lhd) */
    size_t S_floats;
    cu_ckpt *ckpt;
    int nckpt, ckpt_cap;
    /* step scratch, sized for tmax tokens */
    int tmax;
    int32_t *tok, *rows;
    float *x, *a, *proj, *o, *gu;     /* x: the residual stream, fp32 or (x16) bf16 values */
    bool x16;                         /* this step's x is bf16 (step_run) */
    bf16 *h, *ob, *Qb, *act, *hf;
    float *Qh, *Qd, *Kh, *Kw, *Vh, *Oh, *Sb, *Ab;
    float *logits;                    /* (CU_LOGIT_ROWS, V) */
    int32_t *sel;                     /* (tmax, nkv, K) */
    int32_t *sel_host;                /* pinned copy */
    float *score; int64_t score_nbs;  /* (tmax, nkv, score_nbs) */
    int32_t *dstep;                   /* (8): a graph step's token, row 0, position (int64);
                                         [4]: a greedy pick's output (k_pick) */
    int32_t *hpin;                    /* pinned (4 + V): dstep's upload, then a graph step's
                                         logits row from [4] (NULL: pageable copies) */
    /* greedy picks with a repetition penalty (cu_forward.cu pick_marks): the marks (V) of
     * stamp pk_stamp, the ids uploaded for them (pk_cap); allocated at the first such pick */
    int32_t *pk_mark, *pk_ids;
    int64_t pk_cap;
    int32_t pk_stamp;
    cu_graph g;
} cu_seq;

#define CU_LOGIT_ROWS 256

int cu_forward(cu_seq *s, const eng_forward_args *a, sala_err *e);
/* One decode step of the distinct sequences S[0..a->n) of one model (engine/backend.h). */
int cu_forward_batch(cu_seq *const *S, const eng_batch_args *a, sala_err *e);
int cu_seq_scratch(cu_seq *s, int T, sala_err *e);
int cu_seq_cap(cu_seq *s, int64_t need, sala_err *e);
/* cu_seq_cap with the caches' new part below len tokens allocated as one chunk per buffer
 * (VMM): a state about to be loaded (forks of it map it in one call), or a prefill step's rows
 * (one chunk a buffer and step instead of one a 2 MB granule: the step's mapping calls are host
 * time before its first kernel). */
int cu_seq_cap_solid(cu_seq *s, int64_t need, int64_t len, sala_err *e);
/* Before a step writes positions [p0, p0 + T): the K/V rows and the K1/K2 windows it will add
 * made private (copy-on-write of chunks shared with forks). */
int cu_seq_writable(cu_seq *s, int64_t p0, int T, sala_err *e);
/* Room in s->score for block scores of positions below end (stage 1). */
int cu_seq_score_room(cu_seq *s, int64_t end, sala_err *e);
void cu_prof_mark(cu_model *m, int cat);
/* The launch just enqueued ends here: what follows until the next mark is OP_IDLE. */
void cu_prof_end(cu_model *m);
/* Exact kernel times through CUPTI (cu_kprof.cu, profile enable = 2): start, then stop adds
 * the kernels' device seconds per category to sec[OP_N] (OP_IDLE stays 0). */
int cu_kprof_start(sala_err *e);
void cu_kprof_stop(double *sec, int64_t *kernels);
/* Frees s's decode graph (cu_seq_free). */
void cu_graph_free(cu_seq *s);
void cu_prof_flush(cu_model *m);
void cu_mem_sample(cu_model *m);
/* GEMM y (T, out) fp32 (row stride ldy) = x (T, in) bf16 · W (out, in)ᵀ bf16. */
int cu_gemm(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float *y, int ldy,
            sala_err *e);
/* Prefill forms (cu_forward.cu): y (T, out) fp32 += alpha · x Wᵀ (the residual add folded into
 * the GEMM: beta 1), and y (T, out) = bf16(x Wᵀ) (fp32 accumulation, bf16 output). */
int cu_gemm_acc(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
                float *y, int ldy, sala_err *e);
/* The same into a bf16 y: y = bf16(y + alpha · x Wᵀ), one rounding (cuBLAS, beta 1, any T). */
int cu_gemm_acc16(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
                  bf16 *y, int ldy, sala_err *e);
int cu_gemm_bf16(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, bf16 *y,
                 int ldy, sala_err *e);

/* ---- the prefill MLP's gate|up GEMM with SwiGLU in its epilogue (cu_gemm90.cu, sm_90a) ---- */
/* Steps of at least this many rows take it (SALA_CUDA_GU_FUSED=n at each call: n rows; 0: never).
 * Measured from 5,000 rows up (docs/CUDA.md "Fused gate|up GEMM + SwiGLU"); shorter steps keep
 * cuBLAS. */
#define CU_GU_FUSED_MIN 4096
int cu_gu_fused_min(void);
/* Whether k_gu_swiglu takes these operands: the sm_90a image runs (cu_sm90a), T >= the minimum,
 * I % 128 == 0, in % 64 == 0, 16-byte aligned W, x, act. */
bool cu_gu_fused_fits(const bf16 *W, int I, int in, const bf16 *x, int T, const bf16 *act);
/* act (T, I) bf16 = bf16(g · sigmoid(g) · u) with g | u = bf16(x Wᵀ), W (2I, in) = gate | up, x
 * (T, in): cu_gemm_bf16 + k_swiglu_bf16 in one kernel (fp32 accumulation). Only after
 * cu_gu_fused_fits. */
cudaError_t k_gu_swiglu(cudaStream_t st, const bf16 *W, int I, int in, const bf16 *x, int T,
                        bf16 *act);
cudaError_t cu_gemm90_init(void);
/* ---- dense causal prefill attention on wgmma (cu_dense90.cu, sm_90a; docs/CUDA.md "Dense
 * prefill attention 3") ---- */
/* Launch the kernel for a dense attention of d = 128 (lg = log2 G) with a K/V ring of ns stages
 * (2 or 3; 3 the default: 7% faster in call dn3-2). false: not taken (no sm_90a image, another
 * d, unaligned operands, no tensor map, a grid too tall), nothing launched; else *err is the
 * launch status. */
bool k_dense90(cudaStream_t st, const attn_args *a, int lg, int ns, cudaError_t *err);
/* The band form (sm_90a, d = 128, block 64): keys {j < 64} ∪ [64 (qb - CU_BAND_LOCAL), p] of
 * every query -> the unnormalized state a->part (n, nh, d + 2): O, max (log2 domain), sum.
 * false: nothing launched (no sm_90a image, other shapes, part_cap short, no tensor map). */
bool k_band90(cudaStream_t st, const attn_args *a, int lg, cudaError_t *err);
cudaError_t cu_dense90_init(void);
/* SMs of the current device (asked once, then kept; 0 when the runtime cannot tell). */
int cu_sms(void);
/* Whether the sm_90a image of the backend runs on this device (set by cu_kernels_init). */
bool cu_sm90a(void);
/* A 2-D TMA map of a (rows, cols) row-major bf16 matrix, boxes of box_rows x box_cols (box_cols
 * x 2 <= 128 bytes), 128B-swizzled, rows >= `rows` zero-filled on loads and dropped on stores.
 * false: no driver entry point (cu_attn_init looks it up) or the encode failed. */
bool cu_tmap_2d(CUtensorMap *m, const bf16 *base, int64_t rows, int64_t cols, int box_rows,
                int box_cols);
/* Whether tensor maps can be made at all (the driver's encoder was found). */
bool cu_tmap_ready(void);
/* SwiGLU of one (gate, up) pair in fp32: the arithmetic of every SwiGLU kernel. */
static __device__ __forceinline__ float cu_silu_mul(float g, float u)
{
    return g * (1.0f / (1.0f + expf(-g))) * u;
}
/* A value of an fp32 or bf16 array as fp32, and a store rounding to the array's type. */
static __device__ __forceinline__ float cu_f32(float v) { return v; }
static __device__ __forceinline__ float cu_f32(bf16 v) { return __bfloat162float(v); }
static __device__ __forceinline__ void cu_st1(float *p, float v) { *p = v; }
static __device__ __forceinline__ void cu_st1(bf16 *p, float v) { *p = __float2bfloat16(v); }

/* ---- few-row products on the FMA units (cu_gemv.cu, docs/CUDA.md "Decode GEMV 2") ---- */
#define CU_GEMV_T 8                   /* the kernel takes T <= this */
/* cu_gemm and its forms use it for T <= this. All of CU_GEMV_T, though cuBLAS is faster at T 5-8
 * (run V1): the GEMV's result for a token does not depend on T, so a batched decode step of <= 8
 * sequences equals single decode bit for bit (with 4, batches of 5-8 on cuBLAS drifted past
 * cuda_batch's tolerance: run V4). SALA_CUDA_GEMV=4 trades that for batch speed. */
#define CU_GEMV_DEFAULT_T 8
/* SWIGLU: W (out = 2I, in) is gate | up; y (T, ldy) bf16 = bf16(g · sigmoid(g) · u) for the I
 * columns (k_swiglu's arithmetic on the F32 form's g and u: the same bits as GEMV + k_swiglu). */
enum { CU_GEMV_F32, CU_GEMV_ACC, CU_GEMV_BF16, CU_GEMV_SWIGLU };
typedef struct {
    const bf16 *W; int out, in;       /* (out, in) */
    const bf16 *x; int ldx, T;        /* (T, ldx), T 1..CU_GEMV_T */
    void *y; int ldy;                 /* (T, ldy): fp32 (F32, ACC) or bf16 (BF16, SWIGLU) */
    float alpha;                      /* ACC: y += alpha · x Wᵀ */
    int form;                         /* CU_GEMV_F32 / _ACC / _BF16 / _SWIGLU */
    int variant;                      /* 0 .. cu_gemv_variants() - 1 (cu_gemv_pick) */
} cu_gemv_args;
/* Whether the GEMV takes the operands (T range, in % 8, ldx % 8, 16-byte aligned W and x). */
bool cu_gemv_fits(const bf16 *W, int in, const bf16 *x, int ldx, int T);
int cu_gemv_variants(void);
/* The variant for a shape (SALA_CUDA_GEMV_VAR=n forces one, read at each call). */
int cu_gemv_pick(int out, int in, int T);
/* Enqueue y = or += x Wᵀ on st (programmatic dependent launch unless SALA_CUDA_GEMV_PDL=0). */
cudaError_t k_gemv(cudaStream_t st, const cu_gemv_args *a);
/* Microbenchmark floor: read bytes (a multiple of 16) at p with the GEMV's loads. */
cudaError_t k_read_floor(cudaStream_t st, const void *p, size_t bytes, uint32_t *sink, int sms);
/* The largest T the forward pass gives the GEMV: SALA_CUDA_GEMV=n (0 .. CU_GEMV_T, read at each
 * call; 0: every product through cu_lt_gemm, today's cuBLAS path), else CU_GEMV_DEFAULT_T. */
int cu_gemv_max_t(void);
/* Whether the row kernels of an n-row step (norms, output gates, sparse_prep, the fused
 * lightning decode and its output) take programmatic dependent launch: n <= CU_GEMV_T unless
 * SALA_CUDA_ROW_PDL=0 (read at each launch; cu_kernels.cu). On by default since the fifth
 * session's end-of-session call: 0.02-0.07 ms a step ahead of plain launches (docs/CUDA.md
 * "Decode 5"). The kernels' CUPTI durations then include their wait (the bench's breakdown
 * counts the union: "overlap"). */
bool cu_row_pdl(int n);
/* First statement of a kernel launched by cu_launch_pdl: wait until the kernel before it has
 * completed (and what it wrote is visible), then let the next one launch. Without the launch
 * attribute both do nothing. */
__device__ __forceinline__ void cu_pdl_enter()
{
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
/* k<<<grid, block, smem, st>>>(args) through cudaLaunchKernelEx with the launch attributes
 * at[0 .. nat). */
template <typename... P, typename... A>
static cudaError_t cu_launch_ex(cudaLaunchAttribute *at, int nat, dim3 grid, dim3 block,
                                size_t smem, cudaStream_t st, void (*k)(P...), A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = (unsigned)nat;
    return cudaLaunchKernelEx(&cfg, k, args...);
}

/* k<<<grid, block, 0, st>>>(args), with programmatic stream serialization when pdl. */
template <typename... P, typename... A>
static cudaError_t cu_launch_pdl(bool pdl, dim3 grid, dim3 block, cudaStream_t st,
                                 void (*k)(P...), A... args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    return cu_launch_ex(at, pdl ? 1 : 0, grid, block, 0, st, k, args...);
}

/* ---- cuBLASLt GEMMs with the algorithm timed per shape (cu_lt.cu) ---- */
enum { CU_LT_OFF, CU_LT_TUNED, CU_LT_FORCE };
#define CU_LT_MIN_T 8                 /* T <= this (decode): always cublasGemmEx */
/* *out = a new Lt state (cu_lt_free frees it; NULL is a no-op). */
int cu_lt_new(cu_lt **out, sala_err *e);
void cu_lt_free(cu_lt *lt);
/* SALA_CUDA_LT: 0 -> CU_LT_OFF, force -> CU_LT_FORCE, else CU_LT_TUNED (read at each call). */
int cu_lt_mode(void);
/* y (T, out) (type yt: CUDA_R_32F or CUDA_R_16BF; row stride ldy) = alpha · x Wᵀ + beta · y,
 * bf16 W (out, in) and x (T, in), fp32 accumulation: through cuBLASLt when the shape's timed
 * algorithm won (first use of a shape tunes it, synchronizing m->st), else cublasGemmEx. */
int cu_lt_gemm(cu_model *m, const bf16 *W, int out, int in, const bf16 *x, int T, float alpha,
               float beta, void *y, int ldy, cudaDataType_t yt, sala_err *e);
/* The tuning record of shape i of m: 1 and *s filled, or 0 past the last. */
typedef struct {
    int out, in, T, bf16_out, beta1, wins;
    float ms_ex, ms_lt;               /* one call: cublasGemmEx, best Lt (-1: none ran) */
} cu_lt_stat;
int cu_lt_stats(const cu_model *m, int i, cu_lt_stat *s);
/* Microbenchmark: *best_ms = the fastest of cublasLtMatmulAlgoGetHeuristic's candidates for
 * y (T, out) fp32 = x Wᵀ, each timed over reps calls (after one) rotating over the ncopy copies
 * W[k] (weights from HBM); *ncand = candidates that ran. */
int cu_lt_bench(cu_model *m, const bf16 *const *W, int ncopy, int out, int in, const bf16 *x,
                int T, float *y, int reps, float *best_ms, int *ncand, sala_err *e);

#endif
