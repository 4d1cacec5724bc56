// What every conformance case family shares: the reference folder as read (cases.safetensors,
// cases.json, the model), the result row of one case, and the comparisons that fill it.
//
//   CaseFamily { name, claims(key), run(ctx) }      one per file in this folder
//   ConformanceContext                              the folder, its cases and notes, the model
//   CaseResult / CaseStatus                         one row of the runner's table
//   compareClose(name, actual, expected, tol)       numpy.allclose-style row
//   compareNormRelative(name, pairs, bound)         ||ours - ref|| / ||ref|| row
//   attempt(name, tolerance, check)                 errors become rows; NotSupportedError -> not supported
//   readCaseFile(file), caseTensor(ctx, key), floatsOf(t), floatFeed(t), int64Feed(t), noteOf(ctx, key)
import { readFileSync } from 'node:fs';
import type { OpenedModel } from '../io/model-folder';
import { decodeSafetensors, type SafetensorsDType } from '../io/safetensors';
import type { HostTensor } from '../runtime/session';
import type { GeneratorOptions } from '../sample/txt2img';

export interface CaseTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

/**
 * pass: within tolerance. FAIL: outside it. error: the check could not run (message in the note).
 * not supported: the engine lacks the feature the case needs (a failure, never a skip).
 * unknown case: a key no family checks (a failure, so a new case is never ignored).
 * reference inconsistent: the reference data contradicts its own reference implementation; not a
 * pass, see runner.ts for when it fails the run.
 */
export type CaseStatus =
  'pass' | 'FAIL' | 'error' | 'not supported' | 'unknown case' | 'reference inconsistent';

export interface CaseResult {
  name: string;
  status: CaseStatus;
  maxAbs?: number;
  maxRel?: number;
  /** How the case is judged, e.g. "rtol 1e-4 atol 1e-5". */
  tolerance: string;
  note?: string;
  /** reference inconsistent only: the result of the independent check that covers this case, if any. */
  coveredBy?: string;
}

export interface ConformanceContext {
  /** The reference folder (holds cases.safetensors, cases.json, model/). */
  folder: string;
  casesFile: string;
  cases: ReadonlyMap<string, CaseTensor>;
  /** cases.json `notes` (settings per case family). */
  notes: Readonly<Record<string, unknown>>;
  /** cases.json `prompts`. */
  prompts: readonly string[];
  /** The model folder, opened once on first use. */
  model(): OpenedModel;
  /** transformers tokenizer reference files (clip-transformers-reference.json layout). */
  tokenizerReferences: readonly string[];
  /** Where the sampling cases run (default: the CPU in float32, the setting the tolerances are for). */
  generator: SamplingDevice;
  log(line: string): void;
}

/** The provider and compute dtype of the sampling cases' Generator (bench/precision.ts measures float16 on a GPU). */
export type SamplingDevice = Pick<GeneratorOptions, 'provider' | 'dtype'>;

export interface CaseFamily {
  name: string;
  /** Whether `key` of cases.safetensors is read or checked by this family. */
  claims(key: string): boolean;
  run(ctx: ConformanceContext): Promise<CaseResult[]>;
}

/** Every tensor of a (small) reference safetensors file in memory: F32, F64, I32, I64. */
export function readCaseFile(file: string): Map<string, CaseTensor> {
  const { tensors } = decodeSafetensors(readFileSync(file), file);
  const out = new Map<string, CaseTensor>();
  for (const [name, t] of tensors) {
    const raw = t.bytes.buffer.slice(t.bytes.byteOffset, t.bytes.byteOffset + t.bytes.byteLength); // aligned copy
    const data =
      t.dtype === 'F32'
        ? new Float32Array(raw)
        : t.dtype === 'F64'
          ? new Float64Array(raw)
          : t.dtype === 'I32'
            ? new Int32Array(raw)
            : t.dtype === 'I64'
              ? new BigInt64Array(raw)
              : undefined;
    if (!data)
      throw new Error(
        `${file}: tensor "${name}" has dtype ${t.dtype}; reference files hold F32, F64, I32 or I64`,
      );
    out.set(name, { dtype: t.dtype, shape: [...t.shape], data });
  }
  return out;
}

export function caseTensor(ctx: ConformanceContext, key: string): CaseTensor {
  const t = ctx.cases.get(key);
  if (!t) throw new Error(`${ctx.casesFile}: case "${key}" is missing`);
  return t;
}

/** The tensor as float32 (float64 rounded; integer tensors converted). */
export function floatsOf(t: CaseTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof BigInt64Array) return Float32Array.from(t.data, Number);
  return Float32Array.from(t.data);
}

export const floatFeed = (t: CaseTensor): HostTensor => ({
  dtype: 'float32',
  shape: t.shape,
  data: floatsOf(t),
});

