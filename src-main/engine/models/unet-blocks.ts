// The building blocks of diffusers' UNet2DConditionModel as graph builders: ResnetBlock2D,
// Transformer2DModel with its BasicTransformerBlocks, Downsample2D / Upsample2D, and the down,
// mid and up blocks made of them. Weight names are diffusers' module names, so the LoRA hook
// sees e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import { attention, conv2d, groupNorm, layerNorm, linear } from '../nn/layers';
import type { Params } from '../nn/params';

/** The settings every block of one UNet shares (read off its config.json). */
export interface UNetBlockSettings {
  /** norm_num_groups of the resnets and of the transformers' input GroupNorm. */
  groups: number;
  /** norm_eps of the resnets' GroupNorms. */
  resnetEps: number;
  useLinearProjection: boolean;
  upcastAttention: boolean;
  /** downsample_padding of the Downsample2D convolutions (1 in every SD model). */
  downsamplePadding: number;
}

/** Per-level attention settings of a cross-attention block. */
export interface CrossAttentionSettings {
  heads: number;
  /** BasicTransformerBlocks in each of the block's Transformer2DModels (one entry per resnet). */
  transformerLayers: number[];
}

/** The time embedding after SiLU, shared by every resnet (each would compute the same silu(temb)). */
export type ActivatedTimeEmbedding = Value; // [B, T]

// Transformer2DModel's GroupNorm and BasicTransformerBlock's LayerNorms use fixed epsilons.
const TRANSFORMER_GROUP_NORM_EPS = 1e-6;
const TRANSFORMER_LAYER_NORM_EPS = 1e-5;

/**
 * ResnetBlock2D (time_embedding_norm "default"): norm1, SiLU, conv1, plus the projected time
 * embedding per channel, norm2, SiLU, conv2 (dropout omitted), plus the input (1x1-projected when
 * the channel count changes), divided by output_scale_factor.
 */
export function resnetBlock2D(
  p: Params,
  x: Value, // [B, Cin, H, W]
  tembAct: ActivatedTimeEmbedding, // [B, T]
  outChannels: number,
  settings: UNetBlockSettings,
  outputScaleFactor = 1,
): Value {
  return p.recomputed(() => resnetBody(p, x, tembAct, outChannels, settings, outputScaleFactor)); // [B, Cout, H, W]
}

function resnetBody(p: Params, x: Value, tembAct: ActivatedTimeEmbedding, outChannels: number, settings: UNetBlockSettings, outputScaleFactor: number): Value {
  const [batch, inChannels] = x.shape;
  let h = op.silu(groupNorm(p, 'norm1', x, settings.groups, settings.resnetEps)); // [B, Cin, H, W]
  h = conv2d(p, 'conv1', h, outChannels, 3, { padding: 1 }); // [B, Cout, H, W]
  const timeBias = op.reshape(linear(p, 'time_emb_proj', tembAct, outChannels), [batch, outChannels, 1, 1]); // [B, Cout, 1, 1]
  h = op.add(h, timeBias); // [B, Cout, H, W]
  h = op.silu(groupNorm(p, 'norm2', h, settings.groups, settings.resnetEps)); // [B, Cout, H, W]
  h = conv2d(p, 'conv2', h, outChannels, 3, { padding: 1 }); // [B, Cout, H, W]
  const shortcut = inChannels === outChannels ? x : conv2d(p, 'conv_shortcut', x, outChannels, 1); // [B, Cout, H, W]
  const sum = op.add(shortcut, h); // [B, Cout, H, W]
  return outputScaleFactor === 1 ? sum : op.div(sum, outputScaleFactor); // [B, Cout, H, W]
}

// The transformer blocks keep their tokens as [B*L, C] rows: the layer norms, linears (Gemm) and
// residuals take them as they are, and only attention views them as [B, L, C], so no linear
// needs a reshape before and after it (fewer nodes to dispatch per step).

/** diffusers Attention as BasicTransformerBlock uses it: to_q/k/v without bias, to_out.0 with bias. */
function attentionModule(
  p: Params,
  x: Value, // [B*L, C]
  context: Value, // [B*Lk, Ck] (x itself for self-attention)
  batch: number,
  heads: number,
  headDim: number,
  upcast: boolean,
): Value {
  const inner = heads * headDim;
  const [rows, contextRows] = [x.shape[0], context.shape[0]];
  const q = op.reshape(linear(p, 'to_q', x, inner, { bias: false }), [batch, rows / batch, inner]); // [B, L, inner]
  const k = op.reshape(linear(p, 'to_k', context, inner, { bias: false }), [batch, contextRows / batch, inner]); // [B, Lk, inner]
  const v = op.reshape(linear(p, 'to_v', context, inner, { bias: false }), [batch, contextRows / batch, inner]); // [B, Lk, inner]
  const mixed = op.reshape(attention(p, q, k, v, heads, { upcast }), [rows, inner]); // [B*L, inner]
  return linear(p, 'to_out.0', mixed, x.shape[1]); // [B*L, C]
}

