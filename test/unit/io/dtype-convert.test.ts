import { describe, expect, it } from 'vitest';
import {
  bfloat16ToFloat32,
  float16BitsToNumber,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  numberToFloat16Bits,
} from '../../../src-main/engine/io/dtype-convert';

/** Value of a half from its fields, computed with plain arithmetic (independent of the bit tricks). */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

describe('float16 <-> float32', () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);

  it('widens every half exactly (subnormals, zeros, inf, NaN)', () => {
    const wide = float16ToFloat32(all);
    for (let h = 0; h < 65536; h++) {
      const expected = halfValue(h);
      if (Number.isNaN(expected)) expect(Number.isNaN(wide[h])).toBe(true);
      else expect(Object.is(wide[h], expected) || (expected === 0 && wide[h] === 0 && Object.is(1 / wide[h], 1 / expected))).toBe(true);
    }
  });

  it('narrows every half back to itself (NaNs stay NaN)', () => {
    const back = float32ToFloat16(float16ToFloat32(all));
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(halfValue(h))) expect(Number.isNaN(halfValue(back[h]))).toBe(true);
      else expect(back[h]).toBe(h);
    }
  });

  it('rounds to nearest, ties to even, against a brute-force nearest search', () => {
    // Every value between two neighbouring halves: midpoints (ties) and points either side.
    const values: number[] = [];
    for (let h = 0; h < 0x7bff; h += 37) {
      const a = halfValue(h);
      const b = halfValue(h + 1);
      const mid = (a + b) / 2;
      values.push(mid, Math.fround(mid + (b - a) * 0.01), Math.fround(mid - (b - a) * 0.01), -mid);
    }
    values.push(65504, 65519.99, 65520, 1e6, -1e6, 2 ** -25, 2 ** -25 * 1.0001, 2 ** -26, 3 * 2 ** -25, 2 ** -14 - 2 ** -25);
    const input = Float32Array.from(values);
    const out = float32ToFloat16(input);
    input.forEach((v, i) => {
      const abs = Math.abs(v);
      let expected: number;
      if (abs >= 65520) expected = 0x7c00; // rounds past the largest half
      else {
        // nearest of all finite positive halves, ties to the even bit pattern
        let lo = 0;
        let hi = 0x7bff;
        while (hi - lo > 1) {
          const m = (lo + hi) >> 1;
          if (halfValue(m) <= abs) lo = m;
          else hi = m;
        }
        const dl = abs - halfValue(lo);
        const dh = halfValue(hi) - abs;
        expected = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
      }
      if (v < 0 || Object.is(v, -0)) expected |= 0x8000;
      expect(out[i], `value ${v}`).toBe(expected);
    });
  });

  it('handles infinities, NaN and signed zero', () => {
    const out = float32ToFloat16(Float32Array.from([Infinity, -Infinity, NaN, -0, 0]));
    expect([...out.slice(0, 2)]).toEqual([0x7c00, 0xfc00]);
    expect(Number.isNaN(halfValue(out[2]))).toBe(true);
    expect([out[3], out[4]]).toEqual([0x8000, 0]);
    expect(numberToFloat16Bits(1)).toBe(0x3c00);
    expect(float16BitsToNumber(0x3555)).toBe(halfValue(0x3555));
  });
});

describe('bfloat16 <-> float32', () => {
  it('widens exactly and narrows with round-to-nearest-even', () => {
    const bits = Uint16Array.from([0x3f80, 0xbf80, 0x7f80, 0x0001, 0x4049]);
    expect([...bfloat16ToFloat32(bits)]).toEqual([1, -1, Infinity, 2 ** -133, 3.140625]);
    const f = new Float32Array(4);
    const u = new Uint32Array(f.buffer);
    u[0] = 0x3f808000; // exactly halfway, even below -> down
    u[1] = 0x3f818000; // halfway, odd below -> up
    u[2] = 0x3f808001; // above halfway -> up
    u[3] = 0x7fc00001; // NaN
    const out = float32ToBfloat16(f);
    expect([out[0], out[1], out[2]]).toEqual([0x3f80, 0x3f82, 0x3f81]);
    expect(Number.isNaN(bfloat16ToFloat32(out.subarray(3))[0])).toBe(true);
  });
});
