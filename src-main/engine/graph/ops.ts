// The typed op builder: one function per ONNX op (default domain, opset 21, plus a few
// com.microsoft ops). Each checks dtypes and infers the static output shape at build time, so a
// mismatch fails here with the op and the shapes named, not later inside onnxruntime.
import { attr, type Attrs, type Graph, type Value } from './graph';
import { isFloat, type DType } from './dtype';
import { broadcastShapes, normAxis, numel, shapeToString, type Shape } from './shape';

export class GraphBuildError extends Error {}

function fail(op: string, message: string, ...values: Value[]): never {
  const operands = values.map((v) => `${v.name} ${v.dtype}${shapeToString(v.shape)}`).join(', ');
  throw new GraphBuildError(`${op}: ${message}${operands ? ` (operands: ${operands})` : ''}`);
}

function sameDtype(op: string, ...values: Value[]): DType {
  const t = values[0].dtype;
  for (const v of values) if (v.dtype !== t) fail(op, `dtypes differ`, ...values);
  return t;
}

function floatOnly(op: string, x: Value): void {
  if (!isFloat(x.dtype)) fail(op, `needs a floating-point input`, x);
}

function node(op: string, inputs: (Value | null)[], dtype: DType, shape: Shape, attrs: Attrs = {}, domain = ''): Value {
  const g = inputs.find((v): v is Value => v !== null)!.graph;
  return g.addNode(op, inputs, [{ dtype, shape }], attrs, domain)[0];
}

const int64s = (x: Value, values: readonly number[]): Value => x.graph.constant(values, 'int64', [values.length]);

/** A scalar constant of x's dtype (broadcasts against x). */
export const scalarLike = (x: Value, value: number): Value => x.graph.constant([value], x.dtype, []);

// One constant of ones per graph, dtype and shape: a normalisation's unit scale can be a million
// elements long (a float16 VAE's GroupNorm rows), too long to encode again for every layer.
const onesByGraph = new WeakMap<Graph, Map<string, Value>>();
/** A constant of ones of `dtype` and `shape` in graph `g`, built once per graph. */
export function ones(g: Graph, dtype: DType, shape: Shape): Value {
  let known = onesByGraph.get(g);
  if (!known) onesByGraph.set(g, (known = new Map()));
  const key = `${dtype}${shapeToString(shape)}`;
  let value = known.get(key);
  if (!value) known.set(key, (value = g.constant(new Array<number>(numel(shape)).fill(1), dtype, shape)));
  return value;
}

// ---------------------------------------------------------------- elementwise

function binary(op: string, a: Value, b: Value): Value {
  const t = sameDtype(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape);
  if (!shape) fail(op, `shapes do not broadcast`, a, b);
  return node(op, [a, b], t, shape);
}

const operand = (x: Value, y: Value | number): Value => (typeof y === 'number' ? scalarLike(x, y) : y);

export const add = (a: Value, b: Value | number): Value => binary('Add', a, operand(a, b));
export const sub = (a: Value, b: Value | number): Value => binary('Sub', a, operand(a, b));
export const mul = (a: Value, b: Value | number): Value => binary('Mul', a, operand(a, b));
export const div = (a: Value, b: Value | number): Value => binary('Div', a, operand(a, b));
export const pow = (a: Value, b: Value | number): Value => binary('Pow', a, operand(a, b));
export const max = (a: Value, b: Value | number): Value => binary('Max', a, operand(a, b));
export const min = (a: Value, b: Value | number): Value => binary('Min', a, operand(a, b));

function compare(op: string, a: Value, b: Value): Value {
  sameDtype(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape);
  if (!shape) fail(op, `shapes do not broadcast`, a, b);
  return node(op, [a, b], 'bool', shape);
}
export const less = (a: Value, b: Value | number): Value => compare('Less', a, operand(a, b));
export const greater = (a: Value, b: Value | number): Value => compare('Greater', a, operand(a, b));
export const equal = (a: Value, b: Value | number): Value => compare('Equal', a, operand(a, b));

