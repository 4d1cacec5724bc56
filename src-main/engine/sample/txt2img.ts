// Text to image (Stable Diffusion 1.x / 2.x), as diffusers' StableDiffusionPipeline does it:
// tokenize prompt and negative prompt, encode both, start from seeded unit noise, and for each
// timestep run the UNet ONCE on the doubled batch [uncond x B, cond x B], apply classifier-free
// guidance, step the scheduler; then VAE-decode latents / scaling_factor.
// SDXL as StableDiffusionXLPipeline: two tokenizers and text encoders (penultimate states
// concatenated, text_encoder_2's pooled projection as text_embeds), time ids (H, W, 0, 0, H, W)
// from the image size, zero negative embeddings when NO negative prompt is given (diffusers'
// negative_prompt=None; an explicit "" is encoded) where model_index.json says
// force_zeros_for_empty_prompt, and the VAE in float32 where its config says force_upcast.
//
// A Generator holds the sessions (text encoder, UNet, VAE decoder), built once per shape and
// reused across calls; the trainer's previews use the same object with its live LoRA weights.
// LoRAs are applied WITHOUT merging through slots (sample/lora-slots.ts): weights and strength
// are session inputs, so changing them needs no rebuild. Merging into the weights is an option
// (`merge`), built once.
//
//   Generator.create(model, { provider?, dtype?, loras?: LoraSlotSpec[], merge?, modelName?, cacheDir? })
//   generator.generate(request, loras?): Promise<GeneratedImage[]>
//   generator.release()
//   encodePng(image): Promise<Uint8Array>             PNG with the A1111 "parameters" text chunk
//   formatParameters(settings): string / parseParameters(text)
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import type { OpenedModel } from '../io/model-folder';
import { mergeIntoModel, type WeightedLora } from '../lora/merge';
import { buildVaeDecoder, vaeComputeDtype } from '../models/autoencoder-kl';
import { buildTextConditioning } from '../models/text-conditioning';
import { buildUNet2DCondition } from '../models/unet-2d-condition';
import { Params, type AttentionImpl } from '../nn/params';
import type { ProviderName } from '../runtime/providers';
import { Session, type HostTensor } from '../runtime/session';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';
import { createScheduler, type Sampler } from './create-scheduler';
import { guideBatchedOutput } from './guidance';
import { addPngTextChunk } from './png-metadata';
import { Rng } from './rng';
import type { Scheduler } from './scheduler';
import { slotFeeds, slotHook, slotIndex, type LoraApplication, type LoraSlotSpec } from './lora-slots';

export type { LoraApplication, LoraSlotSpec } from './lora-slots';

export interface GeneratorOptions {
  provider?: ProviderName;
  /**
   * Compute dtype of the graphs. Default: float16 on a GPU provider (half the memory and time, as
   * diffusers pipelines run there; the VAE stays float32 where its config says force_upcast),
   * float32 on the CPU (the setting the conformance tolerances are for).
   */
  dtype?: 'float32' | 'float16';
  /**
   * Where the VAE decoder runs (default: `provider`). The trainer's previews decode on the CPU
   * (PREVIEW_GENERATOR_OPTIONS).
   */
  vaeProvider?: ProviderName;
  /** Attention form (default: fused on CUDA, composite elsewhere). */
  attention?: AttentionImpl;
  /** LoRA slots (shapes only): weights and strengths are given per generate() call. */
  loras?: readonly LoraSlotSpec[];
  /** LoRAs merged into the weights once, at build time (no per-call cost, no strength input). */
  merge?: readonly (WeightedLora & { hash?: string })[];
  /** Shown as "Model:" in the PNG parameters. */
  modelName?: string;
  /** Where to write the ONNX graphs (weights hard-linked, not copied); in memory when absent. */
  cacheDir?: string;
}

