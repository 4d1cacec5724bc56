// Predicts a training run's peak device memory before it starts (the studio's estimate): the
// frozen weights, plus the forward activations of the UNet at the run's batch and resolution
// (what the backward keeps alive, and what it recomputes), plus a fixed overhead (CUDA context,
// cuDNN workspaces, the LoRA state). The activation bytes come from building the UNet's forward
// graph at that shape; two constants are calibrated on measured peaks (bench/results, H100,
// nvidia-smi, SD1.5 at 512 px, batch 1 and 4) and checked against them in the tests.
import { BYTES_PER_ELEMENT, type DType } from '../graph/dtype';
import { Graph } from '../graph/graph';
import { liveNodes } from '../graph/onnx-model';
import { numel, type Shape } from '../graph/shape';
import { buildUNet2DCondition } from '../models/unet-2d-condition';
import type { UNet2DConditionConfig } from '../io/configs';
import { Params, type TensorLocation, type WeightLocator } from '../nn/params';

/**
 * Device bytes per byte of forward activations, and the fixed overhead (calibration, see above).
 * On the CPU there is no CUDA context or cuDNN workspace: the overhead is the process itself
 * (the embedded model's training run measured 0.29-0.33 GiB RSS in all).
 */
export const MEMORY_CALIBRATION = { activationFactor: 1.282, overheadBytes: 1.733 * 2 ** 30, cpuOverheadBytes: 0.25 * 2 ** 30 };

export interface MemoryEstimate {
  weightsBytes: number;
  activationBytes: number;
  peakBytes: number;
}

/** Hands out shapes without touching any file: only sizes matter here. */
class ShapeOnlyLocator implements WeightLocator {
  bytes = 0;
  constructor(private readonly dtype: DType) {}
  take(_name: string, shape: Shape): TensorLocation {
    const length = numel(shape) * BYTES_PER_ELEMENT[this.dtype];
    this.bytes += length;
    return { dtype: this.dtype, shape, data: { kind: 'file', path: '/dev/null', offset: 0, length } };
  }
}

export function estimateTrainingMemory(
  config: UNet2DConditionConfig,
  shape: { batch: number; latentHeight: number; latentWidth: number; tokens: number; contextDim: number; pooledDim?: number },
  dtype: DType,
  target: 'gpu' | 'cpu' = 'gpu',
): MemoryEstimate {
  const g = new Graph('memory_estimate');
  const locator = new ShapeOnlyLocator(dtype);
  const p = new Params(g, locator, { dtype, attention: 'fused' });
  const { batch, latentHeight, latentWidth, tokens, contextDim } = shape;
  const out = buildUNet2DCondition(p, config, {
    sample: g.input('sample', dtype, [batch, config.in_channels, latentHeight, latentWidth]),
    timestep: g.input('timestep', dtype, [batch]),
    encoderHiddenStates: g.input('context', dtype, [batch, tokens, contextDim]),
    ...(shape.pooledDim
      ? { addedCond: { textEmbeds: g.input('text_embeds', dtype, [batch, shape.pooledDim]), timeIds: g.input('time_ids', dtype, [batch, 6]) } }
      : {}),
  });
  g.output(out, 'out');
  let activationBytes = 0;
  for (const n of liveNodes(g)) for (const o of n.outputs) activationBytes += numel(o.shape) * BYTES_PER_ELEMENT[o.dtype];
  const overhead = target === 'gpu' ? MEMORY_CALIBRATION.overheadBytes : MEMORY_CALIBRATION.cpuOverheadBytes;
  const peakBytes = locator.bytes + MEMORY_CALIBRATION.activationFactor * activationBytes + overhead;
  return { weightsBytes: locator.bytes, activationBytes, peakBytes };
}
