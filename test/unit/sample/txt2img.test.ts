// Generation on tiny-sd15: LoRA strength as a session input (no rebuild; 0 = no LoRA), batches
// of seeds, samplers, clip skip, and the A1111 "parameters" PNG chunk read back.
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { importLoraFile, loraTargetCatalog } from '../../../src-main/engine/lora/lora-import';
import { slotSpecOf } from '../../../src-main/engine/sample/lora-slots';
import { readPngTextChunks } from '../../../src-main/engine/sample/png-metadata';
import { encodePng, Generator, parseParameters, type GenerationRequest } from '../../../src-main/engine/sample/txt2img';
import { goldenDir } from '../../helpers/golden';

const dir = goldenDir('tiny-sd15');
const model = openModelFolder(join(dir, 'model'));
const lora = importLoraFile(join(dir, 'lora_kohya.safetensors'), loraTargetCatalog(model));
const request: GenerationRequest = { prompt: 'a photo of a red circle', negativePrompt: 'blurry', steps: 4, guidance: 7.5, width: 64, height: 64, sampler: 'Euler', seed: 11 };
const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => v === b[i]);
const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

let plain: Generator;
let withSlot: Generator;
beforeAll(async () => {
  plain = await Generator.create(model, { modelName: 'tiny-sd15' });
  withSlot = await Generator.create(model, { loras: [slotSpecOf('golden', lora)], modelName: 'tiny-sd15' });
});
afterAll(async () => {
  await plain.release();
  await withSlot.release();
});

describe('Generator', () => {
  it('changes LoRA strength without rebuilding a session; strength 0 equals no LoRA', async () => {
    const [none] = await plain.generate(request);
    const [zero] = await withSlot.generate(request, [{ slot: 0, weights: lora, strength: 0 }]);
    const built = withSlot.sessionsBuilt;
    const [half] = await withSlot.generate(request, [{ slot: 0, weights: lora, strength: 0.5 }]);
    const [full] = await withSlot.generate(request, [{ slot: 'golden', weights: lora, strength: 1, name: 'golden', hash: '0123456789ab' }]);
    const [unfilled] = await withSlot.generate(request); // an empty slot is strength 0
    expect(withSlot.sessionsBuilt).toBe(built);
    expect(same(zero!.latents, none!.latents)).toBe(true);
    expect(same(unfilled!.latents, none!.latents)).toBe(true);
    expect(maxDiff(half!.latents, none!.latents)).toBeGreaterThan(1e-2);
    expect(maxDiff(full!.latents, half!.latents)).toBeGreaterThan(1e-2);
    expect(full!.parameters.split('\n')[0]).toBe('a photo of a red circle <lora:golden:1>');
    expect(full!.parameters).toContain('Lora hashes: "golden: 0123456789ab"');
  });

  it('generates a batch of seeds in one UNet call; each image depends only on its seed', async () => {
    const batch = await plain.generate({ ...request, seed: 5, batch: 2, sampler: 'Euler a' });
    const [alone] = await plain.generate({ ...request, seed: 6, sampler: 'Euler a' });
    expect(batch.map((i) => i.seed)).toEqual([5, 6]);
    expect(maxDiff(batch[1]!.latents, alone!.latents)).toBeLessThan(1e-4);
    expect(maxDiff(batch[0]!.latents, batch[1]!.latents)).toBeGreaterThan(1e-2);
  });

  it('runs every sampler, and clip skip changes the conditioning', async () => {
    const results = new Map<string, Float32Array>();
    for (const sampler of ['DDIM', 'Euler', 'Euler a', 'DPM++ 2M', 'DPM++ 2M Karras'] as const) {
      const [image] = await plain.generate({ ...request, sampler });
      expect(image!.latents.every(Number.isFinite)).toBe(true);
      results.set(sampler, image!.latents);
    }
    expect(maxDiff(results.get('DPM++ 2M')!, results.get('DPM++ 2M Karras')!)).toBeGreaterThan(1e-3);
    const [skip2] = await plain.generate({ ...request, clipSkip: 2 });
    expect(maxDiff(skip2!.latents, results.get('Euler')!)).toBeGreaterThan(1e-3);
    expect(skip2!.parameters).toContain('Clip skip: 2');
    await expect(plain.generate({ ...request, width: 60 })).rejects.toThrow(/multiples of 64/);
  });

  it('writes a PNG whose "parameters" chunk reads back as the settings, A1111 style', async () => {
    const [image] = await plain.generate({ ...request, prompt: 'café, naïve — 東京', seed: 42 });
    const png = await encodePng(image!);
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 64, 64, 3]);
    const text = readPngTextChunks(png).get('parameters')!;
    expect(text).toBe(image!.parameters);
    expect(text).toBe('café, naïve — 東京\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny-sd15, Version: lora-studio');
    const parsed = parseParameters(text);
    expect(parsed).toEqual({
      prompt: 'café, naïve — 東京',
      negativePrompt: 'blurry',
      fields: { Steps: '4', Sampler: 'Euler', 'CFG scale': '7.5', Seed: '42', Size: '64x64', Model: 'tiny-sd15', Version: 'lora-studio' },
    });
    // the pixels are the decoded image
    const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect(Buffer.compare(data, Buffer.from(image!.rgb))).toBe(0);
  });

  it('in float16 with fused attention (the defaults on CUDA) gives the float32 image, with the LoRA slot applied', async () => {
    const half = await Generator.create(model, { dtype: 'float16', attention: 'fused', loras: [slotSpecOf('golden', lora)] });
    try {
      const [full] = await withSlot.generate(request, [{ slot: 0, weights: lora, strength: 1 }]);
      const [ours] = await half.generate(request, [{ slot: 0, weights: lora, strength: 1 }]);
      const [none] = await plain.generate(request);
      // The decoded image is in about [-1, 1]; float16 rounding stays far below what the LoRA changes.
      expect(maxDiff(ours!.image, full!.image)).toBeLessThan(2e-2);
      expect(maxDiff(full!.image, none!.image)).toBeGreaterThan(10 * maxDiff(ours!.image, full!.image));
    } finally {
      await half.release();
    }
  });
});