export interface GenerationRequest {
  prompt: string;
  negativePrompt?: string;
  /** Seed of the first image; image i of a batch uses seed + i (as A1111). Default 0. */
  seed?: number;
  /** Explicit seeds, one per image (overrides seed and batch). */
  seeds?: readonly number[];
  batch?: number;
  steps?: number;
  guidance?: number;
  width?: number;
  height?: number;
  sampler?: Sampler;
  /** A1111's clip skip: 1 = last layer (default), 2 = penultimate, ... */
  clipSkip?: number;
  /** Unit-Gaussian starting latents [B, 4, h, w] instead of seeded noise (conformance with a reference). */
  initialLatents?: Float32Array;
  /**
   * Token ids [77] for the prompt and the negative prompt instead of the tokenizer's (conformance);
   * SDXL also takes tokenizer_2's ids (prompt2 required, negative2 defaults to negative).
   */
  promptIds?: {
    prompt: ArrayLike<number | bigint>;
    negative: ArrayLike<number | bigint>;
    prompt2?: ArrayLike<number | bigint>;
    negative2?: ArrayLike<number | bigint>;
  };
  signal?: AbortSignal;
  onStep?: (step: { index: number; total: number }) => void | Promise<void>;
}

export interface GeneratedImage {
  seed: number;
  width: number;
  height: number;
  /** [H, W, 3] uint8 */
  rgb: Uint8Array;
  /** [3, H, W] decoder output in about [-1, 1] */
  image: Float32Array;
  /** Final latents [4, h, w] (not divided by the scaling factor). */
  latents: Float32Array;
  /** A1111 "parameters" text. */
  parameters: string;
}

/**
 * The trainer's previews, whose Generator is held beside the training session for the whole run:
 * the VAE decodes on the CPU. On a GPU its float32 decoder's arena (cuDNN's search workspace
 * included) took 8.2 GiB at 1024 px and 2.4 GiB at 512 px on an H100 (BENCHMARKS.md).
 */
export const PREVIEW_GENERATOR_OPTIONS = { vaeProvider: 'cpu' } as const satisfies Partial<GeneratorOptions>;

const DEFAULTS = { steps: 20, guidance: 7.5, width: 512, height: 512, sampler: 'Euler a' as Sampler, clipSkip: 1 };
/** StableDiffusionXLPipeline's defaults where they differ: guidance 5, 1024 px. */
const SDXL_DEFAULTS = { ...DEFAULTS, guidance: 5, width: 1024, height: 1024 };

const int64Ids = (ids: ArrayLike<number | bigint>, what: string): BigInt64Array => {
  if (ids.length !== 77) throw new Error(`${what}: ${ids.length} token ids, expected 77`);
  return BigInt64Array.from(Array.from(ids, (v) => BigInt(v)));
};

export class Generator {
  private readonly textSessions = new Map<number, Promise<Session>>();
  private readonly unetSessions = new Map<string, Promise<Session>>();
  private readonly vaeSessions = new Map<string, Promise<Session>>();
  private readonly tokenizer: ClipTokenizer;
  /** SDXL's second tokenizer (its own pad token). */
  private readonly tokenizer2: ClipTokenizer | undefined;
  private readonly slots: readonly LoraSlotSpec[];
  /** Sessions created so far (tests check that a strength change builds none). */
  sessionsBuilt = 0;

  private constructor(
    private readonly model: OpenedModel,
    private readonly options: GeneratorOptions,
  ) {
    if (!model.tokenizerDir) throw new Error('the model has no tokenizer folder (open single-file checkpoints with a tokenizerDir)');
    this.tokenizer = ClipTokenizer.fromFolder(model.tokenizerDir);
    if (model.kind === 'sdxl') {
      if (!model.textEncoder2) throw new Error('an SDXL model needs its second text encoder (text_encoder_2)');
      // A single-file SDXL opened with one tokenizer folder: both CLIP tokenizers share the vocabulary.
      this.tokenizer2 = ClipTokenizer.fromFolder(model.tokenizer2Dir ?? model.tokenizerDir);
    }
    this.slots = options.loras ?? [];
  }

  /** A generator over `model` (LoRAs in `options.merge` are merged into its weights first). */
  static async create(model: OpenedModel, options: GeneratorOptions = {}): Promise<Generator> {
    const merged = options.merge && options.merge.length > 0 ? mergeIntoModel(model, options.merge) : model;
    const generator = new Generator(merged, options);
    // Build the text encoder now so a wrong model or LoRA fails at creation, not at the first image.
    await generator.textSession(1);
    return generator;
  }

