// Writes a model as one A1111 / ComfyUI single-file checkpoint (.safetensors) in the original
// (LDM / sgm) key layout: the inverse of single-file.ts. UNet under model.diffusion_model.*, VAE
// under first_stage_model.*, the SD 1.x text encoder under cond_stage_model.transformer.*, SDXL's
// two under conditioner.embedders.{0,1}.*. The file is written tensor by tensor into a temp file
// that is renamed into place (atomic; one tensor in memory at a time).
//
//   writeSingleFile(model, outPath, { replace?, metadata? }): { path, tensors, bytes }
//   diffusersUnetKeyMapper(config): (diffusersKey) => LDM key (after "model.diffusion_model.") | undefined
//   diffusersVaeKey(key, levels): LDM VAE key (after "first_stage_model.") | undefined
//   clipTextPrefixOf(keys): the prefix before "embeddings." in a CLIP text checkpoint
//   writeSafetensorsStreaming(path, tensors, metadata?)
//
// A model opened from a single file is written by copying the original file's tensors (so keys the
// engine does not read, e.g. SD 2.x's last text layer, survive) with the replaced ones swapped in.
import type { UNet2DConditionConfig } from './configs';
import type { ModelKind, OpenedModel } from './model-folder';
import { AtomicFileWriter } from './atomic-write';
import { SAFETENSORS_DTYPE_SIZE, SafetensorsFile, type SafetensorsDType } from './safetensors';
import { entryBytes, WeightSource, type WeightEntry } from './weights';

/** One tensor to stream into a file: its bytes are produced when its turn comes. */
export interface StreamedTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  read: () => Uint8Array;
}

/** A safetensors file written tensor by tensor (sorted by name, as the reference writer does), atomically. */
export function writeSafetensorsStreaming(path: string, tensors: readonly StreamedTensor[], metadata?: Record<string, string>): number {
  const ordered = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json: Record<string, unknown> = {};
  if (metadata) json.__metadata__ = metadata;
  let position = 0;
  for (const t of ordered) {
    if (Object.hasOwn(json, t.name)) throw new Error(`${path}: tensor "${t.name}" would be written twice`);
    const length = t.shape.reduce((a, d) => a * d, 1) * SAFETENSORS_DTYPE_SIZE[t.dtype];
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [position, position + length] };
    position += length;
  }
  const raw = Buffer.from(JSON.stringify(json), 'utf8');
  const padded = Math.ceil(raw.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(raw, 8);

  const writer = AtomicFileWriter.open(path);
  try {
    writer.write(header);
    for (const t of ordered) {
      const bytes = t.read();
      const [begin, end] = (json[t.name] as { data_offsets: [number, number] }).data_offsets;
      if (bytes.byteLength !== end - begin) throw new Error(`${path}: tensor "${t.name}" produced ${bytes.byteLength} bytes, expected ${end - begin}`);
      writer.write(bytes);
    }
    writer.commit();
  } catch (error) {
    writer.abort();
    throw error;
  }
  return header.byteLength + position;
}

// ---------------------------------------------------------------- UNet

const RESNET_PARTS: Record<string, string> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  time_emb_proj: 'emb_layers.1',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  conv_shortcut: 'skip_connection',
};

const perLevel = <T>(value: T | T[], levels: number): T[] => (Array.isArray(value) ? value : Array.from({ length: levels }, () => value));

