// Static shape arithmetic shared by the op builder and the gradient rules.

export type Shape = readonly number[];

export const numel = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);

export const shapeToString = (shape: Shape): string => `[${shape.join(',')}]`;

export const sameShape = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/** Normalises a possibly negative axis for a tensor of the given rank. */
export function normAxis(axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${what} ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Numpy broadcasting of two shapes, or undefined when they do not broadcast. */
export function broadcastShapes(a: Shape, b: Shape): number[] | undefined {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return undefined;
    out.push(da === 1 ? db : da);
  }
  return out;
}

/**
 * The axes along which a tensor of shape `from` was broadcast to reach shape `to`: the leading
 * axes `to` has in addition, and the axes where `from` has size 1 and `to` does not.
 * Summing a gradient over these axes (keepdims) and reshaping to `from` undoes the broadcast.
 */
export function broadcastAxes(from: Shape, to: Shape): number[] {
  const lead = to.length - from.length;
  const axes: number[] = [];
  for (let i = 0; i < to.length; i++) {
    if (i < lead) axes.push(i);
    else if (from[i - lead] === 1 && to[i] !== 1) axes.push(i);
  }
  return axes;
}
