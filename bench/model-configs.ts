// The real configs (UNet, text encoders, VAE) of the models the benchmarks build (weights are seeded random: the
// compute is the same as with the real checkpoint).
import { unetConfigFrom } from '../src-main/engine/io/configs';
import type { AutoencoderKLConfig } from '../src-main/engine/models/autoencoder-kl';
import type { CLIPTextConfig } from '../src-main/engine/models/clip-text-model';
import type { UNet2DConditionConfig } from '../src-main/engine/models/unet-2d-condition';

/** runwayml/stable-diffusion-v1-5 unet/config.json */
export const SD15: UNet2DConditionConfig = unetConfigFrom({
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
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
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
}, 'SD1.5 unet/config.json');

/** stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the keys that differ from the defaults) */
export const SDXL: UNet2DConditionConfig = unetConfigFrom({
  _class_name: 'UNet2DConditionModel',
  addition_embed_type: 'text_time',
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  cross_attention_dim: 2048,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  projection_class_embeddings_input_dim: 2816,
  sample_size: 128,
  transformer_layers_per_block: [1, 2, 10],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  use_linear_projection: true,
}, 'SDXL unet/config.json');


/** The tiny SDXL of test/fixtures/golden/tiny-sdxl (unet/config.json): the SDXL topology at toy width, for CPU runs. */
export const TINY_SDXL: UNet2DConditionConfig = unetConfigFrom({
  _class_name: 'UNet2DConditionModel',
  addition_embed_type: 'text_time',
  addition_time_embed_dim: 8,
  attention_head_dim: [2, 4, 4],
  block_out_channels: [32, 32, 64],
  cross_attention_dim: 64,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  projection_class_embeddings_input_dim: 80,
  sample_size: 8,
  transformer_layers_per_block: [1, 2, 2],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  use_linear_projection: true,
}, 'tiny SDXL unet/config.json');

// The byte-level tokenizer's special tokens (embedded-tiny-model.ts): pooling looks for its end token.
const SPECIAL = { bos_token_id: 512, eos_token_id: 513, pad_token_id: 513 };

/** openai/clip-vit-large-patch14's text model: SD1.5's text encoder and SDXL's first. */
export const CLIP_L: CLIPTextConfig = {
  architectures: ['CLIPTextModel'],
  hidden_size: 768,
  intermediate_size: 3072,
  num_attention_heads: 12,
  num_hidden_layers: 12,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  projection_dim: 768,
  vocab_size: 49408,
  ...SPECIAL,
};

/** OpenCLIP ViT-bigG's text model with its projection: SDXL's text_encoder_2. */
export const CLIP_BIG_G: CLIPTextConfig = {
  architectures: ['CLIPTextModelWithProjection'],
  hidden_size: 1280,
  intermediate_size: 5120,
  num_attention_heads: 20,
  num_hidden_layers: 32,
  max_position_embeddings: 77,
  hidden_act: 'gelu',
  layer_norm_eps: 1e-5,
  projection_dim: 1280,
  vocab_size: 49408,
  ...SPECIAL,
};

/** The SD1.5 / SDXL VAE: SD1.5's config has no force_upcast key (diffusers' default applies: upcast). */
export const vaeConfig = (sdxl: boolean): AutoencoderKLConfig =>
  ({
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    block_out_channels: [128, 256, 512, 512],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
    in_channels: 3,
    out_channels: 3,
    latent_channels: 4,
    layers_per_block: 2,
    norm_num_groups: 32,
    sample_size: sdxl ? 1024 : 512,
    scaling_factor: sdxl ? 0.13025 : 0.18215,
    ...(sdxl ? { force_upcast: true } : {}),
  }) as unknown as AutoencoderKLConfig;