  get loraSlots(): readonly LoraSlotSpec[] {
    return this.slots;
  }

  /** The compute dtype on `provider` unless given: float16 on a GPU, float32 on the CPU. */
  private dtypeOn(provider = this.options.provider): 'float32' | 'float16' {
    return this.options.dtype ?? ((provider ?? 'cpu') === 'cpu' ? 'float32' : 'float16');
  }

  private get dtype(): 'float32' | 'float16' {
    return this.dtypeOn();
  }

  /**
   * Fused attention (com.microsoft MultiHeadAttention) on CUDA unless given: the composite form
   * keeps [heads, L, L] scores, which took 8.3 GiB of arena for SD1.5 at 768 px (H100,
   * BENCHMARKS.md). Elsewhere composite: WebGPU failed to build a float32 VAE Gemm of the fused
   * form (workgroup storage).
   */
  private attentionOn(provider = this.options.provider): AttentionImpl {
    return this.options.attention ?? (provider === 'cuda' ? 'fused' : 'composite');
  }

  private get attention(): AttentionImpl {
    return this.attentionOn();
  }

  private async open(graph: Graph, provider = this.options.provider): Promise<Session> {
    this.sessionsBuilt++;
    const sessionOptions = { provider };
    return Session.fromGraph(graph, sessionOptions, this.options.cacheDir);
  }

  private get sdxl(): boolean {
    return this.model.kind === 'sdxl';
  }

  /**
   * Text encoder on input_ids [2, 77] -> hidden states [2, 77, C] after clip skip. SDXL: also
   * input_ids_2 [2, 77]; hidden = both encoders' hidden_states[-(clipSkip + 1)] (no final norm)
   * concatenated [2, 77, C1 + C2], and pooled [2, P] = text_encoder_2's projected pooled state.
   */
  private textSession(clipSkip: number): Promise<Session> {
    let session = this.textSessions.get(clipSkip);
    if (!session) {
      const build = (): Promise<Session> => {
        const g = new Graph('text_encoder');
        const components: ('textEncoder' | 'textEncoder2')[] = this.sdxl ? ['textEncoder', 'textEncoder2'] : ['textEncoder'];
        // SDXL's clip skip counts from the penultimate layer: one fewer choice.
        const limit = Math.min(...components.map((c) => this.model[c]!.config.num_hidden_layers)) - (this.sdxl ? 1 : 0);
        if (!Number.isInteger(clipSkip) || clipSkip < 1 || clipSkip > limit) throw new Error(`clip skip ${clipSkip} is out of range (1 to ${limit})`);
        const inputIds = components.map((_, i) => g.input(i === 0 ? 'input_ids' : 'input_ids_2', 'int64', [2, this.tokenizer.maxLength])); // [2, 77] each
        // The conditioning training uses too (models/text-conditioning.ts); its hooks see canonical module names.
        const slots = components.map((component) => slotHook(component, this.slots));
        const encoders = { textEncoder: this.model.textEncoder, textEncoder2: this.sdxl ? this.model.textEncoder2 : undefined };
        const buildOptions = { dtype: this.dtype, attention: this.attention };
        const { hidden, textEmbeds } = buildTextConditioning(encoders, inputIds, { clipSkip, build: buildOptions, hooks: slots.map((s) => s.hook) });
        for (const slot of slots) slot.finish();
        g.output(op.cast(hidden, 'float32'), 'hidden'); // [2, 77, C]; SDXL [2, 77, C1 + C2]
        if (textEmbeds) g.output(op.cast(textEmbeds, 'float32'), 'pooled'); // SDXL: [2, P]
        return this.open(g);
      };
      session = Promise.resolve().then(build);
      this.textSessions.set(clipSkip, session);
      session.catch(() => this.textSessions.delete(clipSkip));
    }
    return session;
  }

