// Ten LoRA training steps through our train-step graph vs the reference trajectories
// (train.eps.*, train.vpred_snr.*): losses per step and the final LoRA.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { NoiseSchedule } from '../../../src-main/engine/sample/noise-schedule';
import { buildTrainStepGraph } from '../../../src-main/engine/train/train-step-graph';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });

const variants = [
  { name: 'eps', prediction: 'epsilon' as const, minSnrGamma: undefined, noiseOffset: 0, maxGradNorm: undefined },
  { name: 'vpred_snr', prediction: 'v_prediction' as const, minSnrGamma: 5, noiseOffset: 0.1, maxGradNorm: 1 },
];

describe('training trajectory (golden train.*)', () => {
  for (const variant of variants) {
    it(`follows the reference for 10 steps: ${variant.name}`, async () => {
      const dir = goldenDir('tiny-sd15');
      const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
      const lora = readGoldenTensors(join(dir, 'lora_kohya.safetensors'));
      const finalLora = readGoldenTensors(join(dir, `train_${variant.name}_final_lora.safetensors`));
      const model = openModelFolder(join(dir, 'model'));
      const schedule = NoiseSchedule.fromConfig(model.schedulerConfig);
      const x0 = cases.get('train.x0')!;
      const ehs = cases.get('train.encoder_hidden_states')!;
      const [batch, , h, w] = x0.shape;
      const step = buildTrainStepGraph({
        unetConfig: model.unet.config,
        weights: model.unet.weights,
        build: { dtype: 'float32' },
        lora: { rank: 4, alpha: 8, targets: unetTargets('attention') },
        shape: { batch, latentHeight: h, latentWidth: w, tokens: ehs.shape[1], contextDim: ehs.shape[2] },
        loss: { prediction: variant.prediction, minSnrGamma: variant.minSnrGamma },
        alphasCumprod: schedule.alphasCumprod,
        adamw: DEFAULT_ADAMW,
        maxGradNorm: variant.maxGradNorm,
      });
      const session = await Session.create(serializeModel(step.graph));

      // Flat state: down = the golden lora_down tensors, up = zeros; moments zero.
      let params: Float32Array = new Float32Array(step.layout.size);
      let m: Float32Array = new Float32Array(step.layout.size);
      let v: Float32Array = new Float32Array(step.layout.size);
      for (const t of step.layout.tensors) if (t.name.includes('lora_down')) params.set(lora.get(t.name)!.data as Float32Array, t.offset);
      const noiseAll = cases.get('train.noise')!.data as Float32Array;
      const offsetAll = cases.get('train.offset_noise')!.data as Float32Array;
      const timestepsAll = cases.get('train.timesteps')!.data as BigInt64Array;
      const expectedLosses = cases.get(`train.${variant.name}.losses`)!.data as Float32Array;
      const perStep = x0.data.length;
      const losses: number[] = [];
      for (let s = 0; s < 10; s++) {
        // noise_s = noise[s] + offset * offset_noise[s] (offset_noise [B, C, 1, 1] broadcast over h, w)
        const noise = new Float32Array(perStep);
        for (let i = 0; i < perStep; i++) noise[i] = noiseAll[s * perStep + i] + variant.noiseOffset * offsetAll[s * batch * 4 + Math.floor(i / (h * w))];
        const feeds: Record<string, HostTensor> = {
          [step.inputs.latents]: f32(x0.shape, x0.data as Float32Array),
          [step.inputs.noise]: f32(x0.shape, noise),
          [step.inputs.timesteps]: { dtype: 'int64', shape: [batch], data: timestepsAll.slice(s * batch, (s + 1) * batch) },
          [step.inputs.encoderHiddenStates]: f32(ehs.shape, ehs.data as Float32Array),
        };
        for (const [k, v] of Object.entries(adamwStepValues(DEFAULT_ADAMW, 1e-3, s + 1))) feeds[k] = f32([], Float32Array.of(v));
        feeds[step.state.params] = f32([step.layout.size], params);
        feeds[step.state.m] = f32([step.layout.size], m);
        feeds[step.state.v] = f32([step.layout.size], v);
        const r = await session.run(feeds);
        losses.push((r.loss.data as Float32Array)[0]);
        params = r[step.state.newParams].data as Float32Array;
        m = r[step.state.newM].data as Float32Array;
        v = r[step.state.newV].data as Float32Array;
      }
      if (process.env.GOLDEN_VERBOSE) console.log(variant.name, losses, Array.from(expectedLosses));
      // The reference is float32 too. Gradients that pass through this tiny UNet's 1x1-pixel
      // bottleneck (down and mid blocks) move by ~1e-2 when the input moves by 1e-6 (see the
      // lora-unet golden test), and AdamW turns such small noisy gradients into full-size steps.
      // Over ten steps the down-block differences feed back into every layer's forward. So: losses
      // within 2e-3 (measured: 1.1e-3), the up-block LoRA tensors within 1e-2 (measured: 2e-3 to
      // 3e-3), the whole LoRA within 3e-2 (measured: 1.1e-2 to 1.3e-2).
      losses.forEach((l, i) => expect(Math.abs(l - expectedLosses[i]) / Math.abs(expectedLosses[i])).toBeLessThan(2e-3));
      const relError = (filter: (name: string) => boolean): number => {
        let num = 0;
        let den = 0;
        for (const t of step.layout.tensors.filter((x) => filter(x.name))) {
          const ours = params.subarray(t.offset, t.offset + t.size);
          const ref = finalLora.get(t.name)!.data as Float32Array;
          for (let i = 0; i < ref.length; i++) {
            num += (ours[i] - ref[i]) ** 2;
            den += ref[i] ** 2;
          }
        }
        return Math.sqrt(num / den);
      };
      const upBlocks = relError((n) => n.startsWith('lora_unet_up_blocks'));
      const all = relError(() => true);
      if (process.env.GOLDEN_VERBOSE) console.log('final lora rel: up blocks', upBlocks, 'all', all);
      expect(upBlocks).toBeLessThan(1e-2);
      expect(all).toBeLessThan(3e-2);
    });
  }
});
