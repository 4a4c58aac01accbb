#!/usr/bin/env python3
"""PyTorch eager W6 in mixed precision, the reference for `kiln-bench --amp --only W6`.

`torch_bench.py` (which must sit next to this file) has no AMP variant; this runs its W6 model,
inputs and timing protocol under `torch.autocast("cuda", torch.float16)` with a
`torch.amp.GradScaler`, TF32 off, and prints one JSON line with framework "torch-<ver>-amp".

Usage: python3 torch_amp_w6.py [--small] [--device cuda]

(First run on an H200 in session 3: 324,740 and 378,481 tokens/s in two leases; see benches/README.md.)
"""

import argparse

import torch
import torch.nn.functional as F

import torch_bench as tb


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    args.only = "W6"  # what torch_bench's Ctx reads
    tb.set_tf32(False)
    device = torch.device(args.device)
    ctx = tb.Ctx(args, f"torch-{tb.torch_version()}-amp", tb.adapter_name(device), None)
    b, s = tb.gpt_shape(ctx)
    model = tb.Gpt().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type)
    tokens, targets, positions, mask = tb.gpt_inputs(ctx, b, s)
    ctx.sync()

    def run(_):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16):
            logits = model(tokens, positions, mask)
            loss = F.cross_entropy(logits.reshape(b * s, tb.GPT_VOCAB), targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        ctx.sync()

    t = tb.measure(ctx, "W6 amp", run)
    ctx.emit("W6", f"b{b}s{s}", "tokens/s", b * s / t)


if __name__ == "__main__":
    main()