export function where(condition: Value, a: Value, b: Value): Value {
  if (condition.dtype !== 'bool') fail('Where', 'condition must be bool', condition);
  const t = sameDtype('Where', a, b);
  const ab = broadcastShapes(a.shape, b.shape);
  const shape = ab && broadcastShapes(condition.shape, ab);
  if (!shape) fail('Where', 'shapes do not broadcast', condition, a, b);
  return node('Where', [condition, a, b], t, shape);
}

function unary(op: string, x: Value, attrs: Attrs = {}): Value {
  floatOnly(op, x);
  return node(op, [x], x.dtype, x.shape, attrs);
}
export const neg = (x: Value): Value => unary('Neg', x);
export const exp = (x: Value): Value => unary('Exp', x);
export const log = (x: Value): Value => unary('Log', x);
export const sqrt = (x: Value): Value => unary('Sqrt', x);
export const reciprocal = (x: Value): Value => unary('Reciprocal', x);
export const tanh = (x: Value): Value => unary('Tanh', x);
export const sigmoid = (x: Value): Value => unary('Sigmoid', x);
export const erf = (x: Value): Value => unary('Erf', x);
export const abs = (x: Value): Value => unary('Abs', x);
export const sin = (x: Value): Value => unary('Sin', x);
export const cos = (x: Value): Value => unary('Cos', x);
export const relu = (x: Value): Value => unary('Relu', x);
export const identity = (x: Value): Value => node('Identity', [x], x.dtype, x.shape);

export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  const codes: Record<DType, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11, bfloat16: 16 };
  return builtOnce(x, `Cast:${to}`, () => node('Cast', [x], to, x.shape, { to: attr.int(codes[to]) }));
}

// The casts and reshapes of a value, by kind: each is built once, however many layers or
// gradient rules ask for it (fewer nodes to dispatch per run).
const derivedFrom = new WeakMap<Value, Map<string, Value>>();
function builtOnce(x: Value, key: string, build: () => Value): Value {
  let derived = derivedFrom.get(x);
  if (!derived) derivedFrom.set(x, (derived = new Map()));
  let y = derived.get(key);
  if (!y) derived.set(key, (y = build()));
  return y;
}

/** -1, 0 or 1 by the sign of x (the gradient of Abs). */
export const sign = (x: Value): Value => unary('Sign', x);

// ---------------------------------------------------------------- activations

// silu, quick_gelu and gelu are single com.microsoft nodes (onnxruntime's CPU, CUDA and WebGPU
// providers all run them) rather than compositions: their gradient rules recompute from x alone,
// so the backward keeps one tensor per activation instead of every intermediate of the formula
// (for a GEGLU at 64x64 latents, five [B, 4096, 1280] tensors became one).

