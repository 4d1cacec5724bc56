// diffusers' AutoencoderKL (the Stable Diffusion VAE) as graph builders: the encoder to the latent
// distribution (mean, logvar, std) and the decoder from latents to an image. No scaling factor is
// applied here: callers multiply encoder samples by scaling_factor and divide latents by it.
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import { attention, conv2d, groupNorm, linear } from '../nn/layers';
import type { Params } from '../nn/params';

/** diffusers' AutoencoderKL config.json keys, spelled as upstream. */
export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  act_fn: string;
  latent_channels: number;
  norm_num_groups: number;
  sample_size?: number;
  scaling_factor: number;
  shift_factor?: number | null;
  force_upcast?: boolean;
  use_quant_conv?: boolean;
  use_post_quant_conv?: boolean;
  mid_block_add_attention?: boolean;
  latents_mean?: number[] | null;
  latents_std?: number[] | null;
  _class_name?: string;
  _diffusers_version?: string;
  _name_or_path?: string;
}

export interface VaeLatentDistribution {
  /** [B, latent_channels, H/f, W/f], f = 2^(levels - 1) */
  mean: Value;
  /** log-variance clamped to [-30, 20], same shape */
  logvar: Value;
  /** exp(logvar / 2), same shape */
  std: Value;
}

/** Every resnet, norm and attention of the VAE uses this epsilon (diffusers' resnet_eps). */
const EPS = 1e-6;

/** Refuses config values this builder does not implement, naming the key and value. */
export function checkAutoencoderKLConfig(config: AutoencoderKLConfig, where = 'vae config.json'): void {
  if (config.act_fn !== 'silu') throw new Error(`${where}: act_fn "${config.act_fn}" is not supported (only "silu")`);
  const levels = config.block_out_channels.length;
  if (levels === 0) throw new Error(`${where}: block_out_channels is empty`);
  if (config.down_block_types.length !== levels || config.up_block_types.length !== levels)
    throw new Error(`${where}: down_block_types and up_block_types must have ${levels} entries, like block_out_channels`);
  for (const t of config.down_block_types)
    if (t !== 'DownEncoderBlock2D') throw new Error(`${where}: down block type "${t}" is not supported (only DownEncoderBlock2D)`);
  for (const t of config.up_block_types)
    if (t !== 'UpDecoderBlock2D') throw new Error(`${where}: up block type "${t}" is not supported (only UpDecoderBlock2D)`);
  for (const c of config.block_out_channels)
    if (c % config.norm_num_groups !== 0) throw new Error(`${where}: block_out_channels ${c} is not divisible by norm_num_groups ${config.norm_num_groups}`);
}

/** Encoder -> quant_conv -> the diagonal Gaussian over latents, for image [B, in_channels, H, W] in [-1, 1]. */
export function buildVaeEncoder(p: Params, config: AutoencoderKLConfig, image: Value): VaeLatentDistribution {
  checkAutoencoderKLConfig(config);
  const downsampling = 2 ** (config.block_out_channels.length - 1);
  const [, channels, height, width] = image.shape;
  if (image.rank !== 4 || channels !== config.in_channels || height % downsampling || width % downsampling)
    throw new Error(`VAE encoder: image must be [B, ${config.in_channels}, H, W] with H and W multiples of ${downsampling}, got ${image}`);
  const g = image.graph;
  const moments2 = g.scope('encoder', () => encoder(p.child('encoder'), config, image)); // [B, 2*latent, h, w]
  const moments = (config.use_quant_conv ?? true) ? conv2d(p, 'quant_conv', moments2, 2 * config.latent_channels, 1) : moments2; // [B, 2*latent, h, w]
  const [mean, rawLogvar] = op.split(moments, [config.latent_channels, config.latent_channels], 1); // 2 x [B, latent, h, w]
  const logvar = op.max(op.min(rawLogvar, 20), -30); // [B, latent, h, w]
  const std = op.exp(op.mul(logvar, 0.5)); // [B, latent, h, w]
  return { mean, logvar, std };
}

