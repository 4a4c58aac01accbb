#!/usr/bin/env bash
# Runs on a GPU machine the test binaries benches/gpu/pack-tests.sh packed into .tests/ (every
# tests-*.tar.zst there), from the repository root (the working tree must be there: tests read
# its data files by the build machine's path, so that path is linked to this tree). One line per binary in "$OUT/tests.txt"
# (name, exit status, cargo's summary line), each binary's output in "$OUT/tests/<name>.log".
#
#   bash benches/gpu/run-tests.sh                # every binary, JOBS (6) at a time
#   ONLY="ops grad" bash benches/gpu/run-tests.sh  # binaries whose name starts with these
#
# KILN_REQUIRE_GPU=1 and KILN_REQUIRE_COOP=1: a test that finds no adapter, or no cooperative
# matrices, fails instead of skipping. Each binary gets PER_TEST_S (240) seconds; binaries not
# started before LIMIT_S (540) after the start are listed as not run. SKIP names binaries not to
# run here (pack-tests.sh leaves out mpi and xvfb already: no Open MPI, no X server there).
set -uo pipefail
root=$(pwd)
OUT=${OUT:-$root/tests-out}
JOBS=${JOBS:-6}
PER_TEST_S=${PER_TEST_S:-240}
LIMIT_S=${LIMIT_S:-540}
SKIP=${SKIP:-mpi}
mkdir -p "$OUT/tests"
T=${TESTS_DIR:-.tests}
built_in=$(cat "$T/ROOT")
# The binaries know the build machine's checkout by its path: make that path this tree.
# (Only where nothing else is at that path: here, on the build machine, it is the checkout.)
if [ -n "$built_in" ] && [ "$built_in" != "$root" ] && { [ ! -e "$built_in" ] || [ -L "$built_in" ]; }; then
    mkdir -p "$(dirname "$built_in")" && ln -sfn "$root" "$built_in"
fi
# Every pack that was carried (tests-a, tests-b: see pack-tests.sh), and the list of its binaries.
mkdir -p "$root/target"
: >"$OUT/list.tsv"
for z in "$T"/tests-*.tar.zst; do
    LD_LIBRARY_PATH=$T/lib "$T/zstd" -q -dc --long=31 "$z" | tar -C "$root" -xf -
    cat "$T/list-$(basename "$z" .tar.zst | sed 's/^tests-//').tsv" >>"$OUT/list.tsv"
done
export KILN_REQUIRE_GPU=1 KILN_REQUIRE_COOP=1 XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
start=$SECONDS

run_one() {
    local exe=$1 pkg=$2
    local name
    name=$(basename "$exe")
    local short=${name%-*}
    for s in $SKIP; do
        [ "$short" = "$s" ] && { echo "$name skipped ($s: not runnable on this machine)"; return; }
    done
    if [ $((SECONDS - start)) -gt "$LIMIT_S" ]; then
        echo "$name not run (time)"
        return
    fi
    local extra=()
    [ "$short" = xvfb ] && extra=(--skip under_xvfb)
    (cd "$pkg" && CARGO_MANIFEST_DIR=$pkg timeout -k 5 "$PER_TEST_S" "$root/$exe" "${extra[@]}") \
        >"$OUT/tests/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $(grep -E '^test result:' "$OUT/tests/$name.log" | tail -1)"
}
export -f run_one
export root OUT PER_TEST_S LIMIT_S SKIP start
# ONLY filters by name prefix; the order is the lists' (slow binaries first).
awk -F'\t' -v only="${ONLY:-}" '
    BEGIN { n = split(only, o, " ") }
    { name = $1; sub(".*/", "", name); keep = (n == 0)
      for (i = 1; i <= n; i++) if (index(name, o[i]) == 1) keep = 1
      if (keep) print $1 "\t" $2 }' "$OUT/list.tsv" |
    xargs -P "$JOBS" -d '\n' -I{} bash -c 'IFS=$'"'"'\t'"'"' read -r e p <<<"{}"; run_one "$e" "$p"' |
    tee "$OUT/tests.txt"
echo "run-tests: $(grep -c ' rc=0 ' "$OUT/tests.txt") of $(wc -l <"$OUT/tests.txt") binaries passed in $((SECONDS - start)) s" |
    tee -a "$OUT/tests.txt"
