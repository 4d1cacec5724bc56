// The training-step spec the step-graph tests build on the embedded tiny model: float16 (loss
// scaling) or float32, LoRA rank 4 on the attention projections, batch 1 at 64 px.
import type { OpenedModel } from '../../src-main/engine/io/model-folder';
import { unetTargets } from '../../src-main/engine/lora/targets';
import { NoiseSchedule } from '../../src-main/engine/sample/noise-schedule';
import { DEFAULT_ADAMW } from '../../src-main/engine/train/adamw';
import type { TrainStepSpec } from '../../src-main/engine/train/train-step-graph';

export function embeddedStepSpec(model: OpenedModel, dtype: 'float16' | 'float32'): TrainStepSpec {
  return {
    unetConfig: model.unet.config,
    weights: model.unet.weights,
    build: { dtype },
    lora: { rank: 4, alpha: 4, targets: unetTargets('attention') },
    shape: { batch: 1, latentHeight: 8, latentWidth: 8, tokens: 77, contextDim: 32 },
    loss: { prediction: 'epsilon' },
    alphasCumprod: NoiseSchedule.fromConfig(model.schedulerConfig).alphasCumprod,
    adamw: DEFAULT_ADAMW,
  };
}
