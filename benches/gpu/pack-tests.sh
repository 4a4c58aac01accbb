#!/usr/bin/env bash
# Packs the workspace's test binaries for a run on a GPU machine, which has no Rust toolchain
# and can download nothing: the debug builds `cargo test --workspace` makes (CI's features, so
# nothing is built twice), the examples and kiln-bench they start, stripped, in one archive.
#
#   bash benches/gpu/pack-tests.sh     # here, in the project's root; then carry ".tests"
#                                      # (rm .tests/tests-b.* first to carry pack a alone)
#
# .tests/tests-{a,b}.tar.zst  target/debug/{deps,examples}/… and target/debug/kiln-bench, laid
#                       out as the tests expect (char_smoke finds the examples beside its binary)
# .tests/list-{a,b}.tsv each test binary and the package directory cargo would run it in
# .tests/zstd, .tests/lib/  zstd and the liblz4 it links (a bare machine may lack both)
#
# The binaries share most of their code but not its addresses, so compression across files finds
# little: zstd's long mode at level LEVEL (19) over a 2 GiB window is what fits them into the 64
# MiB a run may carry. benches/gpu/run-tests.sh unpacks and runs them there.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
features=${FEATURES-kiln/mpi,kiln-examples/mpi}
level=${LEVEL:-19}
# Not packed: test binaries that cannot run on the GPU machine (mpi: no Open MPI there; xvfb:
# no X server), and programs no test starts (the tests start char_transformer, mnist_infer and
# kiln-bench).
exclude=${EXCLUDE-mpi xvfb}
programs=${PROGRAMS-char_transformer mnist_infer kiln-bench}
# Two archives, each small enough to carry beside the working tree: pack a holds the binaries
# that take paths only hardware takes (autotuned and split-k products, cooperative matrices,
# autocast, spin waits, early submission), pack b the rest (data, checkpoints, translation, the
# CPU backend's own tests, the examples' smoke tests).
hardware=${HARDWARE-"matmul matmul_coop matmul_splitk autotune fused amp attention_mask op_table random index_ops
    fuzz reduce conv fusion accuracy syncs memory index anomaly chunked device_lost device_move errors grad kiln_wgpu
    losses memory_census ops optim profile transfer unscale_check sum_squares smoke layers pipeline_cache"}
hardware=$(echo $hardware)
out=.tests
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

cargo test --workspace --features "$features" --no-run -j 2 --message-format=json >"$stage/build.json"
python3 - "$stage/build.json" "$root" >"$stage/files.tsv" <<'PY'
import json, os, sys
root = sys.argv[2]
for line in open(sys.argv[1]):
    m = json.loads(line) if line.startswith("{") else {}
    exe = m.get("executable")
    if m.get("reason") != "compiler-artifact" or not exe:
        continue
    kind = m["target"]["kind"][0]
    pkg_dir = os.path.dirname(m["manifest_path"])
    # test: a harness to run; example/bin: a program the tests start.
    role = "test" if m["profile"]["test"] else kind
    print(f"{role}\t{os.path.relpath(exe, root)}\t{pkg_dir}")
PY
rm -rf "$out"
mkdir -p "$out/lib"
while IFS=$'\t' read -r role exe pkg; do
    base=$(basename "$exe")
    pack=b
    if [ "$role" = test ]; then
        case " $exclude " in *" ${base%-*} "*) echo "pack-tests: leaving out $base" >&2; continue ;; esac
        case " $hardware " in *" ${base%-*} "*) pack=a ;; esac
    else
        case " $programs " in *" $base "*) ;; *) continue ;; esac
    fi
    mkdir -p "$stage/$pack/$(dirname "$exe")"
    strip -o "$stage/$pack/$exe" "$exe"
    [ "$role" = test ] && printf '%s\t%s\n' "$exe" "$pkg" >>"$stage/list-$pack.tsv"
done <"$stage/files.tsv"
# The slowest first (times on an H100, session 8), so that a run cut short loses quick ones.
slow="char_smoke examples_smoke fused matmul matmul_coop fusion fuzz autotune amp memory attention_mask"
for pack in a b; do
    list=$stage/list-$pack.tsv
    for s in $slow; do grep -P "/${s}-[0-9a-f]+\t" "$list" || true; done >"$stage/first.tsv"
    { cat "$stage/first.tsv"; grep -v -F -f "$stage/first.tsv" "$list" || true; } >"$out/list-$pack.tsv"
    echo "pack-tests: pack $pack: $(wc -l <"$out/list-$pack.tsv") test binaries, $(du -sh "$stage/$pack" | cut -f1) stripped" >&2
    tar -C "$stage/$pack" -cf - . | zstd -q -"$level" --long=31 -T2 -o "$out/tests-$pack.tar.zst"
done
echo "$root" >"$out/ROOT"
cp "$(command -v zstd)" "$out/zstd"
cp -L "$(ldd "$(command -v zstd)" | awk '/liblz4/ {print $3}')" "$out/lib/"
echo "kiln $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes)') packed $(date -u +%FT%TZ)" >"$out/MANIFEST"
du -sh "$out"/* >&2
