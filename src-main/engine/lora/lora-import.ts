// Reads an existing LoRA file (kohya / A1111 / ComfyUI naming, or diffusers / peft naming) and
// matches it to a base model: every module becomes { component, diffusers module name, kind,
// rank, alpha, down, up } with shapes checked against the model's weights. Keys that fit no
// module of the model are returned (and the CLI prints them), never dropped silently; a LoRA made
// for another base model (different shapes) is refused naming the file, the first mismatched key
// and both shapes; a truncated or corrupt file is refused by the safetensors reader.
//
//   loraTargetCatalog(model): LoraTargetCatalog        linear/conv modules of the model, kohya names too
//   importLoraFile(path, catalog, options?): ImportedLora
//   toKohyaTensors(lora): Map<kohya tensor name, Float32Array>   (LoraNetwork's input names: continue training)
//   loraFileHash(path): A1111's short hash of a LoRA file (sha256 of the data after the header)
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import type { OpenedModel } from '../io/model-folder';
import { SafetensorsFile } from '../io/safetensors';
import { canonicalTextKey, clipTextPrefixOf, diffusersUnetKeyMapper } from '../io/single-file-writer';
import type { WeightSource } from '../io/weights';
import { alphaName, downName, kohyaKey, upName, type LoraPrefix } from './lora-network';

export type LoraComponent = 'unet' | 'textEncoder' | 'textEncoder2';

/** One adapter, normalised: delta W = (alpha / rank) * up @ down. */
export interface LoraModuleWeights {
  component: LoraComponent;
  /** diffusers module name; text encoders in transformers' canonical form ("text_model.encoder.layers.0.self_attn.q_proj"). */
  module: string;
  kind: 'linear' | 'conv';
  rank: number;
  alpha: number;
  down: Float32Array;
  /** [r, in] (linear) or [r, in, kh, kw] (conv) */
  downShape: number[];
  up: Float32Array;
  /** [out, r] (linear) or [out, r, 1, 1] (conv) */
  upShape: number[];
}

export interface ImportedLora {
  file: string;
  /** File name without folder and extension (for prompts' <lora:name:s> and messages). */
  name: string;
  format: 'kohya' | 'diffusers';
  metadata: Record<string, string>;
  modules: LoraModuleWeights[];
  /** Tensor names of the file that fit no module of the model (listed to the user, not applied). */
  unmatched: string[];
  /** What the reader had to assume (e.g. alpha = rank for a diffusers file without alphas). */
  notes: string[];
}

export interface LoraTarget {
  component: LoraComponent;
  /** Canonical module name (as in LoraModuleWeights). */
  module: string;
  kind: 'linear' | 'conv';
  /** [out, in] or [out, in, kh, kw] */
  weightShape: readonly number[];
}

export interface LoraTargetCatalog {
  /** `${component}:${module}` -> target */
  byModule: Map<string, LoraTarget>;
  /** kohya base key ("lora_unet_down_blocks_0_…", "lora_te_text_model_…", SDXL LDM names too) -> target */
  byKohyaKey: Map<string, LoraTarget>;
}

const componentSource = (model: OpenedModel, component: LoraComponent): WeightSource | undefined =>
  component === 'unet' ? model.unet.weights : component === 'textEncoder' ? model.textEncoder.weights : model.textEncoder2?.weights;

