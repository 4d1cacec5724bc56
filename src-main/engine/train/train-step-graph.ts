// One training step as one graph, built once per shape bucket: noise the latents, run the UNet
// with the LoRA attached, the loss, backward to the LoRA tensors only (our autodiff), optional
// global gradient-norm clipping and the AdamW update. Inputs are the batch, the step scalars and
// the LoRA weights with their moments; outputs the loss and the updated weights and moments.
import { gradients } from '../autodiff/gradients';
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import { LoraNetwork, type LoraSpec } from '../lora/lora-network';
import { Params, type BuildOptions, type WeightLocator } from '../nn/params';
import { buildUNet2DCondition, type UNet2DConditionConfig } from '../models/unet-2d-condition';
import { adamwStepInputs, adamwUpdate, type AdamWConfig } from './adamw';
import { noiseBatch, weightedMse, type DiffusionLossOptions } from './diffusion-loss';

export interface TrainShape {
  batch: number;
  latentHeight: number;
  latentWidth: number;
  /** Text tokens and embedding width of the cached encoder hidden states ([77, 768] for SD1.5). */
  tokens: number;
  contextDim: number;
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
  inputs: { latents: string; noise: string; timesteps: string; encoderHiddenStates: string };
  /** For each trainable tensor name: the names of its moment inputs and of the three updated outputs. */
  state: { name: string; shape: number[]; m: string; v: string; newParam: string; newM: string; newV: string }[];
  outputs: { loss: string; gradNorm: string };
  /**
   * float16 graphs only: the loss-scale input (gradients are computed for loss * scale so small
   * float16 gradients do not flush to zero, then unscaled in float32) and the bool output that says
   * whether all gradients were finite; when they were not, the step keeps the old state and the
   * host lowers the scale (dynamic loss scaling).
   */
  lossScaling?: { scale: string; finite: string };
}

/** The scalar grad-norm, and the gradients scaled by min(1, maxNorm / (norm + 1e-6)) when clipping. */
function clipByGlobalNorm(grads: Value[], maxNorm: number | undefined): { grads: Value[]; norm: Value } {
  const squares = grads.map((gr) => op.sumAll(op.mul(gr, gr))); // each []
  const norm = op.sqrt(squares.reduce((a, b) => op.add(a, b))); // []
  if (maxNorm === undefined) return { grads, norm };
  const coef = op.min(op.div(op.scalarLike(norm, maxNorm), op.add(norm, 1e-6)), 1); // []
  return { grads: grads.map((gr) => op.mul(gr, coef)), norm };
}

export function buildTrainStepGraph(spec: TrainStepSpec): TrainStepGraph {
  const g = new Graph('train_step');
  const { batch, latentHeight, latentWidth, tokens, contextDim } = spec.shape;
  const latentChannels = spec.unetConfig.in_channels;
  const x0 = g.input('latents', 'float32', [batch, latentChannels, latentHeight, latentWidth]); // [B, 4, h, w]
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
  const scaled = dtype === 'float16';
  const lossScale = scaled ? g.input('loss_scale', 'float32', []) : undefined;
  const rawGrads = gradients(lossScale ? op.mul(loss, lossScale) : loss, trainable).map((gr) => op.cast(gr, 'float32'));
  const unscaled = lossScale ? rawGrads.map((gr) => op.div(gr, lossScale)) : rawGrads; // each like its parameter
  const { grads, norm } = clipByGlobalNorm(unscaled, spec.maxGradNorm);
  const finite = scaled ? op.equal(op.sub(norm, norm), 0) : undefined; // NaN and inf give NaN - NaN != 0
  const keepIfOverflow = (next: Value, previous: Value): Value => (finite ? op.where(finite, next, previous) : next);

  const step = adamwStepInputs(g);
  const state: TrainStepGraph['state'] = [];
  trainable.forEach((param, i) => {
    const m = g.input(`${param.name}.m`, 'float32', param.shape);
    const v = g.input(`${param.name}.v`, 'float32', param.shape);
    const updated = adamwUpdate(spec.adamw, step, param, grads[i], m, v);
    const newParam = g.output(keepIfOverflow(updated.param, param), `${param.name}.new`).name;
    const newM = g.output(keepIfOverflow(updated.m, m), `${param.name}.m.new`).name;
    const newV = g.output(keepIfOverflow(updated.v, v), `${param.name}.v.new`).name;
    state.push({ name: param.name, shape: [...param.shape], m: m.name, v: v.name, newParam, newM, newV });
  });
  g.output(loss, 'loss');
  g.output(norm, 'grad_norm');
  if (finite) g.output(finite, 'grads_finite');
  return {
    graph: g,
    network,
    inputs: { latents: x0.name, noise: noise.name, timesteps: timesteps.name, encoderHiddenStates: context.name },
    state,
    outputs: { loss: 'loss', gradNorm: 'grad_norm' },
    ...(lossScale ? { lossScaling: { scale: lossScale.name, finite: 'grads_finite' } } : {}),
  };
}
