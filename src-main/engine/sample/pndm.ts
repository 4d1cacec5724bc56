// PNDM's pseudo linear multistep part (PLMS, Liu et al. 2022) as diffusers' PNDMScheduler with
// skip_prk_steps = true, the configuration Stable Diffusion ships. The first step is a
// two-evaluation (Heun-like) step, so the schedule repeats one timestep: n steps use n + 1 model
// evaluations. Runge-Kutta warm-up steps (skip_prk_steps = false) are not implemented.
import { NoiseSchedule, linspace, roundHalfEven } from './noise-schedule';
import {
  arange,
  checkSameLength,
  checkStepCount,
  requireOneOf,
  resolveConfig,
  type Scheduler,
  type TimestepSpacing,
} from './scheduler';
import type { NoiseScheduleConfig } from './noise-schedule';

export interface PNDMSchedulerConfig extends NoiseScheduleConfig {
  skip_prk_steps: boolean;
  set_alpha_to_one: boolean;
  prediction_type: 'epsilon' | 'v_prediction';
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

export const PNDM_DEFAULTS: PNDMSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  steps_offset: 0,
};

export class PNDMScheduler implements Scheduler {
  readonly className = 'PNDMScheduler';
  readonly config: Readonly<PNDMSchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly initNoiseSigma = 1;
  timesteps = new Int32Array(0);
  /** PNDM does not predict x0; kept undefined. */
  readonly predictedOriginal: Float32Array | undefined = undefined;
  private numInferenceSteps = 0;
  private readonly finalAlphaCumprod: number;
  /** Model outputs (epsilon) of the last steps, oldest first: at most 4. */
  private ets: Float32Array[] = [];
  private counter = 0;
  /** The sample at the start of the first (two-evaluation) step. */
  private firstSample: Float32Array | undefined;

  constructor(config: Readonly<Record<string, unknown>> = {}) {
    const name = this.className;
    // rescale_betas_zero_snr is not a PNDM key upstream, so it is ignored like any foreign key.
    const c = resolveConfig(name, PNDM_DEFAULTS, config);
    if (!c.skip_prk_steps)
      throw new Error(`${name}: config skip_prk_steps = false (Runge-Kutta warm-up) is not supported; Stable Diffusion configs set it to true`);
    requireOneOf(name, 'prediction_type', c.prediction_type, ['epsilon', 'v_prediction']);
    requireOneOf(name, 'timestep_spacing', c.timestep_spacing, ['leading', 'trailing', 'linspace']);
    this.config = c;
    this.schedule = NoiseSchedule.fromConfig({ ...c, rescale_betas_zero_snr: false }, name);
    this.finalAlphaCumprod = c.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    checkStepCount(this.className, numInferenceSteps, T);
    const n = numInferenceSteps;
    this.numInferenceSteps = n;
    let ascending: number[];
    if (c.timestep_spacing === 'linspace') ascending = Array.from(linspace(0, T - 1, n), roundHalfEven);
    else if (c.timestep_spacing === 'leading') ascending = Array.from({ length: n }, (_, i) => i * Math.floor(T / n) + c.steps_offset);
    else ascending = Array.from(arange(T, 0, -T / n), roundHalfEven).reverse().map((t) => t - 1);
    // [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed: the second-highest timestep is visited twice.
    const plms = n === 1 ? ascending : [...ascending.slice(0, -1), ascending[n - 2]!, ascending[n - 1]!].reverse();
    this.timesteps = Int32Array.from(plms);
    this.ets = [];
    this.counter = 0;
    this.firstSample = undefined;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new Error(`${this.className}: call setTimesteps before step`);
    checkSameLength(this.className, modelOutput, sample);
    const stride = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let timestep = t;
    let prevTimestep = t - stride;
    if (this.counter !== 1) {
      this.ets.push(modelOutput);
      if (this.ets.length > 4) this.ets.shift();
    } else {
      // Second evaluation of the first step: it was taken at t - stride, the step goes from t.
      prevTimestep = t;
      timestep = t + stride;
    }

    const e = this.ets;
    const k = e.length;
    let combined: Float32Array;
    let from = sample;
    if (k === 1 && this.counter === 0) {
      combined = modelOutput;
      this.firstSample = sample;
    } else if (k === 1 && this.counter === 1) {
      combined = modelOutput.map((m, i) => (m + e[0]![i]!) / 2);
      from = this.firstSample!;
      this.firstSample = undefined;
    } else if (k === 2) {
      combined = e[1]!.map((m, i) => (3 * m - e[0]![i]!) / 2);
    } else if (k === 3) {
      combined = e[2]!.map((m, i) => (23 * m - 16 * e[1]![i]! + 5 * e[0]![i]!) / 12);
    } else {
      combined = e[3]!.map((m, i) => (55 * m - 59 * e[2]![i]! + 37 * e[1]![i]! - 9 * e[0]![i]!) / 24);
    }
    const out = this.previousSample(from, timestep, prevTimestep, combined);
    this.counter++;
    return out;
  }

  /** PNDM eq. 9: the transfer from x_t to x_{t_prev} given epsilon. */
  private previousSample(sample: Float32Array, t: number, prevT: number, modelOutput: Float32Array): Float32Array {
    const alphaProd = this.schedule.alphaCumprod(t);
    const alphaProdPrev = prevT >= 0 ? this.schedule.alphaCumprod(prevT) : this.finalAlphaCumprod;
    const betaProd = 1 - alphaProd;
    const betaProdPrev = 1 - alphaProdPrev;
    const sampleCoeff = Math.sqrt(alphaProdPrev / alphaProd);
    const denominator = alphaProd * Math.sqrt(betaProdPrev) + Math.sqrt(alphaProd * betaProd * alphaProdPrev);
    const epsCoeff = (alphaProdPrev - alphaProd) / denominator;
    const vPrediction = this.config.prediction_type === 'v_prediction';
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const eps = vPrediction ? Math.sqrt(alphaProd) * modelOutput[i]! + Math.sqrt(betaProd) * sample[i]! : modelOutput[i]!;
      out[i] = sampleCoeff * sample[i]! - epsCoeff * eps;
    }
    return out;
  }
}
