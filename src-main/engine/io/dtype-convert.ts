// Bulk conversions between float32 and the 16-bit float formats stored in checkpoints.
//
//   float16ToFloat32(bits: Uint16Array): Float32Array     exact (every half is a float32)
//   bfloat16ToFloat32(bits: Uint16Array): Float32Array    exact
//   float32ToFloat16(values: Float32Array): Uint16Array   round to nearest even; subnormals, ±inf, NaN kept
//   float32ToBfloat16(values: Float32Array): Uint16Array  round to nearest even; NaN stays NaN (quiet)
//   float16BitsToNumber / numberToFloat16Bits             the same for one value
//
// Typed arrays are little-endian on every platform we ship (x64, arm64), as safetensors is.

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 bit patterns of all 65536 halves, built on first use (256 KiB). */
let halfTable: Uint32Array | undefined;

function halfToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN (payload kept)
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0; // ±0
  // Subnormal half: normalise into a float32 exponent.
  let e = -14;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

function table(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloatBits(h);
  }
  return halfTable;
}

export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const t = table();
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
  return new Float32Array(out.buffer);
}

export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

/** Half bits of one float32 bit pattern, rounded to nearest even. */
function floatBitsToHalf(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00; // NaN stays NaN (quiet bit set)
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand right, rounding to nearest even.
    if (e < -10) return sign; // below half of the smallest subnormal
    const significand = mant | 0x800000;
    const shift = 14 - e; // 14..24
    const halfway = 1 << (shift - 1);
    const rest = significand & ((1 << shift) - 1);
    let m = significand >>> shift;
    if (rest > halfway || (rest === halfway && m & 1)) m++; // may carry into the smallest normal: still correct bits
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // a carry into the exponent is the correct rounding (up to inf)
  return sign | h;
}

export function float32ToFloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = floatBitsToHalf(bits[i]);
  return out;
}

export function float32ToBfloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) out[i] = (x >>> 16) | 0x40; // NaN: keep it a (quiet) NaN
    else out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

export function float16BitsToNumber(bits: number): number {
  scratchU32[0] = halfToFloatBits(bits & 0xffff);
  return scratchF32[0];
}

export function numberToFloat16Bits(value: number): number {
  scratchF32[0] = value;
  return floatBitsToHalf(scratchU32[0]);
}
