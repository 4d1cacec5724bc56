// One training step that also trains the CLIP text encoder(s): token ids -> the text encoders with
// a LoRA on their attention and MLP projections -> the conditioning the feature cache computes for
// UNet-only training (models/text-conditioning.ts, the same builder) -> the UNet step of
// train-step-graph.ts (the same appendTrainStep), backward to every LoRA.
// - SD 1.x/2.x: one encoder, LoRA prefix 'lora_te'; the batch feeds input_ids.
// - SDXL: both encoders, prefixes 'lora_te1' and 'lora_te2' as sd-scripts names them; the batch
//   feeds input_ids and input_ids_2 (each tokenizer's own ids) and the time ids, while
//   encoder_hidden_states and text_embeds (text_encoder_2's pooled projection) come from the encoders.
//   `trains` may pick one of the two ('1' or '2'): only that one gets a LoRA and runs in the graph;
//   the frozen one's part of the conditioning comes from the feature cache, as in UNet-only
//   training: the batch feeds the cached encoder_hidden_states (its channels of them are taken)
//   and, when encoder 2 is the frozen one, the cached text_embeds. Its weights never load.
// All LoRAs live in one flat state vector: the UNet tensors first, in exactly the layout of the
// UNet-only graph, then the first trained text encoder's, then the second's, so the optimizer, checkpoints
// and the host loop stay the same. The text encoders may have their own learning rate (sd-scripts'
// --text_encoder_lr, one for both): AdamW then gets a per-element learning rate, lr for the UNet
// part and lr * ratio for the text encoder part.
//
//   buildTextEncoderTrainStepGraph(spec, textEncoder): TextEncoderTrainStepGraph
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { flatLayout, LoraNetwork, type FlatLoraLayout, type LoraModule, type LoraPrefix, type LoraTensorSource } from '../lora/lora-network';
import { textEncoderTargets } from '../lora/targets';
import type { CLIPTextConfig } from '../models/clip-text-model';
import type { WeightLocator } from '../nn/params';
import type { WeightSource } from '../io/weights';
import { adamwStepInputs } from './adamw';
import { buildTextConditioning, type EncoderPart, type TextConditioning, type TextEncoderComponent } from '../models/text-conditioning';
import {
  appendTrainStep,
  concatFlat,
  discoverLoraLayout,
  flagAsFloat,
  flatViews,
  outputStepResults,
  type TrainBatchInputs,
  type TrainStepGraph,
  type TrainStepSpec,
} from './train-step-graph';

export interface TextEncoderTrainSpec {
  /** The (first) text encoder's config. */
  config: CLIPTextConfig;
  /** The (first) text encoder's weights (their key names give the checkpoint's text-model prefix). */
  weights: WeightSource & WeightLocator;
  /** SDXL: text_encoder_2 (CLIPTextModelWithProjection), trained too; required exactly for a text_time UNet. */
  textEncoder2?: TextEncoderComponent;
  /** A1111 clip skip: 1 = last hidden state (SDXL: the penultimate, unnormed), n = n - 1 layers earlier. */
  clipSkip: number;
  /** Text encoder learning rate / UNet learning rate, for both encoders; 1 (default) = one learning rate. */
  lrRatio?: number;
  /** Which encoders get a LoRA (default 'all'); '2' needs textEncoder2. */
  trains?: TextEncoderChoice;
}

/**
 * The text encoders a run trains: 'all' of them (SD 1.x/2.x: its one), or SDXL's first
 * ('1', text_encoder, CLIP ViT-L) or second ('2', text_encoder_2, OpenCLIP ViT-bigG) only.
 */
export type TextEncoderChoice = 'all' | '1' | '2';

/** Of a model's text encoders (in order), those a run trains: none when off, else per `choice` (a model with one encoder trains it). */
export function trainedTextEncoders<T>(encoders: readonly T[], trainTextEncoder: boolean, choice: TextEncoderChoice = 'all'): T[] {
  if (!trainTextEncoder) return [];
  return choice === 'all' || encoders.length === 1 ? [...encoders] : [encoders[Number(choice) - 1]];
}

/**
 * The batch inputs: token ids replace the cached encoder hidden states (and, SDXL, the cached
 * text_embeds): input_ids, and SDXL's input_ids_2 from tokenizer_2; SDXL keeps the time ids.
 */
export type TextTrainBatchInputs = Omit<TrainBatchInputs, 'encoderHiddenStates' | 'textEmbeds'> & {
  /** The token ids of each encoder the graph runs: input_ids (text_encoder), SDXL input_ids_2. */
  inputIds?: string;
  inputIds2?: string;
  /** SDXL, one encoder trained: the cached conditioning the frozen encoder's part comes from. */
  encoderHiddenStates?: string;
  textEmbeds?: string;
};

export interface TextEncoderTrainStepGraph extends Omit<TrainStepGraph, 'network' | 'inputs'> {
  inputs: TextTrainBatchInputs;
  /** Every trained module in layout order: the UNet's, then the trained text encoders' ('lora_te_…', SDXL 'lora_te1_…' then 'lora_te2_…'). */
  modules: LoraModule[];
  /** Where the text encoder part starts in the flat state (= the UNet-only layout's size). */
  textEncoderOffset: number;
}

