// One training step as one graph, built once per shape bucket: noise the latents, run the UNet
// with the LoRA attached, the loss, backward to the LoRA tensors only (our autodiff), optional
// global gradient-norm clipping and the AdamW update. Inputs are the batch, the step scalars and
// the LoRA weights with their moments; outputs the loss and the updated weights and moments.
import { gradients, type GradientOptions } from '../autodiff/gradients';
import { attentionBackward } from '../autodiff/rules';
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { flatLayout, LoraNetwork, type FlatLoraLayout, type LoraSpec, type LoraTensorSource } from '../lora/lora-network';
import type { DType } from '../graph/dtype';
import { numel } from '../graph/shape';
import { Params, type BuildOptions, type WeightLocator } from '../nn/params';
import { buildUNet2DCondition, type UNet2DConditionConfig } from '../models/unet-2d-condition';
import { adamwStepInputs, adamwUpdate, type AdamWConfig, type AdamWStepInputs } from './adamw';
import { noiseBatch, weightedMse, type DiffusionLossOptions } from './diffusion-loss';

export interface TrainShape {
  batch: number;
  latentHeight: number;
  latentWidth: number;
  /** Text tokens and embedding width of the cached encoder hidden states ([77, 768] for SD1.5). */
  tokens: number;
  contextDim: number;
  /**
   * SDXL (UNet addition_embed_type "text_time"): width of the pooled text embedding (1280 for
   * SDXL) and the number of time ids (6: original size, crop top-left, target size). Required
   * exactly when the UNet config has text_time conditioning.
   */
  addedCond?: { textEmbedsDim: number; timeIds: number };
}

export interface TrainStepSpec {
  unetConfig: UNet2DConditionConfig;
  weights: WeightLocator;
  build: BuildOptions;
  lora: Omit<LoraSpec, 'prefix'>;
  shape: TrainShape;
  loss: DiffusionLossOptions;
  alphasCumprod: ArrayLike<number>;
  adamw: AdamWConfig;
  /** Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_); undefined = none. */
  maxGradNorm?: number;
}

export interface TrainStepGraph {
  graph: Graph;
  network: LoraNetwork;
  /** Graph input names of the batch. */
  inputs: TrainBatchInputs;
  /**
   * The LoRA weights and the AdamW moments are three flat float32 vectors laid out by `layout`, so
   * the optimizer is a handful of kernels over one buffer rather than a dozen per LoRA tensor, and a
   * step feeds and reads three tensors instead of hundreds.
   */
  layout: FlatLoraLayout;
  state: { params: string; m: string; v: string; newParams: string; newM: string; newV: string };
  outputs: { loss: string; gradNorm: string };
  /**
   * float16 graphs only: the loss-scale input (gradients are computed for loss * scale so small
   * float16 gradients do not flush to zero, then unscaled in float32) and the bool output that says
   * whether all gradients were finite; when they were not, the step keeps the old state and the
   * host lowers the scale (dynamic loss scaling).
   */
  lossScaling?: { scale: string; finite: string };
}

/**
 * The added-conditioning shape of an SDXL UNet config: the pooled text embedding width (1280 for
 * SDXL base) and 6 time ids, from projection_class_embeddings_input_dim = P + 6 * addition_time_embed_dim;
 * undefined for a UNet without text_time. A config that implies another id count (the refiner's 5,
 * with an aesthetic score) is refused.
 */
export function addedCondShapeOf(config: UNet2DConditionConfig): TrainShape['addedCond'] {
  if (config.addition_embed_type !== 'text_time') return undefined;
  const timeDim = config.addition_time_embed_dim;
  const total = config.projection_class_embeddings_input_dim;
  if (!timeDim || !total) throw new Error('unet config.json: addition_embed_type "text_time" needs addition_time_embed_dim and projection_class_embeddings_input_dim');
  const textEmbedsDim = total - 6 * timeDim;
  if (textEmbedsDim <= 0) throw new Error(`unet config.json: projection_class_embeddings_input_dim ${total} leaves no room for 6 time ids of ${timeDim}`);
  return { textEmbedsDim, timeIds: 6 };
}

/** Graph input names of one training batch; textEmbeds and timeIds only for SDXL (text_time) UNets. */
export interface TrainBatchInputs {
  latents: string;
  noise: string;
  timesteps: string;
  encoderHiddenStates: string;
  textEmbeds?: string;
  timeIds?: string;
}

/**
 * The SDXL added-conditioning inputs of a training graph: text_embeds [B, P] and time_ids [B, 6]
 * (float32) when the UNet has text_time conditioning, else undefined. Refuses a shape that does
 * not fit the config, naming both.
 */
