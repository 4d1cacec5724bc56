// Every gradient rule against central finite differences (fd-harness.ts), on onnxruntime's CPU
// provider, with several shapes including broadcasting and edge values.
//
// Precision, per op (the CPU provider has no float64 kernel for Conv, ConvTranspose, Erf,
// InstanceNormalization, Resize and com.microsoft MultiHeadAttention):
// - float64 (step 1e-5, rtol 1e-6): every elementwise op but Erf, MatMul, Gemm, LayerNormalization,
//   Softmax, the reductions, the shape ops, Where, Gather, Expand; and, through an equivalent
//   float64 forward (FdCase.reference), which also stands in for the op's output where a rule
//   reads it, so the gradient graph runs in float64 with the op pruned: InstanceNormalization (mean /
//   variance from reductions), Resize (nearest upsampling as Expand + Reshape) and
//   MultiHeadAttention (MatMul / Softmax attention).
// - float32, exact differences: Conv and ConvTranspose (both operands) are linear in each input,
//   so a central difference with a large step (0.5) is exact up to float32 rounding of the outputs.
// - float32, small step: Erf (step 1e-2, truncation ~ h^2/6 * max|erf'''| ~ 4e-5), Cast (a float32
//   <-> float64 round trip; quadratic, so the central difference is exact), and the float32 runs of
//   the real InstanceNormalization and MultiHeadAttention kernels, which confirm that our rules
//   match onnxruntime's definition of those ops (epsilon, default scale, head layout).
import { describe, expect, it } from 'vitest';
import type { Value } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { checkGradients, type FdCase } from './fd-harness';

type Gen = (rng: () => number, index: number) => number;
const uniform = (lo: number, hi: number): Gen => (rng) => lo + (hi - lo) * rng();
/** |x| in [lo, hi] with a random sign: keeps kinks (Abs, Relu) and poles out of reach of the step. */
const awayFromZero = (lo: number, hi: number): Gen => (rng) => (rng() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng());
/** Every third value exactly zero, the rest in [-1, 1]. */
const withZeros: Gen = (rng, i) => (i % 3 === 0 ? 0 : 2 * rng() - 1);

async function expectGradientsMatch(c: FdCase): Promise<void> {
  const result = await checkGradients(c);
  expect(result.mismatches).toEqual([]);
  expect(result.checked).toBeGreaterThan(0);
}

const cases = (list: Record<string, FdCase>): void => {
  for (const [name, c] of Object.entries(list)) it(name, () => expectGradientsMatch(c));
};

const f64 = 'float64' as const;

