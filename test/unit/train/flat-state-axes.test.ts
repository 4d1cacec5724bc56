// The flat LoRA state is split into its tensors, and their gradients joined, along rows of the
// pieces' common width (train-step-graph.ts flatRowWidth): onnxruntime's CUDA Split and Concat of
// unequal pieces build a host table as long as the split axis and upload it every run, which cost
// 25-35 ms per node and step along SD1.5's 3.2 M-element flat axis (H100 profile, 2026-11-23).
// Checked on the real-size SD1.5 and SDXL step graphs (built from the configs, no weights read).
import { describe, expect, it } from 'vitest';
import { SD15, SDXL } from '../../../bench/model-configs';
import { numel, type Shape } from '../../../src-main/engine/graph/shape';
import { liveNodes } from '../../../src-main/engine/graph/onnx-model';
import type { UNet2DConditionConfig } from '../../../src-main/engine/io/configs';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import type { TensorLocation, WeightLocator } from '../../../src-main/engine/nn/params';
import { DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { addedCondShapeOf, buildTrainStepGraph, flatRowWidth } from '../../../src-main/engine/train/train-step-graph';

/** Shapes only: the graph is built, never run. */
const shapesOnly: WeightLocator = {
  take: (_name: string, shape: Shape): TensorLocation => ({ dtype: 'float16', shape, data: { kind: 'file', path: '/nonexistent', offset: 0, length: numel(shape) * 2 } }),
};

function stepGraph(config: UNet2DConditionConfig, contextDim: number) {
  const addedCond = addedCondShapeOf(config);
  return buildTrainStepGraph({
    unetConfig: config,
    weights: shapesOnly,
    build: { dtype: 'float16' },
    lora: { rank: 16, alpha: 16, targets: unetTargets('attention') },
    shape: { batch: 1, latentHeight: 32, latentWidth: 32, tokens: 77, contextDim, ...(addedCond ? { addedCond } : {}) },
    loss: { prediction: 'epsilon' },
    alphasCumprod: new Array<number>(1000).fill(0.5),
    adamw: DEFAULT_ADAMW,
    maxGradNorm: 1,
  });
}

/** The longest axis any Split or Concat of unequal pieces runs along. */
function longestUnequalSplitAxis(graph: ReturnType<typeof stepGraph>['graph']): number {
  let longest = 0;
  for (const n of liveNodes(graph)) {
    if (n.op !== 'Split' && n.op !== 'Concat') continue;
    const pieces = n.op === 'Split' ? n.outputs : n.inputs.filter((v) => v !== null);
    const whole = n.op === 'Split' ? n.inputs[0]! : n.outputs[0];
    const axisAttr = n.attrs.axis as { value: number } | undefined;
    const axis = ((axisAttr?.value ?? 0) + whole.rank) % whole.rank;
    if (new Set(pieces.map((p) => p.shape[axis])).size > 1) longest = Math.max(longest, whole.shape[axis]);
  }
  return longest;
}

describe('flat LoRA state', () => {
  it('is split and joined along short rows at real size (SD1.5: 3.2 M parameters in rows of 1024)', () => {
    const sd15 = stepGraph(SD15, 768);
    expect(sd15.layout.size).toBe(3_188_736);
    expect(flatRowWidth(sd15.layout.tensors.map((t) => t.size))).toBe(1024);
    expect(longestUnequalSplitAxis(sd15.graph)).toBeLessThanOrEqual(4096);
    const sdxl = stepGraph(SDXL, 2048);
    expect(sdxl.layout.size).toBe(23_224_320);
    expect(longestUnequalSplitAxis(sdxl.graph)).toBeLessThanOrEqual(32_768);
  });

  it('row width: the common divisor of the pieces', () => {
    expect(flatRowWidth([5120, 12288, 20480])).toBe(1024);
    expect(flatRowWidth([6, 9])).toBe(3);
    expect(flatRowWidth([7])).toBe(7);
  });
});
