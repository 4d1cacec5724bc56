import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src-main/engine/sample/rng';

describe('Rng', () => {
  it('is xoshiro128**: the reference generator from state (1, 2, 3, 4)', () => {
    // First output by hand: rotl(2 * 5, 7) * 9 = 1280 * 9; the following ones from the reference C code's update.
    const rng = Rng.fromState({ algorithm: 'xoshiro128**', words: [1, 2, 3, 4], spareNormal: null });
    expect(rng.nextUint32()).toBe(11520);
    // The update gives s = [1^6, 2^2, (3^1)^(2<<9), rotl(4^2, 11)] = [7, 0, 1026, 12288]: s1 = 0, so the next output is 0,
    // and the one after is rotl(s1' * 5, 7) * 9 with s1' = 0 ^ (1026 ^ 7) = 1029.
    expect(rng.nextUint32()).toBe(0);
    expect(rng.nextUint32()).toBe((Math.imul((((1029 * 5) << 7) | ((1029 * 5) >>> 25)) >>> 0, 9) >>> 0));
  });

  it('is reproducible from a seed, differs across seeds', () => {
    expect(new Rng(42).normal(16)).toEqual(new Rng(42).normal(16));
    expect(new Rng(42).normal(16)).not.toEqual(new Rng(43).normal(16));
    expect(new Rng(0).nextUint32()).not.toBe(new Rng(1).nextUint32());
  });

  it('restores a saved state exactly, including a pending Box-Muller value', () => {
    const rng = new Rng(7);
    rng.normal(3); // odd count leaves a spare
    const state = JSON.parse(JSON.stringify(rng.getState()));
    const next = rng.normal(5);
    const resumed = Rng.fromState(state);
    expect(resumed.normal(5)).toEqual(next);
    expect(resumed.uniformInt(0, 1000)).toBe(rng.uniformInt(0, 1000));
  });

  it('splits calls without changing the stream: normal(1) twice = normal(2)', () => {
    const a = new Rng(5);
    const b = new Rng(5);
    expect([...a.normal(1), ...a.normal(1)]).toEqual([...b.normal(2)]);
  });

  it('normal(n) has mean ~0 and variance ~1', () => {
    const values = new Rng(123).normal(200_000);
    let mean = 0;
    for (const v of values) mean += v;
    mean /= values.length;
    let variance = 0;
    for (const v of values) variance += (v - mean) ** 2;
    variance /= values.length;
    expect(Math.abs(mean)).toBeLessThan(0.01); // 4.5 standard errors
    expect(Math.abs(variance - 1)).toBeLessThan(0.015);
  });

  it('uniformInt covers [lo, hi) evenly; uniform is in [0, 1)', () => {
    const rng = new Rng(9);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[rng.uniformInt(0, 10)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
    for (let i = 0; i < 10_000; i++) {
      const u = rng.uniform();
      expect(u >= 0 && u < 1).toBe(true);
    }
    expect(() => rng.uniformInt(5, 5)).toThrow(/lo < hi/);
  });

  it('refuses bad seeds and states', () => {
    expect(() => new Rng(-1)).toThrow(/seed/);
    expect(() => new Rng(1.5)).toThrow(/seed/);
    expect(() => Rng.fromState({ algorithm: 'xoshiro128**', words: [0, 0, 0, 0], spareNormal: null })).toThrow(/all-zero/);
  });
});
