// The studio end to end: the real `lora-studio serve` (training in forked worker processes, the
// real engine on the embedded tiny model) driven two ways: through the screens in Debian's
// Chromium (open a dataset, fix a caption, train with previews, watch loss and previews arrive,
// stop, export), and through the WebSocket API alone (the same flow plus export), so the back end is
// proven without the page. Each ends with the exported file read back as a valid LoRA.
import { cpSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { RunView, TrainEvent, TrainSettingsView } from '../../src-main/api/contract';
import { readLoraFile } from '../../src-main/engine/lora/lora-file';
import { ensureBuilt, launchBrowser, repoRoot, startServerProcess, type ServerProcess } from './helpers';

let server: ServerProcess;
let browser: Browser;
let workspace: string;
const savedHome = process.env.LORA_STUDIO_HOME;

beforeAll(async () => {
  await ensureBuilt();
  workspace = realpathSync(mkdtempSync(join(tmpdir(), 'lora-studio-e2e-')));
  for (const name of ['ui-set', 'api-set']) cpSync(join(repoRoot, 'resources/sample-dataset'), join(workspace, name), { recursive: true });
  process.env.LORA_STUDIO_HOME = join(workspace, 'home'); // the server's models, cache and project
  [server, browser] = await Promise.all([startServerProcess([workspace]), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (savedHome === undefined) delete process.env.LORA_STUDIO_HOME;
  else process.env.LORA_STUDIO_HOME = savedHome;
  if (workspace) rmSync(workspace, { recursive: true, force: true });
});

/** A WebSocket client of the contract: calls by id, and every pushed event kept in order. */
async function connect(): Promise<{ call: <T>(method: string, params?: unknown) => Promise<T>; events: { event: string; payload: unknown }[]; waitFor: (match: (e: TrainEvent) => boolean, ms?: number) => Promise<TrainEvent>; close: () => void }> {
  const ws = new WebSocket(`${server.origin.replace('http', 'ws')}/api?token=${server.token}`);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const events: { event: string; payload: unknown }[] = [];
  const waiters: { match: (e: TrainEvent) => boolean; resolve: (e: TrainEvent) => void }[] = [];
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string; code: string }; event?: string; payload?: unknown };
    if (msg.event) {
      events.push({ event: msg.event, payload: msg.payload });
      if (msg.event === 'train.event')
        for (const w of [...waiters]) {
          if (!w.match(msg.payload as TrainEvent)) continue;
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(msg.payload as TrainEvent);
        }
      return;
    }
    const p = pending.get(msg.id!);
    pending.delete(msg.id!);
    if (msg.error) p?.reject(Object.assign(new Error(msg.error.message), { code: msg.error.code }));
    else p?.resolve(msg.result);
  });
  return {
    call: <T>(method: string, params?: unknown) =>
      new Promise<T>((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        ws.send(JSON.stringify({ id, method, params }));
      }),
    events,
    waitFor: (match, ms = 90_000) =>
      new Promise<TrainEvent>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching train.event within ${ms} ms`)), ms);
        waiters.push({ match, resolve: (e) => (clearTimeout(timer), resolve(e)) });
      }),
    close: () => ws.close(),
  };
}

describe('the studio through its screens', () => {
  it('opens a dataset, fixes a caption, trains with previews, shows loss and previews, stops, exports', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url);
    const folder = join(workspace, 'ui-set');

    // Dataset: open the folder, pick an image, fix its caption.
    await page.getByRole('tab', { name: 'Dataset' }).click();
    await page.getByLabel('Dataset folder').fill(folder);
    await page.getByRole('button', { name: 'Open', exact: true }).click();
    const grid = page.getByRole('listbox', { name: 'Images' });
    await expect.poll(() => grid.getByRole('option').count(), { timeout: 30_000 }).toBe(8);
    await grid.getByRole('option').first().click();
    const caption = page.getByLabel('Caption', { exact: true });
    await caption.fill('shapez, a fixed caption');
    await page.getByRole('button', { name: 'Save caption' }).click();
    await expect.poll(() => page.getByText('Saved', { exact: true }).count(), { timeout: 10_000 }).toBeGreaterThan(0);
    const captionFiles = ['blue-square', 'green-triangle', 'orange-stripes', 'pink-heart', 'purple-ring', 'red-circle', 'teal-diamond', 'yellow-star'].map((n) => readFileSync(join(folder, `${n}.txt`), 'utf8').trim());
    expect(captionFiles).toContain('shapez, a fixed caption');

    // Train: the tiny preset, a run long enough to stop, previews every 10 steps.
    await page.getByRole('tab', { name: 'Train' }).click();
    await page.getByLabel('Preset').selectOption({ label: 'Tiny (embedded model, quick try)' });
    await page.getByLabel('Steps', { exact: true }).fill('3000');
    await page.getByLabel('Preview prompts').fill('shapez, a red circle');
    await page.getByText('Advanced', { exact: true }).click();
    await page.getByLabel('Preview every').fill('10');
    const out = join(workspace, 'ui-lora.safetensors');
    await page.getByLabel('Output file').fill(out);
    await page.getByRole('button', { name: 'Start training' }).click();

    // Live: loss points and a preview image arrive.
    await page.getByRole('tab', { name: 'Live' }).click();
    await expect.poll(async () => Number(/up to step (\d+)/.exec((await page.getByRole('img', { name: /Loss curve/ }).getAttribute('aria-label')) ?? '')?.[1] ?? 0), { timeout: 90_000 }).toBeGreaterThan(10);
    await page.getByRole('button', { name: 'Compare step 10' }).waitFor({ timeout: 60_000 });
    expect(await page.getByRole('button', { name: 'Compare step 0' }).count()).toBe(1); // the baseline
    await page.getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => page.getByTestId('run-status').first().textContent(), { timeout: 60_000 }).toBe('stopped');

    const lora = readLoraFile(out);
    expect(lora.format).toBe('kohya');
    expect(Number(lora.metadata.ss_steps)).toBeGreaterThan(10);

    // Export: the run's LoRA in diffusers layout, read back as a valid LoRA.
    await page.getByRole('tab', { name: 'Export' }).click();
    const fromRun = page.getByLabel('From a run');
    if (await fromRun.count()) await fromRun.selectOption(out);
    else await page.getByLabel('LoRA file').fill(out);
    await page.getByLabel('diffusers (PEFT keys)').check();
    const exported = join(workspace, 'ui-lora-diffusers.safetensors');
    await page.getByLabel('Save as').fill(exported);
    await page.getByRole('button', { name: 'Export', exact: true }).click();
    await expect.poll(() => existsSync(exported), { timeout: 30_000 }).toBe(true);
    const reread = readLoraFile(exported);
    expect(reread.format).toBe('diffusers');
    expect(reread.modules.length).toBe(lora.modules.length);
    expect(pageErrors).toEqual([]);
    await page.close();
  }, 240_000);
});

describe('the studio through its WebSocket API', () => {
  it('opens, fixes a caption, trains with previews, stops, exports a valid LoRA; the project remembers', async () => {
    const api = await connect();
    const folder = join(workspace, 'api-set');
    const view = await api.call<{ items: { relativePath: string }[]; summary: { trainable: number } }>('dataset.open', { folder, resolution: 64 });
    expect(view.summary.trainable).toBe(8);
    await api.call('dataset.saveCaption', { folder, relativePath: view.items[0]!.relativePath, caption: 'shapez, fixed' });

    const out = join(workspace, 'api-lora.safetensors');
    const settings: Partial<TrainSettingsView> = { images: folder, out, model: 'embedded', resolution: 64, steps: 3000, device: 'cpu', previewEvery: 10, previews: [{ prompt: 'shapez', seed: 1, steps: 2, guidance: 5 }] };
    const { runId } = await api.call<{ runId: string }>('train.start', { settings });
    await api.waitFor((e) => e.runId === runId && e.type === 'preview' && e.preview.step === 10);
    await api.call('train.stop', { runId });
    const stopped = await api.waitFor((e) => e.runId === runId && e.type === 'status' && !['starting', 'running', 'paused'].includes(e.status));
    expect(stopped).toMatchObject({ status: 'stopped', out });

    const steps = api.events.filter((e) => e.event === 'train.event' && (e.payload as TrainEvent).type === 'step').map((e) => e.payload as Extract<TrainEvent, { type: 'step' }>);
    expect(steps.length).toBeGreaterThan(10);
    expect(steps[0]!.point.step).toBe(1);
    expect(steps.every((s) => Number.isFinite(s.point.loss) && s.itPerSec > 0 && s.totalSteps === 3000)).toBe(true);
    const previews = api.events.filter((e) => e.event === 'train.event' && (e.payload as TrainEvent).type === 'preview').map((e) => (e.payload as Extract<TrainEvent, { type: 'preview' }>).preview);
    expect(previews.slice(0, 2).map((p) => p.step)).toEqual([0, 10]);
    expect(previews[0]!.image).toMatch(/^data:image\/png;base64,/);

    const exported = join(workspace, 'api-lora-fp32.safetensors');
    await api.call('export.lora', { lora: out, format: 'kohya', precision: 'fp32', out: exported });
    const lora = readLoraFile(exported);
    expect(lora.modules.length).toBeGreaterThan(0);
    expect(lora.metadata.ss_steps).toBe(String((stopped as { step?: number }).step));
    await expect(api.call('export.lora', { lora: out, format: 'kohya', precision: 'fp32', out: join(tmpdir(), 'outside.safetensors') })).rejects.toMatchObject({ code: 'path-outside-roots' });

    const project = await api.call<{ path: string; runs: RunView[] }>('project.get');
    const run = project.runs.find((r) => r.runId === runId)!;
    expect(run.losses.length).toBe(run.step);
    expect(run.previews.length).toBe(previews.filter((p) => p.step <= run.step).length);
    const saved = JSON.parse(readFileSync(project.path, 'utf8')) as { runs: { runId: string; losses: unknown[] }[] };
    expect(saved.runs.find((r) => r.runId === runId)!.losses.length).toBe(run.step);
    api.close();
  }, 180_000);
});
