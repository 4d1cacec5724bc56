// The most bytes of intermediate tensors alive at once when a graph runs, each value freed after
// its last reader (graph inputs and outputs live throughout; initializers are not counted), for
// the node order onnxruntime uses by default: a depth-first walk back from the nodes whose outputs
// nobody reads, each node placed after its inputs' producers, the latest-built producer visited
// first (onnxruntime's GraphViewer with its NodeCompare). That order can keep more alive than the
// build order (a value read by two branches waits for the second), which is why the memory model
// (train/memory-estimate.ts) uses it.
import { BYTES_PER_ELEMENT } from './dtype';
import type { Graph, Node, Value } from './graph';
import { liveNodes } from './onnx-model';
import { numel } from './shape';

/** The nodes that reach an output, in onnxruntime's default execution order. */
export function onnxruntimeOrder(graph: Graph): Node[] {
  const nodes = liveNodes(graph);
  const index = new Map(nodes.map((n, i) => [n, i]));
  const read = new Set<Node>();
  for (const n of nodes) for (const v of n.inputs) if (v?.producer) read.add(v.producer);
  const visited = new Set<Node>();
  const order: Node[] = [];
  const stack: [Node, boolean][] = nodes.filter((n) => !read.has(n)).reverse().map((n) => [n, false]);
  while (stack.length > 0) {
    const [node, leaving] = stack.pop()!;
    if (leaving) {
      order.push(node);
      continue;
    }
    if (visited.has(node)) continue;
    visited.add(node);
    stack.push([node, true]);
    const producers = [...new Set(node.inputs.map((v) => v?.producer).filter((p): p is Node => !!p))].sort((a, b) => index.get(a)! - index.get(b)!);
    for (const p of producers) if (!visited.has(p)) stack.push([p, false]);
  }
  return order;
}

/** Ops whose output shares its input's buffer in onnxruntime (no copy, no allocation). */
export const ALIASING_OPS: ReadonlySet<string> = new Set(['Reshape', 'Identity', 'Squeeze', 'Unsqueeze', 'Flatten']);

export interface LivePeak {
  bytes: number;
  /** Index in `order` of the node at whose outputs the peak is reached. */
  at: number;
  /** The buffers alive then (graph inputs aside): each an owning value (a Reshape's output is its input's). */
  values: Value[];
}

/** The most intermediate bytes alive at once, and which buffers they are (bench/live-at-peak.ts lists them). */
export function livePeak(graph: Graph, order: readonly Node[] = onnxruntimeOrder(graph)): LivePeak {
  const bytes = (v: Value): number => numel(v.shape) * BYTES_PER_ELEMENT[v.dtype];
  // Each value's buffer: a Reshape's output is its input's buffer, which lives until the last
  // read of either (keeping a reshaped view alive keeps the original's bytes, and only once).
  const bufferOf = new Map<Value, Value>();
  const buffer = (v: Value): Value => bufferOf.get(v) ?? v;
  for (const n of order) if (ALIASING_OPS.has(n.op) && n.inputs[0]) bufferOf.set(n.outputs[0], buffer(n.inputs[0]));
  const lastRead = new Map<Value, number>();
  order.forEach((n, i) => n.inputs.forEach((v) => v?.producer && lastRead.set(buffer(v), i)));
  const kept = new Set<Value>(graph.outputs.map(buffer));
  const owned = (v: Value): boolean => !!v.producer && buffer(v) === v; // allocated by its producer
  const alive = new Set<Value>();
  let live = graph.inputs.reduce((sum, v) => sum + bytes(v), 0);
  const peak: LivePeak = { bytes: live, at: -1, values: [] };
  const free = (v: Value): void => {
    live -= bytes(v);
    alive.delete(v);
  };
  order.forEach((n, i) => {
    for (const out of n.outputs) {
      if (!owned(out)) continue;
      live += bytes(out);
      alive.add(out);
    }
    if (live > peak.bytes) Object.assign(peak, { bytes: live, at: i, values: [...alive] });
    for (const v of new Set(n.inputs.map((x) => x && buffer(x)))) if (v && owned(v) && lastRead.get(v) === i && !kept.has(v)) free(v);
    for (const out of n.outputs) if (owned(out) && !lastRead.has(out) && !kept.has(out)) free(out);
  });
  return peak;
}

export function peakLiveBytes(graph: Graph, order: readonly Node[] = onnxruntimeOrder(graph)): number {
  return livePeak(graph, order).bytes;
}
