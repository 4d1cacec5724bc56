// Training settings: one typed object that the CLI, the studio worker and the tests share, with
// defaults sized for the embedded tiny model (64 px, a minute or two on a 2-core CPU) and a
// validation that names the setting and the accepted range.
//
//   TrainSettings (all fields), TrainSettingsInput (what callers give: images + out, the rest optional)
//   resolveTrainSettings(input): TrainSettings     defaults filled in, validated, paths absolute
//   nativeResolutionOf(model): number | undefined  the model's own training size (default resolution)
//   DEFAULT_TRAIN_SETTINGS
//   settingsFingerprint(settings): string         what a checkpoint must match to be resumed
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { openModelFolder } from '../io/model-folder';
import { openSingleFile } from '../io/single-file';
import type { LoraTargetSet } from '../lora/targets';
import type { ProviderName } from '../runtime/providers';
import type { LrScheduleName } from './lr-schedule';
import type { TextEncoderChoice } from './text-encoder-step-graph';

export type LoraFileFormat = 'kohya' | 'diffusers';
export type SavePrecision = 'fp16' | 'fp32';

export interface TrainSettings {
  /** Dataset folder (images, caption sidecars, kohya `N_name` repeat folders). */
  images: string;
  /** The LoRA file to write (.safetensors). */
  out: string;
  /** Model folder (diffusers layout) or single .safetensors file; undefined = the embedded tiny model. */
  model: string | undefined;
  /** Where the embedded model and downloads live. */
  modelsDir: string;
  /** Latent and text-embedding cache. */
  cacheDir: string;
  rank: number;
  alpha: number;
  targets: LoraTargetSet;
  steps: number;
  lr: number;
  lrSchedule: LrScheduleName;
  warmupSteps: number;
  batch: number;
  gradAccum: number;
  /** Global gradient-norm clipping; 0 = off. */
  maxGradNorm: number;
  weightDecay: number;
  /**
   * Training resolution (bucket area = resolution^2). Default: the model's native size (unet
   * sample_size x the VAE's downscale: 512 for SD 1.5, 768 for SD 2.x-768, 1024 for SDXL; 64 for
   * the embedded tiny model), see nativeResolutionOf.
   */
  resolution: number;
  /** Bucket side granularity (64 for SD; the tiny model at 64 px has the one 64x64 bucket). */
  bucketStep: number;
  /** min-SNR-gamma weighting; 0 = off. */
  minSnrGamma: number;
  noiseOffset: number;
  seed: number;
  /** Checkpoint every N optimizer steps; 0 = only at the end or on stop. */
  saveEvery: number;
  /** Checkpoint to continue from. */
  resume: string | undefined;
  /** Checkpoint path; default `<out without .safetensors>.checkpoint.safetensors`. */
  checkpoint: string;
  format: LoraFileFormat;
  precision: SavePrecision;
  /** Word put in front of every caption (and used when an image has no caption). */
  trigger: string | undefined;
  /**
   * Also train a LoRA on the CLIP text encoder (SD 1.x/2.x; kohya 'lora_te_*' modules on the
   * attention and MLP projections; SDXL: 'lora_te1_*' and 'lora_te2_*', see textEncoders). The
   * trained encoders then run every step (their output changes); a frozen one's comes from the cache.
   */
  trainTextEncoder: boolean;
  /**
   * Which text encoders trainTextEncoder trains: 'all' (SD 1.x/2.x: its one; SDXL: both), or only
   * SDXL's first ('1', text_encoder) or second ('2', text_encoder_2); the other one then conditions
   * the UNet as in UNet-only training, frozen, from the text cache (its weights are not loaded for
   * training). Anything but 'all' needs trainTextEncoder on.
   */
  textEncoders: TextEncoderChoice;
  /**
   * Recompute each UNet ResNet and transformer block's activations in the backward pass instead of
   * keeping them (less GPU memory, about 10% slower). The same losses and LoRA, so it is not part
   * of the settings fingerprint: a run may be resumed with it switched either way.
   */
  gradientCheckpointing: boolean;
  /** Learning rate of the text encoder LoRA (sd-scripts' text_encoder_lr); undefined = lr. */
  textEncoderLr: number | undefined;
  /** A1111 clip skip: 1 = last layer, 2 = penultimate (then the final LayerNorm). */
  clipSkip: number;
  device: ProviderName;
  /**
   * Compute precision of the frozen UNet: 'auto' = float32 on the CPU, float16 on GPU providers
   * (with float32 LoRA master weights, float32 optimizer state and dynamic loss scaling).
   */
  computePrecision: 'auto' | 'float32' | 'float16';
  /**
   * Optimizer steps per session run (multi-step-graph.ts): the LoRA weights and AdamW moments go to
   * the device and back once per run instead of once per step, which is faster on GPUs and needs
   * more memory. The same losses and LoRA as 1, so it is not part of the settings fingerprint.
   * UNet-only training without gradient accumulation. Checkpoints, previews and stop() fall between
   * runs; a run ends early at those steps, at the last step and at a bucket change (it still computes N steps).
   */
  stepsPerRun: number;
  /** Event `progress` every N steps (the CLI's bar); 1 = every step. */
  logEvery: number;
  /** Title in the file's modelspec metadata; default the output file name. */
  title: string | undefined;
}

