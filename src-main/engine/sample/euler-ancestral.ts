// "Euler a": Euler steps with ancestral noise (k-diffusion's sample_euler_ancestral, eta 1), as
// diffusers' EulerAncestralDiscreteScheduler. Each step goes deterministically down to sigma_down
// and adds fresh noise of size sigma_up, where sigma_down^2 + sigma_up^2 = sigma_next^2 and
// sigma_up = sigma_next * sqrt(1 - sigma_next^2 / sigma^2). The noise comes from the caller's Rng.
import type { Rng } from './rng';
import { EULER_DEFAULTS, EulerDiscreteScheduler, predictOriginal } from './euler';
import { checkSameLength, requireOneOf } from './scheduler';

/** The keys EulerAncestralDiscreteScheduler has upstream; Euler-only keys are ignored, as upstream. */
const ANCESTRAL_KEYS = [
  'num_train_timesteps',
  'beta_start',
  'beta_end',
  'beta_schedule',
  'trained_betas',
  'prediction_type',
  'timestep_spacing',
  'steps_offset',
  'rescale_betas_zero_snr',
] as const;

export class EulerAncestralDiscreteScheduler extends EulerDiscreteScheduler {
  constructor(config: Readonly<Record<string, unknown>> = {}) {
    const own: Record<string, unknown> = {};
    for (const key of ANCESTRAL_KEYS) if (key in config) own[key] = config[key];
    super(own, EULER_DEFAULTS, 'EulerAncestralDiscreteScheduler');
    requireOneOf(this.className, 'prediction_type', this.config.prediction_type, ['epsilon', 'v_prediction']);
  }

  override step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    if (!rng) throw new Error(`${this.className}: step needs an rng for the ancestral noise`);
    checkSameLength(this.className, modelOutput, sample);
    const index = this.currentIndex(t);
    const sigma = this.sigmas[index]!;
    const sigmaNext = this.sigmas[index + 1]!;
    const x0 = predictOriginal(this.config.prediction_type, modelOutput, sample, sigma);
    const sigmaUp = Math.sqrt((sigmaNext * sigmaNext * (sigma * sigma - sigmaNext * sigmaNext)) / (sigma * sigma));
    const sigmaDown = Math.sqrt(sigmaNext * sigmaNext - sigmaUp * sigmaUp);
    const dt = sigmaDown - sigma;
    const noise = rng.normal(sample.length);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) out[i] = sample[i]! + ((sample[i]! - x0[i]!) / sigma) * dt + noise[i]! * sigmaUp;
    this.predictedOriginal = x0;
    this.stepIndex = index + 1;
    return out;
  }
}
