// force_upcast: the SDXL VAE overflows float16, so where its config says force_upcast the VAE runs
// in float32 even when the rest of the pipeline runs in float16 (feature cache and generation).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Dataset } from '../../../src-main/engine/data';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { vaeComputeDtype, type AutoencoderKLConfig } from '../../../src-main/engine/models/autoencoder-kl';
import { FeatureCache } from '../../../src-main/engine/train/feature-cache';
import { goldenDir } from '../../helpers/golden';

const sampleDataset = fileURLToPath(new URL('../../../resources/sample-dataset', import.meta.url));

describe('VAE force_upcast', () => {
  it('keeps the VAE in float32 under a float16 pipeline unless the config says force_upcast false', () => {
    const config = (force_upcast?: boolean) => ({ force_upcast }) as AutoencoderKLConfig;
    expect(vaeComputeDtype(config(true), 'float16')).toBe('float32');
    expect(vaeComputeDtype(config(undefined), 'float16')).toBe('float32'); // diffusers' default is true
    expect(vaeComputeDtype(config(false), 'float16')).toBe('float16');
    expect(vaeComputeDtype(config(true), 'float32')).toBe('float32');
  });

  it('a float16 feature cache on tiny-sdxl (force_upcast) encodes latents exactly as float32, texts in float16', async () => {
    const model = openModelFolder(join(goldenDir('tiny-sdxl'), 'model'));
    expect(model.vae.config.force_upcast).toBe(true);
    const [item] = (await Dataset.open(sampleDataset, { resolution: 64 })).trainingItems();
    const full = new FeatureCache(mkdtempSync(join(tmpdir(), 'fc32-')), model);
    const half = new FeatureCache(mkdtempSync(join(tmpdir(), 'fc16-')), model, {}, { dtype: 'float16' });
    try {
      const a = await full.latents(item!.path, item!.bucket!, item!.crop!);
      const b = await half.latents(item!.path, item!.bucket!, item!.crop!);
      expect(Array.from(b.mean)).toEqual(Array.from(a.mean));
      const ta = await full.text('a red circle', 1);
      const tb = await half.text('a red circle', 1);
      const worst = ta.hidden.reduce((m, v, i) => Math.max(m, Math.abs(v - tb.hidden[i]!)), 0);
      expect(worst).toBeGreaterThan(0); // really float16
      expect(worst).toBeLessThan(5e-2);
      expect(tb.pooled).toHaveLength(32);
    } finally {
      await full.release();
      await half.release();
    }
  });
});