/** Maps diffusers UNet keys to LDM keys (without "model.diffusion_model."), for a given config. */
export function diffusersUnetKeyMapper(config: UNet2DConditionConfig): (key: string) => string | undefined {
  const levels = config.block_out_channels.length;
  const layers = perLevel(config.layers_per_block, levels);
  const modules = new Map<string, { ldm: string; resnet: boolean }>();
  const plain = (name: string, ldm: string): void => void modules.set(name, { ldm, resnet: false });
  const resnet = (name: string, ldm: string): void => void modules.set(name, { ldm, resnet: true });

  plain('conv_in', 'input_blocks.0.0');
  plain('time_embedding.linear_1', 'time_embed.0');
  plain('time_embedding.linear_2', 'time_embed.2');
  plain('add_embedding.linear_1', 'label_emb.0.0');
  plain('add_embedding.linear_2', 'label_emb.0.2');
  plain('conv_norm_out', 'out.0');
  plain('conv_out', 'out.2');
  let input = 1;
  for (let i = 0; i < levels; i++) {
    const attn = config.down_block_types[i]!.startsWith('CrossAttn');
    for (let j = 0; j < layers[i]!; j++, input++) {
      resnet(`down_blocks.${i}.resnets.${j}`, `input_blocks.${input}.0`);
      if (attn) plain(`down_blocks.${i}.attentions.${j}`, `input_blocks.${input}.1`);
    }
    if (i < levels - 1) plain(`down_blocks.${i}.downsamplers.0.conv`, `input_blocks.${input++}.0.op`);
  }
  resnet('mid_block.resnets.0', 'middle_block.0');
  plain('mid_block.attentions.0', 'middle_block.1');
  resnet('mid_block.resnets.1', 'middle_block.2');
  const upLayers = [...layers].reverse();
  let output = 0;
  for (let i = 0; i < levels; i++) {
    const attn = config.up_block_types[i]!.startsWith('CrossAttn');
    for (let j = 0; j <= upLayers[i]!; j++, output++) {
      resnet(`up_blocks.${i}.resnets.${j}`, `output_blocks.${output}.0`);
      if (attn) plain(`up_blocks.${i}.attentions.${j}`, `output_blocks.${output}.1`);
      if (i < levels - 1 && j === upLayers[i]) plain(`up_blocks.${i}.upsamplers.0.conv`, `output_blocks.${output}.${attn ? 2 : 1}.conv`);
    }
  }

  return (key) => {
    const parts = key.split('.');
    for (let n = Math.min(5, parts.length - 1); n >= 1; n--) {
      const target = modules.get(parts.slice(0, n).join('.'));
      if (!target) continue;
      const rest = parts.slice(n).join('.');
      if (!target.resnet) return `${target.ldm}.${rest}`;
      const [part, ...tail] = rest.split('.');
      const ldmPart = RESNET_PARTS[part!];
      return ldmPart ? `${target.ldm}.${ldmPart}.${tail.join('.')}` : undefined;
    }
    return undefined;
  };
}

// ---------------------------------------------------------------- VAE

const VAE_ATTENTION_PARTS: Record<string, string> = { group_norm: 'norm', to_q: 'q', to_k: 'k', to_v: 'v', 'to_out.0': 'proj_out' };

/** A diffusers VAE key -> the LDM key (after "first_stage_model."); `levels` = number of decoder up blocks. */
export function diffusersVaeKey(key: string, levels: number): string | undefined {
  const resnetPart = (part: string): string => part.replace(/^conv_shortcut\./, 'nin_shortcut.');
  let m = /^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(key);
  if (m) return `encoder.down.${m[1]}.block.${m[2]}.${resnetPart(m[3]!)}`;
  m = /^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(key);
  if (m) return `decoder.up.${levels - 1 - Number(m[1])}.block.${m[2]}.${resnetPart(m[3]!)}`;
  m = /^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(key);
  if (m) return `encoder.down.${m[1]}.downsample.conv.${m[2]}`;
  m = /^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(key);
  if (m) return `decoder.up.${levels - 1 - Number(m[1])}.upsample.conv.${m[2]}`;
  m = /^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$/.exec(key);
  if (m) return `${m[1]}.mid.block_${Number(m[2]) + 1}.${resnetPart(m[3]!)}`;
  m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(key);
  if (m) return `${m[1]}.mid.attn_1.${VAE_ATTENTION_PARTS[m[2]!]}.${m[3]}`;
  m = /^(encoder|decoder)\.conv_norm_out\.(.+)$/.exec(key);
  if (m) return `${m[1]}.norm_out.${m[2]}`;
  if (/^(encoder|decoder)\.(conv_in|conv_out)\./.test(key) || /^(quant_conv|post_quant_conv)\./.test(key)) return key;
  return undefined;
}

