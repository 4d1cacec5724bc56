// Opens an A1111 / ComfyUI single-file checkpoint (.safetensors only; pickled .ckpt files are
// refused) and presents it like a diffusers folder: configs inferred from tensor shapes, and
// WeightSource views that rename the original (LDM) keys to diffusers / transformers names.
// Nothing is copied: renamed tensors still point into the file; a fused OpenCLIP q/k/v matrix
// is split into row ranges of the file, and only OpenCLIP's text_projection is transposed in memory.
//
//   openSingleFile(path, options?): OpenedModel      same shape as openModelFolder's result
//   detectSingleFileKind(keys, file): ModelKind      sd1 (CLIP), sd2 (OpenCLIP), sdxl (two embedders)
//   ldmUnetKeyMapper(config): (ldmKey) => diffusers key | undefined   (keys after "model.diffusion_model.")
//
// Key layouts follow the original Stable Diffusion repositories (ldm / sgm), as converted by
// diffusers' single_file_utils: input_blocks / middle_block / output_blocks are the UNet's
// down / mid / up blocks; the VAE's decoder.up.{n-1-i} is decoder.up_blocks.i.
import { closeSync, openSync, readSync } from 'node:fs';
import {
  CLIP_TEXT_DEFAULTS,
  UNET_DEFAULTS,
  VAE_DEFAULTS,
  clipTextConfigFrom,
  unetConfigFrom,
  vaeConfigFrom,
  type AutoencoderKLConfig,
  type CLIPTextConfig,
  type SchedulerConfig,
  type UNet2DConditionConfig,
} from './configs';
import type { ModelKind, OpenedModel } from './model-folder';
import { reshapeEntry, sliceRows, transposeEntry2d, WeightSource, type WeightEntry } from './weights';

export interface OpenSingleFileOptions {
  /** The scheduler's prediction_type: SD 2.x 768 models are 'v_prediction'; the file cannot tell. */
  predictionType?: 'epsilon' | 'v_prediction';
  /** Tokenizer folders (vocab.json + merges.txt) to report in the result; a single file has none. */
  tokenizerDir?: string;
  tokenizer2Dir?: string;
  /** Config values the weights cannot tell (head counts of non-standard models, scaling factor). */
  configOverrides?: {
    unet?: Partial<UNet2DConditionConfig>;
    vae?: Partial<AutoencoderKLConfig>;
    textEncoder?: Partial<CLIPTextConfig>;
    textEncoder2?: Partial<CLIPTextConfig>;
  };
}

const UNET_PREFIX = 'model.diffusion_model.';
const VAE_PREFIX = 'first_stage_model.';
const SD1_CLIP_PREFIX = 'cond_stage_model.transformer.';
const SD2_OPENCLIP_PREFIX = 'cond_stage_model.model.';
const SDXL_CLIP_PREFIX = 'conditioner.embedders.0.transformer.';
const SDXL_OPENCLIP_PREFIX = 'conditioner.embedders.1.model.';

const PICKLE_EXTENSIONS = ['.ckpt', '.pt', '.pth', '.bin', '.pkl'];

export function detectSingleFileKind(keys: readonly string[], file: string): ModelKind {
  const has = (prefix: string): boolean => keys.some((k) => k.startsWith(prefix));
  if (!has(UNET_PREFIX)) throw new Error(`${file}: no "${UNET_PREFIX}*" tensors: not a Stable Diffusion checkpoint (a LoRA or a component file?)`);
  if (has(SDXL_OPENCLIP_PREFIX) && has(SDXL_CLIP_PREFIX)) return 'sdxl';
  if (has('conditioner.embedders.')) throw new Error(`${file}: SDXL refiner or unknown conditioner layout is not supported (expected conditioner.embedders.0 and .1)`);
  if (has(SD2_OPENCLIP_PREFIX)) return 'sd2';
  if (has(SD1_CLIP_PREFIX)) return 'sd1';
  throw new Error(`${file}: no text encoder found (expected cond_stage_model.* or conditioner.embedders.*)`);
}

