#!/usr/bin/env python3
"""Loads state dicts that Kiln wrote with kiln_nn::torch::save into the PyTorch twins of the Kiln
models (crates/kiln-nn/tests/torch_state_dict.rs, `kiln_models`) with load_state_dict(strict=True)
and checks that each twin computes Kiln's output for Kiln's input. Usage: check_torch_twins.py DIR
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file


class Block(nn.Module):
    """kiln_nn::TransformerBlock: pre-norm, erf GELU, Kiln's key names."""

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


TWINS = {
    "linear": lambda: nn.Linear(5, 7),
    "conv2d": lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2),
    "batch_norm2d": lambda: nn.BatchNorm2d(3),
    "mha": lambda: nn.MultiheadAttention(8, 2, batch_first=True),
    "transformer_block": lambda: Block(8, 2, 4),
    "sequential": lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)),
}


def main(folder):
    failures = []
    for name, make in TWINS.items():
        twin = make().eval()
        twin.load_state_dict(load_file(os.path.join(folder, name + ".safetensors")), strict=True)
        io = load_file(os.path.join(folder, name + ".io.safetensors"))
        x, mask = io["input"], io["mask"]
        with torch.no_grad():
            if name == "mha":
                y = twin(x, x, x, key_padding_mask=mask, need_weights=False)[0]
            elif name == "transformer_block":
                y = twin(x, key_padding_mask=mask)
            else:
                y = twin(x)
        worst = ((y - io["output"]).abs() / (1 + io["output"].abs())).max().item()
        print(f"{name}: strict load ok, worst relative difference {worst:.2e}")
        if worst > 2e-5:
            failures.append(name)
    if failures:
        sys.exit(f"outputs differ from Kiln's: {failures}")
    print(f"{len(TWINS)} twins loaded strictly")


if __name__ == "__main__":
    main(sys.argv[1])
