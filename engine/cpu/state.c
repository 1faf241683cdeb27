/* state.c: the CPU backend's save and load of a sequence (engine/engine.h "persisted state").
 * The CPU caches are fp32 and laid out exactly as the sections are ([len, nkv, hd] per sparse
 * layer, [n_lightning, nh, d, d] lightning states), so save writes the used prefix of each
 * buffer (dtype f32) and load reads straight into freshly sized buffers, one layer at a time.
 * A state of dtype bf16 (saved by the CUDA backend) is read in pieces through a small buffer
 * and widened exactly (bf16 -> fp32 is a 16-bit shift), so a context prefilled on the GPU
 * continues on the CPU. */
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/cpu_int.h"
#include "engine/cpu/infllm.h"
#include "engine/safetensors.h"

/* Values per piece of a bf16 section read (128 KiB of bf16). */
#define BF16_PIECE ((size_t)1 << 16)

int64_t cpu_seq_ckpt_lens(const void *bs, int64_t *lens, int64_t cap)
{
    const cpu_seq *s = bs;
    for (int i = 0; i < s->nckpt && i < cap; i++) lens[i] = s->ckpt[i].len;
    return s->nckpt;
}

int cpu_seq_save(void *bs, eng_state_write_fn fn, void *ud, sala_err *e)
{
    cpu_seq *s = bs;
    const eng_config *c = s->cm->c;
    const size_t row = (size_t)(c->num_key_value_heads * c->head_dim) * sizeof(float);
    const size_t sb = s->S_floats * sizeof(float);
    int rc = fn(ud, "lin.S", s->S, sb, e);
    for (int i = 0; !rc && i < s->nckpt; i++) rc = fn(ud, "ckpt.S", s->ckpt[i].S, sb, e);
    if (!rc && !s->nckpt) rc = fn(ud, "ckpt.S", NULL, 0, e);
    static const char *const names[4] = {"sparse.K", "sparse.V", "sparse.K1", "sparse.K2"};
    for (int k = 0; k < 4 && !rc; k++)
        for (int i = 0; i < c->n_sparse && !rc; i++) {
            float *buf = k == 0 ? s->K[i] : k == 1 ? s->V[i] : k == 2 ? s->K1[i] : s->K2[i];
            const int64_t rows = k < 2 ? s->len : k == 2 ? s->n1[i] : s->n2[i];
            rc = fn(ud, names[k], rows ? buf : NULL, (size_t)rows * row, e);
        }
    return rc;
}

/* Read n bf16 values at byte offset off of section name into dst as fp32. */
static int read_bf16(const eng_state_reader *r, const char *name, size_t off, float *dst,
                     size_t n, uint16_t *tmp, sala_err *e)
{
    for (size_t o = 0; o < n; o += BF16_PIECE) {
        const size_t k = n - o < BF16_PIECE ? n - o : BF16_PIECE;
        const int rc = r->read(r->ud, name, off + o * 2, tmp, k * 2, e);
        if (rc) return rc;
        for (size_t i = 0; i < k; i++) dst[o + i] = st_bf16_to_f32(tmp[i]);
    }
    return SALA_OK;
}

int cpu_seq_load(void *bm, int64_t len, const int64_t *ckpt_len, int64_t nckpt, int dtype,
                 const eng_state_reader *r, void **out, sala_err *e)
{
    cpu_model *cm = bm;
    const eng_config *c = cm->c;
    const eng_sparse_config *sc = &c->sparse;
    cpu_seq *s;
    *out = NULL;
    uint16_t *tmp = NULL;
    if (dtype != ENG_STATE_F32 && dtype != ENG_STATE_BF16)   /* engine.c refuses these */
        return sala_errf(e, SALA_EUNSUP, "state: dtype %d is unknown", dtype);
    int rc = cpu_seq_new(cm, (void **)&s, e);
    if (rc) return rc;
    if (dtype == ENG_STATE_BF16 && !(tmp = malloc(BF16_PIECE * sizeof(uint16_t)))) {
        rc = sala_errf(e, SALA_ENOMEM, "out of memory");
        goto fail;
    }
    const size_t rowv = (size_t)(c->num_key_value_heads * c->head_dim);
    const size_t sb = s->S_floats * sizeof(float);
    /* engine.c checked every section size against len and the config */
    if ((rc = cpu_seq_reserve(s, len, e))) goto fail;
    if ((rc = r->read(r->ud, "lin.S", 0, s->S, sb, e))) goto fail;
    for (int64_t i = 0; i < nckpt; i++) {
        float *S = malloc(sb + sizeof(float));
        if (!S || (rc = cpu_seq_ckpt_push(s, ckpt_len[i], S, e))) {
            free(S);
            rc = rc ? rc : sala_errf(e, SALA_ENOMEM, "out of memory for a checkpoint");
            goto fail;
        }
        if ((rc = r->read(r->ud, "ckpt.S", (size_t)i * sb, S, sb, e))) goto fail;
    }
    const int64_t w1 = infllm_n_windows(len, sc->kernel_size, sc->kernel_stride);
    const int64_t w2 = infllm_n_windows(len, 4 * sc->kernel_size, 4 * sc->kernel_stride);
    static const char *const names[4] = {"sparse.K", "sparse.V", "sparse.K1", "sparse.K2"};
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < c->n_sparse; i++) {
            float *buf = k == 0 ? s->K[i] : k == 1 ? s->V[i] : k == 2 ? s->K1[i] : s->K2[i];
            const int64_t rows = k < 2 ? len : k == 2 ? w1 : w2;
            const size_t nv = (size_t)rows * rowv;   /* values; bytes checked by engine.c */
            if (!nv) continue;
            rc = dtype == ENG_STATE_BF16
                     ? read_bf16(r, names[k], (size_t)i * nv * 2, buf, nv, tmp, e)
                     : r->read(r->ud, names[k], (size_t)i * nv * 4, buf, nv * 4, e);
            if (rc) goto fail;
        }
    for (int i = 0; i < c->n_sparse; i++) {
        s->n1[i] = w1;
        s->n2[i] = w2;
    }
    s->len = len;
    free(tmp);
    *out = s;
    return SALA_OK;
fail:
    free(tmp);
    cpu_seq_free(s);
    return rc;
}
