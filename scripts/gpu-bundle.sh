#!/usr/bin/env bash
# Bundles the benchmark scripts into single files for the GPU machine (which has Node.js and
# onnxruntime-node from ../shared/gpu/pack.sh, but not our node_modules), then packs them:
#   scripts/gpu-bundle.sh && then the two device calls described in ../shared/gpu/README.md,
#   running e.g. `node .gpu-build/bench.mjs --model sd15 --device cuda --batch 1,4`.
# Also puts the PyTorch reference bench (reference.py, unet-configs.json, diffusers-src.tar.xz) in
# .gpu-build/: DEVELOPERS.md "GPU runs" has its device command.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench sampling precision; do
  npx esbuild "bench/$script.ts" --bundle --platform=node --format=esm --target=node20 \
    --external:onnxruntime-node --external:sharp --outfile=".gpu-build/$script.mjs" \
    --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
done
# The PyTorch reference (bench/pytorch/reference.py): the script, the UNet configs of
# bench/model-configs.ts as JSON, and diffusers' source at a pinned commit (the GPU machine's
# python3 has torch and peft but no diffusers, and no network to install it).
DIFFUSERS_COMMIT=58eb52c0803ea9af3abec60841c2a093bdf1f951   # 0.40.0.dev0, 2026-08-23
DIFFUSERS_GIT=${DIFFUSERS_GIT_DIR:-/work/.mirror/huggingface+diffusers/repo}
cp bench/pytorch/reference.py .gpu-build/
npx tsx bench/pytorch/export-configs.ts .gpu-build/unet-configs.json
CACHE=${GPU_PACK_CACHE:-$HOME/.cache/gpu-pack}; mkdir -p "$CACHE"
DIFFUSERS_TARBALL="$CACHE/diffusers-src-$DIFFUSERS_COMMIT.tar.xz"
if [ ! -f "$DIFFUSERS_TARBALL" ]; then
  if ! git --git-dir="$DIFFUSERS_GIT" cat-file -e "$DIFFUSERS_COMMIT^{commit}" 2>/dev/null; then
    echo "gpu-bundle: diffusers commit $DIFFUSERS_COMMIT is not in $DIFFUSERS_GIT: fetch github:huggingface/diffusers" \
      "or set DIFFUSERS_GIT_DIR to a git dir of diffusers that has it" >&2
    exit 1
  fi
  t=$(mktemp -d)
  git --git-dir="$DIFFUSERS_GIT" archive "$DIFFUSERS_COMMIT" src/diffusers | tar x -C "$t"
  echo "$DIFFUSERS_COMMIT" > "$t/src/diffusers-commit.txt"   # reference.py reports it
  tar cJf "$t/diffusers-src.tar.xz" -C "$t/src" diffusers diffusers-commit.txt
  mv "$t/diffusers-src.tar.xz" "$DIFFUSERS_TARBALL"; rm -rf "$t"
fi
cp "$DIFFUSERS_TARBALL" .gpu-build/diffusers-src.tar.xz
bash ../shared/gpu/pack.sh .gpu-build
