// diffusers' UNet2DConditionModel as a graph builder: the denoiser of Stable Diffusion 1.x, 2.x
// and SDXL. Sinusoidal timestep embedding (computed in the graph, so timesteps are per-sample
// inputs) -> time MLP (+ SDXL's text_time embedding); conv_in; down blocks keeping skips; the
// cross-attention mid block; up blocks concatenating the skips; norm, SiLU, conv_out.
// The blocks live in unet-blocks.ts.
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import { UNET_DEFAULTS } from '../io/configs';
import type { UNet2DConditionConfig } from '../io/model-folder';
import { conv2d, groupNorm, linear } from '../nn/layers';
import type { Params } from '../nn/params';
import {
  downBlock,
  midBlockCrossAttn,
  upBlock,
  type CrossAttentionSettings,
  type UNetBlockSettings,
} from './unet-blocks';

export type { UNet2DConditionConfig };

/** A per-level setting in a config: one value for every level, or one per level. */
type PerLevel<T> = T | T[];

export interface UNetInputs {
  /** Noisy latents [B, in_channels, h, w]; h and w multiples of 2^(levels - 1). */
  sample: Value;
  /** Timesteps [B] (or [1] / [] for all samples), any float dtype; embedded in float32 like diffusers. */
  timestep: Value;
  /** Text encoder states [B, L, cross_attention_dim]. */
  encoderHiddenStates: Value;
  /** SDXL (addition_embed_type "text_time"): pooled text embeds [B, P] and time ids [B, 6]. */
  addedCond?: { textEmbeds: Value; timeIds: Value };
}

/** Levels and per-level settings derived from a config, as diffusers derives them in __init__. */
export interface UNetLayout {
  /** The config with upstream defaults for absent keys. */
  config: UNet2DConditionConfig;
  levels: number;
  /** Attention heads per down level: the legacy-named attention_head_dim (diffusers refuses num_attention_heads). */
  heads: number[];
  crossAttentionDims: number[];
  layersPerBlock: number[];
  /** Down levels: transformer blocks per attention (one entry per resnet). */
  downTransformerLayers: number[][];
  /** Up levels, in up order: transformer blocks per attention (layers_per_block + 1 entries). */
  upTransformerLayers: number[][];
  midTransformerLayers: number;
  timeEmbedDim: number;
}

const where = 'unet config.json';

function perLevel<T>(value: PerLevel<T>, levels: number, key: string): T[] {
  if (!Array.isArray(value)) return Array.from({ length: levels }, () => value);
  if (value.length !== levels) throw new Error(`${where}: ${key} has ${value.length} entries, but there are ${levels} down blocks`);
  return value;
}

/** A level's transformer_layers_per_block entry as one count per attention of the block. */
function layersPerAttention(entry: number | number[], attentions: number, key: string): number[] {
  if (!Array.isArray(entry)) return Array.from({ length: attentions }, () => entry);
  if (entry.length < attentions) throw new Error(`${where}: ${key} entry [${entry.join(',')}] has fewer than ${attentions} counts`);
  return entry;
}

/**
 * Fills upstream defaults for absent keys (io/configs does it when reading config.json; a config
 * made by hand may lack keys), refuses what this builder does not implement (naming the key), and
 * derives the per-level settings as diffusers' __init__ does.
 */
