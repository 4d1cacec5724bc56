// The engine's one source of randomness (initial latents, training noise and timesteps, ancestral
// sampler noise): xoshiro128** (Blackman & Vigna), seeded through SplitMix64, with Box–Muller for
// Gaussians. The whole state is four 32-bit words plus the spare Gaussian of the last Box–Muller
// pair, so it can be saved in a checkpoint and restored for an exact resume. Numbers depend only
// on the seed and the sequence of calls: the same on every platform and run.
//
//   new Rng(seed)                     seed: integer in [0, 2^53)
//   rng.nextUint32() / uniform() / uniformInt(lo, hi) / normal(n) / fillNormal(out)
//   rng.getState(): RngState / Rng.fromState(state) / rng.setState(state)

/** JSON-safe snapshot of an Rng. */
export interface RngState {
  algorithm: 'xoshiro128**';
  /** The four state words, as unsigned 32-bit integers. */
  words: [number, number, number, number];
  /** Second value of the last Box–Muller pair, not yet handed out. */
  spareNormal: number | null;
}

const MASK64 = (1n << 64n) - 1n;
const TWO_PI = 2 * Math.PI;

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | null = null;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`Rng: seed must be an integer in [0, 2^53), got ${seed}`);
    // SplitMix64 spreads any seed (0 and small seeds included) over the 128 state bits.
    let x = BigInt(seed);
    const next64 = (): bigint => {
      x = (x + 0x9e3779b97f4a7c15n) & MASK64;
      let z = x;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
      return z ^ (z >> 31n);
    };
    const a = next64();
    const b = next64();
    this.s0 = Number(a & 0xffffffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffffffffn);
    this.s3 = Number(b >> 32n);
  }

  static fromState(state: RngState): Rng {
    const rng = new Rng(0);
    rng.setState(state);
    return rng;
  }

  getState(): RngState {
    return { algorithm: 'xoshiro128**', words: [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0], spareNormal: this.spare };
  }

  setState(state: RngState): void {
    const words = state?.words;
    if (state?.algorithm !== 'xoshiro128**' || !Array.isArray(words) || words.length !== 4)
      throw new Error(`Rng: not an xoshiro128** state: ${JSON.stringify(state)}`);
    for (const w of words) if (!Number.isInteger(w) || w < 0 || w > 0xffffffff) throw new Error(`Rng: state word ${w} is not a 32-bit unsigned integer`);
    if (words.every((w) => w === 0)) throw new Error('Rng: the all-zero state is invalid for xoshiro128**');
    if (state.spareNormal !== null && typeof state.spareNormal !== 'number') throw new Error('Rng: spareNormal must be a number or null');
    [this.s0, this.s1, this.s2, this.s3] = words.map((w) => w | 0) as [number, number, number, number];
    this.spare = state.spareNormal;
  }

  /** Next raw 32-bit output, in [0, 2^32). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }

  /** Uniform integer in [lo, hi) (like torch.randint), without modulo bias. */
  uniformInt(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi <= lo) throw new Error(`Rng.uniformInt: need integers lo < hi, got [${lo}, ${hi})`);
    const range = hi - lo;
    if (range > 0x100000000) throw new Error(`Rng.uniformInt: range ${range} exceeds 2^32`);
    if (range === 0x100000000) return lo + this.nextUint32();
    // Reject the top partial block of 2^32 so every residue is equally likely.
    const limit = 0x100000000 - (0x100000000 % range);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return lo + (r % range);
    }
  }

  /** One standard normal value (float64). */
  normalValue(): number {
    if (this.spare !== null) {
      const value = this.spare;
      this.spare = null;
      return value;
    }
    const u1 = 1 - this.uniform(); // (0, 1]: log stays finite
    const u2 = this.uniform();
    const radius = Math.sqrt(-2 * Math.log(u1));
    this.spare = radius * Math.sin(TWO_PI * u2);
    return radius * Math.cos(TWO_PI * u2);
  }

  /** n standard normal values. */
  normal(n: number): Float32Array {
    return this.fillNormal(new Float32Array(n));
  }

  /** Fills `out` with standard normal values and returns it. */
  fillNormal(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.normalValue();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