describe('elementwise rules (float64)', () => {
  cases({
    'Add, broadcast [2,3,4] + [3,1] with zeros': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3, 4], values: withZeros }, { name: 'b', shape: [3, 1] }], build: (a, b) => op.add(a, b) },
    'Add, scalar operand': { dtype: f64, inputs: [{ name: 'a', shape: [] }, { name: 'b', shape: [2, 3] }], build: (a, b) => op.add(a, b) },
    'Add, same value twice (accumulation)': { dtype: f64, inputs: [{ name: 'a', shape: [3, 2] }], build: (a) => op.mul(op.add(a, a), a) },
    'Sub, [4] - [2,3,4]': { dtype: f64, inputs: [{ name: 'a', shape: [4] }, { name: 'b', shape: [2, 3, 4] }], build: (a, b) => op.sub(a, b) },
    'Mul, [2,1,4] * [3,1] with zeros': { dtype: f64, inputs: [{ name: 'a', shape: [2, 1, 4], values: withZeros }, { name: 'b', shape: [3, 1], values: withZeros }], build: (a, b) => op.mul(a, b) },
    'Div, [2,3] / [3]': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3], values: withZeros }, { name: 'b', shape: [3], values: awayFromZero(0.5, 1.5) }], build: (a, b) => op.div(a, b) },
    'Div, [1] / [2,2]': { dtype: f64, inputs: [{ name: 'a', shape: [1] }, { name: 'b', shape: [2, 2], values: awayFromZero(0.5, 1.5) }], build: (a, b) => op.div(a, b) },
    'Pow, both operands, [2,3] ^ [3]': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3], values: uniform(0.5, 2) }, { name: 'b', shape: [3], values: uniform(-2, 2) }], build: (a, b) => op.pow(a, b) },
    'Pow, negative base to a constant 3': { dtype: f64, inputs: [{ name: 'a', shape: [5], values: withZeros }], build: (a) => op.pow(a, 3) },
    'Sqrt': { dtype: f64, inputs: [{ name: 'x', shape: [2, 5], values: uniform(0.2, 2) }], build: (x) => op.sqrt(x) },
    'Exp, negatives and zeros': { dtype: f64, inputs: [{ name: 'x', shape: [2, 5], values: (rng, i) => (i % 3 === 0 ? 0 : -3 * rng()) }], build: (x) => op.exp(x) },
    'Log': { dtype: f64, inputs: [{ name: 'x', shape: [7], values: uniform(0.2, 3) }], build: (x) => op.log(x) },
    'Neg': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3] }], build: (x) => op.neg(x) },
    'Reciprocal': { dtype: f64, inputs: [{ name: 'x', shape: [6], values: awayFromZero(0.3, 2) }], build: (x) => op.reciprocal(x) },
    'Tanh, zeros and large values': { dtype: f64, inputs: [{ name: 'x', shape: [9], values: (rng, i) => [0, -4, 3][i % 3] + rng() }], build: (x) => op.tanh(x) },
    'Sigmoid, zeros and large values': { dtype: f64, inputs: [{ name: 'x', shape: [9], values: (rng, i) => [0, -6, 5][i % 3] + rng() }], build: (x) => op.sigmoid(x) },
    'Abs': { dtype: f64, inputs: [{ name: 'x', shape: [8], values: awayFromZero(0.1, 2) }], build: (x) => op.abs(x) },
    'Sin': { dtype: f64, inputs: [{ name: 'x', shape: [8], values: uniform(-4, 4) }], build: (x) => op.sin(x) },
    'Cos': { dtype: f64, inputs: [{ name: 'x', shape: [8], values: uniform(-4, 4) }], build: (x) => op.cos(x) },
    'Relu': { dtype: f64, inputs: [{ name: 'x', shape: [3, 4], values: awayFromZero(0.05, 1) }], build: (x) => op.relu(x) },
    'Max, [2,3] vs [3] (no ties)': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3], values: (rng, i) => i * 0.37 - 1 }, { name: 'b', shape: [3], values: [-0.5, 0.2, 0.9] }], build: (a, b) => op.max(a, b) },
    'Min, [2,3] vs [2,1] (no ties)': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3], values: (rng, i) => i * 0.37 - 1 }, { name: 'b', shape: [2, 1], values: [-0.5, 0.9] }], build: (a, b) => op.min(a, b) },
    'Max with a constant (clamp)': { dtype: f64, inputs: [{ name: 'x', shape: [6], values: awayFromZero(0.1, 1) }], build: (x) => op.min(op.max(x, -0.5), 0.5) },
    'Identity': { dtype: f64, inputs: [{ name: 'x', shape: [2, 2] }], build: (x) => op.mul(op.identity(x), x) },
    'Where, condition from a float input, [2,3] and [3]': {
      dtype: f64,
      inputs: [{ name: 'c', shape: [2, 3], values: awayFromZero(0.1, 1) }, { name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }],
      build: (c, a, b) => op.where(op.greater(c, 0), a, b),
    },
    'composite geluTanh (through its primitives)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [12], values: uniform(-3, 3) }],
      build: (x) => op.geluTanh(x),
    },
    'com.microsoft QuickGelu: silu (alpha 1) and quickGelu (alpha 1.702), large values too': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [12], values: (rng, i) => [0, -9, 9, 0.5][i % 4] * (1 + rng()) }],
      build: (x) => op.add(op.silu(x), op.quickGelu(x)),
    },
  });
});

describe('elementwise rules (float32 where float64 has no kernel)', () => {
  cases({
    'Erf': { dtype: 'float32', inputs: [{ name: 'x', shape: [12], values: uniform(-2, 2) }], build: (x) => op.erf(x), step: 1e-2, rtol: 1e-3 },
    'com.microsoft Gelu (no float64 kernel)': { dtype: 'float32', inputs: [{ name: 'x', shape: [12], values: uniform(-3, 3) }], build: (x) => op.gelu(x), step: 1e-2, rtol: 2e-3 },
    'Cast float32 -> float64 -> float32': {
      dtype: 'float32',
      inputs: [{ name: 'x', shape: [2, 3] }],
      build: (x) => {
        const wide = op.cast(x, 'float64'); // [2, 3]
        return op.cast(op.mul(wide, wide), 'float32');
      },
    },
  });
});

