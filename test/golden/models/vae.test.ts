// AutoencoderKL encoder/decoder graphs against diffusers outputs stored in the golden fixtures
// (float32, CPU), plus a float16 build of the same graphs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph, type Value } from '../../../src-main/engine/graph/graph';
import type { DType } from '../../../src-main/engine/graph/dtype';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Params } from '../../../src-main/engine/nn/params';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { buildVaeDecoder, buildVaeEncoder, type AutoencoderKLConfig } from '../../../src-main/engine/models/autoencoder-kl';
import { goldenDir, readGoldenTensors, type GoldenTensor } from '../../helpers/golden';
import { TestLocator } from '../../helpers/locator';
import { describeDifference, difference, floats } from './compare';

type Variant = 'tiny-sd15' | 'tiny-sdxl';

const vaeDir = (variant: Variant): string => join(goldenDir(variant), 'model', 'vae');
const readConfig = (variant: Variant): AutoencoderKLConfig =>
  JSON.parse(readFileSync(join(vaeDir(variant), 'config.json'), 'utf8')) as AutoencoderKLConfig;
const casesOf = (variant: Variant): Map<string, GoldenTensor> => readGoldenTensors(join(goldenDir(variant), 'cases.safetensors'));

function golden(cases: Map<string, GoldenTensor>, key: string): GoldenTensor {
  const t = cases.get(key);
  if (!t) throw new Error(`golden case ${key} is missing`);
  return t;
}

const feed = (t: GoldenTensor): HostTensor => ({ dtype: 'float32', shape: t.shape, data: floats(t) });

/**
 * Encoder (image [1,3,64,64] -> mean, std, logvar) and decoder (latents [1,4,8,8] -> image) of one
 * VAE in one graph, computed in `dtype` with float32 inputs and outputs, on a CPU session.
 */
async function buildVae(variant: Variant, dtype: DType): Promise<{ locator: TestLocator; session: Session }> {
  const locator = new TestLocator([join(vaeDir(variant), 'diffusion_pytorch_model.safetensors')]);
  const config = readConfig(variant);
  const g = new Graph('vae');
  const image = g.input('image', 'float32', [1, 3, 64, 64]);
  const latents = g.input('latents', 'float32', [1, 4, 8, 8]);
  const p = new Params(g, locator, { dtype });
  const dist = buildVaeEncoder(p, config, op.cast(image, dtype));
  const decoded = buildVaeDecoder(p, config, op.cast(latents, dtype));
  const outputs: Record<string, Value> = { mean: dist.mean, std: dist.std, logvar: dist.logvar, decoded };
  for (const [name, value] of Object.entries(outputs)) g.output(op.cast(value, 'float32'), name);
  return { locator, session: await Session.create(serializeModel(g)) };
}

describe('AutoencoderKL (tiny-sd15)', () => {
  const cases = casesOf('tiny-sd15');

  it('encodes to the reference mean and std, decodes to the reference image, and takes every weight', async () => {
    const { locator, session } = await buildVae('tiny-sd15', 'float32');
    expect(locator.untaken()).toEqual([]);
    const result = await session.run({ image: feed(golden(cases, 'vae.encode.input')), latents: feed(golden(cases, 'vae.decode.input')) });
    expect(result.mean.shape).toEqual([1, 4, 8, 8]);
    expect(result.decoded.shape).toEqual([1, 3, 64, 64]);
    for (const [name, key] of [['mean', 'vae.encode.mean'], ['std', 'vae.encode.std'], ['decoded', 'vae.decode.output']]) {
      const d = difference(floats(result[name]), floats(golden(cases, key)));
      console.log(describeDifference(`tiny-sd15 ${key}`, d));
      expect(d.outside).toBe(0);
    }
    // std = exp(logvar / 2)
    const std = floats(result.std);
    floats(result.logvar).forEach((lv, i) => expect(Math.exp(lv / 2)).toBeCloseTo(std[i], 5));
  });

  it('float16 build (weights cast in the graph) stays close to float32', async () => {
    const { session } = await buildVae('tiny-sd15', 'float16');
    const result = await session.run({ image: feed(golden(cases, 'vae.encode.input')), latents: feed(golden(cases, 'vae.decode.input')) });
    for (const [name, key] of [['mean', 'vae.encode.mean'], ['std', 'vae.encode.std'], ['decoded', 'vae.decode.output']]) {
      const d = difference(floats(result[name]), floats(golden(cases, key)), { rtol: 1e-2, atol: 1e-2 });
      console.log(describeDifference(`tiny-sd15 ${key} float16 (CPU) vs float32`, d));
      expect(d.outside).toBe(0);
    }
  });

  it('refuses configurations it does not implement', () => {
    const g = new Graph('vae');
    const p = new Params(g, new TestLocator([join(vaeDir('tiny-sd15'), 'diffusion_pytorch_model.safetensors')]), { dtype: 'float32' });
    const image = g.input('image', 'float32', [1, 3, 64, 64]);
    expect(() => buildVaeEncoder(p, { ...readConfig('tiny-sd15'), act_fn: 'gelu' }, image)).toThrow(/act_fn "gelu" is not supported/);
    const attnBlocks = { ...readConfig('tiny-sd15'), down_block_types: ['AttnDownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'] };
    expect(() => buildVaeEncoder(p, attnBlocks, image)).toThrow(/AttnDownEncoderBlock2D" is not supported/);
    expect(() => buildVaeEncoder(p, readConfig('tiny-sd15'), g.input('odd', 'float32', [1, 3, 60, 64]))).toThrow(/multiples of 8/);
  });
});

describe('AutoencoderKL (tiny-sdxl)', () => {
  const cases = casesOf('tiny-sdxl');

  it('encodes to the reference mean and std, and the full model takes every weight', async () => {
    const { locator, session } = await buildVae('tiny-sdxl', 'float32');
    expect(locator.untaken()).toEqual([]);
    // no decoder reference for tiny-sdxl: the decoder is built (every key and shape asserted) and run on zeros
    const zeros: HostTensor = { dtype: 'float32', shape: [1, 4, 8, 8], data: new Float32Array(256) };
    const result = await session.run({ image: feed(golden(cases, 'vae.encode.input')), latents: zeros });
    for (const [name, key] of [['mean', 'vae.encode.mean'], ['std', 'vae.encode.std']]) {
      const d = difference(floats(result[name]), floats(golden(cases, key)));
      console.log(describeDifference(`tiny-sdxl ${key}`, d));
      expect(d.outside).toBe(0);
    }
    expect(floats(result.decoded).every(Number.isFinite)).toBe(true);
  });
});
