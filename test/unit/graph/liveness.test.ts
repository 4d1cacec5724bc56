// Peak live bytes in onnxruntime's node order (graph/liveness.ts), on graphs small enough to count
// by hand: float32 [4, 8] = 128 bytes per tensor.
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { onnxruntimeOrder, peakLiveBytes } from '../../../src-main/engine/graph/liveness';

const T = 4 * 8 * 4; // bytes of one [4, 8] float32 tensor

describe('peak live bytes', () => {
  it('frees each value after its last reader', () => {
    const g = new Graph('chain');
    const x = g.input('x', 'float32', [4, 8]);
    const a = op.exp(x); // [4, 8]
    const b = op.exp(a); // [4, 8]: a is freed after this node
    g.output(op.exp(b), 'y'); // [4, 8]
    // x (input) + at most two intermediates at once (a node's input and output)
    expect(peakLiveBytes(g)).toBe(T + 2 * T);
  });

  it('counts a value read much later for the whole span', () => {
    const g = new Graph('skip');
    const x = g.input('x', 'float32', [4, 8]);
    const a = op.exp(x); // [4, 8], read again at the end
    const b = op.exp(op.exp(a)); // [4, 8]
    g.output(op.add(a, b), 'y'); // [4, 8]
    expect(peakLiveBytes(g)).toBe(T + 3 * T); // x, a, and two chain values at the peak
  });

  it('a Reshape shares its input buffer: keeping both views alive holds the bytes once', () => {
    const g = new Graph('alias');
    const x = g.input('x', 'float32', [4, 8]);
    const a = op.exp(x); // [4, 8]
    const flat = op.reshape(a, [32]); // [32], a's buffer, read at the end
    const b = op.exp(op.exp(a)); // [4, 8]
    g.output(op.add(flat, op.reshape(b, [32])), 'y'); // [32]
    // the same as the graph above: the reshaped views add nothing
    expect(peakLiveBytes(g)).toBe(T + 3 * T);
    expect(onnxruntimeOrder(g).filter((n) => n.op === 'Reshape')).toHaveLength(2);
  });
});
