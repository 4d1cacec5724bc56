// The graph under construction: values with static dtype and shape, nodes in build (topological)
// order, graph inputs, outputs and initializers. Ops that create nodes live in ops.ts.
import { BYTES_PER_ELEMENT, type DType } from './dtype';
import { numel, shapeToString, type Shape } from './shape';

/** Where an initializer's bytes come from. File-backed data is never read into JS. */
export type TensorData =
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'file'; path: string; offset: number; length: number };

export type AttrValue =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'string'; value: string }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'floats'; value: readonly number[] };

export type Attrs = Record<string, AttrValue>;

export const attr = {
  int: (value: number): AttrValue => ({ type: 'int', value }),
  float: (value: number): AttrValue => ({ type: 'float', value }),
  string: (value: string): AttrValue => ({ type: 'string', value }),
  ints: (value: readonly number[]): AttrValue => ({ type: 'ints', value }),
  floats: (value: readonly number[]): AttrValue => ({ type: 'floats', value }),
};

export interface Node {
  readonly op: string;
  readonly domain: string; // '' = default ONNX domain
  readonly name: string;
  /** null marks an omitted optional input (serialised as an empty name). */
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
}

export class Value {
  /** The node that computes this value; undefined for graph inputs and initializers. */
  producer: Node | undefined;
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: Shape,
  ) {}
  get rank(): number {
    return this.shape.length;
  }
  toString(): string {
    return `${this.name}: ${this.dtype}${shapeToString(this.shape)}`;
  }
}

export interface Initializer {
  readonly value: Value;
  readonly data: TensorData;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<string, Initializer>();
  private readonly names = new Set<string>();
  private readonly scopes: string[] = [];
  private readonly constantCache = new Map<string, Value>();
  private counter = 0;

  constructor(readonly name = 'graph') {}

  /** A fresh, unique value name, prefixed by the current scope. */
  uniqueName(hint: string): string {
    const base = [...this.scopes, hint].join('/');
    let name = base;
    while (this.names.has(name)) name = `${base}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  /** Runs `build` with node and value names prefixed by `scope` (e.g. "down_blocks.0/resnets.1"). */
  scope<T>(scope: string, build: () => T): T {
    this.scopes.push(scope);
    try {
      return build();
    } finally {
      this.scopes.pop();
    }
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    if (this.names.has(name)) throw new Error(`graph input name "${name}" is already used`);
    this.names.add(name);
    const value = new Value(this, name, dtype, [...shape]);
    this.inputs.push(value);
    return value;
  }

  /** Marks `value` as a graph output under `name` (an Identity node is added when the names differ). */
  output(value: Value, name?: string): Value {
    this.assertOwn(value);
    let out = value;
    if (name !== undefined && name !== value.name) {
      if (this.names.has(name)) throw new Error(`graph output name "${name}" is already used`);
      this.names.add(name);
      out = new Value(this, name, value.dtype, value.shape);
      this.pushNode({ op: 'Identity', domain: '', name: `${name}/Identity`, inputs: [value], outputs: [out], attrs: {} });
    }
    this.outputs.push(out);
    return out;
  }

  /** A named weight tensor; `data` is in-memory bytes or a byte range of a file. */
  initializer(name: string, dtype: DType, shape: Shape, data: TensorData): Value {
    if (this.names.has(name)) throw new Error(`initializer name "${name}" is already used`);
    this.names.add(name);
    return this.addInitializer(name, dtype, shape, data);
  }

  private addInitializer(name: string, dtype: DType, shape: Shape, data: TensorData): Value {
    const expected = numel(shape) * BYTES_PER_ELEMENT[dtype];
    const length = data.kind === 'bytes' ? data.bytes.byteLength : data.length;
    if (length !== expected) {
      throw new Error(
        `initializer ${name}: ${dtype}${shapeToString(shape)} needs ${expected} bytes, the data has ${length}`,
      );
    }
    const value = new Value(this, name, dtype, [...shape]);
    this.initializers.set(name, { value, data });
    return value;
  }

  /** A small constant tensor stored inline; identical constants are shared. */
  constant(values: ArrayLike<number> | ArrayLike<bigint>, dtype: DType, shape: Shape): Value {
    const bytes = encodeValues(values, dtype, shape);
    const key = `${dtype}${shapeToString(shape)}:${Buffer.from(bytes).toString('base64')}`;
    const cached = this.constantCache.get(key);
    if (cached) return cached;
    const value = this.addInitializer(this.uniqueName('const'), dtype, shape, { kind: 'bytes', bytes });
    this.constantCache.set(key, value);
    return value;
  }

  /** Appends a node whose outputs are new values with the given dtypes and shapes. */
  addNode(
    op: string,
    inputs: readonly (Value | null)[],
    outputs: readonly { dtype: DType; shape: Shape }[],
    attrs: Attrs = {},
    domain = '',
  ): Value[] {
    for (const input of inputs) if (input) this.assertOwn(input);
    const nodeName = this.uniqueName(op);
    const outs = outputs.map((o, i) => new Value(this, outputs.length === 1 ? `${nodeName}:0` : `${nodeName}:${i}`, o.dtype, [...o.shape]));
    for (const out of outs) this.names.add(out.name);
    this.pushNode({ op, domain, name: nodeName, inputs: [...inputs], outputs: outs, attrs });
    return outs;
  }

  isInitializer(value: Value): boolean {
    return this.initializers.get(value.name)?.value === value;
  }

  private pushNode(node: Node): void {
    for (const out of node.outputs) out.producer = node;
    this.nodes.push(node);
  }

  private assertOwn(value: Value): void {
    if (value.graph !== this) throw new Error(`value ${value.name} belongs to another graph`);
  }
}

/** Encodes numbers as the little-endian bytes of `dtype` (float16 and bfloat16 rounded to nearest even). */
export function encodeValues(values: ArrayLike<number> | ArrayLike<bigint>, dtype: DType, shape: Shape): Uint8Array {
  const n = numel(shape);
  if (values.length !== n) throw new Error(`constant ${dtype}${shapeToString(shape)} needs ${n} values, got ${values.length}`);
  const num = (i: number): number => Number(values[i]);
  switch (dtype) {
    case 'float32':
      return new Uint8Array(Float32Array.from({ length: n }, (_, i) => num(i)).buffer);
    case 'float64':
      return new Uint8Array(Float64Array.from({ length: n }, (_, i) => num(i)).buffer);
    case 'int32':
      return new Uint8Array(Int32Array.from({ length: n }, (_, i) => num(i)).buffer);
    case 'int64':
      return new Uint8Array(BigInt64Array.from({ length: n }, (_, i) => BigInt(values[i] as number | bigint)).buffer);
    case 'int8':
      return new Uint8Array(Int8Array.from({ length: n }, (_, i) => num(i)).buffer);
    case 'uint8':
    case 'bool':
      return Uint8Array.from({ length: n }, (_, i) => num(i));
    case 'float16':
      return new Uint8Array(Uint16Array.from({ length: n }, (_, i) => float32ToFloat16Bits(num(i))).buffer);
    case 'bfloat16':
      return new Uint8Array(Uint16Array.from({ length: n }, (_, i) => float32ToBfloat16Bits(num(i))).buffer);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half-precision bits of a number, rounded to nearest even (subnormals, inf and NaN kept). */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function float32ToBfloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  const rounding = 0x7fff + ((x >>> 16) & 1);
  return ((x + rounding) >>> 16) & 0xffff;
}