export function int64Feed(t: CaseTensor, rows?: number): HostTensor {
  const data =
    t.data instanceof BigInt64Array
      ? t.data
      : BigInt64Array.from(Array.from(t.data, (v) => BigInt(Math.round(Number(v)))));
  if (rows === undefined) return { dtype: 'int64', shape: t.shape, data };
  const rowSize = t.shape.slice(1).reduce((a, b) => a * b, 1);
  if (rows > t.shape[0]!) throw new Error(`needs ${rows} rows of a [${t.shape}] tensor`);
  return { dtype: 'int64', shape: [rows, ...t.shape.slice(1)], data: data.slice(0, rows * rowSize) };
}

/** cases.json notes[key] as an object; throws naming the file when absent. */
export function noteOf(ctx: ConformanceContext, key: string): Record<string, unknown> {
  const note = ctx.notes[key];
  if (typeof note !== 'object' || note === null || Array.isArray(note))
    throw new Error(`${ctx.folder}/cases.json: notes["${key}"] is missing or not an object`);
  return note as Record<string, unknown>;
}

export interface Tolerance {
  rtol: number;
  atol: number;
}

/** The README's bound for float32 on CPU: about 1e-4 relative, 1e-5 absolute on small values. */
export const FLOAT32_TOLERANCE: Tolerance = { rtol: 1e-4, atol: 1e-5 };

export const formatTolerance = (t: Tolerance): string =>
  `rtol ${t.rtol.toExponential(0)} atol ${t.atol.toExponential(0)}`;

/**
 * |a - e| <= atol + rtol |e| for every element (NaN fails). maxRel is max |a - e| / |e| over the
 * elements with |e| > atol (below that the absolute bound is what matters).
 */
export function compareClose(
  name: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance = FLOAT32_TOLERANCE,
  note?: string,
): CaseResult {
  const tolerance = formatTolerance(tol);
  if (actual.length !== expected.length)
    return {
      name,
      status: 'FAIL',
      tolerance,
      note: `${actual.length} values, the reference has ${expected.length}`,
    };
  let maxAbs = 0;
  let maxRel = 0;
  let outside = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const d = Math.abs(a - e);
    if (!(d <= tol.atol + tol.rtol * Math.abs(e))) outside++;
    if (!(d <= maxAbs)) maxAbs = d; // keeps NaN
    if (Math.abs(e) > tol.atol && !(d / Math.abs(e) <= maxRel)) maxRel = d / Math.abs(e);
  }
  const counted = outside > 0 ? `${outside}/${expected.length} values outside tolerance` : undefined;
  return {
    name,
    status: outside === 0 ? 'pass' : 'FAIL',
    maxAbs,
    maxRel,
    tolerance,
    note: [counted, note].filter(Boolean).join('; ') || undefined,
  };
}

/** ||actual - expected|| and ||expected|| (Euclidean) over one or more tensor pairs. */
export function normDifference(pairs: Iterable<readonly [ArrayLike<number>, ArrayLike<number>]>): {
  diff: number;
  ref: number;
  maxAbs: number;
} {
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  for (const [a, e] of pairs) {
    if (a.length !== e.length) throw new Error(`${a.length} values against ${e.length} in the reference`);
    for (let i = 0; i < e.length; i++) {
      const d = a[i]! - e[i]!;
      num += d * d;
      den += e[i]! * e[i]!;
      if (!(Math.abs(d) <= maxAbs)) maxAbs = Math.abs(d);
    }
  }
  return { diff: Math.sqrt(num), ref: Math.sqrt(den), maxAbs };
}

/** One row judged by ||ours - ref|| / ||ref|| < bound (the "max rel" column holds that ratio). */
export function compareNormRelative(
  name: string,
  pairs: Iterable<readonly [ArrayLike<number>, ArrayLike<number>]>,
  bound: number,
  note?: string,
): CaseResult {
  const { diff, ref, maxAbs } = normDifference(pairs);
  const rel = ref === 0 ? diff : diff / ref;
  return {
    name,
    status: rel < bound ? 'pass' : 'FAIL',
    maxAbs,
    maxRel: rel,
    tolerance: `|d|/|ref| < ${bound.toExponential(0)}`,
    note,
  };
}

/** Thrown when a case needs a feature the engine does not have: reported as "not supported" (a failure). */
export class NotSupportedError extends Error {
  override name = 'NotSupportedError';
}

/**
 * Runs one check; an exception becomes an `error` row (or `not supported` for NotSupportedError)
 * naming the case, so the other cases still run.
 */
export async function attempt(
  name: string,
  tolerance: string,
  check: () => Promise<CaseResult[]> | CaseResult[],
): Promise<CaseResult[]> {
  try {
    return await check();
  } catch (error) {
    const status: CaseStatus = error instanceof NotSupportedError ? 'not supported' : 'error';
    return [{ name, status, tolerance, note: error instanceof Error ? error.message : String(error) }];
  }
}
