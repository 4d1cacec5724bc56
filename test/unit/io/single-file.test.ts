// Builds LDM-layout single-file checkpoints from the golden diffusers folders with a converter
// written here, independently of single-file.ts (diffusers -> LDM, the inverse direction), then
// checks that openSingleFile gives every diffusers key back with the same shape and bytes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openModelFolder, type OpenedModel } from '../../../src-main/engine/io/model-folder';
import { writeSafetensors, type TensorToWrite } from '../../../src-main/engine/io/safetensors';
import { openSingleFile } from '../../../src-main/engine/io/single-file';
import { WeightSource } from '../../../src-main/engine/io/weights';
import { goldenDir } from '../../helpers/golden';

const work = mkdtempSync(join(tmpdir(), 'single-file-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

type Rule = [RegExp, (m: RegExpExecArray) => string];

/** diffusers UNet -> LDM, for layers_per_block 2 (3 LDM blocks per level). */
function unetRules(upAttention: (level: number) => boolean): Rule[] {
  const resnet = (part: string): string =>
    part.replace(/^norm1\./, 'in_layers.0.').replace(/^conv1\./, 'in_layers.2.').replace(/^time_emb_proj\./, 'emb_layers.1.')
      .replace(/^norm2\./, 'out_layers.0.').replace(/^conv2\./, 'out_layers.3.').replace(/^conv_shortcut\./, 'skip_connection.');
  return [
    [/^conv_in\.(.+)$/, (m) => `input_blocks.0.0.${m[1]}`],
    [/^time_embedding\.linear_1\.(.+)$/, (m) => `time_embed.0.${m[1]}`],
    [/^time_embedding\.linear_2\.(.+)$/, (m) => `time_embed.2.${m[1]}`],
    [/^add_embedding\.linear_1\.(.+)$/, (m) => `label_emb.0.0.${m[1]}`],
    [/^add_embedding\.linear_2\.(.+)$/, (m) => `label_emb.0.2.${m[1]}`],
    [/^down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/, (m) => `input_blocks.${3 * +m[1] + +m[2] + 1}.0.${resnet(m[3])}`],
    [/^down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$/, (m) => `input_blocks.${3 * +m[1] + +m[2] + 1}.1.${m[3]}`],
    [/^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/, (m) => `input_blocks.${3 * (+m[1] + 1)}.0.op.${m[2]}`],
    [/^mid_block\.resnets\.0\.(.+)$/, (m) => `middle_block.0.${resnet(m[1])}`],
    [/^mid_block\.attentions\.0\.(.+)$/, (m) => `middle_block.1.${m[1]}`],
    [/^mid_block\.resnets\.1\.(.+)$/, (m) => `middle_block.2.${resnet(m[1])}`],
    [/^up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/, (m) => `output_blocks.${3 * +m[1] + +m[2]}.0.${resnet(m[3])}`],
    [/^up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$/, (m) => `output_blocks.${3 * +m[1] + +m[2]}.1.${m[3]}`],
    [/^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/, (m) => `output_blocks.${3 * +m[1] + 2}.${upAttention(+m[1]) ? 2 : 1}.conv.${m[2]}`],
    [/^conv_norm_out\.(.+)$/, (m) => `out.0.${m[1]}`],
    [/^conv_out\.(.+)$/, (m) => `out.2.${m[1]}`],
  ];
}

/** diffusers VAE (4 levels) -> LDM. */
const VAE_RULES: Rule[] = [
  [/^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/, (m) => `encoder.down.${m[1]}.block.${m[2]}.${m[3].replace('conv_shortcut', 'nin_shortcut')}`],
  [/^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/, (m) => `encoder.down.${m[1]}.downsample.conv.${m[2]}`],
  [/^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/, (m) => `decoder.up.${3 - +m[1]}.block.${m[2]}.${m[3].replace('conv_shortcut', 'nin_shortcut')}`],
  [/^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/, (m) => `decoder.up.${3 - +m[1]}.upsample.conv.${m[2]}`],
  [/^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$/, (m) => `${m[1]}.mid.block_${+m[2] + 1}.${m[3]}`],
  [/^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.(.+)$/, (m) => `${m[1]}.mid.attn_1.norm.${m[2]}`],
  [/^(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\.(.+)$/, (m) => `${m[1]}.mid.attn_1.${m[2]}.${m[3]}`],
  [/^(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.(.+)$/, (m) => `${m[1]}.mid.attn_1.proj_out.${m[2]}`],
  [/^(encoder|decoder)\.conv_norm_out\.(.+)$/, (m) => `${m[1]}.norm_out.${m[2]}`],
  [/^(.+)$/, (m) => m[1]],
];

function applyRules(key: string, rules: Rule[]): string {
  for (const [pattern, to] of rules) {
    const m = pattern.exec(key);
    if (m) return to(m);
  }
  throw new Error(`test converter: no rule for ${key}`);
}

const tensorOf = (source: WeightSource, key: string, name: string, shape?: number[]): TensorToWrite => ({
  name,
  dtype: source.entry(key)!.dtype,
  shape: shape ?? [...source.entry(key)!.shape],
  data: source.readBytes(key),
});

/** A diffusers CLIP text model (keys with or without "text_model.") as an OpenCLIP text tower under `prefix`. */
function openClipTensors(text: WeightSource, prefix: string, layers: number, hidden: number): TensorToWrite[] {
  const k = (name: string): string => (text.has(`text_model.${name}`) ? `text_model.${name}` : name);
  const out: TensorToWrite[] = [
    tensorOf(text, k('embeddings.token_embedding.weight'), `${prefix}token_embedding.weight`),
    tensorOf(text, k('embeddings.position_embedding.weight'), `${prefix}positional_embedding`),
    tensorOf(text, k('final_layer_norm.weight'), `${prefix}ln_final.weight`),
    tensorOf(text, k('final_layer_norm.bias'), `${prefix}ln_final.bias`),
    { name: `${prefix}logit_scale`, dtype: 'F32', shape: [], data: Float32Array.from([4.6]) },
  ];
  for (let i = 0; i < layers; i++) {
    const src = (part: string): string => k(`encoder.layers.${i}.${part}`);
    const dst = `${prefix}transformer.resblocks.${i}.`;
    for (const [from, to] of [['layer_norm1', 'ln_1'], ['layer_norm2', 'ln_2'], ['self_attn.out_proj', 'attn.out_proj'], ['mlp.fc1', 'mlp.c_fc'], ['mlp.fc2', 'mlp.c_proj']])
      for (const p of ['weight', 'bias']) out.push(tensorOf(text, src(`${from}.${p}`), `${dst}${to}.${p}`));
    for (const p of ['weight', 'bias']) {
      const parts = ['q', 'k', 'v'].map((x) => text.readBytes(src(`self_attn.${x}_proj.${p}`)));
      const fused = new Uint8Array(parts.reduce((n, b) => n + b.byteLength, 0));
      parts.forEach((b, j) => fused.set(b, j * b.byteLength));
      out.push({ name: `${dst}attn.in_proj_${p}`, dtype: 'F32', shape: p === 'weight' ? [3 * hidden, hidden] : [3 * hidden], data: fused });
    }
  }
  return out;
}

/** text_projection.weight [p, c] (nn.Linear) -> OpenCLIP text_projection [c, p] (x @ P). */
function transposed(source: WeightSource, key: string, name: string): TensorToWrite {
  const [p, c] = source.entry(key)!.shape;
  const v = source.readFloat32(key);
  const t = new Float32Array(p * c);
  for (let i = 0; i < p; i++) for (let j = 0; j < c; j++) t[j * p + i] = v[i * c + j];
  return { name, dtype: 'F32', shape: [c, p], data: t };
}

function ldmUnetAndVae(model: OpenedModel): TensorToWrite[] {
  const upAttention = (i: number): boolean => model.unet.config.up_block_types[i].startsWith('CrossAttn');
  const rules = unetRules(upAttention);
  const out: TensorToWrite[] = model.unet.weights.keys().map((k) => tensorOf(model.unet.weights, k, `model.diffusion_model.${applyRules(k, rules)}`));
  for (const k of model.vae.weights.keys()) {
    const entry = model.vae.weights.entry(k)!;
    const attention1x1 = /mid_block\.attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(k);
    out.push(tensorOf(model.vae.weights, k, `first_stage_model.${applyRules(k, VAE_RULES)}`, attention1x1 ? [...entry.shape, 1, 1] : undefined));
  }
  return out;
}

function expectSameTensors(actual: WeightSource, expected: WeightSource, rename: (key: string) => string = (k) => k): void {
  expect(actual.keys().sort()).toEqual(expected.keys().map(rename).sort());
  for (const key of expected.keys()) {
    const name = rename(key);
    expect(actual.entry(name)!.shape, name).toEqual(expected.entry(key)!.shape);
    expect(Buffer.from(actual.readBytes(name)).equals(expected.readBytes(key)), name).toBe(true);
  }
}

const withTextModel = (k: string): string => (k.startsWith('text_model.') || k === 'text_projection.weight' ? k : `text_model.${k}`);

describe('openSingleFile', () => {
  it('maps an SD1 (LDM layout) checkpoint back to every diffusers key, shape and byte', () => {
    const golden = openModelFolder(join(goldenDir('tiny-sd15'), 'model'));
    const text = golden.textEncoder.weights;
    const tensors = [...ldmUnetAndVae(golden), ...text.keys().map((k) => tensorOf(text, k, `cond_stage_model.transformer.text_model.${k}`))];
    tensors.push({ name: 'cond_stage_model.transformer.text_model.embeddings.position_ids', dtype: 'I64', shape: [1, 77], data: new BigInt64Array(77) });
    const path = join(work, 'sd15.safetensors');
    writeSafetensors(path, tensors);

    const single = openSingleFile(path, { configOverrides: { textEncoder: { num_attention_heads: 4 } } });
    expect(single.kind).toBe('sd1');
    expectSameTensors(single.unet.weights, golden.unet.weights);
    expectSameTensors(single.vae.weights, golden.vae.weights);
    expectSameTensors(single.textEncoder.weights, text, withTextModel);

    // Configs inferred from shapes agree with the folder's config.json wherever the weights decide.
    const structural = ['in_channels', 'out_channels', 'block_out_channels', 'layers_per_block', 'down_block_types', 'up_block_types', 'cross_attention_dim', 'use_linear_projection', 'transformer_layers_per_block', 'attention_head_dim', 'addition_embed_type'] as const;
    for (const key of structural) expect(single.unet.config[key], key).toEqual(golden.unet.config[key]);
    for (const key of ['block_out_channels', 'layers_per_block', 'latent_channels', 'scaling_factor', 'in_channels', 'out_channels'] as const)
      expect(single.vae.config[key], key).toEqual(golden.vae.config[key]);
    for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'vocab_size', 'max_position_embeddings', 'hidden_act'] as const)
      expect(single.textEncoder.config[key], key).toEqual(golden.textEncoder.config[key]);
    expect(single.schedulerConfig).toMatchObject({ prediction_type: 'epsilon', beta_schedule: 'scaled_linear', steps_offset: 1 });

    // Every tensor is taken by a loader that asks for the full key set.
    for (const w of [single.unet.weights, single.vae.weights, single.textEncoder.weights]) {
      for (const k of w.keys()) w.take(k, w.entry(k)!.shape);
      w.assertAllTaken();
    }
  });

  it('maps an SDXL checkpoint: both embedders, label_emb, transposed text_projection', () => {
    const golden = openModelFolder(join(goldenDir('tiny-sdxl'), 'model'));
    const text1 = golden.textEncoder.weights;
    const text2 = golden.textEncoder2!.weights;
    const layers = golden.textEncoder2!.config.num_hidden_layers;
    const tensors = [
      ...ldmUnetAndVae(golden),
      ...text1.keys().map((k) => tensorOf(text1, k, `conditioner.embedders.0.transformer.${withTextModel(k)}`)),
      ...openClipTensors(text2, 'conditioner.embedders.1.model.', layers, 32),
      transposed(text2, 'text_projection.weight', 'conditioner.embedders.1.model.text_projection'),
    ];
    const path = join(work, 'sdxl.safetensors');
    writeSafetensors(path, tensors);

    const single = openSingleFile(path, {
      configOverrides: { unet: { attention_head_dim: [2, 4, 4] }, textEncoder: { num_attention_heads: 4 }, textEncoder2: { num_attention_heads: 4 } },
    });
    expect(single.kind).toBe('sdxl');
    expectSameTensors(single.unet.weights, golden.unet.weights);
    expectSameTensors(single.vae.weights, golden.vae.weights);
    expectSameTensors(single.textEncoder.weights, text1, withTextModel);
    expectSameTensors(single.textEncoder2!.weights, text2);
    for (const key of ['block_out_channels', 'down_block_types', 'up_block_types', 'transformer_layers_per_block', 'use_linear_projection', 'cross_attention_dim', 'addition_embed_type', 'addition_time_embed_dim', 'projection_class_embeddings_input_dim'] as const)
      expect(single.unet.config[key], key).toEqual(golden.unet.config[key]);
    expect(single.textEncoder2!.config).toMatchObject({ hidden_act: 'gelu', projection_dim: 32, num_hidden_layers: layers });
    expect(single.vae.config.scaling_factor).toBe(0.13025);
    expect(single.schedulerConfig._class_name).toBe('EulerDiscreteScheduler');
  });

  it('splits SD2 OpenCLIP fused q/k/v and keeps 23 of 24 layers (here 4 of 5)', () => {
    const golden = openModelFolder(join(goldenDir('tiny-sd15'), 'model'));
    const text = golden.textEncoder.weights;
    const tensors = [...ldmUnetAndVae(golden), ...openClipTensors(text, 'cond_stage_model.model.', 5, 32)];
    const projection = WeightSource.fromTensors([{ name: 'p', dtype: 'F32', shape: [8, 32], data: Float32Array.from({ length: 256 }, (_, i) => i) }]);
    tensors.push(transposed(projection, 'p', 'cond_stage_model.model.text_projection')); // SD2 drops it
    const path = join(work, 'sd2.safetensors');
    writeSafetensors(path, tensors);

    const single = openSingleFile(path, { predictionType: 'v_prediction', configOverrides: { textEncoder: { num_attention_heads: 4 } } });
    expect(single.kind).toBe('sd2');
    expect(single.schedulerConfig.prediction_type).toBe('v_prediction');
    expect(single.textEncoder.config).toMatchObject({ num_hidden_layers: 4, hidden_act: 'gelu', architectures: ['CLIPTextModel'] });
    const withoutLastLayer = (k: string): boolean => !k.startsWith('encoder.layers.4.');
    const keep = text.view((k) => (withoutLastLayer(k) ? k : undefined));
    expectSameTensors(single.textEncoder.weights, keep, withTextModel);
    expect(single.textEncoder.weights.entry('text_model.encoder.layers.2.self_attn.k_proj.weight')!.bytes.kind).toBe('file'); // split in place
  });

  it('refuses pickles and files that are not full checkpoints', () => {
    const ckpt = join(work, 'model.ckpt');
    writeFileSync(ckpt, 'PK\u0003\u0004');
    expect(() => openSingleFile(ckpt)).toThrow(`${ckpt}: PyTorch pickle checkpoints (.ckpt/.pt/.bin) are not supported`);
    const renamed = join(work, 'renamed.safetensors');
    writeFileSync(renamed, 'PK\u0003\u0004 more');
    expect(() => openSingleFile(renamed)).toThrow(/pickle \(zip\) checkpoint renamed to \.safetensors/);
    const lora = join(goldenDir('tiny-sd15'), 'lora_kohya.safetensors');
    expect(() => openSingleFile(lora)).toThrow(`${lora}: no "model.diffusion_model.*" tensors`);
  });
});

