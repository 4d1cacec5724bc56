// The safetensors format: an 8-byte little-endian header length N, N bytes of a JSON object
// (tensor name -> { dtype, shape, data_offsets: [begin, end] } relative to the data section, plus an
// optional string-to-string "__metadata__"), then the tensor bytes, contiguous, little-endian.
//
// Reading parses only the header; tensor bytes are read when asked. Validation follows the
// reference Rust crate: header at most 100 MB, UTF-8 JSON object, known dtypes, offsets contiguous
// from 0 (sorted by begin), sizes = elements x dtype size, data ends exactly at the end of the file.
// Every problem is a SafetensorsError whose message starts with the file name.
//
//   openSafetensors(path): SafetensorsFile          header only; close() when done reading
//   SafetensorsFile: path, headerLength, dataStart, metadata, tensors (in file order), names(),
//     has(name), tensor(name), readBytes(name), readFloat32(name), close()
//   writeSafetensors(path, tensors, metadata?)      streams to a temp file, then renames (atomic)
//   encodeSafetensors(tensors, metadata?): Uint8Array   in memory, for small files
//   decodeSafetensors(bytes, name?): Map<string, {dtype, shape, bytes}>  in memory, validated
//   SAFETENSORS_DTYPE_SIZE, isSafetensorsDType, SafetensorsError
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { AtomicFileWriter } from './atomic-write';
import { bfloat16ToFloat32, float16ToFloat32 } from './dtype-convert';

export type SafetensorsDType =
  | 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL'
  | 'U16' | 'U32' | 'U64' | 'F8_E4M3' | 'F8_E5M2';

export const SAFETENSORS_DTYPE_SIZE: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
  U16: 2, U32: 4, U64: 8, F8_E4M3: 1, F8_E5M2: 1,
};

export const isSafetensorsDType = (name: unknown): name is SafetensorsDType =>
  typeof name === 'string' && Object.hasOwn(SAFETENSORS_DTYPE_SIZE, name);

/** The reference implementation's limit; a larger header is refused before it is read. */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file (8 + header length + begin). */
  offset: number;
  byteLength: number;
}

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** Little-endian bytes, exactly elements x dtype size of them. */
  data: ArrayBufferView;
}

const METADATA_KEY = '__metadata__';

