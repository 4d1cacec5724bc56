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

/** The input nudged by one part in a million (a fixed pattern), to measure float32 sensitivity. */
export const nudged = (t: HostTensor): HostTensor => ({ ...t, data: Float32Array.from(t.data as Float32Array, (v, i) => v * (1 + 1e-6 * Math.sin(i * 12.9898))) });

/**
 * LoRA gradients against the reference, per tensor: ||ours - reference|| / ||reference|| must stay
 * below max(1e-3, 4 x the tensor's sensitivity), the sensitivity being how far it moves when the
 * input is nudged (`nudged`). Tensors whose reference gradient is exactly zero are skipped.
 * Returns how many were compared, how many kept the plain 1e-3 bound, and the worst error / bound.
 */
export function compareLoraGradients(
  names: readonly string[],
  ours: (name: string) => Float32Array,
  oursNudged: (name: string) => Float32Array,
  reference: (name: string) => Float32Array,
): { compared: number; wellConditioned: number; worst: number; worstName: string } {
  let worst = 0;
  let worstName = '';
  let wellConditioned = 0;
  let compared = 0;
  for (const name of names) {
    const expected = reference(name);
    if (Math.sqrt(expected.reduce((s, v) => s + v * v, 0)) < 1e-7) continue; // exactly-zero true gradient
    compared++;
    const sensitivity = relDiff(oursNudged(name), ours(name));
    const bound = Math.max(1e-3, 4 * sensitivity);
    if (bound === 1e-3) wellConditioned++;
    const ratio = relDiff(ours(name), expected) / bound;
    if (process.env.GOLDEN_VERBOSE) console.log(name, relDiff(ours(name), expected).toExponential(2), sensitivity.toExponential(2));
    if (ratio > worst) [worst, worstName] = [ratio, name];
  }
  return { compared, wellConditioned, worst, worstName };
}
