// The one table of gradient rules: for each op type (key `op`, or `domain:op` outside the default
// domain) a function from the output gradients to the input gradients, formula in its comment.
// A rule is asked only for the inputs in `needs`; it builds its ops in the dtype of the values it
// differentiates (float16 forward -> float16 backward), except the norms, which recompute their
// statistics in float32 as onnxruntime's forward does. Composite ops (silu, gelu, ...) have no entry:
// their primitives do.
import { BYTES_PER_ELEMENT, isFloat, type DType } from '../graph/dtype';
import type { Graph, Node, Value } from '../graph/graph';
import * as op from '../graph/ops';
import { zeroAfter } from './recompute';
import { broadcastAxes, normAxis, numel, sameShape, type Shape } from '../graph/shape';

/** Attention backward recomputes its [Lq, Lk] matrices in head groups of about `chunkBytes` each (unless gradients() is given another size). */
export const attentionBackward = { chunkBytes: 256 * 2 ** 20 };

export interface GradContext {
  readonly graph: Graph;
  readonly node: Node;
  /** The forward node's inputs (null = omitted optional input) and outputs. */
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  /** d loss / d output[i]; null where that output does not reach the loss. */
  readonly grads: readonly (Value | null)[];
  /** d loss / d output[0], for the single-output ops. */
  readonly dy: Value;
  /** Which inputs need a gradient (float values on a path from `wrt`). */
  readonly needs: readonly boolean[];
  /** The caller's choices (gradients.ts GradientOptions). */
  readonly options?: { readonly attentionChunkBytes?: number };
}

/** Input gradients by input index; entries for inputs not in `needs` are ignored (may be null). */
export type GradRule = (ctx: GradContext) => readonly (Value | null | undefined)[];

// ---------------------------------------------------------------- helpers shared by the rules

/**
 * Undoes numpy broadcasting: sums `grad` over the axes along which a tensor of `shape` was
 * broadcast to grad's shape (graph/shape.ts broadcastAxes), then reshapes to `shape`.
 */
export function sumToShape(grad: Value, shape: Shape): Value {
  if (sameShape(grad.shape, shape)) return grad;
  const axes = broadcastAxes(shape, grad.shape);
  return op.reshape(op.reduceSum(grad, axes, true), shape); // shape
}

/** Zeros of `like`'s dtype and shape (one scalar constant expanded, never a big constant). */
export const zerosLike = (like: Value): Value => op.expand(op.scalarLike(like, 0), like.shape);

const input = (ctx: GradContext, i: number): Value => {
  const v = ctx.inputs[i];
  if (!v) throw new Error(`autodiff/rules.ts: ${ctx.node.op} node "${ctx.node.name}" has no input ${i}`);
  return v;
};

const intAttr = (node: Node, name: string, fallback: number): number => {
  const a = node.attrs[name];
  return a ? (a.value as number) : fallback;
};
const floatAttr = intAttr;
const intsAttr = (node: Node, name: string, fallback: readonly number[]): readonly number[] => {
  const a = node.attrs[name];
  return a ? (a.value as readonly number[]) : fallback;
};
const stringAttr = (node: Node, name: string, fallback: string): string => {
  const a = node.attrs[name];
  return a ? (a.value as string) : fallback;
};

function unsupported(node: Node, why: string): never {
  throw new Error(`autodiff/rules.ts: cannot differentiate ${node.op} node "${node.name}": ${why}`);
}

/** The numbers of an in-memory constant (axes, starts, scales ...) that a rule needs at build time. */
function constantNumbers(node: Node, v: Value | null, what: string): number[] {
  const init = v ? v.graph.initializers.get(v.name) : undefined;
  if (!v || !init || init.value !== v || init.data.kind !== 'bytes') unsupported(node, `its ${what} must be a constant`);
  const bytes = init.data.bytes.slice(); // aligned copy
  switch (v.dtype) {
    case 'int64':
      return Array.from(new BigInt64Array(bytes.buffer), Number);
    case 'int32':
      return Array.from(new Int32Array(bytes.buffer));
    case 'float32':
      return Array.from(new Float32Array(bytes.buffer));
    case 'float64':
      return Array.from(new Float64Array(bytes.buffer));
    default:
      unsupported(node, `its ${what} has dtype ${v.dtype}`);
  }
}

/** Swaps the last two axes. */
const transposeLast2 = (x: Value): Value => {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return op.transpose(x, perm);
};

/** d(a op b) for broadcasting binary ops: each partial computed only when needed, summed back to shape. */
function binaryGrads(ctx: GradContext, da: () => Value, db: () => Value): (Value | null)[] {
  const [a, b] = [input(ctx, 0), input(ctx, 1)];
  return [ctx.needs[0] ? sumToShape(da(), a.shape) : null, ctx.needs[1] ? sumToShape(db(), b.shape) : null];
}

/** Selects dy where `mask`, else 0; ties of Max/Min get half each (as torch does). */
function selectGrad(dy: Value, wins: Value, ties: Value): Value {
  const zero = op.scalarLike(dy, 0);
  return op.where(wins, dy, op.where(ties, op.mul(dy, 0.5), zero)); // dy's shape
}

/** Float math for norm statistics: float64 stays float64, anything narrower goes to float32. */
const statsDtype = (t: DType): DType => (t === 'float64' ? 'float64' : 'float32');

/**
 * Backward of x_hat = (x - mean) * rstd with y = x_hat * scale + bias, the statistics recomputed
 * from x over `axes` (nothing is kept from the forward). `scale` broadcasts against x.
 *   dbias  = sum(dy)                         over the non-normalised axes
 *   dscale = sum(dy * x_hat)                 over the non-normalised axes
 *   dx     = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),   g = dy * scale
 */
