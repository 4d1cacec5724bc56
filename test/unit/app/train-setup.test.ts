// The studio's training setup (api/train-setup.ts) for gradient checkpointing: the view's setting
// reaches the engine's settings, the SDXL preset turns it on, and the estimate with it shows less
// peak memory (an SD1.5-sized UNet at 512 px, batch 4, on CUDA: measured 8.4 -> 6.4 GiB on an H100)
// and a longer time. The SDXL choice of text encoders reaches the engine only while text encoder
// training is on. Several steps per run reach the engine and the memory estimate.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SD15 } from '../../../bench/model-configs';
import type { TrainSettingsView } from '../../../src-main/api/contract';
import { defaultSettingsView, engineSettings, estimateRun, TRAIN_PRESETS } from '../../../src-main/api/train-setup';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { ensureEmbeddedModel } from '../../../src-main/engine/models/embedded-tiny-model';
import { goldenDir } from '../../helpers/golden';

const work = mkdtempSync(join(tmpdir(), 'lora-train-setup-'));
const folders = { modelsDir: join(work, 'models'), cacheDir: join(work, 'cache') };

describe('gradient checkpointing in the studio setup', () => {
  it('reaches the engine settings (off unless asked for); the SDXL preset turns it on', () => {
    const view: TrainSettingsView = { ...defaultSettingsView(), images: join(work, 'images'), out: join(work, 'lora.safetensors') };
    expect(engineSettings(view, folders).gradientCheckpointing).toBe(false);
    expect(engineSettings({ ...view, gradientCheckpointing: true }, folders).gradientCheckpointing).toBe(true);
    const turnedOn = TRAIN_PRESETS.filter((p) => p.settings.gradientCheckpointing).map((p) => p.name);
    expect(turnedOn).toEqual(['Style LoRA (SDXL)']);
  });

  it('lowers the estimated peak memory of an SD1.5-sized run and lengthens its time', () => {
    // The embedded model's folder with an SD1.5 UNet config: the memory estimate builds the graph
    // from the config alone (the weights only count parameters for the time estimate).
    const embedded = openModelFolder(ensureEmbeddedModel(folders.modelsDir));
    const opened = { ...embedded, unet: { ...embedded.unet, config: SD15 } };
    const view: TrainSettingsView = { ...defaultSettingsView(), resolution: 512, batch: 4, rank: 16, device: 'cuda' };
    const plain = estimateRun(view, 10, { opened, embedded: false });
    const checkpointed = estimateRun({ ...view, gradientCheckpointing: true }, 10, { opened, embedded: false });
    expect(plain.peakMemoryGiB).toBeGreaterThan(6) // measured 6.4-7.4 GiB on an H100 (BENCHMARKS.md);
    expect(checkpointed.peakMemoryGiB!).toBeLessThan(plain.peakMemoryGiB! - 1);
    expect(checkpointed.seconds!).toBeGreaterThan(plain.seconds!);
    const memoryNote = checkpointed.notes.find((n) => n.startsWith('Memory:'));
    expect(memoryNote).toMatch(/^Memory: UNet weights [\d.]+ GiB \(float16\) \+ [\d.]+ x [\d.]+ GiB of tensors alive at once in a step \(batch 4, 512 px, gradient checkpointing\), rounded up to whole GiB as the GPU arena grows, \+ [\d.]+ GiB fixed/);
    expect(plain.notes.some((n) => n.includes('gradient checkpointing'))).toBe(false);
  });

  it('adds the text encoder weights when the text encoder is trained', () => {
    const opened = openModelFolder(ensureEmbeddedModel(folders.modelsDir));
    const view: TrainSettingsView = { ...defaultSettingsView(), device: 'cuda' };
    const unetOnly = estimateRun(view, 10, { opened, embedded: true });
    const withEncoder = estimateRun({ ...view, trainTextEncoder: true }, 10, { opened, embedded: true });
    let params = 0;
    for (const key of opened.textEncoder.weights.keys()) params += opened.textEncoder.weights.entry(key)!.shape.reduce((a, b) => a * b, 1);
    expect((withEncoder.peakMemoryGiB! - unetOnly.peakMemoryGiB!) * 2 ** 30).toBeCloseTo(2 * params, 0); // float16 on the GPU
    expect(withEncoder.notes.some((n) => n.includes('text encoder weights'))).toBe(true);
  });

  it('SDXL: counts only the trained encoder when one is chosen (the frozen one conditions from the cache)', () => {
    const opened = openModelFolder(join(goldenDir('tiny-sdxl'), 'model'));
    const bytesOf = (weights: typeof opened.unet.weights): number => [...weights.keys()].reduce((n, k) => n + 2 * weights.entry(k)!.shape.reduce((a, b) => a * b, 1), 0); // float16
    const view: TrainSettingsView = { ...defaultSettingsView(), device: 'cuda', resolution: 64 };
    const peak = (v: Partial<TrainSettingsView>): number => estimateRun({ ...view, ...v }, 10, { opened, embedded: false }).peakMemoryGiB! * 2 ** 30;
    const unetOnly = peak({});
    expect(peak({ trainTextEncoder: true }) - unetOnly).toBeCloseTo(bytesOf(opened.textEncoder.weights) + bytesOf(opened.textEncoder2!.weights), 0);
    expect(peak({ trainTextEncoder: true, textEncoders: '1' }) - unetOnly).toBeCloseTo(bytesOf(opened.textEncoder.weights), 0);
    expect(peak({ trainTextEncoder: true, textEncoders: '2' }) - unetOnly).toBeCloseTo(bytesOf(opened.textEncoder2!.weights), 0);
  });
});