export function resolveUNetLayout(config: UNet2DConditionConfig): UNetLayout {
  const c: UNet2DConditionConfig = { ...UNET_DEFAULTS };
  for (const [key, value] of Object.entries(config)) if (value !== undefined) (c as unknown as Record<string, unknown>)[key] = value;

  const refuse = (key: keyof UNet2DConditionConfig, why: string): never => {
    throw new Error(`${where}: ${key} = ${JSON.stringify(c[key])} is not supported (${why})`);
  };
  // Keys not checked here do not reach these blocks in diffusers either (resnet_skip_time_act,
  // resnet_out_scale_factor, mid_block_only_cross_attention, addition_embed_type_num_heads) or
  // describe the checkpoint only (sample_size).
  if (c.act_fn !== 'silu' && c.act_fn !== 'swish') refuse('act_fn', 'only "silu" (= "swish")');
  if (c.dropout !== 0) refuse('dropout', 'dropout layers are not built');
  if (c.time_embedding_type !== 'positional') refuse('time_embedding_type', 'only "positional"');
  if (c.time_embedding_act_fn !== null) refuse('time_embedding_act_fn', 'only null');
  if (c.timestep_post_act !== null) refuse('timestep_post_act', 'only null');
  if (c.time_cond_proj_dim !== null) refuse('time_cond_proj_dim', 'LCM-style timestep conditioning is not implemented');
  if (c.class_embed_type !== null) refuse('class_embed_type', 'class embeddings are not implemented');
  if (c.num_class_embeds !== null) refuse('num_class_embeds', 'class embeddings are not implemented');
  if (c.class_embeddings_concat) refuse('class_embeddings_concat', 'class embeddings are not implemented');
  if (c.addition_embed_type !== null && c.addition_embed_type !== 'text_time') refuse('addition_embed_type', 'only null or "text_time"');
  if (c.encoder_hid_dim_type !== null) refuse('encoder_hid_dim_type', 'encoder_hidden_states projections are not implemented');
  if (c.encoder_hid_dim !== null) refuse('encoder_hid_dim', 'encoder_hidden_states projections are not implemented');
  if (c.mid_block_type !== 'UNetMidBlock2DCrossAttn') refuse('mid_block_type', 'only "UNetMidBlock2DCrossAttn"');
  if (c.resnet_time_scale_shift !== 'default') refuse('resnet_time_scale_shift', 'only "default"');
  if (c.dual_cross_attention) refuse('dual_cross_attention', 'only false');
  if ([c.only_cross_attention].flat().some(Boolean)) refuse('only_cross_attention', 'only false');
  if (c.attention_type !== 'default') refuse('attention_type', 'only "default" (no GLIGEN)');
  if (c.cross_attention_norm !== null) refuse('cross_attention_norm', 'only null');
  if (c.norm_num_groups === null) refuse('norm_num_groups', 'a UNet without output normalisation is not implemented');
  // diffusers itself refuses num_attention_heads ("naming issue", diffusers issue 2011): heads come from attention_head_dim.
  if (c.num_attention_heads !== null) refuse('num_attention_heads', 'diffusers refuses it too; heads are given by attention_head_dim');
  for (const key of ['conv_in_kernel', 'conv_out_kernel'] as const) if (c[key] % 2 !== 1) refuse(key, 'only odd kernel sizes');

  const levels = c.block_out_channels.length;
  if (levels === 0) refuse('block_out_channels', 'it is empty');
  if (c.down_block_types.length !== levels) refuse('down_block_types', `needs ${levels} entries, like block_out_channels`);
  if (c.up_block_types.length !== levels) refuse('up_block_types', `needs ${levels} entries, like block_out_channels`);
  for (const t of c.down_block_types)
    if (t !== 'CrossAttnDownBlock2D' && t !== 'DownBlock2D') throw new Error(`${where}: down block type "${t}" is not supported (only CrossAttnDownBlock2D, DownBlock2D)`);
  for (const t of c.up_block_types)
    if (t !== 'CrossAttnUpBlock2D' && t !== 'UpBlock2D') throw new Error(`${where}: up block type "${t}" is not supported (only CrossAttnUpBlock2D, UpBlock2D)`);
  const groups = c.norm_num_groups as number;
  for (const ch of c.block_out_channels)
    if (ch % groups !== 0) throw new Error(`${where}: block_out_channels ${ch} is not divisible by norm_num_groups ${groups}`);

  // Heads: diffusers sets num_attention_heads = num_attention_heads or attention_head_dim, so in
  // SD 1.x (8), SD 2.x ([5, 10, 20, 20]) and SDXL ([5, 10, 20]) attention_head_dim is the head
  // COUNT per level; each Transformer2DModel uses head dim = channels // heads.
  const heads = perLevel(c.attention_head_dim, levels, 'attention_head_dim');
  const crossAttentionDims = perLevel(c.cross_attention_dim, levels, 'cross_attention_dim');
  const layersPerBlock = perLevel(c.layers_per_block, levels, 'layers_per_block');
  const transformerLayers = perLevel<number | number[]>(c.transformer_layers_per_block, levels, 'transformer_layers_per_block');
  if (c.reverse_transformer_layers_per_block === null && transformerLayers.some(Array.isArray))
    refuse('transformer_layers_per_block', 'per-attention lists need reverse_transformer_layers_per_block, as in diffusers');
  const reversedTransformerLayers = c.reverse_transformer_layers_per_block ?? [...transformerLayers].reverse();
  if (reversedTransformerLayers.length !== levels) refuse('reverse_transformer_layers_per_block', `needs ${levels} entries`);
  const reversedLayers = [...layersPerBlock].reverse();

  const timeEmbedDim = c.time_embedding_dim ?? c.block_out_channels[0] * 4;
  if (c.addition_embed_type === 'text_time') {
    if (c.addition_time_embed_dim === null) refuse('addition_time_embed_dim', 'addition_embed_type "text_time" needs it');
    if (c.projection_class_embeddings_input_dim === null) refuse('projection_class_embeddings_input_dim', 'addition_embed_type "text_time" needs it');
  }
  return {
    config: c,
    levels,
    heads,
    crossAttentionDims,
    layersPerBlock,
    downTransformerLayers: transformerLayers.map((entry, i) => layersPerAttention(entry, layersPerBlock[i], 'transformer_layers_per_block')),
    upTransformerLayers: reversedTransformerLayers.map((entry, i) => layersPerAttention(entry, reversedLayers[i] + 1, 'reverse_transformer_layers_per_block')),
    midTransformerLayers: layersPerAttention(transformerLayers[levels - 1], 1, 'transformer_layers_per_block')[0],
    timeEmbedDim,
  };
}

