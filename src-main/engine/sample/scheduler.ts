// The interface every sampler implements, and the pieces of timestep / sigma arithmetic several of
// them share (as diffusers computes them: numpy arange/linspace/round/interp semantics).
// Latents are flat Float32Arrays ([B, C, h, w] row-major); a scheduler does per-element arithmetic
// only, so the layout does not matter to it.
import type { Rng } from './rng';
import { linspace, roundHalfEven, type NoiseScheduleConfig } from './noise-schedule';

export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';

/** Keys shared by the discrete diffusers schedulers (upstream names). */
export interface DiscreteSchedulerConfig extends NoiseScheduleConfig {
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

export interface Scheduler {
  /** diffusers class this scheduler reproduces, e.g. "EulerDiscreteScheduler". */
  readonly className: string;
  /** The resolved config: upstream defaults, then the given keys. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Timesteps to visit, in order (set by setTimesteps): integers for DDIM/DDPM/PNDM/DPM-Solver, floats for Euler. */
  readonly timesteps: Int32Array | Float64Array;
  /** Standard deviation of the initial noise: the sampler starts from unit noise times this. */
  readonly initNoiseSigma: number;
  /** The last step's prediction of the clean latents (for previews); undefined before the first step. */
  readonly predictedOriginal: Float32Array | undefined;
  setTimesteps(numInferenceSteps: number): void;
  /** The UNet input at timestep t (Euler divides by sqrt(sigma^2 + 1); others return `sample`). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** One reverse step: x_t -> x_{t-1}. `rng` feeds the stochastic samplers (Euler a, DDIM eta > 0, DDPM). */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, rng?: Rng): Float32Array;
}

/** numpy.arange(start, stop, step) for floats: start + i * (second - start), ceil((stop - start) / step) values. */
export function arange(start: number, stop: number, step: number): Float64Array {
  const count = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = start + i * delta;
  return out;
}

/**
 * Integer timesteps for `n` steps, descending, with diffusers' DDIM/DDPM/PNDM-style spacing
 * (Table 2 of Lin et al. 2023): "leading" = (0..n-1) * (T // n) + steps_offset,
 * "trailing" = round(arange(T, 0, -T/n)) - 1, "linspace" = round(linspace(0, T-1, n)).
 */
export function spacedTimesteps(spacing: TimestepSpacing, T: number, n: number, stepsOffset: number, source: string): number[] {
  switch (spacing) {
    case 'linspace':
      return Array.from(linspace(0, T - 1, n), roundHalfEven).reverse();
    case 'leading': {
      const ratio = Math.floor(T / n);
      return Array.from({ length: n }, (_, i) => i * ratio + stepsOffset).reverse();
    }
    case 'trailing':
      return Array.from(arange(T, 0, -T / n), (t) => roundHalfEven(t) - 1);
    default:
      throw new Error(`${source}: timestep_spacing ${JSON.stringify(spacing)} is not supported (supported: leading, trailing, linspace)`);
  }
}

/**
 * Euler-family timesteps (float32 values, as upstream): "linspace" = linspace(0, T-1, n) unrounded,
 * "leading" and "trailing" as spacedTimesteps.
 */
export function spacedFloatTimesteps(spacing: TimestepSpacing, T: number, n: number, stepsOffset: number, source: string): Float64Array {
  const values = spacing === 'linspace' ? Array.from(linspace(0, T - 1, n)).reverse() : spacedTimesteps(spacing, T, n, stepsOffset, source);
  return Float64Array.from(values, Math.fround);
}

/** numpy.interp(x, arange(len(ys)), ys) for x within [0, len-1] (clamped outside, as numpy). */
export function interpIndex(x: number, ys: Float64Array): number {
  if (x <= 0) return ys[0]!;
  const last = ys.length - 1;
  if (x >= last) return ys[last]!;
  const low = Math.floor(x);
  const frac = x - low;
  return frac === 0 ? ys[low]! : ys[low]! + (ys[low + 1]! - ys[low]!) * frac;
}

/**
 * diffusers' `_sigma_to_t`: the fractional train timestep whose sigma is `sigma`, by linear
 * interpolation in log-sigma between the neighbouring train timesteps (logSigmas ascending with t).
 */
export function sigmaToT(sigma: number, logSigmas: Float64Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // Last index whose log-sigma is <= logSigma (0 when none), at most T-2.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lowValue = logSigmas[low]!;
  const highValue = logSigmas[low + 1]!;
  const w = Math.min(1, Math.max(0, (lowValue - logSigma) / (lowValue - highValue)));
  return (1 - w) * low + w * (low + 1);
}

/** Karras et al. 2022 (eq. 5) noise levels, rho = 7, from sigmaMax down to sigmaMin: [n]. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): Float64Array {
  const rho = 7;
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return linspace(0, 1, n).map((ramp) => (maxInvRho + ramp * (minInvRho - maxInvRho)) ** rho);
}

/**
 * diffusers' `index_for_timestep`: where t sits in the schedule; when it appears twice, the
 * second occurrence (so a sampler started mid-schedule, as img2img does, does not skip a sigma).
 */
export function indexForTimestep(timesteps: ArrayLike<number>, t: number, className: string): number {
  const matches: number[] = [];
  for (let i = 0; i < timesteps.length && matches.length < 2; i++) if (timesteps[i] === t) matches.push(i);
  if (matches.length === 0) throw new Error(`${className}: timestep ${t} is not in the schedule (call setTimesteps and pass its timesteps)`);
  return matches.length > 1 ? matches[1]! : matches[0]!;
}

/** DPM-Solver's variant of indexForTimestep: a timestep not in the schedule means the last step. */
export function indexForTimestepOrLast(timesteps: ArrayLike<number>, t: number): number {
  const matches: number[] = [];
  for (let i = 0; i < timesteps.length && matches.length < 2; i++) if (timesteps[i] === t) matches.push(i);
  if (matches.length === 0) return timesteps.length - 1;
  return matches.length > 1 ? matches[1]! : matches[0]!;
}

export function checkSameLength(className: string, modelOutput: Float32Array, sample: Float32Array): void {
  if (modelOutput.length !== sample.length)
    throw new Error(`${className}.step: model output has ${modelOutput.length} values, sample ${sample.length}`);
}

export function checkStepCount(className: string, n: number, T: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${className}: number of inference steps must be a positive integer, got ${n}`);
  if (n > T) throw new Error(`${className}: ${n} inference steps exceed num_train_timesteps ${T}`);
}

/**
 * Upstream defaults overlaid with the keys of `given` that the scheduler knows (others, such as
 * `_class_name` or another scheduler's keys, are ignored as diffusers ignores them). A value of the
 * wrong type is refused, naming the key.
 */
export function resolveConfig<T extends object>(className: string, defaults: T, given: Readonly<Record<string, unknown>>): T {
  const out: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [key, fallback] of Object.entries(defaults)) {
    const value = given[key];
    // null means "not set" upstream (None), so the default applies.
    if (value === undefined || value === null) continue;
    if (fallback !== null && typeof value !== typeof fallback)
      throw new Error(`${className}: config ${key} must be a ${typeof fallback}, got ${JSON.stringify(value)}`);
    out[key] = value;
  }
  return out as T;
}

/** Throws a clear error unless `value` is one of `supported`. */
export function requireOneOf(className: string, key: string, value: unknown, supported: readonly unknown[]): void {
  if (!supported.includes(value))
    throw new Error(`${className}: config ${key} = ${JSON.stringify(value)} is not supported (supported: ${supported.map((s) => JSON.stringify(s)).join(', ')})`);
}
