// Training on the messy example folder (test/fixtures/messy-dataset): the run reports the broken
// files, trains on every valid image, and leaves the folder exactly as it was.
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Dataset } from '../../../src-main/engine/data';
import { readLoraFile } from '../../../src-main/engine/lora/lora-file';
import { resolveTrainSettings } from '../../../src-main/engine/train/settings';
import { Trainer } from '../../../src-main/engine/train/trainer';
import type { TrainEvent } from '../../../src-main/engine/train/events';

const messy = fileURLToPath(new URL('../../fixtures/messy-dataset', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'lora-messy-'));

function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out.push(`${relative(dir, p)}:${st.size}:${st.mtimeMs}`);
    }
  };
  walk(dir);
  return out.sort();
}

describe('training on a messy folder', () => {
  it('reports the broken files, trains on the valid ones and touches nothing', async () => {
    const before = snapshot(messy);
    const dataset = await Dataset.open(messy, { resolution: 64 });
    const trainable = dataset.trainingItems().length;
    expect(trainable).toBeGreaterThan(5);
    expect(dataset.summary().excluded).toBeGreaterThan(0);

    const trainer = new Trainer(resolveTrainSettings({ images: messy, out: join(work, 'messy.safetensors'), modelsDir: join(work, 'models'), cacheDir: join(work, 'cache'), steps: 4 }));
    const events: TrainEvent[] = [];
    trainer.events.onAny((e) => events.push(e));
    const result = await trainer.run();

    expect(result.step).toBe(4);
    expect(result.losses.every(Number.isFinite)).toBe(true);
    const problems = events.filter((e) => e.type === 'problem');
    expect(problems.length).toBeGreaterThan(0);
    expect(JSON.stringify(problems)).toMatch(/empty|truncated|unreadable|zero/i);
    expect(readLoraFile(result.out).metadata.ss_num_train_images).toBe(String(dataset.summary().samplesPerEpoch));
    expect(snapshot(messy)).toEqual(before);
  });
});