  /** UNet on sample [N, 4, h, w], timestep [1], encoder states [N, 77, C] (SDXL: text_embeds [N, P], time_ids [N, 6]) -> [N, 4, h, w]. */
  private unetSession(n: number, h: number, w: number, contextLength: number, contextWidth: number, pooledWidth = 0): Promise<Session> {
    const key = `${n}x${h}x${w}`;
    let session = this.unetSessions.get(key);
    if (!session) {
      const build = (): Promise<Session> => {
        const { config, weights } = this.model.unet;
        const g = new Graph('unet');
        const sample = g.input('sample', 'float32', [n, config.in_channels, h, w]);
        const timestep = g.input('timestep', 'float32', [1]);
        const context = g.input('encoder_hidden_states', 'float32', [n, contextLength, contextWidth]);
        const addedCond = this.sdxl
          ? { textEmbeds: g.input('text_embeds', 'float32', [n, pooledWidth]), timeIds: g.input('time_ids', 'float32', [n, 6]) } // [N, P], [N, 6]
          : undefined;
        const { hook, finish } = slotHook('unet', this.slots);
        const source = weights.view((name) => name);
        const p = new Params(g, source, { dtype: this.dtype, attention: this.attention, hook });
        const out: Value = buildUNet2DCondition(p, config, { sample, timestep, encoderHiddenStates: context, addedCond }); // [N, 4, h, w]
        source.assertAllTaken();
        finish();
        g.output(op.cast(out, 'float32'), 'noise');
        return this.open(g);
      };
      session = Promise.resolve().then(build);
      this.unetSessions.set(key, session);
      session.catch(() => this.unetSessions.delete(key));
    }
    return session;
  }

  /** VAE decoder on latents [1, 4, h, w] (already divided by scaling_factor) -> image [1, 3, 8h, 8w]. */
  private vaeSession(h: number, w: number): Promise<Session> {
    const key = `${h}x${w}`;
    let session = this.vaeSessions.get(key);
    if (!session) {
      const build = (): Promise<Session> => {
        const { config, weights } = this.model.vae;
        const g = new Graph('vae_decoder');
        const latents = g.input('latents', 'float32', [1, config.latent_channels, h, w]);
        const provider = this.options.vaeProvider ?? this.options.provider;
        const dtype = vaeComputeDtype(config, this.dtypeOn(provider)); // float32 where force_upcast (SDXL's VAE overflows float16)
        const p = new Params(g, weights.view((name) => name), { dtype, attention: this.attentionOn(provider) });
        g.output(op.cast(buildVaeDecoder(p, config, op.cast(latents, dtype)), 'float32'), 'image');
        return this.open(g, provider);
      };
      session = Promise.resolve().then(build);
      this.vaeSessions.set(key, session);
      session.catch(() => this.vaeSessions.delete(key));
    }
    return session;
  }

