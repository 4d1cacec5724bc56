// UNet2DConditionModel graphs against diffusers outputs stored in the golden fixtures (float32,
// CPU): tiny-sd15 (conv projections, 8 heads) and tiny-sdxl (linear projections, per-level heads,
// 2 transformer layers, text_time embedding). Plus an SD 2.x-style synthetic model (linear
// projections, head list, upcast_attention) whose checkpoint this file writes from its own listing
// of diffusers' key layout, and the refusals of unsupported config keys.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Graph, type Value } from '../../../src-main/engine/graph/graph';
import type { DType } from '../../../src-main/engine/graph/dtype';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Params } from '../../../src-main/engine/nn/params';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { buildUNet2DCondition, type UNet2DConditionConfig } from '../../../src-main/engine/models/unet-2d-condition';
import { unetConfigFrom } from '../../../src-main/engine/io/configs';
import { goldenDir, readGoldenTensors, type GoldenTensor } from '../../helpers/golden';
import { TestLocator } from '../../helpers/locator';
import { describeDifference, difference, floats } from './compare';

type Variant = 'tiny-sd15' | 'tiny-sdxl';

const unetDir = (variant: Variant): string => join(goldenDir(variant), 'model', 'unet');
const configPath = (variant: Variant): string => join(unetDir(variant), 'config.json');
/** The config as the product reads it (upstream defaults filled in, unsupported features refused). */
const readConfig = (variant: Variant): UNet2DConditionConfig =>
  unetConfigFrom(JSON.parse(readFileSync(configPath(variant), 'utf8')) as Record<string, unknown>, configPath(variant));

function golden(cases: Map<string, GoldenTensor>, key: string): GoldenTensor {
  const t = cases.get(key);
  if (!t) throw new Error(`golden case ${key} is missing`);
  return t;
}

const feed = (t: GoldenTensor): HostTensor =>
  t.data instanceof BigInt64Array ? { dtype: 'float32', shape: t.shape, data: Float32Array.from(t.data, Number) } : { dtype: 'float32', shape: t.shape, data: floats(t) };

interface BuiltUNet {
  locator: TestLocator;
  session: Session;
  nodes: number;
}

/**
 * One UNet forward graph in `dtype` with float32 inputs (timesteps fed as float32, as the brief of
 * buildUNet2DCondition says: already cast) and a float32 output named "out".
 */
async function buildUNet(weights: string, config: UNet2DConditionConfig, shapes: Record<string, number[]>, dtype: DType): Promise<BuiltUNet> {
  const locator = new TestLocator([weights]);
  const g = new Graph('unet');
  const input = (name: string): Value => g.input(name, 'float32', shapes[name]);
  const p = new Params(g, locator, { dtype });
  const sample = input('sample');
  const timestep = input('timestep');
  const encoderHiddenStates = input('encoder_hidden_states');
  const addedCond = shapes.text_embeds ? { textEmbeds: op.cast(input('text_embeds'), dtype), timeIds: input('time_ids') } : undefined;
  const out = buildUNet2DCondition(p, config, {
    sample: op.cast(sample, dtype),
    timestep,
    encoderHiddenStates: op.cast(encoderHiddenStates, dtype),
    addedCond,
  });
  g.output(op.cast(out, 'float32'), 'out');
  return { locator, session: await Session.create(serializeModel(g)), nodes: g.nodes.length };
}

function goldenRun(variant: Variant, dtype: DType): Promise<{ built: BuiltUNet; feeds: Record<string, HostTensor>; expected: GoldenTensor }> {
  const cases = readGoldenTensors(join(goldenDir(variant), 'cases.safetensors'));
  const names = variant === 'tiny-sdxl' ? ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids'] : ['sample', 'timestep', 'encoder_hidden_states'];
  const feeds: Record<string, HostTensor> = {};
  const shapes: Record<string, number[]> = {};
  for (const name of names) {
    feeds[name] = feed(golden(cases, `unet.input.${name}`));
    shapes[name] = [...feeds[name].shape];
  }
  const weights = join(unetDir(variant), 'diffusion_pytorch_model.safetensors');
  return buildUNet(weights, readConfig(variant), shapes, dtype).then((built) => ({ built, feeds, expected: golden(cases, 'unet.output') }));
}