/**
 * FeedForward with GEGLU: proj to 2 * 4C, a * gelu(gate), back to C. The GEGLU is computed again
 * in the backward from its [B*L, C] input instead of keeping its [B*L, 8C] projection: one GEMM
 * more for the largest activations of a transformer block (SD1.5 at 512 px, batch 4: the graph's
 * live peak 2.52 -> 1.98 GiB).
 */
function feedForward(p: Params, x: Value /* [B*L, C] */): Value {
  const dim = x.shape[1];
  const inner = 4 * dim;
  const gated = p.alwaysRecomputed(() => {
    const projected = linear(p, 'net.0.proj', x, 2 * inner); // [B*L, 2*inner]
    const [hidden, gate] = op.split(projected, [inner, inner], -1); // 2 x [B*L, inner]
    return op.mul(hidden, op.gelu(gate)); // [B*L, inner]
  });
  return linear(p, 'net.2', gated, dim); // [B*L, C]
}

/** BasicTransformerBlock (layer_norm): self-attention, cross-attention, GEGLU feed-forward, each pre-norm with a residual. */
function basicTransformerBlock(
  p: Params,
  x: Value, // [B*L, C]
  context: Value, // [B*Lk, Ck]
  batch: number,
  heads: number,
  headDim: number,
  upcast: boolean,
): Value {
  let h = x;
  const selfIn = layerNorm(p, 'norm1', h, TRANSFORMER_LAYER_NORM_EPS); // [B*L, C]
  h = op.add(attentionModule(p.child('attn1'), selfIn, selfIn, batch, heads, headDim, upcast), h); // [B*L, C]
  const crossIn = layerNorm(p, 'norm2', h, TRANSFORMER_LAYER_NORM_EPS); // [B*L, C]
  h = op.add(attentionModule(p.child('attn2'), crossIn, context, batch, heads, headDim, upcast), h); // [B*L, C]
  const ffIn = layerNorm(p, 'norm3', h, TRANSFORMER_LAYER_NORM_EPS); // [B*L, C]
  return op.add(feedForward(p.child('ff'), ffIn), h); // [B*L, C]
}

/**
 * Transformer2DModel on continuous input: GroupNorm, proj_in (1x1 conv before, or linear after,
 * flattening to tokens), `layers` BasicTransformerBlocks, proj_out, plus the input.
 */
export function transformer2D(
  p: Params,
  x: Value, // [B, C, H, W]
  context: Value, // [B, Lk, Ck]
  heads: number,
  layers: number,
  settings: UNetBlockSettings,
): Value {
  const [batch, channels, height, width] = x.shape;
  const headDim = Math.floor(channels / heads); // diffusers: out_channels // num_attention_heads
  const inner = heads * headDim;
  const tokensOf = (t: Value): Value => op.reshape(op.transpose(op.reshape(t, [batch, t.shape[1], height * width]), [0, 2, 1]), [batch * height * width, t.shape[1]]); // [B*HW, C']
  const spatialOf = (t: Value): Value => op.reshape(op.transpose(op.reshape(t, [batch, height * width, t.shape[1]]), [0, 2, 1]), [batch, t.shape[1], height, width]); // [B, C', H, W]
  const normed = groupNorm(p, 'norm', x, settings.groups, TRANSFORMER_GROUP_NORM_EPS); // [B, C, H, W]
  let tokens = settings.useLinearProjection
    ? linear(p, 'proj_in', tokensOf(normed), inner) // [B*HW, inner]
    : tokensOf(conv2d(p, 'proj_in', normed, inner, 1)); // [B*HW, inner]
  const contextRows = op.reshape(context, [-1, context.shape[2]]); // [B*Lk, Ck]
  for (let i = 0; i < layers; i++) {
    const block = p.child(`transformer_blocks.${i}`);
    tokens = block.recomputed(() => basicTransformerBlock(block, tokens, contextRows, batch, heads, headDim, settings.upcastAttention)); // [B*HW, inner]
  }
  const out = settings.useLinearProjection
    ? spatialOf(linear(p, 'proj_out', tokens, channels)) // [B, C, H, W]
    : conv2d(p, 'proj_out', spatialOf(tokens), channels, 1); // [B, C, H, W]
  return op.add(out, x); // [B, C, H, W]
}

