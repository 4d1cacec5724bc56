// What the backward keeps alive, checked on the graph (graph/liveness.ts, onnxruntime's order):
// - an activation's output that a later rule reads (the Mul of a GEGLU) is computed again in the
//   backward from the activation's input, not kept from the forward, and the gradient stays right;
// - the attention backward's head groups run one after another, so their [Lq, Lk] matrices are
//   never all alive at once;
// - a transformer block's GEGLU projection ([B*L, 8C], the largest activation) is computed again in
//   the backward from its [B*L, C] input, so no forward projection lives until the backward.
import { describe, expect, it } from 'vitest';
import { gradients } from '../../../src-main/engine/autodiff/gradients';
import { attentionBackward } from '../../../src-main/engine/autodiff/rules';
import { Graph, type Value } from '../../../src-main/engine/graph/graph';
import { peakLiveBytes } from '../../../src-main/engine/graph/liveness';
import { liveNodes } from '../../../src-main/engine/graph/onnx-model';
import * as op from '../../../src-main/engine/graph/ops';
import { numel } from '../../../src-main/engine/graph/shape';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import type { WeightLocator } from '../../../src-main/engine/nn/params';
import { DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { backwardOptions, buildTrainStepGraph } from '../../../src-main/engine/train/train-step-graph';
import { SD15 } from '../../../bench/model-configs';
import { checkGradients } from './fd-harness';

/** hidden * gelu(gate), the two halves of x: diffusers' GEGLU. */
const geglu = (x: Value): Value => {
  const half = x.shape[1] / 2;
  const [hidden, gate] = op.split(x, [half, half], 1); // 2 x [N, half]
  return op.mul(hidden, op.gelu(gate)); // [N, half]
};

describe('activations recomputed in the backward', () => {
  it('GEGLU: the backward reads no forward Gelu output, and its gradient matches finite differences', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [64, 2048]); // large enough to be recomputed
    const y = geglu(x);
    const [dx] = gradients(op.reduceSum(op.mul(y, y), [0, 1], false), [x]);
    g.output(dx);
    const forwardGelu = g.nodes.find((n) => n.op === 'Gelu' && !n.name.includes('recompute'))!;
    const readers = liveNodes(g).filter((n) => n.inputs.includes(forwardGelu.outputs[0]));
    expect(readers.map((n) => n.op)).toEqual(['Mul']); // the forward's product only
    expect(readers.every((n) => !n.name.startsWith('grad'))).toBe(true);
    expect(liveNodes(g).some((n) => n.op === 'Gelu' && n.name.includes('recompute'))).toBe(true);

    const result = await checkGradients({ dtype: 'float32', inputs: [{ name: 'x', shape: [4, 128 * 128], values: (rng) => 3 * (2 * rng() - 1) }], build: geglu, coords: 24, step: 1e-2, rtol: 3e-3, atol: 1e-4 });
    expect(result.mismatches).toEqual([]);
    expect(result.checked).toBeGreaterThan(20);
  });
});

describe('attention backward in head groups', () => {
  /** Peak live bytes of MultiHeadAttention's forward and backward for 8 heads of 256 x 256 scores. */
  const peakWithGroupBytes = (chunkBytes: number): number => {
    const saved = attentionBackward.chunkBytes;
    attentionBackward.chunkBytes = chunkBytes;
    try {
      const g = new Graph();
      const [q, k, v] = ['q', 'k', 'v'].map((name) => g.input(name, 'float32', [1, 256, 8 * 8])); // [B, L, H*D]
      const out = op.multiHeadAttention(q, k, v, 8); // [1, 256, 64]
      for (const grad of gradients(op.reduceSum(op.mul(out, out), [0, 1, 2], false), [q, k, v])) g.output(grad);
      return peakLiveBytes(g);
    } finally {
      attentionBackward.chunkBytes = saved;
    }
  };

  it('keeps one group of [Lq, Lk] matrices alive at a time', () => {
    const matrix = 256 * 256 * 4; // one head's scores, float32
    const allAtOnce = peakWithGroupBytes(Infinity);
    const oneHeadAtATime = peakWithGroupBytes(matrix);
    expect(allAtOnce).toBeGreaterThan(3 * 8 * matrix); // S or P, dP, dS of every head
    // at most three of one head (dP - delta, S while its softmax is written, P), plus the [L, D] tensors
    expect(oneHeadAtATime).toBeLessThan(7 * matrix);
  });
});

describe('the training step backward settings', () => {
  it('with gradient checkpointing, groups the attention backward in at most 64 MiB; else the default', () => {
    expect(backwardOptions({ dtype: 'float16', gradientCheckpointing: true }).attentionChunkBytes).toBe(64 * 2 ** 20);
    expect(backwardOptions({ dtype: 'float16' })).toEqual({});
  });
});

describe('GEGLU projections recomputed in the backward', () => {
  const shapesOnly: WeightLocator = { take: (_n, shape) => ({ dtype: 'float16', shape, data: { kind: 'file', path: '/nonexistent', offset: 0, length: numel(shape) * 2 } }) };
  const sd15Step = (gradientCheckpointing: boolean) =>
    buildTrainStepGraph({
      unetConfig: SD15,
      weights: shapesOnly,
      build: { dtype: 'float16', attention: 'fused', gradientCheckpointing },
      lora: { rank: 16, alpha: 16, targets: unetTargets('attention') },
      shape: { batch: 1, latentHeight: 32, latentWidth: 32, tokens: 77, contextDim: 768 },
      loss: { prediction: 'epsilon' },
      alphasCumprod: new Array<number>(1000).fill(0.5),
      adamw: DEFAULT_ADAMW,
      maxGradNorm: 1,
    }).graph;

  it('no backward node reads a forward projection of the SD1.5 step; the backward computes each one again', () => {
    const g = sd15Step(false);
    const nodes = liveNodes(g);
    const isProjection = (n: (typeof nodes)[number]) => n.op === 'Gemm' && n.outputs[0].shape[1] === 8 * n.inputs[0]!.shape[1];
    const forward = nodes.filter((n) => isProjection(n) && !n.name.startsWith('grad'));
    const again = nodes.filter((n) => isProjection(n) && n.name.startsWith('grad'));
    expect(forward.length).toBe(16); // one per transformer block of SD1.5
    expect(again.length).toBe(16);
    const projections = new Set(forward.map((n) => n.outputs[0]));
    const backwardReaders = nodes.filter((n) => n.name.startsWith('grad') && n.inputs.some((v) => v && projections.has(v)));
    expect(backwardReaders.map((n) => n.name)).toEqual([]);
  });

  it('with gradient checkpointing they are recomputed with their block, once', () => {
    const nodes = liveNodes(sd15Step(true));
    const projections = nodes.filter((n) => n.op === 'Gemm' && n.outputs[0].shape[1] === 8 * n.inputs[0]!.shape[1]);
    expect(projections.length).toBe(32); // the forward's and the block copies'
  });
});
