// SDXL text encoder LoRA training on the tiny-sdxl fixture: the step graph trains 'lora_te1' and
// 'lora_te2' after the UNet's LoRA, its conditioning (both penultimate states concatenated, the
// pooled projection as text_embeds) is the cached features' when the text LoRAs are zero, the
// gradient reaches both encoders and matches finite differences, a Trainer run writes sd-scripts'
// SDXL names (and resumes into the diffusers layout), and generation applies both text encoder
// LoRAs of the file. Also: a copy of the model in real SDXL checkpoints' key layout (both encoders
// under "text_model.") encodes exactly as the fixture does. Training one encoder only ('1' or '2'):
// the step is the both-encoder step with the other encoder's LoRA at zero (so that encoder conditions
// the UNet as the cached features do), and the file has only that encoder's keys.
import { cpSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { openModelFolder, type OpenedModel } from '../../../src-main/engine/io/model-folder';
import { decodeSafetensors, writeSafetensors } from '../../../src-main/engine/io/safetensors';
import { readLoraFile, type LoraModuleWeights } from '../../../src-main/engine/lora/lora-file';
import { fromKohyaModules, importLoraFile, loraTargetCatalog, type ImportedLora } from '../../../src-main/engine/lora/lora-import';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { slotSpecOf } from '../../../src-main/engine/sample/lora-slots';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { Rng } from '../../../src-main/engine/sample/rng';
import { Generator, type GenerationRequest } from '../../../src-main/engine/sample/txt2img';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { FeatureCache } from '../../../src-main/engine/train/feature-cache';
import { resolveTrainSettings, type TrainSettingsInput } from '../../../src-main/engine/train/settings';
import { buildTextEncoderTrainStepGraph, type TextEncoderChoice, type TextEncoderTrainStepGraph } from '../../../src-main/engine/train/text-encoder-step-graph';
import { addedCondShapeOf, buildTrainStepGraph, type TrainStepSpec } from '../../../src-main/engine/train/train-step-graph';
import { Trainer, type TrainerHooks } from '../../../src-main/engine/train/trainer';
import { ClipTokenizer } from '../../../src-main/engine/tokenizer/clip-tokenizer';
import { describeDifference, difference } from '../../golden/models/compare';
import { goldenDir } from '../../helpers/golden';
import { cliIn } from '../../helpers/cli';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const sampleDataset = join(repoRoot, 'resources', 'sample-dataset');
const modelDir = join(goldenDir('tiny-sdxl'), 'model');
const work = mkdtempSync(join(tmpdir(), 'lora-te-sdxl-'));
const model = openModelFolder(modelDir);
const layers = model.textEncoder.config.num_hidden_layers; // 3 in both tiny encoders
const captions = ['a photo of a cat!', 'red house by the sea']; // "!" is tokenizer_2's pad token

const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
const ids64 = (tokenizer: ClipTokenizer): HostTensor => ({ dtype: 'int64', shape: [captions.length, 77], data: BigInt64Array.from(tokenizer.encodeBatch(captions), (x) => BigInt(x)) });
const adamwScalars = (): Record<string, HostTensor> =>
  Object.fromEntries(Object.entries(adamwStepValues(DEFAULT_ADAMW, 1e-3, 1)).map(([k, v]) => [k, f32([], Float32Array.of(v))]));

function stepSpec(of: OpenedModel, latentSide: number): TrainStepSpec {
  return {
    unetConfig: of.unet.config,
    weights: of.unet.weights,
    build: { dtype: 'float32', attention: 'composite' },
    lora: { rank: 2, alpha: 2, targets: unetTargets('attention') },
    shape: { batch: captions.length, latentHeight: latentSide, latentWidth: latentSide, tokens: 77, contextDim: 64, addedCond: addedCondShapeOf(of.unet.config) },
    loss: { prediction: 'epsilon' },
    alphasCumprod: NoiseSchedule.fromConfig(of.schedulerConfig).alphasCumprod,
    adamw: { ...DEFAULT_ADAMW, weightDecay: 0 },
  };
}

const buildSdxlStep = (of: OpenedModel, latentSide: number, clipSkip = 1, trains: TextEncoderChoice = 'all'): TextEncoderTrainStepGraph =>
  buildTextEncoderTrainStepGraph(stepSpec(of, latentSide), { config: of.textEncoder.config, weights: of.textEncoder.weights, textEncoder2: of.textEncoder2, clipSkip, trains });

/** The batch of a step: random latents and noise, two timesteps, both tokenizers' ids, 64 px time ids. */
function batchFeeds(step: Pick<TextEncoderTrainStepGraph, 'inputs'>, latentSide: number, seed: number): Record<string, HostTensor> {
  const rng = new Rng(seed);
  const latentShape = [captions.length, 4, latentSide, latentSide];
  const size = latentShape.reduce((a, b) => a * b, 1);
  return {
    [step.inputs.latents]: f32(latentShape, rng.normal(size)),
    [step.inputs.noise]: f32(latentShape, rng.normal(size)),
    [step.inputs.timesteps]: { dtype: 'int64', shape: [captions.length], data: BigInt64Array.of(100n, 700n) },
    [step.inputs.timeIds!]: f32([captions.length, 6], Float32Array.of(64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64)),
  };
}

const tokenizer = ClipTokenizer.fromFolder(model.tokenizerDir!);
const tokenizer2 = ClipTokenizer.fromFolder(model.tokenizer2Dir!);
const layerOf = (name: string): number => Number(/_layers_(\d+)_/.exec(name)![1]);

describe('SDXL text encoder LoRA (tiny-sdxl)', () => {
  it('builds lora_te1 and lora_te2 after the UNet layout; the gradient reaches both encoders and matches finite differences', async () => {
    // 16x16 latents: at 8x8 the deepest level is 2x2, where finite differences measure GroupNorm rounding.
    const step = buildSdxlStep(model, 16);
    const inputNames = step.graph.inputs.map((v) => v.name);
    expect(inputNames).toEqual(expect.arrayContaining(['input_ids', 'input_ids_2', 'time_ids']));
    expect(inputNames).not.toContain('encoder_hidden_states');
    expect(inputNames).not.toContain('text_embeds'); // text_encoder_2's pooled projection is computed in the graph
    expect(step.inputs).toMatchObject({ inputIds: 'input_ids', inputIds2: 'input_ids_2', timeIds: 'time_ids' });

    const te1 = step.modules.filter((m) => m.key.startsWith('lora_te1_'));
    const te2 = step.modules.filter((m) => m.key.startsWith('lora_te2_'));
    expect(te1).toHaveLength(layers * 6); // q, k, v, out_proj, fc1, fc2 per layer, as sd-scripts
    expect(te2).toHaveLength(layers * 6);
    expect(te1.map((m) => m.key)).toContain('lora_te1_text_model_encoder_layers_0_self_attn_q_proj');
    expect(te2.map((m) => m.key)).toContain(`lora_te2_text_model_encoder_layers_${layers - 1}_mlp_fc2`);
    expect(step.modules.some((m) => m.key.startsWith('lora_te_'))).toBe(false);
    // Layout: the UNet-only graph's layout unchanged, then te1, then te2.
    const unetOnly = buildTrainStepGraph(stepSpec(model, 16)).layout;
    expect(step.textEncoderOffset).toBe(unetOnly.size);
    expect(step.layout.tensors.slice(0, unetOnly.tensors.length)).toEqual(unetOnly.tensors);
    const textNames = step.layout.tensors.slice(unetOnly.tensors.length).map((t) => t.name);
    expect(textNames).toHaveLength(4 * layers * 6); // down and up per module
    const firstTe2 = textNames.findIndex((n) => n.startsWith('lora_te2_'));
    expect(textNames.slice(0, firstTe2).every((n) => n.startsWith('lora_te1_'))).toBe(true);
    expect(textNames.slice(firstTe2).every((n) => n.startsWith('lora_te2_'))).toBe(true);

    const session = await Session.create(serializeModel(step.graph), { provider: 'cpu' });
    try {
      const rng = new Rng(11);
      const size = step.layout.size;
      const params = Float32Array.from({ length: size }, () => 0.05 * rng.normalValue()); // up != 0 everywhere: every path carries gradient
      const feeds: Record<string, HostTensor> = {
        ...batchFeeds(step, 16, 4),
        [step.inputs.inputIds!]: ids64(tokenizer),
        [step.inputs.inputIds2!]: ids64(tokenizer2),
        [step.state.m]: f32([size], new Float32Array(size)),
        [step.state.v]: f32([size], new Float32Array(size)),
        ...adamwScalars(),
      };
      const run = async (p: Float32Array) => session.run({ ...feeds, [step.state.params]: f32([size], p) });
      const r = await run(params);
      // m starts at 0: the new m is (1 - beta1) * gradient (no clipping in this spec)
      const grad = Float32Array.from(r[step.state.newM].data as Float32Array, (x) => x / (1 - DEFAULT_ADAMW.betas[0]));
      const norm = (t: { offset: number; size: number }): number => Math.hypot(...grad.subarray(t.offset, t.offset + t.size));
      const textTensors = step.layout.tensors.slice(unetOnly.tensors.length);
      for (const t of textTensors) {
        // The UNet reads te1's hidden_states[-2]: its last layer feeds nothing (sd-scripts trains it all the same).
        // te2's last layer feeds the pooled state, so text_embeds.
        const unused = t.name.startsWith('lora_te1_') && layerOf(t.name) === layers - 1;
        if (unused) expect(norm(t), t.name).toBe(0);
        else expect(norm(t), t.name).toBeGreaterThan(1e-7);
      }

      // Directional derivative along the text encoders' part, and along te2's last layer only (text_embeds' path).
      const lastTe2 = textTensors.filter((t) => t.name.startsWith('lora_te2_') && layerOf(t.name) === layers - 1);
      for (const [what, picked] of [['te1 + te2', textTensors], ["te2's last layer", lastTe2]] as const) {
        const direction = new Float32Array(size);
        for (const t of picked) for (let i = t.offset; i < t.offset + t.size; i++) direction[i] = rng.normalValue();
        let analytic = 0;
        for (let i = 0; i < size; i++) analytic += grad[i] * direction[i];
        const eps = 1e-2;
        const lossAt = async (sign: number) => ((await run(params.map((x, i) => x + sign * eps * direction[i])))[step.outputs.loss].data as Float32Array)[0];
        const numeric = ((await lossAt(1)) - (await lossAt(-1))) / (2 * eps);
        console.log(`${what}: analytic ${analytic.toExponential(4)}, finite difference ${numeric.toExponential(4)}`);
        expect(Math.abs(analytic), what).toBeGreaterThan(1e-5);
        expect(Math.abs(numeric - analytic), what).toBeLessThan(2e-2 * Math.abs(analytic) + 1e-6);
      }
    } finally {
      await session.release();
    }
  }, 60_000);

  // Clip skip 2 here (hidden_states[-3] of both encoders); the default 1 is checked end to end by the Trainer test's first step.
  it('with zero LoRA up weights, the step conditions the UNet exactly as the cached features', async () => {
    const cache = new FeatureCache(join(work, 'cache-equal'), model);
    const unetStep = buildTrainStepGraph(stepSpec(model, 8));
    const unetSession = await Session.create(serializeModel(unetStep.graph), { provider: 'cpu' });
    try {
      const clipSkip = 2;
      const teStep = buildSdxlStep(model, 8, clipSkip);
      const hidden = new Float32Array(captions.length * 77 * 64); // [B, 77, 64]
      const pooled = new Float32Array(captions.length * 32); // [B, 32]
      for (const [i, caption] of captions.entries()) {
        const text = await cache.text(caption, clipSkip);
        hidden.set(text.hidden, i * 77 * 64);
        pooled.set(text.pooled!, i * 32);
      }
      // The same UNet LoRA (random, so the UNet's gradient depends on every context value); the
      // text LoRAs' down random and up zero: they add exactly nothing.
      const rng = new Rng(7 + clipSkip);
      const unetSize = teStep.textEncoderOffset;
      const params = new Float32Array(teStep.layout.size);
      for (let i = 0; i < unetSize; i++) params[i] = 0.05 * rng.normalValue();
      for (const t of teStep.layout.tensors.slice(unetStep.layout.tensors.length))
        if (t.name.endsWith('.lora_down.weight')) for (let i = t.offset; i < t.offset + t.size; i++) params[i] = 0.1 * rng.normalValue();
      const state = (size: number, p: Float32Array) => ({ params: f32([size], p), m: f32([size], new Float32Array(size)), v: f32([size], new Float32Array(size)) });
      const feedState = (names: { params: string; m: string; v: string }, s: ReturnType<typeof state>) => ({ [names.params]: s.params, [names.m]: s.m, [names.v]: s.v });

      const teSession = await Session.create(serializeModel(teStep.graph), { provider: 'cpu' });
      try {
        const batch = batchFeeds(teStep, 8, 5);
        const a = await teSession.run({
          ...batch,
          [teStep.inputs.inputIds!]: ids64(tokenizer),
          [teStep.inputs.inputIds2!]: ids64(tokenizer2),
          ...feedState(teStep.state, state(teStep.layout.size, params)),
          ...adamwScalars(),
        });
        const b = await unetSession.run({
          ...batch,
          [unetStep.inputs.encoderHiddenStates]: f32([captions.length, 77, 64], hidden),
          [unetStep.inputs.textEmbeds!]: f32([captions.length, 32], pooled),
          ...feedState(unetStep.state, state(unetSize, params.slice(0, unetSize))),
          ...adamwScalars(),
        });
        const lossA = (a[teStep.outputs.loss].data as Float32Array)[0];
        const lossB = (b[unetStep.outputs.loss].data as Float32Array)[0];
        expect(Math.abs(lossA - lossB), `clip skip ${clipSkip}: loss ${lossA} vs ${lossB}`).toBeLessThanOrEqual(1e-6 * Math.abs(lossB));
        // The UNet LoRA's gradient (in the new first moment) depends on the whole context and text_embeds.
        const gradA = (a[teStep.state.newM].data as Float32Array).subarray(0, unetSize);
        const gradB = b[unetStep.state.newM].data as Float32Array;
        const d = difference(gradA, gradB, { rtol: 1e-5, atol: 1e-9 });
        expect(d.outside, describeDifference(`clip skip ${clipSkip}: UNet LoRA gradient, text encoder step vs cached features`, d)).toBe(0);
      } finally {
        await teSession.release();
      }
    } finally {
      await Promise.all([cache.release(), unetSession.release()]);
    }
  }, 60_000);

  it('one encoder trained: the step is the both-encoder step with the other LoRA at zero (the frozen encoder\'s part from the cached features)', async () => {
    const all = buildSdxlStep(model, 8);
    // The cached conditioning (clip skip 1), where the one-encoder step takes its frozen part.
    const cache = new FeatureCache(join(work, 'cache-one-encoder'), model);
    const hidden = new Float32Array(captions.length * 77 * 64); // [B, 77, 64]
    const pooled = new Float32Array(captions.length * 32); // [B, 32]
    try {
      for (const [i, caption] of captions.entries()) {
        const text = await cache.text(caption, 1);
        hidden.set(text.hidden, i * 77 * 64);
        pooled.set(text.pooled!, i * 32);
      }
    } finally {
      await cache.release();
    }
    const unetSize = all.textEncoderOffset;
    const tensorsOf = (step: TextEncoderTrainStepGraph, prefix: string) => step.layout.tensors.filter((t) => t.name.startsWith(prefix));
    const allSession = await Session.create(serializeModel(all.graph), { provider: 'cpu' });
    try {
      for (const [trains, kept, frozen] of [['1', 'lora_te1_', 'lora_te2_'], ['2', 'lora_te2_', 'lora_te1_']] as const) {
        const one = buildSdxlStep(model, 8, 1, trains);
        // Only the trained encoder's modules, right after the UNet's; the graph takes the trained
        // encoder's ids and the cached conditioning (encoder 2 frozen: its text_embeds too).
        expect(one.modules.filter((m) => m.key.startsWith(frozen)), trains).toEqual([]);
        expect(one.modules.filter((m) => m.key.startsWith(kept)), trains).toHaveLength(layers * 6);
        expect(one.textEncoderOffset).toBe(unetSize);
        const unetTensors = tensorsOf(all, 'lora_unet_');
        expect(one.layout.tensors.slice(0, unetTensors.length)).toEqual(unetTensors);
        expect(one.layout.tensors.slice(unetTensors.length).map((t) => t.name)).toEqual(tensorsOf(all, kept).map((t) => t.name));
        expect(one.layout.size).toBe(unetSize + tensorsOf(all, kept).reduce((n, t) => n + t.size, 0));
        expect(one.inputs).toMatchObject({ encoderHiddenStates: 'encoder_hidden_states', timeIds: 'time_ids' });
        expect([one.inputs.inputIds, one.inputs.inputIds2, one.inputs.textEmbeds], trains).toEqual(
          trains === '1' ? ['input_ids', undefined, 'text_embeds'] : [undefined, 'input_ids_2', undefined],
        );

        // The same UNet and trained-encoder LoRA in both (random, up != 0, so every context value
        // moves the gradients); in the both-encoder step the other encoder's down random, up zero.
        const rng = new Rng(trains === '1' ? 21 : 22);
        const allParams = new Float32Array(all.layout.size);
        for (let i = 0; i < unetSize; i++) allParams[i] = 0.05 * rng.normalValue();
        for (const t of tensorsOf(all, kept)) for (let i = t.offset; i < t.offset + t.size; i++) allParams[i] = 0.05 * rng.normalValue();
        for (const t of tensorsOf(all, frozen))
          if (t.name.endsWith('.lora_down.weight')) for (let i = t.offset; i < t.offset + t.size; i++) allParams[i] = 0.1 * rng.normalValue();
        const oneParams = new Float32Array(one.layout.size);
        oneParams.set(allParams.subarray(0, unetSize));
        for (const t of tensorsOf(one, kept)) {
          const same = all.layout.tensors.find((x) => x.name === t.name)!;
          oneParams.set(allParams.subarray(same.offset, same.offset + same.size), t.offset);
        }
        const feedsFor = (step: TextEncoderTrainStepGraph, params: Float32Array): Record<string, HostTensor> => ({
          ...batchFeeds(step, 8, 6),
          ...(step.inputs.inputIds ? { [step.inputs.inputIds]: ids64(tokenizer) } : {}),
          ...(step.inputs.inputIds2 ? { [step.inputs.inputIds2]: ids64(tokenizer2) } : {}),
          ...(step.inputs.encoderHiddenStates ? { [step.inputs.encoderHiddenStates]: f32([captions.length, 77, 64], hidden) } : {}),
          ...(step.inputs.textEmbeds ? { [step.inputs.textEmbeds]: f32([captions.length, 32], pooled) } : {}),
          [step.state.params]: f32([params.length], params),
          [step.state.m]: f32([params.length], new Float32Array(params.length)),
          [step.state.v]: f32([params.length], new Float32Array(params.length)),
          ...adamwScalars(),
        });
        const oneSession = await Session.create(serializeModel(one.graph), { provider: 'cpu' });
        try {
          const a = await oneSession.run(feedsFor(one, oneParams));
          const b = await allSession.run(feedsFor(all, allParams));
          const lossOne = (a[one.outputs.loss].data as Float32Array)[0];
          const lossAll = (b[all.outputs.loss].data as Float32Array)[0];
          expect(Math.abs(lossOne - lossAll), `${trains}: loss ${lossOne} vs ${lossAll}`).toBeLessThanOrEqual(1e-6 * Math.abs(lossAll));
          // The gradients (new first moments, no clipping in this spec) of the UNet and the trained encoder's LoRA.
          const gradOne = a[one.state.newM].data as Float32Array;
          const gradAll = b[all.state.newM].data as Float32Array;
          const d = difference(gradOne.subarray(0, unetSize), gradAll.subarray(0, unetSize), { rtol: 1e-5, atol: 1e-9 });
          expect(d.outside, describeDifference(`${trains}: UNet LoRA gradient, one encoder vs both`, d)).toBe(0);
          for (const t of tensorsOf(one, kept)) {
            const same = all.layout.tensors.find((x) => x.name === t.name)!;
            const dt = difference(gradOne.subarray(t.offset, t.offset + t.size), gradAll.subarray(same.offset, same.offset + same.size), { rtol: 1e-5, atol: 1e-9 });
            expect(dt.outside, describeDifference(`${trains}: ${t.name} gradient`, dt)).toBe(0);
          }
          expect(Math.hypot(...gradOne.subarray(unetSize)), `${trains}: the trained encoder gets gradient`).toBeGreaterThan(1e-7);
        } finally {
          await oneSession.release();
        }
      }
    } finally {
      await allSession.release();
    }
  }, 60_000);

  it("a copy in real SDXL checkpoints' key layout (both encoders under text_model.) encodes as the fixture: each encoder reads its own weights", async () => {
    // transformers 4 saves CLIPTextModel under "text_model." as CLIPTextModelWithProjection does;
    // the fixture's text_encoder (transformers 5) has no prefix, so its names never met text_encoder_2's.
    const copy = join(work, 'tiny-sdxl-text-model-prefix');
    cpSync(modelDir, copy, { recursive: true });
    const weightsPath = join(copy, 'text_encoder', 'model.safetensors');
    const { tensors } = decodeSafetensors(readFileSync(weightsPath), weightsPath);
    writeSafetensors(weightsPath, [...tensors].map(([name, t]) => ({ name: `text_model.${name}`, dtype: t.dtype, shape: t.shape, data: t.bytes })));
    const prefixed = openModelFolder(copy);
    expect(prefixed.textEncoder.weights.keys().every((k) => k.startsWith('text_model.'))).toBe(true);
    expect(prefixed.textEncoder2!.weights.keys().filter((k) => k !== 'text_projection.weight').every((k) => k.startsWith('text_model.'))).toBe(true);

    const original = new FeatureCache(join(work, 'cache-layout-a'), model);
    const renamed = new FeatureCache(join(work, 'cache-layout-b'), prefixed);
    try {
      for (const caption of captions) {
        const a = await original.text(caption, 1);
        const b = await renamed.text(caption, 1);
        expect(difference(b.hidden, a.hidden, { rtol: 1e-6, atol: 1e-7 }).outside, `${caption}: hidden`).toBe(0);
        expect(difference(b.pooled!, a.pooled!, { rtol: 1e-6, atol: 1e-7 }).outside, `${caption}: pooled`).toBe(0);
      }
    } finally {
      await Promise.all([original.release(), renamed.release()]);
    }

    // The generator too (its text encoders build both encoders in one graph as well).
    const request: GenerationRequest = { prompt: captions[0], negativePrompt: 'blurry', steps: 2, width: 64, height: 64, sampler: 'Euler', seed: 1 };
    const [a, b] = await Promise.all([Generator.create(model), Generator.create(prefixed)]);
    try {
      const [imageA] = await a.generate(request);
      const [imageB] = await b.generate(request);
      const d = difference(imageB!.latents, imageA!.latents, { rtol: 1e-5, atol: 1e-6 });
      expect(d.outside, describeDifference('generator latents, text_model.-prefixed copy vs fixture', d)).toBe(0);
    } finally {
      await Promise.all([a.release(), b.release()]);
    }

    // And text encoder training builds its step on that layout (no weight read twice or mixed up).
    const step = buildSdxlStep(prefixed, 8);
    expect(step.modules.filter((m) => m.key.startsWith('lora_te1_'))).toHaveLength(layers * 6);
  }, 60_000);

  const train = async (name: string, overrides: Partial<TrainSettingsInput> = {}, stopAt?: number, hooks: TrainerHooks = {}) => {
    const settings = resolveTrainSettings({
      images: sampleDataset, out: join(work, `${name}.safetensors`), model: modelDir, cacheDir: join(work, 'cache'), modelsDir: join(work, 'models'),
      steps: 3, lr: 1e-3, rank: 4, alpha: 4, precision: 'fp32', seed: 9, ...overrides,
    });
    const trainer = new Trainer(settings, hooks);
    if (stopAt !== undefined) trainer.events.on('step', (e) => e.step === stopAt && trainer.stop());
    return { settings, result: await trainer.run() };
  };
  const teOptions: Partial<TrainSettingsInput> = { trainTextEncoder: true, textEncoderLr: 2e-2 };

  it("Trainer: writes lora_unet_/lora_te1_/lora_te2_ in sd-scripts' SDXL names, resumes on the same trajectory, and the generator applies both text encoder LoRAs", async () => {
    const unetOnly = await train('unet-only', { steps: 1 });
    let preview: LoraModuleWeights[] = [];
    const straight = await train('te-straight', teOptions, undefined, { previewEvery: 3, onPreview: (p) => void (preview = p.lora) });
    // The text LoRAs start at up = 0 and draw from their own Rng: step 1 is the UNet-only step, so
    // the step graph's conditioning (input ids through both encoders) is the cached one here too.
    expect(Math.abs(straight.result.losses[0] - unetOnly.result.losses[0])).toBeLessThanOrEqual(1e-5 * unetOnly.result.losses[0]);

    const file = readLoraFile(straight.result.out);
    const byPrefix = (prefix: string) => file.modules.filter((m) => m.prefix === prefix);
    expect(byPrefix('lora_unet')).toHaveLength(176);
    expect(byPrefix('lora_unet').every((m) => /^lora_unet_(input_blocks_\d+|middle_block|output_blocks_\d+)_1_/.test(m.key))).toBe(true);
    expect(byPrefix('lora_te1')).toHaveLength(layers * 6);
    expect(byPrefix('lora_te2')).toHaveLength(layers * 6);
    expect(byPrefix('lora_te')).toHaveLength(0);
    expect(file.modules.map((m) => m.key)).toEqual(expect.arrayContaining(['lora_te1_text_model_encoder_layers_0_self_attn_q_proj', 'lora_te2_text_model_encoder_layers_0_mlp_fc1']));
    for (const m of [...byPrefix('lora_te1'), ...byPrefix('lora_te2')]) {
      const unused = m.prefix === 'lora_te1' && layerOf(m.key) === layers - 1; // no gradient: stays at up = 0
      expect(m.up.some((x) => x !== 0), m.key).toBe(!unused);
    }
    expect(file.metadata).toMatchObject({
      ss_network_module: 'networks.lora',
      ss_network_dim: '4',
      ss_network_alpha: '4',
      ss_base_model_version: 'sdxl_base_v1-0',
      ss_text_encoder_lr: '0.02',
      ss_unet_lr: '0.001',
      ss_network_train_unet_only: 'false',
      'modelspec.architecture': 'stable-diffusion-xl-v1-base/lora',
    });

    // Generation's importer matches every key.
    const catalog = loraTargetCatalog(model);
    const kohya = importLoraFile(straight.result.out, catalog);
    expect(kohya.unmatched).toEqual([]);
    const count = (lora: ImportedLora, component: string) => lora.modules.filter((m) => m.component === component).length;
    expect([count(kohya, 'unet'), count(kohya, 'textEncoder'), count(kohya, 'textEncoder2')]).toEqual([176, layers * 6, layers * 6]);
    // The studio's previews put the trainer's live modules into a generator slot: the same modules as the file's.
    const slotNames = (modules: readonly { component: string; module: string }[]) => modules.map((m) => `${m.component}:${m.module}`).sort();
    expect(slotNames(fromKohyaModules(preview))).toEqual(slotNames(kohya.modules));

    // Resume: stop after step 1, continue to 3 writing the diffusers layout; same losses, same adapters.
    const stopped = await train('te-stopped', teOptions, 1);
    expect(stopped.result).toMatchObject({ stopped: true, step: 1 });
    const resumed = await train('te-resumed', { ...teOptions, resume: stopped.result.checkpoint, format: 'diffusers' });
    expect([...stopped.result.losses, ...resumed.result.losses]).toEqual(straight.result.losses);
    const diffusersKeys = [...decodeSafetensors(readFileSync(resumed.result.out), resumed.result.out).tensors.keys()];
    expect(diffusersKeys).toEqual(expect.arrayContaining(['text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight', 'text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight']));
    const diffusers = importLoraFile(resumed.result.out, catalog);
    expect(diffusers.unmatched).toEqual([]);
    expect(diffusers.modules).toHaveLength(kohya.modules.length);
    const delta = (m: ImportedLora['modules'][number]) => Float32Array.from(m.up, (x) => (x * m.alpha) / m.rank); // alpha / rank folded into up
    for (const m of diffusers.modules) {
      const k = kohya.modules.find((x) => x.component === m.component && x.module === m.module)!;
      expect(k, `${m.component} ${m.module}`).toBeDefined();
      expect(Array.from(m.down)).toEqual(Array.from(k.down));
      expect(difference(delta(m), delta(k), { rtol: 1e-6, atol: 0 }).outside, `${m.component} ${m.module}`).toBe(0);
    }
    // A UNet-only checkpoint does not resume a text encoder run.
    await expect(train('te-mismatch', { ...teOptions, resume: unetOnly.result.checkpoint })).rejects.toThrow(unetOnly.result.checkpoint);

    // The generator applies both text encoders' adapters: as slots, each changes the image, and the
    // whole file as slots gives the image of the file merged into the weights.
    const request: GenerationRequest = { prompt: 'a photo of a red circle', negativePrompt: 'blurry', steps: 2, width: 64, height: 64, sampler: 'Euler', seed: 3 };
    const only = (component: string): ImportedLora => ({ ...kohya, modules: kohya.modules.filter((m) => m.component === component) });
    const withSlot = await Generator.create(model, { loras: [slotSpecOf('te', kohya)] });
    const merged = await Generator.create(model, { merge: [{ lora: kohya, strength: 1 }] });
    try {
      const [base] = await withSlot.generate(request);
      const [full] = await withSlot.generate(request, [{ slot: 0, weights: kohya, strength: 1 }]);
      const [fromMerged] = await merged.generate(request);
      const d = difference(fromMerged!.latents, full!.latents, { rtol: 1e-4, atol: 1e-4 });
      expect(d.outside, describeDifference('merged vs slot (latents)', d)).toBe(0);
      for (const component of ['textEncoder', 'textEncoder2']) {
        const [image] = await withSlot.generate(request, [{ slot: 0, weights: only(component), strength: 1 }]);
        expect(difference(image!.latents, base!.latents, { rtol: 1e-5, atol: 1e-5 }).outside, `${component} alone changes the image`).toBeGreaterThan(0);
      }
    } finally {
      await Promise.all([withSlot.release(), merged.release()]);
    }
  }, 120_000);

  it('Trainer, one encoder: 2 (kohya layout) and 1 (diffusers layout) write only their keys, start on the UNet-only step; a checkpoint resumes only with its choice', async () => {
    const unetOnly = await train('unet-only-for-one', { steps: 1 });
    const te2 = await train('te2-only', { ...teOptions, textEncoders: '2', steps: 2 });
    // text_encoder is frozen and the text_encoder_2 LoRA starts at up = 0: step 1 is the UNet-only (cached) step.
    expect(Math.abs(te2.result.losses[0] - unetOnly.result.losses[0])).toBeLessThanOrEqual(1e-5 * unetOnly.result.losses[0]);
    const file = readLoraFile(te2.result.out);
    const count = (prefix: string) => file.modules.filter((m) => m.prefix === prefix).length;
    expect([count('lora_unet'), count('lora_te1'), count('lora_te2'), count('lora_te')]).toEqual([176, 0, layers * 6, 0]);
    for (const m of file.modules.filter((x) => x.prefix === 'lora_te2')) expect(m.up.some((x) => x !== 0), m.key).toBe(true); // trained
    expect(file.metadata).toMatchObject({ ss_text_encoder_lr: '0.02', ss_network_train_unet_only: 'false' });
    expect(JSON.parse(file.metadata.ss_network_args)).toEqual({ train_text_encoder: '2' });
    const catalog = loraTargetCatalog(model);
    const kohya = importLoraFile(te2.result.out, catalog);
    expect(kohya.unmatched).toEqual([]);
    const components = (lora: ImportedLora) => ['unet', 'textEncoder', 'textEncoder2'].map((c) => lora.modules.filter((m) => m.component === c).length);
    expect(components(kohya)).toEqual([176, 0, layers * 6]);

    // Its checkpoint does not continue a run of text encoder 1 (nor one of both), and says why.
    await expect(train('te1-from-te2', { ...teOptions, textEncoders: '1', resume: te2.result.checkpoint })).rejects.toThrow(
      `${te2.result.checkpoint}: this checkpoint trained attention + text encoder 2, this run trains attention + text encoder 1`,
    );
    await expect(train('all-from-te2', { ...teOptions, resume: te2.result.checkpoint })).rejects.toThrow('this run trains attention + text encoder;');

    const te1 = await train('te1-only', { ...teOptions, textEncoders: '1', format: 'diffusers', steps: 2 });
    expect(Math.abs(te1.result.losses[0] - unetOnly.result.losses[0])).toBeLessThanOrEqual(1e-5 * unetOnly.result.losses[0]);
    const keys = [...decodeSafetensors(readFileSync(te1.result.out), te1.result.out).tensors.keys()];
    expect(keys).toContain('text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight');
    expect(keys.filter((k) => k.startsWith('text_encoder_2.'))).toEqual([]);
    const diffusers = importLoraFile(te1.result.out, catalog);
    expect(diffusers.unmatched).toEqual([]);
    expect(components(diffusers)).toEqual([176, layers * 6, 0]);
  }, 120_000);

  it('the CLI: --train-text-encoder 1 trains only text_encoder; 2 on an SD 1.x model and an unknown choice fail, saying why', () => {
    const cli = cliIn(join(work, 'home'));
    const out = join(work, 'cli-te1.safetensors');
    const trained = cli('train', '--model', modelDir, '--images', sampleDataset, '--out', out, '--steps', '1', '--train-text-encoder', '1', '--te-lr', '1e-3');
    expect(trained.code, trained.err).toBe(0);
    const file = readLoraFile(out);
    expect(['lora_unet', 'lora_te1', 'lora_te2'].map((p) => file.modules.filter((m) => m.prefix === p).length)).toEqual([176, layers * 6, 0]);

    // The embedded model is SD 1.x: one text encoder.
    const sd15 = cli('train', '--images', sampleDataset, '--out', join(work, 'cli-sd15-te2.safetensors'), '--steps', '1', '--train-text-encoder=2');
    expect(sd15.code).toBe(1);
    expect(sd15.err).toContain('embedded lora-studio-tiny-sd15: textEncoders "2" (--train-text-encoder 2) trains SDXL\'s second text encoder, but this SD 1.x model has only one');
    const unknown = cli('train', '--images', sampleDataset, '--out', join(work, 'cli-both.safetensors'), '--train-text-encoder', 'both');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('--train-text-encoder takes all, 1 or 2 (which text encoders to train), got "both"');
    const help = cli('train', '--help');
    expect(help.out).toContain('--train-text-encoder [all|1|2]');
  }, 120_000);

  it('the CLI: train --train-text-encoder on an SDXL folder, and generate --lora applies all of its modules', () => {
    const cli = cliIn(join(work, 'home'));
    const out = join(work, 'cli-te.safetensors');
    const trained = cli('train', '--model', modelDir, '--images', sampleDataset, '--out', out, '--steps', '2', '--train-text-encoder', '--te-lr', '1e-3');
    expect(trained.code, trained.err).toBe(0);
    const file = readLoraFile(out);
    expect(['lora_unet', 'lora_te1', 'lora_te2'].map((p) => file.modules.filter((m) => m.prefix === p).length)).toEqual([176, layers * 6, layers * 6]);
    expect(file.metadata.ss_text_encoder_lr).toBe('0.001');

    const png = join(work, 'cli-te.png');
    const generated = cli('generate', '--model', modelDir, '--prompt', 'a red circle', '--lora', `${out}:0.8`, '--steps', '2', '--provider', 'cpu', '--out', png);
    expect(generated.code, generated.err).toBe(0);
    expect(generated.out).toContain(`${176 + 2 * layers * 6} module(s)`);
    expect(generated.err).not.toContain('NOT applied');
    expect(existsSync(png)).toBe(true);
  }, 120_000);
});
