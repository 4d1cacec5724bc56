// Schedulers: timesteps/sigmas of the golden configs (8 steps) worked out by hand from diffusers'
// formulas, single steps against the papers' update rules, and round trips with a perfect model.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createScheduler, parseConfigJson, readSchedulerConfig } from '../../../src-main/engine/sample/create-scheduler';
import { DDIMScheduler } from '../../../src-main/engine/sample/ddim';
import { DDPMScheduler } from '../../../src-main/engine/sample/ddpm';
import { denoise } from '../../../src-main/engine/sample/denoise-loop';
import { DPMSolverMultistepScheduler } from '../../../src-main/engine/sample/dpmpp-2m';
import { EulerDiscreteScheduler } from '../../../src-main/engine/sample/euler';
import { EulerAncestralDiscreteScheduler } from '../../../src-main/engine/sample/euler-ancestral';
import { PNDMScheduler } from '../../../src-main/engine/sample/pndm';
import { Rng } from '../../../src-main/engine/sample/rng';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

const casesFile = (v: 'tiny-sd15' | 'tiny-sdxl'): string => join(goldenDir(v), 'cases.json');
const notes = (v: 'tiny-sd15' | 'tiny-sdxl'): Record<string, { scheduler_config: Record<string, unknown> }> =>
  parseConfigJson(readFileSync(casesFile(v), 'utf8'), casesFile(v)).notes as never;
const sd15 = notes('tiny-sd15');
const sdxl = notes('tiny-sdxl');
// diffusers' float32 alphas_cumprod, to derive expected sigmas independently of our NoiseSchedule.
const goldenAcp = readGoldenTensors(join(goldenDir('tiny-sd15'), 'cases.safetensors')).get('ddpm.alphas_cumprod')!.data as Float32Array;
const sigmaAt = (t: number): number => {
  const sigma = (i: number): number => Math.sqrt((1 - goldenAcp[i]!) / goldenAcp[i]!);
  const low = Math.floor(t);
  return low === t ? sigma(t) : sigma(low) + (sigma(low + 1) - sigma(low)) * (t - low);
};
const expectAllClose = (actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, abs = 0): void => {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    if (!(Math.abs(actual[i]! - expected[i]!) <= abs + rel * Math.abs(expected[i]!))) expect.fail(`index ${i}: ${actual[i]} vs ${expected[i]}`);
};