describe('linear algebra rules (float64)', () => {
  cases({
    'MatMul [2,3,4] @ [4,5] (rank-2 weight)': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4, 5] }], build: (a, b) => op.matmul(a, b) },
    'MatMul [4,3] @ [2,3,5] (batch broadcast of A)': { dtype: f64, inputs: [{ name: 'a', shape: [4, 3] }, { name: 'b', shape: [2, 3, 5] }], build: (a, b) => op.matmul(a, b) },
    'MatMul [2,1,3,4] @ [3,4,2] (both broadcast)': { dtype: f64, inputs: [{ name: 'a', shape: [2, 1, 3, 4] }, { name: 'b', shape: [3, 4, 2] }], build: (a, b) => op.matmul(a, b) },
    'MatMul same batch [2,3,4] @ [2,4,3]': { dtype: f64, inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [2, 4, 3] }], build: (a, b) => op.matmul(a, b) },
  });
  const gemmCases: Record<string, FdCase> = {};
  for (const transA of [false, true])
    for (const transB of [false, true]) {
      const [m, k, n] = [3, 4, 5];
      gemmCases[`Gemm transA=${+transA} transB=${+transB}, alpha 0.7, beta 1.3, C [${n}]`] = {
        dtype: f64,
        inputs: [{ name: 'a', shape: transA ? [k, m] : [m, k] }, { name: 'b', shape: transB ? [n, k] : [k, n] }, { name: 'c', shape: [n] }],
        build: (a, b, c) => op.gemm(a, b, c, { transA, transB, alpha: 0.7, beta: 1.3 }),
      };
    }
  gemmCases['Gemm C [3,1]'] = { dtype: f64, inputs: [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [5, 4] }, { name: 'c', shape: [3, 1] }], build: (a, b, c) => op.gemm(a, b, c, { transB: true }) };
  gemmCases['Gemm C [3,5], beta 0.5'] = { dtype: f64, inputs: [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [4, 5] }, { name: 'c', shape: [3, 5] }], build: (a, b, c) => op.gemm(a, b, c, { beta: 0.5 }) };
  gemmCases['Gemm without C'] = { dtype: f64, inputs: [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [5, 4] }], build: (a, b) => op.gemm(a, b, null, { transB: true }) };
  cases(gemmCases);
});

describe('Conv and ConvTranspose (float32, linear: exact central differences)', () => {
  const linear = { dtype: 'float32' as const, step: 0.5, rtol: 1e-4, atol: 1e-5 };
  cases({
    'Conv 3x3, pad 1, bias': { ...linear, inputs: [{ name: 'x', shape: [2, 3, 5, 5] }, { name: 'w', shape: [4, 3, 3, 3] }, { name: 'b', shape: [4] }], build: (x, w, b) => op.conv(x, w, b, { pads: [1, 1, 1, 1] }) },
    'Conv stride 2 on an odd size (output_padding), asymmetric pads': {
      ...linear,
      inputs: [{ name: 'x', shape: [1, 2, 7, 6] }, { name: 'w', shape: [3, 2, 3, 3] }],
      build: (x, w) => op.conv(x, w, null, { strides: [2, 2], pads: [1, 0, 0, 1] }),
    },
    'Conv stride 3, kernel 2 (rows dropped by the floor)': { ...linear, inputs: [{ name: 'x', shape: [1, 2, 8, 8] }, { name: 'w', shape: [2, 2, 2, 2] }], build: (x, w) => op.conv(x, w, null, { strides: [3, 3] }) },
    'Conv dilation 2, stride 2, groups 2': {
      ...linear,
      inputs: [{ name: 'x', shape: [2, 4, 9, 8] }, { name: 'w', shape: [6, 2, 3, 2] }, { name: 'b', shape: [6] }],
      build: (x, w, b) => op.conv(x, w, b, { strides: [2, 1], dilations: [2, 2], pads: [1, 1, 2, 0], group: 2 }),
    },
    'Conv depthwise (groups = channels)': { ...linear, inputs: [{ name: 'x', shape: [1, 3, 6, 6] }, { name: 'w', shape: [3, 1, 3, 3] }], build: (x, w) => op.conv(x, w, null, { pads: [1, 1, 1, 1], group: 3 }) },
    'Conv 1-D, stride 2': { ...linear, inputs: [{ name: 'x', shape: [2, 3, 11] }, { name: 'w', shape: [2, 3, 4] }, { name: 'b', shape: [2] }], build: (x, w, b) => op.conv(x, w, b, { strides: [2], pads: [1, 2] }) },
    'ConvTranspose stride 2, pads 1, output_padding 1, bias': {
      ...linear,
      inputs: [{ name: 'x', shape: [2, 3, 4, 4] }, { name: 'w', shape: [3, 2, 3, 3] }, { name: 'b', shape: [2] }],
      build: (x, w, b) => op.convTranspose(x, w, b, { strides: [2, 2], pads: [1, 1, 1, 1], outputPadding: [1, 1] }),
    },
    'ConvTranspose groups 2, dilation 2, asymmetric pads': {
      ...linear,
      inputs: [{ name: 'x', shape: [1, 4, 3, 4] }, { name: 'w', shape: [4, 3, 2, 3] }],
      build: (x, w) => op.convTranspose(x, w, null, { strides: [1, 2], dilations: [2, 1], pads: [0, 1, 1, 0], group: 2 }),
    },
  });
});

