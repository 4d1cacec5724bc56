// The peak-memory model against the peaks measured on the H100 (nvidia-smi, onnxruntime's CUDA
// provider with this engine's session defaults; bench/results/2026-11-23-h100-session5.json, lease
// G, the runs of this engine's current graphs). Calibrated on SD1.5 at 512 px (batch 1, batch 1
// with gradient checkpointing, batch 4 in one-head attention groups, batch 4 with two steps per
// run), it must predict the measured shapes it was not fitted to (SDXL at 1024 px batch 1 and 4,
// SDXL batch 4 with two steps per run, SD1.5 batch 4 in 256 MiB attention groups, four steps per
// run) within 14%.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SD15, SDXL } from '../../../bench/model-configs';
import { attentionBackward } from '../../../src-main/engine/autodiff/rules';
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
  attentionChunkMiB: number;
  peakGpuMemoryGiB: number;
}
interface Lease {
  lease: string;
  runs: Record<string, Measured | Measured[]>;
}
const session5 = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'bench', 'results', '2026-11-23-h100-session5.json'), 'utf8')) as { leases: Lease[] };
const runsOf = (leasePrefix: string, names: string[]): Measured[] => {
  const leases = session5.leases.filter((l) => l.lease.startsWith(leasePrefix));
  return names.map((name) => ({ ...([leases.find((l) => l.runs[name])!.runs[name]].flat()[0] as Measured), run: `${leasePrefix} ${name}` }));
};
const measured = runsOf('lease G', ['sd15-b1-k1', 'sd15-b4-k1', 'sd15-b1-ckpt', 'sd15-b4-c64-k1', 'sdxl-b1-k1', 'sdxl-b4-k1', 'sd15-b4-c64-k4', 'sd15-b4-c64-k2', 'sdxl-b4-k2']);

function estimateGiB(r: Measured): number {
  const sdxl = r.model.startsWith('sdxl');
  const latent = r.resolution / 8;
  const shape = { batch: r.batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: sdxl ? 2048 : 768 };
  const saved = attentionBackward.chunkBytes;
  attentionBackward.chunkBytes = r.attentionChunkMiB * 2 ** 20; // as the bench ran it
  try {
    return estimateTrainingMemory(sdxl ? SDXL : SD15, shape, 'float16', { gradientCheckpointing: !!r.gradientCheckpointing, stepsPerRun: r.stepsPerRun ?? 1 }).peakBytes / GiB;
  } finally {
    attentionBackward.chunkBytes = saved;
  }
}

describe('training memory estimate', () => {
  it('predicts the measured peaks within 14%, including the shapes it was not calibrated on', () => {
    expect(measured.map((r) => `${r.model.split(' ')[0]} b${r.batch} k${r.stepsPerRun ?? 1} ${r.attentionChunkMiB} MiB${r.gradientCheckpointing ? ' ckpt' : ''}: ${r.peakGpuMemoryGiB}`)).toEqual([
      'sd15 b1 k1 256 MiB: 4.43',
      'sd15 b4 k1 256 MiB: 6.42',
      'sd15 b1 k1 64 MiB ckpt: 3.43',
      'sd15 b4 k1 64 MiB: 6.42',
      'sdxl b1 k1 256 MiB: 11.16',
      'sdxl b4 k1 256 MiB: 21.17',
      'sd15 b4 k4 64 MiB: 7.43',
      'sd15 b4 k2 64 MiB: 7.43',
      'sdxl b4 k2 256 MiB: 27.18',
    ]);
    for (const r of measured) {
      const estimate = estimateGiB(r);
      expect(Math.abs(estimate - r.peakGpuMemoryGiB) / r.peakGpuMemoryGiB, `${r.run}: estimated ${estimate.toFixed(2)} GiB, measured ${r.peakGpuMemoryGiB}`).toBeLessThan(0.14);
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
