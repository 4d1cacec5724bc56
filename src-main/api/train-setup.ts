// From the studio's TrainSettingsView to the engine's TrainSettings: defaults for what the page
// left out, the presets, and the time / memory estimate shown before a run.
import type { OpenedModel } from '../engine/io/model-folder';
import { estimateTrainingMemory } from '../engine/train/memory-estimate';
import { estimatePreviewMemory, type PreviewModelSize } from '../engine/sample/preview-memory';
import { trainedTextEncoders } from '../engine/train/text-encoder-step-graph';
import { DEFAULT_TRAIN_SETTINGS, MAX_STEPS_PER_RUN, resolveTrainSettings, TrainSettingsError, type TrainSettings } from '../engine/train/settings';
import type { ExecutionProvider, TrainEstimate, TrainPreset, TrainSettingsView } from './contract';
import { ApiError } from './errors';
import { EMBEDDED_MODEL_ID } from './views';

const d = DEFAULT_TRAIN_SETTINGS;

/** Every field of a TrainSettingsView, for what the caller left out (the embedded model's scale). */
export function defaultSettingsView(): TrainSettingsView {
  return {
    images: '',
    model: EMBEDDED_MODEL_ID,
    out: '',
    rank: d.rank,
    alpha: d.alpha,
    steps: d.steps,
    lr: d.lr,
    batch: d.batch,
    resolution: d.resolution,
    seed: d.seed,
    device: d.device,
    saveEvery: d.saveEvery,
    targets: d.targets,
    lrSchedule: d.lrSchedule,
    warmupSteps: d.warmupSteps,
    gradAccum: d.gradAccum,
    minSnrGamma: null,
    noiseOffset: d.noiseOffset,
    maxGradNorm: d.maxGradNorm,
    trigger: null,
    previews: [],
    previewEvery: 0,
  };
}

export function fillSettingsView(given: Partial<TrainSettingsView> | undefined): TrainSettingsView {
  if (typeof given !== 'object' || given === null) throw new ApiError('bad-request', 'Expected training settings.');
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  return { ...defaultSettingsView(), ...defined } as TrainSettingsView;
}

export const TRAIN_PRESETS: TrainPreset[] = [
  {
    id: 'tiny-quick-try',
    name: 'Tiny (embedded model, quick try)',
    description: 'The embedded 64 px test model on the CPU: a whole run in seconds, to see the studio work end to end. Its images are noise-like; it is not a real model.',
    settings: { model: EMBEDDED_MODEL_ID, resolution: 64, rank: 4, alpha: 4, steps: 200, lr: 1e-3, batch: 1, device: 'cpu', targets: 'attention', lrSchedule: 'constant', saveEvery: 50, previewEvery: 50 },
  },
  {
    id: 'style-sd15',
    name: 'Style LoRA (SD1.5)',
    description: 'A style or subject on Stable Diffusion 1.5 at 512 px: rank 16, 1e-4 with cosine decay, min-SNR 5; about 100 steps per training image.',
    settings: { resolution: 512, rank: 16, alpha: 8, steps: 2000, lr: 1e-4, batch: 2, targets: 'transformer', lrSchedule: 'cosine', warmupSteps: 100, minSnrGamma: 5, noiseOffset: 0.05, saveEvery: 250, previewEvery: 250, device: 'cuda' },
  },
  {
    id: 'sd2',
    name: 'SD2.x',
    description: 'Stable Diffusion 2.x (768 px, v-prediction for the 768 models): rank 16, 5e-5, cosine decay, min-SNR 5.',
    settings: { resolution: 768, rank: 16, alpha: 8, steps: 2000, lr: 5e-5, batch: 1, gradAccum: 2, targets: 'transformer', lrSchedule: 'cosine', warmupSteps: 100, minSnrGamma: 5, saveEvery: 250, previewEvery: 250, device: 'cuda' },
  },
  {
    id: 'style-sdxl',
    name: 'Style LoRA (SDXL)',
    description: 'Stable Diffusion XL at 1024 px: rank 16 on the attention layers, 1e-4 with cosine decay, min-SNR 5, batch 1, with gradient checkpointing so it fits 12-24 GB GPUs (predicted about 9 GiB; 15 GiB measured without it on an H100; somewhat slower per step).',
    settings: { resolution: 1024, rank: 16, alpha: 8, steps: 2000, lr: 1e-4, batch: 1, targets: 'attention', lrSchedule: 'cosine', warmupSteps: 100, minSnrGamma: 5, saveEvery: 250, previewEvery: 250, device: 'cuda', gradientCheckpointing: true },
  },
];