/** Refuses pickles by name and by content (a zip or pickle header), before the safetensors parser. */
function refusePickle(path: string): void {
  const lower = path.toLowerCase();
  if (PICKLE_EXTENSIONS.some((ext) => lower.endsWith(ext)))
    throw new Error(`${path}: PyTorch pickle checkpoints (.ckpt/.pt/.bin) are not supported, because loading them can run arbitrary code; use the .safetensors version of the model`);
  const fd = openSync(path, 'r');
  const head = Buffer.alloc(2);
  try {
    readSync(fd, head, 0, 2, 0);
  } finally {
    closeSync(fd);
  }
  if ((head[0] === 0x50 && head[1] === 0x4b) || head[0] === 0x80)
    throw new Error(`${path}: this is a PyTorch pickle (zip) checkpoint renamed to .safetensors; pickles are not supported`);
}

// ---------------------------------------------------------------- UNet

const RESNET_PARTS: Record<string, string> = {
  'in_layers.0': 'norm1',
  'in_layers.2': 'conv1',
  'emb_layers.1': 'time_emb_proj',
  'out_layers.0': 'norm2',
  'out_layers.3': 'conv2',
  skip_connection: 'conv_shortcut',
};

interface ModuleTarget {
  name: string;
  resnet: boolean;
}

const perLevel = <T>(value: T | T[], levels: number): T[] => (Array.isArray(value) ? value : Array.from({ length: levels }, () => value));

/** Maps LDM UNet keys (after "model.diffusion_model.") to diffusers keys for a given config. */
export function ldmUnetKeyMapper(config: UNet2DConditionConfig): (ldmKey: string) => string | undefined {
  const levels = config.block_out_channels.length;
  const layers = perLevel(config.layers_per_block, levels);
  const modules = new Map<string, ModuleTarget>();
  const plain = (ldm: string, name: string): void => void modules.set(ldm, { name, resnet: false });
  const resnet = (ldm: string, name: string): void => void modules.set(ldm, { name, resnet: true });

  plain('input_blocks.0.0', 'conv_in');
  plain('time_embed.0', 'time_embedding.linear_1');
  plain('time_embed.2', 'time_embedding.linear_2');
  plain('label_emb.0.0', 'add_embedding.linear_1');
  plain('label_emb.0.2', 'add_embedding.linear_2');
  plain('out.0', 'conv_norm_out');
  plain('out.2', 'conv_out');
  let input = 1;
  for (let i = 0; i < levels; i++) {
    const attn = config.down_block_types[i].startsWith('CrossAttn');
    for (let j = 0; j < layers[i]; j++, input++) {
      resnet(`input_blocks.${input}.0`, `down_blocks.${i}.resnets.${j}`);
      if (attn) plain(`input_blocks.${input}.1`, `down_blocks.${i}.attentions.${j}`);
    }
    if (i < levels - 1) plain(`input_blocks.${input++}.0.op`, `down_blocks.${i}.downsamplers.0.conv`);
  }
  resnet('middle_block.0', 'mid_block.resnets.0');
  plain('middle_block.1', 'mid_block.attentions.0');
  resnet('middle_block.2', 'mid_block.resnets.1');
  const upLayers = [...layers].reverse();
  let output = 0;
  for (let i = 0; i < levels; i++) {
    const attn = config.up_block_types[i].startsWith('CrossAttn');
    for (let j = 0; j <= upLayers[i]; j++, output++) {
      resnet(`output_blocks.${output}.0`, `up_blocks.${i}.resnets.${j}`);
      if (attn) plain(`output_blocks.${output}.1`, `up_blocks.${i}.attentions.${j}`);
      if (i < levels - 1 && j === upLayers[i]) plain(`output_blocks.${output}.${attn ? 2 : 1}.conv`, `up_blocks.${i}.upsamplers.0.conv`);
    }
  }

  return (key) => {
    const parts = key.split('.');
    for (let n = Math.min(4, parts.length - 1); n >= 1; n--) {
      const target = modules.get(parts.slice(0, n).join('.'));
      if (!target) continue;
      const rest = parts.slice(n).join('.');
      if (!target.resnet) return `${target.name}.${rest}`;
      for (const [from, to] of Object.entries(RESNET_PARTS)) if (rest.startsWith(`${from}.`)) return `${target.name}.${to}${rest.slice(from.length)}`;
      return undefined;
    }
    return undefined;
  };
}

