#!/usr/bin/env python3
"""Joins benchmark JSON lines (kiln-bench, torch_bench.py, burn-bench) on (workload, size)
and prints a Markdown table with one column per framework.

Usage: python3 benches/compare.py kiln.jsonl torch.jsonl burn-spirv.jsonl ... > table.md
Lines that are not JSON objects (progress that leaked into a file) are ignored.
"""

import json
import sys

ORDER = ["W1", "W1h", "W2", "W3", "W4a", "W4b", "W5", "W6", "W7", "W8a", "W8b", "W9"]


def size_key(size):
    head = size.split("/")[0].split("x")[0].lstrip("bsatch").rstrip("MiB")
    return (int(head) if head.isdigit() else 0, size)


def main(paths):
    results = {}  # (workload, size) -> {framework: (metric, value)}
    frameworks = []
    adapters = set()
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                fw = r["framework"]
                if fw not in frameworks:
                    frameworks.append(fw)
                adapters.add(r["adapter"])
                results.setdefault((r["workload"], r["size"]), {})[fw] = (r["metric"], r["value"])
    print("adapters: " + "; ".join(sorted(adapters)) + "\n")
    print("| workload | size | metric | " + " | ".join(frameworks) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(frameworks))
    rank = {w: i for i, w in enumerate(ORDER)}
    for (w, s) in sorted(results, key=lambda k: (rank.get(k[0], 99), size_key(k[1]))):
        row = results[(w, s)]
        metric = next(iter(row.values()))[0]
        cells = []
        for fw in frameworks:
            v = row.get(fw, (None, None))[1]
            cells.append("" if v is None else f"{v:,.4g}" if abs(v) < 100 else f"{v:,.0f}")
        print(f"| {w} | {s} | {metric} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
