#!/usr/bin/env python3
"""Writes small PyTorch checkpoints of every kiln-nn layer, and what PyTorch computes with them,
into crates/kiln-nn/tests/data/torch/ (checked in; the Rust test crates/kiln-nn/tests/torch_state_dict.rs
loads each checkpoint into the Kiln layer and compares outputs).

For each case NAME:
  NAME.safetensors     the module's state_dict() exactly as PyTorch names and stores it
                       (safetensors.torch.save_file), f16/bf16 for the *_f16/*_bf16 cases
  NAME.io.safetensors  "input" (and "mask" where the layer takes one) and "output", f32
                       (Embedding's input is int64 ids)

Needs torch and safetensors (CPU is enough). Deterministic: the same files on every run with the
same PyTorch version. Run from anywhere: python3 scripts/make_torch_checkpoints.py
"""
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "kiln-nn", "tests", "data", "torch")


class Block(nn.Module):
    """PyTorch twin of kiln_nn::TransformerBlock (pre-norm, erf GELU, Kiln's key names)."""

    def __init__(self, d, heads, ratio):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ratio * d), nn.GELU(), nn.Linear(ratio * d, d))

    def forward(self, x, key_padding_mask=None):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def save(name, module, io, dtype=None):
    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    save_file(sd, os.path.join(OUT, name + ".safetensors"))
    save_file({k: v.detach().contiguous() for k, v in io.items()}, os.path.join(OUT, name + ".io.safetensors"))


def randomize(module):
    """Non-default values everywhere (norm weights are ones and zeros at construction)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def plain(name, module, x):
    module.eval()
    save(name, module, {"input": x, "output": module(x)})


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    plain("linear", nn.Linear(5, 7), torch.randn(3, 5))
    plain("linear_nobias", nn.Linear(5, 3, bias=False), torch.randn(2, 4, 5))
    plain("conv1d", nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2), torch.randn(2, 4, 9))
    plain("conv2d", nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2), torch.randn(2, 4, 7, 6))
    plain("conv_transpose2d", nn.ConvTranspose2d(3, 4, (3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1)),
          torch.randn(2, 3, 4, 5))
    for name, m in [("layer_norm", nn.LayerNorm(6)), ("rms_norm", nn.RMSNorm(6)), ("group_norm", nn.GroupNorm(2, 6))]:
        randomize(m)
        shape = (3, 6) if name != "group_norm" else (2, 6, 5)
        plain(name, m, torch.randn(*shape))
    emb = nn.Embedding(10, 4)
    ids = torch.tensor([[1, 0, 9], [3, 3, 7]], dtype=torch.int64)
    save("embedding", emb, {"input": ids, "output": emb(ids)})

    # BatchNorm: a few training steps first, so that running_mean / running_var and
    # num_batches_tracked hold something; the output is the eval-mode forward.
    for name, m, shape in [("batch_norm1d", nn.BatchNorm1d(5), (8, 5)), ("batch_norm2d", nn.BatchNorm2d(3), (4, 3, 5, 5))]:
        randomize(m)
        m.train()
        for _ in range(3):
            m(torch.randn(*shape) * 2 + 1)
        plain(name, m, torch.randn(*shape))

    # MultiheadAttention: PyTorch's packed in_proj_weight / in_proj_bias.
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    randomize(mha)
    out = mha(x, x, x, key_padding_mask=mask, need_weights=False)[0]
    save("mha", mha, {"input": x, "mask": mask, "output": out})
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    out = mha(x, x, x, attn_mask=causal, need_weights=False)[0]
    save("mha_causal", mha, {"input": x, "output": out})
    mha = nn.MultiheadAttention(8, 4, bias=False, batch_first=True).eval()
    save("mha_nobias", mha, {"input": x, "output": mha(x, x, x, need_weights=False)[0]})

    # Nested: prefixes from Sequential, and an MHA inside a block.
    seq = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    plain("sequential", seq, torch.randn(4, 5))
    block = Block(8, 2, 4).eval()
    randomize(block)
    save("transformer_block", block, {"input": x, "mask": mask, "output": block(x, key_padding_mask=mask)})

    # Half-precision checkpoints load into f32 modules: the expected output is the f32 layer
    # with the rounded weights.
    for name, dtype in [("linear_f16", torch.float16), ("linear_bf16", torch.bfloat16)]:
        lin = nn.Linear(6, 4)
        with torch.no_grad():
            for p in lin.parameters():
                p.copy_(p.to(dtype).float())
        x = torch.randn(3, 6)
        save(name, lin, {"input": x, "output": lin(x)}, dtype=dtype)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
