// The layers the Stable Diffusion models are made of, as compositions of graph ops. Weight names
// and layouts are PyTorch's (Linear weight [out, in], Conv2d weight [out, in/groups, kh, kw]).
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import type { Params } from './params';

/** torch.nn.Linear: x [..., in] -> [..., out]. */
export function linear(p: Params, name: string, x: Value, outFeatures: number, { bias = true } = {}): Value {
  const m = p.child(name);
  const inFeatures = x.shape[x.rank - 1];
  const w = m.get('weight', [outFeatures, inFeatures]); // [out, in]
  const b = bias ? m.get('bias', [outFeatures]) : null; // [out]
  const lead = x.shape.slice(0, -1);
  const x2 = op.reshape(x, [-1, inFeatures]); // [rows, in]
  const y2 = op.gemm(x2, w, b, { transB: true }); // [rows, out]
  const y = op.reshape(y2, [...lead, outFeatures]); // [..., out]
  return p.layer({ kind: 'linear', module: m.prefix, input: x, output: y, weightShape: w.shape });
}

/** torch.nn.Conv2d with symmetric padding: x [N, C, H, W] -> [N, out, H', W']. */
export function conv2d(
  p: Params,
  name: string,
  x: Value,
  outChannels: number,
  kernel: number,
  { stride = 1, padding = 0, bias = true } = {},
): Value {
  const m = p.child(name);
  const inChannels = x.shape[1];
  const w = m.get('weight', [outChannels, inChannels, kernel, kernel]); // [out, in, k, k]
  const b = bias ? m.get('bias', [outChannels]) : null; // [out]
  const strides = [stride, stride];
  const pads = [padding, padding, padding, padding];
  const y = op.conv(x, w, b, { strides, pads }); // [N, out, H', W']
  return p.layer({ kind: 'conv', module: m.prefix, input: x, output: y, weightShape: w.shape, conv: { strides, pads } });
}

/**
 * torch.nn.GroupNorm on x [N, C, ...], normalised over x viewed as [N, groups, rest] because ONNX
 * GroupNormalization runs on neither the CUDA nor the WebGPU provider: in float16 builds by a
 * LayerNormalization over the last axis, which keeps its statistics for the float16 backward
 * (autodiff/rules.ts); else by InstanceNormalization, whose CPU kernel computes the variance from
 * the centred values (the CPU LayerNormalization's E[x^2] - E[x]^2 moves the float32 references).
 */
export function groupNorm(p: Params, name: string, x: Value, groups: number, eps: number): Value {
  const m = p.child(name);
  const [n, c] = x.shape;
  const gamma = m.get('weight', [c]); // [C]
  const beta = m.get('bias', [c]); // [C]
  const g = x.graph;
  const grouped = op.reshape(x, [n, groups, -1]); // [N, G, C/G * spatial]
  const rest = grouped.shape[2];
  const normedGroups =
    x.dtype === 'float16'
      ? op.layerNorm(grouped, op.ones(g, x.dtype, [rest]), null, { axis: 2, epsilon: eps }) // [N, G, rest]
      : op.instanceNorm(grouped, g.constant(new Array(groups).fill(1), x.dtype, [groups]), g.constant(new Array(groups).fill(0), x.dtype, [groups]), eps); // [N, G, rest]
  const normed = op.reshape(normedGroups, x.shape); // [N, C, ...]
  const affine = [c, ...x.shape.slice(2).map(() => 1)];
  return op.add(op.mul(normed, op.reshape(gamma, affine)), op.reshape(beta, affine)); // [N, C, ...]
}

/** torch.nn.LayerNorm over the last axis: x [..., C]. */
export function layerNorm(p: Params, name: string, x: Value, eps: number): Value {
  const m = p.child(name);
  const c = x.shape[x.rank - 1];
  return op.layerNorm(x, m.get('weight', [c]), m.get('bias', [c]), { axis: -1, epsilon: eps }); // [..., C]
}

/**
 * Scaled dot-product attention over heads: q [B, Lq, H*D], k and v [B, Lk, H*D] -> [B, Lq, H*D].
 * `upcast` computes scores and softmax in float32 (SD 2.x's upcast_attention). `mask` is added to
 * the scaled scores (large negative = masked; broadcasts to [B, H, Lq, Lk], e.g. CLIP's causal
 * [1, 1, L, L]); a masked attention always takes the composite path.
 */
export function attention(
  p: Params,
  q: Value,
  k: Value,
  v: Value,
  heads: number,
  { upcast = false, mask }: { upcast?: boolean; mask?: Value } = {},
): Value {
  const [b, lq, inner] = q.shape;
  const lk = k.shape[1];
  const d = inner / heads;
  const scale = 1 / Math.sqrt(d);
  if ((p.options.attention ?? 'composite') === 'fused' && !upcast && !mask) return op.multiHeadAttention(q, k, v, heads, scale);
  const split = (x: Value, l: number): Value => op.transpose(op.reshape(x, [b, l, heads, d]), [0, 2, 1, 3]); // [B, H, L, D]
  const qh = split(q, lq); // [B, H, Lq, D]
  const kt = op.transpose(op.reshape(k, [b, lk, heads, d]), [0, 2, 3, 1]); // [B, H, D, Lk]
  const vh = split(v, lk); // [B, H, Lk, D]
  const dtype = q.dtype;
  const up = (x: Value): Value => (upcast ? op.cast(x, 'float32') : x);
  const scaled = op.mul(op.matmul(up(qh), up(kt)), scale); // [B, H, Lq, Lk]
  const scores = mask ? op.add(scaled, op.cast(mask, scaled.dtype)) : scaled; // [B, H, Lq, Lk]
  const probs = op.cast(op.softmax(scores, -1), dtype); // [B, H, Lq, Lk]
  const out = op.matmul(probs, vh); // [B, H, Lq, D]
  return op.reshape(op.transpose(out, [0, 2, 1, 3]), [b, lq, inner]); // [B, Lq, H*D]
}
