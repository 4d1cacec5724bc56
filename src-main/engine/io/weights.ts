// WeightSource: the checkpoint tensors a model builder asks for, by diffusers/transformers name.
// Each name points at bytes in a safetensors file (offset + length, never read into JS unless a
// conversion needs it), at bytes in memory, or at a conversion computed on first use (a transpose).
// A builder calls `take(name, shape)` for every weight, then the loader calls `assertAllTaken()`,
// so a checkpoint with missing, extra or mis-shaped tensors is refused with the file and key named.
//
//   WeightSource.open(files)                  every tensor of one or more .safetensors files
//   WeightSource.fromTensors(tensors, label)  in-memory tensors
//   WeightSource.merge(sources)               union (a name in two sources is an error)
//   source.keys() / has(name) / entry(name)   look without taking
//   source.take(name, expectedShape)          a TensorLocation for the graph (implements WeightLocator)
//   source.untaken() / assertAllTaken()
//   source.view(mapKey) / source.under(prefix) / source.withEntries(extra)  views with fresh bookkeeping
//   source.readBytes(name) / readFloat32(name)
//   reshapeEntry, sliceRows, transposeEntry2d  entry transforms used by the single-file key maps
import { closeSync, openSync, readSync } from 'node:fs';
import { dtypeFromSafetensors } from '../graph/dtype';
import type { TensorData } from '../graph/graph';
import { sameShape, shapeToString, type Shape } from '../graph/shape';
import type { TensorLocation, WeightLocator } from '../nn/params';
import { bfloat16ToFloat32, float16ToFloat32 } from './dtype-convert';
import { SAFETENSORS_DTYPE_SIZE, SafetensorsFile, type SafetensorsDType } from './safetensors';

export type WeightBytes =
  | { kind: 'file'; path: string; offset: number; length: number }
  | { kind: 'bytes'; bytes: Uint8Array }
  /** Made on first use (e.g. a transpose); `length` is known up front. */
  | { kind: 'computed'; length: number; compute: () => Uint8Array };

export interface WeightEntry {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** For errors: the file the tensor comes from (or a description of in-memory data)... */
  file: string;
  /** ...and its key there (differs from the WeightSource name after a key mapping). */
  sourceKey: string;
  bytes: WeightBytes;
}

/** What `take` returns: where the bytes are, plus the provenance for messages. */
export interface TakenWeight extends TensorLocation {
  file: string;
  sourceKey: string;
}

export class WeightSourceError extends Error {
  override name = 'WeightSourceError';
}

export interface InMemoryTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: ArrayBufferView;
}

export class WeightSource implements WeightLocator {
  private readonly taken = new Set<string>();

  constructor(
    private readonly entries: ReadonlyMap<string, WeightEntry>,
    /** Names the source in errors, e.g. the file path(s). */
    readonly description: string,
  ) {}

  /** All tensors of the given safetensors files (headers only). A name in two files is an error. */
  static open(files: string | readonly string[], description?: string): WeightSource {
    const list = typeof files === 'string' ? [files] : files;
    const entries = new Map<string, WeightEntry>();
    for (const path of list) {
      const file = SafetensorsFile.open(path);
      file.close();
      for (const t of file.tensors) {
        const previous = entries.get(t.name);
        if (previous) throw new WeightSourceError(`${path}: tensor "${t.name}" is also in ${previous.file}`);
        entries.set(t.name, { dtype: t.dtype, shape: t.shape, file: path, sourceKey: t.name, bytes: { kind: 'file', path, offset: t.offset, length: t.byteLength } });
      }
    }
    return new WeightSource(entries, description ?? list.join(', '));
  }

  static fromTensors(tensors: Iterable<InMemoryTensor>, description = 'in-memory tensors'): WeightSource {
    const entries = new Map<string, WeightEntry>();
    for (const t of tensors) {
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      checkByteLength(t.name, t.dtype, t.shape, bytes.byteLength, description);
      entries.set(t.name, { dtype: t.dtype, shape: [...t.shape], file: description, sourceKey: t.name, bytes: { kind: 'bytes', bytes } });
    }
    return new WeightSource(entries, description);
  }

  static merge(sources: readonly WeightSource[], description?: string): WeightSource {
    const entries = new Map<string, WeightEntry>();
    for (const source of sources)
      for (const [name, entry] of source.entries) {
        const previous = entries.get(name);
        if (previous) throw new WeightSourceError(`tensor "${name}" comes from both ${previous.file} and ${entry.file}`);
        entries.set(name, entry);
      }
    return new WeightSource(entries, description ?? sources.map((s) => s.description).join(' + '));
  }

