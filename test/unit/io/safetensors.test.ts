import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRandom } from '../../../src-main/engine/data/random';
import { float32ToBfloat16, float32ToFloat16 } from '../../../src-main/engine/io/dtype-convert';
import {
  decodeSafetensors,
  encodeSafetensors,
  openSafetensors,
  SafetensorsError,
  writeSafetensors,
  type TensorToWrite,
} from '../../../src-main/engine/io/safetensors';
import { fixturesDir, goldenDir } from '../../helpers/golden';

const work = mkdtempSync(join(tmpdir(), 'safetensors-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sample = (): TensorToWrite[] => {
  const w = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 2);
  return [
    { name: 'z.weight', dtype: 'F32', shape: [3, 4], data: w },
    { name: 'a.half', dtype: 'F16', shape: [12], data: float32ToFloat16(w) },
    { name: 'm.bf16', dtype: 'BF16', shape: [2, 6], data: float32ToBfloat16(w) },
    { name: 'ids', dtype: 'I64', shape: [2], data: BigInt64Array.from([10n, 999n]) },
    { name: 'flag', dtype: 'BOOL', shape: [], data: Uint8Array.from([1]) },
    { name: 'empty', dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
  ];
};

describe('safetensors writer and reader', () => {
  it('round-trips through a file: names sorted, header padded to 8, offsets absolute', () => {
    const path = join(work, 'round.safetensors');
    writeSafetensors(path, sample(), { format: 'pt', note: 'ünïcode' });
    const bytes = readFileSync(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const file = openSafetensors(path);
    try {
      expect(file.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
      expect(file.names()).toEqual(['a.half', 'empty', 'flag', 'ids', 'm.bf16', 'z.weight']);
      const z = file.tensor('z.weight');
      expect(z).toMatchObject({ dtype: 'F32', shape: [3, 4], byteLength: 48 });
      expect(new Float32Array(bytes.buffer.slice(bytes.byteOffset + z.offset, bytes.byteOffset + z.offset + 48))[5]).toBe(0.5);
      const expected = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 2);
      expect([...file.readFloat32('z.weight')]).toEqual([...expected]);
      expect([...file.readFloat32('a.half')]).toEqual([...expected]); // exact in half precision
      expect([...file.readFloat32('m.bf16')]).toEqual([...expected]);
      expect([...new BigInt64Array(file.readBytes('ids').buffer)]).toEqual([10n, 999n]);
      expect(file.readBytes('empty').byteLength).toBe(0);
      expect(() => file.readFloat32('ids')).toThrow(SafetensorsError);
      expect(() => file.tensor('nope')).toThrow(/round\.safetensors: no tensor named "nope"/);
    } finally {
      file.close();
    }
    expect(readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
    // The in-memory encoder makes the same bytes.
    expect(Buffer.from(encodeSafetensors(sample(), { format: 'pt', note: 'ünïcode' })).equals(bytes)).toBe(true);
  });

  it('refuses bad input to the writer and leaves no file behind', () => {
    const path = join(work, 'bad.safetensors');
    expect(() => writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/needs 12 bytes, got 8/);
    expect(() => writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }, { name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }])).toThrow(/given twice/);
    expect(readdirSync(work).filter((n) => n.startsWith('bad') || n.includes('bad.safetensors.tmp'))).toEqual([]);
  });

  it('reads every golden file; shapes agree with cases.json and known values', () => {
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else if (e.name.endsWith('.safetensors')) files.push(join(dir, e.name));
      }
    };
    walk(join(fixturesDir, 'golden'));
    expect(files.length).toBeGreaterThanOrEqual(17);
    for (const path of files) {
      const file = openSafetensors(path);
      expect(file.tensors.length, path).toBeGreaterThan(0);
      file.close();
    }
    for (const variant of ['tiny-sd15', 'tiny-sdxl'] as const) {
      // cases.json comes from Python: NaN / Infinity literals are not JSON, and only the shapes matter here.
      const text = readFileSync(join(goldenDir(variant), 'cases.json'), 'utf8').replace(/-?\bInfinity\b|\bNaN\b/g, 'null');
      const { cases } = JSON.parse(text) as { cases: Record<string, number[]> };
      const file = openSafetensors(join(goldenDir(variant), 'cases.safetensors'));
      expect(file.names().sort()).toEqual(Object.keys(cases).sort());
      for (const [name, shape] of Object.entries(cases)) expect(file.tensor(name).shape, name).toEqual(shape);
      expect([...new BigInt64Array(file.readBytes('unet.input.timestep').buffer)].length).toBe(2);
      file.close();
    }
    const sd15 = openSafetensors(join(goldenDir('tiny-sd15'), 'cases.safetensors'));
    expect([...new BigInt64Array(sd15.readBytes('unet.input.timestep').buffer)]).toEqual([10n, 999n]);
    expect(sd15.readFloat32('ddpm.alphas_cumprod')[0]).toBeCloseTo(1 - 0.00085, 6); // scaled_linear, beta_start 0.00085
    sd15.close();
    const lora = openSafetensors(join(goldenDir('tiny-sd15'), 'lora_kohya.safetensors'));
    expect(lora.metadata).toEqual({ ss_network_dim: '4', ss_network_alpha: '8' });
    expect(lora.readFloat32(lora.names().find((n) => n.endsWith('.alpha')) as string)[0]).toBe(8);
    lora.close();
  });
});