for (const variant of ['tiny-sd15', 'tiny-sdxl'] as const) {
  describe(`UNet2DConditionModel (${variant})`, () => {
    it('predicts the reference output and takes every weight', async () => {
      const { built, feeds, expected } = await goldenRun(variant, 'float32');
      expect(built.locator.untaken()).toEqual([]);
      const result = await built.session.run(feeds);
      expect(result.out.shape).toEqual(expected.shape);
      const d = difference(floats(result.out), floats(expected));
      console.log(describeDifference(`${variant} unet.output (${built.nodes} nodes)`, d));
      expect(d.outside).toBe(0);
    });

    it('float16 build (weights cast in the graph) stays close to float32 on the CPU', async () => {
      const { built, feeds, expected } = await goldenRun(variant, 'float16');
      const result = await built.session.run(feeds);
      const reference = floats(expected);
      const scale = reference.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const d = difference(floats(result.out), reference, { rtol: 2e-2, atol: 2e-2 * scale });
      console.log(describeDifference(`${variant} unet.output float16 (CPU) vs float32 reference, output max |x| ${scale.toFixed(3)}`, d));
      expect(d.outside).toBe(0);
    });
  });
}

describe('UNet2DConditionModel (tiny-sd15) variants', () => {
  it('with fused attention (com.microsoft MultiHeadAttention) predicts the reference output', async () => {
    const cases = readGoldenTensors(join(goldenDir('tiny-sd15'), 'cases.safetensors'));
    const locator = new TestLocator([join(unetDir('tiny-sd15'), 'diffusion_pytorch_model.safetensors')]);
    const g = new Graph('unet');
    const p = new Params(g, locator, { dtype: 'float32', attention: 'fused' });
    const feeds: Record<string, HostTensor> = {};
    const input = (name: string): Value => {
      feeds[name] = feed(golden(cases, `unet.input.${name}`));
      return g.input(name, 'float32', feeds[name].shape);
    };
    const out = buildUNet2DCondition(p, readConfig('tiny-sd15'), { sample: input('sample'), timestep: input('timestep'), encoderHiddenStates: input('encoder_hidden_states') });
    g.output(out, 'out');
    expect(g.nodes.filter((n) => n.op === 'MultiHeadAttention')).toHaveLength(32);
    const result = await (await Session.create(serializeModel(g))).run(feeds);
    const d = difference(floats(result.out), floats(golden(cases, 'unet.output')));
    console.log(describeDifference('tiny-sd15 unet.output, fused attention', d));
    expect(d.outside).toBe(0);
  });

  it('offers exactly the attention projections of the reference LoRA to the layer hook, under their kohya names', () => {
    const g = new Graph('unet');
    const modules: string[] = [];
    const p = new Params(g, new TestLocator([join(unetDir('tiny-sd15'), 'diffusion_pytorch_model.safetensors')]), {
      dtype: 'float32',
      hook: (call) => {
        modules.push(call.module);
        return call.output;
      },
    });
    buildUNet2DCondition(p, readConfig('tiny-sd15'), {
      sample: g.input('sample', 'float32', [1, 4, 8, 8]),
      timestep: g.input('timestep', 'float32', [1]),
      encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 32]),
    });
    const kohya = (module: string): string => `lora_unet_${module.replace(/\./g, '_')}`;
    const attention = modules.filter((m) => /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(m)).map(kohya).sort();
    const reference = [...readGoldenTensors(join(goldenDir('tiny-sd15'), 'lora_kohya.safetensors')).keys()]
      .filter((k) => k.endsWith('.alpha'))
      .map((k) => k.slice(0, -'.alpha'.length))
      .sort();
    expect(attention).toEqual(reference);
    expect(new Set(modules).size).toBe(modules.length); // every layer offered once
  });
});

