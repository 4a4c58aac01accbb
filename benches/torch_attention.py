#!/usr/bin/env python3
"""PyTorch twin of `cargo run --release --example attention_bench -- --sweep`: the same shapes,
F.scaled_dot_product_attention forward, and forward + backward (of sum(out * g)), in fp32
(TF32 off) and f16, printing the same JSON lines with "path" = the SDPA backend PyTorch picked
by default ("torch") and "peak_bytes" = torch.cuda.max_memory_reserved over the case (each case
in a fresh process, like Kiln's pool).

Timing: 3 warm-ups, then at least 5 iterations and --min-s seconds (default 0.5); each ends
with torch.cuda.synchronize(); the median is reported.

Usage: python3 torch_attention.py [--quick] [--min-s S]
"""

import json
import statistics
import subprocess
import sys
import time

SWEEP = [
    (16, 4, 256, 64),
    (64, 6, 256, 64),
    (64, 6, 128, 64),
    (64, 6, 512, 64),
    (16, 8, 1024, 64),
    (8, 8, 2048, 64),
    (2, 8, 2048, 128),
    (4, 8, 4096, 64),
    (1, 16, 8192, 128),
]


def median_ms(torch, f, min_s):
    for _ in range(3):
        f()
        torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        f()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def case(b, h, t, d, causal, dtype_name, min_s):
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    dtype = torch.float16 if dtype_name == "f16" else torch.float32
    torch.manual_seed(0)
    make = lambda: (torch.randn(b, h, t, d, device=dev) * 0.5).to(dtype)
    q, k, v = (make().requires_grad_() for _ in range(3))
    g = make()
    torch.cuda.reset_peak_memory_stats()

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def all_():
        for x in (q, k, v):
            x.grad = None
        (F.scaled_dot_product_attention(q, k, v, is_causal=causal) * g).sum().backward()

    ms_f = median_ms(torch, fwd, min_s)
    ms_a = median_ms(torch, all_, min_s)
    peak = torch.cuda.max_memory_reserved()
    flops = 4.0 * b * h * t * t * d / (2.0 if causal else 1.0)
    for pas, ms, fl in (("forward", ms_f, flops), ("forward+backward", ms_a, 3.5 * flops)):
        print(json.dumps({
            "bench": "attention", "shape": [b, h, t, d], "causal": causal, "dtype": dtype_name,
            "path": "torch", "taken": "torch-" + torch.__version__, "pass": pas, "ms": round(ms, 4),
            "tflops": round(fl / ms / 1e9, 3), "peak_bytes": peak, "input_bytes": 4 * b * h * t * d * q.element_size(),
            "score_bytes": b * h * t * t * 4,
        }), flush=True)


def main():
    args = sys.argv[1:]
    min_s = float(args[args.index("--min-s") + 1]) if "--min-s" in args else 0.5
    if "--case" in args:
        i = args.index("--case")
        b, h, t, d = (int(x) for x in args[i + 1:i + 5])
        case(b, h, t, d, args[i + 5] == "1", args[i + 6], min_s)
        return
    shapes = SWEEP[:2] if "--quick" in args else SWEEP
    cases = [(s, True, dt) for s in shapes for dt in ("f32", "f16")] + [(SWEEP[1], False, "f32")]
    for (b, h, t, d), causal, dt in cases:
        cmd = [sys.executable, __file__, "--min-s", str(min_s), "--case", str(b), str(h), str(t), str(d), "1" if causal else "0", dt]
        out = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or [""])[-1]
            print(json.dumps({"bench": "attention", "shape": [b, h, t, d], "causal": causal, "dtype": dt, "path": "torch", "error": last}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