export type TrainSettingsInput = Partial<TrainSettings> & Pick<TrainSettings, 'images' | 'out'>;

/** $LORA_STUDIO_HOME or ~/.cache/lora-studio. */
export function loraStudioHome(): string {
  return process.env.LORA_STUDIO_HOME ? resolve(process.env.LORA_STUDIO_HOME) : join(homedir(), '.cache', 'lora-studio');
}

export const DEFAULT_TRAIN_SETTINGS = {
  rank: 4,
  alpha: 4,
  targets: 'attention',
  steps: 500,
  lr: 1e-3,
  lrSchedule: 'constant',
  warmupSteps: 0,
  batch: 1,
  gradAccum: 1,
  maxGradNorm: 1,
  weightDecay: 1e-2,
  resolution: 64,
  bucketStep: 64,
  minSnrGamma: 0,
  noiseOffset: 0,
  seed: 42,
  saveEvery: 0,
  format: 'kohya',
  precision: 'fp16',
  clipSkip: 1,
  trainTextEncoder: false,
  textEncoders: 'all',
  gradientCheckpointing: false,
  device: 'cpu',
  computePrecision: 'auto',
  stepsPerRun: 1,
  logEvery: 1,
} as const satisfies Partial<TrainSettings>;

const LR_SCHEDULES: readonly LrScheduleName[] = ['constant', 'constant_with_warmup', 'cosine', 'linear'];
const TARGET_SETS: readonly LoraTargetSet[] = ['attention', 'transformer', 'transformer+conv'];
const DEVICES: readonly ProviderName[] = ['cpu', 'cuda', 'dml', 'webgpu'];
/** The graph holds this many chained steps: its size and build time grow with it. */
export const MAX_STEPS_PER_RUN = 64;
const TEXT_ENCODER_CHOICES: readonly TextEncoderChoice[] = ['all', '1', '2'];

export class TrainSettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainSettingsError';
  }
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new TrainSettingsError(`${name} must be a whole number from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}, got ${value}`);
}

function checkNumber(name: string, value: number, min: number, max: number, minExclusive = false): void {
  if (!Number.isFinite(value) || (minExclusive ? value <= min : value < min) || value > max)
    throw new TrainSettingsError(`${name} must be a number ${minExclusive ? 'above' : 'from'} ${min}${Number.isFinite(max) ? ` to ${max}` : ''}, got ${value}`);
}

function checkChoice<T extends string>(name: string, value: T, choices: readonly T[]): void {
  if (!choices.includes(value)) throw new TrainSettingsError(`${name} must be one of ${choices.join(', ')}, got "${value}"`);
}

/**
 * The size a model was trained at: unet sample_size x 2^(VAE levels - 1), read from the model's
 * configs (a diffusers folder, a single .safetensors file, or a URL whose file is already in
 * `modelsDir`). undefined when it cannot be known without downloading or the model cannot be opened
 * (the trainer then reports the real problem).
 */
