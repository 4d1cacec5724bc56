// The UNet with the golden LoRA attached: output, loss and every LoRA gradient against peft's.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { gradients } from '../../../src-main/engine/autodiff/gradients';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { LoraNetwork } from '../../../src-main/engine/lora/lora-network';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { Params } from '../../../src-main/engine/nn/params';
import { buildUNet2DCondition } from '../../../src-main/engine/models/unet-2d-condition';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { goldenDir, readGoldenTensors, type GoldenTensor } from '../../helpers/golden';

const host = (t: GoldenTensor): HostTensor => ({ dtype: t.dtype === 'I64' ? 'int64' : 'float32', shape: t.shape, data: t.data as Float32Array });

function maxRelError(actual: Float32Array, expected: Float32Array, atol = 1e-5): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + atol / 1e-4));
  return worst;
}

describe('LoRA on the tiny-sd15 UNet (golden lora.*)', () => {
  it('matches peft: output, loss and all 256 gradients', async () => {
    const dir = goldenDir('tiny-sd15');
    const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
    const loraFile = readGoldenTensors(join(dir, 'lora_kohya.safetensors'));
    const expectedGrads = readGoldenTensors(join(dir, 'lora_grads.safetensors'));
    const model = openModelFolder(join(dir, 'model'));

    const g = new Graph('lora_unet');
    const sample = g.input('sample', 'float32', cases.get('unet.input.sample')!.shape);
    const timestep = g.input('timestep', 'int64', cases.get('unet.input.timestep')!.shape);
    const ehs = g.input('ehs', 'float32', cases.get('unet.input.encoder_hidden_states')!.shape);
    const target = g.input('target', 'float32', cases.get('lora.target')!.shape);
    const network = new LoraNetwork({ prefix: 'lora_unet', rank: 4, alpha: 8, targets: unetTargets('attention') });
    const p = new Params(g, model.unet.weights, { dtype: 'float32', hook: network.hook() });
    const out = buildUNet2DCondition(p, model.unet.config, { sample, timestep, encoderHiddenStates: ehs });
    model.unet.weights.assertAllTaken();
    const diff = op.sub(out, target);
    const loss = op.meanAll(op.mul(diff, diff));
    const grads = gradients(loss, network.parameters());
    g.output(out, 'output');
    g.output(loss, 'loss');
    network.parameters().forEach((param, i) => g.output(grads[i], `grad:${param.name}`));
    expect(network.modules.length).toBe(128);

    const session = await Session.create(serializeModel(g));
    const feeds: Record<string, HostTensor> = {
      sample: host(cases.get('unet.input.sample')!),
      timestep: host(cases.get('unet.input.timestep')!),
      ehs: host(cases.get('unet.input.encoder_hidden_states')!),
      target: host(cases.get('lora.target')!),
    };
    for (const name of network.parameterNames()) feeds[name] = host(loraFile.get(name)!);
    const r = await session.run(feeds);

    expect(maxRelError(r.output.data as Float32Array, cases.get('lora.output')!.data as Float32Array)).toBeLessThan(1e-3);
    expect(maxRelError(r.loss.data as Float32Array, cases.get('lora.loss')!.data as Float32Array)).toBeLessThan(1e-4);
    // Per tensor: ||ours - peft|| / ||peft||; float32 sums in a different order differ at ~1e-6.
    let worst = 0;
    let worstName = '';
    for (const name of network.parameterNames()) {
      const a = r[`grad:${name}`].data as Float32Array;
      const e = expectedGrads.get(name)!.data as Float32Array;
      let num = 0;
      let den = 0;
      for (let i = 0; i < e.length; i++) {
        num += (a[i] - e[i]) ** 2;
        den += e[i] ** 2;
      }
      const rel = Math.sqrt(num / den);
      if (process.env.GOLDEN_VERBOSE) console.log(name, rel.toExponential(2), Math.sqrt(den).toExponential(2));
      if (rel > worst) [worst, worstName] = [rel, name];
    }
    expect(expectedGrads.size).toBe(256);
    expect(worst, `worst gradient ${worstName}`).toBeLessThan(1e-3);
  });
});
