// LoRA files on disk: writing what training produced, reading what users bring.
//
// Two layouts are written:
// - kohya (sd-scripts networks.lora; what A1111, ComfyUI and diffusers all load):
//     `<key>.lora_down.weight` [r, in(, k, k)], `<key>.lora_up.weight` [out, r(, 1, 1)],
//     `<key>.alpha` float32 scalar, key = `lora_unet_<diffusers module, dots as underscores>`;
//     metadata `ss_*` (sd-scripts' training record) and `modelspec.*` (Stability's ModelSpec).
// - diffusers / peft: `unet.<module>.lora_A.weight` (= down), `unet.<module>.lora_B.weight` (= up).
//   diffusers reads a file without alphas as alpha = rank (scale 1; peft_utils.get_peft_kwargs), so
//   the scale alpha / rank is folded into lora_B: every loader then applies the same delta.
//
// Any file of those layouts is read back into one normalized form (`LoraFile`), keyed by the kohya
// base key, which is what `LoraNetwork` derives from the module names while it builds a model:
//
//   writeLoraFile(path, modules, { format, precision, metadata })    atomic
//   readLoraFile(path): LoraFile                                      kohya or diffusers/peft, alpha optional
//   loraModulesFromNetwork(network modules, weights map)              training state -> LoraModuleWeights[]
//   kohyaTrainingMetadata(info): Record<string, string>               ss_* + modelspec.* keys
//   toSdxlKohyaNames(modules, unetConfig)                             sd-scripts' SDXL key names (LDM UNet blocks, lora_te1/te2)
//   moduleFromKohyaKey(rest)                                          best-effort diffusers module name
import { readFileSync } from 'node:fs';
import { decodeSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors';
import { float16ToFloat32, bfloat16ToFloat32, float32ToFloat16 } from '../io/dtype-convert';
import type { UNet2DConditionConfig } from '../io/configs';
import { diffusersUnetKeyMapper } from '../io/single-file-writer';
import { alphaName, downName, kohyaKey, upName, type LoraModule, type LoraPrefix } from './lora-network';

/** One adapter, in float32, with everything a loader needs. */
export interface LoraModuleWeights {
  /** kohya base key, e.g. "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q". */
  key: string;
  prefix: LoraPrefix;
  /**
   * diffusers module name inside its component ("down_blocks.0.attentions.0...attn1.to_q"). Exact
   * for files written in diffusers naming or by us; rebuilt from the kohya key otherwise (see
   * moduleFromKohyaKey; SDXL files in the LDM `input_blocks_*` naming keep that naming).
   */
  module: string;
  rank: number;
  /** scale = alpha / rank. A file without alphas gets alpha = rank (scale 1), as sd-scripts and diffusers do. */
  alpha: number;
  down: Float32Array;
  downShape: number[]; // [r, in] or [r, in, k, k]
  up: Float32Array;
  upShape: number[]; // [out, r] or [out, r, 1, 1]
}

export interface LoraFile {
  path: string;
  /** Layout the file was in. */
  format: 'kohya' | 'diffusers';
  modules: LoraModuleWeights[];
  /** The file's __metadata__ (empty when none). */
  metadata: Record<string, string>;
}

export interface WriteLoraOptions {
  format: 'kohya' | 'diffusers';
  precision: 'fp16' | 'fp32';
  metadata?: Record<string, string>;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** The training state's adapters (network modules + the current tensors by kohya tensor name). */
export function loraModulesFromNetwork(modules: readonly LoraModule[], weights: ReadonlyMap<string, Float32Array>): LoraModuleWeights[] {
  return modules.map((m) => {
    const down = weights.get(downName(m.key));
    const up = weights.get(upName(m.key));
    if (!down || !up) throw new Error(`LoRA weights for ${m.key} are missing`);
    return { key: m.key, prefix: keyPrefix(m.key), module: m.module, rank: m.rank, alpha: m.alpha, down, downShape: [...m.downShape], up, upShape: [...m.upShape] };
  });
}

function keyPrefix(key: string): LoraPrefix {
  for (const p of ['lora_unet', 'lora_te1', 'lora_te2', 'lora_te'] as const) if (key.startsWith(`${p}_`)) return p;
  throw new Error(`LoRA key "${key}" has no known prefix (lora_unet_, lora_te_, lora_te1_, lora_te2_)`);
}

const DIFFUSERS_COMPONENT: Record<LoraPrefix, string> = { lora_unet: 'unet', lora_te: 'text_encoder', lora_te1: 'text_encoder', lora_te2: 'text_encoder_2' };

function tensor(name: string, data: Float32Array, shape: readonly number[], precision: 'fp16' | 'fp32'): TensorToWrite {
  return precision === 'fp16' ? { name, dtype: 'F16', shape, data: float32ToFloat16(data) } : { name, dtype: 'F32', shape, data };
}

/** Writes the LoRA atomically (temp file + rename): an existing file at `path` stays intact until the new one is complete. */
export function writeLoraFile(path: string, modules: readonly LoraModuleWeights[], options: WriteLoraOptions): void {
  const tensors: TensorToWrite[] = [];
  for (const m of modules) {
    if (options.format === 'kohya') {
      tensors.push(tensor(downName(m.key), m.down, m.downShape, options.precision));
      tensors.push(tensor(upName(m.key), m.up, m.upShape, options.precision));
      // sd-scripts saves alpha in the network's dtype; a float32 scalar loads everywhere.
      tensors.push({ name: alphaName(m.key), dtype: 'F32', shape: [], data: Float32Array.of(m.alpha) });
    } else {
      const base = `${DIFFUSERS_COMPONENT[m.prefix]}.${m.module}`;
      const scale = m.alpha / m.rank;
      const scaledUp = new Float32Array(m.up.length);
      for (let i = 0; i < m.up.length; i++) scaledUp[i] = m.up[i] * scale;
      tensors.push(tensor(`${base}.lora_A.weight`, m.down, m.downShape, options.precision));
      tensors.push(tensor(`${base}.lora_B.weight`, scaledUp, m.upShape, options.precision));
    }
  }
  const metadata = { format: 'pt', ...(options.metadata ?? {}) };
  writeSafetensors(path, tensors, metadata);
}

/**
 * The adapters renamed the way sd-scripts names SDXL LoRAs (what A1111 / ComfyUI expect of an SDXL
 * kohya file): UNet modules in the original (LDM) block naming, down_blocks.i.attentions.j ->
 * input_blocks.{3i+j+1}.1, mid_block.attentions.0 -> middle_block.1, up_blocks.i.attentions.j ->
 * output_blocks.{3i+j}.1 (resnets, samplers and the rest as the checkpoint converter maps them),
 * e.g. `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`; the first text encoder as
 * `lora_te1_`. Only `key` (and a `lora_te` prefix) changes: `module` keeps the diffusers name, so
 * the diffusers layout of the same modules is unchanged. Throws naming a module without an LDM name.
 */
export function toSdxlKohyaNames(modules: readonly LoraModuleWeights[], unetConfig: UNet2DConditionConfig): LoraModuleWeights[] {
  const toLdm = diffusersUnetKeyMapper(unetConfig);
  return modules.map((m) => {
    if (m.prefix === 'lora_unet') {
      const ldm = toLdm(`${m.module}.weight`);
      if (!ldm) throw new Error(`LoRA module ${m.module}: this UNet layer has no name in the original SDXL (LDM) layout`);
      return { ...m, key: kohyaKey('lora_unet', ldm.slice(0, -'.weight'.length)) };
    }
    if (m.prefix === 'lora_te') return { ...m, prefix: 'lora_te1', key: kohyaKey('lora_te1', m.module) };
    return { ...m };
  });
}

/** What the kohya metadata records about a training run. */
export interface LoraTrainingInfo {
  kind: 'sd1' | 'sd2' | 'sdxl';
  prediction: 'epsilon' | 'v_prediction';
  title: string;
  rank: number;
  alpha: number;
  /** ss_network_args: e.g. conv_dim / conv_alpha for LoCon targets. */
  networkArgs?: Record<string, string>;
  resolution: { width: number; height: number };
  numTrainImages: number;
  /** sd-scripts layout: { "<dataset folder name>": { "<tag>": count } }. */
  tagFrequency: Record<string, Record<string, number>>;
  steps: number;
  maxSteps: number;
  epoch: number;
  seed: number;
  learningRate: number;
  /** Set when the text encoder was trained too (its LoRA's learning rate); otherwise ss_text_encoder_lr is 0. */
  textEncoderLearningRate?: number;
  lrScheduler: string;
  lrWarmupSteps: number;
  batchSize: number;
  gradientAccumulation: number;
  /** Recorded only (ss_gradient_checkpointing); it changes memory and speed, not the result. */
  gradientCheckpointing?: boolean;
  maxGradNorm: number;
  minSnrGamma: number | undefined;
  noiseOffset: number;
  clipSkip: number;
  baseModelName: string;
  precision: 'fp16' | 'fp32';
  /** Unix seconds. */
  trainingStartedAt: number;
  trainingFinishedAt: number;
  trigger?: string;
}

const BASE_MODEL_VERSION = { sd1: 'sd_v1', sd2: 'sd_v2', sdxl: 'sdxl_base_v1-0' } as const;
const ARCHITECTURE = { sd1: 'stable-diffusion-v1', sd2: 'stable-diffusion-v2-512', sdxl: 'stable-diffusion-xl-v1-base' } as const;

/** The `ss_*` keys sd-scripts writes (the ones that apply to us) and the ModelSpec keys. */
export function kohyaTrainingMetadata(info: LoraTrainingInfo): Record<string, string> {
  const architecture = info.kind === 'sd2' && info.prediction === 'v_prediction' ? 'stable-diffusion-v2-768-v' : ARCHITECTURE[info.kind];
  const { width, height } = info.resolution;
  const meta: Record<string, string> = {
    ss_network_module: 'networks.lora',
    ss_network_dim: String(info.rank),
    ss_network_alpha: String(info.alpha),
    ss_network_args: JSON.stringify(info.networkArgs ?? {}),
    ss_base_model_version: BASE_MODEL_VERSION[info.kind],
    ss_v2: String(info.kind === 'sd2'),
    ss_v_parameterization: String(info.prediction === 'v_prediction'),
    ss_sd_model_name: info.baseModelName,
    ss_resolution: `(${width}, ${height})`,
    ss_num_train_images: String(info.numTrainImages),
    ss_tag_frequency: JSON.stringify(info.tagFrequency),
    ss_steps: String(info.steps),
    ss_max_train_steps: String(info.maxSteps),
    ss_epoch: String(info.epoch),
    ss_seed: String(info.seed),
    ss_learning_rate: String(info.learningRate),
    ss_unet_lr: String(info.learningRate),
    ss_text_encoder_lr: String(info.textEncoderLearningRate ?? 0),
    ss_network_train_unet_only: String(info.textEncoderLearningRate === undefined),
    ss_lr_scheduler: info.lrScheduler,
    ss_lr_warmup_steps: String(info.lrWarmupSteps),
    ss_batch_size_per_device: String(info.batchSize),
    ss_gradient_accumulation_steps: String(info.gradientAccumulation),
    ss_gradient_checkpointing: String(info.gradientCheckpointing ?? false),
    ss_max_grad_norm: String(info.maxGradNorm),
    ss_min_snr_gamma: info.minSnrGamma === undefined ? 'None' : String(info.minSnrGamma),
    ss_noise_offset: String(info.noiseOffset),
    ss_clip_skip: String(info.clipSkip),
    ss_optimizer: 'torch.optim.AdamW',
    ss_mixed_precision: 'no',
    ss_save_precision: info.precision === 'fp16' ? 'fp16' : 'float',
    ss_output_name: info.title,
    ss_training_started_at: String(info.trainingStartedAt),
    ss_training_finished_at: String(info.trainingFinishedAt),
    'modelspec.sai_model_spec': '1.0.0',
    'modelspec.architecture': `${architecture}/lora`,
    'modelspec.implementation': info.kind === 'sdxl' ? 'https://github.com/Stability-AI/generative-models' : 'diffusers',
    'modelspec.implementation_version': 'lora-studio',
    'modelspec.title': info.title,
    'modelspec.date': new Date(info.trainingFinishedAt * 1000).toISOString().slice(0, 19),
    'modelspec.resolution': `${width}x${height}`,
    'modelspec.prediction_type': info.prediction === 'v_prediction' ? 'v' : 'epsilon',
    'modelspec.encoder_layer': String(info.clipSkip),
  };
  if (info.trigger) meta['modelspec.trigger_phrase'] = info.trigger;
  return meta;
}

// Multi-word names in diffusers / transformers module paths; any other '_' separates two parts.
const COMPOUND_NAMES = [
  'down_blocks', 'up_blocks', 'mid_block', 'transformer_blocks', 'proj_in', 'proj_out', 'to_q', 'to_k', 'to_v', 'to_out',
  'conv_in', 'conv_out', 'conv_shortcut', 'conv_norm_out', 'time_emb_proj', 'time_embedding', 'linear_1', 'linear_2',
  'add_embedding', 'text_model', 'self_attn', 'q_proj', 'k_proj', 'v_proj', 'out_proj', 'final_layer_norm', 'layer_norm1',
  'layer_norm2', 'token_embedding', 'position_embedding', 'text_projection', 'input_blocks', 'output_blocks', 'middle_block',
  'emb_layers', 'in_layers', 'out_layers', 'skip_connection',
].map((n) => n.split('_'));

/**
 * The diffusers module name a kohya key stands for: `down_blocks_0_attentions_0_..._attn1_to_out_0`
 * -> `down_blocks.0.attentions.0....attn1.to_out.0`. kohya keys lose the dots, so this rebuilds them
 * from the known multi-word names; exact for the SD 1.x/2.x UNet and CLIP layers LoRAs target.
 */
export function moduleFromKohyaKey(rest: string): string {
  const parts = rest.split('_');
  const out: string[] = [];
  let i = 0;
  while (i < parts.length) {
    const match = COMPOUND_NAMES.filter((c) => c.every((p, j) => parts[i + j] === p)).sort((a, b) => b.length - a.length)[0];
    const length = match ? match.length : 1;
    out.push(parts.slice(i, i + length).join('_'));
    i += length;
  }
  return out.join('.');
}

function toFloat32(t: { dtype: string; bytes: Uint8Array }, file: string, name: string): Float32Array {
  const { buffer, byteOffset, byteLength } = t.bytes;
  switch (t.dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, byteLength / 4);
    case 'F16':
      return float16ToFloat32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'BF16':
      return bfloat16ToFloat32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'F64':
      return Float32Array.from(new Float64Array(buffer, byteOffset, byteLength / 8));
    default:
      throw new Error(`${file}: tensor "${name}" has dtype ${t.dtype}; a LoRA needs float weights`);
  }
}

const PEFT_COMPONENTS: Record<string, LoraPrefix> = { unet: 'lora_unet', text_encoder: 'lora_te', text_encoder_2: 'lora_te2' };

/**
 * Reads a LoRA in kohya naming (`lora_unet_*`, `lora_te_*`, `lora_te1_*`, `lora_te2_*`; `.alpha`
 * optional) or diffusers/peft naming (`unet.<module>.lora_A.weight` / `lora_B.weight`, also the
 * older `.lora.down.weight` / `.lora.up.weight` and `.lora_linear_layer.*`, keys with no component
 * prefix taken as UNet; alphas from `<module>.alpha` tensors or diffusers' `lora_adapter_metadata`
 * `lora_alpha`, else alpha = rank). Tensors come back as float32. Throws naming the file and key for
 * a tensor without its partner, mismatched ranks, or a file that holds no LoRA at all.
 */
export function readLoraFile(path: string): LoraFile {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new Error(`${path}: cannot read the LoRA file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const { tensors, metadata = {} } = decodeSafetensors(bytes, path);
  const names = [...tensors.keys()];
  const isKohya = names.some((n) => /^lora_(unet|te\d?)_/.test(n));

  interface Partial_ { prefix: LoraPrefix; module: string; key: string; down?: string; up?: string; alpha?: number }
  const byKey = new Map<string, Partial_>();
  const entry = (prefix: LoraPrefix, module: string, key: string): Partial_ => {
    let e = byKey.get(key);
    if (!e) byKey.set(key, (e = { prefix, module, key }));
    return e;
  };
  const scalar = (name: string): number => {
    const values = toFloat32(tensors.get(name)!, path, name);
    if (values.length !== 1) throw new Error(`${path}: "${name}" should be a single number, it has ${values.length} values`);
    return values[0];
  };

  if (isKohya) {
    for (const name of names) {
      const m = /^(lora_unet|lora_te1|lora_te2|lora_te)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(name);
      if (!m) continue; // other networks' extras (dora_scale, hada_*, ...) are not LoRA tensors we apply
      const [, prefix, rest, part] = m;
      const e = entry(prefix as LoraPrefix, moduleFromKohyaKey(rest), `${prefix}_${rest}`);
      if (part === 'alpha') e.alpha = scalar(name);
      else if (part === 'lora_down.weight') e.down = name;
      else e.up = name;
    }
  } else {
    let metaAlpha: Record<string, number> = {};
    if (metadata.lora_adapter_metadata) {
      try {
        const parsed = JSON.parse(metadata.lora_adapter_metadata) as Record<string, unknown>;
        for (const [k, v] of Object.entries(parsed)) if (k.endsWith('lora_alpha') && typeof v === 'number') metaAlpha[k.split('.')[0]] = v;
      } catch {
        metaAlpha = {};
      }
    }
    for (const name of names) {
      const m = /^(?:base_model\.model\.)?(?:(unet|text_encoder|text_encoder_2)\.)?(.+?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$/.exec(name);
      if (!m) continue;
      const [, component = 'unet', module, part] = m;
      const prefix = PEFT_COMPONENTS[component];
      const e = entry(prefix, module, kohyaKey(prefix, module));
      if (part === 'alpha') e.alpha = scalar(name);
      else if (/lora_A|down/.test(part)) e.down = name;
      else e.up = name;
      if (e.alpha === undefined && metaAlpha[component] !== undefined) e.alpha = metaAlpha[component];
    }
  }

  const modules: LoraModuleWeights[] = [];
  for (const e of [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    if (!e.down || !e.up) throw new Error(`${path}: LoRA module "${e.key}" has ${e.down ? 'a down' : 'an up'} weight but no ${e.down ? 'up' : 'down'} weight`);
    const down = tensors.get(e.down)!;
    const up = tensors.get(e.up)!;
    const rank = down.shape[0];
    if (up.shape[1] !== rank || down.shape.length !== up.shape.length)
      throw new Error(`${path}: LoRA module "${e.key}": down ${JSON.stringify(down.shape)} and up ${JSON.stringify(up.shape)} do not fit together (rank ${rank})`);
    modules.push({
      key: e.key,
      prefix: e.prefix,
      module: e.module,
      rank,
      alpha: e.alpha ?? rank,
      down: toFloat32(down, path, e.down),
      downShape: [...down.shape],
      up: toFloat32(up, path, e.up),
      upShape: [...up.shape],
    });
  }
  if (modules.length === 0) throw new Error(`${path}: no LoRA tensors found (expected kohya "lora_unet_*.lora_down.weight" or diffusers "unet.*.lora_A.weight" keys)`);
  return { path, format: isKohya ? 'kohya' : 'diffusers', modules, metadata };
}

/** Checks that `n` values fit `shape` (for callers that build LoraModuleWeights by hand). */
export function assertModuleShapes(m: LoraModuleWeights): void {
  if (m.down.length !== numel(m.downShape) || m.up.length !== numel(m.upShape))
    throw new Error(`LoRA module ${m.key}: data lengths ${m.down.length}/${m.up.length} do not match shapes ${JSON.stringify(m.downShape)}/${JSON.stringify(m.upShape)}`);
}
