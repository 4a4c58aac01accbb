#!/usr/bin/env python3
"""PyTorch eager W11, the reference for `kiln-bench --only W11` (and `--amp --only W11`).

The all-MiniLM-L6-v2 architecture (BERT: 6 post-LN layers of width 384, 12 heads, intermediate
1536, erf GELU, vocabulary 30522) written in plain PyTorch, seeded random weights (the speed
does not depend on the values; nothing to download), sentence embeddings as sentence-transformers
computes them (mean over the attention mask, L2-normalised), forward only under `no_grad`,
batch 64 x 128 tokens. Attention is `F.scaled_dot_product_attention`, given the padding mask
only when some token is padding, as Hugging Face's BERT does (here none is: every sentence is
128 tokens), so PyTorch may use its flash kernels. TF32 off.

Prints one JSON line per mode on stdout with torch_bench.py's keys: framework "torch-<ver>"
(eager fp32) and "torch-<ver>-amp" (torch.autocast float16), workload "W11", size "b64s128",
metric "sentences/s", plus "ms_per_batch". torch_bench.py must be importable (PYTHONPATH).

Usage: python3 torch_minilm.py [--small] [--device cuda] [--modes fp32,amp16]
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_bench as tb

VOCAB, HIDDEN, LAYERS, HEADS, INTER, POSITIONS, EPS = 30522, 384, 6, 12, 1536, 512, 1e-12


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, HIDDEN)
        self.attn_out, self.attn_norm = nn.Linear(HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN, eps=EPS)
        self.inter, self.out, self.out_norm = nn.Linear(HIDDEN, INTER), nn.Linear(INTER, HIDDEN), nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, x, mask):
        b, t, _ = x.shape
        heads = lambda y: y.view(b, t, HEADS, HIDDEN // HEADS).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=mask)
        a = self.attn_norm(x + self.attn_out(ctx.transpose(1, 2).reshape(b, t, HIDDEN)))
        return self.out_norm(a + self.out(F.gelu(self.inter(a))))


class MiniLm(nn.Module):
    def __init__(self):
        super().__init__()
        self.word, self.position, self.token_type = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(POSITIONS, HIDDEN), nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

    def forward(self, ids, attention_mask):
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos) + self.token_type.weight[0])
        # Hugging Face passes no mask when every token is real (checked once, outside timing).
        mask = None if self.all_tokens else attention_mask[:, None, None, :].bool()
        for layer in self.layers:
            x = layer(x, mask)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="fp32,amp16")
    args = p.parse_args()
    args.only = "W11"  # what torch_bench's Ctx reads
    tb.set_tf32(False)
    device = torch.device(args.device)
    torch.manual_seed(11)
    b, t = (8, 32) if args.small else (64, 128)
    model = MiniLm().to(device).eval()
    ids = torch.randint(0, VOCAB, (b, t), device=device)
    attention_mask = torch.ones(b, t, dtype=torch.long, device=device)
    model.all_tokens = bool(attention_mask.all())
    for mode in args.modes.split(","):
        amp = mode == "amp16"
        ctx = tb.Ctx(args, f"torch-{tb.torch_version()}{'-amp' if amp else ''}", tb.adapter_name(device), None)
        ctx.sync()

        def run(_):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                model(ids, attention_mask)
            ctx.sync()

        secs = tb.measure(ctx, f"W11 {mode}", run)
        print(
            f'{{"framework": "{ctx.framework}", "adapter": "{ctx.adapter}", "workload": "W11", "size": "b{b}s{t}", '
            f'"metric": "sentences/s", "value": {b / secs:.4f}, "ms_per_batch": {secs * 1e3:.4f}}}',
            flush=True,
        )


if __name__ == "__main__":
    main()
