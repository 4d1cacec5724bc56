// Build + serialisation time of the SD1.5 LoRA training-step graph at real size (forward, loss,
// backward, AdamW; 64x64 latents, float16, fabricated weight locations: nothing is read).
// Prints one JSON line per repetition.  npx tsx bench/train-step-build.ts
import { performance } from 'node:perf_hooks';
import { buildTrainStepGraph } from '../src-main/engine/train/train-step-graph';
import { unetTargets } from '../src-main/engine/lora/targets';
import { NoiseSchedule } from '../src-main/engine/sample/noise-schedule';
import { DEFAULT_ADAMW } from '../src-main/engine/train/adamw';
import { serializeModel } from '../src-main/engine/graph/onnx-model';
import { ShapeOnlyLocator } from '../src-main/engine/nn/shape-only-locator';
import { SD15 } from './model-configs';
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  const step = buildTrainStepGraph({ unetConfig: SD15, weights: new ShapeOnlyLocator('float16'), build: { dtype: 'float16', attention: 'fused' }, lora: { rank: 16, alpha: 16, targets: unetTargets('attention') }, shape: { batch: 1, latentHeight: 64, latentWidth: 64, tokens: 77, contextDim: 768 }, loss: { prediction: 'epsilon' }, alphasCumprod: NoiseSchedule.fromConfig({ beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', num_train_timesteps: 1000 } as never).alphasCumprod, adamw: DEFAULT_ADAMW, maxGradNorm: 1 });
  const t1 = performance.now();
  const bytes = serializeModel(step.graph).bytes.byteLength;
  const t2 = performance.now();
  console.log(JSON.stringify({ nodes: step.graph.nodes.length, buildS: +((t1 - t0) / 1000).toFixed(2), serializeS: +((t2 - t1) / 1000).toFixed(2), protoKB: Math.round(bytes / 1024) }));
}
