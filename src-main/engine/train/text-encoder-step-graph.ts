// One training step that also trains the CLIP text encoder (SD 1.x/2.x): token ids -> CLIP with a
// LoRA on its attention and MLP projections ('lora_te') -> the hidden state after clip skip -> the
// UNet step of train-step-graph.ts (the same appendTrainStep), backward to both LoRAs. Both LoRAs
// live in one flat state vector: the UNet tensors first, in exactly the layout of the UNet-only
// graph, then the text encoder's, so the optimizer, checkpoints and the host loop stay the same.
// The text encoder may have its own learning rate (sd-scripts' --text_encoder_lr): AdamW then gets
// a per-element learning rate, lr for the UNet part and lr * ratio for the text encoder part.
//
//   buildTextEncoderTrainStepGraph(spec, textEncoder): TextEncoderTrainStepGraph
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { canonicalTextKey, clipTextPrefixOf } from '../io/single-file-writer';
import { flatLayout, LoraNetwork, type FlatLoraLayout, type LoraModule } from '../lora/lora-network';
import { textEncoderTargets } from '../lora/targets';
import { buildClipTextModel, type CLIPTextConfig } from '../models/clip-text-model';
import { Params, type LayerHook, type WeightLocator } from '../nn/params';
import type { WeightSource } from '../io/weights';
import { adamwStepInputs } from './adamw';
import {
  addedCondInputs,
  appendTrainStep,
  discoverLoraLayout,
  flagAsFloat,
  outputStepResults,
  type TrainBatchInputs,
  type TrainStepGraph,
  type TrainStepSpec,
} from './train-step-graph';

export interface TextEncoderTrainSpec {
  config: CLIPTextConfig;
  /** The text encoder's weights (their key names give the checkpoint's text-model prefix). */
  weights: WeightSource & WeightLocator;
  /** A1111 clip skip: 1 = last hidden state, n = final norm of hidden_states[-n]. */
  clipSkip: number;
  /** Text encoder learning rate / UNet learning rate; 1 (default) = one learning rate. */
  lrRatio?: number;
}

/** The batch inputs: token ids replace the cached encoder hidden states. */
export type TextTrainBatchInputs = Omit<TrainBatchInputs, 'encoderHiddenStates'> & { inputIds: string };

export interface TextEncoderTrainStepGraph extends Omit<TrainStepGraph, 'network' | 'inputs'> {
  inputs: TextTrainBatchInputs;
  /** Every trained module in layout order: the UNet's, then the text encoder's ('lora_te_text_model_…'). */
  modules: LoraModule[];
  /** Where the text encoder part starts in the flat state (= the UNet-only layout's size). */
  textEncoderOffset: number;
}

/**
 * The text encoder's LoRA network (prefix 'lora_te') as a hook that reports modules under
 * transformers' canonical names ("text_model.encoder.layers.0.self_attn.q_proj"), whatever prefix
 * the checkpoint stores them under, so the keys are the ones A1111, ComfyUI and diffusers expect.
 */
function textEncoderHook(network: LoraNetwork, textModelPrefix: string): LayerHook {
  const hook = network.hook();
  return (call) => hook({ ...call, module: canonicalTextKey(call.module, textModelPrefix) });
}

/** The CLIP hidden state the UNet attends to, [B, L, H] in the build dtype, with `network` attached. */
function encodeText(g: Graph, spec: TrainStepSpec, te: TextEncoderTrainSpec, network: LoraNetwork, inputIds: Value): Value {
  const textModelPrefix = clipTextPrefixOf(te.weights.keys());
  const layers = te.config.num_hidden_layers;
  if (!Number.isInteger(te.clipSkip) || te.clipSkip < 1 || te.clipSkip > layers)
    throw new Error(`text encoder training: clip skip ${te.clipSkip} is out of range (1 to ${layers})`);
  const params = new Params(g, te.weights, { ...spec.build, hook: textEncoderHook(network, textModelPrefix) });
  const out = buildClipTextModel(params, te.config, inputIds, { textModelPrefix, withProjection: false });
  return te.clipSkip === 1 ? out.lastHiddenState : out.finalLayerNorm(out.hiddenStates.at(-te.clipSkip)!); // [B, L, H]
}