/** The UNet config from tensor shapes (LDM keys without prefix); head counts follow the model family. */
function inferUnetConfig(unet: WeightSource, kind: ModelKind, textProjectionDim: number | undefined, file: string): Record<string, unknown> {
  const shape = (key: string): readonly number[] => {
    const entry = unet.entry(key);
    if (!entry) throw new Error(`${file}: missing UNet tensor "${UNET_PREFIX}${key}"`);
    return entry.shape;
  };
  const indices = (prefix: string): number[] => {
    const found = new Set<number>();
    for (const k of unet.keys()) if (k.startsWith(prefix)) found.add(Number(k.slice(prefix.length).split('.')[0]));
    return [...found].sort((a, b) => a - b);
  };
  const inputCount = indices('input_blocks.').length;
  const firstDown = indices('input_blocks.').find((n) => unet.has(`input_blocks.${n}.0.op.weight`));
  const layersPerBlock = firstDown === undefined ? inputCount - 1 : firstDown - 1;
  const levels = Math.round(inputCount / (layersPerBlock + 1));
  if (levels * (layersPerBlock + 1) !== inputCount || indices('output_blocks.').length !== inputCount)
    throw new Error(`${file}: unexpected UNet block layout (${inputCount} input blocks, ${indices('output_blocks.').length} output blocks)`);

  const channels: number[] = [];
  const attention: boolean[] = [];
  const transformerLayers: number[] = [];
  let linearProjection = false;
  let crossAttentionDim = 0;
  for (let i = 0; i < levels; i++) {
    const first = 1 + i * (layersPerBlock + 1);
    channels.push(shape(`input_blocks.${first}.0.out_layers.3.weight`)[0]);
    const hasAttention = unet.has(`input_blocks.${first}.1.proj_in.weight`);
    attention.push(hasAttention);
    transformerLayers.push(hasAttention ? indices(`input_blocks.${first}.1.transformer_blocks.`).length : 1);
    if (hasAttention) {
      linearProjection = shape(`input_blocks.${first}.1.proj_in.weight`).length === 2;
      crossAttentionDim = shape(`input_blocks.${first}.1.transformer_blocks.0.attn2.to_k.weight`)[1];
    }
  }
  const upAttention = Array.from({ length: levels }, (_, i) => unet.has(`output_blocks.${i * (layersPerBlock + 1)}.1.proj_in.weight`));
  const headDims = channels.map((c) => Math.max(1, Math.round(c / 64))); // heads of width 64 (SD2, SDXL)
  const config: Record<string, unknown> = {
    ...UNET_DEFAULTS,
    sample_size: kind === 'sdxl' ? 128 : kind === 'sd2' ? 96 : 64,
    in_channels: shape('input_blocks.0.0.weight')[1],
    out_channels: shape('out.2.weight')[0],
    block_out_channels: channels,
    layers_per_block: layersPerBlock,
    down_block_types: attention.map((a) => (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    up_block_types: upAttention.map((a) => (a ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    cross_attention_dim: crossAttentionDim || UNET_DEFAULTS.cross_attention_dim,
    use_linear_projection: linearProjection,
    transformer_layers_per_block: transformerLayers.every((n) => n === 1) ? 1 : transformerLayers,
    attention_head_dim: kind === 'sd1' ? 8 : headDims,
  };
  if (unet.has('label_emb.0.0.weight')) {
    const projectionInput = shape('label_emb.0.0.weight')[1];
    config.addition_embed_type = 'text_time';
    config.projection_class_embeddings_input_dim = projectionInput;
    // text_time input = pooled text embedding + 6 time ids of addition_time_embed_dim each.
    config.addition_time_embed_dim = textProjectionDim !== undefined ? (projectionInput - textProjectionDim) / 6 : 256;
  }
  return config;
}

// ---------------------------------------------------------------- VAE

const VAE_ATTENTION_PARTS: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

/** LDM VAE key (after "first_stage_model.") -> diffusers key and, for attention 1x1 convs, the linear shape. */
function mapVaeKey(key: string, decoderLevels: number, entry: WeightEntry): string | readonly [string, WeightEntry] | undefined {
  const resnetPart = (part: string): string => part.replace(/^nin_shortcut\./, 'conv_shortcut.');
  let m = /^(encoder)\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key);
  if (m) return `encoder.down_blocks.${m[2]}.resnets.${m[3]}.${resnetPart(m[4])}`;
  m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key);
  if (m) return `decoder.up_blocks.${decoderLevels - 1 - Number(m[1])}.resnets.${m[2]}.${resnetPart(m[3])}`;
  m = /^encoder\.down\.(\d+)\.downsample\.conv\.(.+)$/.exec(key);
  if (m) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  m = /^decoder\.up\.(\d+)\.upsample\.conv\.(.+)$/.exec(key);
  if (m) return `decoder.up_blocks.${decoderLevels - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(key);
  if (m) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${resnetPart(m[3])}`;
  m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(key);
  if (m) {
    const name = `${m[1]}.mid_block.attentions.0.${VAE_ATTENTION_PARTS[m[2]]}.${m[3]}`;
    // q/k/v/proj_out are 1x1 convolutions [c, c, 1, 1] in LDM, linear layers [c, c] in diffusers.
    if (m[3] === 'weight' && m[2] !== 'norm' && entry.shape.length === 4) return [name, reshapeEntry(entry, entry.shape.slice(0, 2))];
    return name;
  }
  m = /^(encoder|decoder)\.norm_out\.(.+)$/.exec(key);
  if (m) return `${m[1]}.conv_norm_out.${m[2]}`;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\./.test(key) || /^(quant_conv|post_quant_conv)\./.test(key)) return key;
  return undefined;
}

function inferVaeConfig(vae: WeightSource, kind: ModelKind, file: string): Record<string, unknown> {
  const shape = (key: string): readonly number[] => {
    const entry = vae.entry(key);
    if (!entry) throw new Error(`${file}: missing VAE tensor "${VAE_PREFIX}${key}"`);
    return entry.shape;
  };
  const count = (prefix: string): number => new Set(vae.keys().filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length).split('.')[0])).size;
  const levels = count('encoder.down.');
  const channels = Array.from({ length: levels }, (_, i) => shape(`encoder.down.${i}.block.0.conv1.weight`)[0]);
  return {
    ...VAE_DEFAULTS,
    in_channels: shape('encoder.conv_in.weight')[1],
    out_channels: shape('decoder.conv_out.weight')[0],
    block_out_channels: channels,
    down_block_types: channels.map(() => 'DownEncoderBlock2D'),
    up_block_types: channels.map(() => 'UpDecoderBlock2D'),
    layers_per_block: count('encoder.down.0.block.'),
    latent_channels: shape('decoder.conv_in.weight')[1],
    sample_size: kind === 'sdxl' ? 1024 : kind === 'sd2' ? 768 : 512,
    scaling_factor: kind === 'sdxl' ? 0.13025 : 0.18215,
    use_quant_conv: vae.has('quant_conv.weight'),
    use_post_quant_conv: vae.has('post_quant_conv.weight'),
  };
}

