#!/usr/bin/env python3
"""Peer for the sparse layers alone (issue 6: "InfLLM-V2 must beat dense attention from about
16K tokens on"): one layer of dense causal attention of MiniCPM-SALA's sparse-layer shape (32
query heads, 2 KV heads of 128, GQA) over a whole prompt, with PyTorch's
scaled_dot_product_attention (FlashAttention / cuDNN on Hopper). Random bf16 q, k, v made on the
GPU. Prints one JSON line per length: the median of the timed runs in milliseconds.

usage: python3 bench/peer_sdpa_layer.py [--lengths 8192,16384,32768,65536] [--runs 5]
`sala bench gpu --peer-sdpa bench/peer_sdpa_layer.py` runs it at the peer lengths and prints
beside it one sparse layer of ours: (dense_attn + sparse_attn + sparse_scoring + topk) over the
sparse layers that attend over the whole prompt (7: the last layer takes only the last row)."""
import argparse, json
import torch
import torch.nn.functional as F

H, KV, HD = 32, 2, 128


@torch.inference_mode()
def layer_ms(T, runs):
    g = torch.Generator(device="cuda").manual_seed(T)
    q = torch.randn(1, H, T, HD, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, KV, T, HD, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, KV, T, HD, device="cuda", dtype=torch.bfloat16, generator=g)
    F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)   # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="8192,16384,32768,65536")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for T in (int(x) for x in args.lengths.split(",")):
        print(json.dumps({"bench": "sdpa_layer", "tokens": T, "heads": H, "kv_heads": KV,
                          "head_dim": HD, "ms": round(layer_ms(T, args.runs), 4),
                          "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}),
              flush=True)


if __name__ == "__main__":
    main()
