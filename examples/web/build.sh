#!/usr/bin/env bash
# Builds Kiln's browser demo into examples/web/, ready to be served as static files by any
# server (e.g. `python3 -m http.server -d examples/web 8000`, then open http://localhost:8000):
#   pkg/                  the demo crate compiled to wasm32 plus wasm-bindgen's JS glue (--target web)
#   mnist-slice.bin       the first $KILN_WEB_SLICE (default 2000) MNIST training images, then their labels
#   model.safetensors     the native `mnist` example's model, copied from $KILN_WEB_MODEL
#                         (default runs/mnist/model.safetensors) when it exists; the page says so if not
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at the version in Cargo.lock.
# KILN_WEB_PROFILE=release (the default) or dev picks the cargo profile.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

profile="${KILN_WEB_PROFILE:-release}"
want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
    echo "build.sh: wasm-bindgen-cli $want is needed (found: ${have:-none}):" >&2
    echo "  cargo install wasm-bindgen-cli --version $want" >&2
    exit 1
fi

cargo build ${CARGO_JOBS:+-j "$CARGO_JOBS"} --target wasm32-unknown-unknown -p kiln-web-demo --profile "$profile"
dir="$profile"
[ "$profile" = dev ] && dir=debug
# CARGO_TARGET_DIR (a shared build cache) moves cargo's output; relative to the root otherwise.
wasm-bindgen --target web --no-typescript --out-dir "$here/pkg" "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/kiln_web_demo.wasm"

# The MNIST slice the "Train here" button trains on: n images of 784 bytes, then n labels.
python3 - "$root/data/mnist" "$here/mnist-slice.bin" "${KILN_WEB_SLICE:-2000}" <<'EOF'
import gzip, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
images = gzip.open(f"{src}/train-images-idx3-ubyte.gz").read()[16:16 + n * 784]
labels = gzip.open(f"{src}/train-labels-idx1-ubyte.gz").read()[8:8 + n]
assert len(images) == n * 784 and len(labels) == n, "the MNIST files are shorter than the slice"
open(out, "wb").write(images + labels)
EOF

model="${KILN_WEB_MODEL:-runs/mnist/model.safetensors}"
if [ -f "$model" ]; then
    cp "$model" "$here/model.safetensors"
    echo "build.sh: copied $model"
else
    rm -f "$here/model.safetensors"
    echo "build.sh: no $model (train it with: cargo run --release --example mnist); the page will say so"
fi

wasm="$here/pkg/kiln_web_demo_bg.wasm"
echo "build.sh: $wasm: $(stat -c %s "$wasm") bytes, $(gzip -9 -c "$wasm" | wc -c) gzipped"
echo "build.sh: serve with: python3 -m http.server -d examples/web 8000"
