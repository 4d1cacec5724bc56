// Finite-difference checks of the autodiff graph. For f(x_1..x_n) -> y the harness builds
// loss = sum(y * R) with a fixed random R, asks gradients() for d loss / d x_i, runs that graph in
// onnxruntime (CPU), and compares a random subset of coordinates with central differences
// (f(x + h e_j) - f(x - h e_j)) / (x_j+ - x_j-), where f re-runs a forward session and the sum with R
// is taken in float64 in JS. Perturbed values are rounded to the input dtype first and the
// difference quotient uses the rounded step, so float32 checks lose nothing to the step itself.
import type { DType } from '../../../src-main/engine/graph/dtype';
import { float16BitsToFloat32, float32ToFloat16Bits, Graph, type Value } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { numel } from '../../../src-main/engine/graph/shape';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { gradients } from '../../../src-main/engine/autodiff/gradients';
import { createRandom } from '../../../src-main/engine/data/random';

export interface FdInput {
  name: string;
  shape: number[];
  /** Defaults to the case's dtype. Integer and bool inputs are never differentiated. */
  dtype?: DType;
  /** Fixed values, or a generator (default: uniform in [-1, 1]). */
  values?: readonly number[] | ((rng: () => number, index: number) => number);
  /** Differentiate with respect to this input (default: true for float inputs). */
  wrt?: boolean;
}

export interface FdCase {
  dtype: 'float64' | 'float32' | 'float16';
  inputs: FdInput[];
  /** The function whose gradient graph is checked. */
  build: (...xs: Value[]) => Value;
  /**
   * The forward that the finite differences evaluate (default: build). Used where onnxruntime's
   * CPU provider lacks a float64 kernel for a forward op: an equivalent float64 formulation, which
   * also replaces that op's output where the gradient graph reads it (the op is then pruned).
   */
  reference?: (...xs: Value[]) => Value;
  /** Central-difference step (default 1e-5 for float64, 1e-2 for float32). */
  step?: number;
  /** |analytic - numeric| <= rtol * |numeric| + atol * max|analytic| over all inputs. */
  rtol?: number;
  atol?: number;
  /** Coordinates checked per input (default 20; all when the input is smaller). */
  coords?: number;
  seed?: number;
}

export interface FdResult {
  /** One line per coordinate out of tolerance; empty when the check passes. */
  mismatches: string[];
  checked: number;
  /** The largest |analytic - numeric| / (|numeric| + max|analytic| * 1e-3) seen, for tuning. */
  worst: number;
}

/** The value a number takes when stored in `dtype`. */
export function roundTo(dtype: DType, v: number): number {
  switch (dtype) {
    case 'float32':
      return Math.fround(v);
    case 'float16':
      return float16BitsToFloat32(float32ToFloat16Bits(v));
    case 'float64':
      return v;
    default:
      return Math.round(v);
  }
}

export function hostTensor(dtype: DType, shape: readonly number[], values: readonly number[]): HostTensor {
  switch (dtype) {
    case 'float64':
      return { dtype, shape, data: Float64Array.from(values) };
    case 'float32':
      return { dtype, shape, data: Float32Array.from(values) };
    case 'float16':
      return { dtype, shape, data: Uint16Array.from(values, float32ToFloat16Bits) };
    case 'int64':
      return { dtype, shape, data: BigInt64Array.from(values, (v) => BigInt(v)) };
    case 'int32':
      return { dtype, shape, data: Int32Array.from(values) };
    case 'bool':
      return { dtype, shape, data: Uint8Array.from(values) };
    default:
      throw new Error(`fd-harness.ts: no host tensor for ${dtype}`);
  }
}

export function numbers(t: HostTensor): number[] {
  if (t.dtype === 'float16') return Array.from(t.data as Uint16Array, float16BitsToFloat32);
  if (t.data instanceof BigInt64Array) return Array.from(t.data, Number);
  return Array.from(t.data as ArrayLike<number>);
}

const isFloatType = (t: DType): boolean => t === 'float64' || t === 'float32' || t === 'float16';