export function addedCondInputs(g: Graph, spec: Pick<TrainStepSpec, 'unetConfig' | 'shape'>): { textEmbeds: Value; timeIds: Value } | undefined {
  const wanted = spec.unetConfig.addition_embed_type === 'text_time';
  const given = spec.shape.addedCond;
  if (!wanted) {
    if (given) throw new Error('train step: shape.addedCond given, but the UNet config has no addition_embed_type "text_time"');
    return undefined;
  }
  if (!given) throw new Error('train step: the UNet has addition_embed_type "text_time" (SDXL); shape.addedCond { textEmbedsDim, timeIds } is required');
  const batch = spec.shape.batch;
  return {
    textEmbeds: g.input('text_embeds', 'float32', [batch, given.textEmbedsDim]), // [B, P]
    timeIds: g.input('time_ids', 'float32', [batch, given.timeIds]), // [B, 6]
  };
}

/** The batch input names (for TrainStepGraph.inputs), including the SDXL ones when present. */
export function batchInputNames(x0: Value, noise: Value, timesteps: Value, context: Value, added: { textEmbeds: Value; timeIds: Value } | undefined): TrainBatchInputs {
  const names: TrainBatchInputs = { latents: x0.name, noise: noise.name, timesteps: timesteps.name, encoderHiddenStates: context.name };
  if (added) {
    names.textEmbeds = added.textEmbeds.name;
    names.timeIds = added.timeIds.name;
  }
  return names;
}

/** The scalar grad-norm, and the gradient scaled by min(1, maxNorm / (norm + 1e-6)) when clipping. */
function clipByGlobalNorm(grad: Value, maxNorm: number | undefined): { grad: Value; norm: Value } {
  const norm = op.sqrt(op.sumAll(op.mul(grad, grad))); // []
  if (maxNorm === undefined) return { grad, norm };
  const coef = op.min(op.div(op.scalarLike(norm, maxNorm), op.add(norm, 1e-6)), 1); // []
  return { grad: op.mul(grad, coef), norm };
}

/** Which LoRA modules the UNet gets, found by building its forward once in a scratch graph. */
export function discoverLoraLayout(spec: TrainStepSpec, shapes: { sample: number[]; context: number[] }): FlatLoraLayout {
  const g = new Graph('lora_discovery');
  const network = new LoraNetwork({ ...spec.lora, prefix: 'lora_unet' });
  const params = new Params(g, spec.weights, { ...spec.build, hook: network.hook() });
  buildUNet2DCondition(params, spec.unetConfig, {
    sample: g.input('sample', spec.build.dtype, shapes.sample),
    timestep: g.input('timestep', spec.build.dtype, [shapes.sample[0]]),
    encoderHiddenStates: g.input('context', spec.build.dtype, shapes.context),
    addedCond: addedCondInputs(g, spec),
  });
  return flatLayout(network.modules);
}

/** The trainable state one step reads: flat LoRA weights and AdamW moments, each [P]. */
export interface FlatTrainState {
  params: Value;
  m: Value;
  v: Value;
}

/** One step's batch as graph values (float32 except the int64 timesteps). */
export interface StepBatch {
  x0: Value; // [B, 4, h, w]
  noise: Value; // [B, 4, h, w]
  timesteps: Value; // [B]
  context: Value; // [B, 77, C]
  added?: { textEmbeds: Value; timeIds: Value }; // SDXL: [B, P], [B, 6]
}

/**
 * More LoRAs trained in the same step (the text encoders', text-encoder-step-graph.ts): their
 * tensors read from `state.params` after the UNet's, in this order; they are already built into
 * the graph that made the batch's context, and their gradients follow the UNet's in the flat
 * gradient. `lrScale` [P] multiplies the learning rate per element (a separate text-encoder
 * learning rate).
 */
export interface ExtraTrainables {
  networks: readonly LoraNetwork[];
  lrScale?: Value;
  /** The views of `state.params` the extra networks already read (flatViews over the whole layout), for the UNet's too. */
  views?: LoraTensorSource;
}

/**
 * The backward's settings for a build. With gradient checkpointing (the memory-saving choice) the
 * attention backward also recomputes its [Lq, Lk] matrices in groups of at most 64 MiB instead
 * of 256: SD1.5 at 512 px, batch 1, peaked at 3.43 GiB on an H100 (4.43 without checkpointing),
 * at 1.76x PyTorch's speed on the same machine (BENCHMARKS.md). The bench's --attention-chunk-mib
 * sets the size without checkpointing.
 */
