#!/usr/bin/env bash
# Bundles the benchmark scripts into single files for the GPU machine (which has Node.js and
# onnxruntime-node from ../shared/gpu/pack.sh, but not our node_modules), then packs them:
#   scripts/gpu-bundle.sh && then the two device calls described in ../shared/gpu/README.md,
#   running e.g. `node .gpu-build/bench.mjs --model sd15 --device cuda --batch 1,4`.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench precision; do
  npx esbuild "bench/$script.ts" --bundle --platform=node --format=esm --target=node20 \
    --external:onnxruntime-node --external:sharp --outfile=".gpu-build/$script.mjs" \
    --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
done
bash ../shared/gpu/pack.sh .gpu-build
