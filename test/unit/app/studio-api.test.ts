// The studio's API handlers in-process, with real worker processes (child_process.fork through
// tsx) and the real engine on the embedded tiny model: datasets, training with previews, pause /
// resume / stop, a worker killed mid-run, export, generation, and the project file.
import { cpSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiEvents, EventName, RunView, TrainEvent, TrainSettingsView } from '../../../src-main/api/contract';
import { ApiEventBus } from '../../../src-main/api/events';
import { createStudio, type Studio } from '../../../src-main/api/handlers';
import { PathGuard } from '../../../src-main/api/path-guard';
import { readLoraFile } from '../../../src-main/engine/lora/lora-file';
import { loadCheckpoint } from '../../../src-main/engine/train/checkpoint';

const repoRoot = new URL('../../../', import.meta.url).pathname;
let work: string;
let data: string;
let studio: Studio;
let events: ApiEventBus;
const seen: { event: EventName; payload: unknown }[] = [];

function makeStudio(): { studio: Studio; events: ApiEventBus } {
  const bus = new ApiEventBus();
  bus.subscribe((event, payload) => seen.push({ event, payload: structuredClone(payload) }));
  return { studio: createStudio({ kind: 'server', version: 'test', guard: new PathGuard([data]), events: bus, home: join(work, 'home') }), events: bus };
}

/** Resolves with the first event (from now on) that `match` accepts. */
function waitFor<E extends EventName>(bus: ApiEventBus, event: E, match: (p: ApiEvents[E]) => boolean, timeoutMs = 60_000): Promise<ApiEvents[E]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching ${event} within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = bus.subscribe((name, payload) => {
      if ((name as string) === event && match(payload as ApiEvents[E])) {
        clearTimeout(timer);
        off();
        resolve(payload as ApiEvents[E]);
      }
    });
  });
}

const runDone = (runId: string, statuses: RunView['status'][]) => (e: TrainEvent) => e.runId === runId && e.type === 'status' && statuses.includes(e.status);

function settings(over: Partial<TrainSettingsView>): Partial<TrainSettingsView> {
  return { images: data, model: 'embedded', resolution: 64, device: 'cpu', rank: 4, alpha: 4, ...over };
}

beforeAll(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'lora-studio-api-')));
  data = join(work, 'data');
  cpSync(join(repoRoot, 'resources/sample-dataset'), join(data, 'shapes'), { recursive: true });
  ({ studio, events } = makeStudio());
});

afterAll(() => {
  studio?.shutdown();
  rmSync(work, { recursive: true, force: true });
});

describe('dataset', () => {
  it('opens a folder, saves a caption, edits in bulk, makes thumbnails, refuses paths outside', async () => {
    const h = studio.handlers;
    const folder = join(data, 'shapes');
    const view = await h['dataset.open']({ folder, resolution: 64 });
    expect(view.summary.images).toBe(8);
    expect(view.summary.trainable).toBe(8);
    expect(view.buckets).toEqual([{ width: 64, height: 64, images: 8 }]);
    const first = view.items[0]!;
    expect(first.tokens).toBeGreaterThan(0);

    const saved = await h['dataset.saveCaption']({ folder, relativePath: first.relativePath, caption: 'shapez, a fixed caption' });
    expect(saved.caption).toBe('shapez, a fixed caption');
    expect(readFileSync(join(folder, first.relativePath.replace(/\.png$/, '.txt')), 'utf8')).toContain('a fixed caption');

    const bulk = await h['dataset.bulkCaption']({ folder, operation: { kind: 'prepend', text: 'shapez' } });
    expect(bulk.changed.length).toBe(7); // the fixed one starts with it already
    expect(bulk.dataset.tagFrequency[0]).toEqual({ tag: 'shapez', count: 8 });

    const thumb = await h['dataset.thumbnail']({ folder, relativePath: first.relativePath, size: 32 });
    expect(thumb.image).toMatch(/^data:image\/webp;base64,/);
    await expect(h['dataset.thumbnail']({ folder, relativePath: '../../etc/passwd' })).rejects.toMatchObject({ code: 'not-found' });
    await expect(h['dataset.open']({ folder: work })).rejects.toMatchObject({ code: 'path-outside-roots' });
    expect((await h['project.get']()).datasetFolder).toBe(folder);
  });
});

