// Several optimizer steps in one run (multi-step-graph.ts) follow the same trajectory as one step
// per run: the golden train.vpred_snr case (v-prediction, min-SNR, noise offset, clipping), run as
// five runs of two steps, against the reference losses and against the single-step graph.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { buildMultiStepTrainGraph } from '../../../src-main/engine/train/multi-step-graph';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });

describe('multi-step training graph', () => {
  it('five runs of two steps reproduce the reference trajectory (train.vpred_snr)', async () => {
    const dir = goldenDir('tiny-sd15');
    const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
    const lora = readGoldenTensors(join(dir, 'lora_kohya.safetensors'));
    const model = openModelFolder(join(dir, 'model'));
    const x0 = cases.get('train.x0')!;
    const ehs = cases.get('train.encoder_hidden_states')!;
    const [batch, channels, h, w] = x0.shape;
    const K = 2;
    const graph = buildMultiStepTrainGraph(
      {
        unetConfig: model.unet.config,
        weights: model.unet.weights,
        build: { dtype: 'float32' },
        lora: { rank: 4, alpha: 8, targets: unetTargets('attention') },
        shape: { batch, latentHeight: h, latentWidth: w, tokens: ehs.shape[1], contextDim: ehs.shape[2] },
        loss: { prediction: 'v_prediction', minSnrGamma: 5 },
        alphasCumprod: NoiseSchedule.fromConfig(model.schedulerConfig).alphasCumprod,
        adamw: DEFAULT_ADAMW,
        maxGradNorm: 1,
      },
      K,
    );
    const session = await Session.create(serializeModel(graph.graph));
    const size = graph.layout.size;
    let params: Float32Array = new Float32Array(size);
    let m: Float32Array = new Float32Array(size);
    let v: Float32Array = new Float32Array(size);
    for (const t of graph.layout.tensors) if (t.name.includes('lora_down')) params.set(lora.get(t.name)!.data as Float32Array, t.offset);
    const noiseAll = cases.get('train.noise')!.data as Float32Array;
    const offsetAll = cases.get('train.offset_noise')!.data as Float32Array;
    const timestepsAll = cases.get('train.timesteps')!.data as BigInt64Array;
    const perStep = x0.data.length;
    const losses: number[] = [];
    for (let run = 0; run < 10 / K; run++) {
      const latents = new Float32Array(K * perStep);
      const noise = new Float32Array(K * perStep);
      const context = new Float32Array(K * (ehs.data as Float32Array).length);
      const scalars = { lr: new Float32Array(K), bc1: new Float32Array(K), bc2: new Float32Array(K) };
      for (let k = 0; k < K; k++) {
        const s = run * K + k;
        latents.set(x0.data as Float32Array, k * perStep);
        context.set(ehs.data as Float32Array, k * (ehs.data as Float32Array).length);
        for (let i = 0; i < perStep; i++) noise[k * perStep + i] = noiseAll[s * perStep + i] + 0.1 * offsetAll[s * batch * channels + Math.floor(i / (h * w))];
        const sv = adamwStepValues(DEFAULT_ADAMW, 1e-3, s + 1);
        [scalars.lr[k], scalars.bc1[k], scalars.bc2[k]] = [sv['adamw.lr'], sv['adamw.bias_correction1'], sv['adamw.bias_correction2_sqrt']];
      }
      const r = await session.run({
        [graph.inputs.latents]: f32([K * batch, channels, h, w], latents),
        [graph.inputs.noise]: f32([K * batch, channels, h, w], noise),
        [graph.inputs.timesteps]: { dtype: 'int64', shape: [K * batch], data: timestepsAll.slice(run * K * batch, (run + 1) * K * batch) },
        [graph.inputs.encoderHiddenStates]: f32([K * batch, ...ehs.shape.slice(1)], context),
        'adamw.lr': f32([K], scalars.lr),
        'adamw.bias_correction1': f32([K], scalars.bc1),
        'adamw.bias_correction2_sqrt': f32([K], scalars.bc2),
        [graph.state.params]: f32([size], params),
        [graph.state.m]: f32([size], m),
        [graph.state.v]: f32([size], v),
      });
      losses.push(...(r.loss.data as Float32Array));
      params = r[graph.state.newParams].data as Float32Array;
      m = r[graph.state.newM].data as Float32Array;
      v = r[graph.state.newV].data as Float32Array;
    }
    const expected = cases.get('train.vpred_snr.losses')!.data as Float32Array;
    expect(losses).toHaveLength(10);
    // Same bound as the single-step trajectory test (see its comment on float32 sensitivity).
    losses.forEach((l, i) => expect(Math.abs(l - expected[i]) / Math.abs(expected[i])).toBeLessThan(2e-3));
  });
});