  get size(): number {
    return this.entries.size;
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): WeightEntry | undefined {
    return this.entries.get(name);
  }

  /** The tensor `name`, asserted to have `expectedShape`; marks it as used. */
  take(name: string, expectedShape: Shape): TakenWeight {
    const entry = this.entries.get(name);
    if (!entry) throw new WeightSourceError(`${this.description}: missing tensor "${name}" (expected shape ${shapeToString(expectedShape)})`);
    if (!sameShape(entry.shape, expectedShape))
      throw new WeightSourceError(`${entry.file}: tensor "${name}"${provenance(name, entry)} has shape ${shapeToString(entry.shape)}, the model expects ${shapeToString(expectedShape)}`);
    const dtype = dtypeFromSafetensors(entry.dtype);
    if (!dtype) throw new WeightSourceError(`${entry.file}: tensor "${name}"${provenance(name, entry)} has dtype ${entry.dtype}, which the engine cannot use`);
    this.taken.add(name);
    return { dtype, shape: entry.shape, data: tensorData(entry), file: entry.file, sourceKey: entry.sourceKey };
  }

  untaken(): string[] {
    return this.keys().filter((k) => !this.taken.has(k));
  }

  /** Throws listing every tensor no builder asked for (an unexpected key means the wrong model or config). */
  assertAllTaken(): void {
    const left = this.untaken();
    if (left.length === 0) return;
    const shown = left.slice(0, 20).map((k) => `"${k}"${provenance(k, this.entries.get(k) as WeightEntry)}`);
    throw new WeightSourceError(
      `${this.description}: ${left.length} tensor(s) not used by the model: ${shown.join(', ')}${left.length > 20 ? `, ... (${left.length - 20} more)` : ''}`,
    );
  }

  /**
   * A view under new names: `mapKey(name, entry)` returns the new name, a [name, entry] pair (to
   * change the entry too), or undefined to leave the tensor out. Two tensors mapped to one name is an error.
   */
  view(mapKey: (name: string, entry: WeightEntry) => string | readonly [string, WeightEntry] | undefined, description = this.description): WeightSource {
    const entries = new Map<string, WeightEntry>();
    for (const [name, entry] of this.entries) {
      const mapped = mapKey(name, entry);
      if (mapped === undefined) continue;
      const [newName, newEntry] = typeof mapped === 'string' ? [mapped, entry] : mapped;
      const previous = entries.get(newName);
      if (previous) throw new WeightSourceError(`${entry.file}: "${entry.sourceKey}" and "${previous.sourceKey}" both map to "${newName}"`);
      entries.set(newName, newEntry);
    }
    return new WeightSource(entries, description);
  }

  /** The tensors whose names start with `prefix`, with the prefix removed. */
  under(prefix: string, description = this.description): WeightSource {
    return this.view((name) => (name.startsWith(prefix) ? name.slice(prefix.length) : undefined), description);
  }

  /** This source plus `extra` entries (a name already present is an error). */
  withEntries(extra: Iterable<readonly [string, WeightEntry]>): WeightSource {
    const entries = new Map(this.entries);
    for (const [name, entry] of extra) {
      if (entries.has(name)) throw new WeightSourceError(`${this.description}: tensor "${name}" is already present`);
      entries.set(name, entry);
    }
    return new WeightSource(entries, this.description);
  }

  /** The tensor's bytes, read from its file or computed (does not mark it taken). */
  readBytes(name: string): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry) throw new WeightSourceError(`${this.description}: missing tensor "${name}"`);
    return entryBytes(entry);
  }

  /** The tensor as float32 (F32, F16, BF16, F64). */
  readFloat32(name: string): Float32Array {
    const entry = this.entries.get(name);
    if (!entry) throw new WeightSourceError(`${this.description}: missing tensor "${name}"`);
    return bytesToFloat32(entryBytes(entry), entry);
  }
}

const provenance = (name: string, entry: WeightEntry): string => (entry.sourceKey === name ? '' : ` (stored as "${entry.sourceKey}")`);

function checkByteLength(name: string, dtype: SafetensorsDType, shape: readonly number[], byteLength: number, where: string): void {
  const expected = shape.reduce((a, d) => a * d, 1) * SAFETENSORS_DTYPE_SIZE[dtype];
  if (expected !== byteLength) throw new WeightSourceError(`${where}: tensor "${name}" ${dtype}${shapeToString(shape)} needs ${expected} bytes, got ${byteLength}`);
}

