// float16 on a GPU provider vs the float32 reference: the tiny-sd15 golden UNet, text encoder and
// VAE decoder built with dtype float16 and run on --device, compared with the reference outputs,
// then every sampling case of the folder through the Generator in float16 (an SDXL folder: those only).
// Prints one JSON line per component: max abs error and ||ours - ref|| / ||ref||.
//   npx tsx bench/precision.ts --device cuda [--golden test/fixtures/golden/tiny-sd15]
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Graph, type Value } from '../src-main/engine/graph/graph';
import { serializeModel } from '../src-main/engine/graph/onnx-model';
import * as op from '../src-main/engine/graph/ops';
import { decodeSafetensors } from '../src-main/engine/io/safetensors';
import { openModelFolder } from '../src-main/engine/io/model-folder';
import { buildClipTextModel, clipTextKeyLayout } from '../src-main/engine/models/clip-text-model';
import { buildVaeDecoder } from '../src-main/engine/models/autoencoder-kl';
import { buildUNet2DCondition } from '../src-main/engine/models/unet-2d-condition';
import { Params, type AttentionImpl } from '../src-main/engine/nn/params';
import type { ProviderName } from '../src-main/engine/runtime/providers';
import { runConformance } from '../src-main/engine/conformance/runner';
import { Session, type HostTensor } from '../src-main/engine/runtime/session';
import { readFileSync } from 'node:fs';

const { values: args } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    golden: { type: 'string', default: 'test/fixtures/golden/tiny-sd15' },
    attention: { type: 'string', default: 'fused' },
  },
});
const provider = args.device as ProviderName;
const cases = decodeSafetensors(readFileSync(join(args.golden!, 'cases.safetensors'))).tensors;
const tensor = (name: string): HostTensor => {
  const t = cases.get(name)!;
  const dtype = t.dtype === 'I64' ? 'int64' : 'float32';
  const data = dtype === 'int64' ? new BigInt64Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 8) : new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
  return { dtype, shape: t.shape, data };
};

async function compare(name: string, build: (g: Graph, p: (w: ReturnType<typeof openModelFolder>) => Params) => { inputs: Record<string, HostTensor>; output: Value }, reference: string): Promise<void> {
  const model = openModelFolder(join(args.golden!, 'model'));
  const g = new Graph(name);
  const { inputs, output } = build(g, (m) => new Params(g, m.unet.weights, { dtype: 'float16', attention: args.attention as AttentionImpl }));
  g.output(op.cast(output, 'float32'), 'out');
  void model;
  const session = await Session.create(serializeModel(g), { provider, forbidCpuFallback: provider !== 'cpu' });
  const r = await session.run(inputs);
  const ours = r.out.data as Float32Array;
  const ref = tensor(reference).data as Float32Array;
  let maxAbs = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(ours[i] - ref[i]));
    num += (ours[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  console.log(JSON.stringify({ component: name, provider, precision: 'float16', maxAbsError: +maxAbs.toExponential(3), relL2Error: +Math.sqrt(num / den).toExponential(3), maxAbsReference: Math.max(...Array.from(ref, Math.abs)) }));
}

const folder = join(args.golden!, 'model');
// The single components below are fed SD1.x inputs; an SDXL folder is checked through its sampling cases only.
const sd1 = openModelFolder(folder).kind !== 'sdxl';
if (sd1) await compare('unet', (g) => {
  const m = openModelFolder(folder);
  const p = new Params(g, m.unet.weights, { dtype: 'float16', attention: args.attention as AttentionImpl });
  const sample = g.input('sample', 'float32', tensor('unet.input.sample').shape);
  const t = g.input('timestep', 'float32', tensor('unet.input.timestep').shape); // float: WebGPU has no int64 -> float Cast
  const ehs = g.input('ehs', 'float32', tensor('unet.input.encoder_hidden_states').shape);
  const output = buildUNet2DCondition(p, m.unet.config, { sample: op.cast(sample, 'float16'), timestep: t, encoderHiddenStates: op.cast(ehs, 'float16') });
  const steps = tensor('unet.input.timestep');
  const timestep: HostTensor = { dtype: 'float32', shape: steps.shape, data: Float32Array.from(steps.data as BigInt64Array, Number) };
  return { inputs: { sample: tensor('unet.input.sample'), timestep, ehs: tensor('unet.input.encoder_hidden_states') }, output };
}, 'unet.output');

if (sd1) await compare('text_encoder', (g) => {
  const m = openModelFolder(folder);
  const p = new Params(g, m.textEncoder.weights, { dtype: 'float16' });
  const all = tensor('tokenizer.input_ids');
  const ids: HostTensor = { dtype: 'int64', shape: [4, 77], data: (all.data as BigInt64Array).slice(0, 4 * 77) };
  const input = g.input('ids', 'int64', [4, 77]);
  const out = buildClipTextModel(p, m.textEncoder.config, input, { textModelPrefix: clipTextKeyLayout(m.textEncoder.weights.keys()).textModelPrefix });
  return { inputs: { ids }, output: out.lastHiddenState };
}, 'text_encoder.last_hidden_state');

if (sd1) await compare('vae_decoder', (g) => {
  const m = openModelFolder(folder);
  const p = new Params(g, m.vae.weights, { dtype: 'float16' });
  const latents = g.input('latents', 'float32', tensor('vae.decode.input').shape);
  return { inputs: { latents: tensor('vae.decode.input') }, output: buildVaeDecoder(p, m.vae.config, op.cast(latents, 'float16')) };
}, 'vae.decode.output');

// The whole text-to-image path as the studio runs it on a GPU (the Generator in float16): every
// sampling case of the folder against its float32 reference image and latents. Their status is
// judged by the float32 tolerances; the error figures are what this line is for.
const report = await runConformance(args.golden!, { only: ['sample'], generator: { provider, dtype: 'float16' } });
for (const r of report.results)
  console.log(JSON.stringify({ component: r.name, provider, precision: 'float16', maxAbsError: r.maxAbs ?? null, maxRelError: r.maxRel ?? null, status: r.status, ...(r.note ? { note: r.note } : {}) }));
