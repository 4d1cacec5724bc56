// The gradients() walker: what it builds (only the path from wrt to the loss, only the needed
// input gradients), what it refuses (ops without a rule on the path), stopGradient, seeds, unused
// parameters, non-differentiable inputs, and float16 graphs getting a float16 backward.
import { describe, expect, it } from 'vitest';
import { Graph, type Value } from '../../../src-main/engine/graph/graph';
import type { DType } from '../../../src-main/engine/graph/dtype';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Session } from '../../../src-main/engine/runtime/session';
import { gradients, stopGradient, sumToShape } from '../../../src-main/engine/autodiff/gradients';
import { createRandom } from '../../../src-main/engine/data/random';
import { checkGradients, hostTensor, numbers } from './fd-harness';

/** ONNX Floor, an op without a gradient rule (built raw: the op builder has no function for it). */
const floor = (x: Value): Value => x.graph.addNode('Floor', [x], [{ dtype: x.dtype, shape: x.shape }])[0];

/** The ops of the nodes that gradients() appended. */
function opsAdded(g: Graph, build: () => void): string[] {
  const before = g.nodes.length;
  build();
  return g.nodes.slice(before).map((n) => n.op);
}

async function run(g: Graph, feeds: Record<string, { dtype: DType; shape: number[]; values: number[] }>): Promise<Record<string, number[]>> {
  const session = await Session.create(serializeModel(g));
  const hostFeeds = Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, hostTensor(f.dtype, f.shape, f.values)]));
  const out = await session.run(hostFeeds);
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, numbers(t)]));
}

describe('gradients() walks only what the requested gradients need', () => {
  it('skips branches that do not depend on wrt and inputs whose gradient nobody asked for', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [4, 3]);
    const w = g.input('w', 'float32', [3, 2]);
    const u = g.input('u', 'float32', [4, 2]);
    const loss = op.add(op.sumAll(op.matmul(x, w)), op.sumAll(op.sin(u))); // []
    const added = opsAdded(g, () => gradients(loss, [w]));
    expect(added.filter((o) => o === 'MatMul')).toHaveLength(1); // dW only, no dX
    expect(added).not.toContain('Cos'); // Sin's rule was never asked: u is not on a path from w
  });

  it('accumulates every use of a value with Add', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const loss = op.sumAll(op.add(op.mul(x, x), op.mul(x, 3))); // sum(x^2 + 3x)
    g.output(gradients(loss, [x])[0], 'dx');
    const out = await run(g, { x: { dtype: 'float32', shape: [3], values: [1, -2, 0.5] } });
    expect(out.dx).toEqual([5, -1, 4]); // 2x + 3
  });

  it('throws at build time naming the op and the node when a node on the path has no rule', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3]);
    const floored = floor(op.mul(x, 2)); // Floor has no rule
    const loss = op.sumAll(op.mul(floored, x));
    expect(() => gradients(loss, [x])).toThrow(/no gradient rule for op Floor \(node "Floor[^"]*", output Floor[^ ]* float32\[2,3\]\)/);
  });

  it('does not need rules off the path, nor for integer and bool values', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const table = g.input('table', 'float32', [4, 2]);
    const constantBranch = op.reduceMax(floor(table), [0]); // [1, 2], Floor has no rule, but is not on a path from x
    const indices = op.cast(x, 'int64'); // [3] truncated: an index, not differentiable
    const picked = op.gather(table, indices, 0); // [3, 2]
    const gate = op.where(op.greater(x, 1), x, op.neg(x)); // [3], bool condition
    const loss = op.sumAll(op.mul(op.mul(picked, op.unsqueeze(gate, 1)), constantBranch)); // []
    g.output(gradients(loss, [x])[0], 'dx');
    const xs = [1.5, 0.25, 2.75];
    const tableValues = [1, 2, 3, 4, 5, 6, 7, 8];
    const out = await run(g, {
      x: { dtype: 'float32', shape: [3], values: xs },
      table: { dtype: 'float32', shape: [4, 2], values: tableValues },
    });
    // d/dx_i of sum_j table[int(x_i), j] * max_k table[k, j] * (x_i > 1 ? x_i : -x_i)
    const expected = xs.map((v) => {
      const row = Math.trunc(v);
      const dot = tableValues[2 * row] * 7 + tableValues[2 * row + 1] * 8;
      return dot * (v > 1 ? 1 : -1);
    });
    expect(out.dx).toEqual(expected);
  });

  it('lets no gradient through stopGradient', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const loss = op.sumAll(op.mul(x, stopGradient(x))); // d/dx = x, not 2x
    g.output(gradients(loss, [x])[0], 'dx');
    const out = await run(g, { x: { dtype: 'float32', shape: [3], values: [1, -2, 0.5] } });
    expect(out.dx).toEqual([1, -2, 0.5]);
  });

  it('returns zeros for a parameter the loss does not use, and honours a seed', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 2]);
    const unused = g.input('unused', 'float32', [3]);
    const seed = g.input('seed', 'float32', [2, 2]);
    const y = op.mul(x, x); // [2, 2]
    const [dx, dUnused] = gradients(y, [x, unused], seed);
    g.output(dx, 'dx');
    g.output(dUnused, 'dunused');
    const out = await run(g, {
      x: { dtype: 'float32', shape: [2, 2], values: [1, 2, 3, 4] },
      unused: { dtype: 'float32', shape: [3], values: [9, 9, 9] },
      seed: { dtype: 'float32', shape: [2, 2], values: [1, 0, -1, 0.5] },
    });
    expect(out.dx).toEqual([2, 0, -6, 4]); // seed * 2x
    expect(out.dunused).toEqual([0, 0, 0]);
  });

  it('refuses integer wrt values and a seed that does not match the loss', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2]);
    const ids = g.input('ids', 'int64', [2]);
    const loss = op.sumAll(x);
    expect(() => gradients(loss, [ids])).toThrow(/cannot differentiate with respect to ids int64\[2\]/);
    expect(() => gradients(loss, [x], g.input('s', 'float32', [2]))).toThrow(/seed s float32\[2\] must match the loss/);
  });

  it('gives max(x, x) the full gradient, split in halves between the tied operands', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2]);
    g.output(gradients(op.sumAll(op.max(x, x)), [x])[0], 'dx');
    const out = await run(g, { x: { dtype: 'float32', shape: [2], values: [1, -1] } });
    expect(out.dx).toEqual([1, 1]);
  });
});

