import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveTrainSettings } from './src-main/engine/train/settings';
import { Trainer } from './src-main/engine/train/trainer';
const work = mkdtempSync(join(tmpdir(), 'sweep-'));
for (const [lr, steps, alpha, targets, batch] of [[3e-3, 300, 4, 'attention', 1], [1e-2, 300, 4, 'attention', 1], [3e-3, 150, 4, 'attention', 4], [1e-2, 150, 8, 'attention', 4]] as const) {
  const s = resolveTrainSettings({ images: 'resources/sample-dataset', out: join(work, `a${lr}${steps}${alpha}${batch}.safetensors`), model: 'test/fixtures/golden/tiny-sdxl/model', cacheDir: join(work, 'cache'), steps, lr, alpha, targets, batch, precision: 'fp32', seed: 5 });
  const t0 = Date.now();
  const r = await new Trainer(s).run();
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  console.log(lr, steps, alpha, targets, batch, 'first50', mean(r.losses.slice(0, 50)).toFixed(3), 'last50', mean(r.losses.slice(-50)).toFixed(3), `${Date.now() - t0}ms`);
}
