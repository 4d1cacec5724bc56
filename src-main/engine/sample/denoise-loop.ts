// The model-agnostic sampling loop of diffusers' pipelines: start from unit noise times the
// scheduler's initNoiseSigma, then for each timestep scale the input, ask the model, step.
// Classifier-free guidance (and any conditioning) lives in the caller's predictNoise.
import type { Rng } from './rng';
import type { Scheduler } from './scheduler';

/** Model output for the (already scaled) latents x at timestep t: epsilon, v or x0 per the scheduler's prediction_type. */
export type PredictNoise = (x: Float32Array, t: number) => Promise<Float32Array>;

export interface DenoiseStep {
  /** 0-based index of the step just taken. */
  index: number;
  total: number;
  timestep: number;
  /** Latents after the step. */
  latents: Float32Array;
  /** The scheduler's clean-latent estimate at this step, when it makes one (for previews). */
  predictedOriginal: Float32Array | undefined;
}

export interface DenoiseOptions {
  /** Noise for stochastic schedulers (Euler a, DDIM with eta > 0, DDPM). */
  rng?: Rng;
  /** Checked before every model call; an aborted signal rejects with its reason. */
  signal?: AbortSignal;
  onStep?: (step: DenoiseStep) => void | Promise<void>;
}

/**
 * Runs the scheduler's timesteps (call scheduler.setTimesteps first). `initialLatents` is unit
 * Gaussian noise (diffusers' `latents` argument); it is scaled by initNoiseSigma here.
 * Returns the final latents (not divided by the VAE scaling factor).
 */
export async function denoise(
  scheduler: Scheduler,
  initialLatents: Float32Array,
  predictNoise: PredictNoise,
  options: DenoiseOptions = {},
): Promise<Float32Array> {
  const timesteps = scheduler.timesteps;
  if (timesteps.length === 0) throw new Error(`denoise: ${scheduler.className} has no timesteps; call setTimesteps(steps) first`);
  const sigma = scheduler.initNoiseSigma;
  let latents: Float32Array = initialLatents.map((x) => x * sigma);
  for (let index = 0; index < timesteps.length; index++) {
    options.signal?.throwIfAborted();
    const t = timesteps[index]!;
    const input = scheduler.scaleModelInput(latents, t);
    const output = await predictNoise(input, t);
    if (output.length !== latents.length)
      throw new Error(`denoise: the model returned ${output.length} values for latents of ${latents.length} at timestep ${t}`);
    latents = scheduler.step(output, t, latents, options.rng);
    await options.onStep?.({ index, total: timesteps.length, timestep: t, latents, predictedOriginal: scheduler.predictedOriginal });
  }
  return latents;
}