function normBackward(
  x: Value,
  dy: Value,
  scale: Value | null, // broadcastable to x, or null for scale 1
  axes: number[],
  epsilon: number,
  needX: boolean,
  saved?: { mean: Value; invStdDev: Value }, // the forward's statistics (reduced, keepdims), when it kept them
): { dx: Value | null; dyC: Value; xHat: Value } {
  const t = statsDtype(x.dtype);
  const xc = op.cast(x, t); // x's shape
  const dyC = op.cast(dy, t); // x's shape
  const mean = saved ? op.cast(saved.mean, t) : op.reduceMean(xc, axes); // reduced, keepdims
  const centered = op.sub(xc, mean); // x's shape
  const rstd = saved
    ? op.cast(saved.invStdDev, t)
    : op.reciprocal(op.sqrt(op.add(op.reduceMean(op.mul(centered, centered), axes), epsilon))); // reduced, keepdims
  const xHat = op.mul(centered, rstd); // x's shape
  if (!needX) return { dx: null, dyC, xHat };
  const g = scale ? op.mul(dyC, op.cast(scale, t)) : dyC; // x's shape
  const inner = op.add(op.reduceMean(g, axes), op.mul(xHat, op.reduceMean(op.mul(g, xHat), axes))); // x's shape
  const dx = op.cast(op.mul(rstd, op.sub(g, inner)), x.dtype); // x's shape
  return { dx, dyC, xHat };
}

/**
 * The input gradient of a float16 LayerNormalization that kept its statistics (float16 builds),
 * without any float32 copy of a [rows, C] tensor (normBackward makes seven):
 *   dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),  g = dy * scale
 * x_hat is a LayerNormalization of x with scale 1 and no bias (onnxruntime normalises in float32
 * and rounds once, so x - mean loses nothing to float16); the rest runs in float16, the two means
 * accumulating in float32 inside the reduction kernels. A third of normBackward's bytes.
 */
function layerNormInputGradHalf(x: Value, dy: Value, scale: Value, axis: number, epsilon: number, invStdDev: Value): Value {
  const axes = x.shape.map((_, i) => i).filter((i) => i >= axis);
  const xHat = op.layerNorm(x, op.ones(x.graph, x.dtype, x.shape.slice(axis)), null, { axis, epsilon, keepStatistics: false }); // x's shape
  const gScaled = op.mul(dy, scale); // x's shape
  const projection = op.mul(xHat, op.reduceMean(op.mul(gScaled, xHat), axes)); // x's shape
  const centered = op.sub(op.sub(gScaled, projection), op.reduceMean(gScaled, axes)); // x's shape
  return op.mul(centered, op.cast(invStdDev, x.dtype)); // x's shape
}

/**
 * The weight gradient of a (transposed) convolution as one grouped Conv that sums over the batch:
 *   result[gb, ca, k] = sum_n sum_o a_pad[n, g*Ca + ca, o*stride + k*dilation] * b[n, gb, o]
 * with g the group of output channel gb. `a` [N, G*Ca, ...A] is the correlated tensor (padded by
 * `pads`), `b` [N, G*Cb, ...O] the kernel-like one; returns [G*Cb, Ca, ...kernel]. The batch
 * becomes the channel axis: a -> [Ca, G*N, ...A], b -> [G*Cb, N, ...O], stride and dilation swap.
 */
function convWeightGrad(
  a: Value,
  b: Value,
  group: number,
  strides: readonly number[],
  dilations: readonly number[],
  pads: readonly number[],
  kernel: Shape,
): Value {
  const [n, ca] = [a.shape[0], a.shape[1] / group];
  const spatialA = a.shape.slice(2);
  const spatialAxes = spatialA.map((_, i) => i + 3);
  const aGrouped = op.reshape(a, [n, group, ca, ...spatialA]); // [N, G, Ca, ...A]
  const aT = op.reshape(op.transpose(aGrouped, [2, 1, 0, ...spatialAxes]), [ca, group * n, ...spatialA]); // [Ca, G*N, ...A]
  const bT = op.transpose(b, [1, 0, ...b.shape.slice(2).map((_, i) => i + 2)]); // [G*Cb, N, ...O]
  const full = op.conv(aT, bT, null, { strides: dilations, dilations: strides, pads, group }); // [Ca, G*Cb, ...K'], K' >= K
  const spatial = kernel.map((_, i) => i + 2);
  const cropped = full.shape.slice(2).every((d, i) => d === kernel[i])
    ? full
    : op.slice(full, kernel.map(() => 0), kernel, spatial); // [Ca, G*Cb, ...K]
  return op.transpose(cropped, [1, 0, ...spatial]); // [G*Cb, Ca, ...K]
}

interface ConvAttrs {
  strides: readonly number[];
  pads: readonly number[];
  dilations: readonly number[];
  group: number;
}

function convAttrs(node: Node, spatial: number): ConvAttrs {
  const autoPad = stringAttr(node, 'auto_pad', 'NOTSET');
  if (autoPad !== 'NOTSET') unsupported(node, `auto_pad ${autoPad} (explicit pads only)`);
  if (node.attrs.output_shape) unsupported(node, 'output_shape (use output_padding)');
  return {
    strides: intsAttr(node, 'strides', Array(spatial).fill(1)),
    pads: intsAttr(node, 'pads', Array(2 * spatial).fill(0)),
    dilations: intsAttr(node, 'dilations', Array(spatial).fill(1)),
    group: intAttr(node, 'group', 1),
  };
}

