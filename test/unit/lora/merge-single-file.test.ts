// The diffusers -> LDM single-file writer: a folder written as one checkpoint and opened again by
// single-file.ts gives back every tensor of every component, bit for bit, under the same names.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { openSingleFile, ldmUnetKeyMapper } from '../../../src-main/engine/io/single-file';
import { canonicalTextKey, clipTextPrefixOf, diffusersUnetKeyMapper, writeSingleFile } from '../../../src-main/engine/io/single-file-writer';
import { SafetensorsFile } from '../../../src-main/engine/io/safetensors';
import type { WeightSource } from '../../../src-main/engine/io/weights';
import { goldenDir } from '../../helpers/golden';

/** single-file.ts names text encoder tensors as transformers 4 did ("text_model.…"). */
const canonical = (source: WeightSource) => {
  const prefix = clipTextPrefixOf(source.keys());
  return (key: string): string => canonicalTextKey(key, prefix);
};

const work = mkdtempSync(join(tmpdir(), 'lora-studio-single-file-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Same names (after `rename`), dtypes, shapes and bytes. */
function expectSameTensors(actual: WeightSource, expected: WeightSource, label: string, rename = (k: string): string => k): void {
  expect(actual.keys().sort(), label).toEqual(expected.keys().map(rename).sort());
  for (const key of expected.keys()) {
    const a = actual.entry(rename(key))!;
    const e = expected.entry(key)!;
    expect([a.dtype, ...a.shape], `${label} ${key}`).toEqual([e.dtype, ...e.shape]);
    expect(Buffer.compare(Buffer.from(actual.readBytes(rename(key))), Buffer.from(expected.readBytes(key))), `${label} ${key} bytes`).toBe(0);
  }
}

describe('writeSingleFile (diffusers folder -> LDM single file)', () => {
  const folder = openModelFolder(join(goldenDir('tiny-sd15'), 'model'));

  it('round-trips every tensor of tiny-sd15 bit-exactly through openSingleFile', () => {
    const out = join(work, 'tiny-sd15.safetensors');
    const written = writeSingleFile(folder, out);
    expect(written.tensors).toBe(folder.unet.weights.size + folder.vae.weights.size + folder.textEncoder.weights.size);
    const file = SafetensorsFile.open(out);
    file.close();
    const prefixes = new Set(file.names().map((n) => n.split('.')[0]));
    expect([...prefixes].sort()).toEqual(['cond_stage_model', 'first_stage_model', 'model']);
    expect(file.has('first_stage_model.decoder.mid.attn_1.q.weight')).toBe(true);
    expect(file.tensor('first_stage_model.decoder.mid.attn_1.q.weight').shape).toHaveLength(4); // 1x1 conv in LDM
    expect(file.has('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight')).toBe(true);

    const reopened = openSingleFile(out, { tokenizerDir: folder.tokenizerDir });
    expect(reopened.kind).toBe('sd1');
    expectSameTensors(reopened.unet.weights, folder.unet.weights, 'unet');
    expectSameTensors(reopened.vae.weights, folder.vae.weights, 'vae');
    expectSameTensors(reopened.textEncoder.weights, folder.textEncoder.weights, 'text encoder', canonical(folder.textEncoder.weights));
    expect(readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('diffusersUnetKeyMapper inverts ldmUnetKeyMapper on every UNet key (sd15 and sdxl layouts)', () => {
    for (const name of ['tiny-sd15', 'tiny-sdxl'] as const) {
      const model = openModelFolder(join(goldenDir(name), 'model'));
      const toLdm = diffusersUnetKeyMapper(model.unet.config);
      const back = ldmUnetKeyMapper(model.unet.config);
      for (const key of model.unet.weights.keys()) expect(back(toLdm(key) ?? '<none>'), `${name} ${key}`).toBe(key);
    }
  });

  it('writes SDXL (two text encoders, OpenCLIP fused q/k/v) and reads it back bit-exactly', () => {
    const sdxl = openModelFolder(join(goldenDir('tiny-sdxl'), 'model'));
    const out = join(work, 'tiny-sdxl.safetensors');
    writeSingleFile(sdxl, out);
    const reopened = openSingleFile(out, { configOverrides: { unet: { attention_head_dim: sdxl.unet.config.attention_head_dim } } });
    expect(reopened.kind).toBe('sdxl');
    expectSameTensors(reopened.unet.weights, sdxl.unet.weights, 'unet');
    expectSameTensors(reopened.vae.weights, sdxl.vae.weights, 'vae');
    expectSameTensors(reopened.textEncoder.weights, sdxl.textEncoder.weights, 'text encoder', canonical(sdxl.textEncoder.weights));
    expectSameTensors(reopened.textEncoder2!.weights, sdxl.textEncoder2!.weights, 'text encoder 2', canonical(sdxl.textEncoder2!.weights));
  });
});