/** The engine's settings for a run (paths already checked by the PathGuard). */
export function engineSettings(view: TrainSettingsView, folders: { modelsDir: string; cacheDir: string }, resume?: string): TrainSettings {
  if (!view.images) throw new ApiError('bad-request', 'Choose the dataset folder (settings.images) first.');
  if (!view.out) throw new ApiError('bad-request', 'Choose where to write the LoRA (settings.out, a .safetensors file) first.');
  try {
    return resolveTrainSettings({
      images: view.images,
      out: view.out,
      model: !view.model || view.model === EMBEDDED_MODEL_ID ? undefined : view.model,
      modelsDir: folders.modelsDir,
      cacheDir: folders.cacheDir,
      rank: view.rank,
      alpha: view.alpha,
      targets: view.targets,
      steps: view.steps,
      lr: view.lr,
      lrSchedule: view.lrSchedule,
      warmupSteps: view.warmupSteps,
      batch: view.batch,
      gradAccum: view.gradAccum,
      maxGradNorm: view.maxGradNorm ?? 0,
      resolution: view.resolution,
      minSnrGamma: view.minSnrGamma ?? 0,
      noiseOffset: view.noiseOffset,
      seed: view.seed,
      saveEvery: view.saveEvery,
      trigger: view.trigger ?? undefined,
      trainTextEncoder: view.trainTextEncoder ?? false,
      // the choice stays in the view while the box is unticked; it means nothing then
      textEncoders: view.trainTextEncoder ? view.textEncoders : undefined,
      gradientCheckpointing: view.gradientCheckpointing ?? false,
      stepsPerRun: view.stepsPerRun ?? 1,
      device: view.device,
      resume,
      // Step events every step: the studio draws every loss point.
      logEvery: 1,
    });
  } catch (error) {
    if (error instanceof TrainSettingsError) throw new ApiError('bad-settings', `Training settings: ${error.message}.`);
    throw error;
  }
}

export function checkPreviews(view: TrainSettingsView): void {
  if (!Number.isInteger(view.previewEvery) || view.previewEvery < 0) throw new ApiError('bad-settings', `Training settings: previewEvery must be a whole number from 0 up, got ${view.previewEvery}.`);
  if (!Array.isArray(view.previews)) throw new ApiError('bad-settings', 'Training settings: previews must be a list of prompts.');
  view.previews.forEach((p, i) => {
    if (typeof p?.prompt !== 'string') throw new ApiError('bad-settings', `Training settings: preview ${i + 1} needs a prompt.`);
    if (!Number.isSafeInteger(p.seed) || p.seed < 0) throw new ApiError('bad-settings', `Training settings: preview ${i + 1}'s seed must be a whole number from 0 up, got ${p.seed}.`);
    if (!Number.isInteger(p.steps) || p.steps < 1 || p.steps > 150) throw new ApiError('bad-settings', `Training settings: preview ${i + 1}'s steps must be from 1 to 150, got ${p.steps}.`);
    if (!Number.isFinite(p.guidance)) throw new ApiError('bad-settings', `Training settings: preview ${i + 1}'s guidance must be a number.`);
  });
}

// ---------------------------------------------------------------- estimate
//
// Time: training FLOPs per image (torch's count for an SD1.5 UNet LoRA step at 512 px: 1.79
// TFLOP) scaled by pixels and by UNet size, divided by an assumed sustained rate per provider
// (an assumption until the benchmarks measure this engine; see `notes`); gradient checkpointing
// adds its measured slowdown. Memory: the engine's estimateTrainingMemory (weights + the tensors
// alive at once in the run's training step, times a calibrated factor, + a fixed part; calibrated
// on H100 peaks) for the graph the trainer builds, plus, with previews on a GPU, what the preview
// Generator holds beside it for the run (engine/sample/preview-memory.ts).

