// The op builder: shape inference, build-time errors that name the op and the shapes, and
// serialised graphs that onnxruntime runs with the values a plain JS reference computes.
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Session } from '../../../src-main/engine/runtime/session';

const f32 = (shape: number[], values: number[]) => ({ dtype: 'float32' as const, shape, data: Float32Array.from(values) });

describe('op builder shape inference', () => {
  it('infers broadcast, matmul, conv, reshape and reduction shapes', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3, 8, 8]);
    const w = g.input('w', 'float32', [5, 3, 3, 3]);
    expect(op.conv(x, w, null, { strides: [2, 2], pads: [1, 1, 1, 1] }).shape).toEqual([2, 5, 4, 4]);
    expect(op.add(x, g.input('b', 'float32', [3, 1, 1])).shape).toEqual([2, 3, 8, 8]);
    expect(op.matmul(g.input('a', 'float32', [4, 1, 6, 7]), g.input('c', 'float32', [3, 7, 2])).shape).toEqual([4, 3, 6, 2]);
    expect(op.reshape(x, [2, -1]).shape).toEqual([2, 192]);
    expect(op.reduceMean(x, [2, 3], false).shape).toEqual([2, 3]);
    expect(op.resizeNearest(x, [2, 2]).shape).toEqual([2, 3, 16, 16]);
    expect(op.split(x, [1, 2], 1).map((v) => v.shape)).toEqual([[2, 1, 8, 8], [2, 2, 8, 8]]);
    expect(op.slice(x, [1], [100], [3]).shape).toEqual([2, 3, 8, 7]);
    expect(op.convTranspose(g.input('y', 'float32', [2, 5, 4, 4]), g.input('wt', 'float32', [5, 3, 3, 3]), null, { strides: [2, 2], pads: [1, 1, 1, 1], outputPadding: [1, 1] }).shape).toEqual([2, 3, 8, 8]);
  });

  it('names the op and the operand shapes on a mismatch', () => {
    const g = new Graph();
    const a = g.input('a', 'float32', [2, 3]);
    const b = g.input('b', 'float32', [4, 5]);
    expect(() => op.matmul(a, b)).toThrow(/MatMul: inner dimensions differ \(3 vs 4\).*a float32\[2,3\].*b float32\[4,5\]/);
    expect(() => op.add(a, b)).toThrow(/Add: shapes do not broadcast/);
    expect(() => op.add(a, g.input('h', 'float16', [2, 3]))).toThrow(/Add: dtypes differ/);
    expect(() => op.conv(g.input('x', 'float32', [1, 3, 8, 8]), g.input('w', 'float32', [4, 2, 3, 3]), null)).toThrow(/Conv: channels do not match/);
    expect(() => op.reshape(a, [4, 2])).toThrow(/Reshape: cannot reshape to \[4,2\]/);
  });
});

describe('serialised graphs run in onnxruntime', () => {
  it('computes softmax(x W + 1), a padded conv, nearest resize and a reduction', async () => {
    const g = new Graph('t');
    const x = g.input('x', 'float32', [2, 3]);
    const w = g.constant([1, 2, 3, 4, 5, 6], 'float32', [3, 2]);
    g.output(op.softmax(op.add(op.matmul(x, w), 1), -1), 'y');
    const image = op.reshape(x, [1, 1, 2, 3]);
    g.output(op.conv(image, g.constant([1, 1, 1, 1], 'float32', [1, 1, 2, 2]), null, { pads: [0, 0, 1, 1] }), 'c');
    g.output(op.resizeNearest(image, [2, 2]), 'r');
    g.output(op.reduceSum(x, [1], false), 's');
    const session = await Session.create(serializeModel(g));
    const out = await session.run({ x: f32([2, 3], [1, 0, 0, 0, 1, 0]) });
    // x W = [[1,2],[3,4]] -> softmax over [2,3] and [4,5]
    const s = 1 / (1 + Math.E);
    expect(Array.from(out.y.data as Float32Array)).toEqual([s, 1 - s, s, 1 - s].map((v) => expect.closeTo(v, 6)));
    expect(Array.from(out.c.data as Float32Array)).toEqual([2, 1, 0, 1, 1, 0]);
    expect(Array.from(out.r.data as Float32Array).slice(0, 12)).toEqual([1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]);
    expect(Array.from(out.s.data as Float32Array)).toEqual([1, 1]);
  });

  it('prunes nodes that no output needs', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2]);
    op.exp(x); // dead
    g.output(op.neg(x), 'y');
    const text = Buffer.from(serializeModel(g).bytes).toString('latin1');
    expect(text).toContain('Neg');
    expect(text).not.toContain('Exp');
  });
});
