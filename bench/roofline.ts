// A roofline estimate of the training step's GPU time per op type (and, for the backward, per
// forward op it differentiates): each node takes max(FLOPs / 500 TFLOP/s, bytes / 2.8 TB/s) + 4 us,
// its bytes being its inputs and outputs (weights counted only for matmuls and convolutions).
// An estimate for deciding where to look, not a measurement.
//   npx tsx bench/roofline.ts sd15|sdxl BATCH [ckpt]
import { numel } from '../src-main/engine/graph/shape';
import { liveNodes } from '../src-main/engine/graph/onnx-model';
import { BYTES_PER_ELEMENT } from '../src-main/engine/graph/dtype';
import { nodeFlops as flops } from '../src-main/engine/graph/flops';
import { ALIASING_OPS as ALIAS } from '../src-main/engine/graph/liveness';
import type { Value } from '../src-main/engine/graph/graph';
import { realSizeStepGraph } from './real-size-step';
const step = realSizeStepGraph(process.argv[2], Number(process.argv[3]), { gradientCheckpointing: process.argv[4] === 'ckpt' });
const bytes = (v: Value | null): number => (v ? numel(v.shape) * BYTES_PER_ELEMENT[v.dtype] : 0);
const cat = new Map<string, { n: number; f: number; b: number; t: number }>();
let total = 0;
for (const n of liveNodes(step.graph)) {
  if (ALIAS.has(n.op)) continue;
  const f = flops(n);
  const isInit = (v: Value | null) => v && !v.producer && step.graph.isInitializer(v);
  const b = n.inputs.reduce((s, v) => s + (isInit(v) && n.op !== 'Conv' && n.op !== 'Gemm' && n.op !== 'ConvTranspose' && n.op !== 'MatMul' ? 0 : bytes(v)), 0) + n.outputs.reduce((s, v) => s + bytes(v), 0);
  const t = Math.max(f / 500e12, b / 2.8e12) + 4e-6;
  let k = n.op;
  if ((n.op === 'MatMul' || n.op === 'Softmax' || n.op === 'Mul' || n.op === 'Transpose') && n.outputs[0].shape.length === 4 && n.outputs[0].shape[2] === n.outputs[0].shape[3] && n.outputs[0].shape[2] >= 1024) k = 'attnLxL:' + n.op;
  if (n.name.startsWith('grad')) k = 'bw:' + k;
  const e = cat.get(k) ?? { n: 0, f: 0, b: 0, t: 0 };
  e.n++; e.f += f; e.b += b; e.t += t; cat.set(k, e); total += t;
}
console.log('total est ms', (total * 1000).toFixed(0));
for (const [k, e] of [...cat].sort((a, b) => b[1].t - a[1].t).slice(0, 30)) console.log(k.padEnd(28), String(e.n).padStart(5), (e.f / 1e12).toFixed(2).padStart(7), 'TF', (e.b / 1e9).toFixed(1).padStart(7), 'GB', (e.t * 1000).toFixed(1).padStart(7), 'ms');
console.log('--- backward bytes by forward op');
const byFwd = new Map<string, { n: number; b: number; t: number }>();
for (const n of liveNodes(step.graph)) {
  if (!n.name.startsWith('grad') || ALIAS.has(n.op)) continue;
  const parts = n.name.split('/');
  const fwd = (parts.slice(0, -1).reverse().find((p) => /^[A-Za-z.:]+_?\d*$/.test(p) && /[A-Z]/.test(p[0])) ?? '?').replace(/_\d+$/, '');
  const b = n.inputs.reduce((s, v) => s + bytes(v), 0) + n.outputs.reduce((s, v) => s + bytes(v), 0);
  const t = Math.max(flops(n) / 500e12, b / 2.8e12) + 4e-6;
  const e = byFwd.get(fwd) ?? { n: 0, b: 0, t: 0 }; e.n++; e.b += b; e.t += t; byFwd.set(fwd, e);
}
for (const [k, e] of [...byFwd].sort((a, b) => b[1].t - a[1].t).slice(0, 20)) console.log(k.padEnd(28), String(e.n).padStart(5), (e.b / 1e9).toFixed(1).padStart(7), 'GB', (e.t * 1000).toFixed(1).padStart(7), 'ms');
