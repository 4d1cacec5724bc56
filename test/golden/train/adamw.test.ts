// AdamW graph vs torch.optim.AdamW: the golden `adamw.*` cases (p0 and grads 0..2 -> p1..p3).
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Graph } from '../../../src-main/engine/graph/graph';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Session } from '../../../src-main/engine/runtime/session';
import { adamwStepInputs, adamwStepValues, adamwUpdate } from '../../../src-main/engine/train/adamw';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

describe('AdamW graph', () => {
  it('matches torch AdamW over three steps (golden adamw.*)', async () => {
    const cases = readGoldenTensors(join(goldenDir('tiny-sd15'), 'cases.safetensors'));
    const config = { betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 1e-2 };
    const n = cases.get('adamw.p0')!.shape[0];
    const g = new Graph('adamw');
    const [p, grad, m, v] = ['p', 'grad', 'm', 'v'].map((name) => g.input(name, 'float32', [n]));
    const out = adamwUpdate(config, adamwStepInputs(g), p, grad, m, v);
    g.output(out.param, 'p_new');
    g.output(out.m, 'm_new');
    g.output(out.v, 'v_new');
    const session = await Session.create(serializeModel(g));

    let param: Float32Array = cases.get("adamw.p0")!.data as Float32Array;
    let mState: Float32Array = new Float32Array(n);
    let vState: Float32Array = new Float32Array(n);
    for (let step = 1; step <= 3; step++) {
      const scalars = adamwStepValues(config, 1e-3, step);
      const feeds = {
        p: { dtype: 'float32' as const, shape: [n], data: param },
        grad: { dtype: 'float32' as const, shape: [n], data: cases.get(`adamw.grad${step - 1}`)!.data as Float32Array },
        m: { dtype: 'float32' as const, shape: [n], data: mState },
        v: { dtype: 'float32' as const, shape: [n], data: vState },
        ...Object.fromEntries(
          Object.entries(scalars).map(([k, val]) => [k, { dtype: 'float32' as const, shape: [], data: Float32Array.of(val) }]),
        ),
      };
      const r = await session.run(feeds);
      param = r.p_new.data as Float32Array;
      mState = r.m_new.data as Float32Array;
      vState = r.v_new.data as Float32Array;
      const expected = cases.get(`adamw.p${step}`)!.data as Float32Array;
      let maxErr = 0;
      for (let i = 0; i < n; i++) maxErr = Math.max(maxErr, Math.abs(param[i] - expected[i]) / (Math.abs(expected[i]) + 1e-5));
      expect(maxErr).toBeLessThan(1e-5);
    }
  });
});
