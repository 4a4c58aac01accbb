#!/usr/bin/env python3
"""PyTorch reference values for Kiln's pools, transposed convolutions and activations.

Writes tests/data/torch_nn_refs.safetensors, read by crates/kiln-nn/tests/torch_refs.rs. For
every case NAME it stores, in float64:
  NAME.x            the input
  NAME.p<i>         the op's learnable parameters (weights, biases), if any
  NAME.out          the output
  NAME.gout         a random cotangent; the gradients below are of sum(out * gout)
  NAME.grad.x       d/dx
  NAME.grad.p<i>    d/dp<i>
  NAME.indices      int32, for ops with return_indices
Run from the repository root where PyTorch is installed: `python3 scripts/torch_nn_refs.py`.
The Rust test names each case's op itself: the two lists must agree (it fails on a missing key).
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
D = torch.float64


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=D) * scale).contiguous()


X4 = rnd(2, 2, 8, 7)  # pools: ceil mode hangs over the 8 rows and drops a window of the 7 columns
X3 = rnd(2, 2, 11)  # 1-D pools
# Activations: spread over every branch, plus large values for the stable ones.
XA = torch.cat([rnd(40, scale=4.0), torch.tensor([-60.0, -25.0, -3.5, -2.9, 2.9, 3.5, 6.5, 25.0, 60.0], dtype=D)]).reshape(7, 7)

CASES = {
    # name: (fn(x, *params) -> out or (out, indices), x, [params])
    "softplus_beta2_thr5": (lambda x: F.softplus(x, beta=2.0, threshold=5.0), XA, []),
    "softplus_default": (lambda x: F.softplus(x), XA, []),
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 1.5), XA, []),
    "relu6": (F.relu6, XA, []),
    "hardswish": (F.hardswish, XA, []),
    "hardsigmoid": (F.hardsigmoid, XA, []),
    "selu": (F.selu, XA, []),
    "celu": (lambda x: F.celu(x, alpha=0.7), XA, []),
    "logsigmoid": (F.logsigmoid, XA, []),
    "softsign": (F.softsign, XA, []),
    "prelu_one": (F.prelu, rnd(2, 3, 4), [torch.tensor([0.3], dtype=D)]),
    "prelu_channels": (F.prelu, rnd(2, 3, 4), [torch.tensor([0.25, -0.5, 1.5], dtype=D)]),
    "glu_dim1": (lambda x: F.glu(x, 1), rnd(2, 6, 3), []),
    "glu_last": (lambda x: F.glu(x, -1), rnd(2, 3, 4), []),
    # Pools.
    "max2d_k3s2p1_ceil": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True), X4, []),
    "max2d_dilated": (lambda x: F.max_pool2d(x, (2, 3), (1, 2), (1, 1), dilation=(2, 1), return_indices=True), X4, []),
    "max2d_ceil_dilated": (lambda x: F.max_pool2d(x, 2, 2, 1, dilation=2, ceil_mode=True, return_indices=True), X4, []),
    "max2d_k2s2p1_ceil": (lambda x: F.max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True), X4, []),
    "avg2d_k2s2p1_ceil": (lambda x: F.avg_pool2d(x, 2, 2, 1, ceil_mode=True), X4, []),
    "avg2d_ceil_exclude_pad": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), X4, []),
    "avg2d_ceil_include_pad": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True), X4, []),
    "avg2d_exclude_pad": (lambda x: F.avg_pool2d(x, (3, 2), (2, 3), (1, 1), count_include_pad=False), X4, []),
    "avg2d_divisor": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=5), X4, []),
    "max1d": (lambda x: F.max_pool1d(x, 3, 2, 1, dilation=2, ceil_mode=True, return_indices=True), X3, []),
    "avg1d": (lambda x: F.avg_pool1d(x, 4, 3, 2, ceil_mode=True, count_include_pad=False), X3, []),
    "adaptive_max2d": (lambda x: F.adaptive_max_pool2d(x, (4, 3), return_indices=True), X4, []),
    "adaptive_max2d_overlap": (lambda x: F.adaptive_max_pool2d(x, (5, 7), return_indices=True), X4, []),
    "adaptive_max1d": (lambda x: F.adaptive_max_pool1d(x, 4, return_indices=True), X3, []),
    "adaptive_avg1d": (lambda x: F.adaptive_avg_pool1d(x, 4), X3, []),
    # Transposed convolutions.
    "ct2d_groups_dilation": (
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(2, 2)),
        rnd(2, 4, 5, 4),
        [rnd(4, 3, 3, 2), rnd(6)],
    ),
    "ct2d_outpad_past_stride": (
        lambda x, w: F.conv_transpose2d(x, w, None, stride=1, padding=1, output_padding=2, dilation=3),
        rnd(1, 2, 4, 3),
        [rnd(2, 2, 2, 2)],
    ),
    "ct1d": (
        lambda x, w, b: F.conv_transpose1d(x, w, b, stride=3, padding=1, output_padding=2, groups=2),
        rnd(2, 4, 7),
        [rnd(4, 1, 3), rnd(2)],
    ),
}


def main():
    out = {}
    for name, (fn, x, params) in CASES.items():
        x = x.clone().requires_grad_(True)
        ps = [p.clone().requires_grad_(True) for p in params]
        res = fn(x, *ps)
        y, idx = (res if isinstance(res, tuple) else (res, None))
        gout = rnd(*y.shape)
        (y * gout).sum().backward()
        out[f"{name}.x"] = x.detach()
        out[f"{name}.out"] = y.detach().contiguous()
        out[f"{name}.gout"] = gout
        out[f"{name}.grad.x"] = x.grad
        for i, p in enumerate(ps):
            out[f"{name}.p{i}"] = p.detach()
            out[f"{name}.grad.p{i}"] = p.grad
        if idx is not None:
            out[f"{name}.indices"] = idx.to(torch.int32).contiguous()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "data", "torch_nn_refs.safetensors")
    save_file(out, path, metadata={"torch": torch.__version__})
    print(f"wrote {len(out)} tensors for {len(CASES)} cases to {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
