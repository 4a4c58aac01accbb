#!/usr/bin/env python3
"""PyTorch's GPU memory on the workloads whose Kiln results carry memory keys: W5, W6, W7 and
W9 as torch_bench.py runs them, W10 as char_gpt.py runs it. The PyTorch side of the memory
table in benches/README.md (W6d's numbers come from torch_w6_dropout.py).

Both scripts are imported from --shared (../shared/bench in a checkout), not copied, so the
models and loops are exactly the timed ones. Before each workload the caching allocator is
emptied and its peaks reset (torch_bench.py empties it after each workload too, and kiln-bench
does the same with its pool); the peaks are read when the workload reports its result, after
model creation, warm-up and the timed iterations. One JSON line per workload and mode:

  {"framework": "torch-2.x-fp32", "adapter": "...", "workload": "W5", "size": "batch512",
   "metric": "MiB (max reserved)", "value": 123.0, "max_reserved_mib": 123.0,
   "max_allocated_mib": 45.6, "speed_metric": "steps/s", "speed": 789.0}

"value" is torch.cuda.max_memory_reserved (what Kiln's "peak_pool_mib" is compared with);
"max_allocated_mib" is torch.cuda.max_memory_allocated (Kiln's "peak_live_mib"). W10 runs
char_gpt.py's loop for --w10-steps steps (the peak is reached in the first few) in each of
--w10-modes; its "speed" is that short run's ms/step, not the benchmark figure.

Usage: python3 torch_memory.py MOBY_DICK.txt.gz [--shared DIR] [--only W5,W6,W7,W9,W10]
                               [--small] [--w10-steps 30] [--w10-modes fp32,amp16] [--device cuda]
"""

import argparse
import gzip
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 2.0**20
METRIC = "MiB (max reserved)"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fresh(device):
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def peaks(device):
    torch.cuda.synchronize(device)
    return (round(torch.cuda.max_memory_reserved(device) / MIB, 1),
            round(torch.cuda.max_memory_allocated(device) / MIB, 1))


def record(framework, adapter, workload, size, device, speed_metric, speed):
    reserved, allocated = peaks(device)
    return {"framework": framework, "adapter": adapter, "workload": workload, "size": size,
            "metric": METRIC, "value": reserved, "max_reserved_mib": reserved,
            "max_allocated_mib": allocated, "speed_metric": speed_metric,
            "speed": None if speed is None else round(float(speed), 4)}


def suite_workloads(tb, args, device, only):
    """W5, W6, W7, W9 through torch_bench.py's own functions, fp32 (TF32 off)."""
    adapter = tb.adapter_name(device)
    framework = f"torch-{tb.torch_version()}-fp32"
    tb.set_tf32(False)

    class MemCtx(tb.Ctx):
        def emit(self, workload, size, metric, value):
            print(json.dumps(record(framework, adapter, workload, size, device, metric, value)), flush=True)

    for wid, fn in (("W5", tb.w5), ("W6", tb.w6), ("W7", tb.w7), ("W9", tb.w9)):
        if wid not in only:
            continue
        args.only = wid
        ctx = MemCtx(args, framework, adapter, None)
        fresh(device)
        log(f"{wid}: start")
        try:
            fn(ctx)
        except Exception as e:  # one failing workload must not hide the others
            log(f"{wid}: FAILED: {type(e).__name__}: {e}")


def w10(cg, tb, args, device):
    """char_gpt.py's run() for a few steps per mode, on the same text and split."""
    text = gzip.open(args.text, "rt", encoding="utf-8").read()
    chars = sorted(set(text))
    idx = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([idx[c] for c in text[: int(len(text) * 0.9)]], dtype=torch.long)
    batch, ctx = (8, 32) if args.small else (64, 256)
    adapter = tb.adapter_name(device)
    for mode in args.w10_modes.split(","):
        fresh(device)
        log(f"W10 {mode}: start")
        try:
            r = cg.run(mode, data, len(chars), args.w10_steps, batch, ctx, "cuda")
        except Exception as e:
            log(f"W10 {mode}: FAILED: {type(e).__name__}: {e}")
            continue
        framework = f"torch-{tb.torch_version()}-{mode}"
        print(json.dumps(record(framework, adapter, "W10", f"b{batch}s{ctx}", device, "ms/step", r["value"])), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="moby-dick.txt.gz, for W10")
    p.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "bench"),
                   help="directory holding torch_bench.py and char_gpt.py")
    p.add_argument("--only", default="W5,W6,W7,W9,W10")
    p.add_argument("--small", action="store_true", help="torch_bench's --small sizes; W10 at batch 8, context 32")
    p.add_argument("--w10-steps", type=int, default=30, help="more than 20 (char_gpt.py times steps 21..N)")
    p.add_argument("--w10-modes", default="fp32,amp16")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        sys.exit("torch_memory.py measures CUDA memory: it needs --device cuda and a GPU")
    if args.w10_steps <= 20:
        sys.exit("--w10-steps must be above 20")
    sys.path.insert(0, os.path.abspath(args.shared))
    import char_gpt as cg  # noqa: E402  (found through --shared)
    import torch_bench as tb  # noqa: E402

    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    suite_workloads(tb, args, device, only)
    if "W10" in only:
        w10(cg, tb, args, device)


if __name__ == "__main__":
    main()
