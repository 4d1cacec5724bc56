// Gradient checkpointing. The nodes built inside recomputeInBackward(g, build) form a segment whose
// intermediate values the backward does not keep: when the reverse sweep (gradients.ts) reaches
// the segment, it appends a copy of the segment's nodes, computed again from the segment's inputs,
// and the gradient rules of the segment read that copy instead of the forward's values. The
// forward's intermediates then die right after the forward; only the segment inputs stay.
//
// onnxruntime orders nodes by data dependencies only, so a copy that depended only on the segment
// inputs could run early (right after the forward) and keep everything alive again. Each large
// input of the copy therefore goes through x + z, where z is a zero computed from the gradient
// that arrives at the segment: the copy cannot start before the backward gets there
// (zeroAfter). The same gate orders the attention backward's head groups (rules.ts) and the
// activations recomputed in the backward (activationRecomputer).
import type { DType } from '../graph/dtype';
import type { Graph, Node, Value } from '../graph/graph';
import * as op from '../graph/ops';
import { numel } from '../graph/shape';

export interface Segment {
  readonly nodes: readonly Node[];
  /** 'checkpoint': a block of gradient checkpointing; 'activation': a few cheap nodes with large outputs, recomputed always. */
  readonly purpose: SegmentPurpose;
}

export type SegmentPurpose = 'checkpoint' | 'activation';

const segments = new WeakMap<Node, Segment>();

/** Inputs smaller than this are not gated (a LoRA view or a time embedding may be computed early). */
const GATE_MIN_ELEMENTS = 1 << 16;

/**
 * Builds `build`'s nodes as one recomputed segment (a ResNet block, a transformer block). Nested
 * calls make the inner nodes their own segment.
 */
export function recomputeInBackward<T>(g: Graph, build: () => T, purpose: SegmentPurpose = 'checkpoint'): T {
  const start = g.nodes.length;
  const result = build();
  const segment: Segment = { nodes: g.nodes.slice(start), purpose };
  for (const node of segment.nodes) if (!segments.has(node)) segments.set(node, segment);
  return result;
}

export function segmentOf(node: Node): Segment | undefined {
  return segments.get(node);
}

/**
 * The values that depend on no graph input (weights, constants and what is computed from them
 * alone), found in one pass over the graph's nodes in build order.
 */
export function staticValues(g: Graph): Set<Value> {
  const known = new Set<Value>();
  const isStatic = (v: Value | null): boolean => v === null || known.has(v) || (!v.producer && g.isInitializer(v));
  for (const node of g.nodes) if (node.inputs.every(isStatic)) for (const out of node.outputs) known.add(out);
  for (const init of g.initializers.values()) known.add(init.value);
  return known;
}

/**
 * A [1] zero of `dtype` that onnxruntime can compute only once all `anchors` are: x + zeroAfter(a)
 * equals x but waits for a, which orders work that data dependencies alone leave free. It is
 * 0 * (a[0] + ...): NaN only where an anchor's first element is not finite, and then the step's
 * gradients are not finite anyway (an overflow, which the loss scaling skips).
 */
export function zeroAfter(anchors: readonly Value[], dtype: DType): Value {
  const firsts = anchors.map((a) => op.cast(op.slice(op.reshape(a, [-1]), [0], [1], [0]), dtype)); // [1] each
  return op.mul(firsts.reduce((sum, f) => op.add(sum, f)), 0); // [1]
}

/**
 * Appends the copy of `segment` (static nodes, those computed from weights alone, are shared, not
 * copied) and returns the map from each forward value of the segment to its copy. `anchor` is a
 * gradient that exists only once the backward reaches the segment.
 */
export function recomputeSegment(segment: Segment, anchor: Value, statics: ReadonlySet<Value>): Map<Value, Value> {
  const g = anchor.graph;
  const inside = new Set(segment.nodes.flatMap((n) => n.outputs));
  const copies = new Map<Value, Value>(); // segment value -> its copy
  const gated = new Map<Value, Value>(); // large segment input -> input + zero
  let zero: Value | undefined;
  const gate = (x: Value): Value => {
    zero ??= g.scope('recompute_gate', () => zeroAfter([anchor], 'float32'));
    let y = gated.get(x);
    if (!y) gated.set(x, (y = op.add(x, op.cast(zero, x.dtype)))); // x's shape, equal to x
    return y;
  };
  const source = (v: Value | null): Value | null => {
    if (v === null || statics.has(v)) return v;
    const copy = copies.get(v);
    if (copy) return copy;
    if (inside.has(v)) throw new Error(`autodiff/recompute.ts: ${v.name} is used before it is computed in its segment`);
    return v.dtype.startsWith('float') && numel(v.shape) >= GATE_MIN_ELEMENTS ? gate(v) : v;
  };
  g.scope('recompute', () => {
    for (const node of segment.nodes) {
      if (node.outputs.every((o) => statics.has(o))) continue;
      const inputs = node.inputs.map(source);
      const outs = g.addNode(node.op, inputs, node.outputs.map((o) => ({ dtype: o.dtype, shape: o.shape })), node.attrs, node.domain);
      node.outputs.forEach((o, i) => copies.set(o, outs[i]));
    }
  });
  return copies; // the rules see the originals of the segment's inputs
}

/**
 * Activations whose output the backward computes again from their input instead of keeping it:
 * their own rule keeps the input anyway, so a rule that reads the output (the Mul of a GEGLU)
 * would otherwise keep a second tensor of the same size alive from the forward to the backward.
 */
const RECOMPUTED_ACTIVATIONS = new Set(['com.microsoft:Gelu', 'com.microsoft:QuickGelu']);

/**
 * For the reverse sweep: `recompute(v, anchor)` returns a copy of v computed again in the backward
 * (after `anchor`) when v is a large output of such an activation whose rule runs (`differentiated`),
 * else v itself. One copy per value.
 */
export function activationRecomputer(differentiated: ReadonlySet<Node>): (v: Value, anchor: Value) => Value {
  const copies = new Map<Value, Value>();
  return (v, anchor) => {
    const producer = v.producer;
    if (!producer || !differentiated.has(producer) || numel(v.shape) < GATE_MIN_ELEMENTS) return v;
    if (!RECOMPUTED_ACTIVATIONS.has(producer.domain ? `${producer.domain}:${producer.op}` : producer.op)) return v;
    let copy = copies.get(v);
    if (!copy) {
      const g = v.graph;
      copy = g.scope('recompute', () => {
        const x = producer.inputs[0]!;
        const gated = op.add(x, zeroAfter([anchor], x.dtype)); // x's shape, equal to x
        return g.addNode(producer.op, [gated], [{ dtype: v.dtype, shape: v.shape }], producer.attrs, producer.domain)[0];
      });
      copies.set(v, copy);
    }
    return copy;
  };
}