// ---------------------------------------------------------------- text encoders

/** OpenAI CLIP as saved by transformers inside the checkpoint: names kept, under "text_model.". */
function clipTextView(source: WeightSource, description: string): WeightSource {
  return source.view((key) => {
    if (key.endsWith('embeddings.position_ids')) return undefined; // a buffer, not a weight
    return key.startsWith('text_model.') ? key : `text_model.${key}`;
  }, description);
}

function clipTextConfigOf(text: WeightSource, file: string): Record<string, unknown> {
  const shape = (key: string): readonly number[] => {
    const entry = text.entry(key);
    if (!entry) throw new Error(`${file}: missing text encoder tensor "${key}"`);
    return entry.shape;
  };
  const [vocab, hidden] = shape('text_model.embeddings.token_embedding.weight');
  const layers = new Set(text.keys().filter((k) => k.startsWith('text_model.encoder.layers.')).map((k) => k.split('.')[3])).size;
  return {
    ...CLIP_TEXT_DEFAULTS,
    architectures: [text.has('text_projection.weight') ? 'CLIPTextModelWithProjection' : 'CLIPTextModel'],
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: shape('text_model.encoder.layers.0.mlp.fc1.weight')[0],
    num_hidden_layers: layers,
    num_attention_heads: Math.max(1, Math.round(hidden / 64)),
    max_position_embeddings: shape('text_model.embeddings.position_embedding.weight')[0],
    projection_dim: text.has('text_projection.weight') ? shape('text_projection.weight')[0] : 768,
  };
}