/** x * sigmoid(alpha x) as one node (com.microsoft QuickGelu). */
export function sigmoidGated(x: Value, alpha: number): Value {
  floatOnly('QuickGelu', x);
  return node('QuickGelu', [x], x.dtype, x.shape, { alpha: attr.float(alpha) }, 'com.microsoft');
}
/** x * sigmoid(x) */
export const silu = (x: Value): Value => sigmoidGated(x, 1);
/** x * sigmoid(1.702 x), CLIP's "quick_gelu" */
export const quickGelu = (x: Value): Value => sigmoidGated(x, 1.702);
/** 0.5 x (1 + erf(x / sqrt 2)), the exact GELU, as one node (com.microsoft Gelu) */
export function gelu(x: Value): Value {
  floatOnly('Gelu', x);
  return node('Gelu', [x], x.dtype, x.shape, {}, 'com.microsoft');
}
// composites (no gradient rule needed: their primitives have one)
/** 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GELU's tanh approximation */
export const geluTanh = (x: Value): Value =>
  mul(mul(x, 0.5), add(tanh(mul(add(x, mul(pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI))), 1));
export const square = (x: Value): Value => mul(x, x);

// ---------------------------------------------------------------- linear algebra

/** Numpy matmul for rank >= 2 operands; batch dimensions broadcast. */
export function matmul(a: Value, b: Value): Value {
  const t = sameDtype('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) fail('MatMul', 'operands must have rank >= 2', a, b);
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) fail('MatMul', `inner dimensions differ (${k} vs ${k2})`, a, b);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (!batch) fail('MatMul', 'batch dimensions do not broadcast', a, b);
  return node('MatMul', [a, b], t, [...batch, m, n]);
}

/** Gemm: alpha * op(A) op(B) + beta * C on 2-D operands; op = optional transpose. */
export function gemm(
  a: Value,
  b: Value,
  c: Value | null,
  { transA = false, transB = false, alpha = 1, beta = 1 } = {},
): Value {
  const t = sameDtype('Gemm', a, b, ...(c ? [c] : []));
  if (a.rank !== 2 || b.rank !== 2) fail('Gemm', 'A and B must be 2-D', a, b);
  const [m, k] = transA ? [a.shape[1], a.shape[0]] : a.shape;
  const [k2, n] = transB ? [b.shape[1], b.shape[0]] : b.shape;
  if (k !== k2) fail('Gemm', `inner dimensions differ (${k} vs ${k2})`, a, b);
  if (c && !broadcastShapes(c.shape, [m, n])?.every((d, i) => d === [m, n][i]))
    fail('Gemm', `C does not broadcast to [${m},${n}]`, c);
  const attrs: Attrs = { transA: attr.int(+transA), transB: attr.int(+transB), alpha: attr.float(alpha), beta: attr.float(beta) };
  return node('Gemm', c ? [a, b, c] : [a, b], t, [m, n], attrs);
}

export interface ConvOptions {
  strides?: readonly number[];
  pads?: readonly number[]; // [top, left, bottom, right] for 2-D
  dilations?: readonly number[];
  group?: number;
}

/** N-D convolution; x [N, C, ...spatial], w [M, C/group, ...kernel], bias [M]. */
export function conv(x: Value, w: Value, bias: Value | null, options: ConvOptions = {}): Value {
  const t = sameDtype('Conv', x, w, ...(bias ? [bias] : []));
  const spatial = x.rank - 2;
  if (spatial < 1 || w.rank !== x.rank) fail('Conv', 'x and w must have the same rank >= 3', x, w);
  const group = options.group ?? 1;
  const strides = options.strides ?? Array(spatial).fill(1);
  const dilations = options.dilations ?? Array(spatial).fill(1);
  const pads = options.pads ?? Array(2 * spatial).fill(0);
  const [n, c] = x.shape;
  const [m, cPerGroup] = w.shape;
  if (c !== cPerGroup * group || m % group !== 0)
    fail('Conv', `channels do not match: x has ${c}, w expects ${cPerGroup} x group ${group}`, x, w);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== m)) fail('Conv', `bias must be [${m}]`, bias);
  const out = [n, m];
  for (let i = 0; i < spatial; i++) {
    const k = (w.shape[2 + i] - 1) * dilations[i] + 1;
    const size = Math.floor((x.shape[2 + i] + pads[i] + pads[i + spatial] - k) / strides[i]) + 1;
    if (size < 1) fail('Conv', `spatial axis ${i} comes out empty`, x, w);
    out.push(size);
  }
  const attrs: Attrs = {
    strides: attr.ints(strides),
    pads: attr.ints(pads),
    dilations: attr.ints(dilations),
    group: attr.int(group),
    kernel_shape: attr.ints(w.shape.slice(2)),
  };
  return node('Conv', bias ? [x, w, bias] : [x, w], t, out, attrs);
}

export interface ConvTransposeOptions extends ConvOptions {
  outputPadding?: readonly number[];
}