// ---------------------------------------------------------------- SD 2.x-style synthetic model

/** A tiny SD 2.x-style config: linear projections, attention_head_dim as a per-level list, upcast_attention. */
const sd2Config: UNet2DConditionConfig = unetConfigFrom({
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: [2, 4, 4],
  block_out_channels: [16, 32, 32],
  center_input_sample: false,
  cross_attention_dim: 24,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  dual_cross_attention: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 1,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 8,
  out_channels: 4,
  sample_size: 8,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  upcast_attention: true,
  use_linear_projection: true,
}, 'synthetic SD 2.x unet config');

/**
 * diffusers' state-dict layout of a UNet2DConditionModel with CrossAttn/Down blocks, listed
 * independently of the builder: key -> shape.
 */
function diffusersUNetKeys(c: Required<Pick<UNet2DConditionConfig, 'block_out_channels' | 'down_block_types' | 'up_block_types' | 'attention_head_dim' | 'cross_attention_dim' | 'in_channels' | 'out_channels'>> & { layers: number; linearProjection: boolean }): Map<string, number[]> {
  const keys = new Map<string, number[]>();
  const ch = c.block_out_channels;
  const temb = ch[0] * 4;
  const ctx = c.cross_attention_dim as number;
  const put = (name: string, shape: number[]): void => void keys.set(name, shape);
  const lin = (name: string, out: number, inp: number, bias = true): void => {
    put(`${name}.weight`, [out, inp]);
    if (bias) put(`${name}.bias`, [out]);
  };
  const conv = (name: string, out: number, inp: number, k: number): void => {
    put(`${name}.weight`, [out, inp, k, k]);
    put(`${name}.bias`, [out]);
  };
  const norm = (name: string, n: number): void => {
    put(`${name}.weight`, [n]);
    put(`${name}.bias`, [n]);
  };
  const resnet = (name: string, inp: number, out: number): void => {
    norm(`${name}.norm1`, inp);
    conv(`${name}.conv1`, out, inp, 3);
    lin(`${name}.time_emb_proj`, out, temb);
    norm(`${name}.norm2`, out);
    conv(`${name}.conv2`, out, out, 3);
    if (inp !== out) conv(`${name}.conv_shortcut`, out, inp, 1);
  };
  const transformer = (name: string, channels: number): void => {
    norm(`${name}.norm`, channels);
    if (c.linearProjection) lin(`${name}.proj_in`, channels, channels);
    else conv(`${name}.proj_in`, channels, channels, 1);
    const b = `${name}.transformer_blocks.0`;
    for (const n of ['norm1', 'norm2', 'norm3']) norm(`${b}.${n}`, channels);
    for (const [attn, kv] of [['attn1', channels], ['attn2', ctx]] as const) {
      lin(`${b}.${attn}.to_q`, channels, channels, false);
      lin(`${b}.${attn}.to_k`, channels, kv, false);
      lin(`${b}.${attn}.to_v`, channels, kv, false);
      lin(`${b}.${attn}.to_out.0`, channels, channels);
    }
    lin(`${b}.ff.net.0.proj`, 8 * channels, channels);
    lin(`${b}.ff.net.2`, channels, 4 * channels);
    if (c.linearProjection) lin(`${name}.proj_out`, channels, channels);
    else conv(`${name}.proj_out`, channels, channels, 1);
  };
  conv('conv_in', ch[0], c.in_channels, 3);
  lin('time_embedding.linear_1', temb, ch[0]);
  lin('time_embedding.linear_2', temb, temb);
  const skipChannels = [ch[0]];
  ch.forEach((out, i) => {
    const inp = i === 0 ? ch[0] : ch[i - 1];
    for (let j = 0; j < c.layers; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, j === 0 ? inp : out, out);
      if (c.down_block_types[i] === 'CrossAttnDownBlock2D') transformer(`down_blocks.${i}.attentions.${j}`, out);
      skipChannels.push(out);
    }
    if (i < ch.length - 1) {
      conv(`down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
      skipChannels.push(out);
    }
  });
  const last = ch[ch.length - 1];
  resnet('mid_block.resnets.0', last, last);
  transformer('mid_block.attentions.0', last);
  resnet('mid_block.resnets.1', last, last);
  const rev = [...ch].reverse();
  let prev = rev[0];
  rev.forEach((out, i) => {
    for (let j = 0; j < c.layers + 1; j++) {
      const skip = skipChannels.pop() as number;
      resnet(`up_blocks.${i}.resnets.${j}`, (j === 0 ? prev : out) + skip, out);
      if (c.up_block_types[i] === 'CrossAttnUpBlock2D') transformer(`up_blocks.${i}.attentions.${j}`, out);
    }
    if (i < rev.length - 1) conv(`up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
    prev = out;
  });
  norm('conv_norm_out', ch[0]);
  conv('conv_out', c.out_channels, ch[0], 3);
  return keys;
}

/** Writes float32 tensors as a safetensors file (header padded to 8 bytes, as the format asks). */
function writeSafetensors(file: string, tensors: Map<string, { shape: number[]; data: Float32Array }>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  out.write(json, 8, 'utf8');
  let at = 8 + json.length;
  for (const t of tensors.values()) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    at += t.data.byteLength;
  }
  writeFileSync(file, out);
}

