import { describe, expect, it } from 'vitest';
import { classifierFreeGuidance, guideBatchedOutput, rescaleGuidance } from '../../../src-main/engine/sample/guidance';

const uncond = Float32Array.from([0.1, -0.2, 0.3, 0.5]);
const cond = Float32Array.from([0.4, 0.1, -0.3, 0.2]);

describe('classifier-free guidance', () => {
  it('uncond + g (cond - uncond); g = 1 gives cond, g = 0 gives uncond', () => {
    const guided = classifierFreeGuidance(uncond, cond, 7.5);
    guided.forEach((v, i) => expect(v).toBeCloseTo(uncond[i]! + 7.5 * (cond[i]! - uncond[i]!), 6));
    expect(Array.from(classifierFreeGuidance(uncond, cond, 1))).toEqual(Array.from(cond));
    expect(Array.from(classifierFreeGuidance(uncond, cond, 0))).toEqual(Array.from(uncond));
  });

  it('takes the doubled batch in diffusers order (uncond first)', () => {
    const batched = Float32Array.from([...uncond, ...cond]);
    expect(Array.from(guideBatchedOutput(batched, 5))).toEqual(Array.from(classifierFreeGuidance(uncond, cond, 5)));
  });

  it('rescale 1 matches the conditional std per batch item (unbiased std), rescale 0 changes nothing', () => {
    const std = (x: ArrayLike<number>): number => {
      const values = Array.from(x);
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1));
    };
    const guided = classifierFreeGuidance(uncond, cond, 7.5);
    const full = rescaleGuidance(guided, cond, 1, 2); // two batch items of 2 values
    expect(std(full.subarray(0, 2))).toBeCloseTo(std(cond.subarray(0, 2)), 6);
    expect(std(full.subarray(2, 4))).toBeCloseTo(std(cond.subarray(2, 4)), 6);
    expect(Array.from(rescaleGuidance(guided, cond, 0, 2))).toEqual(Array.from(guided));
    // 0.7 mixes: 0.7 * rescaled + 0.3 * guided
    const mixed = rescaleGuidance(guided, cond, 0.7, 2);
    mixed.forEach((v, i) => expect(v).toBeCloseTo(0.7 * full[i]! + 0.3 * guided[i]!, 6));
    expect(() => rescaleGuidance(guided, cond, 1, 3)).toThrow(/do not split into 3/);
  });
});
