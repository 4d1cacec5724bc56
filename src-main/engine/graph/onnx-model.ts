// Serialises a Graph to an ONNX ModelProto (IR 10, opset 21). Weights held in files are
// referenced as external data (file, offset, length) straight into the checkpoint's bytes, so a
// multi-GB model never passes through JS; the protobuf stays small and under its 2 GB limit.
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ONNX_DATA_TYPE } from './dtype';
import type { AttrValue, Graph, Node, Value } from './graph';
import { ProtoWriter } from './protobuf';
import { writeFileAtomic } from '../io/atomic-write';

export const OPSET = 21;
const IR_VERSION = 10;
const ATTR_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

/** Nodes needed to compute the graph outputs, in order (dead code from autodiff is dropped). */
export function liveNodes(graph: Graph): Node[] {
  const needed = new Set<Value>(graph.outputs);
  const live: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    if (!n.outputs.some((o) => needed.has(o))) continue;
    live.push(n);
    for (const input of n.inputs) if (input) needed.add(input);
  }
  return live.reverse();
}

function valueInfo(v: Value): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) shape.message(1, new ProtoWriter().int(1, d));
  const tensorType = new ProtoWriter().int(1, ONNX_DATA_TYPE[v.dtype]).message(2, shape);
  return new ProtoWriter().string(1, v.name).message(2, new ProtoWriter().message(1, tensorType));
}

function attribute(name: string, a: AttrValue): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  switch (a.type) {
    case 'int':
      w.int(3, a.value);
      break;
    case 'float':
      w.float(2, a.value);
      break;
    case 'string':
      w.string(4, a.value);
      break;
    case 'ints':
      w.packedInts(8, a.value);
      break;
    case 'floats':
      w.packedFloats(7, a.value);
      break;
  }
  return w.int(20, ATTR_TYPE[a.type]);
}

function nodeProto(n: Node): ProtoWriter {
  const w = new ProtoWriter();
  for (const input of n.inputs) w.string(1, input ? input.name : '');
  for (const output of n.outputs) w.string(2, output.name);
  w.string(3, n.name).string(4, n.op);
  for (const [name, a] of Object.entries(n.attrs)) w.message(5, attribute(name, a));
  if (n.domain) w.string(7, n.domain);
  return w;
}

interface ExternalRef {
  location: string; // relative to the model file's folder
  offset: number;
  length: number;
}

function tensorProto(v: Value, data: Uint8Array | ExternalRef): ProtoWriter {
  const w = new ProtoWriter();
  w.packedInts(1, v.shape).int(2, ONNX_DATA_TYPE[v.dtype]).string(8, v.name);
  if (data instanceof Uint8Array) return w.bytes(9, data);
  const entry = (key: string, value: string): ProtoWriter => new ProtoWriter().string(1, key).string(2, value);
  w.message(13, entry('location', data.location));
  w.message(13, entry('offset', String(data.offset)));
  w.message(13, entry('length', String(data.length)));
  return w.int(14, 1);
}

function modelProto(graph: Graph, initializer: (v: Value) => Uint8Array | ExternalRef): Uint8Array {
  const nodes = liveNodes(graph);
  const used = new Set<string>();
  for (const n of nodes) for (const i of n.inputs) if (i) used.add(i.name);
  for (const o of graph.outputs) used.add(o.name);
  const g = new ProtoWriter();
  for (const n of nodes) g.message(1, nodeProto(n));
  g.string(2, graph.name);
  for (const { value } of graph.initializers.values()) if (used.has(value.name)) g.message(5, tensorProto(value, initializer(value)));
  for (const input of graph.inputs) g.message(11, valueInfo(input));
  for (const output of graph.outputs) g.message(12, valueInfo(output));

  const model = new ProtoWriter().int(1, IR_VERSION).string(2, 'lora-studio').string(3, '0.1.0');
  model.message(8, new ProtoWriter().string(1, '').int(2, OPSET));
  if (nodes.some((n) => n.domain === 'com.microsoft')) model.message(8, new ProtoWriter().string(1, 'com.microsoft').int(2, 1));
  return model.message(7, g).finish();
}

/**
 * The model as bytes, every initializer inline. File-backed initializers are returned as
 * `externalData` entries (for onnxruntime's session option of that name) instead of being read.
 */
export function serializeModel(graph: Graph): { bytes: Uint8Array; externalFiles: { location: string; path: string }[] } {
  const files = new Map<string, string>();
  const bytes = modelProto(graph, (v) => {
    const data = graph.initializers.get(v.name)!.data;
    if (data.kind === 'bytes') return data.bytes;
    const location = files.get(data.path) ?? `w${files.size}_${basename(data.path)}`;
    files.set(data.path, location);
    return { location, offset: data.offset, length: data.length };
  });
  return { bytes, externalFiles: [...files].map(([path, location]) => ({ path, location })) };
}

/** In-memory initializers at least this large go to the sidecar data file rather than the protobuf. */
const SIDECAR_THRESHOLD = 1 << 16;

/**
 * Writes `<dir>/<name>.onnx` (plus `<name>.onnx.data` for large in-memory tensors) and returns
 * its path. Weight files outside `dir` are hard-linked into `dir/weights/` because onnxruntime
 * only accepts external data inside the model's folder; across file systems they are copied.
 */
export function saveModel(graph: Graph, dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const modelPath = join(dir, `${name}.onnx`);
  const sidecarName = `${name}.onnx.data`;
  const sidecarPath = join(dir, sidecarName);
  const linked = new Map<string, string>();
  let sidecarFd: number | undefined;
  let sidecarOffset = 0;

  const locate = (path: string): string => {
    const known = linked.get(path);
    if (known) return known;
    const abs = resolve(path);
    const rel = relative(dir, abs);
    let location = rel;
    if (rel.startsWith('..') || isAbsolute(rel)) {
      const st = statSync(abs);
      const key = createHash('sha256').update(`${abs}:${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 16);
      location = join('weights', `${key}-${basename(abs)}`);
      const target = join(dir, location);
      if (!existsSync(target)) {
        mkdirSync(dirname(target), { recursive: true });
        try {
          linkSync(abs, target);
        } catch {
          copyFileSync(abs, target); // other file system: a copy is the only way in
        }
      }
    }
    location = location.split(sep).join('/');
    linked.set(path, location);
    return location;
  };

  try {
    const bytes = modelProto(graph, (v) => {
      const data = graph.initializers.get(v.name)!.data;
      if (data.kind === 'file') return { location: locate(data.path), offset: data.offset, length: data.length };
      if (data.bytes.byteLength < SIDECAR_THRESHOLD) return data.bytes;
      sidecarFd ??= openSync(`${sidecarPath}.tmp`, 'w');
      const offset = sidecarOffset;
      writeSync(sidecarFd, data.bytes, 0, data.bytes.byteLength, offset);
      sidecarOffset += data.bytes.byteLength;
      return { location: sidecarName, offset, length: data.bytes.byteLength };
    });
    if (sidecarFd !== undefined) {
      fsyncSync(sidecarFd);
      closeSync(sidecarFd);
      sidecarFd = undefined;
      renameSync(`${sidecarPath}.tmp`, sidecarPath);
    }
    writeFileAtomic(modelPath, bytes);
  } finally {
    if (sidecarFd !== undefined) closeSync(sidecarFd);
  }
  return modelPath;
}

