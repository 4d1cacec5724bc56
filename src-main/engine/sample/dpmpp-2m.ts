// DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2) as diffusers'
// DPMSolverMultistepScheduler with algorithm_type "dpmsolver++": the model output is turned into
// an x0 prediction, and each step integrates the ODE in lambda = log(alpha / sigma) using the
// current and previous x0 predictions (order 2, "DPM++ 2M"; orders 1 and 3 also work). The first
// step, and the last ones for short schedules, fall back to lower order as upstream does.
// Optional Karras sigmas ("DPM++ 2M Karras").
import { NoiseSchedule, linspace, roundHalfEven } from './noise-schedule';
import {
  arange,
  checkSameLength,
  checkStepCount,
  indexForTimestepOrLast,
  interpIndex,
  karrasSigmas,
  requireOneOf,
  resolveConfig,
  sigmaToT,
  type DiscreteSchedulerConfig,
  type Scheduler,
} from './scheduler';

export interface DPMSolverMultistepSchedulerConfig extends DiscreteSchedulerConfig {
  solver_order: number;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  algorithm_type: string;
  solver_type: 'midpoint' | 'heun';
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  use_lu_lambdas: boolean;
  use_flow_sigmas: boolean;
  flow_shift: number;
  final_sigmas_type: 'zero' | 'sigma_min';
  lambda_min_clipped: number;
  variance_type: string | null;
  use_dynamic_shifting: boolean;
  time_shift_type: string;
}

