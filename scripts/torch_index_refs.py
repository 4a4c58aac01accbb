#!/usr/bin/env python3
"""Reference values from PyTorch (CPU, float64) for the index ops whose semantics are subtle:
topk and max/min index tie-breaking and NaN, scatter_reduce's include_self and empty groups,
integer mean's floor division, prod's gradient at zeros, amax's shared gradient on ties,
scatter/index_add, and cross-entropy with class weights, ignore_index and label smoothing.

Writes tests/data/torch_index_refs.safetensors, read by tests/torch_index_refs.rs. Indices are
stored as int32, floats as float64. Every gradient is of sum(out * w) for the stored `w`.
Run from the repository root: python3 scripts/torch_index_refs.py
"""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}


def put(name, t):
    t = t.detach()
    if t.dtype in (torch.int64, torch.int32):
        t = t.to(torch.int32)
    elif t.dtype == torch.bool:
        t = t.to(torch.int32)
    else:
        t = t.to(torch.float64)
    out[name] = t.contiguous()


nan = float("nan")

# topk: values, and indices (PyTorch orders ties arbitrarily; the test checks tied indices by
# value). One row has ties, one has NaN.
x = torch.tensor([[1.0, 3, 3, 2, 3, 0.5], [5, -1, 0.25, nan, 2, 7], [4, 1, 9, 2, 8, 6]], dtype=torch.float64)
put("topk.x", x)
for dim in (0, 1):
    for largest in (True, False):
        k = 2 if dim == 0 else 3
        v, i = torch.topk(x, k, dim=dim, largest=largest)
        tag = f"topk.d{dim}.{'max' if largest else 'min'}"
        put(tag + ".values", v)
        put(tag + ".indices", i)

# max/min along a dim: the first of ties, NaN wins; gradient goes to that index only.
x = torch.tensor([[1.0, 7, 7, 2], [nan, 3, nan, 1], [4, 4, 4, 4], [-2, -5, -5, 0]], dtype=torch.float64)
put("extreme.x", x)
for dim in (0, 1):
    for name, fn in (("max", torch.max), ("min", torch.min)):
        v, i = fn(x, dim=dim)
        put(f"extreme.{name}.d{dim}.values", v)
        put(f"extreme.{name}.d{dim}.indices", i)
xg = torch.tensor([[1.0, 7, 7, 2], [0.5, 3, 3, 1], [4, 4, 4, 4]], dtype=torch.float64, requires_grad=True)
w = torch.randn(4, dtype=torch.float64)
put("extreme.grad.x", xg)
put("extreme.grad.w", w)
(torch.max(xg, dim=0).values * w).sum().backward()
put("extreme.grad.max_d0", xg.grad)

# scatter_reduce on [3, 5] along dim 1: repeats, an element nothing lands on (an empty group),
# zeros in src (prod's gradient), ties with the result (amax/amin's shared gradient), and
# self values that never equal a result where they are excluded.
self_ = torch.tensor([[1.5, -2.0, 3.0, 0.0, 4.0], [2.0, 0.5, -1.0, 6.0, -3.0], [0.25, 1.0, 2.0, -4.0, 5.0]], dtype=torch.float64)
index = torch.tensor([[0, 2, 0, 4], [1, 1, 3, 1], [4, 4, 4, 0]])
src = torch.tensor([[2.0, 0.0, 2.0, -1.5], [3.0, 0.0, 0.0, 3.0], [-0.5, 7.0, 7.0, 1.25]], dtype=torch.float64)
w = torch.randn(3, 5, dtype=torch.float64)
put("sr.self", self_)
put("sr.index", index)
put("sr.src", src)
put("sr.w", w)
for reduce in ("sum", "prod", "mean", "amax", "amin"):
    for include_self in (True, False):
        s = self_.clone().requires_grad_(True)
        r = src.clone().requires_grad_(True)
        y = s.scatter_reduce(1, index, r, reduce=reduce, include_self=include_self)
        (y * w).sum().backward()
        tag = f"sr.{reduce}.{'self' if include_self else 'noself'}"
        put(tag + ".out", y)
        put(tag + ".dself", s.grad)
        put(tag + ".dsrc", r.grad)
