// Importing LoRA files made elsewhere: kohya and diffusers/peft naming, linear and conv modules,
// text-encoder keys, keys that fit nothing (listed), LoRAs for another base model and truncated
// files (clear errors). The imported weights drive the UNet as peft's reference LoRA does.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { writeSafetensors, type TensorToWrite } from '../../../src-main/engine/io/safetensors';
import { importLoraFile, loraTargetCatalog, toKohyaTensors, type ImportedLora } from '../../../src-main/engine/lora/lora-import';
import { buildUNet2DCondition } from '../../../src-main/engine/models/unet-2d-condition';
import { Params } from '../../../src-main/engine/nn/params';
import { Session } from '../../../src-main/engine/runtime/session';
import { slotFeeds, slotHook, slotSpecOf } from '../../../src-main/engine/sample/lora-slots';
import { goldenDir, goldenFeed, readGoldenTensors } from '../../helpers/golden';
import { difference } from '../../golden/models/compare';

const dir = goldenDir('tiny-sd15');
const model = openModelFolder(join(dir, 'model'));
const catalog = loraTargetCatalog(model);
const kohyaPath = join(dir, 'lora_kohya.safetensors');
const diffusersPath = join(dir, 'lora_diffusers.safetensors');
const work = mkdtempSync(join(tmpdir(), 'lora-studio-import-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** UNet(unet.input.*) with `lora` in a slot at strength 1. */
async function unetWithLora(lora: ImportedLora): Promise<Float32Array> {
  const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
  const g = new Graph('unet_lora');
  const sample = g.input('sample', 'float32', cases.get('unet.input.sample')!.shape);
  const timestep = g.input('timestep', 'int64', cases.get('unet.input.timestep')!.shape);
  const ehs = g.input('ehs', 'float32', cases.get('unet.input.encoder_hidden_states')!.shape);
  const slots = [slotSpecOf(lora.name, lora)];
  const { hook, finish } = slotHook('unet', slots);
  const out = buildUNet2DCondition(new Params(g, model.unet.weights.view((n) => n), { dtype: 'float32', hook }), model.unet.config, { sample, timestep, encoderHiddenStates: ehs });
  finish();
  g.output(out, 'out');
  const session = await Session.create(serializeModel(g));
  const feeds = slotFeeds('unet', slots, [{ slot: 0, weights: lora, strength: 1 }], new Set(session.inputNames));
  const r = await session.run({ sample: goldenFeed(cases.get('unet.input.sample')!), timestep: goldenFeed(cases.get('unet.input.timestep')!), ehs: goldenFeed(cases.get('unet.input.encoder_hidden_states')!), ...feeds });
  return r.out!.data as Float32Array;
}

describe('importLoraFile', () => {
  it('reads the kohya golden file: 128 attention modules, rank 4, alpha 8, nothing unmatched', () => {
    const lora = importLoraFile(kohyaPath, catalog);
    expect(lora.format).toBe('kohya');
    expect(lora.modules).toHaveLength(128);
    expect(lora.unmatched).toEqual([]);
    expect(new Set(lora.modules.map((m) => `${m.component} ${m.kind} ${m.rank} ${m.alpha}`))).toEqual(new Set(['unet linear 4 8']));
    expect(lora.modules.map((m) => m.module)).toContain('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0');
    expect(lora.metadata).toMatchObject({ ss_network_dim: '4', ss_network_alpha: '8' });
  });

  it('reads the diffusers golden file to the same modules (alpha from the caller; rank otherwise, as diffusers)', () => {
    const kohya = importLoraFile(kohyaPath, catalog);
    const plain = importLoraFile(diffusersPath, catalog);
    expect(plain.format).toBe('diffusers');
    expect(plain.modules.every((m) => m.alpha === 4)).toBe(true);
    expect(plain.notes.join(' ')).toMatch(/alpha = rank assumed/);
    const diffusers = importLoraFile(diffusersPath, catalog, { defaultAlpha: 8 });
    const byModule = new Map(diffusers.modules.map((m) => [m.module, m]));
    expect(byModule.size).toBe(128);
    for (const m of kohya.modules) {
      const d = byModule.get(m.module)!;
      expect([d.alpha, ...d.downShape, ...d.upShape]).toEqual([m.alpha, ...m.downShape, ...m.upShape]);
      expect(Array.from(d.down)).toEqual(Array.from(m.down));
      expect(Array.from(d.up)).toEqual(Array.from(m.up));
    }
  });

  it('drives the UNet like peft (golden lora.output), also after a kohya export and re-import', async () => {
    const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
    const expected = cases.get('lora.output')!.data as Float32Array;
    const lora = importLoraFile(kohyaPath, catalog);
    const first = await unetWithLora(lora);
    expect(difference(first, expected, { rtol: 1e-3, atol: 1e-4 }).outside).toBe(0);

    // export in kohya layout (the names LoraNetwork uses) and load back: the same output, bit for bit
    const exported = join(work, 'exported.safetensors');
    const tensors: TensorToWrite[] = [...toKohyaTensors(lora)].map(([name, data]) => ({ name, dtype: 'F32', shape: name.endsWith('.alpha') ? [] : name.includes('lora_down') ? lora.modules.find((m) => name.includes(m.module.replace(/\./g, '_') + '.'))!.downShape : lora.modules.find((m) => name.includes(m.module.replace(/\./g, '_') + '.'))!.upShape, data }));
    writeSafetensors(exported, tensors);
    const again = importLoraFile(exported, catalog);
    expect(again.modules).toHaveLength(128);
    expect(Array.from(await unetWithLora(again))).toEqual(Array.from(first));
  });

  it('takes conv (3x3 and 1x1) and text-encoder modules, and lists keys that fit nothing', () => {
    const path = join(work, 'mixed.safetensors');
    const f32 = (shape: number[], seed: number): TensorToWrite['data'] => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed + i));
    const t = (name: string, shape: number[], seed = 1): TensorToWrite => ({ name, dtype: 'F32', shape, data: f32(shape, seed) });
    writeSafetensors(path, [
      t('lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight', [2, 32, 3, 3]),
      t('lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight', [32, 2, 1, 1]),
      { name: 'lora_unet_down_blocks_0_resnets_0_conv1.alpha', dtype: 'F32', shape: [], data: Float32Array.of(1) },
      t('lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', [2, 32, 1, 1]),
      t('lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight', [32, 2, 1, 1]),
      t('lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', [3, 32]),
      t('lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', [32, 3]),
      t('lora_unet_no_such_block_to_q.lora_down.weight', [2, 32]),
      t('lora_unet_no_such_block_to_q.lora_up.weight', [32, 2]),
      t('some_embedding_vector', [4]),
    ]);
    const lora = importLoraFile(path, catalog);
    const summary = lora.modules.map((m) => `${m.component} ${m.module} ${m.kind} r${m.rank} a${m.alpha}`).sort();
    expect(summary).toEqual([
      'textEncoder text_model.encoder.layers.0.self_attn.q_proj linear r3 a3',
      'unet down_blocks.0.attentions.0.proj_in conv r2 a2',
      'unet down_blocks.0.resnets.0.conv1 conv r2 a1',
    ]);
    expect(lora.unmatched.sort()).toEqual(['lora_unet_no_such_block_to_q.lora_down.weight', 'lora_unet_no_such_block_to_q.lora_up.weight', 'some_embedding_vector']);
  });

  it('refuses a LoRA for another base model, naming the file, the key and both shapes', () => {
    const path = join(work, 'other-model.safetensors');
    writeSafetensors(path, [
      { name: 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight', dtype: 'F32', shape: [4, 48], data: new Float32Array(4 * 48) },
      { name: 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight', dtype: 'F32', shape: [48, 4], data: new Float32Array(48 * 4) },
    ]);
    expect(() => importLoraFile(path, catalog)).toThrow(
      `${path}: LoRA tensor "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" has shape [4, 48], but the model's unet layer down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q (weight [32, 32]) needs [4, 32]`,
    );
    // the SDXL golden LoRA (sd-scripts' LDM names) on the SD 1.5 model: its cross-attention is 64 wide, not 32
    const sdxlLora = join(goldenDir('tiny-sdxl'), 'lora_kohya.safetensors');
    expect(() => importLoraFile(sdxlLora, catalog)).toThrow(
      `${sdxlLora}: LoRA tensor "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight" has shape [4, 64], but the model's unet layer down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k (weight [32, 32]) needs [4, 32]`,
    );
  });

  it('refuses truncated and non-LoRA files with the file named', () => {
    const truncated = join(work, 'truncated.safetensors');
    const bytes = readFileSync(kohyaPath);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 1000));
    expect(() => importLoraFile(truncated, catalog)).toThrow(`${truncated}: truncated`);
    const notLora = join(work, 'model.safetensors');
    copyFileSync(join(dir, 'model', 'vae', 'diffusion_pytorch_model.safetensors'), notLora);
    expect(() => importLoraFile(notLora, catalog)).toThrow(`${notLora}: no LoRA tensors found`);
  });

  it('matches SDXL kohya files named in the LDM layout (sd-scripts) to diffusers modules', () => {
    const sdxl = openModelFolder(join(goldenDir('tiny-sdxl'), 'model'));
    const kohya = importLoraFile(join(goldenDir('tiny-sdxl'), 'lora_kohya.safetensors'), loraTargetCatalog(sdxl));
    const diffusers = importLoraFile(join(goldenDir('tiny-sdxl'), 'lora_diffusers.safetensors'), loraTargetCatalog(sdxl), { defaultAlpha: 8 });
    expect(kohya.unmatched).toEqual([]);
    expect(kohya.modules.map((m) => m.module).sort()).toEqual(diffusers.modules.map((m) => m.module).sort());
    const byModule = new Map(diffusers.modules.map((m) => [m.module, m]));
    for (const m of kohya.modules) expect(Array.from(m.down)).toEqual(Array.from(byModule.get(m.module)!.down));
  });
});

describe('fromKohyaModules (lora-file.ts / trainer modules -> Generator slots)', () => {
  it('gives the same modules as importLoraFile for a file read by readLoraFile', async () => {
    const { readLoraFile } = await import('../../../src-main/engine/lora/lora-file');
    const { fromKohyaModules } = await import('../../../src-main/engine/lora/lora-import');
    const viaLoraFile = fromKohyaModules(readLoraFile(kohyaPath).modules);
    const imported = importLoraFile(kohyaPath, catalog);
    const key = (m: { component: string; module: string }): string => `${m.component}:${m.module}`;
    const byKey = new Map(imported.modules.map((m) => [key(m), m]));
    expect(viaLoraFile).toHaveLength(128);
    for (const m of viaLoraFile) {
      const i = byKey.get(key(m))!;
      expect([m.kind, m.rank, m.alpha, ...m.downShape, ...m.upShape]).toEqual([i.kind, i.rank, i.alpha, ...i.downShape, ...i.upShape]);
      expect(Array.from(m.up)).toEqual(Array.from(i.up));
    }
  });
});
