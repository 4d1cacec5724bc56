// Reads the reference data in test/fixtures/golden (copied from the shared golden folders).
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const fixturesDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const goldenDir = (name: 'tiny-sd15' | 'tiny-sdxl'): string => join(fixturesDir, 'golden', name);

export interface GoldenTensor {
  dtype: string;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

/** Minimal whole-file safetensors read for tests (F32, F64, I32, I64). */
export function readGoldenTensors(file: string): Map<string, GoldenTensor> {
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLength;
  const out = new Map<string, GoldenTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const raw = bytes.buffer.slice(bytes.byteOffset + base + begin, bytes.byteOffset + base + end);
    const data =
      info.dtype === 'F32' ? new Float32Array(raw)
      : info.dtype === 'F64' ? new Float64Array(raw)
      : info.dtype === 'I32' ? new Int32Array(raw)
      : info.dtype === 'I64' ? new BigInt64Array(raw)
      : undefined;
    if (!data) throw new Error(`${file}: tensor ${name} has dtype ${info.dtype}, not supported by the test reader`);
    out.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return out;
}
