#!/usr/bin/env bash
# Runs the benchmarks on a GPU machine from what benches/gpu/pack.sh put in .gpu/. Run it from
# the repository root; every result and log goes under "$OUT" (./gpu-out without it).
#
#   benches/gpu/run.sh                 # every group below, in this order
#   benches/gpu/run.sh w10 chargpt     # only these groups (split a run over calls of ≤ 10 min)
#   benches/gpu/run.sh list            # the groups and what they run
#
# If .gl/ (../shared/gpu/prepare-vulkan.sh) is there and no Vulkan loader is installed, it is
# unpacked first. Every step runs under `timeout`; a step that fails or times out is noted in
# "$OUT/run.log" and the next one runs. Knobs: W10_STEPS (300), W10_MAX_S (150: kiln-bench stops
# timing W10 after this many seconds, at least 5 timed steps), SUITE_MAX_S (240, kiln-bench,
# torch_bench.py and each burn binary), KILN_DEVICE_FLAG (--device vulkan), SMALL=1 (every
# program's --small sizes and W10_STEPS 22: a smoke test of this script, e.g. on lavapipe).
set -uo pipefail

groups_help() {
    cat <<'HELP'
w10      kiln-bench --only W10, fp32 then --amp (char_transformer --size large's step, W10_STEPS steps)
w11      kiln-bench --only W11, fp32 then --amp (MiniLM embeddings, 64 x 128 tokens); torch_minilm.py
         (eager fp32 and amp16) beside them
chargpt  char_gpt.py --steps W10_STEPS --modes fp32,amp16,bf16, then --modes compile time-boxed to 300 s
memory   kiln-bench --only W5,W6,W6d,W7,W9 (fp32, memory keys), torch_memory.py (W5 W6 W7 W9 W10),
         torch_w6_dropout.py (W6d fp32)
suite    kiln-bench W1..W9 and W6d (fp32)
amp      kiln-bench --amp --only W5,W6,W6d,W7,W9, torch_amp_w6.py, torch_w6_dropout.py --amp
torch    torch_bench.py (fp32, tf32, compile)
burn     burn-bench-wgsl, burn-bench-spirv
profile  KILN_PROFILE=1 char_transformer --size large --steps 40; attention_bench at W10's shape (64 6 256 64)
matmul   kiln-bench --only W1 then --only W10 with KILN_AUTOTUNE_LOG=1 and a fresh tuning cache (every f32
         matmul candidate's time per product shape in matmul-w1.log / matmul-w10.log), then
         torch_matmul_shapes.py times the same products in PyTorch (torch-matmul-shapes.jsonl)
HELP
}
ALL="w10 w11 chargpt memory suite amp torch burn profile matmul"

root=$(pwd)
if [ ! -f .gpu/MANIFEST ]; then
    echo "run.sh: no .gpu/MANIFEST here ($root): run benches/gpu/pack.sh first and carry .gpu" >&2
    exit 2
fi
if [ "${1:-}" = list ] || [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    groups_help
    exit 0
fi
selected=${*:-$ALL}
for g in $selected; do
    case " $ALL " in *" $g "*) ;; *) echo "run.sh: unknown group $g; groups: $ALL" >&2; exit 2 ;; esac
done

OUT=${OUT:-$root/gpu-out}
mkdir -p "$OUT"
S=""
[ "${SMALL:-0}" = 1 ] && S=--small
W10_STEPS=${W10_STEPS:-$([ -n "$S" ] && echo 22 || echo 300)}
W10_MAX_S=${W10_MAX_S:-150}
SUITE_MAX_S=${SUITE_MAX_S:-240}
DEV=${KILN_DEVICE_FLAG:---device vulkan}
G=$root/.gpu
BIN=$G/bin
TEXT=$G/data/moby-dick/moby-dick.txt.gz
export KILN_DATA_DIR=$G/data
export PYTHONPATH=$G/shared${PYTHONPATH:+:$PYTHONPATH}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

note() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$OUT/run.log" >&2; }

# The Vulkan loader, if it is not installed yet.
if [ -d .gl ] && ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

# Unpack the binaries once per machine (they stay beside their .xz).
for xzf in "$BIN"/*.xz "$G"/shared/burn-bench-*.xz; do
    exe=${xzf%.xz}
    [ -x "$exe" ] || { xz -dc "$xzf" > "$exe" && chmod +x "$exe"; } || note "unpacking $xzf failed"
done

note "run.sh: groups: $selected; $(head -1 "$G/MANIFEST")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$OUT/run.log" 2>&1 || true

# step NAME SECONDS CMD...: stdout appended to $OUT/NAME.jsonl, stderr to $OUT/NAME.log.
step() {
    local name=$1 secs=$2
    shift 2
    note "start $name (timeout ${secs} s): $*"
    local t0=$SECONDS
    timeout -k 10 "$secs" "$@" >> "$OUT/$name.jsonl" 2>> "$OUT/$name.log"
    local rc=$?
    local why=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && why=" (timed out)"
    note "end   $name: rc=$rc$why after $((SECONDS - t0)) s"
}

for g in $selected; do
    case $g in
    w10)
        step kiln-w10 $((W10_MAX_S + 120)) "$BIN/kiln-bench" $DEV $S --only W10 --steps "$W10_STEPS" --max-seconds "$W10_MAX_S"
        step kiln-w10-amp $((W10_MAX_S + 120)) "$BIN/kiln-bench" $DEV $S --amp --only W10 --steps "$W10_STEPS" --max-seconds "$W10_MAX_S"
        ;;
    w11)
        step kiln-w11 300 "$BIN/kiln-bench" $DEV $S --only W11
        step kiln-w11-amp 300 "$BIN/kiln-bench" $DEV $S --amp --only W11
        step torch-w11 300 python3 "$G/scripts/torch_minilm.py" $S
        ;;
    chargpt)
        step chargpt 240 python3 "$G/shared/char_gpt.py" "$TEXT" --steps "$W10_STEPS" --modes fp32,amp16,bf16
        step chargpt-compile 300 python3 "$G/shared/char_gpt.py" "$TEXT" --steps "$W10_STEPS" --modes compile
        ;;
    memory)
        step kiln-memory 300 "$BIN/kiln-bench" $DEV $S --only W5,W6,W6d,W7,W9
        step torch-memory 300 python3 "$G/scripts/torch_memory.py" "$TEXT" --shared "$G/shared" $S
        step torch-w6d 120 python3 "$G/scripts/torch_w6_dropout.py" --shared "$G/shared" $S
        ;;
    suite)
        step kiln-suite $((SUITE_MAX_S + 120)) "$BIN/kiln-bench" $DEV $S --only W1,W1h,W2,W3,W4,W5,W6,W6d,W7,W8,W9 --max-seconds "$SUITE_MAX_S"
        ;;
    amp)
        step kiln-amp 300 "$BIN/kiln-bench" $DEV $S --amp --only W5,W6,W6d,W7,W9
        step torch-amp-w6 120 python3 "$G/scripts/torch_amp_w6.py" $S
        step torch-w6d-amp 120 python3 "$G/scripts/torch_w6_dropout.py" --shared "$G/shared" $S --amp
        ;;
    torch)
        step torch-suite $((SUITE_MAX_S + 200)) python3 "$G/shared/torch_bench.py" $S --max-seconds "$SUITE_MAX_S"
        ;;
    burn)
        step burn-wgsl $((SUITE_MAX_S + 60)) "$G/shared/burn-bench-wgsl" $S --max-seconds "$SUITE_MAX_S"
        step burn-spirv $((SUITE_MAX_S + 60)) "$G/shared/burn-bench-spirv" $S --max-seconds "$SUITE_MAX_S"
        ;;
    profile)
        step profile-char 300 env KILN_PROFILE=1 "$BIN/char_transformer" --size large --steps 40 --eval-every 1000 \
            --tokens 0 $DEV --out "$OUT/char_transformer"
        step attention 120 "$BIN/attention_bench" 64 6 256 64 $DEV
        ;;
    matmul)
        # A fresh cache, so that every product shape is tuned and every candidate timed.
        tune=$OUT/matmul-tune-cache
        rm -rf "$tune" && mkdir -p "$tune"
        step matmul-w1 300 env KILN_AUTOTUNE_LOG=1 KILN_CACHE_DIR="$tune" "$BIN/kiln-bench" $DEV $S --only W1 --min-time 0.5
        step matmul-w10 $((W10_MAX_S + 180)) env KILN_AUTOTUNE_LOG=1 KILN_CACHE_DIR="$tune" "$BIN/kiln-bench" $DEV $S \
            --only W10 --steps "$W10_STEPS" --max-seconds 60
        step torch-matmul-shapes 300 python3 "$G/scripts/torch_matmul_shapes.py" "$OUT/matmul-w1.log" "$OUT/matmul-w10.log"
        ;;
    esac
done
note "run.sh: done; results in $OUT (python3 .gpu/scripts/compare.py $OUT/*.jsonl)"