export const DPM_SOLVER_DEFAULTS: DPMSolverMultistepSchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  solver_order: 2,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_flow_sigmas: false,
  flow_shift: 1.0,
  final_sigmas_type: 'zero',
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: 'linspace',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  use_dynamic_shifting: false,
  time_shift_type: 'exponential',
};

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly className = 'DPMSolverMultistepScheduler';
  readonly config: Readonly<DPMSolverMultistepSchedulerConfig>;
  readonly schedule: NoiseSchedule;
  readonly initNoiseSigma = 1;
  timesteps = new Int32Array(0);
  /** [n + 1] noise levels sqrt((1 - acp) / acp): one per timestep, then the final one. */
  sigmas = new Float64Array(0);
  predictedOriginal: Float32Array | undefined;
  private stepIndex: number | undefined;
  /** x0 predictions of the last solver_order steps, oldest first. */
  private modelOutputs: Float32Array[] = [];
  private lowerOrderNums = 0;
  private readonly trainSigmas: Float64Array;

  constructor(config: Readonly<Record<string, unknown>> = {}) {
    const name = this.className;
    const c = resolveConfig(name, DPM_SOLVER_DEFAULTS, config);
    requireOneOf(name, 'algorithm_type', c.algorithm_type, ['dpmsolver++']);
    requireOneOf(name, 'solver_order', c.solver_order, [1, 2, 3]);
    requireOneOf(name, 'solver_type', c.solver_type, ['midpoint', 'heun']);
    requireOneOf(name, 'prediction_type', c.prediction_type, ['epsilon', 'v_prediction', 'sample']);
    requireOneOf(name, 'timestep_spacing', c.timestep_spacing, ['leading', 'trailing', 'linspace']);
    requireOneOf(name, 'final_sigmas_type', c.final_sigmas_type, ['zero', 'sigma_min']);
    requireOneOf(name, 'variance_type', c.variance_type, [null]);
    for (const key of ['thresholding', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_lu_lambdas', 'use_flow_sigmas', 'use_dynamic_shifting'] as const)
      requireOneOf(name, key, c[key], [false]);
    this.config = c;
    this.schedule = NoiseSchedule.fromConfig(c, name);
    const acp = Float64Array.from(this.schedule.alphasCumprod);
    if (c.rescale_betas_zero_snr) acp[acp.length - 1] = 2 ** -24; // as upstream: keeps the last sigma finite
    this.trainSigmas = acp.map((a) => Math.sqrt((1 - a) / a));
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    checkStepCount(this.className, numInferenceSteps, T);
    const n = numInferenceSteps;
    // lambda_min_clipped cuts off the noisiest timesteps (lambda = log(alpha / sigma) below it).
    let clipped = 0;
    for (let i = T - 1; i >= 0 && -Math.log(this.trainSigmas[i]!) < c.lambda_min_clipped; i--) clipped++;
    const lastTimestep = T - clipped;
    let timesteps: number[];
    if (c.timestep_spacing === 'linspace') {
      timesteps = Array.from(linspace(0, lastTimestep - 1, n + 1), roundHalfEven).reverse().slice(0, n);
    } else if (c.timestep_spacing === 'leading') {
      const ratio = Math.floor(lastTimestep / (n + 1));
      timesteps = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, n).map((t) => t + c.steps_offset);
    } else {
      timesteps = Array.from(arange(lastTimestep, 0, -T / n), (t) => roundHalfEven(t) - 1);
    }
    let sigmas: number[];
    if (c.use_karras_sigmas) {
      const logSigmas = this.trainSigmas.map(Math.log);
      sigmas = Array.from(karrasSigmas(this.trainSigmas[0]!, this.trainSigmas[T - 1]!, n));
      timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
      // Upstream rounds these to integers except for the cosine schedule, then casts to int64 (truncation).
      timesteps = timesteps.map((t) => (c.beta_schedule === 'squaredcos_cap_v2' ? Math.trunc(t) : roundHalfEven(t)));
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    }
    const last = c.final_sigmas_type === 'sigma_min' ? this.trainSigmas[0]! : 0;
    this.sigmas = Float64Array.from([...sigmas, last]);
    this.timesteps = Int32Array.from(timesteps);
    this.stepIndex = undefined;
    this.modelOutputs = [];
    this.lowerOrderNums = 0;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.sigmas.length === 0) throw new Error(`${this.className}: call setTimesteps before step`);
    checkSameLength(this.className, modelOutput, sample);
    const c = this.config;
    const n = this.timesteps.length;
    this.stepIndex ??= indexForTimestepOrLast(this.timesteps, t);
    const index = this.stepIndex;
    if (index >= n) throw new Error(`${this.className}: all ${n} steps are done; call setTimesteps to sample again`);
    const lowerOrderFinal = index === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === 'zero');
    const lowerOrderSecond = index === n - 2 && c.lower_order_final && n < 15;

    const x0 = this.convertModelOutput(modelOutput, sample, this.sigmas[index]!);
    this.modelOutputs.push(x0);
    if (this.modelOutputs.length > c.solver_order) this.modelOutputs.shift();

    let out: Float32Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) out = this.firstOrderUpdate(x0, sample, index);
    else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) out = this.secondOrderUpdate(sample, index);
    else out = this.thirdOrderUpdate(sample, index);

    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.predictedOriginal = x0;
    this.stepIndex = index + 1;
    return out;
  }

  /** The data prediction x0 at noise level sigma (alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma alpha_t). */
  private convertModelOutput(modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
    const { alpha, sigmaT } = alphaSigma(sigma);
    const x0 = new Float32Array(sample.length);
    const prediction = this.config.prediction_type;
    for (let i = 0; i < sample.length; i++) {
      if (prediction === 'epsilon') x0[i] = (sample[i]! - sigmaT * modelOutput[i]!) / alpha;
      else if (prediction === 'v_prediction') x0[i] = alpha * sample[i]! - sigmaT * modelOutput[i]!;
      else x0[i] = modelOutput[i]!;
    }
    return x0;
  }

  /** DPM-Solver++(1), i.e. DDIM in lambda: x_t = (s_t / s_s) x - alpha_t (e^-h - 1) x0. */
  private firstOrderUpdate(x0: Float32Array, sample: Float32Array, index: number): Float32Array {
    const t = alphaSigma(this.sigmas[index + 1]!);
    const s = alphaSigma(this.sigmas[index]!);
    const h = t.lambda - s.lambda;
    const sampleCoeff = t.sigmaT / s.sigmaT;
    const x0Coeff = -t.alpha * (Math.exp(-h) - 1);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) out[i] = sampleCoeff * sample[i]! + x0Coeff * x0[i]!;
    return out;
  }

  /** DPM-Solver++(2M): D0 = m0, D1 = (m0 - m1) / r0 with r0 = h_0 / h. */
  private secondOrderUpdate(sample: Float32Array, index: number): Float32Array {
    const t = alphaSigma(this.sigmas[index + 1]!);
    const s0 = alphaSigma(this.sigmas[index]!);
    const s1 = alphaSigma(this.sigmas[index - 1]!);
    const m0 = this.modelOutputs[this.modelOutputs.length - 1]!;
    const m1 = this.modelOutputs[this.modelOutputs.length - 2]!;
    const h = t.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const expm = Math.exp(-h) - 1;
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const d0Coeff = -t.alpha * expm;
    const d1Coeff = this.config.solver_type === 'midpoint' ? -0.5 * t.alpha * expm : t.alpha * (expm / h + 1);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const d1 = (m0[i]! - m1[i]!) / r0;
      out[i] = sampleCoeff * sample[i]! + d0Coeff * m0[i]! + d1Coeff * d1;
    }
    return out;
  }

  /** DPM-Solver++(3M). */
  private thirdOrderUpdate(sample: Float32Array, index: number): Float32Array {
    const t = alphaSigma(this.sigmas[index + 1]!);
    const s0 = alphaSigma(this.sigmas[index]!);
    const s1 = alphaSigma(this.sigmas[index - 1]!);
    const s2 = alphaSigma(this.sigmas[index - 2]!);
    const k = this.modelOutputs.length;
    const [m2, m1, m0] = [this.modelOutputs[k - 3]!, this.modelOutputs[k - 2]!, this.modelOutputs[k - 1]!];
    const h = t.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const r1 = (s1.lambda - s2.lambda) / h;
    const expm = Math.exp(-h) - 1;
    const sampleCoeff = t.sigmaT / s0.sigmaT;
    const c0 = -t.alpha * expm;
    const c1 = t.alpha * (expm / h + 1);
    const c2 = -t.alpha * ((expm + h) / (h * h) - 0.5);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const d10 = (m0[i]! - m1[i]!) / r0;
      const d11 = (m1[i]! - m2[i]!) / r1;
      const d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
      const d2 = (d10 - d11) / (r0 + r1);
      out[i] = sampleCoeff * sample[i]! + c0 * m0[i]! + c1 * d1 + c2 * d2;
    }
    return out;
  }
}

/** VP parameters of a Karras sigma: alpha = 1/sqrt(sigma^2+1), sigma_t = sigma * alpha, lambda = log(alpha/sigma_t). */
function alphaSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}