# Integer mean floors (negative sums round down) and integer sums/products.
si = torch.tensor([7, -3, 10, 0], dtype=torch.int32)
ii = torch.tensor([0, 0, 1, 1, 1, 3])
ri = torch.tensor([2, -6, -4, 3, 2, 5], dtype=torch.int32)
put("sri.self", si)
put("sri.index", ii)
put("sri.src", ri)
for reduce in ("sum", "prod", "mean", "amax", "amin"):
    for include_self in (True, False):
        y = si.scatter_reduce(0, ii, ri, reduce=reduce, include_self=include_self)
        put(f"sri.{reduce}.{'self' if include_self else 'noself'}", y)

# scatter (src and value; unique targets) and index_add (repeats, alpha) with gradients.
s = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
idx = torch.tensor([[3, 0, 1], [1, 2, 0]])
r = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
w = torch.randn(4, 3, dtype=torch.float64)
y = s.scatter(0, idx, r)
(y * w).sum().backward()
for k, v in (("self", s), ("index", idx), ("src", r), ("w", w), ("out", y), ("dself", s.grad), ("dsrc", r.grad)):
    put("scatter." + k, v)
put("scatter.value_out", s.detach().scatter(0, idx, -2.5))
s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
idx = torch.tensor([4, 0, 4, 2])
r = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
w = torch.randn(3, 5, dtype=torch.float64)
y = s.index_add(1, idx, r, alpha=-0.75)
(y * w).sum().backward()
for k, v in (("self", s), ("index", idx), ("src", r), ("w", w), ("out", y), ("dself", s.grad), ("dsrc", r.grad)):
    put("index_add." + k, v)

# Cross-entropy with class weights: ignore_index and label smoothing together, every
# reduction, [n, c] and [n, c, d] logits; the gradient of the mean for each.
logits = torch.randn(7, 5, dtype=torch.float64)
target = torch.tensor([0, 4, 2, 2, 1, 3, 4])
weight = torch.tensor([0.5, 2.0, 1.0, 0.25, 3.0], dtype=torch.float64)
put("ce.logits", logits)
put("ce.target", target)
put("ce.weight", weight)
logits3 = torch.randn(2, 5, 3, dtype=torch.float64)
target3 = torch.tensor([[1, 4, 0], [2, 2, 3]])
put("ce3.logits", logits3)
put("ce3.target", target3)
w3 = torch.randn(2, 3, dtype=torch.float64)
put("ce3.w", w3)
for ignore in (None, 2):
    for eps in (0.0, 0.2):
        for red in ("mean", "sum", "none"):
            tag = f"ce.i{ignore if ignore is not None else 'none'}.e{int(eps * 10)}.{red}"
            x = logits.clone().requires_grad_(True)
            kw = dict(weight=weight, reduction=red, label_smoothing=eps)
            if ignore is not None:
                kw["ignore_index"] = ignore
            y = F.cross_entropy(x, target, **kw)
            put(tag, y)
            if red == "mean":
                y.backward()
                put(tag + ".grad", x.grad)
            x3 = logits3.clone().requires_grad_(True)
            y3 = F.cross_entropy(x3, target3, **kw)
            put("ce3" + tag[2:], y3)
            if red == "none":
                (y3 * w3).sum().backward()
                put("ce3" + tag[2:] + ".grad", x3.grad)
# Probability targets with weights (the mean stays over rows).
probs = torch.softmax(torch.randn(7, 5, dtype=torch.float64), dim=1)
put("cep.probs", probs)
for eps in (0.0, 0.2):
    x = logits.clone().requires_grad_(True)
    y = F.cross_entropy(x, probs, weight=weight, label_smoothing=eps)
    y.backward()
    put(f"cep.e{int(eps * 10)}", y)
    put(f"cep.e{int(eps * 10)}.grad", x.grad)

save_file(out, "tests/data/torch_index_refs.safetensors")
print(f"wrote {len(out)} tensors to tests/data/torch_index_refs.safetensors")
