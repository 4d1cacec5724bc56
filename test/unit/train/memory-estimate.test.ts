// The peak-memory model against the peaks measured on the H100 (nvidia-smi, onnxruntime's CUDA
// provider with this engine's session defaults; bench/results/2026-11-23-h100-*session{2,3}.json).
// Calibrated on SD1.5 at 512 px (batch 1 and 4, and batch 4 with gradient checkpointing), it must
// predict the measured shapes it was not fitted to (SDXL at 1024 px batch 1, and batch 4 with
// checkpointing; SD1.5 batch 1 with checkpointing, at 768 px and with four steps per run) within 12%.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SD15, SDXL } from '../../../bench/model-configs';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { ensureEmbeddedModel } from '../../../src-main/engine/models/embedded-tiny-model';
import { estimateTrainingMemory } from '../../../src-main/engine/train/memory-estimate';

const GiB = 2 ** 30;
interface Measured {
  run: string;
  model: string;
  batch: number;
  resolution: number;
  gradientCheckpointing?: boolean;
  stepsPerRun?: number;
  memoryPattern?: string;
  initializersOutsideArena?: string;
  attentionChunkMiB?: number;
  peakGpuMemoryGiB: number;
}
const results = (file: string): Measured[] => JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'bench', 'results', file), 'utf8')) as Measured[];
const measured = [
  ...results('2026-11-23-h100-cuda-session2.json').filter(
    (r) => r.memoryPattern === 'default' && r.initializersOutsideArena === 'default' && r.attentionChunkMiB === 256, // the engine's defaults
  ),
  ...results('2026-11-23-h100-cuda-session3.json').filter((r) => r.run === 'lease2-sd15-b1-k4-new'), // four steps per run
  ...results('2026-11-23-h100-same-machine-session3.json').filter((r) => r.run === 'lease3-sdxl-b4-ckpt'), // after the third session's graph changes
];

function estimateGiB(r: Measured): number {
  const sdxl = r.model.startsWith('sdxl');
  const latent = r.resolution / 8;
  const shape = { batch: r.batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: sdxl ? 2048 : 768 };
  return estimateTrainingMemory(sdxl ? SDXL : SD15, shape, 'float16', { gradientCheckpointing: !!r.gradientCheckpointing, stepsPerRun: r.stepsPerRun ?? 1 }).peakBytes / GiB;
}

describe('training memory estimate', () => {
  it('predicts the measured peaks within 12%, including the shapes it was not calibrated on', () => {
    const heldOut = measured.filter((r) => r.model.startsWith('sdxl') || (r.gradientCheckpointing && r.batch === 1) || r.resolution === 768 || (r.stepsPerRun ?? 1) > 1);
    expect(heldOut.map((r) => r.run).sort()).toEqual(['ckpt-b1', 'lease2-sd15-b1-k4-new', 'lease3-sdxl-b4-ckpt', 'sd15-768-b1', 'sdxl-b1', 'sdxl-b4', 'sdxl-ckpt-b4']);
    expect(measured.length).toBeGreaterThanOrEqual(6);
    for (const r of measured) {
      const estimate = estimateGiB(r);
      expect(Math.abs(estimate - r.peakGpuMemoryGiB) / r.peakGpuMemoryGiB, `${r.run}: estimated ${estimate.toFixed(2)} GiB, measured ${r.peakGpuMemoryGiB}`).toBeLessThan(0.12);
    }
  });

  it('on the CPU counts the process, not a GPU context: the embedded model lands near its measured RSS (0.29-0.33 GiB)', () => {
    const model = openModelFolder(ensureEmbeddedModel(mkdtempSync(join(tmpdir(), 'lora-mem-'))));
    const e = estimateTrainingMemory(model.unet.config, { batch: 1, latentHeight: 8, latentWidth: 8, tokens: 77, contextDim: 32 }, 'float32', { target: 'cpu' });
    expect(e.peakBytes / GiB).toBeGreaterThan(0.2);
    expect(e.peakBytes / GiB).toBeLessThan(0.5);
  });

  it('grows with batch and resolution, and shrinks with gradient checkpointing', () => {
    const sd15 = (batch: number, resolution: number, gradientCheckpointing = false): number =>
      estimateTrainingMemory(SD15, { batch, latentHeight: resolution / 8, latentWidth: resolution / 8, tokens: 77, contextDim: 768 }, 'float16', { gradientCheckpointing }).peakBytes;
    expect(sd15(2, 512)).toBeGreaterThan(sd15(1, 512));
    expect(sd15(1, 768)).toBeGreaterThan(sd15(1, 512));
    expect(sd15(4, 512, true)).toBeLessThan(sd15(4, 512));
  });

  it('with several steps per run, estimates the multi-step graph: the same weights, more tensors alive (the stacked batches)', () => {
    const sd15 = (stepsPerRun: number) => estimateTrainingMemory(SD15, { batch: 1, latentHeight: 64, latentWidth: 64, tokens: 77, contextDim: 768 }, 'float16', { stepsPerRun });
    const [one, four] = [sd15(1), sd15(4)];
    expect(four.weightsBytes).toBe(one.weightsBytes);
    expect(four.liveBytes).toBeGreaterThan(one.liveBytes);
    // In onnxruntime's node order each step's activations die before the next step's forward.
    expect(four.liveBytes).toBeLessThan(1.5 * one.liveBytes);
  });
});