function tensorData(entry: WeightEntry): TensorData {
  const b = entry.bytes;
  if (b.kind === 'file') return { kind: 'file', path: b.path, offset: b.offset, length: b.length };
  return { kind: 'bytes', bytes: entryBytes(entry) };
}

const computedCache = new WeakMap<object, Uint8Array>();

/** Reads or computes an entry's bytes (a fresh, aligned copy for file data). */
export function entryBytes(entry: WeightEntry): Uint8Array {
  const b = entry.bytes;
  if (b.kind === 'bytes') return b.bytes;
  if (b.kind === 'computed') {
    let bytes = computedCache.get(b);
    if (!bytes) {
      bytes = b.compute();
      if (bytes.byteLength !== b.length) throw new WeightSourceError(`${entry.file}: conversion of "${entry.sourceKey}" made ${bytes.byteLength} bytes, expected ${b.length}`);
      computedCache.set(b, bytes);
    }
    return bytes;
  }
  const out = new Uint8Array(b.length);
  const fd = openSync(b.path, 'r');
  try {
    let done = 0;
    while (done < b.length) {
      const n = readSync(fd, out, done, b.length - done, b.offset + done);
      if (n === 0) throw new WeightSourceError(`${b.path}: file ended while reading "${entry.sourceKey}"`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

function bytesToFloat32(bytes: Uint8Array, entry: WeightEntry): Float32Array {
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  switch (entry.dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
    case 'F16':
      return float16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2));
    case 'BF16':
      return bfloat16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2));
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 8));
    default:
      throw new WeightSourceError(`${entry.file}: tensor "${entry.sourceKey}" has dtype ${entry.dtype}, not a float type`);
  }
}

/** The same bytes under another shape with as many elements (a [c, c, 1, 1] conv weight as [c, c]). */
export function reshapeEntry(entry: WeightEntry, shape: readonly number[]): WeightEntry {
  const count = (s: readonly number[]): number => s.reduce((a, d) => a * d, 1);
  if (count(shape) !== count(entry.shape))
    throw new WeightSourceError(`${entry.file}: cannot view "${entry.sourceKey}" ${shapeToString(entry.shape)} as ${shapeToString(shape)}`);
  return { ...entry, shape: [...shape] };
}

/** Rows [start, start + rows) of the first axis: a contiguous byte range, so file data stays in the file. */
export function sliceRows(entry: WeightEntry, start: number, rows: number): WeightEntry {
  const [first, ...rest] = entry.shape;
  if (first === undefined || start < 0 || rows < 0 || start + rows > first)
    throw new WeightSourceError(`${entry.file}: cannot take rows ${start}..${start + rows} of "${entry.sourceKey}" ${shapeToString(entry.shape)}`);
  const rowBytes = rest.reduce((a, d) => a * d, 1) * SAFETENSORS_DTYPE_SIZE[entry.dtype];
  const shape = [rows, ...rest];
  const b = entry.bytes;
  if (b.kind === 'file') return { ...entry, shape, bytes: { kind: 'file', path: b.path, offset: b.offset + start * rowBytes, length: rows * rowBytes } };
  return {
    ...entry,
    shape,
    bytes: { kind: 'computed', length: rows * rowBytes, compute: () => entryBytes(entry).slice(start * rowBytes, (start + rows) * rowBytes) },
  };
}

/** A 2-D tensor transposed ([a, b] -> [b, a]), computed from its bytes on first use. */
export function transposeEntry2d(entry: WeightEntry): WeightEntry {
  if (entry.shape.length !== 2) throw new WeightSourceError(`${entry.file}: cannot transpose "${entry.sourceKey}" ${shapeToString(entry.shape)}: not 2-D`);
  const [rows, cols] = entry.shape as [number, number];
  const size = SAFETENSORS_DTYPE_SIZE[entry.dtype];
  const length = rows * cols * size;
  const compute = (): Uint8Array => {
    const raw = entryBytes(entry);
    const src = raw.byteOffset % 8 === 0 ? raw : raw.slice();
    const out = new Uint8Array(length);
    // Element-sized integer views copy bit patterns exactly (NaN payloads included).
    const View = size === 1 ? Uint8Array : size === 2 ? Uint16Array : size === 4 ? Uint32Array : BigUint64Array;
    const from = new View(src.buffer as ArrayBuffer, src.byteOffset, rows * cols);
    const to = new View(out.buffer, 0, rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) to[c * rows + r] = from[r * cols + c];
    return out;
  };
  return { ...entry, shape: [cols, rows], bytes: { kind: 'computed', length, compute } };
}

