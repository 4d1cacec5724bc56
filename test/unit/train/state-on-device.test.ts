// The trainer's state kept on the device between session runs (train-state.ts), run on the CPU:
// the CPU binding returns every output to the host, so the step sessions here are the real
// sessions (they compute every step) with the outputs the trainer asks to keep on the device handed
// back as DeviceTensors (onnxruntime tensors in host memory standing in for WebGPU buffers), which
// the trainer then feeds to the next run and reads back with Session.download. The losses,
// checkpoints, previews and LoRA must be those of the host path, exactly; the state must go to the
// host only at checkpoints, previews and the end, and every device tensor must be freed, none fed
// after it was. (On WebGPU itself: the CLI run in the report of issue #9.)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Graph } from '../../../src-main/engine/graph/graph';
import { readLoraFile, type LoraModuleWeights } from '../../../src-main/engine/lora/lora-file';
import { DeviceTensor, Session, toOrtTensor, type HostTensor, type SessionOptions } from '../../../src-main/engine/runtime/session';
import { loadCheckpoint } from '../../../src-main/engine/train/checkpoint';
import type { TrainEvent } from '../../../src-main/engine/train/events';
import { resolveTrainSettings, type TrainSettingsInput } from '../../../src-main/engine/train/settings';
import type { StepRunResult, StepSession } from '../../../src-main/engine/train/train-state';
import { Trainer } from '../../../src-main/engine/train/trainer';

const sampleDataset = fileURLToPath(new URL('../../../resources/sample-dataset', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'lora-state-on-device-'));
const modelsDir = join(work, 'models');

/** A device tensor that knows whether it was freed. */
class StandInDeviceTensor extends DeviceTensor {
  disposed = false;
  override dispose(): void {
    this.disposed = true;
    super.dispose();
  }
}

/** What the stand-in device saw over one training run. */
interface DeviceLog {
  /** Per session run: how many of its feeds were device tensors (3 = the whole state, 0 = none). */
  deviceFeedsPerRun: number[];
  downloads: number;
  created: StandInDeviceTensor[];
  sessionsOpened: number;
}

/** The real Session; the outputs it was asked to keep on the device come back as device tensors. */
class StandInDeviceSession implements StepSession {
  private constructor(
    private readonly inner: Session,
    private readonly keep: readonly string[],
    private readonly log: DeviceLog,
  ) {}

  static opener(log: DeviceLog) {
    return async (graph: Graph, opts: SessionOptions, workDir?: string): Promise<StepSession> => {
      log.sessionsOpened++;
      return new StandInDeviceSession(await Session.fromGraph(graph, opts, workDir), opts.outputsOnDevice ?? [], log);
    };
  }

  run(feeds: Record<string, HostTensor>, outputs?: readonly string[]): Promise<Record<string, HostTensor>> {
    return this.inner.run(feeds, outputs);
  }

  async runOnDevice(feeds: Record<string, HostTensor | DeviceTensor>): Promise<StepRunResult> {
    const fedOnDevice = Object.values(feeds).filter((t) => t instanceof DeviceTensor);
    for (const t of fedOnDevice) if ((t as StandInDeviceTensor).disposed) throw new Error('a freed device tensor was fed');
    this.log.deviceFeedsPerRun.push(fedOnDevice.length);
    const { host, device } = await this.inner.runOnDevice(feeds);
    for (const name of this.keep) {
      const t = new StandInDeviceTensor(toOrtTensor(host[name]));
      this.log.created.push(t);
      device[name] = t;
      delete host[name];
    }
    return { host, device };
  }

  download(t: DeviceTensor): Promise<HostTensor> {
    if ((t as StandInDeviceTensor).disposed) throw new Error('a freed device tensor was read back');
    this.log.downloads++;
    return this.inner.download(t);
  }

  release(): Promise<void> {
    return this.inner.release();
  }
}

/** One run with previews every `previewEvery` steps (kept); `stateOnDevice` opens the step sessions on the stand-in device. */
async function train(name: string, overrides: Partial<TrainSettingsInput>, stateOnDevice: boolean, { previewEvery = 0, stopAt = 0 } = {}) {
  const settings = resolveTrainSettings({ images: sampleDataset, out: join(work, `${name}.safetensors`), modelsDir, cacheDir: join(work, 'cache'), precision: 'fp32', ...overrides });
  const log: DeviceLog = { deviceFeedsPerRun: [], downloads: 0, created: [], sessionsOpened: 0 };
  const previews = new Map<number, LoraModuleWeights[]>();
  const trainer = new Trainer(settings, {
    previewEvery,
    onPreview: ({ step, lora }) => void previews.set(step, lora),
    ...(stateOnDevice ? { openStepSession: StandInDeviceSession.opener(log) } : {}),
  });
  const events: TrainEvent[] = [];
  trainer.events.onAny((e) => events.push(e));
  if (stopAt) trainer.events.on('step', (e) => e.step === stopAt && trainer.stop());
  return { result: await trainer.run(), log, previews, events };
}

const checkpointSteps = (events: TrainEvent[]) => events.flatMap((e) => (e.type === 'checkpoint' ? [`${e.step} ${e.reason}`] : []));
/** The trainer's note on how often it read the state back from the device, if any. */
const readBacksNote = (events: TrainEvent[]) => events.flatMap((e) => (e.type === 'phase' && e.message.startsWith('LoRA and AdamW state kept on the device') ? [e.message] : []));

