/* fuzz_model_config.h: the fixed tiny config.json of fuzz_model.c (tiny-a shrunk to 2 layers
 * S L, hidden 4), shared with tools/mkseeds.c, which writes matching weights. */
static const char fuzz_model_config[] =
    "{\"attention_bias\":false,\"attn_use_output_gate\":true,\"attn_use_rope\":false,\"bos_token"
    "_id\":1,\"dim_model_base\":64,\"eos_token_id\":[2,7],\"head_dim\":2,\"hidden_act\":\"silu\",\"hi"
    "dden_size\":4,\"intermediate_size\":8,\"lightning_head_dim\":2,\"lightning_nh\":2,\"lightnin"
    "g_nkv\":2,\"lightning_scale\":\"1/sqrt(d)\",\"lightning_use_rope\":true,\"max_position_embed"
    "dings\":64,\"mixer_types\":[\"minicpm4\",\"lightning-attn\"],\"model_type\":\"minicpm_sala\",\"n"
    "um_attention_heads\":2,\"num_hidden_layers\":2,\"num_key_value_heads\":1,\"pad_token_id\":2"
    ",\"pretraining_tp\":1,\"qk_norm\":true,\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_th"
    "eta\":10000.0,\"scale_depth\":1.4,\"scale_emb\":12,\"sparse_config\":{\"block_size\":4,\"dense"
    "_len\":8,\"init_blocks\":1,\"kernel_size\":4,\"kernel_stride\":2,\"topk\":2,\"use_nope\":false,"
    "\"window_size\":4},\"tie_word_embeddings\":false,\"use_output_gate\":true,\"use_output_norm"
    "\":true,\"vocab_size\":8}";