const SD15_STEP_TFLOP_PER_IMAGE_512 = 1.79;
const SD15_UNET_PARAMS = 859.5e6;
/**
 * Sustained TFLOP/s of the engine's training step per provider at batch 1 and batch 4, measured
 * on an H100 (BENCHMARKS.md, SD1.5 512 px, 2026-11-23: CUDA 10.1 it/s at batch 1 and 33.2
 * images/s at batch 4; WebGPU 3.0 it/s at batch 1, batch 4 not measured); between them linear in
 * the batch, above batch 4 the batch-4 rate. An assumption for DirectML and big models on the CPU.
 */
const MEASURED_TFLOPS: Record<ExecutionProvider, { batch1: number; batch4: number } | null> = {
  cuda: { batch1: 18.1, batch4: 59.4 },
  webgpu: { batch1: 5.4, batch4: 5.4 },
  dml: null,
  cpu: { batch1: 0.05, batch4: 0.05 },
};
const sustainedTflops = (device: ExecutionProvider, batch: number): number | null => {
  const rate = MEASURED_TFLOPS[device];
  if (!rate) return null;
  const t = Math.min(1, Math.max(0, (batch - 1) / 3));
  return rate.batch1 + t * (rate.batch4 - rate.batch1);
};
/** Measured: the embedded model trains about 70 steps/s at 64 px, batch 1, on a 2-core CPU (lora-studio train, 2026-11). */
const TINY_CPU_SECONDS_PER_SAMPLE = 1 / 70;
/** Gradient checkpointing recomputes the UNet blocks' forward: measured 13% fewer images/s (H100, SD1.5 512 px, batch 4: 28.7 vs 33.2). */
const CHECKPOINTING_TIME_FACTOR = 33.2 / 28.7;

/** Parameters of a component, from its weight file's shapes. */
const countParams = (weights: OpenedModel['unet']['weights']): number =>
  [...weights.keys()].reduce((sum, key) => sum + weights.entry(key)!.shape.reduce((a, b) => a * b, 1), 0);

/** What the preview Generator puts on the GPU: the UNet and the text encoders (its VAE decodes on the CPU). */
const previewModelSize = (opened: OpenedModel, unetParams: number): PreviewModelSize => ({
  unetParams,
  textEncoderParams: [opened.textEncoder, ...(opened.textEncoder2 ? [opened.textEncoder2] : [])].map((te) => countParams(te.weights)),
});

