// The embedded default model: a tiny Stable Diffusion 1.x model in the diffusers folder layout
// that the project generates deterministically (seeded weights), so the app, the CLI and the tests
// work offline without a download. It has the real SD1.x topology at toy width (channels 32/64,
// 64 px images, 8x8 latents, a byte-level CLIP tokenizer). It is NOT a trained model: its images
// are noise-like; it exists to exercise the whole pipeline (captions, training, previews, export).
//
// The weight list is not written by hand: random-weights.ts builds each model once and fills the
// names and shapes it asks for with seeded values.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../io/safetensors';
import { randomWeightsFor } from './random-weights';
import { buildVaeDecoder, buildVaeEncoder, type AutoencoderKLConfig } from './autoencoder-kl';
import { buildClipTextModel, type CLIPTextConfig } from './clip-text-model';
import { buildUNet2DCondition } from './unet-2d-condition';
import type { UNet2DConditionConfig } from '../io/configs';

export const EMBEDDED_MODEL_NAME = 'lora-studio-tiny-sd15';
/** Bump when the generated files change, so cached copies are regenerated. */
const GENERATOR_VERSION = '2';
const SEED = 20261123;

const unetConfig = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [32, 32, 64, 64],
  center_input_sample: false,
  cross_attention_dim: 32,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 8,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  use_linear_projection: false,
  upcast_attention: false,
};

const vaeConfig = {
  _class_name: 'AutoencoderKL',
  act_fn: 'silu',
  block_out_channels: [32, 32, 64, 64],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 1,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 64,
  scaling_factor: 0.18215,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

// GPT-2 / CLIP byte-to-unicode table: every byte gets a printable character.
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}

/** A byte-level CLIP vocabulary: each byte alone and at a word end, plus the two special tokens. */
function tinyVocab(): Record<string, number> {
  const chars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => (vocab[c] = i));
  chars.forEach((c, i) => (vocab[`${c}</w>`] = 256 + i));
  vocab['<|startoftext|>'] = 512;
  vocab['<|endoftext|>'] = 513;
  return vocab;
}

const textEncoderConfig = {
  architectures: ['CLIPTextModel'],
  bos_token_id: 512,
  eos_token_id: 513,
  pad_token_id: 513,
  hidden_act: 'quick_gelu',
  hidden_size: 32,
  intermediate_size: 64,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: 'clip_text_model',
  num_attention_heads: 4,
  num_hidden_layers: 4,
  projection_dim: 32,
  vocab_size: 514,
};

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * The embedded model's folder under `modelsDir`, generated on first use (a few MB, about a
 * second). Generation goes to a temporary folder that is renamed into place, so an interrupted
 * run never leaves a half-written model behind.
 */
export function ensureEmbeddedModel(modelsDir: string): string {
  const dir = join(modelsDir, EMBEDDED_MODEL_NAME);
  const stamp = join(dir, 'lora-studio-embedded.json');
  if (existsSync(stamp) && JSON.parse(readFileSync(stamp, 'utf8')).version === GENERATOR_VERSION) return dir;

  const temp = `${dir}.tmp-${process.pid}`;
  rmSync(temp, { recursive: true, force: true });
  for (const sub of ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler']) mkdirSync(join(temp, sub), { recursive: true });

  writeJson(join(temp, 'model_index.json'), {
    _class_name: 'StableDiffusionPipeline',
    scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    safety_checker: [null, null],
    feature_extractor: [null, null],
    requires_safety_checker: false,
  });
  writeJson(join(temp, 'scheduler', 'scheduler_config.json'), {
    _class_name: 'PNDMScheduler',
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    prediction_type: 'epsilon',
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    clip_sample: false,
    trained_betas: null,
  });
  writeJson(join(temp, 'unet', 'config.json'), unetConfig);
  writeJson(join(temp, 'vae', 'config.json'), vaeConfig);
  writeJson(join(temp, 'text_encoder', 'config.json'), textEncoderConfig);
  writeJson(join(temp, 'tokenizer', 'vocab.json'), tinyVocab());
  writeFileSync(join(temp, 'tokenizer', 'merges.txt'), '#version: 0.2\n');
  writeJson(join(temp, 'tokenizer', 'tokenizer_config.json'), {
    tokenizer_class: 'CLIPTokenizer',
    model_max_length: 77,
    do_lower_case: true,
    bos_token: '<|startoftext|>',
    eos_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
    pad_token: '<|endoftext|>',
  });

  const unet = randomWeightsFor(SEED, (p) => {
    const g = p.graph;
    buildUNet2DCondition(p, unetConfig as unknown as UNet2DConditionConfig, {
      sample: g.input('sample', 'float32', [1, 4, 8, 8]),
      timestep: g.input('timestep', 'float32', [1]),
      encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 32]),
    });
  });
  writeSafetensors(join(temp, 'unet', 'diffusion_pytorch_model.safetensors'), unet, { format: 'pt' });

  const vae = randomWeightsFor(SEED, (p) => {
    const g = p.graph;
    const config = vaeConfig as unknown as AutoencoderKLConfig;
    buildVaeEncoder(p, config, g.input('image', 'float32', [1, 3, 64, 64]));
    buildVaeDecoder(p, config, g.input('latents', 'float32', [1, 4, 8, 8]));
  });
  writeSafetensors(join(temp, 'vae', 'diffusion_pytorch_model.safetensors'), vae, { format: 'pt' });

  const textEncoder = randomWeightsFor(SEED, (p) => {
    buildClipTextModel(p, textEncoderConfig as unknown as CLIPTextConfig, p.graph.input('ids', 'int64', [1, 77]), {
      textModelPrefix: 'text_model',
    });
  });
  writeSafetensors(join(temp, 'text_encoder', 'model.safetensors'), textEncoder, { format: 'pt' });

  writeJson(join(temp, 'lora-studio-embedded.json'), { version: GENERATOR_VERSION, seed: SEED });
  rmSync(dir, { recursive: true, force: true });
  renameSync(temp, dir);
  return dir;
}