describe('text encoder choice in the studio setup', () => {
  it('reaches the engine while trainTextEncoder is on; unticked, a leftover choice means nothing; a bad one is a bad-settings error', () => {
    const view: TrainSettingsView = { ...defaultSettingsView(), images: join(work, 'images'), out: join(work, 'lora.safetensors') };
    expect(engineSettings({ ...view, trainTextEncoder: true }, folders)).toMatchObject({ trainTextEncoder: true, textEncoders: 'all' });
    expect(engineSettings({ ...view, trainTextEncoder: true, textEncoders: '2' }, folders)).toMatchObject({ trainTextEncoder: true, textEncoders: '2' });
    expect(engineSettings({ ...view, trainTextEncoder: false, textEncoders: '2' }, folders)).toMatchObject({ trainTextEncoder: false, textEncoders: 'all' });
    expect(() => engineSettings({ ...view, trainTextEncoder: true, textEncoders: 'both' as never }, folders)).toThrow(
      'Training settings: textEncoders must be "all", "1" or "2" (which text encoders to train), got "both".',
    );
  });
});

describe('steps per run in the studio setup', () => {
  it('reaches the engine settings (1 unless asked for) and the memory estimate; a bad value is a bad-settings error', () => {
    const view: TrainSettingsView = { ...defaultSettingsView(), images: join(work, 'images'), out: join(work, 'lora.safetensors') };
    expect(engineSettings(view, folders).stepsPerRun).toBe(1);
    expect(engineSettings({ ...view, stepsPerRun: 4 }, folders).stepsPerRun).toBe(4);
    expect(() => engineSettings({ ...view, stepsPerRun: 4, gradAccum: 2 }, folders)).toThrow(
      'Training settings: stepsPerRun (--steps-per-run) above 1 does not work with gradient accumulation (gradAccum 2)',
    );

    const embedded = openModelFolder(ensureEmbeddedModel(folders.modelsDir));
    const opened = { ...embedded, unet: { ...embedded.unet, config: SD15 } };
    const sd15: TrainSettingsView = { ...defaultSettingsView(), resolution: 512, rank: 16, device: 'cuda' };
    const one = estimateRun(sd15, 10, { opened, embedded: false });
    const four = estimateRun({ ...sd15, stepsPerRun: 4 }, 10, { opened, embedded: false });
    expect(four.peakMemoryGiB!).toBeGreaterThan(one.peakMemoryGiB!);
    expect(four.notes.find((n) => n.startsWith('Memory:'))).toContain('(batch 1, 512 px, 4 steps per run)');
    expect(() => estimateRun({ ...sd15, stepsPerRun: 0 }, 10, { opened, embedded: false })).toThrow('Training settings: stepsPerRun must be a whole number from 1 to 64, got 0.');
  });
});

describe('previews in the studio estimate', () => {
  it('adds what the preview Generator holds beside training on a GPU, and nothing on the CPU or without previews', () => {
    const opened = openModelFolder(ensureEmbeddedModel(folders.modelsDir));
    const view: TrainSettingsView = { ...defaultSettingsView(), device: 'cuda', resolution: 512, previewEvery: 100, previews: [{ prompt: 'a photo', seed: 1, steps: 20, guidance: 7 }] };
    const withPreviews = estimateRun(view, 10, { opened, embedded: false });
    const without = estimateRun({ ...view, previewEvery: 0 }, 10, { opened, embedded: false });
    const added = (withPreviews.peakMemoryGiB! - without.peakMemoryGiB!) * 2 ** 30;
    // The embedded model is tiny: what it adds is the 512 px preview's arena and the fixed part (engine/sample/preview-memory.ts).
    expect(added).toBeGreaterThan(0.9 * 2 ** 30);
    expect(added).toBeLessThan(1.1 * 2 ** 30);
    expect(withPreviews.notes.some((n) => /^Memory: \+ [\d.]+ GiB for previews at 512 px/.test(n))).toBe(true);
    expect(without.notes.some((n) => n.includes('for previews'))).toBe(false);
    const onCpu = estimateRun({ ...view, device: 'cpu' }, 10, { opened, embedded: true });
    expect(onCpu.notes.some((n) => n.includes('for previews'))).toBe(false);
  });
});
