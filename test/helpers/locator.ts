// A WeightLocator over safetensors files for tests of the model builders (header parsing only).
// The product path uses src-main/engine/io; this keeps model tests independent of it.
import { readFileSync, openSync, readSync, closeSync } from 'node:fs';
import { dtypeFromSafetensors } from '../../src-main/engine/graph/dtype';
import type { TensorLocation, WeightLocator } from '../../src-main/engine/nn/params';
import type { Shape } from '../../src-main/engine/graph/shape';

export class TestLocator implements WeightLocator {
  private readonly entries = new Map<string, TensorLocation & { file: string }>();
  private readonly taken = new Set<string>();

  constructor(files: string[]) {
    for (const file of files) {
      const fd = openSync(file, 'r');
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const n = Number(lenBuf.readBigUInt64LE(0));
      const headerBuf = Buffer.alloc(n);
      readSync(fd, headerBuf, 0, n, 8);
      closeSync(fd);
      const header = JSON.parse(headerBuf.toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
      for (const [name, info] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const dtype = dtypeFromSafetensors(info.dtype);
        if (!dtype) throw new Error(`${file}: ${name} has unsupported dtype ${info.dtype}`);
        const offset = 8 + n + info.data_offsets[0];
        this.entries.set(name, { file, dtype, shape: info.shape, data: { kind: 'file', path: file, offset, length: info.data_offsets[1] - info.data_offsets[0] } });
      }
    }
  }

  take(name: string, expectedShape: Shape): TensorLocation {
    const e = this.entries.get(name);
    if (!e) throw new Error(`missing weight ${name}`);
    if (e.shape.join() !== expectedShape.join()) throw new Error(`${e.file}: ${name} has shape [${e.shape}], expected [${expectedShape}]`);
    this.taken.add(name);
    return e;
  }

  untaken(): string[] {
    return [...this.entries.keys()].filter((k) => !this.taken.has(k));
  }
}

export const readBytes = (file: string): Buffer => readFileSync(file);