// ---------------------------------------------------------------- text encoders

/**
 * The prefix of a CLIP text checkpoint's transformer keys: "text_model" (transformers 4), ""
 * (transformers 5 CLIPTextModel), or whatever else precedes "embeddings.token_embedding.weight".
 */
export function clipTextPrefixOf(keys: Iterable<string>): string {
  const suffix = 'embeddings.token_embedding.weight';
  for (const key of keys) if (key.endsWith(suffix)) return key.slice(0, key.length - suffix.length).replace(/\.$/, '');
  throw new Error('CLIP text encoder weights have no embeddings.token_embedding.weight');
}

/** A text encoder key under transformers' canonical names ("text_model.…", "text_projection.weight"). */
export function canonicalTextKey(key: string, prefix: string): string {
  if (key === 'text_projection.weight') return key;
  if (prefix === '') return `text_model.${key}`;
  return key.startsWith(`${prefix}.`) ? `text_model.${key.slice(prefix.length + 1)}` : key;
}

const OPENCLIP_LAYER_PARTS: Record<string, string> = {
  'layer_norm1.': 'ln_1.',
  'layer_norm2.': 'ln_2.',
  'self_attn.out_proj.': 'attn.out_proj.',
  'mlp.fc1.': 'mlp.c_fc.',
  'mlp.fc2.': 'mlp.c_proj.',
};

// ---------------------------------------------------------------- assembly

export interface WriteSingleFileOptions {
  /**
   * Tensors to write instead of the model's, by component and diffusers name (merged LoRA
   * weights): same shape; the dtype may differ.
   */
  replace?: { unet?: ReadonlyMap<string, WeightEntry>; textEncoder?: ReadonlyMap<string, WeightEntry>; textEncoder2?: ReadonlyMap<string, WeightEntry> };
  metadata?: Record<string, string>;
}

type Component = 'unet' | 'vae' | 'textEncoder' | 'textEncoder2';

/** Bytes of an entry without keeping computed results cached (the writer holds one tensor at a time). */
function freshBytes(entry: WeightEntry): Uint8Array {
  return entry.bytes.kind === 'computed' ? entry.bytes.compute() : entryBytes(entry);
}

function streamed(name: string, entry: WeightEntry, shape: readonly number[] = entry.shape): StreamedTensor {
  return { name, dtype: entry.dtype, shape, read: () => freshBytes(entry) };
}

function withReplacements(model: OpenedModel, component: Component, replace: WriteSingleFileOptions['replace']): WeightSource {
  const source = component === 'vae' ? model.vae.weights : component === 'unet' ? model.unet.weights : component === 'textEncoder' ? model.textEncoder.weights : model.textEncoder2!.weights;
  const map = component === 'vae' ? undefined : replace?.[component];
  if (!map || map.size === 0) return source;
  for (const [name, entry] of map) {
    const original = source.entry(name);
    if (!original) throw new Error(`${source.description}: cannot replace "${name}": the model has no such tensor`);
    if (original.shape.join() !== entry.shape.join()) throw new Error(`${source.description}: replacement for "${name}" has shape [${entry.shape.join(', ')}], the model's is [${original.shape.join(', ')}]`);
  }
  return source.view((name, entry) => [name, map.get(name) ?? entry]);
}

function unetTensors(model: OpenedModel, unet: WeightSource): StreamedTensor[] {
  const toLdm = diffusersUnetKeyMapper(model.unet.config);
  return unet.keys().map((key) => {
    const ldm = toLdm(key);
    if (!ldm) throw new Error(`${unet.description}: UNet tensor "${key}" has no place in the LDM layout`);
    return streamed(`model.diffusion_model.${ldm}`, unet.entry(key)!);
  });
}

