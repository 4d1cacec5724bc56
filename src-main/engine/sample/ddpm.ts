// Ancestral DDPM sampling (Ho et al. 2020, eq. 7) as diffusers' DDPMScheduler: the posterior mean
// of x_{t_prev} given x_t and the predicted x0, plus noise of the posterior variance
// ("fixed_small", or beta_t for "fixed_large"). Timesteps may skip (t_prev is the next scheduled one).
import { NoiseSchedule } from './noise-schedule';
import type { Rng } from './rng';
import {
  checkSameLength,
  checkStepCount,
  requireOneOf,
  resolveConfig,
  spacedTimesteps,
  type DiscreteSchedulerConfig,
  type Scheduler,
} from './scheduler';

export interface DDPMSchedulerConfig extends DiscreteSchedulerConfig {
  variance_type: string;
  clip_sample: boolean;
  clip_sample_range: number;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
}

export const DDPM_DEFAULTS: DDPMSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  variance_type: 'fixed_small',
  clip_sample: true,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: 'leading',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

export class DDPMScheduler implements Scheduler {
  readonly className = 'DDPMScheduler';
  readonly config: Readonly<DDPMSchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly initNoiseSigma = 1;
  timesteps = new Int32Array(0);
  predictedOriginal: Float32Array | undefined;

  constructor(config: Readonly<Record<string, unknown>> = {}) {
    const name = this.className;
    const c = resolveConfig(name, DDPM_DEFAULTS, config);
    requireOneOf(name, 'prediction_type', c.prediction_type, ['epsilon', 'v_prediction', 'sample']);
    requireOneOf(name, 'timestep_spacing', c.timestep_spacing, ['leading', 'trailing', 'linspace']);
    requireOneOf(name, 'variance_type', c.variance_type, ['fixed_small', 'fixed_small_log', 'fixed_large']);
    requireOneOf(name, 'thresholding', c.thresholding, [false]);
    this.config = c;
    this.schedule = NoiseSchedule.fromConfig(c, name);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(this.className, numInferenceSteps, c.num_train_timesteps);
    this.timesteps = Int32Array.from(spacedTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset, this.className));
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  /** The timestep after t in the schedule, -1 after the last (t - 1 before setTimesteps, as upstream). */
  previousTimestep(t: number): number {
    if (this.timesteps.length === 0) return t - 1;
    const index = this.timesteps.indexOf(t);
    if (index < 0) throw new Error(`${this.className}: timestep ${t} is not in the schedule`);
    return index === this.timesteps.length - 1 ? -1 : this.timesteps[index + 1]!;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    checkSameLength(this.className, modelOutput, sample);
    const c = this.config;
    const prevT = this.previousTimestep(t);
    const alphaProd = this.schedule.alphaCumprod(t);
    const alphaProdPrev = prevT >= 0 ? this.schedule.alphaCumprod(prevT) : 1;
    const betaProd = 1 - alphaProd;
    const betaProdPrev = 1 - alphaProdPrev;
    const currentAlpha = alphaProd / alphaProdPrev;
    const currentBeta = 1 - currentAlpha;
    // eq. 7: mean = sqrt(a_prev) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) x_t
    const x0Coeff = (Math.sqrt(alphaProdPrev) * currentBeta) / betaProd;
    const sampleCoeff = (Math.sqrt(currentAlpha) * betaProdPrev) / betaProd;
    const sqrtAlpha = Math.sqrt(alphaProd);
    const sqrtBeta = Math.sqrt(betaProd);
    const x0 = new Float32Array(sample.length);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i]!;
      const m = modelOutput[i]!;
      let predX0 = c.prediction_type === 'epsilon' ? (x - sqrtBeta * m) / sqrtAlpha : c.prediction_type === 'sample' ? m : sqrtAlpha * x - sqrtBeta * m;
      if (c.clip_sample) predX0 = Math.min(c.clip_sample_range, Math.max(-c.clip_sample_range, predX0));
      x0[i] = predX0;
      out[i] = x0Coeff * predX0 + sampleCoeff * x;
    }
    if (t > 0) {
      if (!rng) throw new Error(`${this.className}: step needs an rng for the posterior noise`);
      // Posterior variance beta~_t = (1 - a_prev) / (1 - a_t) beta_t, clamped as upstream.
      const variance = c.variance_type === 'fixed_large' ? currentBeta : Math.max((betaProdPrev / betaProd) * currentBeta, 1e-20);
      const std = Math.sqrt(variance);
      for (let i = 0; i < out.length; i++) out[i] = out[i]! + std * rng.normalValue();
    }
    this.predictedOriginal = x0;
    return out;
  }
}
