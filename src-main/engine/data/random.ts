// A small seeded random source (mulberry32) so caption shuffles and random crops are reproducible
// from a seed; not for anything that needs statistical quality beyond that.
//
//   createRandom(seed): Random        () => number in [0, 1)
//   randomInt(random, n): number      0 <= k < n

export type Random = () => number;

export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomInt(random: Random, n: number): number {
  return Math.min(n - 1, Math.floor(random() * n));
}