function vaeTensors(model: OpenedModel): StreamedTensor[] {
  const vae = model.vae.weights;
  const levels = model.vae.config.block_out_channels.length;
  return vae.keys().map((key) => {
    const ldm = diffusersVaeKey(key, levels);
    if (!ldm) throw new Error(`${vae.description}: VAE tensor "${key}" has no place in the LDM layout`);
    const entry = vae.entry(key)!;
    // The mid-block attention's q/k/v/proj_out are 1x1 convolutions in LDM checkpoints.
    const isAttentionMatrix = /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(ldm) && entry.shape.length === 2;
    return streamed(`first_stage_model.${ldm}`, entry, isAttentionMatrix ? [...entry.shape, 1, 1] : entry.shape);
  });
}

/** OpenAI CLIP (SD 1.x, SDXL's first encoder): transformers names under `prefix`. */
function clipTensors(text: WeightSource, prefix: string): StreamedTensor[] {
  const modelPrefix = clipTextPrefixOf(text.keys());
  return text.keys().map((key) => streamed(`${prefix}${canonicalTextKey(key, modelPrefix)}`, text.entry(key)!));
}

/** SDXL's OpenCLIP-bigG text tower: fused q/k/v, transposed text_projection, OpenCLIP names. */
function openClipTensors(text: WeightSource, prefix: string): StreamedTensor[] {
  const modelPrefix = clipTextPrefixOf(text.keys());
  const byCanonical = new Map(text.keys().map((k) => [canonicalTextKey(k, modelPrefix), text.entry(k)!]));
  const out: StreamedTensor[] = [];
  for (const [key, entry] of byCanonical) {
    if (key === 'text_model.embeddings.token_embedding.weight') out.push(streamed(`${prefix}token_embedding.weight`, entry));
    else if (key === 'text_model.embeddings.position_embedding.weight') out.push(streamed(`${prefix}positional_embedding`, entry));
    else if (key.startsWith('text_model.final_layer_norm.')) out.push(streamed(`${prefix}ln_final.${key.slice('text_model.final_layer_norm.'.length)}`, entry));
    else if (key === 'text_projection.weight') {
      const [rows, cols] = entry.shape as [number, number];
      const size = SAFETENSORS_DTYPE_SIZE[entry.dtype];
      out.push({
        name: `${prefix}text_projection`,
        dtype: entry.dtype,
        shape: [cols, rows],
        read: () => transposeBytes(freshBytes(entry), rows, cols, size),
      });
    } else {
      const m = /^text_model\.encoder\.layers\.(\d+)\.(.+)$/.exec(key);
      if (!m) throw new Error(`${text.description}: text encoder tensor "${key}" has no place in the OpenCLIP layout`);
      const layer = `${prefix}transformer.resblocks.${m[1]}.`;
      const fused = /^self_attn\.(q|k|v)_proj\.(weight|bias)$/.exec(m[2]!);
      if (fused) {
        if (fused[1] !== 'q') continue; // q, k and v go out together as in_proj
        const parts = ['q', 'k', 'v'].map((p) => byCanonical.get(`text_model.encoder.layers.${m[1]}.self_attn.${p}_proj.${fused[2]}`));
        if (parts.some((p) => !p)) throw new Error(`${text.description}: layer ${m[1]} lacks one of q/k/v_proj.${fused[2]}`);
        const [first, ...rest] = entry.shape;
        out.push({
          name: `${layer}attn.in_proj_${fused[2]}`,
          dtype: entry.dtype,
          shape: [3 * first!, ...rest],
          read: () => Buffer.concat(parts.map((p) => freshBytes(p!))),
        });
        continue;
      }
      const part = Object.keys(OPENCLIP_LAYER_PARTS).find((from) => m[2]!.startsWith(from));
      if (!part) throw new Error(`${text.description}: text encoder tensor "${key}" has no place in the OpenCLIP layout`);
      out.push(streamed(layer + OPENCLIP_LAYER_PARTS[part] + m[2]!.slice(part.length), entry));
    }
  }
  return out;
}

