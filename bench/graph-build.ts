// Graph-build benchmark: builds the UNet of SD1.5 (64x64 latents) and of SDXL (128x128 latents) at
// real size from their real configs, then serialises it (serializeModel: protobuf bytes, external
// data only listed). Weights are fabricated file locations in one dummy path that is never read,
// so no checkpoint is needed. Prints one JSON line per model: {model, nodes, buildMs, serializeMs, ...}.
// Run: npx tsx bench/graph-build.ts
import { performance } from 'node:perf_hooks';
import { Graph } from '../src-main/engine/graph/graph';
import { BYTES_PER_ELEMENT } from '../src-main/engine/graph/dtype';
import type { DType } from '../src-main/engine/graph/dtype';
import { serializeModel } from '../src-main/engine/graph/onnx-model';
import type { Shape } from '../src-main/engine/graph/shape';
import * as op from '../src-main/engine/graph/ops';
import { Params, type TensorLocation, type WeightLocator } from '../src-main/engine/nn/params';
import { buildUNet2DCondition, type UNet2DConditionConfig } from '../src-main/engine/models/unet-2d-condition';
import { SD15, SDXL } from './model-configs';

/** Every weight at offset 0 of one never-read file: building and serialising only list locations. */
class FabricatedLocator implements WeightLocator {
  count = 0;
  parameters = 0;
  take(_name: string, shape: Shape): TensorLocation {
    const elements = shape.reduce((a, b) => a * b, 1);
    this.count++;
    this.parameters += elements;
    const dtype: DType = 'float16';
    return { dtype, shape, data: { kind: 'file', path: '/nonexistent/diffusion_pytorch_model.fp16.safetensors', offset: 0, length: elements * BYTES_PER_ELEMENT[dtype] } };
  }
}

interface Case {
  model: string;
  config: UNet2DConditionConfig;
  latent: number;
  tokens: number;
  context: number;
  sdxl: boolean;
}

function run(c: Case, dtype: DType): Record<string, unknown> {
  const locator = new FabricatedLocator();
  const t0 = performance.now();
  const g = new Graph('unet');
  const p = new Params(g, locator, { dtype });
  const batch = 1;
  const sample = g.input('sample', dtype, [batch, 4, c.latent, c.latent]);
  const timestep = g.input('timestep', dtype, [batch]);
  const context = g.input('encoder_hidden_states', dtype, [batch, c.tokens, c.context]);
  const addedCond = c.sdxl
    ? { textEmbeds: g.input('text_embeds', dtype, [batch, 1280]), timeIds: g.input('time_ids', dtype, [batch, 6]) }
    : undefined;
  g.output(op.identity(buildUNet2DCondition(p, c.config, { sample, timestep, encoderHiddenStates: context, addedCond })), 'out');
  const t1 = performance.now();
  const model = serializeModel(g);
  const t2 = performance.now();
  return {
    model: c.model,
    dtype,
    latent: [c.latent, c.latent],
    nodes: g.nodes.length,
    initializers: g.initializers.size,
    weights: locator.count,
    parameters: locator.parameters,
    buildMs: Math.round((t1 - t0) * 10) / 10,
    serializeMs: Math.round((t2 - t1) * 10) / 10,
    protoBytes: model.bytes.byteLength,
  };
}

const cases: Case[] = [
  { model: 'sd15-unet', config: SD15, latent: 64, tokens: 77, context: 768, sdxl: false },
  { model: 'sdxl-unet', config: SDXL, latent: 128, tokens: 77, context: 2048, sdxl: true },
];

for (const c of cases) {
  // The first build pays for JIT warm-up; report it and the best of the following ones.
  const first = run(c, 'float16');
  const repeats = Array.from({ length: 3 }, () => run(c, 'float16'));
  const best = (key: string): number => Math.min(...repeats.map((r) => r[key] as number));
  console.log(JSON.stringify({ ...first, firstBuildMs: first.buildMs, firstSerializeMs: first.serializeMs, buildMs: best('buildMs'), serializeMs: best('serializeMs'), date: new Date().toISOString(), node: process.version }));
}
