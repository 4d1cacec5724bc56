// Elementwise comparison of a graph output with a reference tensor, for the model golden tests.
import type { HostTensor } from '../../../src-main/engine/runtime/session';
import type { GoldenTensor } from '../../helpers/golden';

export interface Difference {
  maxAbs: number;
  /** max |a - b| / |b| over elements with |b| > the absolute tolerance */
  maxRel: number;
  /** elements outside |a - b| <= atol + rtol |b| */
  outside: number;
  count: number;
}

/** numpy.allclose-style comparison; also returns the worst absolute and relative errors seen. */
export function difference(actual: ArrayLike<number>, expected: ArrayLike<number>, { rtol = 1e-4, atol = 1e-5 } = {}): Difference {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs expected ${expected.length}`);
  let maxAbs = 0;
  let maxRel = 0;
  let outside = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const d = Math.abs(a - b);
    if (!(d <= atol + rtol * Math.abs(b))) outside++; // NaN counts as outside
    maxAbs = Math.max(maxAbs, d);
    if (Math.abs(b) > atol) maxRel = Math.max(maxRel, d / Math.abs(b));
  }
  return { maxAbs, maxRel, outside, count: expected.length };
}

export const floats = (t: HostTensor | GoldenTensor): Float32Array => {
  if (!(t.data instanceof Float32Array)) throw new Error(`expected float32 data, got ${t.data.constructor.name}`);
  return t.data;
};

export const describeDifference = (label: string, d: Difference): string =>
  `${label}: max abs ${d.maxAbs.toExponential(2)}, max rel ${d.maxRel.toExponential(2)}, ${d.outside}/${d.count} outside tolerance`;
