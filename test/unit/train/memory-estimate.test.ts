// The peak-memory model against the peaks measured on the H100 (bench/results): it must reproduce
// them, grow with batch and resolution, and cost little to evaluate.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { estimateTrainingMemory } from '../../../src-main/engine/train/memory-estimate';
import { SD15 } from '../../../bench/model-configs';

const GiB = 2 ** 30;
const results = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'bench', 'results', '2026-11-23-h100-cuda-sd15-v3.json'), 'utf8')) as { batch: number; resolution: number; peakGpuMemoryGiB: number }[];

describe('training memory estimate', () => {
  it('predicts the measured SD1.5 peaks within 10%', () => {
    for (const r of results) {
      const latent = r.resolution / 8;
      const e = estimateTrainingMemory(SD15, { batch: r.batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: 768 }, 'float16');
      expect(Math.abs(e.peakBytes / GiB - r.peakGpuMemoryGiB) / r.peakGpuMemoryGiB).toBeLessThan(0.1);
      expect(e.weightsBytes / GiB).toBeCloseTo(1.6, 1); // 860 M float16 parameters
    }
  });

  it('grows with batch and resolution', () => {
    const at = (batch: number, latent: number) => estimateTrainingMemory(SD15, { batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: 768 }, 'float16').peakBytes;
    expect(at(2, 64)).toBeGreaterThan(at(1, 64));
    expect(at(1, 96)).toBeGreaterThan(at(1, 64));
  });
});
