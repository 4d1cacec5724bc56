// The discrete forward-diffusion schedule shared by every scheduler and by training: betas
// (linear, scaled_linear, squaredcos_cap_v2 or trained), alphas_cumprod, the zero-terminal-SNR
// rescale, noising, the v-prediction target and SNR weights. Formulas as diffusers writes them
// (scheduling_ddpm.py and friends); computed in float64, which stays within 1e-6 relative of
// diffusers' float32 tables.
//
//   betasFor(config): Float64Array [T]          rescaleZeroTerminalSnr(betas): Float64Array [T]
//   NoiseSchedule.fromConfig(config)            schedule.alphasCumprod: Float64Array [T]
//   schedule.addNoise(x0, noise, timesteps)     x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise
//   schedule.velocity(x0, noise, timesteps)     v = sqrt(acp_t) noise - sqrt(1 - acp_t) x0
//   schedule.snr(t), schedule.sigma(t), schedule.minSnrWeights(timesteps, gamma, prediction)
//   roundHalfEven(x), linspace(start, stop, num)   numpy-compatible helpers for the schedulers

/** The scheduler_config.json keys that define the training noise schedule (upstream names). */
export interface NoiseScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas?: readonly number[] | null;
  rescale_betas_zero_snr?: boolean;
}

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;

/** numpy.linspace: start + i * step, with the last value exactly `stop`. */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  out[num - 1] = stop;
  return out;
}

/** numpy.round / Python round: halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Betas of a schedule, as diffusers builds them (before any zero-SNR rescale). */
export function betasFor(config: NoiseScheduleConfig, source = 'scheduler config'): Float64Array {
  const T = config.num_train_timesteps;
  if (!Number.isInteger(T) || T < 2) throw new Error(`${source}: num_train_timesteps must be an integer >= 2, got ${T}`);
  if (config.trained_betas !== undefined && config.trained_betas !== null) {
    if (config.trained_betas.length !== T)
      throw new Error(`${source}: trained_betas has ${config.trained_betas.length} values, num_train_timesteps is ${T}`);
    return Float64Array.from(config.trained_betas);
  }
  switch (config.beta_schedule) {
    case 'linear':
      return linspace(config.beta_start, config.beta_end, T);
    case 'scaled_linear':
      // linspace over sqrt(beta), squared: the schedule Stable Diffusion was trained with.
      return linspace(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), T).map((b) => b * b);
    case 'squaredcos_cap_v2':
      return cosineBetas(T);
    default:
      throw new Error(`${source}: beta_schedule ${JSON.stringify(config.beta_schedule)} is not supported (supported: ${BETA_SCHEDULES.join(', ')})`);
  }
}

/** Nichol & Dhariwal's cosine schedule: beta_i = min(1 - abar(t_{i+1}) / abar(t_i), 0.999). */
function cosineBetas(T: number, maxBeta = 0.999): Float64Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const betas = new Float64Array(T);
  for (let i = 0; i < T; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), maxBeta);
  return betas;
}