/** The text encoder's LoRA modules, found by building it once in a scratch graph. */
function discoverTextEncoderModules(spec: TrainStepSpec, te: TextEncoderTrainSpec, tokens: number): LoraModule[] {
  const g = new Graph('lora_te_discovery');
  const network = new LoraNetwork({ ...spec.lora, prefix: 'lora_te', targets: textEncoderTargets });
  encodeText(g, spec, te, network, g.input('input_ids', 'int64', [1, tokens]));
  return network.modules;
}

/** `tail` placed after `head` in one flat vector. */
function concatLayouts(head: FlatLoraLayout, tail: FlatLoraLayout): FlatLoraLayout {
  return { tensors: [...head.tensors, ...tail.tensors.map((t) => ({ ...t, offset: t.offset + head.size }))], size: head.size + tail.size };
}

export function buildTextEncoderTrainStepGraph(spec: TrainStepSpec, te: TextEncoderTrainSpec): TextEncoderTrainStepGraph {
  if (spec.shape.addedCond || spec.unetConfig.addition_embed_type === 'text_time')
    throw new Error('text encoder training: SDXL (two text encoders, text_time conditioning) is not supported yet; train the UNet LoRA only');
  if (te.config.hidden_size !== spec.shape.contextDim)
    throw new Error(`text encoder training: the text encoder's hidden_size ${te.config.hidden_size} does not match the UNet's context width ${spec.shape.contextDim}`);
  const g = new Graph('train_step_te');
  const { batch, latentHeight, latentWidth, tokens, contextDim } = spec.shape;
  const x0 = g.input('latents', 'float32', [batch, spec.unetConfig.in_channels, latentHeight, latentWidth]); // [B, 4, h, w]
  const noise = g.input('noise', 'float32', x0.shape); // [B, 4, h, w]
  const timesteps = g.input('timesteps', 'int64', [batch]); // [B]
  const inputIds = g.input('input_ids', 'int64', [batch, tokens]); // [B, 77]
  const added = addedCondInputs(g, spec); // undefined: SD 1.x/2.x only

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

  // The text encoder's LoRA reads its tensors from the text part of the same flat vector.
  const byName = new Map(layout.tensors.map((t) => [t.name, t]));
  const textNetwork = new LoraNetwork({ ...spec.lora, prefix: 'lora_te', targets: textEncoderTargets }, (name, shape) => {
    const t = byName.get(name);
    if (!t || t.shape.join() !== shape.join()) throw new Error(`LoRA tensor ${name} [${shape}] is not in the discovered layout`);
    return op.reshape(op.slice(state.params, [t.offset], [t.offset + t.size], [0]), shape); // a view of [P]
  });
  const hidden = g.scope('text_encoder', () => encodeText(g, spec, te, textNetwork, inputIds)); // [B, 77, C]

  const ratio = te.lrRatio ?? 1;
  const textSize = layout.size - unetLayout.size;
  const lrScale =
    ratio === 1
      ? undefined
      : op.concat([op.expand(g.constant([1], 'float32', [1]), [unetLayout.size]), op.expand(g.constant([ratio], 'float32', [1]), [textSize])], 0); // [P]
  const step = appendTrainStep(g, spec, layout, { x0, noise, timesteps, context: hidden, added }, state, adamwStepInputs(g), lossScale, {
    network: textNetwork,
    lrScale,
  });

  const names = outputStepResults(g, state, step.state, { loss: step.loss, gradNorm: step.norm, finite: step.finite && flagAsFloat(step.finite, step.norm) });
  return {
    graph: g,
    modules: [...step.network.modules, ...textNetwork.modules],
    inputs: { latents: x0.name, noise: noise.name, timesteps: timesteps.name, inputIds: inputIds.name },
    layout,
    textEncoderOffset: unetLayout.size,
    state: names,
    outputs: { loss: 'loss', gradNorm: 'grad_norm' },
    ...(lossScale ? { lossScaling: { scale: lossScale.name, finite: 'grads_finite' } } : {}),
  };
}
