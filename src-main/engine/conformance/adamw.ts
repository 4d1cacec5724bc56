// AdamW cases: torch.optim.AdamW from `adamw.p0` with gradients `adamw.grad0..` gives `adamw.p1..`,
// settings (lr, betas, eps, weight_decay) from cases.json notes.adamw; our AdamW graph steps the
// same way from zero moments.
import { Graph } from '../graph/graph';
import { serializeModel } from '../graph/onnx-model';
import { Session, type HostTensor } from '../runtime/session';
import { adamwStepInputs, adamwStepValues, adamwUpdate, type AdamWConfig } from '../train/adamw';
import {
  attempt,
  caseTensor,
  compareClose,
  floatsOf,
  formatTolerance,
  noteOf,
  type CaseFamily,
  type CaseResult,
  type ConformanceContext,
  type Tolerance,
} from './context';

// One update moves a parameter by ~lr; both sides are float32 with the same order of operations,
// so the parameters agree to a few float32 ulps.
const TOLERANCE: Tolerance = { rtol: 1e-5, atol: 1e-10 };

const num = (note: Record<string, unknown>, key: string, where: string): number => {
  const v = note[key];
  if (typeof v !== 'number') throw new Error(`${where}: ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
};

/** notes.adamw: { lr, betas: [b1, b2], eps, weight_decay }. */
export function adamwSettings(ctx: ConformanceContext): { config: AdamWConfig; lr: number } {
  const note = noteOf(ctx, 'adamw');
  const where = `${ctx.folder}/cases.json notes.adamw`;
  const betas = note.betas;
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === 'number'))
    throw new Error(`${where}: betas must be two numbers`);
  return {
    config: {
      betas: [betas[0], betas[1]],
      eps: num(note, 'eps', where),
      weightDecay: num(note, 'weight_decay', where),
    },
    lr: num(note, 'lr', where),
  };
}

export const adamwCases: CaseFamily = {
  name: 'adamw',
  claims: (key) => key.startsWith('adamw.'),

  async run(ctx) {
    const steps = [...ctx.cases.keys()].filter((k) => /^adamw\.p[1-9]\d*$/.test(k)).length;
    if (steps === 0) return [];
    return attempt('adamw', formatTolerance(TOLERANCE), async () => {
      const { config, lr } = adamwSettings(ctx);
      const n = caseTensor(ctx, 'adamw.p0').data.length;
      const g = new Graph('adamw_conformance');
      const [p, grad, m, v] = ['p', 'grad', 'm', 'v'].map((name) => g.input(name, 'float32', [n])); // [n] each
      const out = adamwUpdate(config, adamwStepInputs(g), p!, grad!, m!, v!);
      g.output(out.param, 'p_new');
      g.output(out.m, 'm_new');
      g.output(out.v, 'v_new');
      const session = await Session.create(serializeModel(g));
      const vector = (data: Float32Array): HostTensor => ({ dtype: 'float32', shape: [n], data });
      const results: CaseResult[] = [];
      try {
        let state: { p: Float32Array; m: Float32Array; v: Float32Array } = {
          p: floatsOf(caseTensor(ctx, 'adamw.p0')),
          m: new Float32Array(n),
          v: new Float32Array(n),
        };
        for (let step = 1; step <= steps; step++) {
          const feeds: Record<string, HostTensor> = {
            p: vector(state.p),
            grad: vector(floatsOf(caseTensor(ctx, `adamw.grad${step - 1}`))),
            m: vector(state.m),
            v: vector(state.v),
          };
          for (const [k, value] of Object.entries(adamwStepValues(config, lr, step)))
            feeds[k] = { dtype: 'float32', shape: [], data: Float32Array.of(value) };
          const r = await session.run(feeds);
          state = {
            p: r.p_new!.data as Float32Array,
            m: r.m_new!.data as Float32Array,
            v: r.v_new!.data as Float32Array,
          };
          results.push(
            compareClose(
              `adamw.p${step}`,
              state.p,
              floatsOf(caseTensor(ctx, `adamw.p${step}`)),
              TOLERANCE,
              `step ${step} of lr ${lr}`,
            ),
          );
        }
      } finally {
        await session.release();
      }
      return results;
    });
  },
};