export function backwardOptions(build: BuildOptions): GradientOptions {
  return build.gradientCheckpointing ? { attentionChunkBytes: Math.min(CHECKPOINTING_ATTENTION_CHUNK_BYTES, attentionBackward.chunkBytes) } : {};
}
const CHECKPOINTING_ATTENTION_CHUNK_BYTES = 64 * 2 ** 20;

/**
 * The widest row that each of these pieces fills whole (the gcd of their sizes): flat vectors are
 * split and joined as [P / w, w] rows. onnxruntime's CUDA Split and Concat of unequal pieces build
 * a host table as long as the split axis and copy it to the GPU on every run; along the flat axis
 * that was 3.2 M entries (25 MB) for each of SD1.5's two per step, 25-35 ms of host time each
 * (profiled on the H100, 2026-11-23). Along the rows it is a few thousand.
 */
export function flatRowWidth(sizes: readonly number[]): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  return sizes.reduce(gcd, 0) || 1;
}

/** Joins pieces of any shape, flattened, into one [sum n_i] along rows of flatRowWidth (see there). */
export function concatFlat(pieces: readonly Value[]): Value {
  const width = flatRowWidth(pieces.map((p) => numel(p.shape)));
  const rows = op.concat(pieces.map((p) => op.reshape(p, [numel(p.shape) / width, width])), 0); // [P / w, w]
  return op.reshape(rows, [numel(rows.shape)]); // [P]
}

/**
 * Every LoRA tensor of `layout` as a view of the flat float32 vector `flat` [P], in the compute
 * dtype: one Cast of the whole vector, then one slice of rows per tensor (onnxruntime fuses them
 * into one Split). Differentiating with respect to these views gives the per-tensor gradients in
 * `dtype`. (A tree of smaller Splits and Concats, tried on 2026-11-23, was 10% slower on the
 * H100: that was before the rows of flatRowWidth, when each one built its table along the flat axis.)
 */
export function flatViews(flat: Value, layout: FlatLoraLayout, dtype: DType): LoraTensorSource {
  const width = flatRowWidth(layout.tensors.map((t) => t.size));
  const rows = op.reshape(op.cast(flat, dtype), [layout.size / width, width]); // [P / w, w] in dtype
  const views = new Map(layout.tensors.map((t) => [t.name, op.reshape(op.slice(rows, [t.offset / width], [(t.offset + t.size) / width], [0]), t.shape)])); // views of [P]
  return (name, shape) => {
    const view = views.get(name);
    if (!view || view.shape.join() !== shape.join()) throw new Error(`LoRA tensor ${name} [${shape}] is not in the discovered layout`);
    return view;
  };
}

/**
 * Appends one training step to `g`: noising, the UNet with the LoRA read from `state.params`, the
 * loss, the backward to the LoRA tensors, clipping and AdamW. Returns the next state and the
 * step's loss, gradient norm and (float16) finite flag. The frozen weights are shared by every
 * step appended to the same graph (Params caches them per graph).
 */