describe('timesteps and sigmas of the golden configs, 8 steps', () => {
  it('DDIM (SD1.5, leading, steps_offset 1): (0..7) * (1000 // 8) + 1, descending', () => {
    const s = createScheduler(sd15['sample.ddim']!.scheduler_config, { sampler: 'DDIM' });
    s.setTimesteps(8);
    expect(s).toBeInstanceOf(DDIMScheduler);
    expect(Array.from(s.timesteps)).toEqual([876, 751, 626, 501, 376, 251, 126, 1]);
    expect(s.initNoiseSigma).toBe(1);
  });

  it('Euler (SD1.5, linspace): linspace(0, 999, 8) as float32, sigmas interpolated, final 0', () => {
    const s = createScheduler({ ...sd15['sample.euler']!.scheduler_config, _class_name: 'EulerDiscreteScheduler' }) as EulerDiscreteScheduler;
    s.setTimesteps(8);
    const expected = [7, 6, 5, 4, 3, 2, 1, 0].map((k) => Math.fround((999 * k) / 7));
    expect(Array.from(s.timesteps)).toEqual(expected);
    expectAllClose(s.sigmas, [...expected.map(sigmaAt), 0], 2e-5);
    // linspace / trailing start from sigma_max itself
    expect(s.initNoiseSigma).toBeCloseTo(sigmaAt(999), 4);
  });

  it('DPM++ 2M (SD1.5, linspace): round(linspace(0, 999, 9)) reversed without 0; 499.5 rounds to even 500', () => {
    const s = createScheduler({ ...sd15['sample.dpmpp2m']!.scheduler_config, _class_name: 'DPMSolverMultistepScheduler' }) as DPMSolverMultistepScheduler;
    s.setTimesteps(8);
    expect(Array.from(s.timesteps)).toEqual([999, 874, 749, 624, 500, 375, 250, 125]);
    expectAllClose(s.sigmas, [999, 874, 749, 624, 500, 375, 250, 125].map(sigmaAt).concat(0), 2e-5);
    expect(s.initNoiseSigma).toBe(1);
  });

  it('Euler (SDXL, leading, offset 1): 876..1 step 125, init sigma sqrt(sigma_max^2 + 1)', () => {
    const s = createScheduler(sdxl['sample.euler']!.scheduler_config) as EulerDiscreteScheduler;
    s.setTimesteps(8);
    expect(Array.from(s.timesteps)).toEqual([876, 751, 626, 501, 376, 251, 126, 1]);
    expectAllClose(s.sigmas, [876, 751, 626, 501, 376, 251, 126, 1].map(sigmaAt).concat(0), 2e-5);
    expect(s.initNoiseSigma).toBeCloseTo(Math.sqrt(sigmaAt(876) ** 2 + 1), 4);
  });

  it('DPM++ 2M (SDXL, leading): (0..8) * (1000 // 9), reversed, last dropped, + 1', () => {
    const s = createScheduler(sdxl['sample.dpmpp2m']!.scheduler_config);
    s.setTimesteps(8);
    expect(Array.from(s.timesteps)).toEqual([889, 778, 667, 556, 445, 334, 223, 112]);
  });

  it('PNDM (the SD1.5 model folder config): PLMS timesteps repeat the second one', () => {
    const config = readSchedulerConfig(join(goldenDir('tiny-sd15'), 'model', 'scheduler', 'scheduler_config.json'));
    const s = createScheduler(config);
    expect(s).toBeInstanceOf(PNDMScheduler);
    s.setTimesteps(8);
    expect(Array.from(s.timesteps)).toEqual([876, 751, 751, 626, 501, 376, 251, 126, 1]);
  });

  it('trailing spacing: round(arange(1000, 0, -125)) - 1', () => {
    const s = new DDIMScheduler({ ...sd15['sample.ddim']!.scheduler_config, timestep_spacing: 'trailing' });
    s.setTimesteps(8);
    expect(Array.from(s.timesteps)).toEqual([999, 874, 749, 624, 499, 374, 249, 124]);
  });

  it('Karras sigmas: rho-7 ramp between the train sigma extremes, integer timesteps for DPM++', () => {
    const s = createScheduler(sd15['sample.dpmpp2m']!.scheduler_config, { sampler: 'DPM++ 2M Karras' }) as DPMSolverMultistepScheduler;
    s.setTimesteps(8);
    const [lo, hi] = [sigmaAt(0), sigmaAt(999)];
    const karras = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => (hi ** (1 / 7) + (i / 7) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7);
    expectAllClose(s.sigmas, [...karras, 0], 2e-5);
    expect(s.timesteps[0]).toBe(999);
    expect(s.timesteps[7]).toBe(0);
    for (const t of s.timesteps) expect(Number.isInteger(t)).toBe(true);
  });
});

// Synthetic latents: x0 and noise fixed patterns, 32 values.
const N = 32;
const x0 = Float32Array.from({ length: N }, (_, i) => 0.8 * Math.sin(0.7 * i + 0.3));
const noise = Float32Array.from({ length: N }, (_, i) => Math.cos(1.9 * i) * 1.1);
const SD = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', steps_offset: 1, clip_sample: false, set_alpha_to_one: false };