/**
 * sd-scripts' LoRA prefix of each encoder, undefined for a frozen one: 'lora_te' for SD 1.x/2.x's
 * one encoder, 'lora_te1' / 'lora_te2' for SDXL's two.
 */
function textLoraPrefixes(te: TextEncoderTrainSpec): (LoraPrefix | undefined)[] {
  const trains = te.trains ?? 'all';
  if (!te.textEncoder2) {
    if (trains === '2') throw new Error('text encoder training: text encoder 2 chosen, but the model has one text encoder (only SDXL has text_encoder_2)');
    return ['lora_te'];
  }
  return [trains === '2' ? undefined : 'lora_te1', trains === '1' ? undefined : 'lora_te2'];
}

/** One LoRA network per trained encoder, in encoder order; undefined where the encoder is frozen. */
function textNetworksOf(spec: TrainStepSpec, te: TextEncoderTrainSpec, views?: LoraTensorSource): (LoraNetwork | undefined)[] {
  return textLoraPrefixes(te).map((prefix) => prefix && new LoraNetwork({ ...spec.lora, prefix, targets: textEncoderTargets }, views));
}

/** The conditioning on `inputIds` (one per encoder) with `networks[i]` attached to encoder i (none: frozen). */
function conditionWith(spec: TrainStepSpec, te: TextEncoderTrainSpec, networks: readonly (LoraNetwork | undefined)[], inputIds: readonly (Value | EncoderPart)[]): TextConditioning {
  const encoders = { textEncoder: { config: te.config, weights: te.weights }, textEncoder2: te.textEncoder2 };
  return buildTextConditioning(encoders, inputIds, { clipSkip: te.clipSkip, build: spec.build, hooks: networks.map((n) => n?.hook()) });
}

const trainedOnly = (networks: readonly (LoraNetwork | undefined)[]): LoraNetwork[] => networks.filter((n) => n !== undefined);

/** Each trained text encoder's LoRA modules, found by building the conditioning once in a scratch graph. */
function discoverTextEncoderModules(spec: TrainStepSpec, te: TextEncoderTrainSpec, tokens: number): LoraModule[] {
  const g = new Graph('lora_te_discovery');
  const networks = textNetworksOf(spec, te);
  conditionWith(spec, te, networks, networks.map((_, i) => g.input(`input_ids_${i}`, 'int64', [1, tokens]))); // [1, 77] each
  return trainedOnly(networks).flatMap((n) => n.modules);
}

/** `tail` placed after `head` in one flat vector. */
function concatLayouts(head: FlatLoraLayout, tail: FlatLoraLayout): FlatLoraLayout {
  return { tensors: [...head.tensors, ...tail.tensors.map((t) => ({ ...t, offset: t.offset + head.size }))], size: head.size + tail.size };
}

/** Refuses text encoders that do not fit the UNet, naming both widths. */
function checkEncodersFitUNet(spec: TrainStepSpec, te: TextEncoderTrainSpec): void {
  const textTime = spec.unetConfig.addition_embed_type === 'text_time';
  if (textTime && !te.textEncoder2)
    throw new Error('text encoder training: the UNet has text_time conditioning (SDXL); both text encoders are needed (textEncoder2 = text_encoder_2)');
  if (textTime && !spec.shape.addedCond) throw new Error('text encoder training: the UNet has text_time conditioning (SDXL); shape.addedCond { textEmbedsDim, timeIds } is required');
  if (!textTime && te.textEncoder2) throw new Error('text encoder training: textEncoder2 given, but the UNet has no text_time conditioning (only SDXL has two text encoders)');
  const width = te.config.hidden_size + (te.textEncoder2?.config.hidden_size ?? 0);
  if (width !== spec.shape.contextDim)
    throw new Error(`text encoder training: the text encoder hidden size${te.textEncoder2 ? 's add up to' : ''} ${width}, but the UNet's context width is ${spec.shape.contextDim}`);
  if (te.textEncoder2) {
    const projection = te.textEncoder2.config.projection_dim ?? te.textEncoder2.config.hidden_size;
    const pooled = spec.shape.addedCond?.textEmbedsDim;
    if (projection !== pooled) throw new Error(`text encoder training: text_encoder_2 projects to ${projection} values, the UNet's text_time conditioning expects text_embeds of ${pooled}`);
  }
}