/** InstanceNormalization written with reductions (float64 has no kernel for the op itself). */
function instanceNormReference(x: Value, scale: Value, bias: Value, eps: number): Value {
  const axes = x.shape.map((_, i) => i).filter((i) => i >= 2);
  const centered = op.sub(x, op.reduceMean(x, axes)); // x's shape
  const rstd = op.reciprocal(op.sqrt(op.add(op.reduceMean(op.mul(centered, centered), axes), eps))); // [N, C, 1...]
  const channel = [x.shape[1], ...axes.map(() => 1)];
  return op.add(op.mul(op.mul(centered, rstd), op.reshape(scale, channel)), op.reshape(bias, channel)); // x's shape
}

describe('normalisation and softmax rules', () => {
  cases({
    'LayerNormalization over the last axis, scale and bias': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 3, 8], values: uniform(-2, 3) }, { name: 's', shape: [8] }, { name: 'b', shape: [8] }],
      build: (x, s, b) => op.layerNorm(x, s, b, { epsilon: 1e-5 }),
    },
    'LayerNormalization over axes 1.. without bias, eps 0.1': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 3, 4] }, { name: 's', shape: [3, 4] }],
      build: (x, s) => op.layerNorm(x, s, null, { axis: 1, epsilon: 0.1 }),
    },
    'LayerNormalization keeping its statistics (as float16 builds do): the rule reads the Mean/InvStdDev the forward output': {
      dtype: 'float32',
      inputs: [{ name: 'x', shape: [2, 3, 8], values: uniform(-2, 3) }, { name: 's', shape: [8] }, { name: 'b', shape: [8] }],
      build: (x, s, b) => {
        const y = op.layerNorm(x, s, b, { epsilon: 1e-5, keepStatistics: true });
        if (y.producer!.outputs.length !== 3) throw new Error('expected the statistics outputs');
        return y;
      },
      step: 1e-2,
      rtol: 2e-3,
    },
    'LayerNormalization in float16 with its statistics and a frozen scale and bias: the float16 input-gradient path': {
      dtype: 'float16',
      inputs: [
        { name: 'x', shape: [4, 3, 64], values: uniform(-2, 3) },
        { name: 's', shape: [64], values: uniform(0.5, 1.5), wrt: false },
        { name: 'b', shape: [64], wrt: false },
      ],
      build: (x, s, b) => {
        const y = op.layerNorm(x, s, b, { epsilon: 1e-5 }); // float16 keeps the statistics by default
        if (y.producer!.outputs.length !== 3) throw new Error('expected the statistics outputs');
        return y;
      },
      step: 0.125,
      rtol: 3e-2,
      atol: 3e-2,
      coords: 40,
    },
    'Softmax along the last axis': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 5], values: uniform(-3, 3) }], build: (x) => op.softmax(x, -1) },
    'Softmax along axis 1': { dtype: f64, inputs: [{ name: 'x', shape: [2, 5, 3] }], build: (x) => op.softmax(x, 1) },
    'InstanceNormalization [2,3,5], general scale and bias (float64 reference)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 3, 5], values: uniform(-1, 2) }, { name: 's', shape: [3] }, { name: 'b', shape: [3] }],
      build: (x, s, b) => op.instanceNorm(x, s, b, 1e-5),
      reference: (x, s, b) => instanceNormReference(x, s, b, 1e-5),
    },
    'InstanceNormalization [2,4,6] as group norm: scale ones, bias zeros (float64 reference)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 4, 6] }],
      build: (x) => op.instanceNorm(x, x.graph.constant([1, 1, 1, 1], f64, [4]), x.graph.constant([0, 0, 0, 0], f64, [4]), 1e-6),
      reference: (x) => instanceNormReference(x, x.graph.constant([1, 1, 1, 1], f64, [4]), x.graph.constant([0, 0, 0, 0], f64, [4]), 1e-6),
    },
    'InstanceNormalization over 2 elements per group (the 1x1 group norms of small UNets)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 3, 2], values: uniform(-0.05, 0.05) }, { name: 's', shape: [3] }, { name: 'b', shape: [3] }],
      build: (x, s, b) => op.instanceNorm(x, s, b, 1e-5),
      reference: (x, s, b) => instanceNormReference(x, s, b, 1e-5),
    },
    'InstanceNormalization with 2 spatial axes, eps 0.01 (float64 reference)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [1, 2, 3, 4] }, { name: 's', shape: [2] }, { name: 'b', shape: [2] }],
      build: (x, s, b) => op.instanceNorm(x, s, b, 0.01),
      reference: (x, s, b) => instanceNormReference(x, s, b, 0.01),
    },
    'InstanceNormalization, the real float32 kernel': {
      dtype: 'float32',
      inputs: [{ name: 'x', shape: [2, 3, 6] }, { name: 's', shape: [3] }, { name: 'b', shape: [3] }],
      build: (x, s, b) => op.instanceNorm(x, s, b, 0.1), // a large epsilon, so where it enters matters
      step: 4e-3,
      rtol: 3e-3,
      atol: 3e-4,
    },
  });
});