describe('models and estimates', () => {
  it('lists the embedded model and the known downloads; presets; an estimate with notes', async () => {
    const h = studio.handlers;
    const { models, known } = await h['model.list']();
    expect(models[0]).toMatchObject({ id: 'embedded', source: 'embedded', kind: 'sd1' });
    expect(known.map((k) => k.kind)).toEqual(['sd1', 'sd2']);
    const presets = await h['train.presets']();
    expect(presets.map((p) => p.name)).toEqual(['Tiny (embedded model, quick try)', 'Style LoRA (SD1.5)', 'SD2.x', 'Style LoRA (SDXL)']);
    const estimate = await h['train.estimate']({ settings: settings({ images: join(data, 'shapes'), steps: 80, batch: 2 }) as TrainSettingsView });
    expect(estimate).toMatchObject({ steps: 80, samplesPerEpoch: 8, epochs: 20, device: 'cpu' });
    expect(estimate.seconds).toBeGreaterThan(0);
    expect(estimate.peakMemoryGiB).toBeGreaterThan(0);
    expect(estimate.notes.join(' ')).toMatch(/Memory: UNet weights/);
    // the Train screen's checkbox: the estimate follows it
    const checkpointed = await h['train.estimate']({ settings: settings({ images: join(data, 'shapes'), steps: 80, batch: 2, gradientCheckpointing: true }) as TrainSettingsView });
    expect(checkpointed.seconds!).toBeGreaterThan(estimate.seconds!);
    expect(checkpointed.notes.join(' ')).toMatch(/Memory: .*gradient checkpointing/);
  });

  it('reports a download that cannot happen as a model.download event with the error', async () => {
    const done = waitFor(events, 'model.download', (e) => e.done);
    await studio.handlers['model.download']({ url: 'http://127.0.0.1:9/nothing.safetensors', name: 'nothing' });
    expect((await done).error).toMatch(/127\.0\.0\.1:9\/nothing\.safetensors: request failed/);
  });
});