/** Downsample2D with a convolution: 3x3, stride 2 (padding 0 pads only right and bottom, as diffusers does). */
export function downsample2D(p: Params, x: Value /* [B, C, H, W] */, padding: number): Value {
  const channels = x.shape[1];
  if (padding !== 0) return conv2d(p, 'conv', x, channels, 3, { stride: 2, padding }); // [B, C, H', W']
  // conv2d pads symmetrically; diffusers' padding 0 means F.pad(x, (0, 1, 0, 1)) first.
  const m = p.child('conv');
  const w = m.get('weight', [channels, channels, 3, 3]); // [C, C, 3, 3]
  const b = m.get('bias', [channels]); // [C]
  const strides = [2, 2];
  const pads = [0, 0, 1, 1]; // [top, left, bottom, right]
  const y = op.conv(x, w, b, { strides, pads }); // [B, C, H', W']
  return p.layer({ kind: 'conv', module: m.prefix, input: x, output: y, weightShape: w.shape, conv: { strides, pads } });
}

/** Upsample2D with a convolution: nearest-neighbour 2x, then 3x3. */
export function upsample2D(p: Params, x: Value /* [B, C, H, W] */): Value {
  const up = op.resizeNearest(x, [2, 2]); // [B, C, 2H, 2W]
  return conv2d(p, 'conv', up, x.shape[1], 3, { padding: 1 }); // [B, C, 2H, 2W]
}

/** A down block's output and the skip tensors it hands to the up blocks (one per resnet, plus the downsampled one). */
export interface DownBlockResult {
  hidden: Value;
  skips: Value[];
}

/**
 * DownBlock2D (cross = undefined) or CrossAttnDownBlock2D: `layers` x (resnet [-> transformer]),
 * each output kept as a skip, then the optional downsampler (its output a skip too).
 */
export function downBlock(
  p: Params,
  x: Value, // [B, Cin, H, W]
  tembAct: ActivatedTimeEmbedding, // [B, T]
  context: Value, // [B, Lk, Ck]
  outChannels: number,
  layers: number,
  addDownsample: boolean,
  settings: UNetBlockSettings,
  cross?: CrossAttentionSettings,
): DownBlockResult {
  const skips: Value[] = [];
  let h = x;
  for (let i = 0; i < layers; i++) {
    h = resnetBlock2D(p.child(`resnets.${i}`), h, tembAct, outChannels, settings); // [B, Cout, H, W]
    if (cross) h = transformer2D(p.child(`attentions.${i}`), h, context, cross.heads, cross.transformerLayers[i], settings); // [B, Cout, H, W]
    skips.push(h);
  }
  if (addDownsample) {
    h = downsample2D(p.child('downsamplers.0'), h, settings.downsamplePadding); // [B, Cout, H/2, W/2]
    skips.push(h);
  }
  return { hidden: h, skips };
}

/** UNetMidBlock2DCrossAttn (one layer): resnet, transformer, resnet; resnets scaled by mid_block_scale_factor. */
export function midBlockCrossAttn(
  p: Params,
  x: Value, // [B, C, h, w]
  tembAct: ActivatedTimeEmbedding, // [B, T]
  context: Value, // [B, Lk, Ck]
  settings: UNetBlockSettings,
  cross: CrossAttentionSettings,
  outputScaleFactor: number,
): Value {
  const channels = x.shape[1];
  let h = resnetBlock2D(p.child('resnets.0'), x, tembAct, channels, settings, outputScaleFactor); // [B, C, h, w]
  h = transformer2D(p.child('attentions.0'), h, context, cross.heads, cross.transformerLayers[0], settings); // [B, C, h, w]
  return resnetBlock2D(p.child('resnets.1'), h, tembAct, channels, settings, outputScaleFactor); // [B, C, h, w]
}

/**
 * UpBlock2D (cross = undefined) or CrossAttnUpBlock2D: `layers` x (concat the last skip on
 * channels -> resnet [-> transformer]), then the optional upsampler. Consumes skips from the end.
 */
export function upBlock(
  p: Params,
  x: Value, // [B, Cprev, H, W]
  skips: Value[], // popped from the end: [B, Cskip, H, W] each
  tembAct: ActivatedTimeEmbedding, // [B, T]
  context: Value, // [B, Lk, Ck]
  outChannels: number,
  layers: number,
  addUpsample: boolean,
  settings: UNetBlockSettings,
  cross?: CrossAttentionSettings,
): Value {
  let h = x;
  for (let i = 0; i < layers; i++) {
    const skip = skips.pop();
    if (!skip) throw new Error(`UNet up block ${p.prefix}: no skip connection left for resnet ${i}`);
    h = op.concat([h, skip], 1); // [B, C + Cskip, H, W]
    h = resnetBlock2D(p.child(`resnets.${i}`), h, tembAct, outChannels, settings); // [B, Cout, H, W]
    if (cross) h = transformer2D(p.child(`attentions.${i}`), h, context, cross.heads, cross.transformerLayers[i], settings); // [B, Cout, H, W]
  }
  if (addUpsample) h = upsample2D(p.child('upsamplers.0'), h); // [B, Cout, 2H, 2W]
  return h;
}