/** post_quant_conv -> decoder, for latents [B, latent_channels, h, w] (already divided by scaling_factor). */
export function buildVaeDecoder(p: Params, config: AutoencoderKLConfig, latents: Value): Value {
  checkAutoencoderKLConfig(config);
  if (latents.rank !== 4 || latents.shape[1] !== config.latent_channels)
    throw new Error(`VAE decoder: latents must be [B, ${config.latent_channels}, h, w], got ${latents}`);
  const z = (config.use_post_quant_conv ?? true) ? conv2d(p, 'post_quant_conv', latents, config.latent_channels, 1) : latents; // [B, latent, h, w]
  return latents.graph.scope('decoder', () => decoder(p.child('decoder'), config, z)); // [B, out_channels, h*f, w*f]
}

/** diffusers Encoder (double_z): conv_in, down blocks, mid block, norm, SiLU, conv_out to 2*latent channels. */
function encoder(p: Params, config: AutoencoderKLConfig, image: Value): Value {
  const channels = config.block_out_channels;
  const groups = config.norm_num_groups;
  let h = conv2d(p, 'conv_in', image, channels[0], 3, { padding: 1 }); // [B, C0, H, W]
  channels.forEach((out, i) => {
    const block = p.child(`down_blocks.${i}`);
    for (let j = 0; j < config.layers_per_block; j++) h = resnetBlock(block.child(`resnets.${j}`), h, out, groups); // [B, Ci, H_i, W_i]
    if (i < channels.length - 1) h = downsample(block.child('downsamplers.0'), h); // [B, Ci, H_i/2, W_i/2]
  });
  h = midBlock(p.child('mid_block'), config, h); // [B, C_last, h, w]
  h = op.silu(groupNorm(p, 'conv_norm_out', h, groups, EPS)); // [B, C_last, h, w]
  return conv2d(p, 'conv_out', h, 2 * config.latent_channels, 3, { padding: 1 }); // [B, 2*latent, h, w]
}

/** diffusers Decoder: conv_in, mid block, up blocks in reverse channel order (layers_per_block + 1 resnets each), norm, SiLU, conv_out. */
function decoder(p: Params, config: AutoencoderKLConfig, z: Value): Value {
  const reversed = [...config.block_out_channels].reverse();
  const groups = config.norm_num_groups;
  let h = conv2d(p, 'conv_in', z, reversed[0], 3, { padding: 1 }); // [B, C_last, h, w]
  h = midBlock(p.child('mid_block'), config, h); // [B, C_last, h, w]
  reversed.forEach((out, i) => {
    const block = p.child(`up_blocks.${i}`);
    for (let j = 0; j < config.layers_per_block + 1; j++) h = resnetBlock(block.child(`resnets.${j}`), h, out, groups); // [B, Ci, h_i, w_i]
    if (i < reversed.length - 1) h = upsample(block.child('upsamplers.0'), h); // [B, Ci, 2h_i, 2w_i]
  });
  h = op.silu(groupNorm(p, 'conv_norm_out', h, groups, EPS)); // [B, C0, H, W]
  return conv2d(p, 'conv_out', h, config.out_channels, 3, { padding: 1 }); // [B, out_channels, H, W]
}

/** UNetMidBlock2D without time embedding: resnet, attention (when mid_block_add_attention), resnet. */
function midBlock(p: Params, config: AutoencoderKLConfig, x: Value): Value {
  const channels = x.shape[1];
  const groups = config.norm_num_groups;
  let h = resnetBlock(p.child('resnets.0'), x, channels, groups); // [B, C, h, w]
  if (config.mid_block_add_attention ?? true) h = spatialSelfAttention(p.child('attentions.0'), h, groups); // [B, C, h, w]
  return resnetBlock(p.child('resnets.1'), h, channels, groups); // [B, C, h, w]
}