/** Deterministic pseudo-random numbers in [-scale, scale). */
function random(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  });
}

describe('UNet2DConditionModel (SD 2.x-style synthetic)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'unet-sd2-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('builds from diffusers key names and shapes, takes every key, and runs to a finite output', async () => {
    const keys = diffusersUNetKeys({
      block_out_channels: sd2Config.block_out_channels as number[],
      down_block_types: sd2Config.down_block_types as string[],
      up_block_types: sd2Config.up_block_types as string[],
      attention_head_dim: sd2Config.attention_head_dim as number[],
      cross_attention_dim: sd2Config.cross_attention_dim as number,
      in_channels: 4,
      out_channels: 4,
      layers: 1,
      linearProjection: true,
    });
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    let seed = 1;
    for (const [name, shape] of keys) {
      const n = shape.reduce((a, b) => a * b, 1);
      const fanIn = shape.length > 1 ? n / shape[0] : 1;
      // norm scales near 1, everything else uniform in +-1/sqrt(fan_in) like torch's default init
      const data = /norm(\d|_out)?\.weight$/.test(name) ? random(n, seed++, 0.1).map((x) => 1 + x) : random(n, seed++, 1 / Math.sqrt(fanIn));
      tensors.set(name, { shape, data });
    }
    const file = join(dir, 'diffusion_pytorch_model.safetensors');
    writeSafetensors(file, tensors);

    const shapes = { sample: [2, 4, 8, 8], timestep: [2], encoder_hidden_states: [2, 7, 24] };
    const built = await buildUNet(file, sd2Config, shapes, 'float32');
    expect(built.locator.untaken()).toEqual([]);
    const feeds: Record<string, HostTensor> = {
      sample: { dtype: 'float32', shape: shapes.sample, data: random(512, 7, 1) },
      timestep: { dtype: 'float32', shape: [2], data: Float32Array.from([3, 900]) },
      encoder_hidden_states: { dtype: 'float32', shape: shapes.encoder_hidden_states, data: random(2 * 7 * 24, 9, 1) },
    };
    const result = await built.session.run(feeds);
    expect(result.out.shape).toEqual([2, 4, 8, 8]);
    const out = floats(result.out);
    expect(out.every(Number.isFinite)).toBe(true);
    // the two samples differ in input and timestep, so their outputs must differ
    expect(out.slice(0, 256).some((v, i) => v !== out[256 + i])).toBe(true);

    // upcast_attention only changes float16 arithmetic: in float32 the same graph without it agrees
    const plain = await buildUNet(file, { ...sd2Config, upcast_attention: false }, shapes, 'float32');
    const d = difference(floats((await plain.session.run(feeds)).out), out, { rtol: 1e-6, atol: 1e-6 });
    expect(d.outside).toBe(0);

    // a float16 build with upcast attention (scores and softmax in float32) stays close to float32
    const half = await buildUNet(file, sd2Config, shapes, 'float16');
    const scale = out.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const dHalf = difference(floats((await half.session.run(feeds)).out), out, { rtol: 2e-2, atol: 2e-2 * scale });
    console.log(describeDifference(`SD 2.x-style float16 + upcast_attention vs float32, output max |x| ${scale.toFixed(3)}`, dHalf));
    expect(dHalf.outside).toBe(0);
  });
});

