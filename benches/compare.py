#!/usr/bin/env python3
"""Joins benchmark JSON lines (kiln-bench, torch_bench.py, torch_amp_w6.py,
torch_w6_dropout.py, char_gpt.py, torch_memory.py, burn-bench) on (workload, size) and prints
Markdown tables with one column per framework:

1. speed: each workload's metric, then the ratio of each Kiln column to its PyTorch baseline
   (kiln-<v> to torch-<v>-fp32; kiln-<v>-amp to torch-<v>-amp16 where the row has it, else
   torch-<v>-amp), oriented so that above 1 means Kiln is faster (inverted for µs/op and
   ms/step, where lower is better);
2. memory: Kiln's peak pool (peak_pool_mib, every buffer the pool held) and peak live bytes
   (peak_live_mib) beside PyTorch's max_memory_reserved and max_memory_allocated
   (max_reserved_mib, max_allocated_mib), with the ratios pool / reserved and live / allocated.

char_gpt.py's workload "char-large" is W10. Lines that are not JSON objects (progress that
leaked into a file) are ignored.

Usage: python3 benches/compare.py kiln.jsonl torch.jsonl burn-spirv.jsonl ... > table.md
"""

import json
import sys

ORDER = ["W1", "W1h", "W2", "W3", "W4a", "W4b", "W5", "W6", "W6d", "W7", "W8a", "W8b", "W9", "W10"]
ALIASES = {"char-large": "W10"}
LOWER_IS_BETTER = {"us/op", "ms/step"}
# torch_memory.py's lines: memory only, no speed result to join.
MEMORY_ONLY_METRIC = "MiB (max reserved)"


def size_key(size):
    head = size.split("/")[0].split("x")[0].lstrip("bsatch").rstrip("MiB")
    return (int(head) if head.isdigit() else 0, size)


def row_order(keys):
    rank = {w: i for i, w in enumerate(ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k[0], 99), size_key(k[1])))


def fmt(v):
    if v is None:
        return ""
    return f"{v:,.4g}" if abs(v) < 100 else f"{v:,.0f}"


def baselines(kiln_fw, frameworks):
    """The PyTorch frameworks a Kiln column is compared with, in order of preference: each row
    takes the first one it has (W6's AMP baseline is torch_amp_w6.py's "-amp", W10's is
    char_gpt.py's "-amp16")."""
    torch = [f for f in frameworks if f.startswith("torch")]
    suffixes = ("-amp16", "-amp") if kiln_fw.endswith("-amp") else ("-fp32",)
    return [f for suffix in suffixes for f in torch if f.endswith(suffix)]


def pairs_of(frameworks):
    """(Kiln framework, its baselines, column label) for every Kiln column with a baseline."""
    out = []
    for k in frameworks:
        if k.startswith("kiln") and baselines(k, frameworks):
            out.append((k, baselines(k, frameworks), "torch amp" if k.endswith("-amp") else "torch fp32"))
    return out


def first_in(row, candidates):
    return next((c for c in candidates if c in row), None)


def load(paths):
    speed = {}  # (workload, size) -> {framework: (metric, value)}
    memory = {}  # (workload, size) -> {framework: (pool or reserved MiB, live or allocated MiB)}
    frameworks, mem_frameworks, adapters = [], [], set()
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                fw = r.get("framework")
                if fw is None or "workload" not in r:
                    continue
                key = (ALIASES.get(r["workload"], r["workload"]), r.get("size", ""))
                if r.get("adapter"):
                    adapters.add(r["adapter"])
                peak = r.get("peak_pool_mib", r.get("max_reserved_mib"))
                if peak is not None:
                    live = r.get("peak_live_mib", r.get("max_allocated_mib"))
                    memory.setdefault(key, {})[fw] = (peak, live)
                    if fw not in mem_frameworks:
                        mem_frameworks.append(fw)
                if r.get("metric") == MEMORY_ONLY_METRIC or r.get("value") is None:
                    continue
                speed.setdefault(key, {})[fw] = (r["metric"], r["value"])
                if fw not in frameworks:
                    frameworks.append(fw)
    return speed, memory, frameworks, mem_frameworks, adapters


def ratio(kiln, base, lower_is_better):
    if kiln is None or base is None or kiln == 0 or base == 0:
        return None
    return base / kiln if lower_is_better else kiln / base


def speed_table(speed, frameworks):
    pairs = pairs_of(frameworks)
    heads = frameworks + [f"{k} / {label}" for k, _, label in pairs]
    print("| workload | size | metric | " + " | ".join(heads) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(heads))
    for w, s in row_order(speed):
        row = speed[(w, s)]
        metric = next(iter(row.values()))[0]
        value = lambda fw: row.get(fw, (None, None))[1]  # noqa: E731
        cells = [fmt(value(fw)) for fw in frameworks]
        cells += [fmt(ratio(value(k), value(first_in(row, b)), metric in LOWER_IS_BETTER)) for k, b, _ in pairs]
        print(f"| {w} | {s} | {metric} | " + " | ".join(cells) + " |")


def memory_table(memory, frameworks):
    pairs = pairs_of(frameworks)
    heads = []
    for fw in frameworks:
        peak, live = ("peak pool", "peak live") if fw.startswith("kiln") else ("max reserved", "max allocated")
        heads += [f"{fw} {peak}", f"{fw} {live}"]
    heads += [f"{k} pool / {label} reserved" for k, _, label in pairs]
    heads += [f"{k} live / {label} allocated" for k, _, label in pairs]
    print("| workload | size | " + " | ".join(heads) + " |")
    print("| --- | --- |" + " ---: |" * len(heads))
    for w, s in row_order(memory):
        row = memory[(w, s)]
        get = lambda fw, i: row.get(fw, (None, None))[i]  # noqa: E731
        cells = []
        for fw in frameworks:
            cells += [fmt(get(fw, 0)), fmt(get(fw, 1))]
        cells += [fmt(ratio(get(k, 0), get(first_in(row, b), 0), False)) for k, b, _ in pairs]
        cells += [fmt(ratio(get(k, 1), get(first_in(row, b), 1), False)) for k, b, _ in pairs]
        print(f"| {w} | {s} | " + " | ".join(cells) + " |")


def main(paths):
    speed, memory, frameworks, mem_frameworks, adapters = load(paths)
    print("adapters: " + "; ".join(sorted(adapters)) + "\n")
    speed_table(speed, frameworks)
    if memory:
        print("\nGPU memory, MiB (Kiln: peak pool = live + free buffers held, peak live = in tensors;"
              " PyTorch: torch.cuda.max_memory_reserved / max_memory_allocated)\n")
        memory_table(memory, mem_frameworks)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
