// AdamW as graph ops, with torch.optim.AdamW's exact order of operations (decoupled weight decay
// first, then the moment updates, bias correction folded into the step size and the denominator).
// The step-dependent scalars are graph inputs so one graph serves every step.
import type { Graph, Value } from '../graph/graph';
import * as op from '../graph/ops';

export interface AdamWConfig {
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

export const DEFAULT_ADAMW: AdamWConfig = { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 };

/** Scalars that change every step, fed as float32 [] inputs. */
export interface AdamWStepInputs {
  lr: Value;
  /** 1 - beta1^t */
  biasCorrection1: Value;
  /** sqrt(1 - beta2^t) */
  biasCorrection2Sqrt: Value;
}

export function adamwStepInputs(g: Graph): AdamWStepInputs {
  return {
    lr: g.input('adamw.lr', 'float32', []),
    biasCorrection1: g.input('adamw.bias_correction1', 'float32', []),
    biasCorrection2Sqrt: g.input('adamw.bias_correction2_sqrt', 'float32', []),
  };
}

/** The values of those inputs at 1-based step t. */
export function adamwStepValues(config: AdamWConfig, lr: number, t: number): Record<string, number> {
  return {
    'adamw.lr': lr,
    'adamw.bias_correction1': 1 - config.betas[0] ** t,
    'adamw.bias_correction2_sqrt': Math.sqrt(1 - config.betas[1] ** t),
  };
}

/** One AdamW update of a float32 parameter; returns the new parameter and moments. */
export function adamwUpdate(
  config: AdamWConfig,
  step: AdamWStepInputs,
  param: Value,
  grad: Value,
  m: Value,
  v: Value,
): { param: Value; m: Value; v: Value } {
  const [beta1, beta2] = config.betas;
  const decayed = op.mul(param, op.sub(op.scalarLike(param, 1), op.mul(step.lr, config.weightDecay))); // p (1 - lr wd)
  const m1 = op.add(op.mul(m, beta1), op.mul(grad, 1 - beta1)); // b1 m + (1 - b1) g
  const v1 = op.add(op.mul(v, beta2), op.mul(op.mul(grad, grad), 1 - beta2)); // b2 v + (1 - b2) g^2
  const denom = op.add(op.div(op.sqrt(v1), step.biasCorrection2Sqrt), config.eps); // sqrt(v) / sqrt(bc2) + eps
  const stepSize = op.div(step.lr, step.biasCorrection1); // lr / bc1
  const updated = op.sub(decayed, op.mul(stepSize, op.div(m1, denom))); // p - lr/bc1 * m / denom
  return { param: updated, m: m1, v: v1 };
}
