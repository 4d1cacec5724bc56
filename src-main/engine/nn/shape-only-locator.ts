// A WeightLocator that hands out shapes without touching any file (each weight a location in a
// file that is never read): for building a graph whose sizes alone matter (the memory estimates,
// the graph studies of bench/). Counts what it handed out, each weight once.
import { BYTES_PER_ELEMENT, type DType } from '../graph/dtype';
import { numel, type Shape } from '../graph/shape';
import type { TensorLocation, WeightLocator } from './params';

export class ShapeOnlyLocator implements WeightLocator {
  private readonly seen = new Map<string, number>();
  constructor(private readonly dtype: DType = 'float16') {}
  /** Elements of every weight asked for. */
  get parameters(): number {
    return [...this.seen.values()].reduce((a, b) => a + b, 0);
  }
  /** Bytes of every weight asked for, in this locator's dtype. */
  get bytes(): number {
    return this.parameters * BYTES_PER_ELEMENT[this.dtype];
  }
  take(name: string, shape: Shape): TensorLocation {
    this.seen.set(name, numel(shape));
    return { dtype: this.dtype, shape, data: { kind: 'file', path: '/dev/null', offset: 0, length: numel(shape) * BYTES_PER_ELEMENT[this.dtype] } };
  }
}