/** Sum over every axis but the channel axis 1: the gradient of a per-channel bias. */
const channelSum = (dy: Value): Value => op.reduceSum(dy, dy.shape.map((_, i) => i).filter((i) => i !== 1), false); // [C]

/** [B, L, H*D] -> [B, H, L, D] */
const splitHeads = (x: Value, heads: number): Value => {
  const [b, l, hd] = x.shape;
  return op.transpose(op.reshape(x, [b, l, heads, hd / heads]), [0, 2, 1, 3]);
};
/** [B, L, H*D] -> [B, H, D, L] */
const splitHeadsT = (x: Value, heads: number): Value => {
  const [b, l, hd] = x.shape;
  return op.transpose(op.reshape(x, [b, l, heads, hd / heads]), [0, 2, 3, 1]);
};
/** [B, H, D, L] -> [B, L, H*D] */
const mergeHeadsT = (x: Value): Value => {
  const [b, h, d, l] = x.shape;
  return op.reshape(op.transpose(x, [0, 3, 1, 2]), [b, l, h * d]);
};
/** [B, H, L, D] -> [B, L, H*D] */
const mergeHeads = (x: Value): Value => {
  const [b, h, l, d] = x.shape;
  return op.reshape(op.transpose(x, [0, 2, 1, 3]), [b, l, h * d]);
};

// ---------------------------------------------------------------- the table