export function nativeResolutionOf(model: string, modelsDir?: string): number | undefined {
  let path = model;
  if (/^https?:\/\//.test(model)) {
    if (!modelsDir) return undefined;
    path = join(modelsDir, basename(new URL(model).pathname) || 'model.safetensors');
  }
  if (!existsSync(path)) return undefined;
  try {
    const opened = statSync(path).isDirectory() ? openModelFolder(path) : openSingleFile(path);
    const sampleSize = opened.unet.config.sample_size;
    if (!sampleSize) return opened.kind === 'sdxl' ? 1024 : opened.kind === 'sd2' ? 768 : 512;
    return sampleSize * 2 ** (opened.vae.config.block_out_channels.length - 1);
  } catch {
    return undefined;
  }
}

/** Defaults filled in and every value checked; paths made absolute. Throws TrainSettingsError. */
export function resolveTrainSettings(input: TrainSettingsInput): TrainSettings {
  if (!input.images) throw new TrainSettingsError('images (the dataset folder) is required');
  if (!input.out) throw new TrainSettingsError('out (the LoRA file to write) is required');
  if (!input.out.toLowerCase().endsWith('.safetensors')) throw new TrainSettingsError(`out must end in .safetensors, got ${input.out}`);
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as TrainSettingsInput;
  const home = loraStudioHome();
  const out = resolve(defined.out);
  const s: TrainSettings = {
    ...DEFAULT_TRAIN_SETTINGS,
    model: undefined,
    modelsDir: join(home, 'models'),
    cacheDir: join(home, 'cache'),
    resume: undefined,
    trigger: undefined,
    title: undefined,
    textEncoderLr: undefined,
    checkpoint: `${out.slice(0, -'.safetensors'.length)}.checkpoint.safetensors`,
    ...defined,
    images: resolve(defined.images),
    out,
  };
  s.modelsDir = resolve(s.modelsDir);
  s.cacheDir = resolve(s.cacheDir);
  s.checkpoint = resolve(s.checkpoint);
  if (s.resume) s.resume = resolve(s.resume);
  if (s.model && !/^https?:\/\//.test(s.model)) s.model = resolve(s.model);
  // No resolution given: train at the model's own size (1024 px buckets for SDXL, 512 for SD 1.5).
  // A URL not downloaded yet is a real checkpoint of unknown kind: SD 1.5's 512 then.
  if (defined.resolution === undefined && s.model) s.resolution = nativeResolutionOf(s.model, s.modelsDir) ?? (/^https?:\/\//.test(s.model) ? 512 : s.resolution);
  if (s.checkpoint === s.out) throw new TrainSettingsError(`checkpoint and out must be different files, both are ${s.out}`);

  checkInteger('rank', s.rank, 1, 1024);
  checkNumber('alpha', s.alpha, 0, Infinity, true);
  checkChoice('targets', s.targets, TARGET_SETS);
  checkInteger('steps', s.steps, 1);
  checkNumber('lr', s.lr, 0, 10, true);
  checkChoice('lrSchedule', s.lrSchedule, LR_SCHEDULES);
  checkInteger('warmupSteps', s.warmupSteps, 0, s.steps);
  checkInteger('batch', s.batch, 1, 256);
  checkInteger('gradAccum', s.gradAccum, 1, 1024);
  checkNumber('maxGradNorm', s.maxGradNorm, 0, Infinity);
  checkNumber('weightDecay', s.weightDecay, 0, 10);
  checkInteger('resolution', s.resolution, 8, 8192);
  checkInteger('bucketStep', s.bucketStep, 8, 1024);
  if (s.resolution % 8 !== 0) throw new TrainSettingsError(`resolution must be a multiple of 8 (the VAE's downsampling), got ${s.resolution}`);
  if (s.bucketStep % 8 !== 0) throw new TrainSettingsError(`bucketStep must be a multiple of 8, got ${s.bucketStep}`);
  if (s.resolution < s.bucketStep) throw new TrainSettingsError(`resolution ${s.resolution} must be at least the bucket step ${s.bucketStep}`);
  checkNumber('minSnrGamma', s.minSnrGamma, 0, 1000);
  checkNumber('noiseOffset', s.noiseOffset, 0, 1);
  checkInteger('seed', s.seed, 0);
  checkInteger('saveEvery', s.saveEvery, 0);
  checkChoice('format', s.format, ['kohya', 'diffusers']);
  checkChoice('precision', s.precision, ['fp16', 'fp32']);
  checkInteger('clipSkip', s.clipSkip, 1, 12);
  if (typeof s.trainTextEncoder !== 'boolean') throw new TrainSettingsError(`trainTextEncoder must be true or false, got ${JSON.stringify(s.trainTextEncoder)}`);
  if (!TEXT_ENCODER_CHOICES.includes(s.textEncoders))
    throw new TrainSettingsError(`textEncoders must be "all", "1" or "2" (which text encoders to train), got ${JSON.stringify(s.textEncoders)}`);
  if (s.textEncoders !== 'all' && !s.trainTextEncoder)
    throw new TrainSettingsError(`textEncoders "${s.textEncoders}" picks the text encoder to train, but trainTextEncoder is off; turn it on (CLI: --train-text-encoder ${s.textEncoders})`);
  if (typeof s.gradientCheckpointing !== 'boolean')
    throw new TrainSettingsError(`gradientCheckpointing must be true or false, got ${JSON.stringify(s.gradientCheckpointing)}`);
  if (s.textEncoderLr !== undefined) checkNumber('textEncoderLr', s.textEncoderLr, 0, 10, true);
  checkChoice('device', s.device, DEVICES);
  checkChoice('computePrecision', s.computePrecision, ['auto', 'float32', 'float16']);
  checkInteger('logEvery', s.logEvery, 1);
  checkInteger('stepsPerRun', s.stepsPerRun, 1, MAX_STEPS_PER_RUN);
  // The multi-step graph chains the fused UNet-only step; the other training graphs have no K-step form yet.
  if (s.stepsPerRun > 1 && s.gradAccum > 1)
    throw new TrainSettingsError(`stepsPerRun (--steps-per-run) above 1 does not work with gradient accumulation (gradAccum ${s.gradAccum}); use a larger batch, or stepsPerRun 1`);
  if (s.stepsPerRun > 1 && s.trainTextEncoder)
    throw new TrainSettingsError(`stepsPerRun (--steps-per-run) above 1 does not work with text encoder training (trainTextEncoder) yet; use stepsPerRun 1`);
  if (s.trigger !== undefined && s.trigger.trim() === '') s.trigger = undefined;
  return s;
}

/**
 * The settings a resumed run must share with the run that wrote the checkpoint for the loss
 * trajectory to continue unchanged (not: steps to go, save cadence, output paths, device, gradient
 * checkpointing and steps per run, which change memory and speed only).
 */
export function trajectorySettings(s: TrainSettings): Record<string, unknown> {
  return {
    rank: s.rank,
    alpha: s.alpha,
    targets: s.targets,
    lr: s.lr,
    lrSchedule: s.lrSchedule,
    warmupSteps: s.warmupSteps,
    // decaying schedules depend on the total; constant ones may be extended on resume
    steps: s.lrSchedule === 'cosine' || s.lrSchedule === 'linear' ? s.steps : null,
    batch: s.batch,
    gradAccum: s.gradAccum,
    maxGradNorm: s.maxGradNorm,
    weightDecay: s.weightDecay,
    resolution: s.resolution,
    bucketStep: s.bucketStep,
    minSnrGamma: s.minSnrGamma,
    noiseOffset: s.noiseOffset,
    seed: s.seed,
    trigger: s.trigger ?? null,
    clipSkip: s.clipSkip,
    // only when on, so UNet-only runs keep their fingerprint (and resume their old checkpoints quietly);
    // textEncoders only when one encoder is picked, so runs of all encoders keep theirs too
    ...(s.trainTextEncoder
      ? { trainTextEncoder: true, ...(s.textEncoders !== 'all' ? { textEncoders: s.textEncoders } : {}), textEncoderLr: s.textEncoderLr ?? s.lr }
      : {}),
  };
}

export function settingsFingerprint(s: TrainSettings): string {
  return createHash('sha256').update(JSON.stringify(trajectorySettings(s))).digest('hex').slice(0, 16);
}