/** Every 2-D (linear) and 4-D (conv) `.weight` of the UNet and text encoders, under kohya and diffusers names. */
export function loraTargetCatalog(model: OpenedModel): LoraTargetCatalog {
  const byModule = new Map<string, LoraTarget>();
  const byKohyaKey = new Map<string, LoraTarget>();
  const sdxl = model.kind === 'sdxl';
  const kohyaPrefix: Record<LoraComponent, LoraPrefix> = { unet: 'lora_unet', textEncoder: sdxl ? 'lora_te1' : 'lora_te', textEncoder2: 'lora_te2' };
  const toLdm = diffusersUnetKeyMapper(model.unet.config);
  for (const component of ['unet', 'textEncoder', 'textEncoder2'] as const) {
    const source = componentSource(model, component);
    if (!source) continue;
    const textPrefix = component === 'unet' ? undefined : clipTextPrefixOf(source.keys());
    for (const key of source.keys()) {
      const shape = source.entry(key)!.shape;
      if (!key.endsWith('.weight') || (shape.length !== 2 && shape.length !== 4)) continue;
      const name = textPrefix === undefined ? key : canonicalTextKey(key, textPrefix);
      if (/embedding\.weight$/.test(name) && shape.length === 2 && component !== 'unet') continue; // lookup tables, not layers
      const module = name.slice(0, -'.weight'.length);
      const target: LoraTarget = { component, module, kind: shape.length === 2 ? 'linear' : 'conv', weightShape: shape };
      byModule.set(`${component}:${module}`, target);
      byKohyaKey.set(kohyaKey(kohyaPrefix[component], module), target);
      if (component === 'textEncoder' && sdxl) byKohyaKey.set(kohyaKey('lora_te', module), target);
      if (component === 'unet') {
        // sd-scripts names SDXL UNet modules in the original (LDM) layout: lora_unet_input_blocks_4_1_…
        const ldm = toLdm(key);
        if (ldm) byKohyaKey.set(kohyaKey('lora_unet', ldm.slice(0, -'.weight'.length)), target);
      }
    }
  }
  return { byModule, byKohyaKey };
}

export interface ImportLoraOptions {
  /** Alpha for modules whose file stores none (diffusers/peft files; default: the module's rank, as diffusers assumes). */
  defaultAlpha?: number;
}

interface RawModule {
  baseKey: string;
  downKey?: string;
  upKey?: string;
  alphaKey?: string;
}

const KOHYA_SUFFIXES = [
  ['.lora_down.weight', 'down'],
  ['.lora_up.weight', 'up'],
  ['.alpha', 'alpha'],
] as const;
const DIFFUSERS_SUFFIXES = [
  ['.lora_A.weight', 'down'],
  ['.lora_B.weight', 'up'],
  ['.lora_A.default.weight', 'down'],
  ['.lora_B.default.weight', 'up'],
  ['.lora.down.weight', 'down'],
  ['.lora.up.weight', 'up'],
  ['.alpha', 'alpha'],
] as const;

function groupKeys(names: readonly string[], suffixes: typeof KOHYA_SUFFIXES | typeof DIFFUSERS_SUFFIXES): { modules: Map<string, RawModule>; other: string[] } {
  const modules = new Map<string, RawModule>();
  const other: string[] = [];
  for (const name of names) {
    const hit = suffixes.find(([suffix]) => name.endsWith(suffix));
    if (!hit) {
      other.push(name);
      continue;
    }
    const baseKey = name.slice(0, -hit[0].length);
    const raw = modules.get(baseKey) ?? { baseKey };
    raw[`${hit[1]}Key`] = name;
    modules.set(baseKey, raw);
  }
  return { modules, other };
}

/** diffusers / peft base key -> component and module name. */
function diffusersTarget(baseKey: string, catalog: LoraTargetCatalog): LoraTarget | undefined {
  const prefixes: [string, LoraComponent][] = [
    ['unet.', 'unet'],
    ['text_encoder_2.', 'textEncoder2'],
    ['text_encoder.', 'textEncoder'],
    ['base_model.model.', 'unet'],
  ];
  for (const [prefix, component] of prefixes) {
    if (!baseKey.startsWith(prefix)) continue;
    let module = baseKey.slice(prefix.length);
    if (component !== 'unet' && !module.startsWith('text_model.')) module = `text_model.${module}`;
    return catalog.byModule.get(`${component}:${module}`);
  }
  return catalog.byModule.get(`unet:${baseKey}`);
}

