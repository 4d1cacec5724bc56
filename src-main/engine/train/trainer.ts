// The LoRA training run, end to end: open the model and the dataset, cache latents and text
// embeddings, build one training-step graph per shape bucket, loop (sample noise and timesteps
// from the seeded Rng, run the step, keep the LoRA and AdamW state between runs, on the device
// where the binding can: train-state.ts), checkpoint, and write the LoRA file. The CLI, the
// studio worker and the tests all drive this one class.
//
//   const trainer = new Trainer(resolveTrainSettings({ images, out, ... }), { onPreview?, previewEvery? })
//   trainer.events.on('step', (e) => ...)        see events.ts
//   const result = await trainer.run()           resolves after the LoRA is written (or rejects)
//   trainer.stop()                               finish the current step (session run), checkpoint, write, resolve
//
// Reproducibility: every random number comes from sample/rng.ts. The LoRA init and then the
// per-step draws (per sample, in order: timestep, latent sample, noise, noise offset) use one Rng
// whose state goes into each checkpoint; the image order of epoch e comes from its own Rng seeded
// from (seed, e), so a resumed run sees the same batches. Same seed, same data: same losses.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { segmentOf } from '../autodiff/recompute';
import { bucketKey, Dataset, makeProblem, prependTrigger, tagFrequency, trainingCaption } from '../data';
import type { Bucket, DatasetItem } from '../data';
import type { Graph } from '../graph/graph';
import { downloadFile } from '../io/download';
import { openModelFolder, type OpenedModel } from '../io/model-folder';
import { openSingleFile } from '../io/single-file';
import { flatLayout, initLoraWeights, type FlatLoraLayout, type LoraModule } from '../lora/lora-network';
import { kohyaTrainingMetadata, loraModulesFromNetwork, toSdxlKohyaNames, writeLoraFile, type LoraModuleWeights } from '../lora/lora-file';
import { unetTargets } from '../lora/targets';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../models/embedded-tiny-model';
import { chooseProvider, Session, type DeviceTensor, type HostTensor, type SessionOptions } from '../runtime/session';
import { NoiseSchedule } from '../sample/noise-schedule';
import { Rng, type RngState } from '../sample/rng';
import { buildGradientGraph, buildUpdateGraph, type UpdateGraph } from './accumulation-graphs';
import { adamwStepValues, DEFAULT_ADAMW, type AdamWConfig } from './adamw';
import { checkResumable, loadCheckpoint, newCheckpointInfo, saveCheckpoint, type CheckpointState } from './checkpoint';
import type { PredictionType } from './diffusion-loss';
import { TrainEvents } from './events';
import { componentIdentity, FeatureCache, type CachedLatents, type CachedText } from './feature-cache';
import { learningRateAt } from './lr-schedule';
import { buildMultiStepTrainGraph } from './multi-step-graph';
import { settingsFingerprint, trajectorySettings, type TrainSettings } from './settings';
import { buildTextEncoderTrainStepGraph, trainedTextEncoders, type TextTrainBatchInputs } from './text-encoder-step-graph';
import { TrainState, type HostTrainState, type OpenStepSession, type StateNames, type StepSession } from './train-state';
import { addedCondShapeOf, buildTrainStepGraph, type TrainStepGraph, type TrainStepSpec } from './train-step-graph';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';

export interface TrainerHooks {
  /**
   * Called every `previewEvery` steps with the current LoRA (the arrays are not reused by the
   * trainer; do not modify them). Sampling previews is the caller's business; training waits for
   * the returned promise.
   */
  onPreview?: (preview: { step: number; lora: LoraModuleWeights[]; model: TrainingModel }) => void | Promise<void>;
  previewEvery?: number;
  /**
   * Opens the sessions of the fused step graphs (default Session.fromGraph). The trainer asks them
   * to keep the new state on the device; the unit tests wrap the real session to do that on the
   * CPU, whose binding returns everything to the host.
   */
  openStepSession?: OpenStepSession;
}

export interface TrainResult {
  out: string;
  checkpoint: string;
  /** Optimizer steps done in total (resumed steps included). */
  step: number;
  stopped: boolean;
  /** Loss of every step this run did (not the resumed ones). */
  losses: number[];
  seconds: number;
}

export interface TrainingModel {
  model: OpenedModel;
  /** For messages and metadata: the path, or the embedded model's name. */
  description: string;
}

/** The model a run trains on: the embedded tiny model, a diffusers folder, a .safetensors file, or a URL to one. */
export async function openTrainingModel(settings: Pick<TrainSettings, 'model' | 'modelsDir'>): Promise<TrainingModel> {
  if (settings.model === undefined) {
    const dir = ensureEmbeddedModel(settings.modelsDir);
    return { model: openModelFolder(dir), description: `embedded ${EMBEDDED_MODEL_NAME}` };
  }
  let path = settings.model;
  if (/^https?:\/\//.test(path)) {
    const name = basename(new URL(path).pathname) || 'model.safetensors';
    const dest = join(settings.modelsDir, name);
    if (!existsSync(dest)) {
      mkdirSync(settings.modelsDir, { recursive: true });
      await downloadFile(path, dest);
    }
    path = dest;
  }
  if (!existsSync(path)) throw new Error(`${path}: the model does not exist (give a diffusers model folder or a .safetensors checkpoint)`);
  if (statSync(path).isDirectory()) return { model: openModelFolder(path), description: path };
  const model = openSingleFile(path);
  if (!model.tokenizerDir) throw new Error(`${path}: a single-file checkpoint has no CLIP tokenizer; use the model's diffusers folder instead`);
  return { model, description: path };
}

const KIND_NAMES = { sd1: 'SD 1.x', sd2: 'SD 2.x', sdxl: 'SDXL' } as const;

