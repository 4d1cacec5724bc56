// Gradient checkpointing as a training setting (settings.gradientCheckpointing, --gradient-checkpointing)
// on the embedded tiny model, float32 on the CPU: the Trainer gives the same per-step losses with it
// as without (UNet step, text encoder step, gradient accumulation), writes the LoRA and records the
// setting in its metadata; a checkpoint written without it resumes with it on, on the same
// trajectory and without a "changed settings" note; the CLI flag reaches the run.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readLoraFile } from '../../../src-main/engine/lora/lora-file';
import type { TrainEvent } from '../../../src-main/engine/train/events';
import { resolveTrainSettings, type TrainSettingsInput } from '../../../src-main/engine/train/settings';
import { Trainer } from '../../../src-main/engine/train/trainer';
import { cliIn } from '../../helpers/cli';
import { relativeUpDifference } from '../../helpers/lora';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const sampleDataset = join(repoRoot, 'resources', 'sample-dataset');
const work = mkdtempSync(join(tmpdir(), 'lora-grad-ckpt-'));
const modelsDir = join(work, 'models');
/**
 * The embedded UNet's checkpointed blocks: ResNets 4x2 down + 2 mid + 4x3 up = 22, transformer
 * blocks 3x2 down + 1 mid + 3x3 up = 16 (src-main/engine/models/embedded-tiny-model.ts).
 */
const EMBEDDED_UNET_BLOCKS = 38;

async function train(name: string, overrides: Partial<TrainSettingsInput> = {}, stopAt?: number) {
  const settings = resolveTrainSettings({ images: sampleDataset, out: join(work, `${name}.safetensors`), modelsDir, cacheDir: join(work, 'cache'), steps: 4, precision: 'fp32', ...overrides });
  const trainer = new Trainer(settings);
  const events: TrainEvent[] = [];
  trainer.events.onAny((e) => events.push(e));
  if (stopAt !== undefined) trainer.events.on('step', (e) => e.step === stopAt && trainer.stop());
  return { settings, events, result: await trainer.run() };
}

/** Every loss of `checkpointed` within 1e-5 relative of the same step of `plain`. */
function expectSameLosses(checkpointed: number[], plain: number[]): void {
  expect(checkpointed).toHaveLength(plain.length);
  checkpointed.forEach((loss, i) => expect(Math.abs(loss - plain[i]), `step ${i + 1}: ${loss} vs ${plain[i]}`).toBeLessThanOrEqual(1e-5 * Math.abs(plain[i])));
}

const phaseMessages = (events: TrainEvent[]): string[] => events.flatMap((e) => (e.type === 'phase' ? [e.message] : []));
/** What the trainer counted in the graphs it built: the recomputed UNet blocks, or undefined (no message). */
function recomputedBlocks(events: TrainEvent[]): number | undefined {
  const counts = phaseMessages(events).flatMap((m) => /^gradient checkpointing: (\d+) UNet blocks recomputed/.exec(m)?.[1] ?? []);
  return counts.length === 1 ? Number(counts[0]) : undefined;
}

describe('gradient checkpointing in training runs', () => {
  it('gives the same losses and the same LoRA, records the setting in the file, and resumes a checkpoint written without it', async () => {
    const plain = await train('plain');
    const checkpointed = await train('checkpointed', { gradientCheckpointing: true });
    expect(plain.result.losses).toHaveLength(4);
    expectSameLosses(checkpointed.result.losses, plain.result.losses);
    // the graphs were built with it: the embedded UNet's ResNet and transformer blocks are recomputed
    expect(recomputedBlocks(checkpointed.events)).toBe(EMBEDDED_UNET_BLOCKS);
    expect(recomputedBlocks(plain.events)).toBeUndefined();

    const a = readLoraFile(plain.result.out);
    const b = readLoraFile(checkpointed.result.out);
    expect(a.metadata.ss_gradient_checkpointing).toBe('false');
    expect(b.metadata.ss_gradient_checkpointing).toBe('true');
    expect(b.modules.map((m) => m.key)).toEqual(a.modules.map((m) => m.key));
    // Same gradients up to float32 rounding; AdamW's first steps magnify tiny differences in small entries.
    expect(relativeUpDifference(a.modules, b.modules)).toBeLessThan(1e-3);

    // a run stopped without it continues with it on, on the uninterrupted trajectory
    const stopped = await train('stopped', {}, 2);
    expect(stopped.result).toMatchObject({ stopped: true, step: 2 });
    const resumed = await train('resumed', { resume: stopped.result.checkpoint, gradientCheckpointing: true });
    expect(resumed.result.step).toBe(4);
    expect(recomputedBlocks(resumed.events)).toBe(EMBEDDED_UNET_BLOCKS);
    expectSameLosses(resumed.result.losses, plain.result.losses.slice(2));
    // the setting does not change the trajectory, so the resume is not reported as a changed run
    expect(phaseMessages(resumed.events).some((m) => m.includes('resuming with changed settings'))).toBe(false);
    expect(readLoraFile(resumed.result.out).metadata.ss_gradient_checkpointing).toBe('true');
  }, 120_000);

  it('reaches the text encoder step graph and the accumulation graphs', async () => {
    const te = await train('te', { trainTextEncoder: true, steps: 2 });
    const teCheckpointed = await train('te-checkpointed', { trainTextEncoder: true, steps: 2, gradientCheckpointing: true });
    expectSameLosses(teCheckpointed.result.losses, te.result.losses);
    expect(recomputedBlocks(teCheckpointed.events)).toBe(EMBEDDED_UNET_BLOCKS);
    expect(readLoraFile(teCheckpointed.result.out).modules.some((m) => m.key.startsWith('lora_te_'))).toBe(true);

    const accumulated = await train('accum', { gradAccum: 2, steps: 2 });
    const accumulatedCheckpointed = await train('accum-checkpointed', { gradAccum: 2, steps: 2, gradientCheckpointing: true });
    expectSameLosses(accumulatedCheckpointed.result.losses, accumulated.result.losses);
    expect(recomputedBlocks(accumulatedCheckpointed.events)).toBe(EMBEDDED_UNET_BLOCKS);
  }, 120_000);
});

describe('lora-studio train --gradient-checkpointing', () => {
  const cli = cliIn(join(work, 'home'));

  it('is listed in the help and reaches the run', () => {
    const help = cli('help', 'train');
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/--gradient-checkpointing\s+less GPU memory, ~10% slower/);

    const out = join(work, 'cli.safetensors');
    const run = cli('train', '--images', sampleDataset, '--out', out, '--steps', '2', '--gradient-checkpointing');
    expect(run.code, run.err).toBe(0);
    expect(run.out).toContain(`gradient checkpointing: ${EMBEDDED_UNET_BLOCKS} UNet blocks recomputed`);
    expect(readLoraFile(out).metadata.ss_gradient_checkpointing).toBe('true');

    const bad = cli('train', '--images', sampleDataset, '--out', out, '--gradient-checkpointing=yes');
    expect(bad.code).toBe(2);
  }, 120_000);
});
