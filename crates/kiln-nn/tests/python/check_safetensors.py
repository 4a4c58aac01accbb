"""Reads a Kiln checkpoint with Python's own safetensors package and compares every tensor with
the values the Rust test expected (a JSON file beside it). Exits non-zero on any difference.

    python3 check_safetensors.py CHECKPOINT EXPECTED_JSON [--torch]

With --torch it also loads the file with safetensors.torch and into a torch.nn.Sequential with
the same names (Linear(5,7), ReLU, Linear(7,3)) via load_state_dict(strict=True).
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

NUMPY_NAMES = {"F32": "float32", "F16": "float16", "F64": "float64", "I32": "int32", "U32": "uint32", "BOOL": "bool"}


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    expected = json.load(open(expected_path))
    tensors = load_file(path)
    problems = []
    if sorted(tensors) != sorted(expected):
        problems.append(f"keys {sorted(tensors)} != {sorted(expected)}")
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if str(got.dtype) != NUMPY_NAMES[want["dtype"]]:
            problems.append(f"{name}: dtype {got.dtype}, expected {want['dtype']}")
        if list(got.shape) != want["shape"]:
            problems.append(f"{name}: shape {list(got.shape)}, expected {want['shape']}")
        values = np.array(want["values"], dtype=NUMPY_NAMES[want["dtype"]]).reshape(want["shape"])
        if not np.array_equal(got, values):
            problems.append(f"{name}: values differ: {got.ravel()[:8]} vs {values.ravel()[:8]}")
    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
    if "--torch" in sys.argv:
        problems += check_torch(path)
    for p in problems:
        print("MISMATCH", p)
    print(f"checked {len(tensors)} tensors, metadata keys {sorted(meta)}")
    sys.exit(1 if problems else 0)


def check_torch(path):
    import torch
    from safetensors.torch import load_file as torch_load

    state = torch_load(path)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    mlp = {k: v for k, v in state.items() if k.split(".")[0] in ("0", "2")}
    model.load_state_dict(mlp, strict=True)
    out = model(torch.ones(1, 5))
    print("torch load_state_dict(strict=True) ok; output", out.detach().numpy().round(5).tolist())
    return []


if __name__ == "__main__":
    main()