export function buildTextEncoderTrainStepGraph(spec: TrainStepSpec, te: TextEncoderTrainSpec): TextEncoderTrainStepGraph {
  checkEncodersFitUNet(spec, te);
  const g = new Graph('train_step_te');
  const { batch, latentHeight, latentWidth, tokens, contextDim, addedCond } = spec.shape;
  const x0 = g.input('latents', 'float32', [batch, spec.unetConfig.in_channels, latentHeight, latentWidth]); // [B, 4, h, w]
  const noise = g.input('noise', 'float32', x0.shape); // [B, 4, h, w]
  const timesteps = g.input('timesteps', 'int64', [batch]); // [B]
  const timeIds = addedCond && g.input('time_ids', 'float32', [batch, addedCond.timeIds]); // SDXL: [B, 6]
  // Each encoder: token ids where it runs, else (SDXL, frozen) its part of the cached conditioning.
  const frozen = te.textEncoder2 ? textLoraPrefixes(te).findIndex((prefix) => prefix === undefined) : -1; // -1: every encoder runs
  const cachedHidden = frozen >= 0 ? g.input('encoder_hidden_states', 'float32', [batch, tokens, contextDim]) : undefined; // [B, 77, C1 + C2]
  const cachedTextEmbeds = frozen === 1 && addedCond ? g.input('text_embeds', 'float32', [batch, addedCond.textEmbedsDim]) : undefined; // [B, P]
  const inputIds = frozen !== 0 ? g.input('input_ids', 'int64', [batch, tokens]) : undefined; // [B, 77]
  const inputIds2 = te.textEncoder2 && frozen !== 1 ? g.input('input_ids_2', 'int64', [batch, tokens]) : undefined; // SDXL: [B, 77], tokenizer_2's ids
  const width1 = te.config.hidden_size;
  const frozenPart = (i: number): EncoderPart => ({
    hidden: op.cast(i === 0 ? op.slice(cachedHidden!, [0], [width1], [2]) : op.slice(cachedHidden!, [width1], [contextDim], [2]), spec.build.dtype), // [B, 77, Ci]
    ...(cachedTextEmbeds ? { textEmbeds: op.cast(cachedTextEmbeds, spec.build.dtype) } : {}), // [B, P]
  });
  const encoderInputs: (Value | EncoderPart)[] = te.textEncoder2
    ? [inputIds ?? frozenPart(0), inputIds2 ?? frozenPart(1)]
    : [inputIds!];

  const unetLayout = discoverLoraLayout(spec, { sample: [...x0.shape], context: [batch, tokens, contextDim] });
  const textModules = discoverTextEncoderModules(spec, te, tokens);
  if (textModules.length === 0) throw new Error('text encoder training: no text encoder layer matches the LoRA targets (self_attn q/k/v/out_proj, mlp fc1/fc2)');
  const layout = concatLayouts(unetLayout, flatLayout(textModules));
  const state = {
    params: g.input('lora.params', 'float32', [layout.size]), // [P] = [P_unet + P_te]
    m: g.input('adamw.m', 'float32', [layout.size]), // [P]
    v: g.input('adamw.v', 'float32', [layout.size]), // [P]
  };
  const lossScale = spec.build.dtype === 'float16' ? g.input('loss_scale', 'float32', []) : undefined;

  // The text encoders' LoRAs read their tensors from the text part of the same flat vector; the
  // UNet's step reads the same views (one cast and one slice per tensor for the whole layout).
  const views = flatViews(state.params, layout, spec.build.dtype);
  const encoderNetworks = textNetworksOf(spec, te, views);
  const textNetworks = trainedOnly(encoderNetworks);
  const conditioning = g.scope('text_encoder', () => conditionWith(spec, te, encoderNetworks, encoderInputs));
  const context = conditioning.hidden; // [B, 77, C]
  const added = timeIds && { textEmbeds: conditioning.textEmbeds!, timeIds }; // SDXL: [B, P], [B, 6]

  const ratio = te.lrRatio ?? 1;
  const textSize = layout.size - unetLayout.size;
  const lrScale =
    ratio === 1
      ? undefined
      : concatFlat([op.expand(g.constant([1], 'float32', [1]), [unetLayout.size]), op.expand(g.constant([ratio], 'float32', [1]), [textSize])]); // [P]
  const step = appendTrainStep(g, spec, layout, { x0, noise, timesteps, context, added }, state, adamwStepInputs(g), lossScale, {
    networks: textNetworks,
    lrScale,
    views,
  });

  const names = outputStepResults(g, state, step.state, { loss: step.loss, gradNorm: step.norm, finite: step.finite && flagAsFloat(step.finite, step.norm) });
  return {
    graph: g,
    modules: [...step.network.modules, ...textNetworks.flatMap((n) => n.modules)],
    inputs: {
      latents: x0.name,
      noise: noise.name,
      timesteps: timesteps.name,
      ...(inputIds ? { inputIds: inputIds.name } : {}),
      ...(inputIds2 ? { inputIds2: inputIds2.name } : {}),
      ...(cachedHidden ? { encoderHiddenStates: cachedHidden.name } : {}),
      ...(cachedTextEmbeds ? { textEmbeds: cachedTextEmbeds.name } : {}),
      ...(timeIds ? { timeIds: timeIds.name } : {}),
    },
    layout,
    textEncoderOffset: unetLayout.size,
    state: names,
    outputs: { loss: 'loss', gradNorm: 'grad_norm' },
    ...(lossScale ? { lossScaling: { scale: lossScale.name, finite: 'grads_finite' } } : {}),
  };
}
