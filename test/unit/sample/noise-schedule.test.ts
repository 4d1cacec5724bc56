// Noise schedule: golden alphas_cumprod / add_noise from diffusers, and the formulas by hand.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NoiseSchedule, betasFor, linspace, rescaleZeroTerminalSnr, roundHalfEven } from '../../../src-main/engine/sample/noise-schedule';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

const SD = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' };
const golden = readGoldenTensors(join(goldenDir('tiny-sd15'), 'cases.safetensors'));
const tensor = (key: string): Float32Array => golden.get(key)!.data as Float32Array;

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, abs = 0): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    if (Math.abs(actual[i]! - e) > abs + rel * Math.abs(e)) expect.fail(`index ${i}: ${actual[i]} vs ${e}`);
  }
}

describe('NoiseSchedule', () => {
  const schedule = NoiseSchedule.fromConfig(SD);

  it('alphas_cumprod equals diffusers (golden ddpm.alphas_cumprod, float32 upstream)', () => {
    expectClose(schedule.alphasCumprod, tensor('ddpm.alphas_cumprod'), 2e-6);
  });

  it('addNoise equals diffusers add_noise (golden, timesteps 10 and 999)', () => {
    const timesteps = Array.from(golden.get('unet.input.timestep')!.data as BigInt64Array, Number);
    const noisy = schedule.addNoise(tensor('unet.input.sample'), tensor('ddpm.add_noise.noise'), timesteps);
    expectClose(noisy, tensor('ddpm.add_noise.output'), 1e-5, 1e-6);
  });

  it('builds scaled_linear, linear and squaredcos_cap_v2 betas by their formulas', () => {
    const scaled = betasFor(SD);
    expect(scaled[0]).toBeCloseTo(0.00085, 15);
    expect(scaled[999]).toBeCloseTo(0.012, 15);
    // sqrt(beta) is linear in t
    expect(Math.sqrt(scaled[500]!)).toBeCloseTo(Math.sqrt(0.00085) + (500 / 999) * (Math.sqrt(0.012) - Math.sqrt(0.00085)), 14);
    const linear = betasFor({ ...SD, beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02 });
    expect(linear[333]).toBeCloseTo(0.0001 + (333 / 999) * (0.02 - 0.0001), 15);
    const cosine = betasFor({ ...SD, beta_schedule: 'squaredcos_cap_v2' });
    const abar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    expect(cosine[0]).toBeCloseTo(1 - abar(0.001) / abar(0), 15);
    expect(cosine[999]).toBe(0.999); // capped
    expect(() => betasFor({ ...SD, beta_schedule: 'sigmoid' })).toThrow(/beta_schedule "sigmoid" is not supported/);
  });

  it('rescale_betas_zero_snr: zero terminal SNR, first step unchanged', () => {
    const betas = rescaleZeroTerminalSnr(betasFor(SD));
    const rescaled = NoiseSchedule.fromBetas(betas);
    expect(rescaled.alphasCumprod[999]).toBeCloseTo(0, 12);
    expect(rescaled.alphasCumprod[0]).toBeCloseTo(schedule.alphasCumprod[0]!, 12);
    expect(betas[999]).toBeCloseTo(1, 12);
  });

  it('velocity: x0 = sqrt(a) x_t - sqrt(1-a) v and eps = sqrt(a) v + sqrt(1-a) x_t', () => {
    const x0 = Float32Array.from({ length: 8 }, (_, i) => Math.sin(i + 1));
    const noise = Float32Array.from({ length: 8 }, (_, i) => Math.cos(3 * i));
    const t = [100, 700];
    const xt = schedule.addNoise(x0, noise, t);
    const v = schedule.velocity(x0, noise, t);
    for (let i = 0; i < 8; i++) {
      const a = schedule.alphasCumprod[t[i < 4 ? 0 : 1]!]!;
      expect(Math.sqrt(a) * xt[i]! - Math.sqrt(1 - a) * v[i]!).toBeCloseTo(x0[i]!, 5);
      expect(Math.sqrt(a) * v[i]! + Math.sqrt(1 - a) * xt[i]!).toBeCloseTo(noise[i]!, 5);
    }
  });

  it('min-SNR weights: min(snr, g)/snr (epsilon), min(snr, g)/(snr+1) (v)', () => {
    const snr = (t: number): number => schedule.alphasCumprod[t]! / (1 - schedule.alphasCumprod[t]!);
    const [w10, w999] = schedule.minSnrWeights([10, 999], 5, 'epsilon');
    expect(w10).toBeCloseTo(5 / snr(10), 6); // snr(10) ~ 100 > 5
    expect(w999).toBeCloseTo(1, 6); // snr(999) ~ 0.005 < 5
    const [v10] = schedule.minSnrWeights([10], 5, 'v_prediction');
    expect(v10).toBeCloseTo(5 / (snr(10) + 1), 6);
  });

  it('numpy helpers: linspace ends exactly, round half to even', () => {
    expect(Array.from(linspace(0, 999, 8))).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => (i === 7 ? 999 : i * (999 / 7))));
    expect([0.5, 1.5, 2.5, 499.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 500, 2, 3]);
  });

  it('refuses timesteps outside the table', () => {
    expect(() => schedule.addNoise(new Float32Array(2), new Float32Array(2), [1000])).toThrow(/timestep 1000 is outside 0\.\.999/);
  });
});
