import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSafetensors } from '../../../src-main/engine/io/safetensors';
import { reshapeEntry, sliceRows, transposeEntry2d, WeightSource, WeightSourceError, type WeightEntry } from '../../../src-main/engine/io/weights';
import { goldenDir } from '../../helpers/golden';

const unetFile = join(goldenDir('tiny-sd15'), 'model', 'unet', 'diffusion_pytorch_model.safetensors');
const textFile = join(goldenDir('tiny-sd15'), 'model', 'text_encoder', 'model.safetensors');

describe('WeightSource', () => {
  it('takes file-backed tensors at their byte offsets and asserts shapes', () => {
    const source = WeightSource.open(unetFile);
    const header = openSafetensors(unetFile);
    const info = header.tensor('conv_in.weight');
    const taken = source.take('conv_in.weight', [32, 4, 3, 3]);
    expect(taken).toMatchObject({ dtype: 'float32', shape: [32, 4, 3, 3], file: unetFile, sourceKey: 'conv_in.weight' });
    expect(taken.data).toEqual({ kind: 'file', path: unetFile, offset: info.offset, length: 32 * 4 * 9 * 4 });
    const fileBytes = readFileSync(unetFile);
    expect(Buffer.from(source.readBytes('conv_in.weight')).equals(fileBytes.subarray(info.offset, info.offset + info.byteLength))).toBe(true);
    expect([...source.readFloat32('conv_in.bias')]).toEqual([...header.readFloat32('conv_in.bias')]);
    header.close();

    expect(() => source.take('conv_in.weight', [32, 4, 1, 1])).toThrow(
      `${unetFile}: tensor "conv_in.weight" has shape [32,4,3,3], the model expects [32,4,1,1]`,
    );
    expect(() => source.take('conv_in.wieght', [1])).toThrow(/missing tensor "conv_in.wieght" \(expected shape \[1\]\)/);
    expect(() => source.take('conv_in.wieght', [1])).toThrow(WeightSourceError);
  });

  it('assertAllTaken lists what the model did not use', () => {
    const source = WeightSource.open(textFile);
    for (const key of source.keys()) if (key !== 'final_layer_norm.bias') source.take(key, source.entry(key)!.shape);
    expect(source.untaken()).toEqual(['final_layer_norm.bias']);
    expect(() => source.assertAllTaken()).toThrow(`${textFile}: 1 tensor(s) not used by the model: "final_layer_norm.bias"`);
    source.take('final_layer_norm.bias', [32]);
    expect(() => source.assertAllTaken()).not.toThrow();
  });

  it('views rename keys with their own bookkeeping, and errors name the stored key', () => {
    const source = WeightSource.open(textFile);
    const prefixed = source.view((k) => `cond_stage_model.transformer.text_model.${k}`);
    const back = prefixed.under('cond_stage_model.transformer.');
    expect(back.keys().sort()).toEqual(source.keys().map((k) => `text_model.${k}`).sort());
    expect(() => back.take('text_model.final_layer_norm.weight', [3])).toThrow(/the model expects \[3\]/);
    const renamed = source.view((k) => k.replace('encoder.layers.', 'layer.'));
    expect(() => renamed.take('layer.0.mlp.fc1.weight', [1])).toThrow(/"layer.0.mlp.fc1.weight" \(stored as "encoder.layers.0.mlp.fc1.weight"\)/);
    expect(() => source.view(() => 'same')).toThrow(/both map to "same"/);
    expect(source.untaken().length).toBe(source.size); // views do not mark the original
  });

  it('merges in-memory tensors and refuses duplicate names', () => {
    const memory = WeightSource.fromTensors([{ name: 'extra.weight', dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }]);
    const merged = WeightSource.merge([WeightSource.open(textFile), memory]);
    const taken = merged.take('extra.weight', [2]);
    expect(taken.data.kind).toBe('bytes');
    expect([...merged.readFloat32('extra.weight')]).toEqual([1, 2]);
    expect(() => WeightSource.merge([memory, memory])).toThrow(/comes from both/);
    expect(() => WeightSource.fromTensors([{ name: 'x', dtype: 'F16', shape: [3], data: new Uint16Array(2) }])).toThrow(/needs 6 bytes, got 4/);
  });

  it('slices rows in place, reshapes and transposes', () => {
    const source = WeightSource.open(textFile);
    const fc1 = source.entry('encoder.layers.0.mlp.fc1.weight') as WeightEntry; // [37, 32]
    const all = source.readFloat32('encoder.layers.0.mlp.fc1.weight');
    const rows = sliceRows(fc1, 10, 5);
    expect(rows.shape).toEqual([5, 32]);
    expect(rows.bytes.kind).toBe('file');
    const view = WeightSource.fromTensors([]).withEntries([
      ['rows', rows],
      ['rowsOfRows', sliceRows(transposeEntry2d(fc1), 3, 2)],
      ['t', transposeEntry2d(fc1)],
      ['flat', reshapeEntry(fc1, [37 * 32])],
    ]);
    expect([...view.readFloat32('rows')]).toEqual([...all.subarray(320, 480)]);
    const t = view.readFloat32('t');
    expect(view.entry('t')!.shape).toEqual([32, 37]);
    for (let r = 0; r < 37; r++) for (let c = 0; c < 32; c++) expect(t[c * 37 + r]).toBe(all[r * 32 + c]);
    expect([...view.readFloat32('rowsOfRows')]).toEqual([...t.subarray(3 * 37, 5 * 37)]);
    expect(view.take('flat', [1184]).data.kind).toBe('file');
    expect(view.take('t', [32, 37]).data.kind).toBe('bytes');
    expect(() => reshapeEntry(fc1, [37, 31])).toThrow(/cannot view/);
  });
});
