#!/usr/bin/env python3
"""PyTorch's time for every matrix product Kiln's autotuner tuned in a run.

Run a Kiln program with KILN_AUTOTUNE_LOG=1 (and no stored tuning choices, so that every shape
class is tuned), keep its stderr, and give that log here: each `autotune ... best=...` line names
a product (dtype, each operand's layout class, batch, m, n, k), its fastest Kiln configuration
and time. This script times the same product with torch.matmul on the same layouts (a is
k-contiguous for layout class K, m-contiguous for X and X4; b is k-contiguous for K, n-contiguous
for X and X4), fp32 with TF32 off as torch_bench.py runs, and prints one JSON line per product
plus a table with Kiln / PyTorch speed.

    python3 torch_matmul_shapes.py kiln-stderr.log [more.log ...]
"""
import json
import re
import sys

import torch

LINE = re.compile(r"autotune class=(\S+) batch=(\d+) m=(\d+) n=(\d+) k=(\d+) best=(\S+) us=([\d.]+)")


def products(paths):
    seen = {}
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                hit = LINE.search(line)
                if not hit:
                    continue
                cls, batch, m, n, k, best, us = hit.groups()
                parts = cls.split("|")
                dtype, fa, fb = parts[0], parts[1][1:], parts[2][1:]
                key = (dtype, fa, fb, int(batch), int(m), int(n), int(k))
                seen.setdefault(key, (cls, best, float(us)))
    return seen


def operands(dtype, fa, fb, batch, m, n, k):
    dt = {"f32": torch.float32, "f16": torch.float16}[dtype]
    dev = "cuda"
    a = torch.randn(batch, m, k, device=dev, dtype=dt) if fa == "K" else \
        torch.randn(batch, k, m, device=dev, dtype=dt).transpose(1, 2)
    b = torch.randn(batch, n, k, device=dev, dtype=dt).transpose(1, 2) if fb == "K" else \
        torch.randn(batch, k, n, device=dev, dtype=dt)
    return a, b


def time_us(fn, min_s=0.2):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 10
    while True:
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end)
        if ms / 1000 >= min_s or reps >= 10000:
            return ms * 1000 / reps
        reps *= 4


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for (dtype, fa, fb, batch, m, n, k), (cls, best, kiln_us) in sorted(products(sys.argv[1:]).items()):
        a, b = operands(dtype, fa, fb, batch, m, n, k)
        us = time_us(lambda: torch.matmul(a, b))
        flops = 2.0 * batch * m * n * k
        row = {"dtype": dtype, "a": fa, "b": fb, "batch": batch, "m": m, "n": n, "k": k,
               "kiln_best": best, "kiln_us": kiln_us, "torch_us": round(us, 2),
               "kiln_tflops": round(flops / kiln_us / 1e6, 2), "torch_tflops": round(flops / us / 1e6, 2),
               "kiln_speed": round(us / kiln_us, 3), "device": torch.cuda.get_device_name()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"{'product':44} {'kiln best':24} {'kiln us':>9} {'torch us':>9} {'kiln TF':>8} {'torch TF':>8} {'speed':>6}",
          file=sys.stderr)
    for r in rows:
        name = f"{r['dtype']} a{r['a']} b{r['b']} {r['batch']}x[{r['m']}x{r['k']}]x[{r['k']}x{r['n']}]"
        print(f"{name:44} {r['kiln_best']:24} {r['kiln_us']:9.1f} {r['torch_us']:9.1f} {r['kiln_tflops']:8.2f} "
              f"{r['torch_tflops']:8.2f} {r['kiln_speed']:6.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
