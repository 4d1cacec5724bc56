// Seeded random weights for any model builder: the model is built once with a locator that records
// every weight it asks for, and those names and shapes are filled with torch-like initial values.
// Used for the embedded tiny model and for benchmarks at real size (same compute as a checkpoint).
import { Graph } from '../graph/graph';
import type { Shape } from '../graph/shape';
import type { TensorToWrite } from '../io/safetensors';
import { float32ToFloat16 } from '../io/dtype-convert';
import { Params, type TensorLocation, type WeightLocator } from '../nn/params';
import { createRandom } from '../data/random';

/** Records every weight a builder asks for; hands out a dummy file range (nothing is read). */
class RecordingLocator implements WeightLocator {
  readonly requested: { name: string; shape: number[] }[] = [];
  take(name: string, expectedShape: Shape): TensorLocation {
    this.requested.push({ name, shape: [...expectedShape] });
    const length = expectedShape.reduce((a, b) => a * b, 1) * 4;
    return { dtype: 'float32', shape: expectedShape, data: { kind: 'file', path: '/dev/null', offset: 0, length } };
  }
}

/** A uniform source seeded by (seed, tensor name), so one tensor's values do not depend on the others. */
function uniformFor(seed: number, name: string): () => number {
  let h = seed;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 0x9e3779b1);
  return createRandom(h >>> 0);
}

/** torch-like defaults: norms weight 1 bias 0, other biases 0, weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), embeddings small. */
function initTensor(seed: number, name: string, shape: number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (name.endsWith('.bias')) return out;
  if (/norm/i.test(name) && shape.length === 1) return out.fill(1);
  const uniform = uniformFor(seed, name);
  const bound = /embedding/.test(name) ? 0.02 : 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1) || 1);
  for (let i = 0; i < n; i++) out[i] = (2 * uniform() - 1) * bound;
  return out;
}

/** The weights `build` asks for, filled with seeded values, ready for writeSafetensors. */
export function randomWeightsFor(seed: number, build: (p: Params) => void, dtype: 'F32' | 'F16' = 'F32'): TensorToWrite[] {
  const locator = new RecordingLocator();
  build(new Params(new Graph('record'), locator, { dtype: 'float32' }));
  return locator.requested.map(({ name, shape }) => {
    const values = initTensor(seed, name, shape);
    return { name, dtype, shape, data: dtype === 'F32' ? values : float32ToFloat16(values) };
  });
}
