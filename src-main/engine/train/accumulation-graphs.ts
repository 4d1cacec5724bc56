// Gradient accumulation as two graphs: the gradient graph runs once per micro-batch (loss and
// d loss / d every LoRA tensor; the host sums the gradients), the update graph once per optimizer
// step on their mean, with the same global-norm clipping and AdamW as the fused step graph in
// train-step-graph.ts. Without accumulation the fused graph is used (one run per step).
//
//   buildGradientGraph(spec): GradientGraph        spec as for buildTrainStepGraph, minus adamw/clipping
//   buildUpdateGraph(params, adamw, maxGradNorm): UpdateGraph
import { gradients } from '../autodiff/gradients';
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { LoraNetwork } from '../lora/lora-network';
import { buildUNet2DCondition } from '../models/unet-2d-condition';
import { Params } from '../nn/params';
import { adamwStepInputs, adamwUpdate, type AdamWConfig } from './adamw';
import { noiseBatch, weightedMse } from './diffusion-loss';
import type { TrainStepGraph, TrainStepSpec } from './train-step-graph';

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
  const { noisy, target, weight } = noiseBatch(g, spec.alphasCumprod, x0, noise, timesteps, spec.loss);

  const network = new LoraNetwork({ ...spec.lora, prefix: 'lora_unet' });
  const params = new Params(g, spec.weights, { ...spec.build, hook: network.hook() });
  const dtype = spec.build.dtype;
  const prediction = buildUNet2DCondition(params, spec.unetConfig, {
    sample: op.cast(noisy, dtype), // [B, 4, h, w]
    timestep: op.cast(timesteps, dtype), // [B]
    encoderHiddenStates: op.cast(context, dtype), // [B, 77, C]
  }); // [B, 4, h, w]
  const loss = weightedMse(prediction, target, weight); // []

  const trainable = network.parameters();
  const grads = gradients(loss, trainable);
  const outputs = trainable.map((param, i) => ({
    name: param.name,
    shape: [...param.shape],
    grad: g.output(op.cast(grads[i], 'float32'), `${param.name}.grad`).name, // like its parameter
  }));
  g.output(loss, 'loss');
  return {
    graph: g,
    network,
    inputs: { latents: x0.name, noise: noise.name, timesteps: timesteps.name, encoderHiddenStates: context.name },
    params: outputs,
    outputs: { loss: 'loss' },
  };
}

export interface UpdateGraph {
  graph: Graph;
  /** As TrainStepGraph.state, plus each tensor's gradient input. */
  state: (TrainStepGraph['state'][number] & { grad: string })[];
  outputs: { gradNorm: string };
}

/** Global-norm clipping (as clipByGlobalNorm in train-step-graph.ts) and AdamW on given float32 gradients. */
export function buildUpdateGraph(params: readonly { name: string; shape: readonly number[] }[], adamw: AdamWConfig, maxGradNorm: number | undefined): UpdateGraph {
  const g = new Graph('train_update');
  const values = params.map((p) => g.input(p.name, 'float32', [...p.shape])); // each [r, in] / [out, r] / conv shapes
  const gradInputs = params.map((p) => g.input(`${p.name}.grad`, 'float32', [...p.shape])); // like the values
  const squares = gradInputs.map((gr) => op.sumAll(op.mul(gr, gr))); // each []
  const norm = op.sqrt(squares.reduce((a, b) => op.add(a, b))); // []
  let grads: Value[] = gradInputs;
  if (maxGradNorm !== undefined) {
    const coef = op.min(op.div(op.scalarLike(norm, maxGradNorm), op.add(norm, 1e-6)), 1); // []
    grads = gradInputs.map((gr) => op.mul(gr, coef));
  }
  const step = adamwStepInputs(g);
  const state: UpdateGraph['state'] = [];
  values.forEach((param, i) => {
    const m = g.input(`${param.name}.m`, 'float32', param.shape);
    const v = g.input(`${param.name}.v`, 'float32', param.shape);
    const updated = adamwUpdate(adamw, step, param, grads[i], m, v);
    const newParam = g.output(updated.param, `${param.name}.new`).name;
    const newM = g.output(updated.m, `${param.name}.m.new`).name;
    const newV = g.output(updated.v, `${param.name}.v.new`).name;
    state.push({ name: param.name, shape: [...param.shape], m: m.name, v: v.name, newParam, newM, newV, grad: gradInputs[i].name });
  });
  g.output(norm, 'grad_norm');
  return { graph: g, state, outputs: { gradNorm: 'grad_norm' } };
}