describe('single steps against the update rules', () => {
  it('DDIM eta 0: x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps (Song et al. eq. 12)', () => {
    const s = new DDIMScheduler(SD);
    s.setTimesteps(10); // leading: 901, 801, ..., 1; prev = t - 100
    const t = 501;
    const [a, aPrev] = [goldenAcp[t]!, goldenAcp[t - 100]!];
    const xt = Float32Array.from(x0, (v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * noise[i]!);
    const eps = Float32Array.from(noise, (v, i) => v + 0.05 * Math.sin(i)); // an imperfect model
    const out = s.step(eps, t, xt);
    const expected = Array.from(xt, (x, i) => {
      const x0Hat = (x - Math.sqrt(1 - a) * eps[i]!) / Math.sqrt(a);
      return Math.sqrt(aPrev) * x0Hat + Math.sqrt(1 - aPrev) * eps[i]!;
    });
    expectAllClose(out, expected, 1e-5, 1e-6);
  });

  it('DDIM with 1000 steps and eta 1 is the DDPM posterior: mean (Ho et al. eq. 7) and noise', () => {
    const ddim = new DDIMScheduler({ ...SD, steps_offset: 0 }, { eta: 1 });
    const ddpm = new DDPMScheduler({ ...SD, steps_offset: 0 });
    ddim.setTimesteps(1000);
    ddpm.setTimesteps(1000);
    for (const t of [999, 400, 17, 1]) {
      const [a, aPrev] = [goldenAcp[t]!, goldenAcp[t - 1]!];
      const beta = 1 - a / aPrev;
      const xt = Float32Array.from(x0, (v, i) => Math.sqrt(a) * v + Math.sqrt(1 - a) * noise[i]!);
      const eps = Float32Array.from(noise, (v, i) => v * 0.9 + 0.1 * Math.cos(i));
      const fromDdim = ddim.step(eps, t, xt, new Rng(t));
      const fromDdpm = ddpm.step(eps, t, xt, new Rng(t));
      expectAllClose(fromDdim, fromDdpm, 1e-4, 1e-5);
      // Same draws: subtract the noise to get the mean, compare with the posterior mean formula.
      const z = new Rng(t).normal(N);
      const std = Math.sqrt(((1 - aPrev) / (1 - a)) * beta);
      const mean = Array.from(xt, (x, i) => {
        const x0Hat = (x - Math.sqrt(1 - a) * eps[i]!) / Math.sqrt(a);
        return ((Math.sqrt(aPrev) * beta) / (1 - a)) * x0Hat + ((Math.sqrt(1 - beta) * (1 - aPrev)) / (1 - a)) * x;
      });
      expectAllClose(Array.from(fromDdim, (v, i) => v - std * z[i]!), mean, 1e-4, 1e-5);
    }
  });

  it('Euler: x_next = x + (x - x0_hat) / sigma * (sigma_next - sigma); the UNet sees x / sqrt(sigma^2 + 1)', () => {
    const s = new EulerDiscreteScheduler({ ...SD, timestep_spacing: 'linspace' });
    s.setTimesteps(8);
    const [t, sigma, next] = [s.timesteps[2]!, s.sigmas[2]!, s.sigmas[3]!];
    s.setTimesteps(8);
    // Start the index at step 2 by passing its timestep (as img2img does).
    const x = Float32Array.from(x0, (v, i) => v + sigma * noise[i]!);
    const scaled = s.scaleModelInput(x, t);
    expectAllClose(scaled, Array.from(x, (v) => v / Math.sqrt(sigma * sigma + 1)), 1e-6);
    const eps = Float32Array.from(noise, (v) => v * 0.95);
    const out = s.step(eps, t, x);
    expectAllClose(out, Array.from(x, (v, i) => v + eps[i]! * (next - sigma)), 1e-5, 1e-6);
  });

  it('Euler a: deterministic part to sigma_down plus sigma_up noise from the rng', () => {
    const s = new EulerAncestralDiscreteScheduler({ ...SD, timestep_spacing: 'linspace' });
    s.setTimesteps(8);
    const [t, sigma, next] = [s.timesteps[0]!, s.sigmas[0]!, s.sigmas[1]!];
    const up = Math.sqrt((next ** 2 * (sigma ** 2 - next ** 2)) / sigma ** 2);
    const down = Math.sqrt(next ** 2 - up ** 2);
    const x = Float32Array.from(noise, (v) => v * sigma);
    const out = s.step(noise, t, x, new Rng(3));
    const z = new Rng(3).normal(N);
    expectAllClose(out, Array.from(x, (v, i) => v + noise[i]! * (down - sigma) + up * z[i]!), 1e-5, 1e-5);
    expect(() => s.step(noise, s.timesteps[1]!, x)).toThrow(/needs an rng/);
  });

  it('DPM++ 2M: first step first order, then the midpoint update with D1 = (m0 - m1) / r0', () => {
    const s = new DPMSolverMultistepScheduler({ ...SD, timestep_spacing: 'linspace' });
    s.setTimesteps(8);
    const vp = (sigma: number) => {
      const alpha = 1 / Math.sqrt(sigma * sigma + 1);
      return { alpha, sig: sigma * alpha, lambda: Math.log(alpha) - Math.log(sigma * alpha) };
    };
    const model0 = Float32Array.from(noise, (v, i) => v + 0.1 * Math.sin(i));
    const model1 = Float32Array.from(noise, (v, i) => v - 0.07 * Math.cos(2 * i));
    const xStart = Float32Array.from(x0, (v, i) => vp(s.sigmas[0]!).alpha * v + vp(s.sigmas[0]!).sig * noise[i]!);
    const x1 = s.step(model0, s.timesteps[0]!, xStart);
    const x2 = s.step(model1, s.timesteps[1]!, x1);
    const [p0, p1, p2] = [vp(s.sigmas[0]!), vp(s.sigmas[1]!), vp(s.sigmas[2]!)];
    const d0 = Array.from(xStart, (x, i) => (x - p0.sig * model0[i]!) / p0.alpha);
    const h1 = p1.lambda - p0.lambda;
    const expected1 = Array.from(xStart, (x, i) => (p1.sig / p0.sig) * x - p1.alpha * (Math.exp(-h1) - 1) * d0[i]!);
    expectAllClose(x1, expected1, 1e-5, 1e-6);
    const m1 = Array.from(x1, (x, i) => (x - p1.sig * model1[i]!) / p1.alpha);
    const h2 = p2.lambda - p1.lambda;
    const r0 = h1 / h2;
    const expected2 = Array.from(x1, (x, i) => {
      const D1 = (m1[i]! - d0[i]!) / r0;
      return (p2.sig / p1.sig) * x - p2.alpha * (Math.exp(-h2) - 1) * m1[i]! - 0.5 * p2.alpha * (Math.exp(-h2) - 1) * D1;
    });
    expectAllClose(x2, expected2, 1e-5, 1e-6);
  });

  it('PNDM: the first step averages two evaluations (Heun), then Adams-Bashforth 2', () => {
    const s = new PNDMScheduler({ ...SD, skip_prk_steps: true });
    s.setTimesteps(8); // 876, 751, 751, 626, ...
    const transfer = (x: Float32Array, t: number, prev: number, eps: ArrayLike<number>): number[] => {
      const [a, ap] = [goldenAcp[t]!, goldenAcp[prev]!];
      const denominator = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
      return Array.from(x, (v, i) => Math.sqrt(ap / a) * v - ((ap - a) * eps[i]!) / denominator);
    };
    const e1 = noise;
    const e2 = Float32Array.from(noise, (v, i) => v + 0.1 * Math.sin(i));
    const e3 = Float32Array.from(noise, (v, i) => v - 0.1 * Math.cos(i));
    const xStart = Float32Array.from(noise);
    const probe = s.step(e1, 876, xStart); // Euler probe to 751
    expectAllClose(probe, transfer(xStart, 876, 751, e1), 1e-5, 1e-6);
    const x1 = s.step(e2, 751, probe); // redo 876 -> 751 with the mean of both evaluations
    expectAllClose(x1, transfer(xStart, 876, 751, Array.from(e1, (v, i) => (v + e2[i]!) / 2)), 1e-5, 1e-6);
    const x2 = s.step(e3, 751, x1); // AB2: (3 e_new - e_old) / 2, ets = [e1, e3]
    expectAllClose(x2, transfer(x1, 751, 626, Array.from(e3, (v, i) => (3 * v - e1[i]!) / 2)), 1e-5, 1e-6);
  });
});

describe('round trips with a perfect model', () => {
  // The model knows x0: epsilon = (x - alpha x0) / sigma in the scheduler's own parameterisation.
  const run = async (scheduler: ReturnType<typeof createScheduler>, vpSpace: boolean): Promise<Float32Array> => {
    scheduler.setTimesteps(10);
    const scaledNoise = noise;
    return denoise(scheduler, scaledNoise, async (input, t) => {
      const index = Array.from(scheduler.timesteps).indexOf(t);
      const sigma = (scheduler as unknown as { sigmas: Float64Array }).sigmas[index]!;
      const x = input.map((v) => v * (vpSpace ? 1 : Math.sqrt(sigma * sigma + 1))); // undo scaleModelInput
      const alpha = vpSpace ? 1 / Math.sqrt(sigma * sigma + 1) : 1;
      const sig = vpSpace ? sigma * alpha : sigma;
      return Float32Array.from(x, (v, i) => (v - alpha * x0[i]!) / sig);
    });
  };

  it('Euler reaches x0 (final sigma 0)', async () => {
    const out = await run(createScheduler({ ...SD, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'trailing' }), false);
    expectAllClose(out, x0, 0, 1e-4);
  });

  it('DPM++ 2M and DPM++ 2M Karras reach x0', async () => {
    for (const sampler of ['DPM++ 2M', 'DPM++ 2M Karras'] as const) {
      const out = await run(createScheduler({ ...SD, _class_name: 'PNDMScheduler' }, { sampler }), true);
      expectAllClose(out, x0, 0, 1e-4);
    }
  });

  it('DDIM with set_alpha_to_one reaches x0', async () => {
    const s = new DDIMScheduler({ ...SD, set_alpha_to_one: true });
    s.setTimesteps(10);
    const out = await denoise(s, noise, async (x, t) => {
      const a = goldenAcp[t]!;
      return Float32Array.from(x, (v, i) => (v - Math.sqrt(a) * x0[i]!) / Math.sqrt(1 - a));
    });
    expectAllClose(out, x0, 0, 1e-4);
  });

  it('v-prediction and epsilon give the same Euler step for the same true noise', () => {
    const eps = new EulerDiscreteScheduler({ ...SD, timestep_spacing: 'linspace' });
    const v = new EulerDiscreteScheduler({ ...SD, timestep_spacing: 'linspace', prediction_type: 'v_prediction' });
    eps.setTimesteps(5);
    v.setTimesteps(5);
    const sigma = eps.sigmas[1]!;
    const x = Float32Array.from(x0, (x0i, i) => x0i + sigma * noise[i]!);
    // In VP terms: alpha = 1/sqrt(sigma^2+1), v = alpha * noise - sigma * alpha * x0
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const vTarget = Float32Array.from(x0, (x0i, i) => alpha * noise[i]! - sigma * alpha * x0i);
    expectAllClose(v.step(vTarget, v.timesteps[1]!, x), eps.step(noise, eps.timesteps[1]!, x), 1e-5, 1e-5);
  });
});

describe('denoise loop', () => {
  it('scales the start by initNoiseSigma, reports each step, stops on abort', async () => {
    const s = createScheduler({ ...SD, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'leading' });
    s.setTimesteps(4);
    const seen: number[] = [];
    let firstInput: Float32Array | undefined;
    await denoise(s, noise, async (x) => ((firstInput ??= x), new Float32Array(x.length)), { onStep: (step) => void seen.push(step.timestep) });
    expect(seen).toEqual(Array.from(s.timesteps));
    // first UNet input = noise * initNoiseSigma / sqrt(sigma_0^2 + 1) = noise for "leading"
    expectAllClose(firstInput!, noise, 1e-6, 1e-7);
    s.setTimesteps(4);
    const controller = new AbortController();
    controller.abort(new Error('stopped by user'));
    await expect(denoise(s, noise, async (x) => x, { signal: controller.signal })).rejects.toThrow('stopped by user');
    await expect(denoise(new DDIMScheduler(SD), noise, async (x) => x)).rejects.toThrow(/call setTimesteps/);
  });
});

describe('createScheduler', () => {
  const config = readSchedulerConfig(join(goldenDir('tiny-sd15'), 'model', 'scheduler', 'scheduler_config.json'));

  it('overrides the class by sampler name, keeping the schedule keys', () => {
    const cases = [
      ['DDIM', DDIMScheduler],
      ['Euler', EulerDiscreteScheduler],
      ['Euler a', EulerAncestralDiscreteScheduler],
      ['DPM++ 2M', DPMSolverMultistepScheduler],
      ['DPM++ 2M Karras', DPMSolverMultistepScheduler],
    ] as const;
    for (const [sampler, cls] of cases) {
      const s = createScheduler(config, { sampler });
      expect(s).toBeInstanceOf(cls);
      expect(s.config.beta_schedule).toBe('scaled_linear');
      expect(s.config.steps_offset).toBe(1);
    }
    expect(createScheduler(config, { sampler: 'DPM++ 2M Karras' }).config.use_karras_sigmas).toBe(true);
    expect(createScheduler({ ...config, use_karras_sigmas: true }, { sampler: 'DPM++ 2M' }).config.use_karras_sigmas).toBe(false);
  });

  it('refuses unsupported classes and values, naming the source and key', () => {
    expect(() => createScheduler({ ...config, _class_name: 'LMSDiscreteScheduler' }, { source: 'x/scheduler_config.json' })).toThrow(
      /x\/scheduler_config\.json: scheduler LMSDiscreteScheduler is not supported/,
    );
    expect(() => createScheduler({ ...config, _class_name: 'DDIMScheduler', thresholding: true })).toThrow(/DDIMScheduler: config thresholding = true is not supported/);
    expect(() => createScheduler({ ...config, algorithm_type: 'sde-dpmsolver++', _class_name: 'DPMSolverMultistepScheduler' })).toThrow(/algorithm_type = "sde-dpmsolver\+\+" is not supported/);
    expect(() => createScheduler({ ...config, skip_prk_steps: false })).toThrow(/skip_prk_steps = false/);
    expect(() => createScheduler({ ...config, steps_offset: '1' })).toThrow(/steps_offset must be a number/);
    expect(() => createScheduler({ num_train_timesteps: 1000 })).toThrow(/_class_name is missing/);
  });

  it('reads Python-written JSON with -Infinity', () => {
    const parsed = parseConfigJson('{"lambda_min_clipped": -Infinity, "s": "-Infinity", "n": NaN}', 'test');
    expect(parsed.lambda_min_clipped).toBe(-Infinity);
    expect(parsed.s).toBe('-Infinity');
    expect(Number.isNaN(parsed.n)).toBe(true);
  });
});