/** Runs the finite-difference check of one case; see FdCase. */
export async function checkGradients(c: FdCase): Promise<FdResult> {
  const rng = createRandom(c.seed ?? 1234); // seeded: every run checks the same numbers
  const specs = c.inputs.map((inp) => {
    const dtype = inp.dtype ?? c.dtype;
    const n = numel(inp.shape);
    const gen = inp.values;
    const raw = Array.isArray(gen) ? [...gen] : Array.from({ length: n }, (_, i) => (typeof gen === 'function' ? gen(rng, i) : 2 * rng() - 1));
    if (raw.length !== n) throw new Error(`fd-harness.ts: input ${inp.name} needs ${n} values, got ${raw.length}`);
    return { ...inp, dtype, values: raw.map((v) => roundTo(dtype, v)), wrt: inp.wrt ?? isFloatType(dtype) };
  });

  // The gradient graph: loss = sum(build(x) * R), outputs d loss / d x_i.
  const gradGraph = new Graph('fd_gradients');
  const xs = specs.map((s) => gradGraph.input(s.name, s.dtype, s.shape));
  // Built first (node order stays topological): stands in for the forward op's output below.
  const yReference = c.reference?.(...xs);
  const y = c.build(...xs);
  const rValues = Array.from({ length: numel(y.shape) }, () => roundTo(y.dtype, 2 * rng() - 1));
  const loss = op.sumAll(op.mul(y, gradGraph.constant(rValues, y.dtype, y.shape))); // []
  const wrtIndex = specs.map((s, i) => (s.wrt ? i : -1)).filter((i) => i >= 0);
  const grads = gradients(loss, wrtIndex.map((i) => xs[i]));
  // A rule may read the forward op's output (attention reads O); where that op has no float64
  // kernel, its consumers read the reference's output instead, and the op itself is pruned.
  if (yReference) for (const n of gradGraph.nodes) (n.inputs as (Value | null)[]).forEach((v, i, inputs) => v === y && (inputs[i] = yReference));
  grads.forEach((g, k) => gradGraph.output(g, `grad_${specs[wrtIndex[k]].name}`));

  // The forward graph the differences evaluate.
  const fwdGraph = new Graph('fd_forward');
  const fxs = specs.map((s) => fwdGraph.input(s.name, s.dtype, s.shape));
  const fy = (c.reference ?? c.build)(...fxs);
  if (fy.shape.join() !== y.shape.join()) throw new Error(`fd-harness.ts: reference shape [${fy.shape}] differs from build shape [${y.shape}]`);
  fwdGraph.output(fy, 'y');

  const feeds = (override?: { index: number; at: number; value: number }): Record<string, HostTensor> => {
    const out: Record<string, HostTensor> = {};
    specs.forEach((s, i) => {
      let values = s.values;
      if (override && override.index === i) {
        values = [...values];
        values[override.at] = override.value;
      }
      out[s.name] = hostTensor(s.dtype, s.shape, values);
    });
    return out;
  };

  // onnxruntime's extended fusions (e.g. QuickGelu) make float-only kernels out of float64 subgraphs:
  // float64 cases run with basic optimisations, the others with the default (all) as in training.
  const options = { optimization: c.dtype === 'float64' ? ('basic' as const) : ('all' as const) };
  const gradSession = await Session.create(serializeModel(gradGraph), options);
  const analytic = await gradSession.run(feeds());
  await gradSession.release();
  const fwdSession = await Session.create(serializeModel(fwdGraph), options);
  const f = async (override: { index: number; at: number; value: number }): Promise<number> => {
    const yv = numbers((await fwdSession.run(feeds(override))).y);
    let sum = 0;
    for (let i = 0; i < yv.length; i++) sum += yv[i] * rValues[i];
    return sum;
  };

  const h = c.step ?? (c.dtype === 'float64' ? 1e-5 : 1e-2);
  const rtol = c.rtol ?? (c.dtype === 'float64' ? 1e-6 : 1e-3);
  const atol = c.atol ?? (c.dtype === 'float64' ? 1e-7 : 1e-4);
  const mismatches: string[] = [];
  let checked = 0;
  let worst = 0;
  // The absolute tolerance scales with the largest gradient over all inputs: a gradient that is
  // zero in exact arithmetic (e.g. d/d key-bias of attention) is then judged against rounding noise.
  const analyticOf = wrtIndex.map((index) => numbers(analytic[`grad_${specs[index].name}`]));
  const gMax = Math.max(...analyticOf.flatMap((g) => g.map(Math.abs)), 1e-30);
  for (const [k, index] of wrtIndex.entries()) {
    const s = specs[index];
    const g = analyticOf[k];
    const n = s.values.length;
    const coords = c.coords ?? 20;
    const picks = n <= coords ? Array.from({ length: n }, (_, i) => i) : pickDistinct(rng, n, coords);
    for (const at of picks) {
      const x = s.values[at];
      const plus = roundTo(s.dtype, x + h);
      const minus = roundTo(s.dtype, x - h);
      const numeric = ((await f({ index, at, value: plus })) - (await f({ index, at, value: minus }))) / (plus - minus);
      const err = Math.abs(g[at] - numeric);
      worst = Math.max(worst, err / (Math.abs(numeric) + gMax * 1e-3));
      checked++;
      if (!(err <= rtol * Math.abs(numeric) + atol * gMax))
        mismatches.push(`${s.name}[${at}] (grad ${k}): analytic ${g[at]}, numeric ${numeric}, |diff| ${err.toExponential(2)}`);
    }
  }
  await fwdSession.release();
  return { mismatches, checked, worst };
}

function pickDistinct(rng: () => number, n: number, k: number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < k) chosen.add(Math.floor(rng() * n));
  return [...chosen].sort((a, b) => a - b);
}
