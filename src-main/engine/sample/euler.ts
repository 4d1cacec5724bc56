// Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 2
// without churn), as diffusers' EulerDiscreteScheduler: sigma_i is the train schedule's
// sqrt((1 - acp) / acp) interpolated at fractional timesteps (or a Karras ramp), the UNet sees
// x / sqrt(sigma^2 + 1), and x0 = x - sigma * eps.
import { NoiseSchedule } from './noise-schedule';
import {
  checkSameLength,
  checkStepCount,
  indexForTimestep,
  interpIndex,
  karrasSigmas,
  requireOneOf,
  resolveConfig,
  sigmaToT,
  spacedFloatTimesteps,
  type DiscreteSchedulerConfig,
  type Scheduler,
} from './scheduler';

export interface EulerDiscreteSchedulerConfig extends DiscreteSchedulerConfig {
  interpolation_type: 'linear' | 'log_linear';
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  sigma_min: number | null;
  sigma_max: number | null;
  timestep_type: 'discrete' | 'continuous';
  final_sigmas_type: 'zero' | 'sigma_min';
}

export const EULER_DEFAULTS: EulerDiscreteSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  interpolation_type: 'linear',
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: 'linspace',
  timestep_type: 'discrete',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: 'zero',
};

export class EulerDiscreteScheduler implements Scheduler {
  readonly className: string;
  readonly config: Readonly<EulerDiscreteSchedulerConfig>;
  readonly schedule: NoiseSchedule;
  timesteps = new Float64Array(0);
  /** [n + 1] noise levels: one per timestep, then the final one (0 or sigma_min). */
  sigmas = new Float64Array(0);
  predictedOriginal: Float32Array | undefined;
  protected stepIndex: number | undefined;
  /** sqrt((1 - acp) / acp) of every train timestep (acp[T-1] = 2^-24 under zero-terminal-SNR, as upstream). */
  protected readonly trainSigmas: Float64Array;

  constructor(
    config: Readonly<Record<string, unknown>> = {},
    defaults: EulerDiscreteSchedulerConfig = EULER_DEFAULTS,
    /** For subclasses (Euler a) that reuse the schedule. */
    name = 'EulerDiscreteScheduler',
  ) {
    const c = resolveConfig(name, defaults, config);
    this.className = name;
    requireOneOf(name, 'prediction_type', c.prediction_type, ['epsilon', 'v_prediction', 'sample']);
    requireOneOf(name, 'timestep_spacing', c.timestep_spacing, ['leading', 'trailing', 'linspace']);
    requireOneOf(name, 'interpolation_type', c.interpolation_type, ['linear']);
    requireOneOf(name, 'use_exponential_sigmas', c.use_exponential_sigmas, [false]);
    requireOneOf(name, 'use_beta_sigmas', c.use_beta_sigmas, [false]);
    requireOneOf(name, 'timestep_type', c.timestep_type, ['discrete']);
    requireOneOf(name, 'final_sigmas_type', c.final_sigmas_type, ['zero', 'sigma_min']);
    for (const key of ['sigma_min', 'sigma_max'] as const)
      if (c[key] !== null && !(typeof c[key] === 'number' && c[key] > 0)) throw new Error(`${name}: config ${key} must be a positive number or null, got ${JSON.stringify(c[key])}`);
    this.config = c;
    this.schedule = NoiseSchedule.fromConfig(c, name);
    const acp = Float64Array.from(this.schedule.alphasCumprod);
    // Zero terminal SNR makes the last sigma infinite; diffusers clamps acp to 2^-24 (sigma ~ 4096).
    if (c.rescale_betas_zero_snr) acp[acp.length - 1] = 2 ** -24;
    this.trainSigmas = acp.map((a) => Math.sqrt((1 - a) / a));
  }

  get initNoiseSigma(): number {
    const max = this.sigmas.reduce((m, s) => Math.max(m, s), 0);
    // "leading" never reaches t = T-1, so the start is treated as x_T = x0 + noise with unit x0 variance.
    return this.config.timestep_spacing === 'leading' ? Math.sqrt(max * max + 1) : max;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(this.className, numInferenceSteps, c.num_train_timesteps);
    let timesteps = spacedFloatTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset, this.className);
    let sigmas: Float64Array = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    if (c.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map(Math.log);
      sigmas = karrasSigmas(c.sigma_min ?? sigmas[sigmas.length - 1]!, c.sigma_max ?? sigmas[0]!, numInferenceSteps);
      // Fractional timesteps whose sigma matches each Karras level; Euler keeps them unrounded.
      timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
    }
    const last = c.final_sigmas_type === 'sigma_min' ? this.trainSigmas[0]! : 0;
    this.sigmas = Float64Array.from([...sigmas, last]);
    // Upstream hands the UNet float32 timesteps.
    this.timesteps = timesteps.map(Math.fround);
    this.stepIndex = undefined;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this.sigmas[this.currentIndex(t)]!;
    const denominator = Math.sqrt(sigma * sigma + 1);
    return sample.map((x) => x / denominator);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkSameLength(this.className, modelOutput, sample);
    const index = this.currentIndex(t);
    const sigma = this.sigmas[index]!;
    const sigmaNext = this.sigmas[index + 1]!;
    const x0 = predictOriginal(this.config.prediction_type, modelOutput, sample, sigma);
    const dt = sigmaNext - sigma;
    const out = new Float32Array(sample.length);
    // d = (x - x0) / sigma; x_next = x + d * (sigma_next - sigma)
    for (let i = 0; i < sample.length; i++) out[i] = sample[i]! + ((sample[i]! - x0[i]!) / sigma) * dt;
    this.predictedOriginal = x0;
    this.stepIndex = index + 1;
    return out;
  }

  protected currentIndex(t: number): number {
    if (this.sigmas.length === 0) throw new Error(`${this.className}: call setTimesteps before sampling`);
    this.stepIndex ??= indexForTimestep(this.timesteps, t, this.className);
    if (this.stepIndex >= this.timesteps.length) throw new Error(`${this.className}: all ${this.timesteps.length} steps are done; call setTimesteps to sample again`);
    return this.stepIndex;
  }
}

/** x0 from the model output at noise level sigma (sigma-space parameterisation x = x0 + sigma * eps). */
export function predictOriginal(prediction: string, modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
  const x0 = new Float32Array(sample.length);
  if (prediction === 'epsilon') {
    for (let i = 0; i < sample.length; i++) x0[i] = sample[i]! - sigma * modelOutput[i]!;
  } else if (prediction === 'v_prediction') {
    // c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1)
    const cOut = -sigma / Math.sqrt(sigma * sigma + 1);
    const cSkip = 1 / (sigma * sigma + 1);
    for (let i = 0; i < sample.length; i++) x0[i] = modelOutput[i]! * cOut + sample[i]! * cSkip;
  } else {
    x0.set(modelOutput);
  }
  return x0;
}
