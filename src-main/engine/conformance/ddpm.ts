// Noise schedule cases, from the model's scheduler/scheduler_config.json: `ddpm.alphas_cumprod` [T]
// and `ddpm.add_noise.output` = add_noise(unet.input.sample, ddpm.add_noise.noise, unet.input.timestep).
import { NoiseSchedule } from '../sample/noise-schedule';
import {
  attempt,
  caseTensor,
  compareClose,
  floatsOf,
  formatTolerance,
  type CaseFamily,
  type CaseResult,
  type Tolerance,
} from './context';

// Our tables are float64, the reference's float32 cumprod accumulates rounding over 1000 products:
// measured 9.3e-7 relative. 1e-5 relative still catches a wrong schedule (a beta endpoint off by
// 1e-4 moves the tail by ~1e-2); alphas_cumprod reaches ~5e-3, so the absolute floor is tiny.
const TABLE: Tolerance = { rtol: 1e-5, atol: 1e-9 };
// add_noise is float32 arithmetic in both implementations (measured max abs 2.4e-7).
const NOISED: Tolerance = { rtol: 1e-5, atol: 1e-6 };

export const ddpmCases: CaseFamily = {
  name: 'ddpm',
  claims: (key) => key.startsWith('ddpm.'),

  async run(ctx) {
    const results: CaseResult[] = [];
    const schedule = (): NoiseSchedule =>
      NoiseSchedule.fromConfig(ctx.model().schedulerConfig, 'model/scheduler/scheduler_config.json');
    if (ctx.cases.has('ddpm.alphas_cumprod'))
      results.push(
        ...(await attempt('ddpm.alphas_cumprod', formatTolerance(TABLE), () => [
          compareClose(
            'ddpm.alphas_cumprod',
            schedule().alphasCumprod,
            floatsOf(caseTensor(ctx, 'ddpm.alphas_cumprod')),
            TABLE,
          ),
        ])),
      );
    if (ctx.cases.has('ddpm.add_noise.output'))
      results.push(
        ...(await attempt('ddpm.add_noise.output', formatTolerance(NOISED), () => {
          const timesteps = Array.from(
            caseTensor(ctx, 'unet.input.timestep').data as ArrayLike<number | bigint>,
            Number,
          );
          const ours = schedule().addNoise(
            floatsOf(caseTensor(ctx, 'unet.input.sample')),
            floatsOf(caseTensor(ctx, 'ddpm.add_noise.noise')),
            timesteps,
          );
          return [
            compareClose(
              'ddpm.add_noise.output',
              ours,
              floatsOf(caseTensor(ctx, 'ddpm.add_noise.output')),
              NOISED,
            ),
          ];
        })),
      );
    return results;
  },
};
