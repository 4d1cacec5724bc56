// Reads the reference data in test/fixtures/golden (copied from the shared golden folders).
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeSafetensors } from '../../src-main/engine/io/safetensors';
import type { HostTensor } from '../../src-main/engine/runtime/session';

export const fixturesDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const goldenDir = (name: 'tiny-sd15' | 'tiny-sdxl'): string => join(fixturesDir, 'golden', name);

export interface GoldenTensor {
  dtype: string;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

/** Whole-file safetensors read for tests (F32, F64, I32, I64), validated by the engine's reader. */
export function readGoldenTensors(file: string): Map<string, GoldenTensor> {
  const { tensors } = decodeSafetensors(readFileSync(file), file);
  const out = new Map<string, GoldenTensor>();
  for (const [name, t] of tensors) {
    const raw = t.bytes.buffer; // a fresh, aligned copy per tensor
    const data =
      t.dtype === 'F32' ? new Float32Array(raw)
      : t.dtype === 'F64' ? new Float64Array(raw)
      : t.dtype === 'I32' ? new Int32Array(raw)
      : t.dtype === 'I64' ? new BigInt64Array(raw)
      : undefined;
    if (!data) throw new Error(`${file}: tensor ${name} has dtype ${t.dtype}, not supported by the test reader`);
    out.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return out;
}

/** A golden tensor as a session feed (I64 -> int64, everything else float32). */
export const goldenFeed = (t: GoldenTensor): HostTensor => ({ dtype: t.dtype === 'I64' ? 'int64' : 'float32', shape: t.shape, data: t.data as Float32Array });

/** Largest |actual - expected| / (|expected| + 0.1): relative error, absolute for values under 0.1. */
export function maxRelError(actual: Float32Array, expected: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + 0.1));
  return worst;
}

/** ||a - e|| / ||e|| (or ||a - e|| when e is all zeros). */
export function relDiff(a: Float32Array, e: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += (a[i] - e[i]) ** 2;
    den += e[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