export function appendTrainStep(
  g: Graph,
  spec: TrainStepSpec,
  layout: FlatLoraLayout,
  batch: StepBatch,
  state: FlatTrainState,
  scalars: AdamWStepInputs,
  lossScale: Value | undefined,
  extra?: ExtraTrainables,
): { state: FlatTrainState; network: LoraNetwork; loss: Value; norm: Value; finite: Value | undefined } {
  const network = new LoraNetwork({ ...spec.lora, prefix: 'lora_unet' }, extra?.views ?? flatViews(state.params, layout, spec.build.dtype));

  const { noisy, target, weight } = noiseBatch(g, spec.alphasCumprod, batch.x0, batch.noise, batch.timesteps, spec.loss);
  const params = new Params(g, spec.weights, { ...spec.build, hook: network.hook() });
  const dtype = spec.build.dtype;
  const call = {
    sample: op.cast(noisy, dtype), // [B, 4, h, w]
    // A table lookup rather than Cast: WebGPU has no int64 -> float cast.
    timestep: op.gather(g.constant(Array.from(spec.alphasCumprod, (_, t) => t), dtype, [spec.alphasCumprod.length]), batch.timesteps), // [B]
    encoderHiddenStates: op.cast(batch.context, dtype), // [B, 77, C]
    addedCond: batch.added && { textEmbeds: op.cast(batch.added.textEmbeds, dtype), timeIds: batch.added.timeIds }, // [B, P], [B, 6] (embedded in float32)
  };
  const prediction = buildUNet2DCondition(params, spec.unetConfig, call); // [B, 4, h, w]
  const loss = weightedMse(prediction, target, weight); // []

  const trainable = [network, ...(extra?.networks ?? [])].flatMap((n) => n.parameters()); // layout order
  const perTensor = gradients(lossScale ? op.mul(loss, lossScale) : loss, trainable, undefined, backwardOptions(spec.build));
  const flatGrad = op.cast(concatFlat(perTensor), 'float32'); // [P], layout order
  const unscaled = lossScale ? op.div(flatGrad, lossScale) : flatGrad; // [P]
  const { grad, norm } = clipByGlobalNorm(unscaled, spec.maxGradNorm);
  const finite = lossScale ? op.equal(op.sub(norm, norm), 0) : undefined; // NaN and inf give NaN - NaN != 0
  const keepIfOverflow = (next: Value, previous: Value): Value => (finite ? op.where(finite, next, previous) : next);

  const stepScalars = extra?.lrScale ? { ...scalars, lr: op.mul(scalars.lr, extra.lrScale) } : scalars; // lr [] or [P]
  const updated = adamwUpdate(spec.adamw, stepScalars, state.params, grad, state.m, state.v);
  return {
    state: { params: keepIfOverflow(updated.param, state.params), m: keepIfOverflow(updated.m, state.m), v: keepIfOverflow(updated.v, state.v) },
    network,
    loss,
    norm,
    finite,
  };
}

/**
 * Marks the new state and the loss, gradient norm and finite flag (float 1/0) as the graph's
 * outputs under the names every training graph uses; returns TrainStepGraph['state'].
 */
export function outputStepResults(
  g: Graph,
  first: FlatTrainState,
  next: FlatTrainState,
  results: { loss: Value; gradNorm: Value; finite: Value | undefined },
): TrainStepGraph['state'] {
  const names = {
    params: first.params.name,
    m: first.m.name,
    v: first.v.name,
    newParams: g.output(next.params, 'lora.params.new').name,
    newM: g.output(next.m, 'adamw.m.new').name,
    newV: g.output(next.v, 'adamw.v.new').name,
  };
  g.output(results.loss, 'loss');
  g.output(results.gradNorm, 'grad_norm');
  if (results.finite) g.output(results.finite, 'grads_finite');
  return names;
}

/** float32 1/0 for a bool flag: WebGPU cannot output a bool tensor. */
export const flagAsFloat = (flag: Value, like: Value): Value => op.where(flag, op.scalarLike(like, 1), op.scalarLike(like, 0));

export function buildTrainStepGraph(spec: TrainStepSpec): TrainStepGraph {
  const g = new Graph('train_step');
  const { batch, latentHeight, latentWidth, tokens, contextDim } = spec.shape;
  const latentChannels = spec.unetConfig.in_channels;
  const x0 = g.input('latents', 'float32', [batch, latentChannels, latentHeight, latentWidth]); // [B, 4, h, w]
  const noise = g.input('noise', 'float32', x0.shape); // [B, 4, h, w]
  const timesteps = g.input('timesteps', 'int64', [batch]); // [B]
  const context = g.input('encoder_hidden_states', 'float32', [batch, tokens, contextDim]); // [B, 77, C]
  const added = addedCondInputs(g, spec); // SDXL: text_embeds [B, P], time_ids [B, 6]

  const layout = discoverLoraLayout(spec, { sample: [...x0.shape], context: [...context.shape] });
  const state = {
    params: g.input('lora.params', 'float32', [layout.size]), // [P]
    m: g.input('adamw.m', 'float32', [layout.size]), // [P]
    v: g.input('adamw.v', 'float32', [layout.size]), // [P]
  };
  const lossScale = spec.build.dtype === 'float16' ? g.input('loss_scale', 'float32', []) : undefined;
  const step = appendTrainStep(g, spec, layout, { x0, noise, timesteps, context, added }, state, adamwStepInputs(g), lossScale);

  const names = outputStepResults(g, state, step.state, { loss: step.loss, gradNorm: step.norm, finite: step.finite && flagAsFloat(step.finite, step.norm) });
  return {
    graph: g,
    network: step.network,
    inputs: batchInputNames(x0, noise, timesteps, context, added),
    layout,
    state: names,
    outputs: { loss: 'loss', gradNorm: 'grad_norm' },
    ...(lossScale ? { lossScaling: { scale: lossScale.name, finite: 'grads_finite' } } : {}),
  };
}