function transposeBytes(bytes: Uint8Array, rows: number, cols: number, size: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out.set(bytes.subarray((r * cols + c) * size, (r * cols + c + 1) * size), (c * rows + r) * size);
  return out;
}

/** The original file's tensors, with each replaced diffusers tensor swapped in at its stored key. */
function copyThroughTensors(model: OpenedModel, file: string, replace: WriteSingleFileOptions['replace']): StreamedTensor[] {
  const original = SafetensorsFile.open(file);
  original.close();
  const swapped = new Map<string, WeightEntry>();
  const sources: [Exclude<Component, 'vae'>, WeightSource | undefined][] = [
    ['unet', model.unet.weights],
    ['textEncoder', model.textEncoder.weights],
    ['textEncoder2', model.textEncoder2?.weights],
  ];
  for (const [component, source] of sources) {
    for (const [name, entry] of replace?.[component] ?? []) {
      const stored = source?.entry(name);
      if (!stored) throw new Error(`${file}: cannot replace "${name}": the model has no such tensor`);
      const b = stored.bytes;
      // Only tensors stored whole under one key can be swapped (not OpenCLIP's fused q/k/v rows).
      const info = original.has(stored.sourceKey) ? original.tensor(stored.sourceKey) : undefined;
      if (b.kind !== 'file' || !info || info.offset !== b.offset || info.byteLength !== b.length || info.shape.join() !== entry.shape.join())
        throw new Error(`${file}: "${name}" is stored as part of "${stored.sourceKey}"; merging into it is not supported for this checkpoint layout`);
      swapped.set(stored.sourceKey, entry);
    }
  }
  return original.tensors.map((t) => {
    const replacement = swapped.get(t.name);
    if (replacement) return streamed(t.name, replacement);
    return { name: t.name, dtype: t.dtype, shape: t.shape, read: () => original.readBytes(t.name) };
  });
}

const SINGLE_FILE_SUPPORTED: readonly ModelKind[] = ['sd1', 'sdxl'];

/**
 * Writes `model` (with `replace`d tensors) as a single-file checkpoint at `outPath`, atomically.
 * Returns the tensor count and file size.
 */
export function writeSingleFile(model: OpenedModel, outPath: string, options: WriteSingleFileOptions = {}): { path: string; tensors: number; bytes: number } {
  const singleFile = typeof model.modelIndex._single_file === 'string' ? model.modelIndex._single_file : undefined;
  let tensors: StreamedTensor[];
  if (singleFile) {
    tensors = copyThroughTensors(model, singleFile, options.replace);
  } else {
    if (!SINGLE_FILE_SUPPORTED.includes(model.kind))
      throw new Error(
        `writing a ${model.kind} model from a diffusers folder as one file is not supported (its OpenCLIP text encoder lost its last layer in the diffusers conversion); merge into the original single-file checkpoint instead`,
      );
    tensors = [
      ...unetTensors(model, withReplacements(model, 'unet', options.replace)),
      ...vaeTensors(model),
      ...(model.kind === 'sd1'
        ? clipTensors(withReplacements(model, 'textEncoder', options.replace), 'cond_stage_model.transformer.')
        : [
            ...clipTensors(withReplacements(model, 'textEncoder', options.replace), 'conditioner.embedders.0.transformer.'),
            ...openClipTensors(withReplacements(model, 'textEncoder2', options.replace), 'conditioner.embedders.1.model.'),
          ]),
    ];
  }
  const bytes = writeSafetensorsStreaming(outPath, tensors, { format: 'pt', ...options.metadata });
  return { path: outPath, tensors: tensors.length, bytes };
}
