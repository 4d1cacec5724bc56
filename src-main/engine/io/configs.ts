// Typed model configs with exactly the upstream config.json keys, their upstream defaults (filled in
// for absent keys, as diffusers / transformers do when they load a config), and the check that
// refuses config features the engine does not implement, naming the file and the key.
//
//   UNet2DConditionConfig, SchedulerConfig (+ AutoencoderKLConfig, CLIPTextConfig from models/)
//   unetConfigFrom(json, file) / vaeConfigFrom / clipTextConfigFrom / schedulerConfigFrom
//   readJsonFile(path): the parsed object, or an error naming the file
import { readFileSync } from 'node:fs';
import type { AutoencoderKLConfig } from '../models/autoencoder-kl';
import type { CLIPTextConfig } from '../models/clip-text-model';

export type { AutoencoderKLConfig, CLIPTextConfig };

/** diffusers' UNet2DConditionModel config.json keys, spelled as upstream. */
export interface UNet2DConditionConfig {
  _class_name?: string;
  _diffusers_version?: string;
  _name_or_path?: string;
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string | null;
  up_block_types: string[];
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  dropout: number;
  act_fn: string;
  norm_num_groups: number | null;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[] | number[][];
  reverse_transformer_layers_per_block: number[][] | null;
  encoder_hid_dim: number | null;
  encoder_hid_dim_type: string | null;
  /** Despite the name, the number of heads when num_attention_heads is null (a diffusers legacy). */
  attention_head_dim: number | number[];
  num_attention_heads: number | number[] | null;
  dual_cross_attention: boolean;
  use_linear_projection: boolean;
  class_embed_type: string | null;
  addition_embed_type: string | null;
  addition_time_embed_dim: number | null;
  num_class_embeds: number | null;
  upcast_attention: boolean;
  resnet_time_scale_shift: string;
  resnet_skip_time_act: boolean;
  resnet_out_scale_factor: number;
  time_embedding_type: string;
  time_embedding_dim: number | null;
  time_embedding_act_fn: string | null;
  timestep_post_act: string | null;
  time_cond_proj_dim: number | null;
  conv_in_kernel: number;
  conv_out_kernel: number;
  projection_class_embeddings_input_dim: number | null;
  attention_type: string;
  class_embeddings_concat: boolean;
  mid_block_only_cross_attention: boolean | null;
  cross_attention_norm: string | null;
  addition_embed_type_num_heads: number;
}

/** UNet2DConditionModel.__init__ defaults (diffusers). */
export const UNET_DEFAULTS: UNet2DConditionConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: 'default',
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

/** AutoencoderKL.__init__ defaults (diffusers). */
export const VAE_DEFAULTS: AutoencoderKLConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D'],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: 'silu',
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  shift_factor: null,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
};

/** transformers' CLIPTextConfig defaults. */
export const CLIP_TEXT_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  attention_dropout: 0,
  initializer_range: 0.02,
  initializer_factor: 1.0,
  pad_token_id: 1,
  bos_token_id: 49406,
  eos_token_id: 49407,
};

/** The scheduler_config.json keys shared by the diffusers schedulers we implement; other keys pass through. */
export interface SchedulerConfig {
  _class_name: string;
  _diffusers_version?: string;
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  prediction_type: string;
  steps_offset: number;
  timestep_spacing?: string;
  clip_sample?: boolean;
  clip_sample_range?: number;
  set_alpha_to_one?: boolean;
  skip_prk_steps?: boolean;
  interpolation_type?: string;
  use_karras_sigmas?: boolean;
  sample_max_value?: number;
  thresholding?: boolean;
  rescale_betas_zero_snr?: boolean;
  [key: string]: unknown;
}

/** Defaults common to DDPM/DDIM/PNDM/Euler in diffusers, for keys absent from a scheduler config. */
export const SCHEDULER_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  steps_offset: 0,
} as const;

export function readJsonFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`${path}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${path}: not a JSON object`);
  return value as Record<string, unknown>;
}

/** Upstream defaults, then the file's values (unknown keys kept, as upstream keeps them in `config`). */
function withDefaults<T extends object>(defaults: T, json: Record<string, unknown>): T {
  return { ...defaults, ...json } as T;
}

type Rule<T> = [key: keyof T & string, ok: (value: unknown) => boolean, supported: string];

const isNullish = (v: unknown): boolean => v === null || v === undefined;
const oneOf = (...allowed: unknown[]) => (v: unknown): boolean => allowed.includes(v);
const DOWN_BLOCKS = new Set(['CrossAttnDownBlock2D', 'DownBlock2D']);
const UP_BLOCKS = new Set(['CrossAttnUpBlock2D', 'UpBlock2D']);

