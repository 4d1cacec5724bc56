// K training steps in one graph, one after the other, over one copy of the frozen weights. The
// Node binding of onnxruntime cannot keep tensors on a CUDA device between runs, so every run
// copies the LoRA weights and both AdamW moments to the GPU and back (73 MiB for SD1.5 at rank 16,
// measured at about half of a batch-1 step on the H100); K steps per run pay that once. The result
// is the same as K runs of the single-step graph (the steps are chained through the state).
// Batch inputs are the K batches stacked: latents [K*B, 4, h, w], timesteps [K*B], ...; the
// step scalars are [K]; loss, grad_norm (and grads_finite) come out as [K].
// float16 (one loss scale for the whole run): a step whose gradients overflow keeps the state, and
// so does every later step of the run (grads_finite[k] = 1 only when step k and all before it were
// applied). The host then redoes the later steps in new runs with the lowered scale, which is what
// one step per run does (trainer.ts).
// With `partialRuns`, the input steps.taken [K] (1 or 0) lets a run take only its first steps: from
// the first 0 on the state is kept, so runs that end at a checkpoint or at the last step use the
// same graph (and session, with its one copy of the frozen weights); the steps not taken still compute.
import { Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import type { FlatLoraLayout, LoraModule } from '../lora/lora-network';
import type { AdamWStepInputs } from './adamw';
import {
  addedCondInputs,
  appendTrainStep,
  batchInputNames,
  discoverLoraLayout,
  flagAsFloat,
  outputStepResults,
  type FlatTrainState,
  type TrainStepGraph,
  type TrainStepSpec,
} from './train-step-graph';

export interface MultiStepGraph extends Omit<TrainStepGraph, 'network'> {
  steps: number;
  /** The LoRA modules every step trains (the first step's network; all K read the same flat state). */
  modules: LoraModule[];
  /** partialRuns: the name of the steps.taken input (float32 [K], 1 = take step k, as long as every step before it was taken). */
  stepsTaken?: string;
}

export interface MultiStepOptions {
  /** Add the steps.taken input, for runs of fewer than K steps (see above). */
  partialRuns?: boolean;
}

/** a * b for float 1/0 flags, either of which may be absent (= 1). */
const product = (a: Value | undefined, b: Value | undefined): Value | undefined => (a && b ? op.mul(a, b) : (a ?? b));

export function buildMultiStepTrainGraph(spec: TrainStepSpec, steps: number, { partialRuns = false }: MultiStepOptions = {}): MultiStepGraph {
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`steps per run must be a positive integer, got ${steps}`);
  const g = new Graph('train_steps');
  const { batch, latentHeight, latentWidth, tokens, contextDim } = spec.shape;
  const channels = spec.unetConfig.in_channels;
  const rows = steps * batch;
  const x0 = g.input('latents', 'float32', [rows, channels, latentHeight, latentWidth]); // [K*B, 4, h, w]
  const noise = g.input('noise', 'float32', x0.shape); // [K*B, 4, h, w]
  const timesteps = g.input('timesteps', 'int64', [rows]); // [K*B]
  const context = g.input('encoder_hidden_states', 'float32', [rows, tokens, contextDim]); // [K*B, 77, C]
  const added = addedCondInputs(g, { ...spec, shape: { ...spec.shape, batch: rows } }); // SDXL: [K*B, P], [K*B, 6]
  const scalarInputs = {
    lr: g.input('adamw.lr', 'float32', [steps]),
    biasCorrection1: g.input('adamw.bias_correction1', 'float32', [steps]),
    biasCorrection2Sqrt: g.input('adamw.bias_correction2_sqrt', 'float32', [steps]),
  };
  const layout: FlatLoraLayout = discoverLoraLayout(spec, { sample: [batch, channels, latentHeight, latentWidth], context: [batch, tokens, contextDim] });
  const first: FlatTrainState = {
    params: g.input('lora.params', 'float32', [layout.size]), // [P]
    m: g.input('adamw.m', 'float32', [layout.size]), // [P]
    v: g.input('adamw.v', 'float32', [layout.size]), // [P]
  };
  const lossScale = spec.build.dtype === 'float16' ? g.input('loss_scale', 'float32', []) : undefined;
  const taken = partialRuns ? g.input('steps.taken', 'float32', [steps]) : undefined; // [K] 1/0

  const rowsOf = (x: Value, k: number): Value => op.slice(x, [k * batch], [(k + 1) * batch], [0]); // step k's [B, ...]
  const scalarOf = (x: Value, k: number): Value => op.reshape(op.slice(x, [k], [k + 1], [0]), []); // []
  let state = first;
  let modules: LoraModule[] = [];
  /**
   * 1 when every step so far was taken and applied, else 0 (float32 []: Where and And on bool are not
   * on every provider); undefined while nothing can stop the run (before the first step, float32 without partialRuns).
   */
  let appliedSoFar: Value | undefined;
  const losses: Value[] = [];
  const norms: Value[] = [];
  const finites: Value[] = [];
  for (let k = 0; k < steps; k++) {
    const scalars: AdamWStepInputs = {
      lr: scalarOf(scalarInputs.lr, k),
      biasCorrection1: scalarOf(scalarInputs.biasCorrection1, k),
      biasCorrection2Sqrt: scalarOf(scalarInputs.biasCorrection2Sqrt, k),
    };
    const stepBatch = {
      x0: rowsOf(x0, k),
      noise: rowsOf(noise, k),
      timesteps: rowsOf(timesteps, k),
      context: rowsOf(context, k),
      added: added && { textEmbeds: rowsOf(added.textEmbeds, k), timeIds: rowsOf(added.timeIds, k) },
    };
    const step = g.scope(`step${k}`, () => appendTrainStep(g, spec, layout, stepBatch, state, scalars, lossScale));
    if (k === 0) modules = step.network.modules;
    // Once a step overflowed (its state is already kept) or was not to be taken, the rest of the run
    // keeps the state: after an overflow its steps ran with a scale and step count the host will change.
    const gate = product(appliedSoFar, taken && scalarOf(taken, k)); // [] 1/0, or undefined: take the step
    const goOn = gate && op.equal(gate, 1); // [] bool
    const keepIfStopped = (next: Value, previous: Value): Value => (goOn ? op.where(goOn, next, previous) : next);
    state = { params: keepIfStopped(step.state.params, state.params), m: keepIfStopped(step.state.m, state.m), v: keepIfStopped(step.state.v, state.v) }; // each [P]
    appliedSoFar = product(gate, step.finite && flagAsFloat(step.finite, step.norm)); // [] 1/0: this step and all before it taken and finite
    losses.push(op.reshape(step.loss, [1]));
    norms.push(op.reshape(step.norm, [1]));
    if (step.finite) finites.push(op.reshape(appliedSoFar!, [1]));
  }
  const names = outputStepResults(g, first, state, {
    loss: op.concat(losses, 0), // [K]
    gradNorm: op.concat(norms, 0), // [K]
    finite: lossScale ? op.concat(finites, 0) : undefined, // [K]
  });
  return {
    graph: g,
    steps,
    modules,
    ...(taken ? { stepsTaken: taken.name } : {}),
    inputs: batchInputNames(x0, noise, timesteps, context, added),
    layout,
    state: names,
    outputs: { loss: 'loss', gradNorm: 'grad_norm' },
    ...(lossScale ? { lossScaling: { scale: lossScale.name, finite: 'grads_finite' } } : {}),
  };
}
