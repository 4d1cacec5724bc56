// SDXL training through the Trainer on the tiny-sdxl model (two text encoders, text_time UNet):
// the feature cache holds both encoders' penultimate states + the pooled embedding and the
// per-image size/crop time ids, the default resolution is the model's native size, the loss on a
// fixed evaluation batch (fixed noise, timesteps, text_embeds and time ids) drops clearly, and the
// file is written in sd-scripts' SDXL layout with SDXL metadata.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Dataset, trainingCaption } from '../../../src-main/engine/data';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { readLoraFile, type LoraModuleWeights } from '../../../src-main/engine/lora/lora-file';
import { downName, upName } from '../../../src-main/engine/lora/lora-network';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { Rng } from '../../../src-main/engine/sample/rng';
import { buildGradientGraph } from '../../../src-main/engine/train/accumulation-graphs';
import { FeatureCache } from '../../../src-main/engine/train/feature-cache';
import { nativeResolutionOf, resolveTrainSettings } from '../../../src-main/engine/train/settings';
import { Trainer } from '../../../src-main/engine/train/trainer';
import { addedCondShapeOf } from '../../../src-main/engine/train/train-step-graph';
import type { TrainEvent } from '../../../src-main/engine/train/events';
import { goldenDir } from '../../helpers/golden';

const sampleDataset = fileURLToPath(new URL('../../../resources/sample-dataset', import.meta.url));
const modelDir = join(goldenDir('tiny-sdxl'), 'model');
const work = mkdtempSync(join(tmpdir(), 'lora-sdxl-train-'));

