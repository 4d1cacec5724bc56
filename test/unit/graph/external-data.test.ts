// Large weights stay in their file: a graph over a multi-GB safetensors file builds and
// serialises without its bytes passing through JS (RSS does not grow by that size), and
// onnxruntime loads a > 2 GB model whose initializers point straight into the file.
import { afterAll, describe, expect, it } from 'vitest';
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { saveModel } from '../../../src-main/engine/graph/onnx-model';
import { Session } from '../../../src-main/engine/runtime/session';

const dir = mkdtempSync(join(tmpdir(), 'lora-studio-extdata-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A sparse safetensors file: `count` float32 tensors [rows, cols], all zeros except a marker value. */
function writeSparseSafetensors(path: string, count: number, rows: number, cols: number): { name: string; offset: number; length: number }[] {
  const bytesEach = rows * cols * 4;
  const header: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) header[`w${i}`] = { dtype: 'F32', shape: [rows, cols], data_offsets: [i * bytesEach, (i + 1) * bytesEach] };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const fd = openSync(path, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len, 0, 8, 0);
  writeSync(fd, Buffer.from(json), 0, json.length, 8);
  const base = 8 + json.length;
  ftruncateSync(fd, base + count * bytesEach);
  // Element [0, 0] of tensor i holds i + 1 so the run can prove which bytes it read.
  for (let i = 0; i < count; i++) writeSync(fd, Buffer.from(Float32Array.of(i + 1).buffer), 0, 4, base + i * bytesEach);
  closeSync(fd);
  return Array.from({ length: count }, (_, i) => ({ name: `w${i}`, offset: base + i * bytesEach, length: bytesEach }));
}

describe('external data into a safetensors file', () => {
  const rows = 8192;
  const cols = 16384; // 512 MiB per tensor
  const count = 5; // 2.5 GiB in all: past protobuf's 2 GB limit
  const file = join(dir, 'big.safetensors');
  const tensors = writeSparseSafetensors(file, count, rows, cols);

  const build = (): Graph => {
    const g = new Graph('big');
    const x = g.input('x', 'float32', [1, rows]);
    let acc: ReturnType<typeof op.add> | undefined;
    for (const t of tensors) {
      const w = g.initializer(t.name, 'float32', [rows, cols], { kind: 'file', path: file, offset: t.offset, length: t.length });
      const y = op.matmul(x, op.slice(w, [0], [2], [1])); // [1, 2]: reads column 0..1 of every row
      acc = acc ? op.add(acc, y) : y;
    }
    g.output(acc!, 'y');
    return g;
  };

  it('builds and saves a 2.5 GiB graph without reading the weights into memory', () => {
    expect(statSync(file).size).toBeGreaterThan(2.5 * 2 ** 30);
    const before = process.memoryUsage().rss;
    const modelPath = saveModel(build(), join(dir, 'model'), 'big');
    const grown = process.memoryUsage().rss - before;
    expect(statSync(modelPath).size).toBeLessThan(64 * 1024); // references only
    expect(grown).toBeLessThan(200 * 2 ** 20);
  });

  it('onnxruntime loads the > 2 GB model through the hard link and reads the right bytes', async () => {
    const modelPath = saveModel(build(), join(dir, 'model2'), 'big');
    const session = await Session.create(modelPath);
    const x = new Float32Array(rows);
    x[0] = 1;
    const out = await session.run({ x: { dtype: 'float32', shape: [1, rows], data: x } });
    // Sum over tensors of w_i[0, 0] = 1 + 2 + ... + count; column 1 is zero.
    expect(Array.from(out.y.data as Float32Array)).toEqual([(count * (count + 1)) / 2, 0]);
    await session.release();
  }, 300_000);
});

describe('Session.fromGraph', () => {
  it('writes a model file that references file-backed weights in place, and runs it', async () => {
    const weights = join(dir, 'small.safetensors');
    const [t] = writeSparseSafetensors(weights, 1, 4, 4);
    const g = new Graph('small');
    const x = g.input('x', 'float32', [1, 4]);
    const w = g.initializer('w', 'float32', [4, 4], { kind: 'file', path: weights, offset: t.offset, length: t.length });
    g.output(op.matmul(x, w), 'y');
    const work = join(dir, 'graphs');
    const session = await Session.fromGraph(g, {}, work);
    const out = await session.run({ x: { dtype: 'float32', shape: [1, 4], data: Float32Array.of(1, 0, 0, 0) } });
    expect(Array.from(out.y.data as Float32Array)).toEqual([1, 0, 0, 0]); // row 0 of w: the marker 1 at [0, 0]
    // What stays in the work folder is the hard link to the weights (reused by later graphs), not a copy or the model file.
    const linked = readdirSync(join(work, 'weights'));
    expect(linked).toHaveLength(1);
    expect(statSync(join(work, 'weights', linked[0])).ino).toBe(statSync(weights).ino);
    expect(readdirSync(work).filter((f) => f.endsWith('.onnx'))).toEqual([]);
    await session.release();
  });
});
