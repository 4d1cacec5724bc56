// The denoising objective as graph ops: noise the clean latents at the sampled timesteps, ask the
// model, and compare with the epsilon or velocity target; optional min-SNR-gamma weighting.
// Noise (including the noise offset) and timesteps are sampled on the host and fed in, so the
// graph is deterministic and a run is reproducible from its seed.
import type { Graph, Value } from '../graph/graph';
import * as op from '../graph/ops';

export type PredictionType = 'epsilon' | 'v_prediction';

export interface DiffusionLossOptions {
  prediction: PredictionType;
  /** min-SNR-gamma weighting (Hang et al. 2023); undefined = plain MSE. */
  minSnrGamma?: number;
}

export interface NoisedBatch {
  noisy: Value; // [B, C, h, w]
  target: Value; // [B, C, h, w]
  /** Per-sample loss weight [B], 1 without min-SNR. */
  weight: Value | undefined;
}

/** x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise and the training target, in float32. */
export function noiseBatch(
  g: Graph,
  alphasCumprod: ArrayLike<number>,
  x0: Value,
  noise: Value,
  timesteps: Value,
  options: DiffusionLossOptions,
): NoisedBatch {
  const n = alphasCumprod.length;
  const acp = Array.from(alphasCumprod);
  const table = (f: (a: number) => number): Value => g.constant(acp.map(f), 'float32', [n]); // [T]
  const perSample = (t: Value): Value => op.reshape(op.gather(t, timesteps), [timesteps.shape[0], 1, 1, 1]); // [B,1,1,1]
  const sqrtAcp = perSample(table((a) => Math.sqrt(a))); // [B,1,1,1]
  const sqrtOneMinusAcp = perSample(table((a) => Math.sqrt(1 - a))); // [B,1,1,1]
  const noisy = op.add(op.mul(sqrtAcp, x0), op.mul(sqrtOneMinusAcp, noise)); // [B, C, h, w]
  const target =
    options.prediction === 'epsilon'
      ? noise
      : op.sub(op.mul(sqrtAcp, noise), op.mul(sqrtOneMinusAcp, x0)); // v = sqrt(acp) eps - sqrt(1-acp) x0
  let weight: Value | undefined;
  if (options.minSnrGamma !== undefined) {
    const gamma = options.minSnrGamma;
    // snr = acp / (1 - acp); weight = min(snr, gamma) / snr for epsilon, / (snr + 1) for v.
    const w = acp.map((a) => {
      const snr = a / (1 - a);
      return Math.min(snr, gamma) / (options.prediction === 'epsilon' ? snr : snr + 1);
    });
    weight = op.gather(g.constant(w, 'float32', [n]), timesteps); // [B]
  }
  return { noisy, target, weight };
}

/** mean over the batch of (weight *) the per-sample mean squared error, as a float32 scalar. */
export function weightedMse(prediction: Value, target: Value, weight: Value | undefined): Value {
  const diff = op.sub(op.cast(prediction, 'float32'), target); // [B, C, h, w]
  const perSample = op.reduceMean(op.mul(diff, diff), [1, 2, 3], false); // [B]
  return op.meanAll(weight ? op.mul(perSample, weight) : perSample); // []
}