/**
 * diffusers' get_timestep_embedding (scale 1, max_period 10000), in float32 as diffusers does:
 * t [...] -> [..., dim], halves sin(t f_i) and cos(t f_i) with f_i = exp(-ln(10000) i / (half - shift)),
 * cos first when flipSinToCos, a zero column when dim is odd. The frequencies are graph constants.
 */
export function timestepEmbedding(t: Value, dim: number, flipSinToCos: boolean, downscaleFreqShift: number): Value {
  const half = Math.floor(dim / 2);
  const freqs = Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / (half - downscaleFreqShift)));
  const g = t.graph;
  const t32 = op.cast(t, 'float32'); // [...]
  const args = op.mul(op.unsqueeze(t32, t32.rank), g.constant(freqs, 'float32', [half])); // [..., half]
  const sin = op.sin(args); // [..., half]
  const cos = op.cos(args); // [..., half]
  const parts = flipSinToCos ? [cos, sin] : [sin, cos];
  if (dim % 2 === 1) {
    const padShape = [...args.shape.slice(0, -1), 1];
    parts.push(g.constant(new Array(padShape.reduce((a, b) => a * b, 1)).fill(0), 'float32', padShape)); // [..., 1] zero column, as F.pad
  }
  return op.concat(parts, -1); // [..., dim]
}

/** TimestepEmbedding: linear_1, SiLU, linear_2. */
function timestepMlp(p: Params, x: Value /* [B, in] */, outDim: number): Value {
  const h = op.silu(linear(p, 'linear_1', x, outDim)); // [B, T]
  return linear(p, 'linear_2', h, outDim); // [B, T]
}