/** UNet features the engine's builder does not implement: a config using one is refused. */
const UNET_RULES: Rule<UNet2DConditionConfig>[] = [
  ['act_fn', oneOf('silu'), '"silu"'],
  ['class_embed_type', isNullish, 'null'],
  ['num_class_embeds', isNullish, 'null'],
  ['class_embeddings_concat', oneOf(false), 'false'],
  ['addition_embed_type', oneOf(null, undefined, 'text_time'), 'null or "text_time"'],
  ['time_cond_proj_dim', isNullish, 'null'],
  ['resnet_time_scale_shift', oneOf('default'), '"default"'],
  ['resnet_skip_time_act', oneOf(false), 'false'],
  ['resnet_out_scale_factor', oneOf(1), '1.0'],
  ['attention_type', oneOf('default'), '"default"'],
  ['time_embedding_type', oneOf('positional'), '"positional"'],
  ['time_embedding_dim', isNullish, 'null'],
  ['time_embedding_act_fn', isNullish, 'null'],
  ['timestep_post_act', isNullish, 'null'],
  ['encoder_hid_dim', isNullish, 'null'],
  ['encoder_hid_dim_type', isNullish, 'null'],
  ['dual_cross_attention', oneOf(false), 'false'],
  ['only_cross_attention', oneOf(false), 'false'],
  ['mid_block_only_cross_attention', oneOf(null, undefined, false), 'null or false'],
  ['cross_attention_norm', isNullish, 'null'],
  ['mid_block_type', oneOf('UNetMidBlock2DCrossAttn'), '"UNetMidBlock2DCrossAttn"'],
  ['reverse_transformer_layers_per_block', isNullish, 'null'],
  ['down_block_types', (v) => Array.isArray(v) && v.every((t) => DOWN_BLOCKS.has(t)), 'CrossAttnDownBlock2D and DownBlock2D'],
  ['up_block_types', (v) => Array.isArray(v) && v.every((t) => UP_BLOCKS.has(t)), 'CrossAttnUpBlock2D and UpBlock2D'],
  ['norm_num_groups', (v) => Number.isInteger(v), 'an integer'],
];

function applyRules<T>(config: T, rules: Rule<T>[], file: string): void {
  for (const [key, ok, supported] of rules) {
    const value = config[key];
    if (!ok(value)) throw new Error(`${file}: ${key} = ${JSON.stringify(value)} is not supported (supported: ${supported})`);
  }
}

export function unetConfigFrom(json: Record<string, unknown>, file: string): UNet2DConditionConfig {
  const config = withDefaults(UNET_DEFAULTS, json);
  applyRules(config, UNET_RULES, file);
  const levels = config.block_out_channels.length;
  if (config.down_block_types.length !== levels || config.up_block_types.length !== levels)
    throw new Error(`${file}: down_block_types and up_block_types need ${levels} entries, like block_out_channels`);
  if (config.addition_embed_type === 'text_time' && (config.addition_time_embed_dim === null || config.projection_class_embeddings_input_dim === null))
    throw new Error(`${file}: addition_embed_type "text_time" needs addition_time_embed_dim and projection_class_embeddings_input_dim`);
  return config;
}

export function vaeConfigFrom(json: Record<string, unknown>, file: string): AutoencoderKLConfig {
  const config = withDefaults(VAE_DEFAULTS, json);
  if (config.act_fn !== 'silu') throw new Error(`${file}: act_fn = ${JSON.stringify(config.act_fn)} is not supported (supported: "silu")`);
  for (const t of config.down_block_types)
    if (t !== 'DownEncoderBlock2D') throw new Error(`${file}: down_block_types entry ${JSON.stringify(t)} is not supported (supported: DownEncoderBlock2D)`);
  for (const t of config.up_block_types)
    if (t !== 'UpDecoderBlock2D') throw new Error(`${file}: up_block_types entry ${JSON.stringify(t)} is not supported (supported: UpDecoderBlock2D)`);
  return config;
}

const CLIP_ACTS = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh'];

export function clipTextConfigFrom(json: Record<string, unknown>, file: string): CLIPTextConfig {
  const config = withDefaults(CLIP_TEXT_DEFAULTS, json);
  if (!CLIP_ACTS.includes(config.hidden_act))
    throw new Error(`${file}: hidden_act = ${JSON.stringify(config.hidden_act)} is not supported (supported: ${CLIP_ACTS.join(', ')})`);
  return config;
}

export function schedulerConfigFrom(json: Record<string, unknown>, file: string): SchedulerConfig {
  if (typeof json._class_name !== 'string') throw new Error(`${file}: _class_name is missing`);
  const config = { ...SCHEDULER_DEFAULTS, ...json } as SchedulerConfig;
  for (const key of ['num_train_timesteps', 'beta_start', 'beta_end', 'steps_offset'] as const)
    if (typeof config[key] !== 'number') throw new Error(`${file}: ${key} must be a number, got ${JSON.stringify(config[key])}`);
  if (!['epsilon', 'v_prediction', 'sample'].includes(config.prediction_type))
    throw new Error(`${file}: prediction_type = ${JSON.stringify(config.prediction_type)} is not supported (supported: epsilon, v_prediction, sample)`);
  return config;
}