/** The two runs wrote the same LoRA file and the same final checkpoint (LoRA, moments, Rng, loss scaling), exactly. */
function expectSameOutputs(a: { out: string; checkpoint: string }, b: { out: string; checkpoint: string }): void {
  const [x, y] = [readLoraFile(a.out).modules, readLoraFile(b.out).modules];
  expect(y.map((m) => m.key)).toEqual(x.map((m) => m.key));
  x.forEach((m, i) => {
    expect(Array.from(y[i].down), m.key).toEqual(Array.from(m.down));
    expect(Array.from(y[i].up), m.key).toEqual(Array.from(m.up));
  });
  const [p, q] = [loadCheckpoint(a.checkpoint), loadCheckpoint(b.checkpoint)];
  expect([...q.tensors.keys()]).toEqual([...p.tensors.keys()]);
  for (const [name, t] of p.tensors) expect(Array.from(q.tensors.get(name)!.data), name).toEqual(Array.from(t.data));
  expect(q.info.rng).toEqual(p.info.rng);
  expect(q.info.lossScaling).toEqual(p.info.lossScaling);
}

/** Every device tensor made was freed by the end of the run. */
const expectAllFreed = (log: DeviceLog): void => expect(log.created.filter((t) => !t.disposed)).toHaveLength(0);

describe('training state kept on the device', () => {
  it('one step per run: the same losses, checkpoints, previews and LoRA as on the host; read back only at a checkpoint, a preview and the end', async () => {
    // 8 steps, a checkpoint at 4, a preview at 6
    const cadence = { steps: 8, saveEvery: 4 };
    const host = await train('host', cadence, false, { previewEvery: 6 });
    const device = await train('device', cadence, true, { previewEvery: 6 });

    expect(device.result.losses).toHaveLength(8);
    expect(device.result.losses).toEqual(host.result.losses);
    expect(checkpointSteps(device.events)).toEqual(['4 interval', '8 end']);
    expect([...device.previews.keys()]).toEqual([6]);
    host.previews.get(6)!.forEach((m, i) => {
      expect(Array.from(device.previews.get(6)![i].down), m.key).toEqual(Array.from(m.down));
      expect(Array.from(device.previews.get(6)![i].up), m.key).toEqual(Array.from(m.up));
    });
    expectSameOutputs(host.result, device.result);

    // Runs 2-4 fed the state the run before left on the device; runs 5 and 7 the host copy read
    // back for the checkpoint at 4 and the preview at 6; the state (3 tensors) read back at 4, 6 and the end.
    expect(device.log.deviceFeedsPerRun).toEqual([0, 3, 3, 3, 0, 3, 0, 3]);
    expect(device.log.downloads).toBe(9);
    expect(device.log.created).toHaveLength(8 * 3);
    expectAllFreed(device.log);
    expect(readBacksNote(device.events)).toEqual(['LoRA and AdamW state kept on the device between runs, read back 3 time(s) (checkpoints, previews, the end)']);
    expect(readBacksNote(host.events)).toEqual([]);
  }, 120_000);

  it('several steps per run: the same as on the host', async () => {
    // Runs of steps 1-2, 3-4, 5-6 (the checkpoint) and 7-8.
    const multi = { steps: 8, saveEvery: 6, stepsPerRun: 2 };
    const host = await train('multi-host', multi, false);
    const device = await train('multi-device', multi, true);
    expect(device.result.losses).toEqual(host.result.losses);
    expectSameOutputs(host.result, device.result);
    expect(device.log.deviceFeedsPerRun).toEqual([0, 3, 3, 0]);
    expect(device.log.downloads).toBe(6);
    expectAllFreed(device.log);
    expect(readBacksNote(device.events)).toEqual([expect.stringContaining('read back 2 time(s)')]);
  }, 120_000);

  it('float16 with dynamic loss scaling, an overflow included: the same as on the host', async () => {
    // The step graph keeps the old state after an overflow (measured here: at step 4 on the CPU).
    const f16 = { steps: 5, computePrecision: 'float16' as const };
    const f16Host = await train('f16-host', f16, false);
    const f16Device = await train('f16-device', f16, true);
    const overflowed = (events: TrainEvent[]) => events.some((e) => e.type === 'phase' && e.message.includes('float16 gradients overflowed'));
    expect(overflowed(f16Host.events)).toBe(true);
    expect(overflowed(f16Device.events)).toBe(true);
    expect(f16Device.result.losses).toEqual(f16Host.result.losses);
    expectSameOutputs(f16Host.result, f16Device.result);
    expect(f16Device.log.deviceFeedsPerRun).toEqual([0, 3, 3, 3, 3]);
    expectAllFreed(f16Device.log);
  }, 120_000);

  it('stop and resume: the stopped state is read back, and the resumed run continues the trajectory', async () => {
    const straight = await train('straight-host', { steps: 6 }, false);
    const stopped = await train('stopped-device', { steps: 6 }, true, { stopAt: 3 });
    expect(stopped.result).toMatchObject({ stopped: true, step: 3 });
    expect(checkpointSteps(stopped.events)).toEqual(['3 stop']);
    expect(stopped.result.losses).toEqual(straight.result.losses.slice(0, 3));
    expect(stopped.log.downloads).toBe(3);
    expect(readBacksNote(stopped.events)).toEqual([expect.stringContaining('read back 1 time(s)')]);
    expectAllFreed(stopped.log);
    const resumed = await train('resumed-device', { steps: 6, resume: stopped.result.checkpoint }, true);
    expect(resumed.result.losses).toEqual(straight.result.losses.slice(3));
    expectSameOutputs(straight.result, resumed.result);
    expect(resumed.log.deviceFeedsPerRun).toEqual([0, 3, 3]);
  }, 120_000);

  it('gradient accumulation keeps the state on the host', async () => {
    const run = await train('accumulate-device', { steps: 2, gradAccum: 2 }, true);
    expect(run.result.losses).toHaveLength(2);
    expect(run.log.sessionsOpened).toBe(0);
  }, 120_000);
});
