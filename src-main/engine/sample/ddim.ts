// DDIM (Song et al. 2021) as diffusers' DDIMScheduler: deterministic for eta = 0, the DDPM
// posterior for eta = 1. Integer timesteps; the previous timestep is always t - T // n (an
// upstream convention, also for "trailing" and "linspace" spacing).
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

export interface DDIMSchedulerConfig extends DiscreteSchedulerConfig {
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
}

export const DDIM_DEFAULTS: DDIMSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  clip_sample: true,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: 'leading',
  rescale_betas_zero_snr: false,
};

export interface DDIMOptions {
  /** Weight of the stochastic term: 0 = DDIM (default), 1 = DDPM-like ancestral sampling. */
  eta?: number;
}

export class DDIMScheduler implements Scheduler {
  readonly className = 'DDIMScheduler';
  readonly config: Readonly<DDIMSchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly initNoiseSigma = 1;
  readonly eta: number;
  timesteps = new Int32Array(0);
  predictedOriginal: Float32Array | undefined;
  private numInferenceSteps = 0;
  /** alphas_cumprod used past the last step: 1 (set_alpha_to_one) or alphas_cumprod[0]. */
  private readonly finalAlphaCumprod: number;

  constructor(config: Readonly<Record<string, unknown>> = {}, options: DDIMOptions = {}) {
    const c = resolveConfig(this.className, DDIM_DEFAULTS, config);
    requireOneOf(this.className, 'prediction_type', c.prediction_type, ['epsilon', 'v_prediction', 'sample']);
    requireOneOf(this.className, 'timestep_spacing', c.timestep_spacing, ['leading', 'trailing', 'linspace']);
    requireOneOf(this.className, 'thresholding', c.thresholding, [false]);
    this.config = c;
    this.schedule = NoiseSchedule.fromConfig(c, this.className);
    this.finalAlphaCumprod = c.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
    this.eta = options.eta ?? 0;
    if (!(this.eta >= 0)) throw new Error(`${this.className}: eta must be >= 0, got ${this.eta}`);
  }

  setTimesteps(numInferenceSteps: number): void {
    const T = this.config.num_train_timesteps;
    checkStepCount(this.className, numInferenceSteps, T);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = Int32Array.from(spacedTimesteps(this.config.timestep_spacing, T, numInferenceSteps, this.config.steps_offset, this.className));
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}: call setTimesteps before step`);
    checkSameLength(this.className, modelOutput, sample);
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const alphaProd = this.schedule.alphaCumprod(t);
    const alphaProdPrev = prevT >= 0 ? this.schedule.alphaCumprod(prevT) : this.finalAlphaCumprod;
    const betaProd = 1 - alphaProd;
    const sqrtAlpha = Math.sqrt(alphaProd);
    const sqrtBeta = Math.sqrt(betaProd);
    // Eq. 16: sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).
    const variance = ((1 - alphaProdPrev) / betaProd) * (1 - alphaProd / alphaProdPrev);
    const stdDev = this.eta * Math.sqrt(variance);
    const directionCoeff = Math.sqrt(1 - alphaProdPrev - stdDev * stdDev);
    const sqrtAlphaPrev = Math.sqrt(alphaProdPrev);
    const { clip_sample: clip, clip_sample_range: range, prediction_type: prediction } = this.config;
    if (stdDev > 0 && !rng) throw new Error(`${this.className}: eta > 0 needs an rng for the step noise`);

    const x0 = new Float32Array(sample.length);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i]!;
      const m = modelOutput[i]!;
      let predX0: number;
      let predEps: number;
      if (prediction === 'epsilon') {
        predX0 = (x - sqrtBeta * m) / sqrtAlpha;
        predEps = m;
      } else if (prediction === 'sample') {
        predX0 = m;
        predEps = (x - sqrtAlpha * m) / sqrtBeta;
      } else {
        predX0 = sqrtAlpha * x - sqrtBeta * m;
        predEps = sqrtAlpha * m + sqrtBeta * x;
      }
      // Clipping changes x0 only; epsilon stays the model's (upstream use_clipped_model_output=False).
      if (clip) predX0 = Math.min(range, Math.max(-range, predX0));
      x0[i] = predX0;
      out[i] = sqrtAlphaPrev * predX0 + directionCoeff * predEps;
    }
    if (stdDev > 0) for (let i = 0; i < out.length; i++) out[i] = out[i]! + stdDev * rng!.normalValue();
    this.predictedOriginal = x0;
    return out;
  }
}