/**
 * The UNet's noise (or v) prediction [B, out_channels, h, w] in the build dtype. Weights are
 * taken through `p` under diffusers' names (conv_in.weight, down_blocks.0.resnets.0.conv1.weight, ...).
 */
export function buildUNet2DCondition(p: Params, config: UNet2DConditionConfig, inputs: UNetInputs): Value {
  const layout = resolveUNetLayout(config);
  const c = layout.config;
  const dtype = p.dtype;
  const channels = c.block_out_channels;
  const g = inputs.sample.graph;

  const [batch, inChannels, height, width] = inputs.sample.shape;
  const factor = 2 ** (layout.levels - 1);
  if (inputs.sample.rank !== 4 || inChannels !== c.in_channels || height % factor || width % factor)
    throw new Error(`UNet: sample must be [B, ${c.in_channels}, h, w] with h and w multiples of ${factor}, got ${inputs.sample}`);
  const context = op.cast(inputs.encoderHiddenStates, dtype); // [B, L, Ck]
  if (context.rank !== 3 || context.shape[0] !== batch)
    throw new Error(`UNet: encoder_hidden_states must be [${batch}, L, C], got ${inputs.encoderHiddenStates}`);
  // Levels whose transformers attend to the text: cross-attention down blocks, their up mirrors, the mid block.
  const crossLevels = new Set([layout.levels - 1]);
  c.down_block_types.forEach((t, i) => t === 'CrossAttnDownBlock2D' && crossLevels.add(i));
  c.up_block_types.forEach((t, i) => t === 'CrossAttnUpBlock2D' && crossLevels.add(layout.levels - 1 - i));
  for (const i of crossLevels)
    if (layout.crossAttentionDims[i] !== context.shape[2])
      throw new Error(`UNet: encoder_hidden_states have width ${context.shape[2]}, the config's cross_attention_dim is ${layout.crossAttentionDims[i]}`);

  // 1. time: sinusoidal embedding in float32, cast to the compute dtype, then the MLP.
  let timesteps = inputs.timestep; // [B] | [1] | []
  if (timesteps.rank === 0 || (timesteps.rank === 1 && timesteps.shape[0] === 1 && batch !== 1)) timesteps = op.expand(op.reshape(timesteps, [1]), [batch]); // [B]
  if (timesteps.rank !== 1 || timesteps.shape[0] !== batch) throw new Error(`UNet: timestep must be [${batch}], [1] or [], got ${inputs.timestep}`);
  const tEmb = op.cast(timestepEmbedding(timesteps, channels[0], c.flip_sin_to_cos, c.freq_shift), dtype); // [B, C0]
  let temb = g.scope('time_embedding', () => timestepMlp(p.child('time_embedding'), tEmb, layout.timeEmbedDim)); // [B, T]

  if (c.addition_embed_type === 'text_time') {
    const added = inputs.addedCond;
    if (!added) throw new Error('UNet: addition_embed_type "text_time" (SDXL) needs addedCond { textEmbeds, timeIds }');
    const { textEmbeds, timeIds } = added;
    if (textEmbeds.rank !== 2 || textEmbeds.shape[0] !== batch || timeIds.rank !== 2 || timeIds.shape[0] !== batch)
      throw new Error(`UNet: text_time needs text_embeds [${batch}, P] and time_ids [${batch}, N], got ${textEmbeds} and ${timeIds}`);
    const timeDim = c.addition_time_embed_dim as number;
    const timeEmbeds = op.reshape(timestepEmbedding(timeIds, timeDim, c.flip_sin_to_cos, c.freq_shift), [batch, -1]); // [B, N*D]
    const addEmbeds = op.concat([op.cast(textEmbeds, dtype), op.cast(timeEmbeds, dtype)], -1); // [B, P + N*D]
    if (addEmbeds.shape[1] !== c.projection_class_embeddings_input_dim)
      throw new Error(`UNet: text_embeds width ${textEmbeds.shape[1]} + time_ids ${timeIds.shape[1]} x ${timeDim} != projection_class_embeddings_input_dim ${c.projection_class_embeddings_input_dim}`);
    const augEmb = g.scope('add_embedding', () => timestepMlp(p.child('add_embedding'), addEmbeds, layout.timeEmbedDim)); // [B, T]
    temb = op.add(temb, augEmb); // [B, T]
  } else if (inputs.addedCond) {
    throw new Error('UNet: addedCond (text_embeds, time_ids) given, but the config has no addition_embed_type "text_time"');
  }
  // Every resnet applies SiLU to the same embedding before its time_emb_proj: compute it once.
  const tembAct = op.silu(temb); // [B, T]

  const settings: UNetBlockSettings = {
    groups: c.norm_num_groups as number,
    resnetEps: c.norm_eps,
    useLinearProjection: c.use_linear_projection,
    upcastAttention: c.upcast_attention,
    downsamplePadding: c.downsample_padding,
  };

  // 2. input
  let sample = op.cast(inputs.sample, dtype); // [B, Cin, h, w]
  if (c.center_input_sample) sample = op.sub(op.mul(sample, 2), 1); // [B, Cin, h, w]
  let h = conv2d(p, 'conv_in', sample, channels[0], c.conv_in_kernel, { padding: (c.conv_in_kernel - 1) / 2 }); // [B, C0, h, w]

  // 3. down: every resnet / transformer output and every downsampled tensor is a skip.
  const skips: Value[] = [h];
  c.down_block_types.forEach((type, i) => {
    const cross: CrossAttentionSettings | undefined =
      type === 'CrossAttnDownBlock2D'
        ? { heads: layout.heads[i], transformerLayers: layout.downTransformerLayers[i] }
        : undefined;
    const isFinal = i === layout.levels - 1;
    const result = g.scope(`down_blocks.${i}`, () =>
      downBlock(p.child(`down_blocks.${i}`), h, tembAct, context, channels[i], layout.layersPerBlock[i], !isFinal, settings, cross),
    );
    h = result.hidden; // [B, Ci, h_i, w_i]
    skips.push(...result.skips);
  });

  // 4. mid
  const last = layout.levels - 1;
  const midCross: CrossAttentionSettings = { heads: layout.heads[last], transformerLayers: [layout.midTransformerLayers] };
  h = g.scope('mid_block', () => midBlockCrossAttn(p.child('mid_block'), h, tembAct, context, settings, midCross, c.mid_block_scale_factor)); // [B, C_last, h/f, w/f]

  // 5. up: levels in reverse, each consuming layers_per_block + 1 skips from the end.
  const reversedChannels = [...channels].reverse();
  const reversedHeads = [...layout.heads].reverse();
  const reversedLayers = [...layout.layersPerBlock].reverse();
  c.up_block_types.forEach((type, i) => {
    const cross: CrossAttentionSettings | undefined =
      type === 'CrossAttnUpBlock2D'
        ? { heads: reversedHeads[i], transformerLayers: layout.upTransformerLayers[i] }
        : undefined;
    const isFinal = i === layout.levels - 1;
    h = g.scope(`up_blocks.${i}`, () =>
      upBlock(p.child(`up_blocks.${i}`), h, skips, tembAct, context, reversedChannels[i], reversedLayers[i] + 1, !isFinal, settings, cross),
    ); // [B, C_rev_i, h_i, w_i]
  });
  if (skips.length !== 0) throw new Error(`UNet: ${skips.length} skip connections were not consumed (layers_per_block mismatch)`);

  // 6. output
  h = op.silu(groupNorm(p, 'conv_norm_out', h, settings.groups, c.norm_eps)); // [B, C0, h, w]
  return conv2d(p, 'conv_out', h, c.out_channels, c.conv_out_kernel, { padding: (c.conv_out_kernel - 1) / 2 }); // [B, out_channels, h, w]
}
