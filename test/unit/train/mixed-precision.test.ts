// float16 training: the step graph skips the update when scaled gradients overflow (and says so),
// and the Trainer's float16 path with dynamic loss scaling trains, checkpoints its scaler state and
// resumes on the uninterrupted trajectory. (Run on the CPU provider, which executes float16 graphs.)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { ensureEmbeddedModel } from '../../../src-main/engine/models/embedded-tiny-model';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { adamwStepValues, DEFAULT_ADAMW } from '../../../src-main/engine/train/adamw';
import { loadCheckpoint } from '../../../src-main/engine/train/checkpoint';
import { resolveTrainSettings } from '../../../src-main/engine/train/settings';
import { buildTrainStepGraph } from '../../../src-main/engine/train/train-step-graph';
import { Trainer } from '../../../src-main/engine/train/trainer';
import { embeddedStepSpec } from '../../helpers/step-spec';

const work = mkdtempSync(join(tmpdir(), 'lora-f16-'));
const sampleDataset = fileURLToPath(new URL('../../../resources/sample-dataset', import.meta.url));
const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });

describe('float16 training', () => {
  it('keeps the old state and reports the overflow when scaled gradients are not finite', async () => {
    const model = openModelFolder(ensureEmbeddedModel(join(work, 'models')));
    const step = buildTrainStepGraph(embeddedStepSpec(model, 'float16'));
    expect(step.lossScaling).toBeDefined();
    const session = await Session.create(serializeModel(step.graph));
    const size = step.layout.size;
    const params = Float32Array.from({ length: size }, (_, i) => 0.05 * Math.sin(i));
    const run = (scale: number) =>
      session.run({
        [step.inputs.latents]: f32([1, 4, 8, 8], Float32Array.from({ length: 256 }, (_, i) => Math.cos(i))),
        [step.inputs.noise]: f32([1, 4, 8, 8], Float32Array.from({ length: 256 }, (_, i) => Math.sin(3 * i))),
        [step.inputs.timesteps]: { dtype: 'int64', shape: [1], data: BigInt64Array.of(500n) },
        [step.inputs.encoderHiddenStates]: f32([1, 77, 32], Float32Array.from({ length: 77 * 32 }, (_, i) => Math.sin(i / 7))),
        ...Object.fromEntries(Object.entries(adamwStepValues(DEFAULT_ADAMW, 1e-3, 1)).map(([k, v]) => [k, f32([], Float32Array.of(v))])),
        [step.state.params]: f32([size], params),
        [step.state.m]: f32([size], new Float32Array(size)),
        [step.state.v]: f32([size], new Float32Array(size)),
        [step.lossScaling!.scale]: f32([], Float32Array.of(scale)),
      });
    const ok = await run(1024);
    expect((ok[step.lossScaling!.finite].data as Float32Array)[0]).toBe(1);
    expect(Array.from(ok[step.state.newParams].data as Float32Array)).not.toEqual(Array.from(params));
    const overflow = await run(1e38); // the scaled loss is inf in float16
    expect((overflow[step.lossScaling!.finite].data as Float32Array)[0]).toBe(0);
    expect(Array.from(overflow[step.state.newParams].data as Float32Array)).toEqual(Array.from(params));
    expect(Array.from(overflow[step.state.newM].data as Float32Array).every((x) => x === 0)).toBe(true);
  });

  it('trains with dynamic loss scaling and resumes on the same trajectory', async () => {
    const base = { images: sampleDataset, modelsDir: join(work, 'models'), cacheDir: join(work, 'cache'), computePrecision: 'float16' as const, steps: 8 };
    const straight = await new Trainer(resolveTrainSettings({ ...base, out: join(work, 'straight.safetensors') })).run();
    expect(straight.losses.every(Number.isFinite)).toBe(true);
    const scaler = loadCheckpoint(straight.checkpoint).info.lossScaling!;
    expect(scaler.scale).toBeGreaterThan(0);
    expect(scaler.optimizerSteps).toBeLessThanOrEqual(8);

    const first = new Trainer(resolveTrainSettings({ ...base, out: join(work, 'first.safetensors') }));
    first.events.on('step', (e) => {
      if (e.step === 4) first.stop();
    });
    const stopped = await first.run();
    expect(stopped.step).toBe(4);
    const resumed = await new Trainer(resolveTrainSettings({ ...base, out: join(work, 'resumed.safetensors'), resume: stopped.checkpoint })).run();
    expect([...stopped.losses, ...resumed.losses]).toEqual(straight.losses);
  });
});
