// Gradient checkpointing (autodiff/recompute.ts): the training step built with it gives the same
// loss, gradient norm and updated LoRA state as without it, and its backward reads no value
// computed inside a checkpointed block of the forward (only the blocks' inputs, outputs and weights), so
// those values can be freed after the forward.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { segmentOf } from '../../../src-main/engine/autodiff/recompute';
import type { Value } from '../../../src-main/engine/graph/graph';
import { liveNodes } from '../../../src-main/engine/graph/onnx-model';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { ensureEmbeddedModel } from '../../../src-main/engine/models/embedded-tiny-model';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { Rng } from '../../../src-main/engine/sample/rng';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { buildTrainStepGraph, type TrainStepGraph, type TrainStepSpec } from '../../../src-main/engine/train/train-step-graph';

const model = openModelFolder(ensureEmbeddedModel(mkdtempSync(join(tmpdir(), 'lora-recompute-'))));
const batch = 2;

function spec(gradientCheckpointing: boolean): TrainStepSpec {
  return {
    unetConfig: model.unet.config,
    weights: model.unet.weights,
    build: { dtype: 'float32', attention: 'fused', gradientCheckpointing },
    lora: { rank: 4, alpha: 4, targets: unetTargets('attention') },
    shape: { batch, latentHeight: 8, latentWidth: 8, tokens: 77, contextDim: model.unet.config.cross_attention_dim as number },
    loss: { prediction: 'epsilon' },
    alphasCumprod: NoiseSchedule.fromConfig(model.schedulerConfig).alphasCumprod,
    adamw: DEFAULT_ADAMW,
    maxGradNorm: 1,
  };
}

async function runStep(step: TrainStepGraph): Promise<Record<string, HostTensor>> {
  const rng = new Rng(7);
  const f32 = (shape: number[]): HostTensor => ({ dtype: 'float32', shape, data: rng.normal(shape.reduce((a, b) => a * b, 1)) });
  const size = step.layout.size;
  const params = rng.normal(size).map((v) => v * 0.05); // non-zero up weights too, so every path carries a gradient
  const feeds: Record<string, HostTensor> = {
    [step.inputs.latents]: f32([batch, 4, 8, 8]),
    [step.inputs.noise]: f32([batch, 4, 8, 8]),
    [step.inputs.timesteps]: { dtype: 'int64', shape: [batch], data: BigInt64Array.of(120n, 870n) },
    [step.inputs.encoderHiddenStates]: f32([batch, 77, model.unet.config.cross_attention_dim as number]),
    [step.state.params]: { dtype: 'float32', shape: [size], data: params },
    [step.state.m]: { dtype: 'float32', shape: [size], data: new Float32Array(size) },
    [step.state.v]: { dtype: 'float32', shape: [size], data: new Float32Array(size) },
  };
  for (const [name, value] of Object.entries(adamwStepValues(DEFAULT_ADAMW, 1e-3, 1))) feeds[name] = { dtype: 'float32', shape: [], data: Float32Array.of(value) };
  const session = await Session.fromGraph(step.graph);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

describe('gradient checkpointing', () => {
  it('gives the same step as keeping every activation', async () => {
    const plain = buildTrainStepGraph(spec(false));
    const checkpointed = buildTrainStepGraph(spec(true));
    expect(checkpointed.layout).toEqual(plain.layout);
    const [a, b] = [await runStep(plain), await runStep(checkpointed)];
    for (const name of ['loss', 'grad_norm', plain.state.newParams, plain.state.newM, plain.state.newV]) {
      const [x, y] = [a[name].data as Float32Array, b[name].data as Float32Array];
      const scale = Math.max(...x.map(Math.abs));
      const worst = Math.max(...x.map((v, i) => Math.abs(v - y[i])));
      expect(worst, name).toBeLessThanOrEqual(1e-5 * scale);
    }
    expect((a.grad_norm.data as Float32Array)[0]).toBeGreaterThan(0);
  });

  it('reads no value computed inside a checkpointed block in the backward', () => {
    const step = buildTrainStepGraph(spec(true));
    const nodes = liveNodes(step.graph);
    // A block's internal values: made inside a checkpointed block and read by no forward node outside it.
    const forward = nodes.filter((n) => !n.name.startsWith('grad/'));
    const readOutside = new Set<Value>(forward.flatMap((n) => n.inputs.filter((v): v is Value => !!v?.producer && segmentOf(v.producer) !== segmentOf(n))));
    const segmentValues = new Set<Value>(forward.filter((n) => segmentOf(n)).flatMap((n) => n.outputs.filter((o) => !readOutside.has(o))));
    const memo = new Map<Value, boolean>();
    const weightOnly = (v: Value): boolean => {
      if (!memo.has(v)) memo.set(v, v.producer ? v.producer.inputs.every((i) => !i || weightOnly(i)) : step.graph.isInitializer(v));
      return memo.get(v)!;
    };
    const backward = nodes.filter((n) => n.name.startsWith('grad/'));
    expect(segmentValues.size).toBeGreaterThan(100);
    expect(backward.length).toBeGreaterThan(100);
    const leaked = backward.flatMap((n) => n.inputs.filter((v): v is Value => !!v && segmentValues.has(v) && !weightOnly(v)).map((v) => `${n.name} <- ${v.name}`));
    expect(leaked).toEqual([]);
  });
});