describe('sumToShape', () => {
  it('sums over the broadcast axes and drops the leading ones', async () => {
    const g = new Graph();
    const grad = g.input('g', 'float32', [2, 3, 4]);
    const toCol = sumToShape(grad, [3, 1]); // [3, 1]
    const toScalar = sumToShape(grad, []); // []
    expect(toCol.shape).toEqual([3, 1]);
    expect(sumToShape(grad, [2, 3, 4])).toBe(grad);
    g.output(toCol, 'col');
    g.output(toScalar, 'scalar');
    const values = Array.from({ length: 24 }, (_, i) => i);
    const out = await run(g, { g: { dtype: 'float32', shape: [2, 3, 4], values } });
    const col = [0, 1, 2].map((j) => values.filter((_, i) => Math.floor(i / 4) % 3 === j).reduce((a, b) => a + b, 0));
    expect(out.col).toEqual(col);
    expect(out.scalar).toEqual([276]);
  });
});

describe('mixed precision', () => {
  /** A small float16-capable network: linear, layer norm, attention scores, group norm via instance norm, conv. */
  function network(x: Value, w: Value, s: Value): Value {
    const g = x.graph;
    const t = x.dtype;
    const h = op.gemm(op.reshape(x, [6, 4]), w, null, { transB: true }); // [6, 4]
    const n = op.layerNorm(op.reshape(h, [2, 3, 4]), s, null); // [2, 3, 4]
    const p = op.softmax(op.matmul(n, op.transpose(n, [0, 2, 1])), -1); // [2, 3, 3]
    const img = op.reshape(op.matmul(p, n), [2, 2, 2, 3]); // [2, 2, 2, 3]
    const grouped = op.instanceNorm(op.reshape(img, [2, 1, 12]), g.constant([1], t, [1]), g.constant([0], t, [1]), 1e-5); // [2, 1, 12]
    const act = op.silu(op.reshape(grouped, img.shape)); // [2, 2, 2, 3]
    return op.conv(act, op.reshape(op.slice(w, [0], [2], [0]), [2, 2, 1, 2]), null, { pads: [0, 0, 0, 1] }); // [2, 2, 2, 3]
  }

  function buildGradients(dtype: DType): { g: Graph; added: { dtype: DType; scope: string }[] } {
    const g = new Graph(`mixed_${dtype}`);
    const x = g.input('x', dtype, [2, 3, 4]);
    const w = g.input('w', dtype, [4, 4]);
    const s = g.input('s', dtype, [4]);
    const loss = op.sumAll(network(x, w, s)); // []
    const before = g.nodes.length;
    const grads = gradients(loss, [x, w, s]);
    const added = g.nodes.slice(before).flatMap((n) => n.outputs.map((o) => ({ dtype: o.dtype, scope: n.name })));
    grads.forEach((gr, i) => g.output(op.cast(gr, 'float32'), `d${i}`));
    return { g, added };
  }

  it('builds a float16 backward for a float16 forward, upcasting only inside the norm rules', () => {
    const { added } = buildGradients('float16');
    const floats = added.filter((a) => a.dtype !== 'bool' && a.dtype !== 'int64');
    const wide = floats.filter((a) => a.dtype !== 'float16');
    expect(floats.length).toBeGreaterThan(50);
    expect(wide.length).toBeGreaterThan(0);
    for (const a of wide) expect(a.scope).toMatch(/^grad\/(LayerNormalization|InstanceNormalization)/);
  });

  it('computes float16 gradients close to the float32 ones on the CPU', async () => {
    const rng = createRandom(7);
    const values = (n: number): number[] => Array.from({ length: n }, () => 2 * rng() - 1);
    const inputs = { x: values(24), w: values(16), s: values(4) };
    const results: Record<string, number[]>[] = [];
    for (const dtype of ['float32', 'float16'] as const) {
      const { g } = buildGradients(dtype);
      results.push(
        await run(g, {
          x: { dtype, shape: [2, 3, 4], values: inputs.x },
          w: { dtype, shape: [4, 4], values: inputs.w },
          s: { dtype, shape: [4], values: inputs.s },
        }),
      );
    }
    const [ref, half] = results;
    for (const key of ['d0', 'd1', 'd2']) {
      const scale = Math.max(...ref[key].map(Math.abs));
      ref[key].forEach((v, i) => expect(Math.abs(half[key][i] - v)).toBeLessThan(0.03 * scale));
    }
  });

  it('checks the float32 version of that network against finite differences', async () => {
    const result = await checkGradients({
      dtype: 'float32',
      inputs: [{ name: 'x', shape: [2, 3, 4] }, { name: 'w', shape: [4, 4] }, { name: 's', shape: [4] }],
      build: network,
      step: 4e-3,
      rtol: 5e-3,
      atol: 5e-4,
    });
    expect(result.mismatches).toEqual([]);
  });
});