export function estimateRun(
  view: TrainSettingsView,
  samplesPerEpoch: number,
  model: { opened: OpenedModel; embedded: boolean },
): TrainEstimate {
  const notes: string[] = [];
  const samplesPerStep = view.batch * view.gradAccum;
  const epochs = samplesPerEpoch > 0 ? (view.steps * samplesPerStep) / samplesPerEpoch : 0;
  if (samplesPerEpoch === 0) notes.push('The dataset has no trainable images yet.');

  const unet = model.opened.unet;
  const params = countParams(unet.weights);
  const pixels = (view.resolution / 512) ** 2;

  let seconds: number | null;
  if (model.embedded && view.device === 'cpu') {
    seconds = view.steps * samplesPerStep * TINY_CPU_SECONDS_PER_SAMPLE * (view.resolution / 64) ** 2;
    notes.push('Time: measured speed of the embedded model on a 2-core CPU (about 70 steps/s at 64 px), scaled by batch and pixels.');
  } else {
    const tflops = sustainedTflops(view.device, view.batch);
    const tflopPerStep = SD15_STEP_TFLOP_PER_IMAGE_512 * pixels * (params / SD15_UNET_PARAMS) * samplesPerStep;
    seconds = tflops === null ? null : (view.steps * tflopPerStep) / tflops;
    notes.push(
      `Time: ${tflopPerStep.toFixed(3)} TFLOP per step (SD1.5's 1.79 TFLOP per 512 px image, scaled by pixels, UNet size and batch) at ${tflops?.toFixed(1) ?? '?'} TFLOP/s on ${view.device} at batch ${view.batch} (measured on an H100 for CUDA and WebGPU; slower GPUs take longer; several steps per run, not counted here, were up to 30% faster on CUDA).`,
    );
  }
  const checkpointing = view.gradientCheckpointing ?? false;
  const stepsPerRun = view.stepsPerRun ?? 1;
  // The estimate builds a graph of this many steps: refuse what the run would refuse.
  if (!Number.isInteger(stepsPerRun) || stepsPerRun < 1 || stepsPerRun > MAX_STEPS_PER_RUN)
    throw new ApiError('bad-settings', `Training settings: stepsPerRun must be a whole number from 1 to ${MAX_STEPS_PER_RUN}, got ${stepsPerRun}.`);
  if (checkpointing && seconds !== null) {
    seconds *= CHECKPOINTING_TIME_FACTOR;
    notes.push('Time: about 16% longer with gradient checkpointing (the UNet blocks run their forward twice; 13% fewer images/s measured on an H100).');
  }
  const previewImages = view.previewEvery > 0 ? (Math.floor(view.steps / view.previewEvery) + 1) * view.previews.length : 0;
  if (previewImages > 0) notes.push(`Previews: ${previewImages} image(s) (${view.previews.length} prompt(s) at the start and every ${view.previewEvery} steps) add to the time.`);

  const latent = view.resolution / 2 ** (model.opened.vae.config.block_out_channels.length - 1);
  // The trainer runs the frozen UNet in float16 on GPUs and in float32 on the CPU.
  const dtype = view.device === 'cpu' ? 'float32' : 'float16';
  const memory = estimateTrainingMemory(
    unet.config,
    { batch: view.batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: [unet.config.cross_attention_dim].flat()[0]! },
    dtype,
    { target: view.device === 'cpu' ? 'cpu' : 'gpu', gradientCheckpointing: checkpointing, rank: view.rank, stepsPerRun },
  );
  const gib = (bytes: number): string => (bytes / 2 ** 30).toFixed(2);
  // Text encoder training runs the trained encoders in the step graph (SDXL with one of them
  // trained: the other's part comes from the text cache): their weights come on top; their
  // activations (77 tokens a prompt) are small beside the UNet's.
  const modelEncoders = [model.opened.textEncoder, ...(model.opened.textEncoder2 ? [model.opened.textEncoder2] : [])];
  const encoders = trainedTextEncoders(modelEncoders, view.trainTextEncoder ?? false, view.textEncoders);
  const encoderBytes = encoders.reduce((sum, te) => sum + countParams(te.weights), 0) * (dtype === 'float16' ? 2 : 4);
  if (encoderBytes > 0) notes.push(`Memory: + ${gib(encoderBytes)} GiB of text encoder weights (${dtype}), which text encoder training runs every step.`);
  // Previews on a GPU: the trainer's Generator holds its own sessions beside training's for the run.
  const previewsOnDevice = view.device !== 'cpu' && view.previewEvery > 0 && view.previews.length > 0;
  const preview = previewsOnDevice ? estimatePreviewMemory(previewModelSize(model.opened, params), view.resolution) : undefined;
  if (preview)
    notes.push(
      `Memory: + ${gib(preview.peakBytes)} GiB for previews at ${view.resolution} px, held beside training for the whole run (their own text encoder and UNet sessions, ` +
        `${gib(preview.weightsBytes)} GiB of it weights; their VAE decodes on the CPU). No previews, no such memory.`,
    );
  const peakMemoryGiB = (memory.peakBytes + encoderBytes + (preview?.peakBytes ?? 0)) / 2 ** 30;
  notes.push(
    `Memory: UNet weights ${gib(memory.weightsBytes)} GiB (${dtype}) + ${memory.factor} x ${gib(memory.liveBytes)} GiB of tensors alive at once in a step ` +
      `(batch ${view.batch}, ${view.resolution} px${checkpointing ? ', gradient checkpointing' : ''}${stepsPerRun > 1 ? `, ${stepsPerRun} steps per run` : ''})${view.device === 'cpu' ? '' : ', rounded up to whole GiB as the GPU arena grows,'} + ${gib(memory.fixedBytes)} GiB fixed ` +
      `(${view.device === 'cpu' ? 'the process itself' : 'CUDA context and runtime'}; the factor is calibrated on H100 peaks).`,
  );
  return { steps: view.steps, samplesPerEpoch, epochs, seconds, peakMemoryGiB, device: view.device, notes };
}