const OPENCLIP_LAYER_PARTS: Record<string, string> = {
  'ln_1.': 'layer_norm1.',
  'ln_2.': 'layer_norm2.',
  'attn.out_proj.': 'self_attn.out_proj.',
  'mlp.c_fc.': 'mlp.fc1.',
  'mlp.c_proj.': 'mlp.fc2.',
};

/**
 * OpenCLIP text tower -> transformers CLIPTextModel names. The fused attention input projection
 * [3c, c] becomes q/k/v [c, c] (row ranges of the file). `keepLayers` drops the last layers (SD2
 * runs 23 of OpenCLIP-H's 24); `withProjection` keeps text_projection, transposed for nn.Linear.
 */
function openClipTextView(source: WeightSource, keepLayers: number | undefined, withProjection: boolean, description: string): WeightSource {
  const width = source.entry('token_embedding.weight')?.shape[1];
  if (width === undefined) throw new Error(`${description}: OpenCLIP text tower has no token_embedding.weight`);
  const extra: [string, WeightEntry][] = [];
  const view = source.view((key, entry) => {
    if (key === 'token_embedding.weight') return 'text_model.embeddings.token_embedding.weight';
    if (key === 'positional_embedding') return 'text_model.embeddings.position_embedding.weight';
    if (key.startsWith('ln_final.')) return `text_model.final_layer_norm.${key.slice('ln_final.'.length)}`;
    if (key === 'logit_scale' || key === 'attn_mask') return undefined;
    if (key === 'text_projection') return withProjection ? ['text_projection.weight', transposeEntry2d(entry)] : undefined;
    const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(key);
    if (!m) return key; // unknown: left under its own name so assertAllTaken reports it
    const layer = Number(m[1]);
    if (keepLayers !== undefined && layer >= keepLayers) return undefined;
    const prefix = `text_model.encoder.layers.${layer}.`;
    const fused = /^attn\.in_proj_(weight|bias)$/.exec(m[2]);
    if (fused) {
      ['q', 'k', 'v'].forEach((p, i) => extra.push([`${prefix}self_attn.${p}_proj.${fused[1]}`, sliceRows(entry, i * width, width)]));
      return undefined;
    }
    for (const [from, to] of Object.entries(OPENCLIP_LAYER_PARTS)) if (m[2].startsWith(from)) return prefix + to + m[2].slice(from.length);
    return key;
  }, description);
  return view.withEntries(extra);
}

function openClipConfigOf(text: WeightSource, file: string, withProjection: boolean): Record<string, unknown> {
  return {
    ...clipTextConfigOf(text, file),
    hidden_act: 'gelu',
    pad_token_id: 1,
    architectures: [withProjection ? 'CLIPTextModelWithProjection' : 'CLIPTextModel'],
  };
}

// ---------------------------------------------------------------- assembly

function schedulerFor(kind: ModelKind, predictionType: 'epsilon' | 'v_prediction'): SchedulerConfig {
  const common = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', trained_betas: null, prediction_type: predictionType, steps_offset: 1, clip_sample: false, set_alpha_to_one: false };
  if (kind === 'sdxl') return { _class_name: 'EulerDiscreteScheduler', ...common, timestep_spacing: 'leading', interpolation_type: 'linear', use_karras_sigmas: false };
  return { _class_name: 'PNDMScheduler', ...common, skip_prk_steps: true };
}

