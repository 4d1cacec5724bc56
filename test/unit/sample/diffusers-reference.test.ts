// Cross-check against diffusers itself: diffusers-scheduler-reference.json was produced by running
// diffusers' schedulers (from_config, set_timesteps, then scale_model_input + step through all
// timesteps) with a synthetic model, for 110 configs: every scheduler x spacing x 1/7/8/25 steps,
// Karras sigmas, orders 1-3, heun, sigma_min final, v-prediction with zero-terminal-SNR, clipping,
// cosine/linear betas, lambda_min_clipped. Upstream works in float32 (its alphas_cumprod differs
// from our float64 one by ~1e-6 relative, and 1 - acp loses ~1e-5 at small t), hence the tolerances.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createScheduler } from '../../../src-main/engine/sample/create-scheduler';
import { denoise } from '../../../src-main/engine/sample/denoise-loop';

interface ReferenceCase {
  class: string;
  steps: number;
  config: Record<string, unknown>;
  timesteps: number[];
  init_noise_sigma: number;
  sigmas?: number[];
  final?: number[];
}
const reference = JSON.parse(readFileSync(join(import.meta.dirname, 'diffusers-scheduler-reference.json'), 'utf8')) as { cases: ReferenceCase[] };

const N = 64;
const init = Float32Array.from({ length: N }, (_, i) => Math.sin(1.3 * i));
// The same synthetic "model" the reference used: 0.5 tanh(x) + 0.2 cos(0.01 t + 0.37 i).
const model = async (x: Float32Array, t: number): Promise<Float32Array> => Float32Array.from(x, (v, i) => 0.5 * Math.tanh(v) + 0.2 * Math.cos(0.01 * t + 0.37 * i));

/** Largest elementwise |difference| / (floor + |expected|). */
const worst = (actual: ArrayLike<number>, expected: ArrayLike<number>, floor: number): number => {
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!) / (floor + Math.abs(expected[i]!)));
  return max;
};
/** Largest |difference| relative to the largest |expected| (float32 resolution is relative to the vector's scale). */
const worstScaled = (actual: ArrayLike<number>, expected: ArrayLike<number>): number => {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!));
  return max / scale;
};

describe('schedulers equal diffusers', () => {
  for (const c of reference.cases) {
    const { num_train_timesteps: _t, beta_start: _s, beta_end: _e, ...rest } = c.config;
    it(`${c.class}, ${c.steps} steps, ${JSON.stringify(rest)}`, async () => {
      const scheduler = createScheduler({ ...c.config, _class_name: c.class });
      scheduler.setTimesteps(c.steps);
      // Integer schedules exactly; Euler's Karras timesteps are fractional (sigma -> t interpolation).
      expect(scheduler.timesteps.length).toBe(c.timesteps.length);
      // Euler's fractional timesteps are float32 upstream (1e-6); its Karras ones come from log-sigma interpolation in
      // diffusers' float32 table (5e-5).
      const fractional = c.class.startsWith('Euler');
      expect(worst(scheduler.timesteps, c.timesteps, 1)).toBeLessThan(fractional ? (c.config.use_karras_sigmas ? 5e-5 : 1e-6) : 1e-12);
      expect(Math.abs(scheduler.initNoiseSigma - c.init_noise_sigma) / c.init_noise_sigma).toBeLessThan(2e-5);
      if (c.sigmas) {
        const sigmas = (scheduler as unknown as { sigmas: Float64Array }).sigmas;
        expect(sigmas.length).toBe(c.sigmas.length);
        expect(worst(sigmas, c.sigmas, 1e-3)).toBeLessThan(2e-5);
      }
      if (c.final) {
        const final = await denoise(scheduler, init, model);
        // Bounded by upstream's float32 sigma at t ~ 0 (1 - acp in float32: ~1.3e-5 relative), which the
        // 1-step Euler case and the zero-SNR case carry straight into the result.
        expect(worstScaled(final, c.final)).toBeLessThan(3e-5);
      }
    });
  }
});