/** Transposed convolution; x [N, C, ...], w [C, M/group, ...kernel]. */
export function convTranspose(x: Value, w: Value, bias: Value | null, options: ConvTransposeOptions = {}): Value {
  const t = sameDtype('ConvTranspose', x, w, ...(bias ? [bias] : []));
  const spatial = x.rank - 2;
  if (spatial < 1 || w.rank !== x.rank) fail('ConvTranspose', 'x and w must have the same rank >= 3', x, w);
  const group = options.group ?? 1;
  const strides = options.strides ?? Array(spatial).fill(1);
  const dilations = options.dilations ?? Array(spatial).fill(1);
  const pads = options.pads ?? Array(2 * spatial).fill(0);
  const outputPadding = options.outputPadding ?? Array(spatial).fill(0);
  const [n, c] = x.shape;
  if (w.shape[0] !== c) fail('ConvTranspose', `w's first axis must equal the input channels ${c}`, x, w);
  const m = w.shape[1] * group;
  const out = [n, m];
  for (let i = 0; i < spatial; i++) {
    const k = (w.shape[2 + i] - 1) * dilations[i] + 1;
    out.push(strides[i] * (x.shape[2 + i] - 1) + outputPadding[i] + k - pads[i] - pads[i + spatial]);
  }
  const attrs: Attrs = {
    strides: attr.ints(strides),
    pads: attr.ints(pads),
    dilations: attr.ints(dilations),
    group: attr.int(group),
    output_padding: attr.ints(outputPadding),
    kernel_shape: attr.ints(w.shape.slice(2)),
  };
  return node('ConvTranspose', bias ? [x, w, bias] : [x, w], t, out, attrs);
}

// ---------------------------------------------------------------- normalisation and softmax

export function softmax(x: Value, axis = -1): Value {
  floatOnly('Softmax', x);
  return node('Softmax', [x], x.dtype, x.shape, { axis: attr.int(normAxis(axis, x.rank)) });
}

/**
 * LayerNormalization over the axes from `axis` on (scale and bias have shape x.shape[axis:]). With `keepStatistics` (default: for float16 x,
 * the GPU builds) its node also outputs the mean and 1/std per normalised row (the optional Mean
 * and InvStdDev outputs, float32, shaped as x with the normalised axes 1), which its gradient rule
 * then reads instead of computing them again. Not by default in float32 and float64: the CPU
 * kernel's statistics come from E[x^2] - E[x]^2, less exact than the centred two-pass formula the
 * rule uses, and the reference training trajectories on the CPU are sensitive to that.
 */
export function layerNorm(
  x: Value,
  scale: Value,
  bias: Value | null,
  { axis = -1, epsilon = 1e-5, keepStatistics = x.dtype === 'float16' }: { axis?: number; epsilon?: number; keepStatistics?: boolean } = {},
): Value {
  floatOnly('LayerNormalization', x);
  const a = normAxis(axis, x.rank);
  const normShape = x.shape.slice(a);
  for (const p of bias ? [scale, bias] : [scale])
    if (shapeToString(p.shape) !== shapeToString(normShape)) fail('LayerNormalization', `scale/bias must be ${shapeToString(normShape)}`, x, p);
  sameDtype('LayerNormalization', x, scale, ...(bias ? [bias] : []));
  if (keepStatistics && x.dtype === 'float64') fail('LayerNormalization', 'float32 statistics of float64 x would lose precision', x);
  const stats = { dtype: 'float32' as const, shape: x.shape.map((d, i) => (i < a ? d : 1)) };
  const outputs = [{ dtype: x.dtype, shape: x.shape }, ...(keepStatistics ? [stats, stats] : [])];
  return x.graph.addNode('LayerNormalization', bias ? [x, scale, bias] : [x, scale], outputs, { axis: attr.int(a), epsilon: attr.float(epsilon) })[0];
}

/** InstanceNormalization: normalises each (n, c) over the spatial axes; scale and bias [C]. */
export function instanceNorm(x: Value, scale: Value, bias: Value, epsilon = 1e-5): Value {
  floatOnly('InstanceNormalization', x);
  sameDtype('InstanceNormalization', x, scale, bias);
  if (x.rank < 3) fail('InstanceNormalization', 'input must have rank >= 3', x);
  const c = x.shape[1];
  if (scale.shape.join() !== `${c}` || bias.shape.join() !== `${c}`) fail('InstanceNormalization', `scale and bias must be [${c}]`, scale, bias);
  return node('InstanceNormalization', [x, scale, bias], x.dtype, x.shape, { epsilon: attr.float(epsilon) });
}

