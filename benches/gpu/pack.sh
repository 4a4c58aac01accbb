#!/usr/bin/env bash
# Packs what a benchmark run on a GPU machine needs (it can download nothing) into the
# git-ignored folder .gpu/ at the repository root; benches/gpu/run.sh runs it there.
#
#   benches/gpu/pack.sh            # here: release builds (minutes on 2 cores), strip, xz
#
# .gpu/bin/*.xz        kiln-bench, and the char_transformer and attention_bench examples
# .gpu/scripts/        benches/*.py (torch_memory.py, torch_w6_dropout.py, torch_amp_w6.py, torch_minilm.py,
#                      torch_matmul_shapes.py, compare.py)
# .gpu/shared/         ../shared/bench's torch_bench.py, char_gpt.py and burn-bench-{spirv,wgsl}.xz
# .gpu/data/moby-dick/ the vendored text (W10, char_gpt.py, torch_memory.py)
# .gpu/MANIFEST        git revision and sizes
#
# Carry ".gpu" (and ".gl", from ../shared/gpu/prepare-vulkan.sh) with the run; the total must
# stay well under the 64 MiB a run may carry. SHARED=<dir> overrides ../shared/bench.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${SHARED:-$root/../shared/bench}
for f in torch_bench.py char_gpt.py burn-bench-spirv.xz burn-bench-wgsl.xz; do
    [ -f "$shared/$f" ] || { echo "pack.sh: $shared/$f is missing" >&2; exit 1; }
done

echo "pack.sh: building release binaries (kiln-bench, char_transformer, attention_bench)" >&2
cargo build --release -j 2 -p kiln-bench --bin kiln-bench
cargo build --release -j 2 -p kiln-examples --example char_transformer --example attention_bench

out=.gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/scripts" "$out/shared" "$out/data/moby-dick"
for exe in target/release/kiln-bench target/release/examples/char_transformer target/release/examples/attention_bench; do
    name=$(basename "$exe")
    strip -o "$out/bin/$name" "$exe"
    xz -T2 -6 "$out/bin/$name"
done
cp benches/torch_memory.py benches/torch_w6_dropout.py benches/torch_amp_w6.py benches/torch_minilm.py \
    benches/torch_matmul_shapes.py benches/compare.py "$out/scripts/"
cp "$shared/torch_bench.py" "$shared/char_gpt.py" "$shared/burn-bench-spirv.xz" "$shared/burn-bench-wgsl.xz" "$out/shared/"
cp data/moby-dick/moby-dick.txt.gz "$out/data/moby-dick/"
{
    echo "kiln $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes)') packed $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    (cd "$out" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2)
} > "$out/MANIFEST"
cat "$out/MANIFEST" >&2
bytes=$(du -sb "$out" | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "pack.sh: $out holds $bytes bytes ($mib MiB)" >&2
if [ -d .gl ]; then
    gl=$(du -sb .gl | cut -f1)
    echo "pack.sh: with .gl ($gl bytes): $(( (bytes + gl + 1048575) / 1048576 )) MiB to carry (limit 64)" >&2
fi
if [ "$mib" -gt 56 ]; then
    echo "pack.sh: more than 56 MiB: too close to the 64 MiB a run may carry" >&2
    exit 1
fi