/** peft / diffusers adapter metadata: {"unet.lora_alpha": 8, "unet.r": 4, ...} inside "lora_adapter_metadata". */
function metadataAlpha(metadata: Record<string, string>, component: LoraComponent): number | undefined {
  const raw = metadata.lora_adapter_metadata;
  if (!raw) return undefined;
  try {
    const parsed = JSON.parse(raw) as Record<string, unknown>;
    const key = component === 'unet' ? 'unet' : component === 'textEncoder' ? 'text_encoder' : 'text_encoder_2';
    const nested = parsed[key] as Record<string, unknown> | undefined;
    const value = parsed[`${key}.lora_alpha`] ?? nested?.lora_alpha ?? parsed.lora_alpha;
    return typeof value === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}

const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/**
 * Reads `path` and matches it to the model described by `catalog`. Throws (naming the file, the
 * key and both shapes) when a module's shapes do not fit the model; returns unmatched keys.
 */
export function importLoraFile(path: string, catalog: LoraTargetCatalog, options: ImportLoraOptions = {}): ImportedLora {
  const file = SafetensorsFile.open(path); // validates the header; a truncated file fails here
  try {
    const names = file.names();
    const format: ImportedLora['format'] = names.some((n) => n.endsWith('.lora_down.weight') || n.endsWith('.lora_up.weight')) ? 'kohya' : 'diffusers';
    const { modules: raw, other } = groupKeys(names, format === 'kohya' ? KOHYA_SUFFIXES : DIFFUSERS_SUFFIXES);
    if (raw.size === 0) throw new Error(`${path}: no LoRA tensors found (expected kohya ".lora_down.weight"/".lora_up.weight" or diffusers ".lora_A.weight"/".lora_B.weight" keys); is this a LoRA file?`);
    const metadata = { ...(file.metadata ?? {}) };
    const unmatched = [...other];
    const notes: string[] = [];
    const modules: LoraModuleWeights[] = [];
    let assumedAlpha = 0;

    for (const m of raw.values()) {
      const keysOf = [m.downKey, m.upKey, m.alphaKey].filter((k): k is string => k !== undefined);
      if (!m.downKey || !m.upKey) {
        unmatched.push(...keysOf);
        notes.push(`${m.baseKey}: has ${m.downKey ? 'a down' : 'an up'} weight but no ${m.downKey ? 'up' : 'down'} weight`);
        continue;
      }
      const target = format === 'kohya' ? catalog.byKohyaKey.get(m.baseKey) : diffusersTarget(m.baseKey, catalog);
      if (!target) {
        unmatched.push(...keysOf);
        continue;
      }
      const downInfo = file.tensor(m.downKey);
      const upInfo = file.tensor(m.upKey);
      let downShape = [...downInfo.shape];
      let upShape = [...upInfo.shape];
      const w = target.weightShape;
      const rank = downShape[0]!;
      // A LoRA on a 1x1 convolution may be stored as 2-D matrices (and a linear one as [.., 1, 1]).
      if (w.length === 4 && w[2] === 1 && w[3] === 1 && downShape.length === 2 && upShape.length === 2) {
        downShape = [...downShape, 1, 1];
        upShape = [...upShape, 1, 1];
      } else if (w.length === 2 && downShape.length === 4 && downShape[2] === 1 && downShape[3] === 1 && upShape.length === 4) {
        downShape = downShape.slice(0, 2);
        upShape = upShape.slice(0, 2);
      }
      const expectedDown = [rank, w[1]!, ...w.slice(2)];
      const expectedUp = [w[0]!, rank, ...w.slice(2).map(() => 1)];
      const fits = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
      if (!fits(downShape, expectedDown) || !fits(upShape, expectedUp)) {
        const [key, shape, expected] = !fits(downShape, expectedDown) ? [m.downKey, downInfo.shape, expectedDown] : [m.upKey, upInfo.shape, expectedUp];
        throw new Error(
          `${path}: LoRA tensor "${key}" has shape ${shapeText(shape)}, but the model's ${target.component} layer ${target.module} (weight ${shapeText(w)}) needs ${shapeText(expected)}; this LoRA was made for a different base model`,
        );
      }
      let alpha: number;
      if (m.alphaKey) {
        alpha = file.readFloat32(m.alphaKey)[0]!;
      } else {
        const fromMetadata = metadataAlpha(metadata, target.component);
        alpha = options.defaultAlpha ?? fromMetadata ?? rank;
        if (options.defaultAlpha === undefined && fromMetadata === undefined) assumedAlpha++;
      }
      modules.push({
        component: target.component,
        module: target.module,
        kind: target.kind,
        rank,
        alpha,
        down: file.readFloat32(m.downKey),
        downShape,
        up: file.readFloat32(m.upKey),
        upShape,
      });
    }
    if (assumedAlpha > 0) notes.push(`${assumedAlpha} module(s) store no alpha: alpha = rank assumed (scale 1), as diffusers does`);
    if (modules.length === 0)
      throw new Error(`${path}: none of its ${raw.size} LoRA modules fits this model (first key: "${unmatched[0]}"); it was made for a different model family`);
    return { file: path, name: basename(path).replace(/\.safetensors$/i, ''), format, metadata, modules, unmatched, notes };
  } finally {
    file.close();
  }
}

const KOHYA_PREFIX: Record<LoraComponent, LoraPrefix> = { unet: 'lora_unet', textEncoder: 'lora_te', textEncoder2: 'lora_te2' };

/**
 * The LoRA's tensors under kohya names (LoraNetwork's graph inputs are named so: feeding these
 * continues training from the file). Alphas are included as `.alpha` scalars.
 */
export function toKohyaTensors(lora: Pick<ImportedLora, 'modules'>, sdxl = false): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const m of lora.modules) {
    const prefix = m.component === 'textEncoder' && sdxl ? 'lora_te1' : KOHYA_PREFIX[m.component];
    const key = kohyaKey(prefix, m.module);
    out.set(downName(key), m.down);
    out.set(upName(key), m.up);
    out.set(alphaName(key), Float32Array.of(m.alpha));
  }
  return out;
}

