// Text encoder LoRA training (trainTextEncoder) on the embedded tiny model and the sample dataset:
// the file gets trained 'lora_te_' modules that generation's importer matches, resume continues
// the uninterrupted trajectory, and with the option off the run is exactly the UNet-only one.
// Choosing text encoder 1 is the same run (the model's only one); text encoder 2 fails, naming the model.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { readLoraFile, writeLoraFile } from '../../../src-main/engine/lora/lora-file';
import { importLoraFile, loraTargetCatalog } from '../../../src-main/engine/lora/lora-import';
import { ensureEmbeddedModel } from '../../../src-main/engine/models/embedded-tiny-model';
import { resolveTrainSettings, settingsFingerprint, type TrainSettingsInput } from '../../../src-main/engine/train/settings';
import { Trainer } from '../../../src-main/engine/train/trainer';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { Rng } from '../../../src-main/engine/sample/rng';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { buildTextEncoderTrainStepGraph } from '../../../src-main/engine/train/text-encoder-step-graph';
import { ClipTokenizer } from '../../../src-main/engine/tokenizer/clip-tokenizer';

const sampleDataset = fileURLToPath(new URL('../../../resources/sample-dataset', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'lora-te-'));
const modelsDir = join(work, 'models');

async function train(name: string, overrides: Partial<TrainSettingsInput> = {}, stopAt?: number) {
  const settings = resolveTrainSettings({ images: sampleDataset, out: join(work, `${name}.safetensors`), modelsDir, cacheDir: join(work, 'cache'), steps: 4, precision: 'fp32', ...overrides });
  const trainer = new Trainer(settings);
  if (stopAt !== undefined) trainer.events.on('step', (e) => e.step === stopAt && trainer.stop());
  return { settings, result: await trainer.run() };
}

const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-4 * Math.abs(b) + 1e-6;