/** Checks a parsed header against the data section size; returns tensors sorted by offset. */
function parseHeader(file: string, headerBytes: Uint8Array, dataLength: number, dataStart: number): { tensors: SafetensorsTensorInfo[]; metadata: Record<string, string> | undefined } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new SafetensorsError(file, 'header does not start with "{" (not a safetensors file?)');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(file, `header is not valid JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new SafetensorsError(file, 'header is not a JSON object');

  let metadata: Record<string, string> | undefined;
  const entries: { info: SafetensorsTensorInfo; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SafetensorsError(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(value)) if (typeof v !== 'string') throw new SafetensorsError(file, `__metadata__ value of "${k}" is not a string`);
      metadata = { ...(value as Record<string, string>) };
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SafetensorsError(file, `tensor "${name}": entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (dtype === undefined || shape === undefined || offsets === undefined)
      throw new SafetensorsError(file, `tensor "${name}": entry needs dtype, shape and data_offsets`);
    if (!isSafetensorsDType(dtype)) throw new SafetensorsError(file, `tensor "${name}": unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new SafetensorsError(file, `tensor "${name}": shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0))
      throw new SafetensorsError(file, `tensor "${name}": data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    const [begin, end] = offsets as [number, number];
    let elements = 1;
    for (const d of shape as number[]) elements *= d;
    const expected = elements * SAFETENSORS_DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(expected)) throw new SafetensorsError(file, `tensor "${name}": shape ${JSON.stringify(shape)} is too large`);
    if (end < begin) throw new SafetensorsError(file, `tensor "${name}": data_offsets [${begin}, ${end}] end before they begin`);
    if (end - begin !== expected)
      throw new SafetensorsError(file, `tensor "${name}": ${dtype}[${(shape as number[]).join(', ')}] needs ${expected} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`);
    entries.push({ info: { name, dtype, shape: [...(shape as number[])], offset: dataStart + begin, byteLength: end - begin }, begin, end });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let position = 0;
  for (const { info, begin, end } of entries) {
    if (begin !== position)
      throw new SafetensorsError(file, `tensor "${info.name}": data_offsets [${begin}, ${end}] ${begin < position ? 'overlap the previous tensor' : 'leave a gap after the previous tensor'} (expected begin ${position})`);
    position = end;
  }
  if (position > dataLength) throw new SafetensorsError(file, `truncated: header says ${position} bytes of tensor data, file has ${dataLength}`);
  if (position < dataLength) throw new SafetensorsError(file, `trailing bytes: header says ${position} bytes of tensor data, file has ${dataLength}`);
  return { tensors: entries.map((e) => e.info), metadata };
}

/** Reads the 8-byte prefix; returns the header length after bounds checks. */
function headerLengthOf(file: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8) throw new SafetensorsError(file, `file is ${fileSize} bytes, too small for a safetensors header`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  const length = Number(n);
  if (8 + length > fileSize) throw new SafetensorsError(file, `header length ${length} runs past the end of the ${fileSize}-byte file`);
  return length;
}

export class SafetensorsFile {
  private fd: number | undefined;
  private readonly byName: Map<string, SafetensorsTensorInfo>;
  /** File name used in errors (the base name; the full path is `path`). */
  private readonly label: string;

  private constructor(
    readonly path: string,
    fd: number,
    readonly headerLength: number,
    /** Tensors in file order (by offset). */
    readonly tensors: readonly SafetensorsTensorInfo[],
    readonly metadata: Readonly<Record<string, string>> | undefined,
  ) {
    this.fd = fd;
    this.label = path;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Opens `path` and validates its header; tensor bytes are not read. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      throw new SafetensorsError(path, `cannot open (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
    try {
      const size = fstatSync(fd).size;
      const prefix = new Uint8Array(8);
      if (size >= 8) readFully(path, fd, prefix, 0);
      const headerLength = headerLengthOf(path, prefix, size);
      const headerBytes = new Uint8Array(headerLength);
      readFully(path, fd, headerBytes, 8);
      const dataStart = 8 + headerLength;
      const { tensors, metadata } = parseHeader(path, headerBytes, size - dataStart, dataStart);
      return new SafetensorsFile(path, fd, headerLength, tensors, metadata);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  get dataStart(): number {
    return 8 + this.headerLength;
  }

  names(): string[] {
    return this.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  tensor(name: string): SafetensorsTensorInfo {
    const info = this.byName.get(name);
    if (!info) throw new SafetensorsError(this.label, `no tensor named "${name}"`);
    return info;
  }

  /** The tensor's raw little-endian bytes (a fresh, 8-byte-aligned buffer). */
  readBytes(name: string): Uint8Array {
    const info = this.tensor(name);
    if (this.fd === undefined) this.fd = openSync(this.path, 'r');
    const bytes = new Uint8Array(info.byteLength);
    readFully(this.label, this.fd, bytes, info.offset);
    return bytes;
  }

  /** The tensor as float32 values: F32 as is, F16/BF16/F64 converted; other dtypes are refused. */
  readFloat32(name: string): Float32Array {
    const info = this.tensor(name);
    const bytes = this.readBytes(name);
    switch (info.dtype) {
      case 'F32':
        return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
      case 'F16':
        return float16ToFloat32(new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case 'BF16':
        return bfloat16ToFloat32(new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case 'F64':
        return Float32Array.from(new Float64Array(bytes.buffer, 0, bytes.byteLength / 8));
      default:
        throw new SafetensorsError(this.label, `tensor "${name}" has dtype ${info.dtype}, not a float type`);
    }
  }

  /** Releases the file handle; later reads reopen it. */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

export const openSafetensors = (path: string): SafetensorsFile => SafetensorsFile.open(path);

function readFully(file: string, fd: number, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.byteLength) {
    const n = readSync(fd, into, done, into.byteLength - done, position + done);
    if (n === 0) throw new SafetensorsError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** Header JSON (tensors sorted by name, data offsets in that order), padded with spaces to a multiple of 8. */
function encodeHeader(tensors: readonly TensorToWrite[], metadata: Record<string, string> | undefined, file: string): { header: Uint8Array; ordered: TensorToWrite[] } {
  const ordered = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new SafetensorsError(file, `metadata value of "${k}" is not a string`);
    json[METADATA_KEY] = metadata;
  }
  let position = 0;
  for (const t of ordered) {
    if (t.name === METADATA_KEY) throw new SafetensorsError(file, `"${METADATA_KEY}" cannot be a tensor name`);
    if (Object.hasOwn(json, t.name)) throw new SafetensorsError(file, `tensor "${t.name}" given twice`);
    if (!isSafetensorsDType(t.dtype)) throw new SafetensorsError(file, `tensor "${t.name}": unknown dtype ${JSON.stringify(t.dtype)}`);
    const expected = t.shape.reduce((a, d) => a * d, 1) * SAFETENSORS_DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== expected)
      throw new SafetensorsError(file, `tensor "${t.name}": ${t.dtype}[${t.shape.join(', ')}] needs ${expected} bytes, got ${t.data.byteLength}`);
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [position, position + expected] };
    position += expected;
  }
  const text = JSON.stringify(json);
  const raw = Buffer.from(text, 'utf8');
  const padded = Math.ceil(raw.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(raw, 8);
  return { header, ordered };
}

const bytesOf = (view: ArrayBufferView): Uint8Array => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

/** Writes a safetensors file tensor by tensor (no full-file buffer), atomically. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const { header, ordered } = encodeHeader(tensors, metadata, path);
  const writer = AtomicFileWriter.open(path);
  try {
    writer.write(header);
    for (const t of ordered) writer.write(bytesOf(t.data));
    writer.commit();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

/** The whole file in memory (small files: LoRA exports in tests, fixtures). */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const { header, ordered } = encodeHeader(tensors, metadata, '<memory>');
  const total = ordered.reduce((n, t) => n + t.data.byteLength, header.byteLength);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let position = header.byteLength;
  for (const t of ordered) {
    out.set(bytesOf(t.data), position);
    position += t.data.byteLength;
  }
  return out;
}

export interface DecodedTensor {
  dtype: SafetensorsDType;
  shape: number[];
  /** A copy, 8-byte aligned, so typed-array views of any dtype work. */
  bytes: Uint8Array;
}

/** Parses and validates a whole file held in memory; `file` names it in errors. */
export function decodeSafetensors(data: Uint8Array, file = '<memory>'): { tensors: Map<string, DecodedTensor>; metadata: Record<string, string> | undefined } {
  const headerLength = headerLengthOf(file, data.subarray(0, 8), data.byteLength);
  const dataStart = 8 + headerLength;
  const { tensors, metadata } = parseHeader(file, data.subarray(8, dataStart), data.byteLength - dataStart, dataStart);
  const out = new Map<string, DecodedTensor>();
  for (const t of tensors) {
    const bytes = new Uint8Array(t.byteLength); // a copy: Buffer#slice would share memory and keep alignment of the source
    bytes.set(data.subarray(t.offset, t.offset + t.byteLength));
    out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes });
  }
  return { tensors: out, metadata };
}
