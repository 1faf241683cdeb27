/* cpu_int.h: internals of the CPU backend (fp32 reference, SALA-SPEC §3): the ops, one per
 * file, and the model/sequence state they run over. Not a public header.
 *
 * Tensor layouts are row-major; shape comments give the dims outermost first. Weights stay in
 * the mmap'ed checkpoint (bf16/f16/f32) and are converted to fp32 one tile of rows at a time
 * (cpu_matmul.c); only the small norm weights are kept as fp32 copies. */
#ifndef SALA_CPU_INT_H
#define SALA_CPU_INT_H

#include <stdint.h>

#include "engine/backend.h"
#include "engine/model.h"

/* Largest number of tokens one forward step processes; longer calls are split (the results do
 * not depend on the split). Lightning prefill runs its chunked form in chunks of CPU_LA_CHUNK. */
#define CPU_CHUNK 256
#define CPU_LA_CHUNK 64
/* Smallest amount of work (multiply-adds) a parallel region is opened for. */
#define CPU_PAR_MIN ((int64_t)1 << 24)
/* Floats of the fp32 weight tile (at least one row of the widest weight). */
#define CPU_TILE_FLOATS (1 << 20)

/* ---- ops ---- */

/* Convert n elements of W starting at element first to fp32 (BF16 by shift, others through
 * st_to_f32). The range is valid by construction (model.c checked every shape). */
void cpu_convert(const st_tensor *W, size_t first, size_t n, float *dst);

/* y[T, out] = x[T, in] · Wᵀ for W [out, in] in the checkpoint's dtype, converting at most
 * tile_floats/in rows of W at a time; tile holds tile_floats floats per OpenMP thread. */
void cpu_matmul(const st_tensor *W, const float *x, int64_t T, float *y, float *tile,
                int64_t tile_floats);

/* out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, for rows r < rows (in place allowed). */
void cpu_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps);

/* inv_freq[i] = 1 / theta^(2i/d) in fp32, i < d/2 (SALA-SPEC §3.4). */
void cpu_rope_init(float *inv_freq, int64_t d, double theta);
/* Rotate-half RoPE in place on x [T, nh, d] for positions p0..p0+T-1. */
void cpu_rope(float *x, int64_t T, int64_t nh, int64_t d, int64_t p0, const float *inv_freq);

/* Simple-GLA (SALA-SPEC §3.5) over T tokens for all heads, state S updated in place.
 * q, k, v, o: [T, nh, d]; S: [nh, d, d] (key dim, value dim); dec: [nh, CPU_LA_CHUNK + 1],
 * dec[n, e] = λ_n^e. T == 1 runs the recurrence; otherwise the chunked form in chunks of
 * CPU_LA_CHUNK. scratch: cpu_lightning_scratch(d) floats. */
int64_t cpu_lightning_scratch(int64_t d);
void cpu_lightning(int64_t T, int64_t nh, int64_t d, const float *dec, float scale,
                   const float *q, const float *k, const float *v, float *S, float *o,
                   float *scratch);

/* Dense causal attention of the G = nh/nkv q heads of kv group g for one query over keys
 * 0..nkeys-1: q [G, d] (contiguous), K/V [nkeys, nkv, d], out [G, d]. Online softmax over
 * tiles of CPU_ATT_TILE keys; scratch: cpu_attn_dense_scratch(G, d) floats. */
#define CPU_ATT_TILE 256
int64_t cpu_attn_dense_scratch(int64_t G, int64_t d);
void cpu_attn_dense(const float *q, int64_t G, int64_t nkv, int64_t d, int g, const float *K,
                    const float *V, int64_t nkeys, float scale, float *scratch, float *out);

/* ---- model and sequence state ---- */

typedef struct {
    float *in_norm, *post_norm;        /* [D] */
    float *q_norm, *k_norm;            /* lightning: [lhd] */
    float *o_norm;                     /* lightning: [lnh*lhd] */
    int kind_index;                    /* index among the layers of its kind */
} cpu_layer;

typedef struct {
    const eng_model *m;
    const eng_config *c;
    cpu_layer *layers;                 /* [num_hidden_layers] */
    float *final_norm;                 /* [D] */
    float *inv_freq;                   /* [lhd/2] */
    float *dec;                        /* [lnh, CPU_LA_CHUNK+1] */
    int64_t tile_floats;
} cpu_model;

typedef struct {
    int64_t len;
    float *S;                          /* [n_lightning, lnh, lhd, lhd] */
} cpu_ckpt;

typedef struct {
    cpu_model *cm;
    int64_t len;                       /* tokens processed */
    int64_t cap;                       /* token capacity of the K/V caches */
    float **K, **V;                    /* per sparse layer: [cap, nkv, hd] */
    float **K1, **K2;                  /* per sparse layer: [windows(cap), nkv, hd] */
    int64_t *n1, *n2;                  /* per sparse layer: entries in K1/K2 */
    float *S;                          /* [n_lightning, lnh, lhd, lhd] */
    size_t S_floats;
    cpu_ckpt *ckpt;
    int nckpt, ckpt_cap;
    /* scratch for CPU_CHUNK tokens, sized once in seq_new */
    float *x, *h, *a;                  /* [CPU_CHUNK, D] */
    float *q, *o, *z;                  /* [CPU_CHUNK, max(nh*hd, lnh*lhd)] */
    float *k, *v;                      /* [CPU_CHUNK, max(nkv*hd, lnh*lhd)] */
    float *g, *u;                      /* [CPU_CHUNK, I] */
    float *tile;                       /* [nthr, tile_floats] */
    float *la_scratch;                 /* cpu_lightning_scratch */
    int32_t *sel;                      /* [CPU_CHUNK, nkv, topk blocks] */
    int nthr;
    float **thr;                       /* per thread: [thr_floats] */
    int64_t thr_floats;                /* grows (doubling) with the InfLLM-V2 selection scratch */
    int64_t thr_sel_off;               /* where the selection scratch starts in a thread's slice */
} cpu_seq;

int cpu_forward(cpu_seq *s, const eng_forward_args *a, sala_err *e);

/* cpu_backend.c: sequence life cycle, shared with state.c. */
int cpu_seq_new(void *bm, void **out, sala_err *e);
void cpu_seq_free(void *bs);
/* Grow the sparse caches to hold need tokens (forward.c). */
int cpu_seq_reserve(cpu_seq *s, int64_t need, sala_err *e);
/* Append a checkpoint of length len owning S (freed with the sequence once pushed). */
int cpu_seq_ckpt_push(cpu_seq *s, int64_t len, float *S, sala_err *e);

/* state.c: save/load (engine/backend.h seq_ckpt_lens, seq_save, seq_load). */
int64_t cpu_seq_ckpt_lens(const void *bs, int64_t *lens, int64_t cap);
int cpu_seq_save(void *bs, eng_state_write_fn fn, void *ud, sala_err *e);
int cpu_seq_load(void *bm, int64_t len, const int64_t *ckpt_len, int64_t nckpt, int dtype,
                 const eng_state_reader *r, void **out, sala_err *e);

#endif