describe('text encoder LoRA training', () => {
  it('trains lora_te modules that generation loads; the first step equals the UNet-only step; off = the old run', async () => {
    const unetOnly = await train('unet-only');
    const explicitOff = await train('off', { trainTextEncoder: false });
    expect(explicitOff.result.losses).toEqual(unetOnly.result.losses);
    expect(settingsFingerprint(explicitOff.settings)).toBe(settingsFingerprint(unetOnly.settings));
    const offFile = readLoraFile(explicitOff.result.out);
    expect(offFile.modules.every((m) => m.prefix === 'lora_unet')).toBe(true);
    expect(offFile.metadata.ss_text_encoder_lr).toBe('0');

    const te = await train('te', { trainTextEncoder: true, textEncoderLr: 5e-3 });
    // The TE LoRA starts at up = 0 and has its own init Rng: step 1 sees the cached embedding's
    // value and the same noise and timesteps, so its loss is the UNet-only step's loss.
    expect(close(te.result.losses[0], unetOnly.result.losses[0])).toBe(true);
    expect(te.result.losses.slice(1)).not.toEqual(unetOnly.result.losses.slice(1));

    const file = readLoraFile(te.result.out);
    const model = openModelFolder(ensureEmbeddedModel(modelsDir));
    const layers = model.textEncoder.config.num_hidden_layers;
    const teModules = file.modules.filter((m) => m.prefix === 'lora_te');
    expect(teModules).toHaveLength(layers * 6); // q, k, v, out_proj, fc1, fc2 per layer
    expect(teModules.map((m) => m.key)).toContain('lora_te_text_model_encoder_layers_0_self_attn_q_proj');
    expect(file.modules.filter((m) => m.prefix === 'lora_unet')).toHaveLength(offFile.modules.length);
    for (const m of teModules) expect(m.up.some((x) => x !== 0)).toBe(true); // moved from zero
    expect(file.metadata.ss_text_encoder_lr).toBe('0.005');
    expect(file.metadata.ss_network_train_unet_only).toBe('false');
    expect(file.metadata.ss_network_args).toBe('{}'); // the one encoder: nothing to say which

    // Text encoder 1 is this model's only one: the same run. Text encoder 2 is SDXL's: refused before any work.
    const te1 = await train('te1', { trainTextEncoder: true, textEncoderLr: 5e-3, textEncoders: '1' });
    expect(te1.result.losses).toEqual(te.result.losses);
    expect(readLoraFile(te1.result.out).modules.map((m) => m.key)).toEqual(file.modules.map((m) => m.key));
    await expect(train('te2', { trainTextEncoder: true, textEncoders: '2' })).rejects.toThrow(
      'embedded lora-studio-tiny-sd15: textEncoders "2" (--train-text-encoder 2) trains SDXL\'s second text encoder, but this SD 1.x model has only one; train it with --train-text-encoder (all)',
    );

    // generation's importer matches every module, in kohya and in diffusers naming
    const catalog = loraTargetCatalog(model);
    const kohya = importLoraFile(te.result.out, catalog);
    expect(kohya.unmatched).toEqual([]);
    expect(kohya.modules.filter((m) => m.component === 'textEncoder')).toHaveLength(layers * 6);
    const diffusersPath = join(work, 'te-diffusers.safetensors');
    writeLoraFile(diffusersPath, file.modules, { format: 'diffusers', precision: 'fp32' });
    const diffusers = importLoraFile(diffusersPath, catalog);
    expect(diffusers.unmatched).toEqual([]);
    const q = diffusers.modules.find((m) => m.component === 'textEncoder' && m.module === 'text_model.encoder.layers.0.self_attn.q_proj')!;
    expect(q).toBeDefined();
    expect(readLoraFile(diffusersPath).modules.filter((m) => m.prefix === 'lora_te')).toHaveLength(layers * 6);
  }, 60_000);

  it('resumes a text encoder run on the uninterrupted trajectory, TE tensors included', async () => {
    const options = { trainTextEncoder: true, clipSkip: 2 };
    const straight = await train('te-straight', options);
    const stopped = await train('te-stopped', options, 2);
    expect(stopped.result).toMatchObject({ stopped: true, step: 2 });
    expect(stopped.result.losses).toEqual(straight.result.losses.slice(0, 2));
    const resumed = await train('te-resumed', { ...options, resume: stopped.result.checkpoint });
    expect(resumed.result.losses).toEqual(straight.result.losses.slice(2));
    const a = readLoraFile(straight.result.out);
    const b = readLoraFile(resumed.result.out);
    expect(b.modules.map((m) => m.key)).toEqual(a.modules.map((m) => m.key));
    expect(a.modules.some((m) => m.prefix === 'lora_te')).toBe(true);
    a.modules.forEach((m, i) => expect(Array.from(b.modules[i].up)).toEqual(Array.from(m.up)));

    // a UNet-only checkpoint does not resume a text encoder run (and says why)
    const unetOnly = await train('te-unet-ckpt', { steps: 1 });
    await expect(train('te-mismatch', { ...options, resume: unetOnly.result.checkpoint })).rejects.toThrow(unetOnly.result.checkpoint);
  }, 60_000);

  // 16x16 latents: at 8x8 the tiny UNet's deepest GroupNorm sees 2 values per group at 1x1, where
  // its output is nearly a step function and float32 finite differences measure rounding noise.
  it('backpropagates through the text encoder: the gradient matches finite differences of the loss', async () => {
    const model = openModelFolder(ensureEmbeddedModel(modelsDir));
    const schedule = NoiseSchedule.fromConfig(model.schedulerConfig);
    const tokenizer = ClipTokenizer.fromFolder(model.tokenizerDir!);
    const batch = 2;
    const contextDim = model.textEncoder.config.hidden_size;
    const step = buildTextEncoderTrainStepGraph(
      {
        unetConfig: model.unet.config,
        weights: model.unet.weights,
        build: { dtype: 'float32', attention: 'composite' },
        lora: { rank: 2, alpha: 2, targets: unetTargets('attention') },
        shape: { batch, latentHeight: 16, latentWidth: 16, tokens: tokenizer.maxLength, contextDim },
        loss: { prediction: 'epsilon' },
        alphasCumprod: schedule.alphasCumprod,
        adamw: { ...DEFAULT_ADAMW, weightDecay: 0 },
      },
      { config: model.textEncoder.config, weights: model.textEncoder.weights, clipSkip: 1 },
    );
    const session = await Session.create(serializeModel(step.graph), { provider: 'cpu' });
    try {
      const rng = new Rng(3);
      const randn = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => scale * rng.normalValue());
      const f32 = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
      const latentShape = [batch, model.unet.config.in_channels, 16, 16];
      const latentSize = latentShape.reduce((a, b) => a * b, 1);
      const ids = new BigInt64Array(batch * tokenizer.maxLength);
      ['a photo of a cat', 'red house by the sea'].forEach((text, i) => tokenizer.encode(text).forEach((id, j) => (ids[i * tokenizer.maxLength + j] = BigInt(id))));
      const size = step.layout.size;
      const params = randn(size, 0.05); // up != 0 everywhere, so every path carries gradient
      const feeds: Record<string, HostTensor> = {
        [step.inputs.latents]: f32(latentShape, randn(latentSize)),
        [step.inputs.noise]: f32(latentShape, randn(latentSize)),
        [step.inputs.timesteps]: { dtype: 'int64', shape: [batch], data: BigInt64Array.of(100n, 700n) },
        [step.inputs.inputIds!]: { dtype: 'int64', shape: [batch, tokenizer.maxLength], data: ids },
        [step.state.m]: f32([size], new Float32Array(size)),
        [step.state.v]: f32([size], new Float32Array(size)),
        ...Object.fromEntries(Object.entries(adamwStepValues(DEFAULT_ADAMW, 1e-3, 1)).map(([k, v]) => [k, f32([], Float32Array.of(v))])),
      };
      const run = async (p: Float32Array) => session.run({ ...feeds, [step.state.params]: f32([size], p) });
      const r = await run(params);
      // m starts at 0: the new m is (1 - beta1) * gradient (no clipping in this spec)
      const grad = Float32Array.from(r[step.state.newM].data as Float32Array, (x) => x / (1 - DEFAULT_ADAMW.betas[0]));
      const direction = new Float32Array(size);
      for (let i = step.textEncoderOffset; i < size; i++) direction[i] = rng.normalValue(); // the text encoder part only
      let analytic = 0;
      for (let i = 0; i < size; i++) analytic += grad[i] * direction[i];
      const eps = 1e-2;
      const shifted = async (sign: number) => ((await run(params.map((x, i) => x + sign * eps * direction[i])))[step.outputs.loss].data as Float32Array)[0];
      const numeric = ((await shifted(1)) - (await shifted(-1))) / (2 * eps);
      expect(Math.abs(analytic)).toBeGreaterThan(1e-4);
      expect(Math.abs(numeric - analytic)).toBeLessThan(2e-2 * Math.abs(analytic) + 1e-5);
    } finally {
      await session.release();
    }
  }, 60_000);
});