/** ResnetBlock2D without time embedding: norm, SiLU, conv, norm, SiLU, conv, plus the (1x1-projected) input. */
function resnetBlock(p: Params, x: Value, outChannels: number, groups: number): Value {
  const inChannels = x.shape[1];
  let h = op.silu(groupNorm(p, 'norm1', x, groups, EPS)); // [B, Cin, H, W]
  h = conv2d(p, 'conv1', h, outChannels, 3, { padding: 1 }); // [B, Cout, H, W]
  h = op.silu(groupNorm(p, 'norm2', h, groups, EPS)); // [B, Cout, H, W]
  h = conv2d(p, 'conv2', h, outChannels, 3, { padding: 1 }); // [B, Cout, H, W]
  const shortcut = inChannels === outChannels ? x : conv2d(p, 'conv_shortcut', x, outChannels, 1); // [B, Cout, H, W]
  return op.add(shortcut, h); // [B, Cout, H, W]
}

/**
 * Downsample2D with padding 0: pad right and bottom by one, then a 3x3 stride-2 conv. The
 * asymmetric pad goes straight into the Conv's pads, which conv2d (symmetric) cannot express.
 */
function downsample(p: Params, x: Value): Value {
  const m = p.child('conv');
  const channels = x.shape[1];
  const w = m.get('weight', [channels, channels, 3, 3]); // [C, C, 3, 3]
  const b = m.get('bias', [channels]); // [C]
  const strides = [2, 2];
  const pads = [0, 0, 1, 1]; // [top, left, bottom, right]
  const y = op.conv(x, w, b, { strides, pads }); // [B, C, H/2, W/2]
  return p.layer({ kind: 'conv', module: m.prefix, input: x, output: y, weightShape: w.shape, conv: { strides, pads } });
}

/** Upsample2D: nearest-neighbour 2x, then a 3x3 conv. */
function upsample(p: Params, x: Value): Value {
  const up = op.resizeNearest(x, [2, 2]); // [B, C, 2H, 2W]
  return conv2d(p, 'conv', up, x.shape[1], 3, { padding: 1 }); // [B, C, 2H, 2W]
}

/** The mid block's Attention: group norm, one head over the H*W positions, to_out.0, residual (rescale 1). */
function spatialSelfAttention(p: Params, x: Value, groups: number): Value {
  const [batch, channels, height, width] = x.shape;
  const normed = groupNorm(p, 'group_norm', x, groups, EPS); // [B, C, H, W]
  const tokens = op.transpose(op.reshape(normed, [batch, channels, height * width]), [0, 2, 1]); // [B, HW, C]
  const q = linear(p, 'to_q', tokens, channels); // [B, HW, C]
  const k = linear(p, 'to_k', tokens, channels); // [B, HW, C]
  const v = linear(p, 'to_v', tokens, channels); // [B, HW, C]
  const mixed = attention(p, q, k, v, 1); // [B, HW, C]
  const projected = linear(p, 'to_out.0', mixed, channels); // [B, HW, C]
  const spatial = op.reshape(op.transpose(projected, [0, 2, 1]), [batch, channels, height, width]); // [B, C, H, W]
  return op.add(spatial, x); // [B, C, H, W]
}

/**
 * The dtype to run this VAE in when the rest of the pipeline runs in `dtype`: float32 when the
 * config says force_upcast (the SDXL VAE overflows float16 and decodes to NaN/black images, as in
 * diffusers' StableDiffusionXLPipeline.upcast_vae), else `dtype`. Absent force_upcast counts as
 * true, diffusers' default.
 */
export function vaeComputeDtype(config: AutoencoderKLConfig, dtype: 'float32' | 'float16'): 'float32' | 'float16' {
  return dtype === 'float16' && config.force_upcast !== false ? 'float32' : dtype;
}