describe('reduction and shape rules (float64)', () => {
  cases({
    'ReduceSum axes [0,2] keepdims': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.reduceSum(x, [0, 2], true) },
    'ReduceSum axis -1 no keepdims': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.reduceSum(x, [-1], false) },
    'ReduceMean axis 1 keepdims': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.reduceMean(x, [1], true) },
    'ReduceMean all axes no keepdims': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.meanAll(op.mul(x, x)) },
    'ReduceMax axis 1 no keepdims (distinct values)': { dtype: f64, inputs: [{ name: 'x', shape: [2, 4, 3], values: (rng, i) => ((i * 7) % 24) / 10 - 1 }], build: (x) => op.reduceMax(x, [1], false) },
    'Sign (zero gradient) times x': { dtype: f64, inputs: [{ name: 'x', shape: [5], values: awayFromZero(0.1, 1) }], build: (x) => op.mul(op.sign(x), op.mul(x, x)) },
    'Pad, constant': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3] }], build: (x) => op.mul(op.pad(x, [1, 0, 2, 3], 0.5), 2) },
    'Reshape': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.reshape(x, [4, 6]) },
    'Transpose [2,0,1]': { dtype: f64, inputs: [{ name: 'x', shape: [2, 3, 4] }], build: (x) => op.transpose(x, [2, 0, 1]) },
    'Concat of three along axis 1': {
      dtype: f64,
      inputs: [{ name: 'a', shape: [2, 1, 3] }, { name: 'b', shape: [2, 4, 3] }, { name: 'c', shape: [2, 2, 3] }],
      build: (a, b, c) => op.concat([a, b, c], 1),
    },
    'Split into three, one piece unused': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [2, 6] }],
      build: (x) => {
        const [p, , r] = op.split(x, [2, 1, 3], 1); // [2,2], [2,1], [2,3]
        return op.concat([op.mul(p, p), r], 1);
      },
    },
    'Slice, step 1, negative start, clamped end': { dtype: f64, inputs: [{ name: 'x', shape: [4, 5] }], build: (x) => op.slice(x, [1, -3], [3, 100], [0, 1]) },
    'Slice, steps 2 and 3 on two axes': { dtype: f64, inputs: [{ name: 'x', shape: [5, 7, 2] }], build: (x) => op.slice(x, [0, 1], [5, 7], [0, 1], [2, 3]) },
    'Slice, step 2 ending before the tail': { dtype: f64, inputs: [{ name: 'x', shape: [9] }], build: (x) => op.slice(x, [1], [6], [0], [2]) },
    'Expand [3,1] -> [2,3,4]': { dtype: f64, inputs: [{ name: 'x', shape: [3, 1] }], build: (x) => op.expand(x, [2, 3, 4]) },
    'Gather axis 0, repeated and negative indices': {
      dtype: f64,
      inputs: [{ name: 'data', shape: [5, 3] }, { name: 'idx', shape: [2, 2], dtype: 'int64', values: [1, 3, 1, -1] }],
      build: (data, idx) => op.gather(data, idx, 0),
    },
    'Gather axis 1 with int32 indices': {
      dtype: f64,
      inputs: [{ name: 'data', shape: [2, 5, 3] }, { name: 'idx', shape: [3], dtype: 'int32', values: [4, 0, 4] }],
      build: (data, idx) => op.gather(data, idx, 1),
    },
    'Resize nearest x2, x3 (float64 reference: Expand + Reshape)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [1, 2, 3, 2] }],
      build: (x) => op.resizeNearest(x, [2, 3]),
      reference: (x) => {
        const [n, c, h, w] = x.shape;
        const blocks = op.expand(op.reshape(x, [n, c, h, 1, w, 1]), [n, c, h, 2, w, 3]); // [n, c, h, 2, w, 3]
        return op.reshape(blocks, [n, c, h * 2, w * 3]);
      },
    },
    'Resize nearest, the real float32 kernel': { dtype: 'float32', step: 0.5, inputs: [{ name: 'x', shape: [2, 1, 2, 3] }], build: (x) => op.resizeNearest(x, [2, 2]) },
  });
});