/** Seed of epoch e's image order: a fixed function of the run seed. */
function epochSeed(seed: number, epoch: number): number {
  return Number((BigInt(seed) * 1_000_003n + BigInt(epoch) * 7_919n + 1n) % 2n ** 53n);
}

/** Seed of the text encoder LoRA's init: a fixed function of the run seed, apart from the epochs'. */
function textEncoderInitSeed(seed: number): number {
  return Number((BigInt(seed) * 1_000_003n + 2n ** 52n + 17n) % 2n ** 53n);
}

interface Sample {
  item: DatasetItem;
  latents: CachedLatents;
  /** The cached text embedding (UNet-only training) or the caption's token ids [77] (text encoder training). */
  text: CachedText | undefined;
  tokenIds: Int32Array | undefined;
  /** SDXL text encoder training: tokenizer_2's ids [77]. */
  tokenIds2: Int32Array | undefined;
}

/** One bucket's graph, session and reusable feed buffers. */
interface BucketRunner {
  bucket: Bucket;
  session: StepSession;
  /** Optimizer steps per session run (settings.stepsPerRun); the buffers hold steps x batch rows, step k's from row k x batch. */
  steps: number;
  /** steps > 1: the input that says how many of the steps a run takes (multi-step-graph.ts). */
  stepsTaken?: string;
  /** Fused step (no accumulation; UNet only or with the text encoder) or gradient graph (accumulation). */
  fused: Pick<TrainStepGraph, 'state' | 'lossScaling'> | undefined;
  gradNames: Map<string, string> | undefined;
  inputs: Partial<TrainStepGraph['inputs'] & TextTrainBatchInputs> & Pick<TrainStepGraph['inputs'], 'latents' | 'noise' | 'timesteps'>;
  feeds: Record<string, HostTensor>;
  latents: Float32Array;
  noise: Float32Array;
  timesteps: BigInt64Array;
  context: Float32Array;
  /** Text encoder training: token ids [B, 77]; empty otherwise. */
  inputIds: BigInt64Array;
  /** SDXL text encoder training: tokenizer_2's token ids [B, 77]; empty otherwise. */
  inputIds2: BigInt64Array;
  /** SDXL: pooled text embeddings [B, P] (UNet-only training; empty otherwise) and time ids [B, 6]; empty otherwise. */
  textEmbeds: Float32Array;
  timeIds: Float32Array;
}

const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
/** The blocks a built graph recomputes in its backward (gradient checkpointing's segments). */
const recomputedBlocks = (graph: Graph): number => new Set(graph.nodes.map(segmentOf).filter((segment) => segment?.purpose === 'checkpoint')).size;

export class Trainer {
  readonly events = new TrainEvents();
  private stopRequested = false;

  constructor(
    readonly settings: TrainSettings,
    private readonly hooks: TrainerHooks = {},
  ) {}

  /** Ends the run after the current step (with stepsPerRun > 1: the current session run's steps), with a checkpoint and the LoRA written. */
  stop(): void {
    this.stopRequested = true;
  }

  async run(): Promise<TrainResult> {
    try {
      return await this.train();
    } catch (error) {
      this.events.emit('error', { message: error instanceof Error ? error.message : String(error) });
      throw error;
    }
  }

