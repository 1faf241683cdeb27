#!/usr/bin/env python3
"""Peer for `sala bench gpu`: what a user would otherwise run. A dense 8B transformer of
Qwen3-8B shape (36 layers, hidden 4096, 32 query / 8 KV heads of 128, MLP 12288, vocab 151936,
q/k RMSNorm, RoPE) with random bf16 weights, prefilled with PyTorch SDPA (FlashAttention on
Hopper), keeping the KV cache as a serving stack must. Prints time-to-first-token per length.

usage: python3 bench/peer_dense8b.py [--lengths 8192,32768,65536,131072] [--chunk 0]
With --chunk N the prompt is prefilled in chunks of N tokens (SDPA with the cached prefix).
Weights are generated on the GPU; nothing is downloaded."""
import argparse, json, sys, time
import torch
import torch.nn.functional as F

L, D, H, KV, HD, I, V = 36, 4096, 32, 8, 128, 12288, 151936
dev = "cuda"
dt = torch.bfloat16


def rms(x, w, eps=1e-6):
    v = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(v + eps)).to(dt) * w


def rope_tables(T, p0=0):
    inv = 1.0 / (1e6 ** (torch.arange(0, HD, 2, device=dev, dtype=torch.float32) / HD))
    t = torch.arange(p0, p0 + T, device=dev, dtype=torch.float32)
    a = torch.outer(t, inv)
    a = torch.cat([a, a], -1)
    return a.cos(), a.sin()


def rope(x, cos, sin):  # x [T, h, d]
    x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
    r = torch.cat([-x2, x1], -1)
    return (x.float() * cos[:, None] + r.float() * sin[:, None]).to(dt)


def make_weights():
    g = torch.Generator(device=dev).manual_seed(0)
    def w(*s, std=0.02):
        return (torch.randn(*s, device=dev, generator=g, dtype=torch.float32) * std).to(dt)
    layers = []
    for _ in range(L):
        layers.append(dict(
            ln1=torch.ones(D, device=dev, dtype=dt), ln2=torch.ones(D, device=dev, dtype=dt),
            wqkv=w((H + 2 * KV) * HD, D), wo=w(D, H * HD), qn=torch.ones(HD, device=dev, dtype=dt),
            kn=torch.ones(HD, device=dev, dtype=dt), wgu=w(2 * I, D), wd=w(D, I)))
    return dict(emb=w(V, D), norm=torch.ones(D, device=dev, dtype=dt), head=w(V, D), layers=layers)


@torch.inference_mode()
def prefill(W, ids, chunk):
    T = ids.numel()
    kc = [torch.empty(KV, T, HD, device=dev, dtype=dt) for _ in range(L)]
    vc = [torch.empty(KV, T, HD, device=dev, dtype=dt) for _ in range(L)]
    step = chunk if chunk else T
    for p0 in range(0, T, step):
        n = min(step, T - p0)
        x = W["emb"][ids[p0:p0 + n]]
        cos, sin = rope_tables(n, p0)
        for l, lw in enumerate(W["layers"]):
            h = rms(x, lw["ln1"])
            qkv = h @ lw["wqkv"].t()
            q, k, v = qkv.split([H * HD, KV * HD, KV * HD], -1)
            q = rope(rms(q.view(n, H, HD), lw["qn"]), cos, sin)
            k = rope(rms(k.view(n, KV, HD), lw["kn"]), cos, sin)
            kc[l][:, p0:p0 + n] = k.transpose(0, 1)
            vc[l][:, p0:p0 + n] = v.view(n, KV, HD).transpose(0, 1)
            qh = q.transpose(0, 1).unsqueeze(0)
            kh = kc[l][:, : p0 + n].unsqueeze(0)
            vh = vc[l][:, : p0 + n].unsqueeze(0)
            if p0 == 0:
                o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
            else:  # bottom-right causal alignment for a chunk after a cached prefix
                mask = torch.ones(n, p0 + n, device=dev, dtype=torch.bool).tril(p0)
                o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, enable_gqa=True)
            x = x + o.squeeze(0).transpose(0, 1).reshape(n, H * HD) @ lw["wo"].t()
            h = rms(x, lw["ln2"])
            gu = h @ lw["wgu"].t()
            g_, u = gu.split([I, I], -1)
            x = x + (F.silu(g_) * u) @ lw["wd"].t()
    logits = rms(x[-1:], W["norm"]) @ W["head"].t()
    return logits.argmax(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="8192,32768,65536,131072")
    ap.add_argument("--chunk", type=int, default=0)
    a = ap.parse_args()
    W = make_weights()
    torch.cuda.synchronize()
    prefill(W, torch.randint(0, V, (1024,), device=dev), a.chunk)  # warm-up
    print(f"peer: dense 8B (Qwen3-8B shape), PyTorch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}, chunk {a.chunk or 'none'}")
    rows = []
    for T in [int(s) for s in a.lengths.split(",")]:
        ids = torch.randint(0, V, (T,), device=dev)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        try:
            t0 = time.perf_counter()
            prefill(W, ids, a.chunk)
            torch.cuda.synchronize()
            dt_s = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30
            rows.append(dict(tokens=T, ttft_s=round(dt_s, 3), peak_gib=round(peak, 1)))
        except torch.OutOfMemoryError:
            rows.append(dict(tokens=T, ttft_s=None, error="out of memory"))
            torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