// ---------------------------------------------------------------- reductions

function reduce(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
  const norm = [...new Set(axes.map((a) => normAxis(a, x.rank, `${op} axis`)))].sort((p, q) => p - q);
  if (norm.length === 0) return x;
  const shape = keepdims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
  return node(op, [x, int64s(x, norm)], x.dtype, shape, { keepdims: attr.int(+keepdims) });
}
export const reduceSum = (x: Value, axes: readonly number[], keepdims = true): Value => reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Value, axes: readonly number[], keepdims = true): Value => reduce('ReduceMean', x, axes, keepdims);
export const reduceMax = (x: Value, axes: readonly number[], keepdims = true): Value => reduce('ReduceMax', x, axes, keepdims);
/** Sum of every element, as a scalar of shape []. */
export const sumAll = (x: Value): Value => reduceSum(x, x.shape.map((_, i) => i), false);
export const meanAll = (x: Value): Value => reduceMean(x, x.shape.map((_, i) => i), false);

// ---------------------------------------------------------------- shape ops

/** Reshape to a static shape; one -1 is resolved from the element count. */
export function reshape(x: Value, shape: readonly number[]): Value {
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const resolved = shape.map((d) => (d === -1 ? numel(x.shape) / known : d));
  if (shape.filter((d) => d === -1).length > 1 || numel(resolved) !== numel(x.shape) || !resolved.every(Number.isInteger))
    fail('Reshape', `cannot reshape to [${shape.join(',')}]`, x);
  // A reshape of a reshape reads the first one's input, and the same reshape of a value is built once.
  const source = x.producer?.op === 'Reshape' ? x.producer.inputs[0]! : x;
  if (resolved.length === source.rank && resolved.every((d, i) => d === source.shape[i])) return source;
  return builtOnce(source, `Reshape:${resolved.join(',')}`, () => node('Reshape', [source, int64s(source, resolved)], x.dtype, resolved));
}

export function transpose(x: Value, perm: readonly number[]): Value {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i))
    fail('Transpose', `perm [${perm.join(',')}] is not a permutation of the axes`, x);
  if (perm.every((p, i) => p === i)) return x;
  // A transpose of a transpose is one transpose of the first one's input (or none).
  const inner = x.producer?.op === 'Transpose' ? x.producer : undefined;
  if (inner) {
    const innerPerm = (inner.attrs.perm as { value: readonly number[] }).value;
    return transpose(inner.inputs[0]!, perm.map((p) => innerPerm[p]));
  }
  return node('Transpose', [x], x.dtype, perm.map((p) => x.shape[p]), { perm: attr.ints(perm) });
}

export function concat(values: readonly Value[], axis: number): Value {
  if (values.length === 0) throw new GraphBuildError('Concat: no inputs');
  const t = sameDtype('Concat', ...values);
  const a = normAxis(axis, values[0].rank);
  const shape = [...values[0].shape];
  for (const v of values.slice(1)) {
    if (v.rank !== shape.length || v.shape.some((d, i) => i !== a && d !== shape[i]))
      fail('Concat', `shapes differ off axis ${a}`, ...values);
    shape[a] += v.shape[a];
  }
  if (values.length === 1) return values[0];
  return node('Concat', [...values], t, shape, { axis: attr.int(a) });
}

export function split(x: Value, sizes: readonly number[], axis: number): Value[] {
  const a = normAxis(axis, x.rank);
  if (sizes.reduce((p, q) => p + q, 0) !== x.shape[a]) fail('Split', `sizes [${sizes.join(',')}] do not sum to axis ${a}`, x);
  return x.graph.addNode(
    'Split',
    [x, int64s(x, sizes)],
    sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === a ? s : d)) })),
    { axis: attr.int(a) },
  );
}