export function openSingleFile(path: string, options: OpenSingleFileOptions = {}): OpenedModel {
  refusePickle(path);
  const all = WeightSource.open(path);
  const keys = all.keys();
  const kind = detectSingleFileKind(keys, path);
  const overrides = options.configOverrides ?? {};

  // Text encoders first: SDXL's UNet config needs the pooled projection width.
  let textEncoderSource: WeightSource;
  let textEncoderJson: Record<string, unknown>;
  let textEncoder2: OpenedModel['textEncoder2'];
  if (kind === 'sd1') {
    textEncoderSource = clipTextView(all.under(SD1_CLIP_PREFIX), `${path} (text encoder)`);
    textEncoderJson = clipTextConfigOf(textEncoderSource, path);
  } else if (kind === 'sd2') {
    const tower = all.under(SD2_OPENCLIP_PREFIX);
    const layers = new Set(tower.keys().filter((k) => k.startsWith('transformer.resblocks.')).map((k) => k.split('.')[2])).size;
    // SD 2.x conditions on the penultimate layer: diffusers' text encoder has one layer less.
    textEncoderSource = openClipTextView(tower, layers - 1, false, `${path} (text encoder)`);
    textEncoderJson = openClipConfigOf(textEncoderSource, path, false);
  } else {
    textEncoderSource = clipTextView(all.under(SDXL_CLIP_PREFIX), `${path} (text encoder)`);
    textEncoderJson = clipTextConfigOf(textEncoderSource, path);
    const weights2 = openClipTextView(all.under(SDXL_OPENCLIP_PREFIX), undefined, true, `${path} (text encoder 2)`);
    const json2 = { ...openClipConfigOf(weights2, path, true), ...overrides.textEncoder2 };
    textEncoder2 = { config: clipTextConfigFrom(json2, `${path} (text encoder 2 config)`), weights: weights2 };
  }
  const textEncoder = {
    config: clipTextConfigFrom({ ...textEncoderJson, ...overrides.textEncoder }, `${path} (text encoder config)`),
    weights: textEncoderSource,
  };

  const ldmUnet = all.under(UNET_PREFIX);
  const unetJson = { ...inferUnetConfig(ldmUnet, kind, textEncoder2?.config.projection_dim, path), ...overrides.unet };
  const unetConfig = unetConfigFrom(unetJson, `${path} (inferred UNet config)`);
  const mapUnetKey = ldmUnetKeyMapper(unetConfig);
  const unetWeights = ldmUnet.view((key) => mapUnetKey(key) ?? `${UNET_PREFIX}${key}`, `${path} (UNet)`);

  const ldmVae = all.under(VAE_PREFIX);
  const decoderLevels = new Set(ldmVae.keys().filter((k) => k.startsWith('decoder.up.')).map((k) => k.split('.')[2])).size;
  const vaeJson = { ...inferVaeConfig(ldmVae, kind, path), ...overrides.vae };
  const vae = {
    config: vaeConfigFrom(vaeJson, `${path} (inferred VAE config)`),
    weights: ldmVae.view((key, entry) => mapVaeKey(key, decoderLevels, entry) ?? `${VAE_PREFIX}${key}`, `${path} (VAE)`),
  };

  const modelIndex: Record<string, unknown> = {
    _class_name: kind === 'sdxl' ? 'StableDiffusionXLPipeline' : 'StableDiffusionPipeline',
    _single_file: path,
  };
  return {
    kind,
    modelIndex,
    unet: { config: unetConfig, weights: unetWeights },
    vae,
    textEncoder,
    textEncoder2,
    tokenizerDir: options.tokenizerDir,
    tokenizer2Dir: options.tokenizer2Dir,
    schedulerConfig: schedulerFor(kind, options.predictionType ?? 'epsilon'),
  };
}
