// Two blocks of the diffusion models end to end against finite differences (fd-harness.ts): an
// attention block (q/k/v/out projections, multi-head reshapes, softmax attention, residual) and a
// conv residual block (group norm via InstanceNormalization on a reshaped tensor, silu, conv 3x3,
// skip). The attention block runs in float64 with the MatMul/Softmax composite and in float32 with
// the fused com.microsoft MultiHeadAttention; the conv block runs in float32 because the CPU
// provider has no float64 Conv (small step, tolerances measured with margin).
import { describe, expect, it } from 'vitest';
import type { Value } from '../../../src-main/engine/graph/graph';
import { attentionBackward } from '../../../src-main/engine/autodiff/rules';
import * as op from '../../../src-main/engine/graph/ops';
import { checkGradients, type FdInput } from './fd-harness';

const [B, L, C, HEADS] = [2, 4, 8, 2];

/** torch.nn.Linear on [B, L, in]: x W^T + b through Gemm on the flattened rows. */
function linear(x: Value, w: Value, b: Value): Value {
  const [batch, len, inF] = x.shape;
  const rows = op.gemm(op.reshape(x, [-1, inF]), w, b, { transB: true }); // [B*L, out]
  return op.reshape(rows, [batch, len, w.shape[0]]); // [B, L, out]
}

/** softmax(q k^T / sqrt(d)) v with the heads split by reshape + transpose. */
function compositeAttention(q: Value, k: Value, v: Value): Value {
  const d = C / HEADS;
  const heads = (t: Value): Value => op.transpose(op.reshape(t, [B, L, HEADS, d]), [0, 2, 1, 3]); // [B, H, L, d]
  const scores = op.mul(op.matmul(heads(q), op.transpose(op.reshape(k, [B, L, HEADS, d]), [0, 2, 3, 1])), 1 / Math.sqrt(d)); // [B, H, L, L]
  const out = op.matmul(op.softmax(scores, -1), heads(v)); // [B, H, L, d]
  return op.reshape(op.transpose(out, [0, 2, 1, 3]), [B, L, C]); // [B, L, C]
}

const attentionInputs: FdInput[] = [
  { name: 'x', shape: [B, L, C] },
  { name: 'ln_scale', shape: [C], values: (rng) => 0.5 + rng() },
  { name: 'ln_bias', shape: [C] },
  ...['q', 'k', 'v', 'out'].flatMap((p): FdInput[] => [
    { name: `w_${p}`, shape: [C, C], values: (rng) => (2 * rng() - 1) / Math.sqrt(C) },
    { name: `b_${p}`, shape: [C], values: (rng) => 0.1 * (2 * rng() - 1) },
  ]),
];

/** Pre-norm self-attention block with a residual: x + out(attn(ln(x))). */
function attentionBlock(fused: boolean) {
  return (x: Value, lnScale: Value, lnBias: Value, wq: Value, bq: Value, wk: Value, bk: Value, wv: Value, bv: Value, wo: Value, bo: Value): Value => {
    const h = op.layerNorm(x, lnScale, lnBias, { epsilon: 1e-5 }); // [B, L, C]
    const [q, k, v] = [linear(h, wq, bq), linear(h, wk, bk), linear(h, wv, bv)]; // each [B, L, C]
    const attended = fused ? op.multiHeadAttention(q, k, v, HEADS) : compositeAttention(q, k, v); // [B, L, C]
    return op.add(x, linear(attended, wo, bo)); // [B, L, C]
  };
}

const residualInputs: FdInput[] = [
  { name: 'x', shape: [1, 4, 5, 5], values: (rng) => 2 * rng() - 0.5 },
  { name: 'gamma', shape: [4], values: (rng) => 0.5 + rng() },
  { name: 'beta', shape: [4] },
  { name: 'w', shape: [4, 4, 3, 3], values: (rng) => (2 * rng() - 1) / 6 },
  { name: 'b', shape: [4] },
];

/** x + conv3x3(silu(groupnorm(x))), group norm with 2 groups as layers.ts builds it. */
function residualBlock(x: Value, gamma: Value, beta: Value, w: Value, b: Value): Value {
  const [n, c] = x.shape;
  const groups = 2;
  const g = x.graph;
  const grouped = op.reshape(x, [n, groups, -1]); // [N, G, C/G * H * W]
  const ones = g.constant([1, 1], x.dtype, [groups]); // [G]
  const zeros = g.constant([0, 0], x.dtype, [groups]); // [G]
  const normed = op.reshape(op.instanceNorm(grouped, ones, zeros, 1e-5), x.shape); // [N, C, H, W]
  const affine = op.add(op.mul(normed, op.reshape(gamma, [c, 1, 1])), op.reshape(beta, [c, 1, 1])); // [N, C, H, W]
  const h = op.conv(op.silu(affine), w, b, { pads: [1, 1, 1, 1] }); // [N, C, H, W]
  return op.add(x, h); // [N, C, H, W]
}

describe('composite blocks against finite differences', () => {
  it('attention block, MatMul/Softmax attention, float64', async () => {
    const result = await checkGradients({ dtype: 'float64', inputs: attentionInputs, build: attentionBlock(false) as never, coords: 12 });
    expect(result.mismatches).toEqual([]);
    expect(result.checked).toBeGreaterThan(100);
  });

  it('attention block, fused MultiHeadAttention, float32', async () => {
    const result = await checkGradients({ dtype: 'float32', inputs: attentionInputs, build: attentionBlock(true) as never, coords: 12, step: 4e-3, rtol: 5e-3, atol: 5e-4 });
    expect(result.mismatches).toEqual([]);
    expect(result.checked).toBeGreaterThan(100);
  });

  it('attention block, fused MultiHeadAttention, backward recomputed one head group at a time, float32', async () => {
    const saved = attentionBackward.chunkBytes;
    attentionBackward.chunkBytes = 1; // every head in its own group
    try {
      const result = await checkGradients({ dtype: 'float32', inputs: attentionInputs, build: attentionBlock(true) as never, coords: 12, step: 4e-3, rtol: 5e-3, atol: 5e-4 });
      expect(result.mismatches).toEqual([]);
      expect(result.checked).toBeGreaterThan(100);
    } finally {
      attentionBackward.chunkBytes = saved;
    }
  });

  it('conv residual block (group norm via InstanceNormalization, silu, conv 3x3, skip), float32', async () => {
    const result = await checkGradients({ dtype: 'float32', inputs: residualInputs, build: residualBlock as never, step: 4e-3, rtol: 5e-3, atol: 5e-4 });
    expect(result.mismatches).toEqual([]);
    expect(result.checked).toBe(52); // 20 + 4 + 4 + 20 + 4 coordinates
  });
});