/**
 * Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1):
 * shift and scale sqrt(alphas_cumprod) so the last step has zero SNR and the first is unchanged.
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const acp = cumprodOneMinus(betas);
  const sqrtAcp = acp.map(Math.sqrt);
  const first = sqrtAcp[0]!;
  const last = sqrtAcp[sqrtAcp.length - 1]!;
  const scale = first / (first - last);
  const rescaledAcp = sqrtAcp.map((s) => ((s - last) * scale) ** 2);
  const out = new Float64Array(betas.length);
  out[0] = 1 - rescaledAcp[0]!;
  for (let i = 1; i < betas.length; i++) out[i] = 1 - rescaledAcp[i]! / rescaledAcp[i - 1]!;
  return out;
}

function cumprodOneMinus(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let product = 1;
  for (let i = 0; i < betas.length; i++) {
    product *= 1 - betas[i]!;
    out[i] = product;
  }
  return out;
}

export class NoiseSchedule {
  readonly numTrainTimesteps: number;

  private constructor(
    readonly betas: Float64Array, // [T]
    readonly alphasCumprod: Float64Array, // [T]
  ) {
    this.numTrainTimesteps = betas.length;
  }

  static fromConfig(config: NoiseScheduleConfig, source = 'scheduler config'): NoiseSchedule {
    let betas = betasFor(config, source);
    if (config.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
    return new NoiseSchedule(betas, cumprodOneMinus(betas));
  }

  static fromBetas(betas: Float64Array): NoiseSchedule {
    return new NoiseSchedule(betas, cumprodOneMinus(betas));
  }

  /** alphas_cumprod[t], with a range check (t must be an integer train timestep). */
  alphaCumprod(t: number): number {
    const value = this.alphasCumprod[t];
    if (value === undefined || !Number.isInteger(t)) throw new Error(`timestep ${t} is outside 0..${this.numTrainTimesteps - 1}`);
    return value;
  }

  /** Signal-to-noise ratio acp / (1 - acp). */
  snr(t: number): number {
    const a = this.alphaCumprod(t);
    return a / (1 - a);
  }

  /** The Karras-style noise level sqrt((1 - acp) / acp) of timestep t. */
  sigma(t: number): number {
    const a = this.alphaCumprod(t);
    return Math.sqrt((1 - a) / a);
  }

  /** Noise levels of all train timesteps, ascending with t: [T]. */
  sigmas(): Float64Array {
    return this.alphasCumprod.map((a) => Math.sqrt((1 - a) / a));
  }

  /**
   * x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise, one timestep per batch item.
   * x0, noise: [B, ...] flat; timesteps: [B].
   */
  addNoise(x0: Float32Array, noise: Float32Array, timesteps: ArrayLike<number>): Float32Array {
    return this.perItem(x0, noise, timesteps, 'addNoise', (a, x, n) => Math.sqrt(a) * x + Math.sqrt(1 - a) * n);
  }

  /** The v-prediction target v = sqrt(acp_t) noise - sqrt(1 - acp_t) x0 (Salimans & Ho 2022). */
  velocity(x0: Float32Array, noise: Float32Array, timesteps: ArrayLike<number>): Float32Array {
    return this.perItem(x0, noise, timesteps, 'velocity', (a, x, n) => Math.sqrt(a) * n - Math.sqrt(1 - a) * x);
  }

  /**
   * min-SNR-gamma loss weights (Hang et al. 2023), per batch item: min(snr, gamma) / snr for an
   * epsilon target, min(snr, gamma) / (snr + 1) for a v target.
   */
  minSnrWeights(timesteps: ArrayLike<number>, gamma: number, prediction: 'epsilon' | 'v_prediction'): Float32Array {
    const out = new Float32Array(timesteps.length);
    for (let i = 0; i < timesteps.length; i++) {
      const snr = this.snr(timesteps[i]!);
      out[i] = Math.min(snr, gamma) / (prediction === 'epsilon' ? snr : snr + 1);
    }
    return out;
  }

  private perItem(
    x0: Float32Array,
    noise: Float32Array,
    timesteps: ArrayLike<number>,
    name: string,
    f: (acp: number, x: number, n: number) => number,
  ): Float32Array {
    const batch = timesteps.length;
    if (x0.length !== noise.length) throw new Error(`${name}: x0 has ${x0.length} values, noise ${noise.length}`);
    if (batch === 0 || x0.length % batch !== 0) throw new Error(`${name}: ${x0.length} values do not split into ${batch} batch items`);
    const per = x0.length / batch;
    const out = new Float32Array(x0.length);
    for (let b = 0; b < batch; b++) {
      const a = this.alphaCumprod(timesteps[b]!);
      for (let i = b * per; i < (b + 1) * per; i++) out[i] = f(a, x0[i]!, noise[i]!);
    }
    return out;
  }
}