  private async train(): Promise<TrainResult> {
    const s = this.settings;
    const started = Date.now();
    const startedAtSeconds = Math.floor(started / 1000);
    const events = this.events;

    // --- model
    events.emit('phase', { phase: 'model', message: s.model ? `opening ${s.model}` : 'preparing the embedded tiny model' });
    const { model, description } = await openTrainingModel(s);
    const prediction = model.schedulerConfig.prediction_type;
    if (prediction !== 'epsilon' && prediction !== 'v_prediction')
      throw new Error(`${description}: scheduler prediction_type "${prediction}" cannot be trained (epsilon or v_prediction)`);
    const schedule = NoiseSchedule.fromConfig(model.schedulerConfig);
    const timestepCount = schedule.alphasCumprod.length;
    const scalingFactor = model.vae.config.scaling_factor;
    // The frozen model the LoRA is trained against: the UNet, and the text encoders it trains too
    // (all of them, or SDXL's first or second only: the other one then conditions the UNet frozen).
    const modelTextEncoders = model.kind === 'sdxl' && model.textEncoder2 ? [model.textEncoder, model.textEncoder2] : [model.textEncoder];
    if (s.trainTextEncoder && s.textEncoders === '2' && modelTextEncoders.length === 1)
      throw new Error(
        `${description}: textEncoders "2" (--train-text-encoder 2) trains SDXL's second text encoder, but this ${KIND_NAMES[model.kind]} model has only one; train it with --train-text-encoder (all)`,
      );
    const trainedEncoders = trainedTextEncoders(modelTextEncoders, s.trainTextEncoder, s.textEncoders);
    const trainedTargets = `${s.targets}${!s.trainTextEncoder ? '' : s.textEncoders === 'all' ? ' + text encoder' : ` + text encoder ${s.textEncoders}`}`;
    const unetComponentIdentity = componentIdentity(model.unet.weights, model.unet.config);
    const unetIdentity = unetComponentIdentity + trainedEncoders.map((te, i) => `${i === 0 ? '+te:' : '+'}${componentIdentity(te.weights, te.config)}`).join('');
    // cpu needs no probe (probing the others loads their libraries and logs their failures)
    const { provider, note } = s.device === 'cpu' ? { provider: 'cpu' as const, note: undefined } : await chooseProvider(s.device);
    if (note) events.emit('phase', { phase: 'model', message: note });
    // float16 frozen UNet on GPUs, float32 on the CPU (which has few float16 kernels). The LoRA
    // master weights and the optimizer state stay float32 either way. Gradient accumulation runs
    // the float32 graphs (its gradient graph has no loss scaling).
    const computeDtype: 'float32' | 'float16' =
      s.gradAccum > 1 ? 'float32' : s.computePrecision === 'auto' ? (provider === 'cpu' ? 'float32' : 'float16') : s.computePrecision;

    // A checkpoint from another model fails here, before any slow work.
    const checkpoint = s.resume ? loadCheckpoint(s.resume) : undefined;
    if (checkpoint && checkpoint.info.modelIdentity !== unetIdentity)
      throw new Error(
        checkpoint.info.modelIdentity.split('+te:')[0] === unetComponentIdentity
          ? `${s.resume}: this checkpoint trained ${checkpoint.info.lora.targets}, this run trains ${trainedTargets}; resume with the text encoder setting it was trained with`
          : `${s.resume}: this checkpoint was trained on another model (${checkpoint.info.modelDescription}), not on ${description}`,
      );

    // --- dataset
    events.emit('phase', { phase: 'dataset', message: `reading ${s.images}` });
    const dataset = await Dataset.open(s.images, { resolution: s.resolution, step: s.bucketStep });
    for (const skipped of dataset.skipped)
      if (skipped.reason === 'not-an-image' || skipped.reason === 'unreadable-entry')
        events.emit('problem', makeProblem('unreadable', skipped.relativePath, skipped.reason === 'not-an-image' ? 'is not an image file we read; skipped' : 'cannot be read; skipped'));
    for (const item of dataset.items) for (const p of item.problems) if (p.severity !== 'info') events.emit('problem', p);
    const items = dataset.trainingItems();
    if (items.length === 0)
      throw new Error(`${dataset.folder}: no trainable images (${dataset.items.length} image file(s), ${dataset.items.length - items.length} unreadable or too small, ${dataset.skipped.length} other file(s))`);
    const captionOf = (item: DatasetItem): string => (s.trigger ? prependTrigger(trainingCaption(item), s.trigger) : trainingCaption(item));
    // Training the text encoder feeds it token ids every step: its output changes, so no text cache.
    if (s.trainTextEncoder && s.gradAccum > 1)
      throw new Error(`trainTextEncoder (--train-text-encoder) does not work with gradient accumulation yet (gradAccum ${s.gradAccum}); use a larger batch instead`);
    if (s.trainTextEncoder && !model.tokenizerDir) throw new Error(`${description}: the model has no tokenizer folder (vocab.json + merges.txt), which text encoder training needs`);
    const tokenizer = s.trainTextEncoder ? ClipTokenizer.fromFolder(model.tokenizerDir!) : undefined;
    // SDXL: text_encoder_2 reads tokenizer_2's ids (its own pad token, "!" in SDXL base), as the feature cache does.
    if (tokenizer && model.kind === 'sdxl' && !model.tokenizer2Dir)
      throw new Error(`${description}: the SDXL model has no tokenizer_2 folder (vocab.json + merges.txt), which text encoder training needs`);
    const tokenizer2 = tokenizer && model.kind === 'sdxl' ? ClipTokenizer.fromFolder(model.tokenizer2Dir!) : undefined;
    if (tokenizer && tokenizer2 && tokenizer2.maxLength !== tokenizer.maxLength)
      throw new Error(`${description}: tokenizer_2 encodes ${tokenizer2.maxLength} tokens, tokenizer ${tokenizer.maxLength}; both text encoders need the same length`);

    // SDXL with one encoder trained: the frozen one's part of the conditioning comes from the text cache.
    const cachedText = !tokenizer || trainedEncoders.length < modelTextEncoders.length;

    // --- cache
    events.emit('phase', { phase: 'cache', message: `${cachedText ? 'latents and text embeddings' : 'latents'} in ${s.cacheDir}` });
    const cache = new FeatureCache(s.cacheDir, model, { provider });
    // Model files for the training graphs: they reference the checkpoint's weights in place.
    const graphsDir = join(s.cacheDir, 'graphs');
    const samples: Sample[] = [];
    try {
      for (const item of items) {
        const latents = await cache.latents(item.path, item.bucket!, item.crop!);
        const text = cachedText ? await cache.text(captionOf(item), s.clipSkip) : undefined;
        const tokenIds = tokenizer?.encode(captionOf(item)); // [77]
        const tokenIds2 = tokenizer2?.encode(captionOf(item)); // [77], SDXL
        samples.push({ item, latents, text, tokenIds, tokenIds2 });
      }
    } finally {
      await cache.release();
    }
    events.emit('cache', { hits: cache.stats.hits, misses: cache.stats.misses, dir: s.cacheDir });

    // --- batches: per bucket, the samples with repeats; epoch e shuffles them with its own Rng
    const byBucket = new Map<string, number[]>();
    samples.forEach((sample, index) => {
      const key = bucketKey(sample.item.bucket!);
      if (!byBucket.has(key)) byBucket.set(key, []);
      for (let r = 0; r < sample.item.repeats; r++) byBucket.get(key)!.push(index);
    });
    const bucketKeys = [...byBucket.keys()].sort();
    const batchesPerEpoch = bucketKeys.reduce((n, k) => n + Math.ceil(byBucket.get(k)!.length / s.batch), 0);
    let planEpoch = -1;
    let plan: number[][] = [];
    const batchAt = (microBatch: number): { epoch: number; indices: number[] } => {
      const epoch = Math.floor(microBatch / batchesPerEpoch);
      if (epoch !== planEpoch) {
        const rng = new Rng(epochSeed(s.seed, epoch));
        plan = [];
        for (const key of bucketKeys) {
          const list = [...byBucket.get(key)!];
          for (let i = list.length - 1; i > 0; i--) {
            const j = rng.uniformInt(0, i + 1);
            [list[i], list[j]] = [list[j], list[i]];
          }
          for (let i = 0; i < list.length; i += s.batch) {
            const batch = list.slice(i, i + s.batch);
            for (let k = 0; batch.length < s.batch; k++) batch.push(list[k % list.length]); // fill the last batch from the start
            plan.push(batch);
          }
        }
        if (bucketKeys.length > 1) {
          for (let i = plan.length - 1; i > 0; i--) {
            const j = rng.uniformInt(0, i + 1);
            [plan[i], plan[j]] = [plan[j], plan[i]];
          }
        }
        planEpoch = epoch;
      }
      return { epoch, indices: plan[microBatch % batchesPerEpoch] };
    };

    // --- graphs, one per bucket
    events.emit('phase', { phase: 'graph', message: `building the training graph for ${bucketKeys.length} bucket(s)` });
    const adamw: AdamWConfig = { ...DEFAULT_ADAMW, weightDecay: s.weightDecay };
    const accumulate = s.gradAccum > 1;
    // Text encoder training: the context is the encoders' hidden states (SDXL: both, concatenated).
    const [tokens, contextDim] = tokenizer ? [tokenizer.maxLength, modelTextEncoders.reduce((n, te) => n + te.config.hidden_size, 0)] : samples[0].text!.shape;
    // SDXL: the UNet also takes text_embeds [B, P] (text_encoder_2's pooled projection) and time ids [B, 6].
    const addedCond = addedCondShapeOf(model.unet.config);
    const pooledDim = addedCond?.textEmbedsDim ?? 0;
    const timeIdCount = addedCond?.timeIds ?? 0;
    if (addedCond && !tokenizer && samples[0].text?.pooled?.length !== pooledDim)
      throw new Error(`${description}: text_encoder_2's pooled embedding has ${samples[0].text?.pooled?.length ?? 0} values, the UNet's text_time conditioning expects ${pooledDim}`);
    const runners = new Map<string, BucketRunner>();
    let modules: LoraModule[] = [];
    let layout: FlatLoraLayout = { tensors: [], size: 0 };
    let update: { graph: UpdateGraph; session: Session } | undefined;
    let recomputed = 0;
    const stepsPerRun = s.stepsPerRun;
    const openStepSession = this.hooks.openStepSession ?? ((graph, opts, dir) => Session.fromGraph(graph, opts, dir));
    // The fused steps' new state stays on the device where the binding can keep it (WebGPU); on the
    // other providers Session.runOnDevice returns it to the host, and it goes in again, as before.
    const keepingState = (names: StateNames): SessionOptions => ({ provider, outputsOnDevice: [names.newParams, names.newM, names.newV] });
    for (const key of bucketKeys) {
      const first = samples[byBucket.get(key)![0]];
      const [channels, latentHeight, latentWidth] = first.latents.shape;
      const spec: TrainStepSpec = {
        unetConfig: model.unet.config,
        weights: model.unet.weights,
        // One spec for every graph built below (the fused step, the text encoder step, the accumulation graphs).
        build: { dtype: computeDtype, attention: provider === 'cpu' ? 'composite' : 'fused', gradientCheckpointing: s.gradientCheckpointing },
        lora: { rank: s.rank, alpha: s.alpha, targets: unetTargets(s.targets) },
        shape: { batch: s.batch, latentHeight, latentWidth, tokens, contextDim, ...(addedCond ? { addedCond } : {}) },
        loss: { prediction: prediction as PredictionType, minSnrGamma: s.minSnrGamma > 0 ? s.minSnrGamma : undefined },
        alphasCumprod: schedule.alphasCumprod,
        adamw,
        maxGradNorm: s.maxGradNorm > 0 ? s.maxGradNorm : undefined,
      };
      if (stepsPerRun > 1 && (tokenizer || accumulate)) throw new Error(`stepsPerRun ${stepsPerRun}: only UNet-only training without gradient accumulation runs several steps at once`);
      const rows = stepsPerRun * s.batch; // the batches of a run's steps, stacked
      const latentSize = rows * channels * latentHeight * latentWidth;
      const buffers = {
        steps: stepsPerRun,
        latents: new Float32Array(latentSize),
        noise: new Float32Array(latentSize),
        timesteps: new BigInt64Array(rows),
        context: new Float32Array(cachedText ? rows * tokens * contextDim : 0),
        inputIds: new BigInt64Array(tokenizer ? rows * tokens : 0),
        inputIds2: new BigInt64Array(tokenizer2 ? rows * tokens : 0),
        textEmbeds: new Float32Array(cachedText ? rows * pooledDim : 0), // text encoder training (of encoder 2) computes them in the graph
        timeIds: new Float32Array(rows * timeIdCount),
      };
      const latentShape = [rows, channels, latentHeight, latentWidth];
      let runner: BucketRunner;
      if (tokenizer) {
        const textEncoderLr = s.textEncoderLr ?? s.lr;
        const step = buildTextEncoderTrainStepGraph(spec, {
          config: model.textEncoder.config,
          weights: model.textEncoder.weights,
          ...(tokenizer2 ? { textEncoder2: model.textEncoder2 } : {}),
          clipSkip: s.clipSkip,
          lrRatio: textEncoderLr / s.lr,
          trains: s.textEncoders,
        });
        modules = step.modules;
        layout = step.layout;
        recomputed = recomputedBlocks(step.graph);
        const session = await openStepSession(step.graph, keepingState(step.state), graphsDir);
        runner = { bucket: first.item.bucket!, session, fused: step, gradNames: undefined, inputs: step.inputs, feeds: {}, ...buffers };
      } else if (stepsPerRun > 1) {
        const run = buildMultiStepTrainGraph(spec, stepsPerRun, { partialRuns: true });
        modules = run.modules;
        layout = run.layout;
        recomputed = recomputedBlocks(run.graph) / stepsPerRun; // each step's UNet has its own
        const session = await openStepSession(run.graph, keepingState(run.state), graphsDir);
        runner = { bucket: first.item.bucket!, session, fused: run, stepsTaken: run.stepsTaken, gradNames: undefined, inputs: run.inputs, feeds: {}, ...buffers };
      } else if (!accumulate) {
        const step = buildTrainStepGraph(spec);
        modules = step.network.modules;
        layout = step.layout;
        recomputed = recomputedBlocks(step.graph);
        const session = await openStepSession(step.graph, keepingState(step.state), graphsDir);
        runner = { bucket: first.item.bucket!, session, fused: step, gradNames: undefined, inputs: step.inputs, feeds: {}, ...buffers };
      } else {
        // Gradient accumulation keeps the state on the host: its gradient graph takes the LoRA
        // tensors one by one, and the gradients are summed on the host.
        const grad = buildGradientGraph(spec);
        modules = grad.network.modules;
        layout = flatLayout(modules);
        recomputed = recomputedBlocks(grad.graph);
        const session = await Session.fromGraph(grad.graph, { provider }, graphsDir);
        runner = { bucket: first.item.bucket!, session, fused: undefined, gradNames: new Map(grad.params.map((p) => [p.name, p.grad])), inputs: grad.inputs, feeds: {}, ...buffers };
        if (!update) {
          const graph = buildUpdateGraph(layout.size, adamw, spec.maxGradNorm);
          update = { graph, session: await Session.fromGraph(graph.graph, { provider }, graphsDir) };
        }
      }
      runner.feeds[runner.inputs.latents] = f32(latentShape, runner.latents);
      runner.feeds[runner.inputs.noise] = f32(latentShape, runner.noise);
      runner.feeds[runner.inputs.timesteps] = { dtype: 'int64', shape: [rows], data: runner.timesteps };
      if (runner.inputs.encoderHiddenStates) runner.feeds[runner.inputs.encoderHiddenStates] = f32([rows, tokens, contextDim], runner.context);
      if (runner.inputs.inputIds) runner.feeds[runner.inputs.inputIds] = { dtype: 'int64', shape: [rows, tokens], data: runner.inputIds };
      if (runner.inputs.inputIds2) runner.feeds[runner.inputs.inputIds2] = { dtype: 'int64', shape: [rows, tokens], data: runner.inputIds2 };
      if (runner.inputs.textEmbeds) runner.feeds[runner.inputs.textEmbeds] = f32([rows, pooledDim], runner.textEmbeds);
      if (runner.inputs.timeIds) runner.feeds[runner.inputs.timeIds] = f32([rows, timeIdCount], runner.timeIds);
      runners.set(key, runner);
    }
    if (modules.length === 0) throw new Error(`${description}: the "${s.targets}" targets match no layer of this UNet`);
    // Counted from the graphs as built, so the message shows that the setting reached them.
    if (s.gradientCheckpointing) events.emit('phase', { phase: 'graph', message: `gradient checkpointing: ${recomputed} UNet blocks recomputed in the backward pass` });

    // --- state: the LoRA tensors and AdamW moments as flat [P] vectors in `layout` order
    const rng = new Rng(s.seed);
    // The first state, from the checkpoint or the init; after that it lives in `state` (below).
    const initial: HostTrainState = { params: new Float32Array(layout.size), m: new Float32Array(layout.size), v: new Float32Array(layout.size) }; // each [P]
    const view = (flat: Float32Array, t: FlatLoraLayout['tensors'][number]): Float32Array => flat.subarray(t.offset, t.offset + t.size);
    /** The LoRA tensors by kohya name (copies: the flat buffers are replaced every step). */
    const loraTensors = (flat: Float32Array): Map<string, Float32Array> => new Map(layout.tensors.map((t) => [t.name, view(flat, t).slice()]));
    let startStep = 0;
    let ema = { value: 0, weight: 0 };
    // Dynamic loss scaling, as torch's GradScaler: start at 2^16, halve on an overflow (that step's
    // update is skipped, AdamW's step count too), double after 2000 finite steps in a row.
    let lossScaling = computeDtype === 'float16' ? { scale: 65536, goodSteps: 0, optimizerSteps: 0 } : undefined;
    let trainingStartedAt = startedAtSeconds;
    if (s.resume && checkpoint) {
      const expectedShapes = new Map<string, readonly number[]>();
      for (const t of layout.tensors) for (const n of [t.name, `${t.name}.m`, `${t.name}.v`]) expectedShapes.set(n, t.shape);
      checkResumable(s.resume, checkpoint, { modelIdentity: unetIdentity, modelDescription: description, expectedShapes });
      for (const t of layout.tensors) {
        initial.params.set(checkpoint.tensors.get(t.name)!.data, t.offset);
        initial.m.set(checkpoint.tensors.get(`${t.name}.m`)!.data, t.offset);
        initial.v.set(checkpoint.tensors.get(`${t.name}.v`)!.data, t.offset);
      }
      rng.setState(checkpoint.info.rng);
      startStep = checkpoint.info.step;
      ema = { ...checkpoint.info.smoothedLoss };
      if (lossScaling) lossScaling = checkpoint.info.lossScaling ? { ...checkpoint.info.lossScaling } : { ...lossScaling, optimizerSteps: startStep };
      trainingStartedAt = checkpoint.info.trainingStartedAt;
      if (checkpoint.info.settingsFingerprint !== settingsFingerprint(s))
        events.emit('phase', { phase: 'train', message: `${s.resume}: resuming with changed settings; the loss curve will differ from an uninterrupted run` });
    } else {
      // The text encoder's LoRA draws from its own Rng, so the UNet's init and every step's noise
      // and timesteps are the same with and without text encoder training.
      const textRng = new Rng(textEncoderInitSeed(s.seed));
      const init = new Map([
        ...initLoraWeights(modules.filter((m) => m.key.startsWith('lora_unet_')), () => rng.uniform()),
        ...initLoraWeights(modules.filter((m) => !m.key.startsWith('lora_unet_')), () => textRng.uniform()),
      ]);
      for (const t of layout.tensors) initial.params.set(init.get(t.name)!, t.offset);
    }
    // Any step session reads the state back from the device: they share the provider.
    const state = new TrainState(initial, runners.values().next().value!.session);

    // Checkpoints keep one tensor per LoRA weight (kohya names), independent of the flat layout.
    const writeCheckpoint = async (step: number, reason: 'interval' | 'stop' | 'end'): Promise<void> => {
      const { params, m, v } = await state.toHost();
      const tensors: CheckpointState['tensors'] = new Map();
      for (const t of layout.tensors) {
        tensors.set(t.name, { shape: t.shape, data: view(params, t) });
        tensors.set(`${t.name}.m`, { shape: t.shape, data: view(m, t) });
        tensors.set(`${t.name}.v`, { shape: t.shape, data: view(v, t) });
      }
      const info = newCheckpointInfo({
        step,
        rng: rng.getState(),
        modelIdentity: unetIdentity,
        modelDescription: description,
        lora: { rank: s.rank, alpha: s.alpha, targets: trainedTargets },
        settingsFingerprint: settingsFingerprint(s),
        settings: trajectorySettings(s),
        smoothedLoss: ema,
        ...(lossScaling ? { lossScaling: { ...lossScaling } } : {}),
        trainingStartedAt,
      });
      mkdirSync(dirname(s.checkpoint), { recursive: true });
      saveCheckpoint(s.checkpoint, { info, tensors });
      events.emit('checkpoint', { step, path: s.checkpoint, reason });
    };

    // --- the loop
    events.emit('start', {
      totalSteps: s.steps,
      startStep,
      images: items.length,
      samplesPerEpoch: samples.reduce((n, x) => n + x.item.repeats, 0),
      buckets: bucketKeys,
      provider,
      resumedFrom: s.resume ?? null,
    });
    events.emit('phase', { phase: 'train', message: `training ${s.steps - startStep} step(s) on ${provider}${stepsPerRun > 1 ? `, ${stepsPerRun} per run` : ''}` });
    if (stepsPerRun > 1 && bucketKeys.length > 1)
      events.emit('phase', {
        phase: 'train',
        message: `${bucketKeys.length} buckets: a run ends early where the next batch is from another bucket (it still computes all ${stepsPerRun} steps); stepsPerRun 1 may be faster`,
      });
    const losses: number[] = [];
    const recent: number[] = [];
    const schedule_ = { name: s.lrSchedule, lr: s.lr, warmupSteps: s.warmupSteps, totalSteps: s.steps };
    const gradSum = new Float32Array(accumulate ? layout.size : 0); // [P]
    const stepScalars = (lr: number, t: number): Record<string, HostTensor> =>
      Object.fromEntries(Object.entries(adamwStepValues(adamw, lr, t)).map(([k, v]) => [k, f32([], Float32Array.of(v))]));

    /** Fills the runner's buffers for one micro-batch from row `firstRow` on; the Rng draws per sample: t, latent, noise, offset. */
    const fillBatch = (runner: BucketRunner, indices: number[], firstRow = 0): void => {
      const perSample = runner.latents.length / (runner.steps * s.batch);
      const contextSize = tokens * contextDim;
      indices.forEach((index, inBatch) => {
        const i = firstRow + inBatch; // the row in the runner's buffers
        const { latents, text } = samples[index];
        runner.timesteps[i] = BigInt(rng.uniformInt(0, timestepCount));
        const base = i * perSample;
        for (let j = 0; j < perSample; j++) runner.latents[base + j] = (latents.mean[j] + latents.std[j] * rng.normalValue()) * scalingFactor;
        for (let j = 0; j < perSample; j++) runner.noise[base + j] = rng.normalValue();
        if (s.noiseOffset > 0) {
          const [channels, h, w] = latents.shape;
          for (let c = 0; c < channels; c++) {
            const offset = s.noiseOffset * rng.normalValue(); // noise + offset * randn[B, C, 1, 1]
            for (let j = 0; j < h * w; j++) runner.noise[base + c * h * w + j] += offset;
          }
        }
        const { tokenIds, tokenIds2 } = samples[index];
        if (text) runner.context.set(text.hidden, i * contextSize);
        if (tokenIds) for (let j = 0; j < tokens; j++) runner.inputIds[i * tokens + j] = BigInt(tokenIds[j]);
        if (tokenIds2) for (let j = 0; j < tokens; j++) runner.inputIds2[i * tokens + j] = BigInt(tokenIds2[j]);
        if (addedCond) {
          if (text) runner.textEmbeds.set(text.pooled!, i * pooledDim);
          runner.timeIds.set(latents.timeIds, i * timeIdCount); // this image's size and crop in its bucket
        }
      });
    };

    let step = startStep;
    let epoch = 0;
    const previewEvery = this.hooks.previewEvery ?? 0;
    const bucketAt = (microBatch: number): string => bucketKey(samples[batchAt(microBatch).indices[0]].item.bucket!);

    /** Dynamic loss scaling after step `step` + 1: count the update, or halve the scale after an overflow (the graph kept the old state then). */
    const countScaledStep = (applied: boolean): void => {
      if (!lossScaling) return;
      if (applied) {
        lossScaling.optimizerSteps++;
        if (++lossScaling.goodSteps >= 2000) lossScaling = { ...lossScaling, scale: lossScaling.scale * 2, goodSteps: 0 };
      } else {
        lossScaling = { ...lossScaling, scale: Math.max(1, lossScaling.scale / 2), goodSteps: 0 };
        events.emit('phase', { phase: 'train', message: `step ${step + 1}: float16 gradients overflowed; update skipped, loss scale now ${lossScaling.scale}` });
      }
    };

    /** Step `step` + 1 is done: its loss on the curve, the progress event, and the checkpoint or preview due at it. */
    const finishStep = async ({ loss, gradNorm, lr, milliseconds }: { loss: number; gradNorm: number; lr: number; milliseconds: number }): Promise<void> => {
      if (!Number.isFinite(loss)) throw new Error(`the loss became ${loss} at step ${step + 1}; lower the learning rate (--lr ${s.lr})`);
      step++;
      losses.push(loss);
      ema = { value: 0.9 * ema.value + 0.1 * loss, weight: 0.9 * ema.weight + 0.1 };
      recent.push(milliseconds);
      if (recent.length > 20) recent.shift();
      const stepsPerSecond = 1000 / (recent.reduce((a, b) => a + b, 0) / recent.length);
      if (step % s.logEvery === 0 || step === s.steps)
        events.emit('step', {
          step,
          totalSteps: s.steps,
          loss,
          smoothedLoss: ema.value / ema.weight,
          learningRate: lr,
          gradNorm,
          stepsPerSecond,
          etaSeconds: (s.steps - step) / stepsPerSecond,
          rssBytes: process.memoryUsage.rss(),
          epoch,
        });
      if (s.saveEvery > 0 && step % s.saveEvery === 0 && step < s.steps) {
        await writeCheckpoint(step, 'interval');
      }
      if (this.hooks.onPreview && previewEvery > 0 && step % previewEvery === 0)
        await this.hooks.onPreview({ step, lora: loraModulesFromNetwork(modules, loraTensors((await state.toHost()).params)), model: { model, description } });
    };

    /**
     * stepsPerRun > 1: how many of the next steps one session run takes: at most stepsPerRun, of one
     * bucket, ending at (never crossing) the last step, a checkpoint, a preview or a loss-scale
     * increase, so that those come at the same steps and see the same state as with one step per run.
     */
    const stepsForOneRun = (from: number): number => {
      const toNext = (every: number): number => (every > 0 ? every - (from % every) : Infinity); // steps to the next multiple of `every`
      const previews = this.hooks.onPreview ? toNext(previewEvery) : Infinity;
      const limit = Math.min(s.stepsPerRun, s.steps - from, toNext(s.saveEvery), previews, lossScaling ? 2000 - lossScaling.goodSteps : Infinity);
      const bucket = bucketAt(from);
      let count = 1;
      while (count < limit && bucketAt(from + count) === bucket) count++;
      return count;
    };

    let sessionRuns = 0;
    /**
     * Steps `step` + 1 .. `step` + `count` in one session run of the multi-step graph (which then
     * keeps the state through its other stepsPerRun - count steps), their batches drawn in step order
     * as one step per run draws them. float16: AdamW's step count assumes every step is applied;
     * after an overflow the graph kept the state from before it for the rest of the run
     * (multi-step-graph.ts), so the run ends there as with one step per run: that step is skipped and
     * the scale halved, and the Rng goes back so that the next run draws the later steps' batches again.
     */
    const runSteps = async (count: number, t0: number): Promise<void> => {
      sessionRuns++;
      const runner = runners.get(bucketAt(step))!;
      const batches = Array.from({ length: count }, (_, k) => batchAt(step + k));
      const rngAfterStep: RngState[] = [];
      batches.forEach((batch, k) => {
        fillBatch(runner, batch.indices, k * s.batch); // the rows of the steps not taken keep older batches
        rngAfterStep.push(rng.getState());
      });
      const lrs = Array.from({ length: runner.steps }, (_, k) => learningRateAt(schedule_, step + k));
      const firstT = lossScaling ? lossScaling.optimizerSteps + 1 : step + 1;
      const values = lrs.map((lr, k) => adamwStepValues(adamw, lr, firstT + k));
      const st = runner.fused!.state;
      const feeds: Record<string, HostTensor | DeviceTensor> = { ...runner.feeds, ...state.feeds(st) };
      for (const name of Object.keys(values[0])) feeds[name] = f32([runner.steps], Float32Array.from(values, (v) => v[name])); // [K]
      feeds[runner.stepsTaken!] = f32([runner.steps], Float32Array.from({ length: runner.steps }, (_, k) => (k < count ? 1 : 0))); // [K]
      const scaling = runner.fused!.lossScaling;
      if (scaling && lossScaling) feeds[scaling.scale] = f32([], Float32Array.of(lossScaling.scale));
      const result = await runner.session.runOnDevice(feeds);
      state.update(st, result);
      const r = result.host; // loss, grad_norm, grads_finite: small, always on the host
      const runLosses = r.loss.data as Float32Array; // [K]
      const gradNorms = r.grad_norm.data as Float32Array; // [K]
      const applied = scaling && lossScaling ? (r[scaling.finite].data as Float32Array) : undefined; // [K] 1 = this step and all before it applied
      const milliseconds = (performance.now() - t0) / count;
      for (let k = 0; k < count; k++) {
        epoch = batches[k].epoch;
        const overflowed = applied !== undefined && applied[k] !== 1;
        if (applied) countScaledStep(!overflowed);
        if (overflowed) rng.setState(rngAfterStep[k]);
        await finishStep({ loss: runLosses[k], gradNorm: gradNorms[k], lr: lrs[k], milliseconds });
        if (overflowed) return;
      }
    };

    try {
      while (step < s.steps && !this.stopRequested) {
        const t0 = performance.now();
        if (stepsPerRun > 1) {
          await runSteps(stepsForOneRun(step), t0);
          continue;
        }
        const lr = learningRateAt(schedule_, step);
        const scalars = stepScalars(lr, lossScaling ? lossScaling.optimizerSteps + 1 : step + 1);
        let loss = 0;
        let gradNorm = 0;
        if (!accumulate) {
          const batch = batchAt(step);
          epoch = batch.epoch;
          const runner = runners.get(bucketKey(samples[batch.indices[0]].item.bucket!))!;
          fillBatch(runner, batch.indices);
          const st = runner.fused!.state;
          const feeds: Record<string, HostTensor | DeviceTensor> = { ...runner.feeds, ...scalars, ...state.feeds(st) };
          const scaling = runner.fused!.lossScaling;
          if (scaling && lossScaling) feeds[scaling.scale] = f32([], Float32Array.of(lossScaling.scale));
          const result = await runner.session.runOnDevice(feeds);
          state.update(st, result);
          const r = result.host; // loss, grad_norm, grads_finite
          loss = (r.loss.data as Float32Array)[0];
          gradNorm = (r.grad_norm.data as Float32Array)[0];
          if (scaling && lossScaling) countScaledStep((r[scaling.finite].data as Float32Array)[0] === 1); // the graph kept the old state if not
        } else {
          gradSum.fill(0);
          const { params } = await state.toHost(); // on the host already: accumulation keeps it there
          for (let a = 0; a < s.gradAccum; a++) {
            const batch = batchAt(step * s.gradAccum + a);
            epoch = batch.epoch;
            const runner = runners.get(bucketKey(samples[batch.indices[0]].item.bucket!))!;
            fillBatch(runner, batch.indices);
            const feeds: Record<string, HostTensor> = { ...runner.feeds };
            for (const t of layout.tensors) feeds[t.name] = f32(t.shape, view(params, t));
            const r = await runner.session.run(feeds);
            for (const t of layout.tensors) {
              const grad = r[runner.gradNames!.get(t.name)!].data as Float32Array; // like the tensor
              for (let i = 0; i < t.size; i++) gradSum[t.offset + i] += grad[i];
            }
            loss += (r.loss.data as Float32Array)[0] / s.gradAccum;
          }
          for (let i = 0; i < gradSum.length; i++) gradSum[i] /= s.gradAccum; // the mean gradient, as one batch of accum x batch
          const st = update!.graph.state;
          const feeds: Record<string, HostTensor | DeviceTensor> = { ...scalars, ...state.feeds(st) };
          feeds[st.grad] = f32([layout.size], gradSum);
          const result = await update!.session.runOnDevice(feeds);
          state.update(st, result);
          gradNorm = (result.host.grad_norm.data as Float32Array)[0];
        }
        await finishStep({ loss, gradNorm, lr, milliseconds: performance.now() - t0 });
      }
      await state.toHost(); // read back while its sessions are open; the final checkpoint and the LoRA file use it
    } finally {
      state.dispose();
      for (const runner of runners.values()) await runner.session.release();
      if (update) await update.session.release();
    }

    // --- save
    // How well the runs were filled (checkpoints, previews, the end, bucket changes and overflows end them early).
    if (stepsPerRun > 1) events.emit('phase', { phase: 'train', message: `${step - startStep} step(s) in ${sessionRuns} run(s) of up to ${stepsPerRun}` });
    if (state.readBacks > 0) events.emit('phase', { phase: 'train', message: `LoRA and AdamW state kept on the device between runs, read back ${state.readBacks} time(s) (checkpoints, previews, the end)` });
    const stopped = step < s.steps;
    events.emit('phase', { phase: 'save', message: `writing ${s.out}` });
    await writeCheckpoint(step, stopped ? 'stop' : 'end');
    const finishedAt = Math.floor(Date.now() / 1000);
    const folderName = basename(dataset.folder);
    const tags: Record<string, number> = {};
    for (const { tag, count } of tagFrequency(samples.map((x) => captionOf(x.item)))) tags[tag] = count;
    const metadata = kohyaTrainingMetadata({
      kind: model.kind,
      prediction: prediction as PredictionType,
      title: s.title ?? basename(s.out, '.safetensors'),
      rank: s.rank,
      alpha: s.alpha,
      networkArgs: {
        ...(s.targets === 'transformer+conv' ? { conv_dim: String(s.rank), conv_alpha: String(s.alpha) } : {}),
        // SDXL with one of its text encoders trained: which one (the file has only its lora_te1_ or lora_te2_ keys)
        ...(trainedEncoders.length > 0 && trainedEncoders.length < modelTextEncoders.length ? { train_text_encoder: s.textEncoders } : {}),
      },
      resolution: { width: s.resolution, height: s.resolution },
      numTrainImages: samples.reduce((n, x) => n + x.item.repeats, 0),
      tagFrequency: { [folderName]: tags },
      steps: step,
      maxSteps: s.steps,
      epoch: epoch + 1,
      seed: s.seed,
      learningRate: s.lr,
      ...(s.trainTextEncoder ? { textEncoderLearningRate: s.textEncoderLr ?? s.lr } : {}),
      lrScheduler: s.lrSchedule,
      lrWarmupSteps: s.warmupSteps,
      batchSize: s.batch,
      gradientAccumulation: s.gradAccum,
      gradientCheckpointing: s.gradientCheckpointing,
      maxGradNorm: s.maxGradNorm,
      minSnrGamma: s.minSnrGamma > 0 ? s.minSnrGamma : undefined,
      noiseOffset: s.noiseOffset,
      clipSkip: s.clipSkip,
      baseModelName: description,
      precision: s.precision,
      trainingStartedAt,
      trainingFinishedAt: finishedAt,
      trigger: s.trigger,
    });
    mkdirSync(dirname(s.out), { recursive: true });
    const trained = loraModulesFromNetwork(modules, loraTensors((await state.toHost()).params));
    // SDXL files get sd-scripts' SDXL names (LDM UNet blocks), which A1111 and ComfyUI expect.
    const exported = model.kind === 'sdxl' ? toSdxlKohyaNames(trained, model.unet.config) : trained;
    writeLoraFile(s.out, exported, { format: s.format, precision: s.precision, metadata });
    const seconds = (Date.now() - started) / 1000;
    events.emit('done', { step, totalSteps: s.steps, out: s.out, checkpoint: s.checkpoint, stopped, seconds, finalLoss: losses.at(-1) ?? null });
    return { out: s.out, checkpoint: s.checkpoint, step, stopped, losses, seconds };
  }
}
