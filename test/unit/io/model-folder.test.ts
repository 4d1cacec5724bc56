import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { float32ToFloat16 } from '../../../src-main/engine/io/dtype-convert';
import { findWeightFiles, openModelFolder } from '../../../src-main/engine/io/model-folder';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../../../src-main/engine/io/safetensors';
import { goldenDir } from '../../helpers/golden';

const work = mkdtempSync(join(tmpdir(), 'model-folder-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const sd15 = join(goldenDir('tiny-sd15'), 'model');
const sdxl = join(goldenDir('tiny-sdxl'), 'model');
const readJson = (p: string): Record<string, unknown> => JSON.parse(readFileSync(p, 'utf8'));

/** A private copy of a golden model folder we can damage. */
function copyOf(src: string, name: string): string {
  const dir = join(work, name);
  cpSync(src, dir, { recursive: true });
  return dir;
}

describe('openModelFolder', () => {
  it('opens tiny-sd15: configs as in the files, weights over the safetensors files', () => {
    const model = openModelFolder(sd15);
    expect(model.kind).toBe('sd1');
    expect(model.textEncoder2).toBeUndefined();
    expect(model.tokenizerDir).toBe(join(sd15, 'tokenizer'));
    const unetJson = readJson(join(sd15, 'unet', 'config.json'));
    expect(model.unet.config).toEqual(unetJson); // every upstream key present in the file: nothing added or lost
    expect(model.vae.config.scaling_factor).toBe(0.18215);
    expect(model.textEncoder.config).toMatchObject({ hidden_size: 32, num_hidden_layers: 5, hidden_act: 'quick_gelu' });
    expect(model.schedulerConfig).toMatchObject({ _class_name: 'PNDMScheduler', beta_schedule: 'scaled_linear', steps_offset: 1, prediction_type: 'epsilon' });
    expect(model.unet.weights.size).toBe(openSafetensors(join(sd15, 'unet', 'diffusion_pytorch_model.safetensors')).tensors.length);
    expect(model.unet.weights.take('conv_in.weight', [32, 4, 3, 3]).data.kind).toBe('file');
  });

  it('opens tiny-sdxl with both text encoders and tokenizers', () => {
    const model = openModelFolder(sdxl);
    expect(model.kind).toBe('sdxl');
    expect(model.textEncoder2?.config).toMatchObject({ hidden_act: 'gelu', projection_dim: 32 });
    expect(model.textEncoder2?.weights.has('text_projection.weight')).toBe(true);
    expect(model.tokenizer2Dir).toBe(join(sdxl, 'tokenizer_2'));
    expect(model.unet.config).toMatchObject({ addition_embed_type: 'text_time', addition_time_embed_dim: 8, attention_head_dim: [2, 4, 4] });
    expect(model.schedulerConfig).toMatchObject({ _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'leading' });
  });

  it('fills upstream defaults for absent keys', () => {
    const dir = copyOf(sd15, 'defaults');
    const path = join(dir, 'unet', 'config.json');
    const json = readJson(path);
    for (const key of ['resnet_time_scale_shift', 'attention_type', 'transformer_layers_per_block', 'norm_eps', 'upcast_attention']) delete json[key];
    writeFileSync(path, JSON.stringify(json));
    const config = openModelFolder(dir).unet.config;
    expect(config).toMatchObject({ resnet_time_scale_shift: 'default', attention_type: 'default', transformer_layers_per_block: 1, norm_eps: 1e-5, upcast_attention: false });
  });

  it('refuses unsupported config features, naming the file and the key', () => {
    const cases: [string, unknown][] = [
      ['class_embed_type', 'timestep'],
      ['addition_embed_type', 'image'],
      ['time_cond_proj_dim', 256],
      ['resnet_time_scale_shift', 'scale_shift'],
      ['attention_type', 'gated'],
      ['act_fn', 'gelu'],
    ];
    const dir = copyOf(sd15, 'refuse');
    const path = join(dir, 'unet', 'config.json');
    const original = readFileSync(path, 'utf8');
    for (const [key, value] of cases) {
      writeFileSync(path, JSON.stringify({ ...JSON.parse(original), [key]: value }));
      expect(() => openModelFolder(dir), key).toThrow(`${path}: ${key} = ${JSON.stringify(value)} is not supported`);
    }
    writeFileSync(path, '{ not json');
    expect(() => openModelFolder(dir)).toThrow(`${path}: not valid JSON`);
  });

  it('finds fp16 variants and sharded weights, and refuses pickles', () => {
    const dir = copyOf(sd15, 'variants');
    const vaeDir = join(dir, 'vae');
    const full = openSafetensors(join(vaeDir, 'diffusion_pytorch_model.safetensors'));
    const half: TensorToWrite[] = full.tensors.map((t) => ({ name: t.name, dtype: 'F16', shape: t.shape, data: float32ToFloat16(full.readFloat32(t.name)) }));
    writeSafetensors(join(vaeDir, 'diffusion_pytorch_model.fp16.safetensors'), half);
    expect(openModelFolder(dir, { variant: 'fp16' }).vae.weights.entry('quant_conv.weight')?.dtype).toBe('F16');
    expect(openModelFolder(dir).vae.weights.entry('quant_conv.weight')?.dtype).toBe('F32');

    // Shard the UNet in two, with an index, and drop the single file.
    const unetDir = join(dir, 'unet');
    const single = join(unetDir, 'diffusion_pytorch_model.safetensors');
    const unet = openSafetensors(single);
    const names = unet.names();
    const shards = [names.slice(0, 300), names.slice(300)];
    const weightMap: Record<string, string> = {};
    shards.forEach((keys, i) => {
      const file = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(join(unetDir, file), keys.map((k) => ({ name: k, dtype: 'F32', shape: unet.tensor(k).shape, data: unet.readBytes(k) })));
      for (const k of keys) weightMap[k] = file;
    });
    unlinkSync(single);
    const indexPath = join(unetDir, 'diffusion_pytorch_model.safetensors.index.json');
    writeFileSync(indexPath, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const sharded = openModelFolder(dir).unet.weights;
    expect(sharded.keys().sort()).toEqual([...names].sort());
    for (const k of names) expect(Buffer.from(sharded.readBytes(k)).equals(unet.readBytes(k)), k).toBe(true);
    expect(findWeightFiles(unetDir, 'diffusion_pytorch_model')).toHaveLength(2);
    writeFileSync(indexPath, JSON.stringify({ weight_map: { ...weightMap, 'ghost.weight': 'diffusion_pytorch_model-00001-of-00002.safetensors' } }));
    expect(() => openModelFolder(dir)).toThrow(`${indexPath}: "ghost.weight" is listed in diffusion_pytorch_model-00001-of-00002.safetensors but no shard has it`);
    unet.close();
    full.close();

    const textDir = join(dir, 'text_encoder');
    cpSync(join(textDir, 'model.safetensors'), join(textDir, 'pytorch_model.bin'));
    unlinkSync(join(textDir, 'model.safetensors'));
    expect(() => findWeightFiles(textDir, 'model')).toThrow(/pytorch_model\.bin: PyTorch pickle weights are not supported/);
    unlinkSync(join(textDir, 'pytorch_model.bin'));
    expect(() => findWeightFiles(textDir, 'model')).toThrow(`${textDir}: no model.safetensors`);
  });

  it('names the missing piece of a broken folder', () => {
    expect(() => openModelFolder(work)).toThrow(`${work}: not a diffusers model folder (no model_index.json)`);
    const dir = copyOf(sd15, 'no-vae');
    rmSync(join(dir, 'vae'), { recursive: true });
    expect(() => openModelFolder(dir)).toThrow(`${dir}: model folder has no vae/ folder`);
  });
});
