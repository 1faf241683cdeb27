/* model.h: a Hugging Face model directory, opened and checked (SALA-SPEC §2).
 *
 * eng_model_open reads config.json, then model.safetensors or the shards named by
 * model.safetensors.index.json (weight_map file names must be plain names inside the
 * directory), mmaps and validates every file, and checks that every tensor of SALA-SPEC §2.2 is
 * present with the shape the config implies and a float dtype (BF16, F16 or F32). Extra tensors
 * are logged as one warning. Tensors are read-only views into the mappings.
 *
 * Ownership: the model owns its files; eng_model_close(NULL) is a no-op. */
#ifndef SALA_MODEL_H
#define SALA_MODEL_H

#include "engine/config.h"
#include "engine/safetensors.h"

typedef struct {
    const st_tensor *in_norm, *post_norm;      /* [D] */
    const st_tensor *q, *k, *v;                /* [heads*hd, D], [kv*hd, D], [kv*hd, D] */
    const st_tensor *o;                        /* [D, heads*hd] */
    const st_tensor *gate;                     /* sparse: o_gate; lightning: z_proj [heads*hd, D] */
    const st_tensor *q_norm, *k_norm;          /* lightning only: [hd] */
    const st_tensor *o_norm;                   /* lightning only: [heads*hd] */
    const st_tensor *mlp_gate, *mlp_up;        /* [I, D] */
    const st_tensor *mlp_down;                 /* [D, I] */
} eng_layer_weights;

typedef struct eng_model {
    char *dir;
    eng_config cfg;
    st_file **files;
    size_t nfiles;
    const st_tensor *embed, *final_norm, *lm_head;
    eng_layer_weights *layers;                 /* [num_hidden_layers] */
    int64_t n_params;                          /* of the expected tensors */
    uint64_t bytes_on_disk;                    /* sum of the safetensors files */
    size_t n_tensors, n_extra;
    size_t dtype_count[ST_NDTYPE];
    char *tokenizer_path;                      /* DIR/tokenizer.json, or NULL when absent */
    uint64_t fingerprint;                      /* xxh3 of config.json and every tensor header */
} eng_model;

int eng_model_open(const char *dir, eng_model **out, sala_err *e);
void eng_model_close(eng_model *m);

/* Largest accepted config.json / index.json sizes. */
#define ENG_MAX_JSON_BYTES (64u << 20)
#define ENG_MAX_SHARDS 4096

#endif