  /** Images for `request`, one per seed; `loras` (default request-less: none) fill the slots. */
  async generate(request: GenerationRequest, loras: readonly LoraApplication[] = []): Promise<GeneratedImage[]> {
    const defaults = this.sdxl ? SDXL_DEFAULTS : DEFAULTS;
    const steps = request.steps ?? defaults.steps;
    const guidance = request.guidance ?? defaults.guidance;
    const width = request.width ?? defaults.width;
    const height = request.height ?? defaults.height;
    const sampler = request.sampler ?? defaults.sampler;
    const clipSkip = request.clipSkip ?? defaults.clipSkip;
    const negative = request.negativePrompt ?? '';
    const factor = 2 ** (this.model.vae.config.block_out_channels.length - 1);
    const unetFactor = 2 ** (this.model.unet.config.block_out_channels.length - 1) * factor;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width % unetFactor || height % unetFactor || width <= 0 || height <= 0)
      throw new Error(`image size ${width}x${height} must be positive multiples of ${unetFactor}`);
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`steps must be a positive integer, got ${steps}`);
    if (!Number.isFinite(guidance)) throw new Error(`guidance must be a number, got ${guidance}`);
    const seeds = request.seeds ? [...request.seeds] : Array.from({ length: request.batch ?? 1 }, (_, i) => (request.seed ?? 0) + i);
    const batch = seeds.length;
    if (batch < 1) throw new Error('nothing to generate: batch must be at least 1');
    for (const s of seeds) if (!Number.isSafeInteger(s) || s < 0) throw new Error(`seed ${s} must be a non-negative integer`);
    for (const a of loras) slotIndex(this.slots, a.slot);

    // 1. text: prompt and negative prompt in one text-encoder call (SDXL: both encoders in it).
    const toIds = (tokenizer: ClipTokenizer, text: string): BigInt64Array => BigInt64Array.from(tokenizer.encode(text), (v) => BigInt(v));
    const given = request.promptIds;
    const ids = given
      ? [int64Ids(given.prompt, 'promptIds.prompt'), int64Ids(given.negative, 'promptIds.negative')]
      : [toIds(this.tokenizer, request.prompt), toIds(this.tokenizer, negative)];
    const length = this.tokenizer.maxLength;
    const text = await this.textSession(clipSkip);
    const textInputs = new Set(text.inputNames);
    const textFeeds: Record<string, HostTensor> = {
      input_ids: { dtype: 'int64', shape: [2, length], data: BigInt64Array.from([...ids[0]!, ...ids[1]!]) },
      ...slotFeeds('textEncoder', this.slots, loras, textInputs),
    };
    if (this.sdxl) {
      if (given && !given.prompt2) throw new Error('promptIds: an SDXL model also needs prompt2 (tokenizer_2 ids)');
      const ids2 = given
        ? [int64Ids(given.prompt2!, 'promptIds.prompt2'), int64Ids(given.negative2 ?? given.negative, 'promptIds.negative2')]
        : [toIds(this.tokenizer2!, request.prompt), toIds(this.tokenizer2!, negative)];
      textFeeds.input_ids_2 = { dtype: 'int64', shape: [2, length], data: BigInt64Array.from([...ids2[0]!, ...ids2[1]!]) };
      Object.assign(textFeeds, slotFeeds('textEncoder2', this.slots, loras, textInputs));
    }
    const encoded = await text.run(textFeeds);
    const hidden = encoded.hidden!;
    const [, , contextWidth] = hidden.shape as [number, number, number];
    const rowSize = length * contextWidth;
    const guided = guidance > 1;
    // SDXL with force_zeros_for_empty_prompt: no negative prompt means all-zero negative embeddings
    // (diffusers zeroes for negative_prompt=None only; an explicit "" is encoded like any prompt).
    const zeroNegative = this.sdxl && guided && request.negativePrompt === undefined && this.model.modelIndex.force_zeros_for_empty_prompt === true;
    const condRow = (hidden.data as Float32Array).subarray(0, rowSize);
    const uncondRow = zeroNegative ? new Float32Array(rowSize) : (hidden.data as Float32Array).subarray(rowSize, 2 * rowSize);

    // 2. the UNet batch: [uncond x B, cond x B] with guidance (diffusers' order), [cond x B] without.
    const n = guided ? 2 * batch : batch;
    const context = new Float32Array(n * rowSize);
    for (let i = 0; i < n; i++) context.set(guided && i < batch ? uncondRow : condRow, i * rowSize);
    const h = height / factor;
    const w = width / factor;
    const channels = this.model.unet.config.in_channels;
    const perImage = channels * h * w;
    // SDXL: text_embeds (pooled) per row in the same order, and time ids (H, W, 0, 0, H, W) for every row.
    const addedFeeds: Record<string, HostTensor> = {};
    let pooledWidth = 0;
    if (this.sdxl) {
      const pooled = encoded.pooled!.data as Float32Array; // [2, P]
      pooledWidth = encoded.pooled!.shape[1]!;
      const condPooled = pooled.subarray(0, pooledWidth);
      const uncondPooled = zeroNegative ? new Float32Array(pooledWidth) : pooled.subarray(pooledWidth, 2 * pooledWidth);
      const textEmbeds = new Float32Array(n * pooledWidth); // [N, P]
      for (let i = 0; i < n; i++) textEmbeds.set(guided && i < batch ? uncondPooled : condPooled, i * pooledWidth);
      const timeIds = new Float32Array(n * 6); // [N, 6]: original size, crop top-left, target size
      for (let i = 0; i < n; i++) timeIds.set([height, width, 0, 0, height, width], i * 6);
      addedFeeds.text_embeds = { dtype: 'float32', shape: [n, pooledWidth], data: textEmbeds };
      addedFeeds.time_ids = { dtype: 'float32', shape: [n, 6], data: timeIds };
    }
    const unet = await this.unetSession(n, h, w, length, contextWidth, pooledWidth);
    const unetLoraFeeds = slotFeeds('unet', this.slots, loras, new Set(unet.inputNames));

    // 3. one scheduler and one random stream per image, so an image depends only on its seed.
    const schedulers: Scheduler[] = [];
    const rngs: Rng[] = [];
    let latents: Float32Array[] = [];
    if (request.initialLatents && request.initialLatents.length !== batch * perImage)
      throw new Error(`initialLatents has ${request.initialLatents.length} values, expected ${batch} x ${channels} x ${h} x ${w}`);
    for (let i = 0; i < batch; i++) {
      const scheduler = createScheduler(this.model.schedulerConfig, { sampler, source: 'model scheduler config' });
      scheduler.setTimesteps(steps);
      schedulers.push(scheduler);
      const rng = new Rng(seeds[i]!);
      rngs.push(rng);
      const noise = request.initialLatents ? request.initialLatents.slice(i * perImage, (i + 1) * perImage) : rng.normal(perImage);
      latents.push(noise.map((x) => x * scheduler.initNoiseSigma));
    }
    const timesteps = schedulers[0]!.timesteps;
    for (let index = 0; index < timesteps.length; index++) {
      request.signal?.throwIfAborted();
      const t = timesteps[index]!;
      const sample = new Float32Array(n * perImage);
      latents.forEach((x, i) => {
        const scaled = schedulers[i]!.scaleModelInput(x, t);
        sample.set(scaled, i * perImage);
        if (guided) sample.set(scaled, (batch + i) * perImage);
      });
      const result = await unet.run({
        sample: { dtype: 'float32', shape: [n, channels, h, w], data: sample },
        timestep: { dtype: 'float32', shape: [1], data: Float32Array.of(t) },
        encoder_hidden_states: { dtype: 'float32', shape: [n, length, contextWidth], data: context },
        ...addedFeeds,
        ...unetLoraFeeds,
      });
      const noise = result.noise!.data as Float32Array;
      const prediction = guided ? guideBatchedOutput(noise, guidance) : noise; // [B, 4, h, w]
      latents = latents.map((x, i) => schedulers[i]!.step(prediction.subarray(i * perImage, (i + 1) * perImage), t, x, rngs[i]));
      await request.onStep?.({ index, total: timesteps.length });
    }

    // 4. decode each image.
    const vae = await this.vaeSession(h, w);
    const scaling = this.model.vae.config.scaling_factor;
    const images: GeneratedImage[] = [];
    for (let i = 0; i < batch; i++) {
      const scaled = latents[i]!.map((x) => x / scaling);
      const decoded = (await vae.run({ latents: { dtype: 'float32', shape: [1, channels, h, w], data: scaled } })).image!;
      const image = decoded.data as Float32Array; // [1, 3, H, W]
      images.push({
        seed: seeds[i]!,
        width,
        height,
        rgb: toRgb8(image, width, height),
        image,
        latents: latents[i]!,
        parameters: formatParameters({
          prompt: request.prompt,
          negativePrompt: negative,
          steps,
          sampler,
          guidance,
          seed: seeds[i]!,
          width,
          height,
          clipSkip,
          modelName: this.options.modelName,
          loras: loras.map((a) => ({ name: a.name ?? this.slots[slotIndex(this.slots, a.slot)]!.name, strength: a.strength, hash: a.hash })),
          merged: (this.options.merge ?? []).map((m) => ({ name: m.lora.name, strength: m.strength, hash: m.hash })),
        }),
      });
    }
    return images;
  }

  async release(): Promise<void> {
    const all = [...this.textSessions.values(), ...this.unetSessions.values(), ...this.vaeSessions.values()];
    this.textSessions.clear();
    this.unetSessions.clear();
    this.vaeSessions.clear();
    for (const s of await Promise.allSettled(all)) if (s.status === 'fulfilled') await s.value.release();
  }
}

