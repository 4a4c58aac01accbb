#!/usr/bin/env python3
"""Writes tests/data/sdpa_refs.safetensors: PyTorch's F.scaled_dot_product_attention on small
fixed inputs with attn_mask (bool and float, several broadcast shapes, a fully masked row),
scale and is_causal, with the gradients of sum(out * dout). tests/attention_mask.rs checks Kiln
(CPU and GPU) against them. No dropout: PyTorch's dropout mask comes from its own generator.

Inputs are stored as f32 (what the GPU takes); PyTorch computes in f64 from those values, and
the outputs and gradients are stored as f64. Per case `<name>.`: q, k, v, dout, mask (bool or
f32; absent without one), scale (f64 [1]), causal (bool [1]), out, dq, dk, dv.

Run with PyTorch (CPU is enough): python3 scripts/torch_sdpa_refs.py
"""
import os
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
B, H, TQ, TK, D = 2, 3, 5, 7, 8


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def bool_mask(*shape, full_row=False):
    m = torch.rand(*shape) > 0.3
    m[..., :, 0] = True  # every row sees key 0, unless a row is hidden below
    if full_row:
        m[..., 1, :] = False  # query 1 sees nothing: PyTorch (2.5+) gives zeros
    return m


def float_mask(*shape):
    m = torch.randn(*shape, dtype=torch.float32)
    m[torch.rand(*shape) < 0.2] = float("-inf")
    m[..., :, 0] = 0.0
    return m


CASES = {
    "bool_qk": dict(mask=bool_mask(TQ, TK)),
    "bool_b1qk_full_row": dict(mask=bool_mask(B, 1, TQ, TK, full_row=True)),
    "bool_bhqk_scale": dict(mask=bool_mask(B, H, TQ, TK), scale=0.3),
    "float_qk": dict(mask=float_mask(TQ, TK)),
    "float_b1qk_scale": dict(mask=float_mask(B, 1, TQ, TK), scale=1.7),
    "float_1h1k": dict(mask=float_mask(1, H, 1, TK)),
    "causal_scale": dict(causal=True, scale=0.5),
    "plain": dict(),
}

out = {}
for name, c in CASES.items():
    q, k, v, dout = rand(B, H, TQ, D), rand(B, H, TK, D), rand(B, H, TK, D), rand(B, H, TQ, D)
    q64, k64, v64 = (t.double().requires_grad_(True) for t in (q, k, v))
    mask = c.get("mask")
    m64 = None if mask is None else (mask if mask.dtype == torch.bool else mask.double())
    scale = c.get("scale")
    causal = c.get("causal", False)
    o = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=m64, is_causal=causal, scale=scale)
    (o * dout.double()).sum().backward()
    eff_scale = scale if scale is not None else D ** -0.5
    rec = dict(q=q, k=k, v=v, dout=dout, out=o.detach(), dq=q64.grad, dk=k64.grad, dv=v64.grad,
               scale=torch.tensor([eff_scale], dtype=torch.float64), causal=torch.tensor([causal]))
    if mask is not None:
        rec["mask"] = mask
    for key, t in rec.items():
        out[f"{name}.{key}"] = t.contiguous()

path = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "sdpa_refs.safetensors")
save_file(out, path, metadata={"torch": torch.__version__})
print(f"wrote {len(CASES)} cases to {os.path.normpath(path)} (torch {torch.__version__})")