/** softmax(q k^T * scale) v per head with MatMul and Softmax (float64 has no fused kernel). */
function attentionReference(q: Value, k: Value, v: Value, heads: number, scale: number): Value {
  const [b, lq] = q.shape;
  const lk = k.shape[1];
  const split = (x: Value, l: number): Value => op.transpose(op.reshape(x, [b, l, heads, x.shape[2] / heads]), [0, 2, 1, 3]); // [B, H, L, D]
  const probs = op.softmax(op.mul(op.matmul(split(q, lq), op.transpose(split(k, lk), [0, 1, 3, 2])), scale), -1); // [B, H, Lq, Lk]
  const out = op.matmul(probs, split(v, lk)); // [B, H, Lq, Dv]
  return op.reshape(op.transpose(out, [0, 2, 1, 3]), [b, lq, v.shape[2]]); // [B, Lq, H*Dv]
}

describe('com.microsoft MultiHeadAttention rule', () => {
  cases({
    'MHA 2 heads, Lq 3, Lk 5 (float64 reference)': {
      dtype: f64,
      inputs: [{ name: 'q', shape: [2, 3, 8] }, { name: 'k', shape: [2, 5, 8] }, { name: 'v', shape: [2, 5, 8] }],
      build: (q, k, v) => op.multiHeadAttention(q, k, v, 2),
      reference: (q, k, v) => attentionReference(q, k, v, 2, 1 / Math.sqrt(4)),
    },
    'MHA with a given scale, self attention (float64 reference)': {
      dtype: f64,
      inputs: [{ name: 'x', shape: [1, 4, 6], values: uniform(-2, 2) }],
      build: (x) => op.multiHeadAttention(x, x, x, 3, 0.8),
      reference: (x) => attentionReference(x, x, x, 3, 0.8),
    },
    'MHA, the real float32 kernel': {
      dtype: 'float32',
      inputs: [{ name: 'q', shape: [2, 3, 8] }, { name: 'k', shape: [2, 4, 8] }, { name: 'v', shape: [2, 4, 8] }],
      build: (q, k, v) => op.multiHeadAttention(q, k, v, 2),
      step: 4e-3,
      rtol: 3e-3,
      atol: 3e-4,
    },
  });
});
