// Reverse-mode autodiff as a graph-to-graph function: gradients(loss, wrt) appends the backward
// nodes to loss's graph and returns d loss / d wrt[i] as new values. Only nodes on a path from
// `wrt` to `loss` are differentiated, and each rule (rules.ts, one table) is asked only for the
// input gradients that lead back to `wrt`. Two linear scans over the node list; no quadratic work.
import type { Node, Value } from '../graph/graph';
import * as op from '../graph/ops';
import { sameShape, shapeToString } from '../graph/shape';
import { activationRecomputer, recomputeSegment, segmentOf, staticValues, type Segment } from './recompute';
import { gradientRules, isDifferentiable, ruleKey, zerosLike, type GradContext } from './rules';

export { sumToShape, zerosLike } from './rules';

export class GradientError extends Error {}

/** Identity nodes made by stopGradient: the walker treats their outputs as constants. */
const stopped = new WeakSet<Node>();

/** x unchanged in the forward, but no gradient flows through it (torch's detach). */
export function stopGradient(x: Value): Value {
  const y = op.identity(x);
  stopped.add(y.producer!);
  return y;
}

const describe = (v: Value): string => `${v.name} ${v.dtype}${shapeToString(v.shape)}`;

export interface GradientOptions {
  /** The attention backward's head groups hold at most about this many bytes of [Lq, Lk] matrices (default attentionBackward.chunkBytes). */
  attentionChunkBytes?: number;
}

/**
 * d loss / d wrt[i] for each i, as values in loss's graph with wrt[i]'s dtype and shape.
 * `seed` is d(final) / d loss (default: ones, i.e. loss itself is differentiated). A `wrt` value
 * that the loss does not depend on gets zeros. Throws (naming op and node) when a node on the
 * path has no gradient rule.
 */
export function gradients(loss: Value, wrt: readonly Value[], seed?: Value, options: GradientOptions = {}): Value[] {
  const graph = loss.graph;
  for (const w of wrt) {
    if (w.graph !== graph) throw new GradientError(`autodiff/gradients.ts: ${w.name} belongs to another graph than the loss`);
    if (!isDifferentiable(w)) throw new GradientError(`autodiff/gradients.ts: cannot differentiate with respect to ${describe(w)} (not a float)`);
  }
  if (!isDifferentiable(loss)) throw new GradientError(`autodiff/gradients.ts: the loss ${describe(loss)} is not a float`);
  if (seed && (seed.dtype !== loss.dtype || !sameShape(seed.shape, loss.shape)))
    throw new GradientError(`autodiff/gradients.ts: seed ${describe(seed)} must match the loss ${describe(loss)}`);

  const forward = graph.nodes.slice(); // the backward nodes appended below are not walked

  // Forward scan: the float values that depend on some wrt value.
  const dependsOnWrt = new Set<Value>(wrt);
  for (const node of forward) {
    if (stopped.has(node)) continue;
    if (!node.inputs.some((v) => v !== null && dependsOnWrt.has(v))) continue;
    for (const out of node.outputs) if (isDifferentiable(out)) dependsOnWrt.add(out);
  }

  // Backward scan: the nodes on a path wrt -> loss (latest first) and, per node, which inputs need a gradient.
  const needed = new Set<Value>([loss]);
  const path: { node: Node; needs: boolean[] }[] = [];
  if (dependsOnWrt.has(loss)) {
    for (let i = forward.length - 1; i >= 0; i--) {
      const node = forward[i];
      if (stopped.has(node) || !node.outputs.some((o) => needed.has(o))) continue;
      const needs = node.inputs.map((v) => v !== null && dependsOnWrt.has(v));
      if (!needs.some(Boolean)) continue;
      if (!gradientRules[ruleKey(node)]) {
        throw new GradientError(
          `autodiff/gradients.ts: no gradient rule for op ${ruleKey(node)} (node "${node.name}", output ${describe(node.outputs[0])}) on the path from the parameters to the loss`,
        );
      }
      path.push({ node, needs });
      node.inputs.forEach((v, j) => needs[j] && needed.add(v!));
    }
  }

  // Reverse sweep: accumulate d loss / d value over every use with Add.
  const grads = new Map<Value, Value>();
  const accumulate = (v: Value, g: Value): void => {
    const prev = grads.get(v);
    grads.set(v, prev ? op.add(prev, g) : g);
  };
  // Checkpointed segments (recompute.ts): their rules read a copy recomputed when the backward gets there.
  const recomputed = new Map<Segment, Map<Value, Value>>();
  let statics: Set<Value> | undefined;
  const recomputeActivation = activationRecomputer(new Set(path.map((p) => p.node)));
  graph.scope('grad', () => {
    grads.set(loss, seed ?? op.expand(op.scalarLike(loss, 1), loss.shape));
    for (const { node, needs } of path) {
      const outGrads = node.outputs.map((o) => grads.get(o) ?? null);
      if (outGrads.every((g) => g === null)) continue; // every gradient that reached here was identically zero
      const segment = segmentOf(node);
      let copies = segment && recomputed.get(segment);
      if (segment && !copies) recomputed.set(segment, (copies = recomputeSegment(segment, outGrads.find((g) => g !== null)!, (statics ??= staticValues(graph)))));
      const local = (v: Value | null): Value | null => (v && copies?.get(v)) ?? v;
      const anchor = outGrads.find((g) => g !== null)!;
      const ctx: GradContext = {
        graph,
        node,
        inputs: node.inputs.map((v) => (v && copies?.get(v)) ?? (v && recomputeActivation(v, anchor))),
        outputs: node.outputs.map((o) => local(o)!),
        grads: outGrads,
        dy: outGrads[0] ?? zerosLike(node.outputs[0]),
        needs,
        options,
      };
      const inputGrads = graph.scope(node.name, () => gradientRules[ruleKey(node)](ctx));
      needs.forEach((need, j) => {
        const g = inputGrads[j];
        if (!need || !g) return;
        const x = node.inputs[j]!;
        if (g.dtype !== x.dtype || !sameShape(g.shape, x.shape))
          throw new GradientError(
            `autodiff/rules.ts: the ${ruleKey(node)} rule returned ${describe(g)} as the gradient of input ${j} ${describe(x)} (node "${node.name}")`,
          );
        accumulate(x, g);
      });
    }
  });
  return wrt.map((w) => grads.get(w) ?? graph.scope('grad', () => zerosLike(w)));
}
