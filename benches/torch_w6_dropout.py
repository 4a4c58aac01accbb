#!/usr/bin/env python3
"""PyTorch eager W6d: torch_bench.py's W6 with dropout 0.1, the reference for
`kiln-bench --only W6d`.

Dropout sits where Kiln's `TransformerBlock` puts it: on each block's two residual branches
(`nn.TransformerEncoderLayer`'s dropout1 and dropout2). The dropout inside attention and after
the MLP's activation stays off, as in Kiln. Everything else (model, inputs, AdamW, TF32 off,
timing protocol) is torch_bench.py's W6, imported from the directory given by --shared.
Prints one JSON line (framework "torch-<ver>-fp32", or "-amp" with --amp: f16 autocast +
GradScaler as torch_amp_w6.py) with the suite's six keys plus "max_reserved_mib" and
"max_allocated_mib" (torch.cuda.max_memory_reserved/allocated over model creation, warm-up
and timed steps).

Usage: python3 torch_w6_dropout.py [--shared ../shared/bench] [--small] [--amp] [--device cuda]
"""

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

DROPOUT = 0.1
HERE = os.path.dirname(os.path.abspath(__file__))


def import_torch_bench(shared):
    sys.path.insert(0, os.path.abspath(shared))
    import torch_bench  # noqa: E402  (found through --shared)

    return torch_bench


def with_residual_dropout(model, p):
    """W6's model with dropout p on the two residual branches of every block."""
    for block in model.blocks:
        block.dropout1 = nn.Dropout(p)
        block.dropout2 = nn.Dropout(p)
    return model


def memory_keys(device):
    if device.type != "cuda":
        return {}
    mib = 2.0**20
    return {
        "max_reserved_mib": round(torch.cuda.max_memory_reserved(device) / mib, 1),
        "max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / mib, 1),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "bench"),
                   help="directory holding torch_bench.py")
    p.add_argument("--small", action="store_true")
    p.add_argument("--amp", action="store_true", help="f16 autocast + GradScaler")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    tb = import_torch_bench(args.shared)
    args.only = "W6d"  # what torch_bench's Ctx reads
    tb.set_tf32(False)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available; pass --device cpu to run on the CPU anyway")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    mode = "amp" if args.amp else "fp32"
    ctx = tb.Ctx(args, f"torch-{tb.torch_version()}-{mode}", tb.adapter_name(device), None)
    b, s = tb.gpt_shape(ctx)
    model = with_residual_dropout(tb.Gpt(), DROPOUT).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    tokens, targets, positions, mask = tb.gpt_inputs(ctx, b, s)
    ctx.sync()

    def run(_):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=args.amp):
            logits = model(tokens, positions, mask)
            loss = F.cross_entropy(logits.reshape(b * s, tb.GPT_VOCAB), targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        ctx.sync()

    t = tb.measure(ctx, f"W6d {mode}", run)
    rec = {
        "framework": ctx.framework,
        "adapter": ctx.adapter,
        "workload": "W6d",
        "size": f"b{b}s{s}",
        "metric": "tokens/s",
        "value": round(b * s / t, 4),
    }
    rec.update(memory_keys(device))
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
