/* random_model.c: `sala model random`: a model directory with random bf16 weights. */
#include "engine/random_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/config.h"
#include "engine/safetensors.h"

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void eng_rng_seed(eng_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

uint64_t eng_rng_next(eng_rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double eng_rng_uniform(eng_rng *r) { return (double)(eng_rng_next(r) >> 11) * 0x1.0p-53; }

double eng_rng_normal(eng_rng *r)
{
    double u1 = eng_rng_uniform(r), u2 = eng_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int add(st_writer *w, eng_rng *r, const char *name, int64_t d0, int64_t d1, double mean,
               double std, sala_err *e)
{
    int64_t shape[2] = {d0, d1};
    void *buf;
    int rc = st_writer_alloc(w, name, ST_BF16, d1 ? 2 : 1, shape, &buf, e);
    if (rc) return rc;
    uint16_t *p = buf;
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    for (size_t i = 0; i < n; i++) p[i] = st_f32_to_bf16((float)(mean + std * eng_rng_normal(r)));
    return SALA_OK;
}

static int copy_file(const char *from, const char *to, sala_err *e)
{
    char *buf;
    size_t len;
    int rc = sala_file_read(from, 1u << 30, &buf, &len, e);
    if (rc) return rc;
    FILE *f = fopen(to, "wb");
    if (!f) {
        free(buf);
        return sala_errf(e, SALA_EIO, "%s: cannot create: %s", to, strerror(errno));
    }
    size_t w = fwrite(buf, 1, len, f);
    free(buf);
    if (fclose(f) != 0 || w != len) return sala_errf(e, SALA_EIO, "%s: write failed", to);
    return SALA_OK;
}

int eng_random_model_write(const char *config_path, const char *out_dir, uint64_t seed,
                           const char *tokenizer_path, sala_err *e)
{
    eng_config c;
    int rc = eng_config_load(config_path, &c, e);
    if (rc) return rc;
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return sala_errf(e, SALA_EIO, "%s: cannot create directory: %s", out_dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", out_dir);
    if ((rc = copy_file(config_path, path, e))) return rc;
    if (tokenizer_path) {
        snprintf(path, sizeof(path), "%s/tokenizer.json", out_dir);
        if ((rc = copy_file(tokenizer_path, path, e))) return rc;
    }
    st_writer *w = st_writer_new();
    if (!w) return sala_errf(e, SALA_ENOMEM, "out of memory");
    eng_rng r;
    eng_rng_seed(&r, seed);
    int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
    double sD = 1.0 / sqrt((double)D), sI = 1.0 / sqrt((double)I);
    char nm[256];
    if ((rc = add(w, &r, "model.embed_tokens.weight", V, D, 0, 0.01, e))) goto fail;
    for (int64_t l = 0; l < c.num_hidden_layers && !rc; l++) {
#define P(suffix) (snprintf(nm, sizeof(nm), "model.layers.%lld.%s", (long long)l, suffix), nm)
        bool sp = c.mixer[l] == ENG_MIXER_SPARSE;
        int64_t hd = sp ? c.head_dim : c.lightning_head_dim;
        int64_t qd = (sp ? c.num_attention_heads : c.lightning_nh) * hd;
        int64_t kd = (sp ? c.num_key_value_heads : c.lightning_nkv) * hd;
        double qk = sp ? 1.5 * sD : sD;
        if ((rc = add(w, &r, P("input_layernorm.weight"), D, 0, 1, 0.1, e)) ||
            (rc = add(w, &r, P("post_attention_layernorm.weight"), D, 0, 1, 0.1, e)) ||
            (rc = add(w, &r, P("self_attn.q_proj.weight"), qd, D, 0, qk, e)) ||
            (rc = add(w, &r, P("self_attn.k_proj.weight"), kd, D, 0, qk, e)) ||
            (rc = add(w, &r, P("self_attn.v_proj.weight"), kd, D, 0, sD, e)) ||
            (rc = add(w, &r, P("self_attn.o_proj.weight"), D, qd, 0, 1.0 / sqrt((double)qd), e)) ||
            (rc = add(w, &r, P(sp ? "self_attn.o_gate.weight" : "self_attn.z_proj.weight"), qd, D, 0, sD, e)))
            break;
        if (!sp && ((rc = add(w, &r, P("self_attn.q_norm.weight"), hd, 0, 1, 0.1, e)) ||
                    (rc = add(w, &r, P("self_attn.k_norm.weight"), hd, 0, 1, 0.1, e)) ||
                    (rc = add(w, &r, P("self_attn.o_norm.weight"), qd, 0, 1, 0.1, e))))
            break;
        if ((rc = add(w, &r, P("mlp.gate_proj.weight"), I, D, 0, sD, e)) ||
            (rc = add(w, &r, P("mlp.up_proj.weight"), I, D, 0, sD, e)) ||
            (rc = add(w, &r, P("mlp.down_proj.weight"), D, I, 0, sI, e)))
            break;
#undef P
    }
    if (rc) goto fail;
    if ((rc = add(w, &r, "model.norm.weight", D, 0, 1, 0.1, e)) ||
        (rc = add(w, &r, "lm_head.weight", V, D, 0, 4.0 * ((double)D / c.dim_model_base) * sD, e)))
        goto fail;
    char seedbuf[32];
    snprintf(seedbuf, sizeof(seedbuf), "%llu", (unsigned long long)seed);
    if ((rc = st_writer_meta(w, "format", "pt", e)) || (rc = st_writer_meta(w, "sala_random_seed", seedbuf, e)))
        goto fail;
    snprintf(path, sizeof(path), "%s/model.safetensors", out_dir);
    rc = st_writer_write(w, path, e);
fail:
    st_writer_free(w);
    return rc;
}
