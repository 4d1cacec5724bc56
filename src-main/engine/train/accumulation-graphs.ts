// Gradient accumulation as two graphs: the gradient graph runs once per micro-batch (loss and
// d loss / d every LoRA tensor; the host sums the gradients into one flat vector), the update
// graph once per optimizer step on their mean, with the same global-norm clipping and AdamW as the fused step graph in
// train-step-graph.ts. Without accumulation the fused graph is used (one run per step).
//
//   buildGradientGraph(spec): GradientGraph        spec as for buildTrainStepGraph, minus adamw/clipping
//   buildUpdateGraph(size, adamw, maxGradNorm): UpdateGraph      flat [P] vectors, as the fused graph's state
import { gradients } from '../autodiff/gradients';
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { LoraNetwork } from '../lora/lora-network';
import { buildUNet2DCondition } from '../models/unet-2d-condition';
import { Params } from '../nn/params';
import { adamwStepInputs, adamwUpdate, type AdamWConfig } from './adamw';
import { noiseBatch, weightedMse } from './diffusion-loss';
import { addedCondInputs, backwardOptions, batchInputNames, type TrainStepGraph, type TrainStepSpec } from './train-step-graph';

export type GradientGraphSpec = Omit<TrainStepSpec, 'adamw' | 'maxGradNorm'>;

export interface GradientGraph {
  graph: Graph;
  network: LoraNetwork;
  inputs: TrainStepGraph['inputs'];
  /** Each trainable tensor: its input name (its kohya name), shape, and its gradient output. */
  params: { name: string; shape: number[]; grad: string }[];
  outputs: { loss: string };
}

/** The batch, noising, UNet with LoRA and loss, as in buildTrainStepGraph, then the gradients; no update. */
export function buildGradientGraph(spec: GradientGraphSpec): GradientGraph {
  const g = new Graph('train_gradients');
  const { batch, latentHeight, latentWidth, tokens, contextDim } = spec.shape;
  const x0 = g.input('latents', 'float32', [batch, spec.unetConfig.in_channels, latentHeight, latentWidth]); // [B, 4, h, w]
  const noise = g.input('noise', 'float32', x0.shape); // [B, 4, h, w]
  const timesteps = g.input('timesteps', 'int64', [batch]); // [B]
  const context = g.input('encoder_hidden_states', 'float32', [batch, tokens, contextDim]); // [B, 77, C]
  const added = addedCondInputs(g, spec); // SDXL: text_embeds [B, P], time_ids [B, 6]
  const { noisy, target, weight } = noiseBatch(g, spec.alphasCumprod, x0, noise, timesteps, spec.loss);

  const network = new LoraNetwork({ ...spec.lora, prefix: 'lora_unet' });
  const params = new Params(g, spec.weights, { ...spec.build, hook: network.hook() });
  const dtype = spec.build.dtype;
  const prediction = buildUNet2DCondition(params, spec.unetConfig, {
    sample: op.cast(noisy, dtype), // [B, 4, h, w]
    timestep: op.cast(timesteps, dtype), // [B]
    encoderHiddenStates: op.cast(context, dtype), // [B, 77, C]
    addedCond: added && { textEmbeds: op.cast(added.textEmbeds, dtype), timeIds: added.timeIds }, // [B, P], [B, 6]
  }); // [B, 4, h, w]
  const loss = weightedMse(prediction, target, weight); // []

  const trainable = network.parameters();
  const grads = gradients(loss, trainable, undefined, backwardOptions(spec.build));
  const outputs = trainable.map((param, i) => ({
    name: param.name,
    shape: [...param.shape],
    grad: g.output(op.cast(grads[i], 'float32'), `${param.name}.grad`).name, // like its parameter
  }));
  g.output(loss, 'loss');
  return {
    graph: g,
    network,
    inputs: batchInputNames(x0, noise, timesteps, context, added),
    params: outputs,
    outputs: { loss: 'loss' },
  };
}

export interface UpdateGraph {
  graph: Graph;
  /** Flat float32 vectors [P] in the layout of the fused step graph (flatLayout of the modules). */
  state: { params: string; grad: string; m: string; v: string; newParams: string; newM: string; newV: string };
  outputs: { gradNorm: string };
}

/** Global-norm clipping (as in train-step-graph.ts) and AdamW on a given flat float32 gradient [P]. */
export function buildUpdateGraph(size: number, adamw: AdamWConfig, maxGradNorm: number | undefined): UpdateGraph {
  const g = new Graph('train_update');
  const params = g.input('lora.params', 'float32', [size]); // [P]
  const rawGrad = g.input('lora.grad', 'float32', [size]); // [P]
  const m = g.input('adamw.m', 'float32', [size]); // [P]
  const v = g.input('adamw.v', 'float32', [size]); // [P]
  const norm = op.sqrt(op.sumAll(op.mul(rawGrad, rawGrad))); // []
  let grad: Value = rawGrad;
  if (maxGradNorm !== undefined) grad = op.mul(rawGrad, op.min(op.div(op.scalarLike(norm, maxGradNorm), op.add(norm, 1e-6)), 1)); // [P]
  const updated = adamwUpdate(adamw, adamwStepInputs(g), params, grad, m, v);
  const state = {
    params: params.name,
    grad: rawGrad.name,
    m: m.name,
    v: v.name,
    newParams: g.output(updated.param, 'lora.params.new').name,
    newM: g.output(updated.m, 'adamw.m.new').name,
    newV: g.output(updated.v, 'adamw.v.new').name,
  };
  g.output(norm, 'grad_norm');
  return { graph: g, state, outputs: { gradNorm: 'grad_norm' } };
}
