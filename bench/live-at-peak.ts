// What is alive at the training step's peak (graph/liveness.ts, onnxruntime's node order): the
// live bytes by producing op and by name, and the largest tensors with their readers. No weights,
// no session: it builds the real-size float16 step graph only.
//   npx tsx bench/live-at-peak.ts sd15|sdxl BATCH
import { livePeak, onnxruntimeOrder } from '../src-main/engine/graph/liveness';
import { BYTES_PER_ELEMENT } from '../src-main/engine/graph/dtype';
import type { Value } from '../src-main/engine/graph/graph';
import { numel } from '../src-main/engine/graph/shape';
import { realSizeStepGraph } from './real-size-step';
const step = realSizeStepGraph(process.argv[2], Number(process.argv[3]));
const graph = step.graph;
const order = onnxruntimeOrder(graph);
const bytes = (v: Value): number => numel(v.shape) * BYTES_PER_ELEMENT[v.dtype];
const { bytes: peak, at: peakAt, values: snapshot } = livePeak(graph, order);
const buffer = (v: Value): Value => (v.producer?.op === 'Reshape' ? buffer(v.producer.inputs[0]!) : v); // the owning buffer
console.log('peak GiB', (peak / 2 ** 30).toFixed(3), 'at', peakAt, order[peakAt].name, order[peakAt].op);
const byOp = new Map<string, number>();
for (const v of snapshot) { const k = v.producer!.op; byOp.set(k, (byOp.get(k) ?? 0) + bytes(v)); }
console.log([...byOp].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, b]) => `${k} ${(b / 2 ** 20).toFixed(0)}MiB`).join('\n'));
const byName = new Map<string, number>();
for (const v of snapshot) { const k = v.name.replace(/\d+/g, '#').split('/').slice(-2).join('/'); byName.set(k, (byName.get(k) ?? 0) + bytes(v)); }
console.log('---');
console.log([...byName].sort((a, b) => b[1] - a[1]).slice(0, 30).map(([k, b]) => `${k} ${(b / 2 ** 20).toFixed(0)}MiB`).join('\n'));
console.log('--- top live values');
const consumers = new Map<Value, string[]>();
for (const n of order) for (const v of n.inputs) if (v) { const l = consumers.get(buffer(v)) ?? []; l.push(n.op + (n.name.startsWith('grad') ? '(bw)' : '')); consumers.set(buffer(v), l); }
for (const v of snapshot.sort((a, b) => bytes(b) - bytes(a)).slice(0, 40)) {
  const p = v.producer!;
  console.log(`${(bytes(v) / 2 ** 20).toFixed(0)}MiB ${v.dtype} [${v.shape}] ${p.op}(${p.inputs.map((x) => x?.producer?.op ?? 'in').join(',')}) ${v.name.slice(0, 70)} -> ${[...new Set(consumers.get(v))].join(',')}`);
}