/** diffusers' postprocess: (x / 2 + 0.5) clamped to [0, 1], times 255, rounded; [3, H, W] -> [H, W, 3]. */
export function toRgb8(image: Float32Array, width: number, height: number): Uint8Array {
  const plane = width * height;
  const rgb = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < plane; i++) rgb[i * 3 + c] = Math.round(Math.min(1, Math.max(0, image[c * plane + i]! / 2 + 0.5)) * 255);
  return rgb;
}

export interface GenerationSettings {
  prompt: string;
  negativePrompt: string;
  steps: number;
  sampler: Sampler;
  guidance: number;
  seed: number;
  width: number;
  height: number;
  clipSkip: number;
  modelName?: string;
  /** LoRAs applied at a strength (written as <lora:name:strength> in the prompt, as A1111 expects). */
  loras: { name: string; strength: number; hash?: string }[];
  /** LoRAs merged into the weights. */
  merged: { name: string; strength: number; hash?: string }[];
}

const quote = (value: string): string => (/[,:"]/.test(value) ? JSON.stringify(value) : value);

/**
 * A1111's "parameters" text: the prompt (with <lora:name:strength> tags), "Negative prompt: ..."
 * when there is one, then "Key: value" pairs, so pasting it into A1111 reproduces the settings.
 */
export function formatParameters(s: GenerationSettings): string {
  const tags = s.loras.map((l) => ` <lora:${l.name}:${l.strength}>`).join('');
  const lines = [`${s.prompt}${tags}`];
  if (s.negativePrompt) lines.push(`Negative prompt: ${s.negativePrompt}`);
  const fields: [string, string | number][] = [
    ['Steps', s.steps],
    ['Sampler', s.sampler],
    ['CFG scale', s.guidance],
    ['Seed', s.seed],
    ['Size', `${s.width}x${s.height}`],
  ];
  if (s.modelName) fields.push(['Model', quote(s.modelName)]);
  if (s.clipSkip !== 1) fields.push(['Clip skip', s.clipSkip]);
  const hashed = [...s.loras, ...s.merged].filter((l) => l.hash);
  if (hashed.length > 0) fields.push(['Lora hashes', JSON.stringify(hashed.map((l) => `${l.name}: ${l.hash}`).join(', '))]);
  if (s.merged.length > 0) fields.push(['Lora merged', JSON.stringify(s.merged.map((l) => `${l.name}: ${l.strength}`).join(', '))]);
  fields.push(['Version', 'lora-studio']);
  lines.push(fields.map(([k, v]) => `${k}: ${v}`).join(', '));
  return lines.join('\n');
}

/** Reads A1111 "parameters" text back: prompt, negative prompt and the key/value fields. */
export function parseParameters(text: string): { prompt: string; negativePrompt: string; fields: Record<string, string> } {
  const lines = text.split('\n');
  const last = lines.pop() ?? '';
  const fields: Record<string, string> = {};
  for (const m of last.matchAll(/\s*([\w ]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g)) fields[m[1]!.trim()] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!.trim();
  const negativeAt = lines.findIndex((l) => l.startsWith('Negative prompt: '));
  const prompt = (negativeAt < 0 ? lines : lines.slice(0, negativeAt)).join('\n');
  const negativePrompt = negativeAt < 0 ? '' : [lines[negativeAt]!.slice('Negative prompt: '.length), ...lines.slice(negativeAt + 1)].join('\n');
  return { prompt, negativePrompt, fields };
}

/** The image as PNG bytes with its settings in the "parameters" text chunk. */
export async function encodePng(image: GeneratedImage): Promise<Uint8Array> {
  // Loaded here, not at the top: generating needs no image codec (the GPU benchmarks run without sharp).
  const { default: sharp } = await import('sharp');
  const png = await sharp(Buffer.from(image.rgb.buffer, image.rgb.byteOffset, image.rgb.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .png()
    .toBuffer();
  return addPngTextChunk(new Uint8Array(png.buffer, png.byteOffset, png.byteLength), 'parameters', image.parameters);
}
