// The real-size float16 training-step graph of the bench's SD1.5 or SDXL config, built from
// shapes alone (every weight a location in a file that is never read): for the tools that study
// the graph without a GPU (live-at-peak.ts, roofline.ts).
import { unetTargets } from '../src-main/engine/lora/targets';
import { ShapeOnlyLocator } from '../src-main/engine/nn/shape-only-locator';
import { DEFAULT_ADAMW } from '../src-main/engine/train/adamw';
import { addedCondShapeOf, buildTrainStepGraph, type TrainStepGraph } from '../src-main/engine/train/train-step-graph';
import { SD15, SDXL } from './model-configs';

/** SD1.5 at 512 px or SDXL at 1024 px, LoRA rank 16 on the attention projections, AdamW. */
export function realSizeStepGraph(model: string, batch: number, { gradientCheckpointing = false } = {}): TrainStepGraph {
  if (model !== 'sd15' && model !== 'sdxl') throw new Error(`model must be sd15 or sdxl, got ${model}`);
  const config = model === 'sdxl' ? SDXL : SD15;
  const latent = model === 'sdxl' ? 128 : 64;
  const addedCond = addedCondShapeOf(config);
  return buildTrainStepGraph({
    unetConfig: config,
    weights: new ShapeOnlyLocator('float16'),
    build: { dtype: 'float16', attention: 'fused', gradientCheckpointing },
    lora: { rank: 16, alpha: 16, targets: unetTargets('attention') },
    shape: { batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: model === 'sdxl' ? 2048 : 768, ...(addedCond ? { addedCond } : {}) },
    loss: { prediction: 'epsilon' },
    alphasCumprod: new Array<number>(1000).fill(0.5),
    adamw: DEFAULT_ADAMW,
    maxGradNorm: 1,
  });
}