describe('SDXL training (tiny-sdxl)', () => {
  it('defaults to the model native resolution: 64 for tiny-sdxl, 1024 for an SDXL-sized config', () => {
    expect(nativeResolutionOf(modelDir)).toBe(64); // sample_size 8 x 8
    const copy = join(work, 'sdxl-sized');
    cpSync(modelDir, copy, { recursive: true });
    const configPath = join(copy, 'unet', 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), sample_size: 128 }));
    expect(resolveTrainSettings({ images: sampleDataset, out: join(work, 'x.safetensors'), model: copy }).resolution).toBe(1024);
    expect(resolveTrainSettings({ images: sampleDataset, out: join(work, 'x.safetensors'), model: copy, resolution: 512 }).resolution).toBe(512);
  });

  it('trains: the fixed-batch loss drops, and the LoRA is written in the sd-scripts SDXL layout', async () => {
    const settings = resolveTrainSettings({
      images: sampleDataset, out: join(work, 'sdxl.safetensors'), model: modelDir, cacheDir: join(work, 'cache'), modelsDir: join(work, 'models'),
      steps: 150, lr: 1e-2, rank: 4, alpha: 4, precision: 'fp32', seed: 5,
    });
    expect(settings.resolution).toBe(64);
    const snapshots = new Map<number, LoraModuleWeights[]>();
    const trainer = new Trainer(settings, { previewEvery: 150, onPreview: ({ step, lora }) => void snapshots.set(step, lora) });
    const events: TrainEvent[] = [];
    trainer.events.onAny((e) => events.push(e));
    const result = await trainer.run();
    expect(result.losses).toHaveLength(150);
    expect(result.losses.every(Number.isFinite)).toBe(true);
    expect(events.find((e) => e.type === 'cache')).toMatchObject({ misses: 16, hits: 0 }); // 8 latents + 8 captions

    // The file: sd-scripts SDXL names and metadata, every module of the UNet's attention.
    const file = readLoraFile(settings.out);
    expect(file.modules).toHaveLength(176);
    expect(file.modules.every((m) => /^lora_unet_(input_blocks_\d+|middle_block|output_blocks_\d+)_1_/.test(m.key))).toBe(true);
    expect(file.metadata).toMatchObject({ ss_base_model_version: 'sdxl_base_v1-0', 'modelspec.architecture': 'stable-diffusion-xl-v1-base/lora', ss_resolution: '(64, 64)' });

    // The cache: SDXL text = both penultimate states [77, 32 + 32] and the pooled projection [32]; time ids per image.
    const model = openModelFolder(modelDir);
    const dataset = await Dataset.open(sampleDataset, { resolution: 64 });
    const items = dataset.trainingItems();
    const cache = new FeatureCache(settings.cacheDir, model);
    const batch = items.length;
    const x0 = new Float32Array(batch * 256); // [B, 4, 8, 8]
    const context = new Float32Array(batch * 77 * 64); // [B, 77, 64]
    const textEmbeds = new Float32Array(batch * 32); // [B, 32]
    const timeIds = new Float32Array(batch * 6); // [B, 6]
    for (const [i, item] of items.entries()) {
      const latents = await cache.latents(item.path, item.bucket!, item.crop!);
      const text = await cache.text(trainingCaption(item), 1);
      expect(text.shape).toEqual([77, 64]);
      expect(latents.timeIds).toEqual(Float32Array.of(item.height!, item.width!, item.crop!.cropTop, item.crop!.cropLeft, 64, 64));
      latents.mean.forEach((m, j) => (x0[i * 256 + j] = m * model.vae.config.scaling_factor));
      context.set(text.hidden, i * 77 * 64);
      textEmbeds.set(text.pooled!, i * 32);
      timeIds.set(latents.timeIds, i * 6);
    }
    expect(cache.stats.misses).toBe(0); // the trainer cached them all
    await cache.release();

    // Fixed evaluation batch through the (SDXL) gradient graph's loss: base model vs trained LoRA.
    const schedule = NoiseSchedule.fromConfig(model.schedulerConfig);
    const graph = buildGradientGraph({
      unetConfig: model.unet.config,
      weights: model.unet.weights,
      build: { dtype: 'float32' },
      lora: { rank: 4, alpha: 4, targets: unetTargets('attention') },
      shape: { batch, latentHeight: 8, latentWidth: 8, tokens: 77, contextDim: 64, addedCond: addedCondShapeOf(model.unet.config) },
      loss: { prediction: 'epsilon' },
      alphasCumprod: schedule.alphasCumprod,
    });
    expect(graph.inputs.textEmbeds).toBe('text_embeds');
    const session = await Session.create(serializeModel(graph.graph));
    const rng = new Rng(2024);
    const f32 = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
    const feeds: Record<string, HostTensor> = {
      [graph.inputs.latents]: f32([batch, 4, 8, 8], x0),
      [graph.inputs.noise]: f32([batch, 4, 8, 8], rng.normal(x0.length)),
      [graph.inputs.timesteps]: { dtype: 'int64', shape: [batch], data: BigInt64Array.from({ length: batch }, (_, i) => BigInt(60 + i * 110)) },
      [graph.inputs.encoderHiddenStates]: f32([batch, 77, 64], context),
      [graph.inputs.textEmbeds!]: f32([batch, 32], textEmbeds),
      [graph.inputs.timeIds!]: f32([batch, 6], timeIds),
    };
    const lossWith = async (lora: (name: string, size: number) => Float32Array): Promise<number> => {
      for (const p of graph.params) feeds[p.name] = f32(p.shape, lora(p.name, p.shape.reduce((a, b) => a * b, 1)));
      return ((await session.run(feeds)).loss.data as Float32Array)[0];
    };
    const trained = new Map(snapshots.get(150)!.flatMap((m) => [[downName(m.key), m.down], [upName(m.key), m.up]] as [string, Float32Array][]));
    const baseLoss = await lossWith((_, size) => new Float32Array(size)); // up = 0: the base model
    const trainedLoss = await lossWith((name) => trained.get(name)!);
    await session.release();
    console.log(`tiny-sdxl fixed-batch loss: base ${baseLoss.toFixed(4)} -> trained ${trainedLoss.toFixed(4)}; step losses ${result.losses.slice(0, 3).map((l) => l.toFixed(3))} .. ${result.losses.slice(-3).map((l) => l.toFixed(3))}`);
    // Measured 1.132 -> 1.024 (-9.5%). Only the two coarse levels (4x4, 2x2 latents here) have attention to adapt,
    // so this tiny random SDXL moves less than the tiny SD1 model of learns.test.ts.
    expect(trainedLoss).toBeLessThan(0.95 * baseLoss);
  }, 120_000);
});