describe('training in a worker process', () => {
  it('streams steps and previews (baseline at step 0), pauses, resumes, stops with a LoRA; exports, generates, merges', async () => {
    const h = studio.handlers;
    const out = join(data, 'shapes-lora.safetensors');
    const previews: TrainEvent[] = [];
    const off = events.subscribe((name, p) => name === 'train.event' && (p as TrainEvent).type === 'preview' && previews.push(p as TrainEvent));
    const { runId } = await h['train.start']({
      settings: settings({ out, steps: 100000, saveEvery: 0, previewEvery: 10, previews: [{ prompt: 'shapez, a red circle', seed: 7, steps: 3, guidance: 5 }] }) as TrainSettingsView,
    });
    await waitFor(events, 'train.event', (e) => e.runId === runId && e.type === 'preview' && e.preview.step === 10);
    await h['train.pause']({ runId });
    const paused = await waitFor(events, 'train.event', runDone(runId, ['paused']));
    const pausedAt = studio.runs.get(runId).step;
    await new Promise((r) => setTimeout(r, 500));
    expect(studio.runs.get(runId).step).toBe(pausedAt); // nothing moves while paused
    expect(paused.type === 'status' && paused.message).toMatch(/Paused after step/);
    await h['train.resume']({ runId });
    await waitFor(events, 'train.event', (e) => e.runId === runId && e.type === 'step' && e.point.step > pausedAt + 2);
    await h['train.stop']({ runId });
    const stopped = await waitFor(events, 'train.event', runDone(runId, ['stopped', 'failed', 'crashed']));
    off();
    expect(stopped).toMatchObject({ status: 'stopped', out });

    const run = (await h['train.runs']()).find((r) => r.runId === runId)!;
    expect(run.losses.length).toBe(run.step);
    expect(run.losses.every((p) => Number.isFinite(p.loss) && p.lr === 1e-3)).toBe(true);
    expect(previews[0]).toMatchObject({ type: 'preview', preview: { step: 0, prompt: 'shapez, a red circle', seed: 7 } });
    expect(run.previews.map((p) => p.step).slice(0, 2)).toEqual([0, 10]);
    expect(run.previews[0]!.image).toMatch(/^data:image\/png;base64,/);
    expect(run.previews[0]!.seconds).toBeGreaterThan(0);
    expect(existsSync(run.checkpoint!)).toBe(true);
    const lora = readLoraFile(out);
    expect(lora.metadata.ss_steps).toBe(String(run.step));

    const exported = join(data, 'exported-diffusers.safetensors');
    await h['export.lora']({ lora: out, format: 'diffusers', precision: 'fp32', out: exported });
    const reread = readLoraFile(exported);
    expect(reread.format).toBe('diffusers');
    expect(reread.modules.length).toBe(lora.modules.length);
    expect(await h['export.metadata']({ lora: exported })).toMatchObject({ modules: lora.modules.length, format: 'diffusers' });
    await expect(h['export.lora']({ lora: out, format: 'kohya', precision: 'fp16', out: join(work, 'x.safetensors') })).rejects.toMatchObject({ code: 'path-outside-roots' });

    const generated = await h['generate.run']({ model: 'embedded', prompt: 'shapez', negativePrompt: '', seed: 3, steps: 3, guidance: 5, width: 64, height: 64, sampler: 'Euler', clipSkip: 1, loras: [{ path: out, strength: 0.8 }] });
    expect(generated.images).toHaveLength(1);
    expect(generated.images[0]!.parameters).toContain('<lora:shapes-lora:0.8>');
    const merged = await h['export.merge']({ model: 'embedded', lora: out, strength: 1, out: join(data, 'merged.safetensors') });
    expect(existsSync(merged.path)).toBe(true);
  });

  it('survives a killed worker: the run shows crashed, the checkpoint loads, and resume continues', async () => {
    const h = studio.handlers;
    const out = join(data, 'crash-lora.safetensors');
    const { runId } = await h['train.start']({ settings: settings({ out, steps: 100000, saveEvery: 20 }) as TrainSettingsView });
    await waitFor(events, 'train.event', (e) => e.runId === runId && e.type === 'checkpoint' && e.step >= 40);
    process.kill(studio.runs.workerPid(runId)!, 'SIGKILL');
    const crashed = await waitFor(events, 'train.event', runDone(runId, ['crashed']));
    const view = studio.runs.get(runId);
    expect(crashed.type === 'status' && crashed.message).toContain('signal SIGKILL');
    expect(view.message).toContain(view.checkpoint!);
    const checkpoint = loadCheckpoint(view.checkpoint!);
    expect(checkpoint.info.step).toBe(view.checkpointStep);
    expect(checkpoint.info.step % 20).toBe(0);

    const total = checkpoint.info.step + 5;
    const resumed = await h['train.start']({ settings: settings({ out, steps: total, saveEvery: 20 }) as TrainSettingsView, resume: view.checkpoint! });
    const finished = await waitFor(events, 'train.event', runDone(resumed.runId, ['finished', 'failed', 'crashed']));
    expect(finished).toMatchObject({ status: 'finished', step: total });
    const resumedView = studio.runs.get(resumed.runId);
    expect(resumedView.resumedFrom).toBe(view.checkpoint);
    expect(resumedView.losses.at(-1)!.step).toBe(total);
    expect(resumedView.losses[0]!.step).toBe(1); // the curve continues the crashed run's
    expect(readLoraFile(out).metadata.ss_steps).toBe(String(total));
  });
});

describe('project file', () => {
  it('autosaves and reopens with every run, loss curve and preview image', async () => {
    const before = await studio.handlers['project.save']({ path: join(data, 'shapes.lora-studio.json') });
    studio.shutdown();
    const saved = JSON.parse(readFileSync(before.path!, 'utf8'));
    expect(saved.format).toBe('lora-studio-project');
    expect(saved.runs[0].previews[0].file).toMatch(/^shapes\.lora-studio\.previews\//);

    ({ studio, events } = makeStudio()); // a fresh studio, as after a restart
    const reopened = await studio.handlers['project.open']({ path: before.path! });
    expect(reopened.datasetFolder).toBe(before.datasetFolder);
    expect(reopened.settings).toEqual(before.settings);
    expect(reopened.runs).toEqual(before.runs);
    expect(reopened.runs[0]!.previews[0]!.image).toMatch(/^data:image\/png;base64,/);
  });
});