// ---------------------------------------------------------------- refusals

describe('UNet2DConditionModel config checks', () => {
  // The raw file plus a patch, past io's checks, so the builder's own refusals are what is tested.
  const build = (patch: Partial<UNet2DConditionConfig>): void => {
    const g = new Graph('unet');
    const p = new Params(g, new TestLocator([join(unetDir('tiny-sd15'), 'diffusion_pytorch_model.safetensors')]), { dtype: 'float32' });
    buildUNet2DCondition(p, { ...readConfig('tiny-sd15'), ...patch }, {
      sample: g.input('sample', 'float32', [1, 4, 8, 8]),
      timestep: g.input('timestep', 'float32', [1]),
      encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 32]),
    });
  };

  it('refuses configuration keys it does not implement, naming the key', () => {
    expect(() => build({ only_cross_attention: true })).toThrow(/only_cross_attention = true is not supported/);
    expect(() => build({ dual_cross_attention: true })).toThrow(/dual_cross_attention/);
    expect(() => build({ class_embed_type: 'timestep' })).toThrow(/class_embed_type = "timestep"/);
    expect(() => build({ time_cond_proj_dim: 256 })).toThrow(/time_cond_proj_dim/);
    expect(() => build({ resnet_time_scale_shift: 'scale_shift' })).toThrow(/resnet_time_scale_shift = "scale_shift"/);
    expect(() => build({ encoder_hid_dim_type: 'text_proj', encoder_hid_dim: 32 })).toThrow(/encoder_hid_dim_type/);
    expect(() => build({ addition_embed_type: 'text' })).toThrow(/addition_embed_type = "text"/);
    expect(() => build({ mid_block_type: 'UNetMidBlock2DSimpleCrossAttn' })).toThrow(/mid_block_type/);
    expect(() => build({ mid_block_type: null })).toThrow(/mid_block_type = null/);
    expect(() => build({ num_attention_heads: 8 })).toThrow(/num_attention_heads/);
    expect(() => build({ down_block_types: ['SimpleCrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'] })).toThrow(
      /down block type "SimpleCrossAttnDownBlock2D"/,
    );
    expect(() => build({ attention_head_dim: [8, 8] })).toThrow(/attention_head_dim has 2 entries/);
  });

  it('refuses inputs that do not fit the config', () => {
    const g = new Graph('unet');
    const p = new Params(g, new TestLocator([join(unetDir('tiny-sd15'), 'diffusion_pytorch_model.safetensors')]), { dtype: 'float32' });
    const timestep = g.input('timestep', 'float32', [1]);
    expect(() =>
      buildUNet2DCondition(p, readConfig('tiny-sd15'), {
        sample: g.input('odd', 'float32', [1, 4, 12, 8]),
        timestep,
        encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 32]),
      }),
    ).toThrow(/multiples of 8/);
    expect(() =>
      buildUNet2DCondition(p, readConfig('tiny-sd15'), {
        sample: g.input('sample', 'float32', [1, 4, 8, 8]),
        timestep,
        encoderHiddenStates: g.input('wide', 'float32', [1, 77, 64]),
      }),
    ).toThrow(/cross_attention_dim is 32/);
    expect(() =>
      buildUNet2DCondition(p, readConfig('tiny-sdxl'), {
        sample: g.input('sample_xl', 'float32', [1, 4, 8, 8]),
        timestep,
        encoderHiddenStates: g.input('ehs_xl', 'float32', [1, 77, 64]),
      }),
    ).toThrow(/needs addedCond/);
  });
});