export const gradientRules: Readonly<Record<string, GradRule>> = {
  // ------------------------------------------------ elementwise, broadcasting
  // y = a + b: da = dy, db = dy (each summed back to its shape)
  Add: (ctx) => binaryGrads(ctx, () => ctx.dy, () => ctx.dy),

  // y = a - b: da = dy, db = -dy
  Sub: (ctx) => binaryGrads(ctx, () => ctx.dy, () => op.neg(ctx.dy)),

  // y = a * b: da = dy * b, db = dy * a
  Mul: (ctx) => binaryGrads(ctx, () => op.mul(ctx.dy, input(ctx, 1)), () => op.mul(ctx.dy, input(ctx, 0))),

  // y = a / b: da = dy / b, db = -dy * a / b^2 = -(dy / b) * y
  Div: (ctx) => {
    let dyOverB: Value | undefined;
    const da = (): Value => (dyOverB ??= op.div(ctx.dy, input(ctx, 1)));
    return binaryGrads(ctx, da, () => op.neg(op.mul(da(), ctx.outputs[0])));
  },

  // y = a^b: da = dy * b * a^(b-1), db = dy * y * ln(a) (taken as 0 where a = 0, as torch does)
  Pow: (ctx) => {
    const [a, b] = [input(ctx, 0), input(ctx, 1)];
    const y = ctx.outputs[0];
    return binaryGrads(
      ctx,
      () => op.mul(ctx.dy, op.mul(b, op.pow(a, op.sub(b, 1)))),
      () => {
        const safeLog = op.where(op.equal(a, 0), op.scalarLike(a, 0), op.log(a)); // a's shape
        return op.mul(ctx.dy, op.mul(y, safeLog));
      },
    );
  },

  // y = max(a, b): da = dy where a > b, db = dy where b > a, ties split dy in halves
  Max: (ctx) => {
    const [a, b] = [input(ctx, 0), input(ctx, 1)];
    const ties = op.equal(a, b);
    return binaryGrads(ctx, () => selectGrad(ctx.dy, op.greater(a, b), ties), () => selectGrad(ctx.dy, op.less(a, b), ties));
  },

  // y = min(a, b): da = dy where a < b, db = dy where b < a, ties split dy in halves
  Min: (ctx) => {
    const [a, b] = [input(ctx, 0), input(ctx, 1)];
    const ties = op.equal(a, b);
    return binaryGrads(ctx, () => selectGrad(ctx.dy, op.less(a, b), ties), () => selectGrad(ctx.dy, op.greater(a, b), ties));
  },

  // y = where(c, a, b): dc none (bool), da = dy where c, db = dy where not c
  Where: (ctx) => {
    const [c, a, b] = [input(ctx, 0), input(ctx, 1), input(ctx, 2)];
    const zero = op.scalarLike(ctx.dy, 0);
    return [
      null,
      ctx.needs[1] ? sumToShape(op.where(c, ctx.dy, zero), a.shape) : null,
      ctx.needs[2] ? sumToShape(op.where(c, zero, ctx.dy), b.shape) : null,
    ];
  },

  // ------------------------------------------------ elementwise, unary
  // y = sqrt(x): dx = dy / (2 y)
  Sqrt: (ctx) => [op.div(op.mul(ctx.dy, 0.5), ctx.outputs[0])],

  // y = exp(x): dx = dy * y
  Exp: (ctx) => [op.mul(ctx.dy, ctx.outputs[0])],

  // y = ln(x): dx = dy / x
  Log: (ctx) => [op.div(ctx.dy, input(ctx, 0))],

  // y = -x: dx = -dy
  Neg: (ctx) => [op.neg(ctx.dy)],

  // y = 1 / x: dx = -dy * y^2
  Reciprocal: (ctx) => {
    const y = ctx.outputs[0];
    return [op.neg(op.mul(ctx.dy, op.mul(y, y)))];
  },

  // y = tanh(x): dx = dy * (1 - y^2)
  Tanh: (ctx) => {
    const y = ctx.outputs[0];
    return [op.mul(ctx.dy, op.sub(op.scalarLike(y, 1), op.mul(y, y)))];
  },

  // y = sigmoid(x): dx = dy * y * (1 - y)
  Sigmoid: (ctx) => {
    const y = ctx.outputs[0];
    return [op.mul(ctx.dy, op.mul(y, op.sub(op.scalarLike(y, 1), y)))];
  },

  // y = erf(x): dx = dy * 2/sqrt(pi) * exp(-x^2)
  Erf: (ctx) => {
    const x = input(ctx, 0);
    return [op.mul(ctx.dy, op.mul(op.exp(op.neg(op.mul(x, x))), 2 / Math.sqrt(Math.PI)))];
  },

  // y = x * sigmoid(a x) (com.microsoft QuickGelu; silu at a = 1): with s = sigmoid(a x),
  // dx = dy * s * (1 + a x (1 - s)); s is recomputed from x, so only x is kept for the backward
  'com.microsoft:QuickGelu': (ctx) => {
    const x = input(ctx, 0);
    const alpha = floatAttr(ctx.node, 'alpha', 1.702);
    const ax = alpha === 1 ? x : op.mul(x, alpha); // x's shape
    const s = op.sigmoid(ax); // x's shape
    return [op.mul(ctx.dy, op.mul(s, op.add(op.mul(ax, op.sub(op.scalarLike(s, 1), s)), 1)))];
  },

  // y = x Phi(x) (com.microsoft Gelu, exact): dx = dy * (Phi(x) + x phi(x)), with
  // Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), from x alone
  'com.microsoft:Gelu': (ctx) => {
    const x = input(ctx, 0);
    const cdf = op.mul(op.add(op.erf(op.mul(x, Math.SQRT1_2)), 1), 0.5); // x's shape
    const xPdf = op.mul(x, op.mul(op.exp(op.mul(op.mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI))); // x's shape
    return [op.mul(ctx.dy, op.add(cdf, xPdf))];
  },

  // y = |x|: dx = dy * sign(x) (0 at x = 0)
  Abs: (ctx) => [op.mul(ctx.dy, op.sign(input(ctx, 0)))],

  // y = sin(x): dx = dy * cos(x)
  Sin: (ctx) => [op.mul(ctx.dy, op.cos(input(ctx, 0)))],

  // y = cos(x): dx = -dy * sin(x)
  Cos: (ctx) => [op.neg(op.mul(ctx.dy, op.sin(input(ctx, 0))))],

  // y = sign(x): dx = 0 (almost everywhere), so nothing flows back
  Sign: () => [null],

  // y = max(x, 0): dx = dy where x > 0, else 0
  Relu: (ctx) => [op.where(op.greater(input(ctx, 0), 0), ctx.dy, op.scalarLike(ctx.dy, 0))],

  // y = x: dx = dy
  Identity: (ctx) => [ctx.dy],

  // y = cast(x): dx = cast(dy) back to x's dtype (ints never get here: they need no gradient)
  Cast: (ctx) => [op.cast(ctx.dy, input(ctx, 0).dtype)],

  // ------------------------------------------------ linear algebra
  // C = A B (batch axes broadcast): dA = dC B^T, dB = A^T dC, each summed back to its shape.
  // A [..., m, k] with B [k, n] is the common linear layer: dB = A2^T dC2 on rows flattened.
  MatMul: (ctx) => {
    const [a, b] = [input(ctx, 0), input(ctx, 1)];
    const dc = ctx.dy; // [...batch, m, n]
    const da = ctx.needs[0] ? sumToShape(op.matmul(dc, transposeLast2(b)), a.shape) : null; // A's shape
    let db: Value | null = null;
    if (ctx.needs[1]) {
      if (b.rank === 2 && a.rank > 2) {
        const [k, n] = b.shape;
        db = op.matmul(op.transpose(op.reshape(a, [-1, k]), [1, 0]), op.reshape(dc, [-1, n])); // [k, n]
      } else {
        db = sumToShape(op.matmul(transposeLast2(a), dc), b.shape); // B's shape
      }
    }
    return [da, db];
  },

  // Y = alpha A' B' + beta C, A' = transA ? A^T : A, B' likewise:
  //   dA' = alpha dY B'^T, dB' = alpha A'^T dY, dC = beta dY (summed back to C's shape)
  Gemm: (ctx) => {
    const { node, dy } = ctx;
    const [a, b] = [input(ctx, 0), input(ctx, 1)];
    const c = ctx.inputs[2] ?? null;
    const transA = intAttr(node, 'transA', 0) === 1;
    const transB = intAttr(node, 'transB', 0) === 1;
    const alpha = floatAttr(node, 'alpha', 1);
    const beta = floatAttr(node, 'beta', 1);
    const da = !ctx.needs[0]
      ? null
      : transA
        ? op.gemm(b, dy, null, { transA: transB, transB: true, alpha }) // [k, m] = alpha B' dY^T
        : op.gemm(dy, b, null, { transB: !transB, alpha }); // [m, k] = alpha dY B'^T
    const db = !ctx.needs[1]
      ? null
      : transB
        ? op.gemm(dy, a, null, { transA: true, transB: transA, alpha }) // [n, k] = alpha dY^T A'
        : op.gemm(a, dy, null, { transA: !transA, alpha }); // [k, n] = alpha A'^T dY
    const dc = c && ctx.needs[2] ? sumToShape(beta === 1 ? dy : op.mul(dy, beta), c.shape) : null;
    return [da, db, dc];
  },

  // y = conv(x, w) + bias, x [N, C, ...S], w [M, C/G, ...K]:
  //   dx = ConvTranspose(dy, w) with the same strides/pads/dilations/groups and output_padding
  //        = S - ((O-1) stride + (K-1) dilation + 1 - pads) (the rows a strided conv's floor dropped)
  //   dw[m, c, k] = sum_{n,o} x_pad[n, g*C/G + c, o*stride + k*dilation] dy[n, m, o]  (convWeightGrad)
  //   dbias = sum of dy over all axes but the channels
  Conv: (ctx) => {
    const [x, w] = [input(ctx, 0), input(ctx, 1)];
    const dy = ctx.dy; // [N, M, ...O]
    const spatial = x.rank - 2;
    const { strides, pads, dilations, group } = convAttrs(ctx.node, spatial);
    let dx: Value | null = null;
    if (ctx.needs[0]) {
      const outputPadding = x.shape.slice(2).map((s, i) => {
        const covered = strides[i] * (dy.shape[2 + i] - 1) + (w.shape[2 + i] - 1) * dilations[i] + 1 - pads[i] - pads[i + spatial];
        return s - covered;
      });
      dx = op.convTranspose(dy, w, null, { strides, pads, dilations, group, outputPadding }); // [N, C, ...S]
    }
    const dw = ctx.needs[1] ? convWeightGrad(x, dy, group, strides, dilations, pads, w.shape.slice(2)) : null; // [M, C/G, ...K]
    const db = ctx.needs[2] ? channelSum(dy) : null; // [M]
    return [dx, dw, db];
  },

  // y = convTranspose(x, w) + bias, x [N, C, ...h], w [C, M/G, ...K]:
  //   dx = Conv(dy, w) with the same strides/pads/dilations/groups (cropped to h if output_padding >= stride)
  //   dw[c, m, k] = sum_{n,i} dy_pad[n, g*M/G + m, i*stride + k*dilation] x[n, c, i]  (convWeightGrad)
  //   dbias = sum of dy over all axes but the channels
  ConvTranspose: (ctx) => {
    const [x, w] = [input(ctx, 0), input(ctx, 1)];
    const dy = ctx.dy; // [N, M, ...H]
    const { strides, pads, dilations, group } = convAttrs(ctx.node, x.rank - 2);
    let dx: Value | null = null;
    if (ctx.needs[0]) {
      const full = op.conv(dy, w, null, { strides, pads, dilations, group }); // [N, C, ...h'], h' >= h
      const axes = x.shape.slice(2).map((_, i) => i + 2);
      dx = sameShape(full.shape, x.shape) ? full : op.slice(full, axes.map(() => 0), x.shape.slice(2), axes); // [N, C, ...h]
    }
    const dw = ctx.needs[1] ? convWeightGrad(dy, x, group, strides, dilations, pads, w.shape.slice(2)) : null; // [C, M/G, ...K]
    const db = ctx.needs[2] ? channelSum(dy) : null; // [M]
    return [dx, dw, db];
  },

  // ------------------------------------------------ normalisation, softmax, attention
  // y = softmax(x) along axis: dx = y * (dy - sum(dy * y, axis))
  Softmax: (ctx) => {
    const y = ctx.outputs[0];
    const axis = normAxis(intAttr(ctx.node, 'axis', -1), y.rank);
    return [op.mul(y, op.sub(ctx.dy, op.reduceSum(op.mul(ctx.dy, y), [axis])))];
  },

  // y = x_hat * scale + bias, x_hat normalised over the axes from `axis` (normBackward's formulas),
  // with the statistics the forward output (Mean, InvStdDev), or else recomputed from x in float32
  // (float64 stays float64)
  LayerNormalization: (ctx) => {
    const { node, dy } = ctx;
    if (ctx.grads.slice(1).some((g) => g !== null)) unsupported(node, 'gradients through its Mean/InvStdDev outputs');
    const [x, scale] = [input(ctx, 0), input(ctx, 1)];
    const bias = ctx.inputs[2] ?? null;
    const axis = normAxis(intAttr(node, 'axis', -1), x.rank);
    const axes = x.shape.map((_, i) => i).filter((i) => i >= axis);
    const saved = ctx.outputs.length === 3 ? { mean: ctx.outputs[1], invStdDev: ctx.outputs[2] } : undefined;
    const epsilon = floatAttr(node, 'epsilon', 1e-5);
    const lead = x.shape.map((_, i) => i).filter((i) => i < axis);
    if (saved && x.dtype === 'float16' && ctx.needs[0] && !ctx.needs[1] && !(bias && ctx.needs[2])) {
      // frozen scale and bias (every LayerNorm LoRA training differentiates): the float16 path
      return [layerNormInputGradHalf(x, dy, scale, axis, epsilon, saved.invStdDev), null, null];
    }
    const { dx, dyC, xHat } = normBackward(x, dy, scale, axes, epsilon, ctx.needs[0], saved);
    const dscale = ctx.needs[1] ? op.cast(op.reduceSum(op.mul(dyC, xHat), lead, false), scale.dtype) : null; // scale's shape
    const dbias = bias && ctx.needs[2] ? op.cast(op.reduceSum(dyC, lead, false), bias.dtype) : null; // bias's shape
    return [dx, dscale, dbias];
  },

  // y[n, c] = x_hat[n, c] * scale[c] + bias[c], x_hat normalised over the spatial axes per (n, c)
  // (normBackward's formulas; group norm is this on x viewed as [N, G, rest])
  InstanceNormalization: (ctx) => {
    const { node, dy } = ctx;
    const [x, scale, bias] = [input(ctx, 0), input(ctx, 1), input(ctx, 2)];
    const axes = x.shape.map((_, i) => i).filter((i) => i >= 2);
    const scaleB = op.reshape(scale, [x.shape[1], ...axes.map(() => 1)]); // [C, 1, ...]
    const { dx, dyC, xHat } = normBackward(x, dy, scaleB, axes, floatAttr(node, 'epsilon', 1e-5), ctx.needs[0]);
    const dscale = ctx.needs[1] ? op.cast(channelSum(op.mul(dyC, xHat)), scale.dtype) : null; // [C]
    const dbias = ctx.needs[2] ? op.cast(channelSum(dyC), bias.dtype) : null; // [C]
    return [dx, dscale, dbias];
  },

  // O = softmax(Q K^T * scale) V per head; the probabilities P are recomputed from q and k here
  // (nothing kept from the fused forward but its output O):
  //   dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = scale dS K, dK = scale dS^T Q
  // Each pass over an [Lq, Lk] matrix costs far more than anything on [L, D], so the rule makes
  // as few as it can: write S, softmax (read, write P), dV (read P), dP - delta (write), dS (read
  // two, write), dQ and dK (read dS): ten, and no transpose of such a matrix (dV and dK come out
  // transposed, dV^T = dO^T P and dK^T = (scale Q)^T dS). Every operand is laid out for its
  // matmul once, from the [B, L, H*D] inputs, so a group of heads costs its seven [Lq, Lk] nodes.
  'com.microsoft:MultiHeadAttention': (ctx) => {
    const { node, dy } = ctx;
    if (ctx.inputs.length > 3 && ctx.inputs.slice(3).some((v) => v !== null)) unsupported(node, 'bias, masks or past key/value inputs');
    if (intAttr(node, 'unidirectional', 0) !== 0) unsupported(node, 'unidirectional (causal) attention');
    const [q, k, v] = [input(ctx, 0), input(ctx, 1), input(ctx, 2)];
    const heads = intAttr(node, 'num_heads', 0);
    const [batch, lq, inner] = q.shape;
    const lk = k.shape[1];
    const dv = v.shape[2] / heads;
    const scale = floatAttr(node, 'scale', 1 / Math.sqrt(inner / heads));
    const qScaled = op.mul(q, scale); // [B, Lq, H*D]: s = (scale q) k^T
    const qh = splitHeads(qScaled, heads); // [B, H, Lq, D]
    const qhT = splitHeadsT(qScaled, heads); // [B, H, D, Lq]
    const khT = splitHeadsT(k, heads); // [B, H, D, Lk]
    const khScaled = splitHeads(op.mul(k, scale), heads); // [B, H, Lk, D]: dq = dS (scale k)
    const dOutT = splitHeadsT(dy, heads); // [B, H, Dv, Lq]
    // rowsum(dP * P) = dO . O per query (the FlashAttention identity), from the forward's output:
    // no pass over the [Lq, Lk] matrices. dP - delta then comes out of one matmul of augmented
    // operands, [dO, -delta] [V, 1]^T, instead of a matmul and a subtraction. The extra columns
    // are padded to a multiple of 8 so the matmul keeps float16 tensor-core alignment.
    const extra = Math.ceil((dv + 1) / 8) * 8 - dv;
    let dOutAug: Value | undefined; // [B, H, Lq, Dv + extra]
    let vAugT: Value | undefined; // [B, H, Dv + extra, Lk]
    if (ctx.needs[0] || ctx.needs[1]) {
      const perHead = (x: Value): Value => op.reshape(x, [batch, lq, heads, dv]); // [B, Lq, H, Dv]
      const delta = op.transpose(op.reduceSum(op.mul(perHead(dy), perHead(ctx.outputs[0])), [-1]), [0, 2, 1, 3]); // [B, H, Lq, 1]
      dOutAug = op.concat([splitHeads(dy, heads), op.pad(op.neg(delta), [0, 0, 0, 0, 0, 0, 0, extra - 1])], -1); // [B, H, Lq, Dv + extra]
      const onesRow = q.graph.constant(Array.from({ length: extra }, (_, i) => (i === 0 ? 1 : 0)), q.dtype, [1, 1, extra, 1]); // [1, 1, extra, 1]
      vAugT = op.concat([splitHeadsT(v, heads), op.expand(onesRow, [batch, heads, extra, lk])], -2); // [B, H, Dv + extra, Lk]
    }
    // The [Lq, Lk] matrices are recomputed here, a group of heads at a time, so at most about
    // chunkBytes of them are alive at once.
    const matrixBytes = batch * lq * lk * BYTES_PER_ELEMENT[q.dtype];
    const chunkBytes = ctx.options?.attentionChunkBytes ?? attentionBackward.chunkBytes;
    const group = Math.max(1, Math.min(heads, Math.floor(chunkBytes / matrixBytes)));
    const sizes = Array.from({ length: Math.ceil(heads / group) }, (_, i) => Math.min(group, heads - i * group));
    const groups = (x: Value | undefined): Value[] => (!x ? [] : sizes.length === 1 ? [x] : op.split(x, sizes, 1)); // [B, h, ...] each
    const [qs, qTs, kTs, kScaledS, dOutTs, dOutAugs, vAugTs] = [qh, qhT, khT, khScaled, dOutT, dOutAug, vAugT].map(groups);
    const dqs: Value[] = [];
    const dkTs: Value[] = [];
    const dvTs: Value[] = [];
    sizes.forEach((_, i) => {
      // Each group's [Lq, Lk] matrices wait for the previous group's results: by data dependencies
      // alone onnxruntime computed every group's probabilities first, all alive at once.
      const previous = [dqs.at(-1), dkTs.at(-1), dvTs.at(-1)].filter((x): x is Value => x !== undefined);
      const zero = previous.length ? zeroAfter(previous, q.dtype) : undefined; // [1]
      const after = (x: Value): Value => (zero ? op.add(x, zero) : x); // x's shape
      const probs = op.softmax(op.matmul(after(qs[i]), kTs[i]), -1); // [B, h, Lq, Lk]
      if (ctx.needs[2]) dvTs.push(op.matmul(dOutTs[i], probs)); // [B, h, Dv, Lk]: dv^T = dO^T P
      if (!dOutAug) return;
      const dProbsCentered = op.matmul(after(dOutAugs[i]), vAugTs[i]); // [B, h, Lq, Lk]: dP - rowsum(dP P)
      const dScores = op.mul(probs, dProbsCentered); // [B, h, Lq, Lk]
      if (ctx.needs[0]) dqs.push(op.matmul(dScores, kScaledS[i])); // [B, h, Lq, D]: dq = dS (scale k)
      if (ctx.needs[1]) dkTs.push(op.matmul(qTs[i], dScores)); // [B, h, D, Lk]: dk^T = (scale q)^T dS
    });
    const joined = (parts: Value[]): Value => (parts.length === 1 ? parts[0] : op.concat(parts, 1)); // [B, H, ...]
    const merged = (parts: Value[]): Value | null => (parts.length ? mergeHeads(joined(parts)) : null); // [B, L, H*D]
    const mergedT = (parts: Value[]): Value | null => (parts.length ? mergeHeadsT(joined(parts)) : null); // [B, L, H*D]
    return [merged(dqs), mergedT(dkTs), mergedT(dvTs)];
  },

  // ------------------------------------------------ reductions
  // y = sum(x, axes): dx = dy broadcast back over the reduced axes
  ReduceSum: (ctx) => [reduceBackward(ctx, false)],

  // y = mean(x, axes): dx = dy / count broadcast back over the reduced axes
  ReduceMean: (ctx) => [reduceBackward(ctx, true)],

  // y = max(x, axes): dx = dy at the positions that hold the maximum, shared evenly between ties
  ReduceMax: (ctx) => {
    const x = input(ctx, 0);
    const keep = keptShape(ctx); // y with keepdims
    const axes = reduceAxes(ctx);
    const hits = op.cast(op.equal(x, op.reshape(ctx.outputs[0], keep)), x.dtype); // x's shape, 1 at the maxima
    const share = op.div(op.reshape(ctx.dy, keep), op.reduceSum(hits, axes)); // keepdims shape
    return [op.mul(hits, share)]; // x's shape
  },

  // ------------------------------------------------ shape ops
  // y = reshape(x): dx = reshape(dy, x.shape)
  Reshape: (ctx) => [op.reshape(ctx.dy, input(ctx, 0).shape)],

  // y = transpose(x, perm): dx = transpose(dy, inverse(perm))
  Transpose: (ctx) => {
    const x = input(ctx, 0);
    const perm = intsAttr(ctx.node, 'perm', x.shape.map((_, i) => x.rank - 1 - i));
    const inverse: number[] = [];
    perm.forEach((p, i) => (inverse[p] = i));
    return [op.transpose(ctx.dy, inverse)];
  },

  // y = concat(x_0, x_1, ...; axis): dx_i = the piece of dy that x_i filled (one Split)
  Concat: (ctx) => {
    const axis = normAxis(intAttr(ctx.node, 'axis', 0), ctx.dy.rank);
    const values = ctx.inputs.map((v, i) => input(ctx, i));
    return op.split(ctx.dy, values.map((v) => v.shape[axis]), axis);
  },

  // y_0, y_1, ... = split(x; axis): dx = concat(dy_0, dy_1, ...) with zeros for unused pieces
  Split: (ctx) => {
    const axis = normAxis(intAttr(ctx.node, 'axis', 0), input(ctx, 0).rank);
    const pieces = ctx.outputs.map((y, i) => ctx.grads[i] ?? zerosLike(y));
    return [op.concat(pieces, axis)];
  },

  // y = x[starts:ends:steps] on some axes: dx = zeros with dy placed at those positions
  // (zeros interleaved for steps > 1, then padded before and after)
  Slice: (ctx) => {
    const { node } = ctx;
    const x = input(ctx, 0);
    const starts = constantNumbers(node, ctx.inputs[1], 'starts');
    const axesIn = ctx.inputs[3] ? constantNumbers(node, ctx.inputs[3], 'axes') : starts.map((_, i) => i);
    const steps = ctx.inputs[4] ? constantNumbers(node, ctx.inputs[4], 'steps') : starts.map(() => 1);
    const axes = axesIn.map((a) => normAxis(a, x.rank));
    const pads = Array<number>(2 * x.rank).fill(0);
    let placed = ctx.dy; // y's shape
    axes.forEach((axis, i) => {
      const size = x.shape[axis];
      const step = steps[i];
      if (step <= 0) unsupported(node, 'negative steps');
      const start = Math.min(Math.max(starts[i] < 0 ? starts[i] + size : starts[i], 0), size);
      const count = placed.shape[axis];
      if (step > 1) {
        const spread = op.pad(op.unsqueeze(placed, axis + 1), padAt(placed.rank + 1, axis + 1, 0, step - 1)); // [..., count, step, ...]
        placed = op.reshape(spread, placed.shape.map((d, j) => (j === axis ? count * step : d))); // [..., count*step, ...]
      }
      let after = size - start - placed.shape[axis];
      if (after < 0) {
        placed = op.slice(placed, [0], [placed.shape[axis] + after], [axis]); // trailing zeros of the spread only
        after = 0;
      }
      pads[axis] = start;
      pads[axis + x.rank] = after;
    });
    return [op.pad(placed, pads)]; // x's shape
  },

  // y = nearest upsampling of x by integer scales (asymmetric, floor): each x element fills an
  // s_1 x s_2 block, so dx = the sum of dy over each block (reshape + ReduceSum)
  Resize: (ctx) => {
    const { node } = ctx;
    const x = input(ctx, 0);
    if (stringAttr(node, 'mode', 'nearest') !== 'nearest' || stringAttr(node, 'coordinate_transformation_mode', 'half_pixel') !== 'asymmetric' || stringAttr(node, 'nearest_mode', 'round_prefer_floor') !== 'floor')
      unsupported(node, 'only nearest / asymmetric / floor resizing (resizeNearest) has a rule');
    if (ctx.inputs[3]) unsupported(node, 'a sizes input (integer scales only)');
    const scales = constantNumbers(node, ctx.inputs[2] ?? null, 'scales');
    if (!scales.every((s) => Number.isInteger(s) && s >= 1)) unsupported(node, `scales [${scales.join(',')}] are not positive integers`);
    const blocks = x.shape.flatMap((d, i) => [d, scales[i]]); // [d0, s0, d1, s1, ...]
    const blockAxes = x.shape.map((_, i) => 2 * i + 1);
    return [op.reduceSum(op.reshape(ctx.dy, blocks), blockAxes, false)]; // x's shape
  },

  // y = pad(x) with a constant: dx = the slice of dy where x was placed
  Pad: (ctx) => {
    const { node } = ctx;
    const x = input(ctx, 0);
    if (stringAttr(node, 'mode', 'constant') !== 'constant') unsupported(node, 'only constant padding has a rule');
    const pads = constantNumbers(node, ctx.inputs[1], 'pads');
    const axes = ctx.inputs[3] ? constantNumbers(node, ctx.inputs[3], 'axes').map((a) => normAxis(a, x.rank)) : x.shape.map((_, i) => i);
    if (pads.some((p) => p < 0)) unsupported(node, 'negative pads');
    const begins = axes.map((_, i) => pads[i]);
    return [op.slice(ctx.dy, begins, axes.map((a, i) => begins[i] + x.shape[a]), axes)]; // x's shape
  },

  // y = expand(x, shape): dx = dy summed back to x's shape
  Expand: (ctx) => [sumToShape(ctx.dy, input(ctx, 0).shape)],

  // y = gather(data, indices, axis): data [P..., V, S...], y [P..., I..., S...]
  //   d data[p, v, s] = sum_i onehot(indices)[i, v] dy[p, i, s]  (one-hot MatMul; runs on every
  //   provider, unlike ScatterND with reduction add). Negative indices count from the end.
  Gather: (ctx) => {
    const data = input(ctx, 0);
    const indices = input(ctx, 1);
    const axis = normAxis(intAttr(ctx.node, 'axis', 0), data.rank);
    const vocab = data.shape[axis];
    const before = numel(data.shape.slice(0, axis));
    const after = numel(data.shape.slice(axis + 1));
    const count = numel(indices.shape);
    const flat = op.reshape(indices, [count, 1]); // [I, 1]
    const wrapped = op.where(op.less(flat, 0), op.add(flat, vocab), flat); // [I, 1]
    const range = ctx.graph.constant(Array.from({ length: vocab }, (_, i) => i), indices.dtype, [1, vocab]); // [1, V]
    const onehot = op.cast(op.equal(wrapped, range), ctx.dy.dtype); // [I, V]
    const dy = op.reshape(ctx.dy, [before, count, after]); // [P, I, S]
    const dData = op.matmul(op.transpose(onehot, [1, 0]), dy); // [P, V, S]
    return [op.reshape(dData, data.shape), null];
  },
};

/** The pads of Pad that add `begin` and `end` on one axis of a tensor of the given rank. */
function padAt(rank: number, axis: number, begin: number, end: number): number[] {
  const pads = Array<number>(2 * rank).fill(0);
  pads[axis] = begin;
  pads[axis + rank] = end;
  return pads;
}

/** The reduced axes of a Reduce* node (all axes when its axes input is omitted). */
function reduceAxes(ctx: GradContext): number[] {
  const x = input(ctx, 0);
  const axesInput = ctx.inputs[1] ?? null;
  if (!axesInput && intAttr(ctx.node, 'noop_with_empty_axes', 0) === 1) unsupported(ctx.node, 'noop_with_empty_axes');
  return axesInput ? constantNumbers(ctx.node, axesInput, 'axes').map((a) => normAxis(a, x.rank)) : x.shape.map((_, i) => i);
}

/** The shape of a Reduce* node's output with keepdims. */
function keptShape(ctx: GradContext): number[] {
  const axes = reduceAxes(ctx);
  return input(ctx, 0).shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** ReduceSum / ReduceMean backward: dy (keepdims or not) reshaped to keepdims and expanded to x. */
function reduceBackward(ctx: GradContext, mean: boolean): Value {
  const x = input(ctx, 0);
  const axes = reduceAxes(ctx);
  const kept = op.reshape(ctx.dy, keptShape(ctx)); // keepdims shape
  const count = axes.reduce((n, a) => n * x.shape[a], 1);
  const scaled = mean ? op.mul(kept, 1 / count) : kept;
  return op.expand(scaled, x.shape); // x's shape
}

/** The key of a node in the rule table. */
export const ruleKey = (node: Node): string => (node.domain ? `${node.domain}:${node.op}` : node.op);

export const isDifferentiable = (v: Value): boolean => isFloat(v.dtype);