/** A valid file whose header we then edit as JSON. */
function withHeader(edit: (header: Record<string, any>) => void, extraData = 0, cutData = 0): Uint8Array {
  const good = encodeSafetensors(sample(), { format: 'pt' });
  const n = Number(Buffer.from(good).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(good.subarray(8, 8 + n)).toString('utf8'));
  edit(header);
  const text = Buffer.from(JSON.stringify(header));
  const data = good.subarray(8 + n, good.byteLength - cutData);
  const out = new Uint8Array(8 + text.byteLength + data.byteLength + extraData);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.byteLength), true);
  out.set(text, 8);
  out.set(data, 8 + text.byteLength);
  return out;
}

const problem = (bytes: Uint8Array): string => {
  try {
    decodeSafetensors(bytes, 'case.safetensors');
    return 'accepted';
  } catch (error) {
    expect(error).toBeInstanceOf(SafetensorsError);
    expect((error as Error).message.startsWith('case.safetensors: ')).toBe(true);
    return (error as Error).message;
  }
};

describe('safetensors validation', () => {
  it('accepts a well-formed file and refuses each kind of damage with a named reason', () => {
    expect(problem(withHeader(() => {}))).toBe('accepted');
    expect(problem(withHeader(() => {}, 3))).toMatch(/trailing bytes: header says 113 bytes of tensor data, file has 116/);
    expect(problem(withHeader(() => {}, 0, 10))).toMatch(/truncated: header says 113 bytes of tensor data, file has 103/);
    expect(problem(withHeader((h) => (h['ids'].dtype = 'F7')))).toMatch(/"ids": unknown dtype "F7"/);
    expect(problem(withHeader((h) => (h['z.weight'].shape = [4, 4])))).toMatch(/"z.weight": F32\[4, 4\] needs 64 bytes/);
    expect(problem(withHeader((h) => (h['ids'].data_offsets = [h['ids'].data_offsets[0] - 4, h['ids'].data_offsets[1] - 4])))).toMatch(/overlap|gap/);
    expect(problem(withHeader((h) => delete h['flag'].shape))).toMatch(/"flag": entry needs dtype, shape and data_offsets/);
    expect(problem(withHeader((h) => (h.__metadata__ = { format: 1 })))).toMatch(/__metadata__ value of "format" is not a string/);
    expect(problem(withHeader((h) => (h['flag'].data_offsets = [1, 0])))).toMatch(/end before they begin|overlap|needs/);
    expect(problem(new Uint8Array(4))).toMatch(/too small/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 200_000_000n, true);
    expect(problem(huge)).toMatch(/exceeds the 100000000-byte limit/);
    const notJson = withHeader(() => {});
    notJson[9] = 0x7b; // '{{'
    expect(problem(notJson)).toMatch(/not valid JSON/);
  });

  it('also validates when opening a file, naming its path', () => {
    const path = join(work, 'trailing.safetensors');
    writeFileSync(path, withHeader(() => {}, 5));
    expect(() => openSafetensors(path)).toThrow(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: trailing bytes`));
    expect(() => openSafetensors(join(work, 'missing.safetensors'))).toThrow(/missing\.safetensors: cannot open \(ENOENT\)/);
  });

  it('fuzz: every mutation is accepted or refused with a SafetensorsError naming the file', () => {
    const random = createRandom(12345); // seeded, so a failing fuzz case can be replayed
    const int = (n: number): number => Math.floor(random() * n);
    const base = encodeSafetensors(sample(), { format: 'pt' });
    const headerEnd = 8 + Number(Buffer.from(base).readBigUInt64LE(0));
    const outcomes = { accepted: 0, refused: 0 };
    const structured: (() => Uint8Array)[] = [
      () => withHeader((h) => (h[Object.keys(h)[1 + int(6)]].dtype = ['F32', 'F16', 'I8', 'U64', 'x', 7, null][int(7)])),
      () => withHeader((h) => (h[Object.keys(h)[1 + int(6)]].shape = [int(5), int(5)])),
      () => withHeader((h) => (h[Object.keys(h)[1 + int(6)]].data_offsets = [int(200), int(200)])),
      () => withHeader((h) => (h[Object.keys(h)[1 + int(6)]].data_offsets = 'nope')),
      () => withHeader((h) => (h.__metadata__ = [{ a: 1 }, 'x', null, { a: ['b'] }, { a: 'b' }][int(5)])),
      () => withHeader((h) => (h['extra'] = { dtype: 'F32', shape: [1], data_offsets: [113, 117] }), int(2) * 4),
      () => withHeader(() => {}, int(9), int(9)),
    ];
    for (let round = 0; round < 3000; round++) {
      let bytes: Uint8Array;
      const kind = round % 4;
      if (kind === 0) {
        bytes = base.slice();
        for (let flips = 1 + int(4); flips > 0; flips--) bytes[8 + int(headerEnd - 8)] ^= 1 << int(8);
      } else if (kind === 1) {
        bytes = base.slice(0, int(base.byteLength + 1));
      } else if (kind === 2) {
        bytes = base.slice();
        bytes[int(8)] = int(256); // damage the length prefix
      } else bytes = structured[int(structured.length)]();
      const result = problem(bytes);
      outcomes[result === 'accepted' ? 'accepted' : 'refused']++;
    }
    expect(outcomes.refused).toBeGreaterThan(1000);
    expect(outcomes.accepted).toBeGreaterThan(0);
  });
});