/** Static slice with positive steps: x[starts:ends:steps] on the given axes (ends clamp). */
export function slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
  const st = steps ?? axes.map(() => 1);
  const shape = [...x.shape];
  const normAxes = axes.map((ax) => normAxis(ax, x.rank));
  normAxes.forEach((ax, i) => {
    const d = x.shape[ax];
    const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    if (st[i] <= 0) fail('Slice', 'only positive steps are supported', x);
    shape[ax] = Math.max(0, Math.ceil((clamp(ends[i]) - clamp(starts[i])) / st[i]));
  });
  return node('Slice', [x, int64s(x, starts), int64s(x, ends), int64s(x, normAxes), int64s(x, st)], x.dtype, shape);
}

/** Nearest-neighbour upsampling by integer factors on the spatial axes (torch's F.interpolate nearest). */
export function resizeNearest(x: Value, scales: readonly number[]): Value {
  if (scales.length !== x.rank - 2 || !scales.every(Number.isInteger)) fail('Resize', 'integer scales per spatial axis expected', x);
  const all = [1, 1, ...scales];
  const g = x.graph;
  return node('Resize', [x, null, g.constant(all, 'float32', [all.length])], x.dtype, x.shape.map((d, i) => d * all[i]), {
    mode: attr.string('nearest'),
    coordinate_transformation_mode: attr.string('asymmetric'),
    nearest_mode: attr.string('floor'),
  });
}

/** Gather along `axis` with int64/int32 indices (embedding lookup). */
export function gather(data: Value, indices: Value, axis = 0): Value {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') fail('Gather', 'indices must be int32 or int64', indices);
  const a = normAxis(axis, data.rank);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return node('Gather', [data, indices], data.dtype, shape, { axis: attr.int(a) });
}

export function expand(x: Value, shape: readonly number[]): Value {
  const out = broadcastShapes(x.shape, shape);
  if (!out) fail('Expand', `cannot expand to [${shape.join(',')}]`, x);
  if (out.length === x.rank && out.every((d, i) => d === x.shape[i])) return x;
  return node('Expand', [x, int64s(x, out)], x.dtype, out);
}

export const unsqueeze = (x: Value, axis: number): Value => {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  return reshape(x, [...x.shape.slice(0, a), 1, ...x.shape.slice(a)]);
};

/**
 * Constant padding: pads = [begin_0, ..., begin_{r-1}, end_0, ..., end_{r-1}], all >= 0, filled
 * with `value` (the gradient of Slice places its incoming gradient into zeros this way).
 */
export function pad(x: Value, pads: readonly number[], value = 0): Value {
  if (pads.length !== 2 * x.rank || pads.some((p) => p < 0 || !Number.isInteger(p)))
    fail('Pad', `pads [${pads.join(',')}] must be ${2 * x.rank} non-negative integers`, x);
  if (pads.every((p) => p === 0)) return x;
  const shape = x.shape.map((d, i) => d + pads[i] + pads[i + x.rank]);
  return node('Pad', [x, int64s(x, pads), scalarLike(x, value)], x.dtype, shape, { mode: attr.string('constant') });
}

// ---------------------------------------------------------------- com.microsoft

/**
 * Fused multi-head attention (com.microsoft MultiHeadAttention): q [B, Lq, H*D], k and v [B, Lk, H*D]
 * -> [B, Lq, H*D], softmax(q k^T * scale) v per head. CUDA and WebGPU run it as one kernel.
 */
export function multiHeadAttention(q: Value, k: Value, v: Value, numHeads: number, scale?: number): Value {
  const t = sameDtype('MultiHeadAttention', q, k, v);
  if (q.rank !== 3 || k.rank !== 3 || v.rank !== 3) fail('MultiHeadAttention', 'q, k, v must be [B, L, H*D]', q, k, v);
  if (q.shape[2] % numHeads !== 0 || k.shape[2] !== q.shape[2] || k.shape[1] !== v.shape[1] || q.shape[0] !== k.shape[0])
    fail('MultiHeadAttention', `shapes do not fit ${numHeads} heads`, q, k, v);
  const attrs: Attrs = { num_heads: attr.int(numHeads) };
  if (scale !== undefined) attrs.scale = attr.float(scale);
  return node('MultiHeadAttention', [q, k, v], t, [q.shape[0], q.shape[1], v.shape[2]], attrs, 'com.microsoft');
}