/** A1111's "addnet" short hash of a LoRA: sha256 of the bytes after the safetensors header, first 12 hex digits. */
export function loraFileHash(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const prefix = Buffer.alloc(8);
    readSync(fd, prefix, 0, 8, 0);
    let position = 8 + Number(prefix.readBigUInt64LE(0));
    const hash = createHash('sha256');
    const chunk = Buffer.alloc(1 << 20);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      position += n;
    }
    return hash.digest('hex').slice(0, 12);
  } finally {
    closeSync(fd);
  }
}

/** The prefix -> component of kohya names (lora-file.ts and LoraNetwork use the prefix). */
const COMPONENT_OF_PREFIX: Record<LoraPrefix, LoraComponent> = { lora_unet: 'unet', lora_te: 'textEncoder', lora_te1: 'textEncoder', lora_te2: 'textEncoder2' };

/**
 * Modules as lora-file.ts / the trainer hold them (kohya prefix + diffusers module name) in this
 * file's form, for Generator slots: the trainer's previews pass its live weights through this.
 * Text-encoder module names are put in canonical form ("text_model.…").
 */
export function fromKohyaModules(
  modules: readonly { prefix: LoraPrefix; module: string; rank: number; alpha: number; down: Float32Array; downShape: readonly number[]; up: Float32Array; upShape: readonly number[] }[],
): LoraModuleWeights[] {
  return modules.map((m) => {
    const component = COMPONENT_OF_PREFIX[m.prefix];
    // "encoder.layers.0…" (no prefix) or "text_model.encoder…" -> "text_model.encoder…"
    const module = component === 'unet' ? m.module : `text_model.${m.module.replace(/^text_model\./, '')}`;
    return { component, module, kind: m.downShape.length === 4 ? 'conv' : 'linear', rank: m.rank, alpha: m.alpha, down: m.down, downShape: [...m.downShape], up: m.up, upShape: [...m.upShape] };
  });
}
