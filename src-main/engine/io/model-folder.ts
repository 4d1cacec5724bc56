// Opens a diffusers-layout model folder (model_index.json, unet/, vae/, text_encoder/,
// text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/): typed configs with upstream defaults
// filled in, unsupported config features refused, and a WeightSource per model over its
// safetensors file(s): `<name>.safetensors`, `<name>.fp16.safetensors`, or shards listed in
// `<name>.safetensors.index.json`. Pickled `.bin` weights are refused.
//
//   openModelFolder(dir, { variant?: 'fp16' }): OpenedModel
//   findWeightFiles(componentDir, baseName, variant?): string[]
//   OpenedModel / ModelKind / ComponentWithWeights   (the same shape single-file.ts returns)
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  clipTextConfigFrom,
  readJsonFile,
  schedulerConfigFrom,
  unetConfigFrom,
  vaeConfigFrom,
  type AutoencoderKLConfig,
  type CLIPTextConfig,
  type SchedulerConfig,
  type UNet2DConditionConfig,
} from './configs';
import { WeightSource } from './weights';

export type { AutoencoderKLConfig, CLIPTextConfig, SchedulerConfig, UNet2DConditionConfig } from './configs';

export type ModelKind = 'sd1' | 'sd2' | 'sdxl';

export interface ComponentWithWeights<Config> {
  config: Config;
  weights: WeightSource;
}

export interface OpenedModel {
  kind: ModelKind;
  /** model_index.json as read (single-file checkpoints get a synthesised one). */
  modelIndex: Record<string, unknown>;
  unet: ComponentWithWeights<UNet2DConditionConfig>;
  vae: ComponentWithWeights<AutoencoderKLConfig>;
  textEncoder: ComponentWithWeights<CLIPTextConfig>;
  /** SDXL's CLIPTextModelWithProjection. */
  textEncoder2?: ComponentWithWeights<CLIPTextConfig>;
  /** Folder with vocab.json + merges.txt (undefined for a single file opened without one). */
  tokenizerDir: string | undefined;
  tokenizer2Dir?: string;
  schedulerConfig: SchedulerConfig;
}

export interface OpenModelFolderOptions {
  /** Prefer `*.fp16.safetensors` weights (the full-precision file is used when there is no fp16 one). */
  variant?: 'fp16';
}

/**
 * The safetensors files of one model in `componentDir` (base name `diffusion_pytorch_model` or
 * `model`): the variant file if asked for and present, else the plain one, else the variant one;
 * a sharded index lists its shards. Throws naming the folder when none exists.
 */
export function findWeightFiles(componentDir: string, baseName: string, variant?: 'fp16'): string[] {
  const names = (v?: string): { single: string; index: string } => {
    const stem = v ? `${baseName}.${v}` : baseName;
    return { single: join(componentDir, `${stem}.safetensors`), index: join(componentDir, `${stem}.safetensors.index.json`) };
  };
  const order = variant ? [names(variant), names()] : [names(), names('fp16')];
  for (const { single, index } of order) {
    if (existsSync(single)) return [single];
    if (existsSync(index)) return shardsOf(index, componentDir);
  }
  const pickled = [`${baseName}.bin`, `pytorch_${baseName}.bin`, `${baseName}.fp16.bin`, `${baseName}.bin.index.json`, `pytorch_${baseName}.bin.index.json`].find((n) => existsSync(join(componentDir, n)));
  if (pickled) throw new Error(`${join(componentDir, pickled)}: PyTorch pickle weights are not supported (pickles can run code); convert the model to .safetensors`);
  throw new Error(`${componentDir}: no ${baseName}.safetensors (or .fp16 / sharded variant) found`);
}

function shardsOf(indexPath: string, componentDir: string): string[] {
  const index = readJsonFile(indexPath);
  const map = index.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new Error(`${indexPath}: weight_map is missing or not an object`);
  const files = new Set<string>();
  for (const [key, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || !file.endsWith('.safetensors'))
      throw new Error(`${indexPath}: weight_map entry "${key}" names an invalid shard ${JSON.stringify(file)}`);
    files.add(file);
  }
  const paths = [...files].sort().map((f) => join(componentDir, f));
  for (const p of paths) if (!existsSync(p)) throw new Error(`${indexPath}: shard ${p} is missing`);
  return paths;
}

/** The component's weights; with a shard index, every indexed key must be in the shard it names. */
function openWeights(componentDir: string, baseName: string, variant?: 'fp16'): WeightSource {
  const files = findWeightFiles(componentDir, baseName, variant);
  if (files.length === 1 && !isIndexed(files[0], componentDir, baseName)) return WeightSource.open(files);
  const indexPath = [variant, undefined, 'fp16']
    .map((v) => join(componentDir, `${v ? `${baseName}.${v}` : baseName}.safetensors.index.json`))
    .find((p) => existsSync(p)) as string;
  const source = WeightSource.open(files, `${componentDir} (${files.length} shard${files.length > 1 ? 's' : ''} of ${indexPath})`);
  const map = readJsonFile(indexPath).weight_map as Record<string, string>;
  for (const [key, shard] of Object.entries(map)) {
    const entry = source.entry(key);
    if (!entry) throw new Error(`${indexPath}: "${key}" is listed in ${shard} but no shard has it`);
    if (entry.file !== join(componentDir, shard)) throw new Error(`${indexPath}: "${key}" is listed in ${shard} but stored in ${entry.file}`);
  }
  return source;
}

/** True when `file` came from a shard index rather than being the single weight file. */
const isIndexed = (file: string, componentDir: string, baseName: string): boolean =>
  file !== join(componentDir, `${baseName}.safetensors`) && file !== join(componentDir, `${baseName}.fp16.safetensors`);

const isDir = (p: string): boolean => existsSync(p) && statSync(p).isDirectory();

function componentDir(root: string, name: string): string {
  const dir = join(root, name);
  if (!isDir(dir)) throw new Error(`${root}: model folder has no ${name}/ folder`);
  return dir;
}

/** sdxl: a second text encoder or text_time conditioning; sd2: OpenCLIP-H (gelu, 1024 wide); else sd1. */
function detectKind(index: Record<string, unknown>, unet: UNet2DConditionConfig, text: CLIPTextConfig): ModelKind {
  const className = typeof index._class_name === 'string' ? index._class_name : '';
  if (className.includes('XL') || index.text_encoder_2 || unet.addition_embed_type === 'text_time') return 'sdxl';
  if (text.hidden_act === 'gelu' || text.hidden_size === 1024 || unet.cross_attention_dim === 1024) return 'sd2';
  return 'sd1';
}

export function openModelFolder(dir: string, options: OpenModelFolderOptions = {}): OpenedModel {
  const indexPath = join(dir, 'model_index.json');
  if (!existsSync(indexPath)) throw new Error(`${dir}: not a diffusers model folder (no model_index.json)`);
  const modelIndex = readJsonFile(indexPath);

  const component = <C>(name: string, baseName: string, parse: (json: Record<string, unknown>, file: string) => C): ComponentWithWeights<C> => {
    const cdir = componentDir(dir, name);
    const configPath = join(cdir, 'config.json');
    const config = parse(readJsonFile(configPath), configPath);
    const weights = openWeights(cdir, baseName, options.variant);
    return { config, weights };
  };

  const unet = component('unet', 'diffusion_pytorch_model', unetConfigFrom);
  const vae = component('vae', 'diffusion_pytorch_model', vaeConfigFrom);
  const textEncoder = component('text_encoder', 'model', clipTextConfigFrom);
  const hasSecond = Boolean(modelIndex.text_encoder_2) || isDir(join(dir, 'text_encoder_2'));
  const textEncoder2 = hasSecond ? component('text_encoder_2', 'model', clipTextConfigFrom) : undefined;

  const schedulerPath = join(componentDir(dir, 'scheduler'), 'scheduler_config.json');
  const schedulerConfig = schedulerConfigFrom(readJsonFile(schedulerPath), schedulerPath);

  const tokenizerDir = componentDir(dir, 'tokenizer');
  const tokenizer2Dir = hasSecond ? componentDir(dir, 'tokenizer_2') : undefined;

  const kind = detectKind(modelIndex, unet.config, textEncoder.config);
  if (kind === 'sdxl' && !textEncoder2) throw new Error(`${dir}: an SDXL model needs text_encoder_2/`);
  return { kind, modelIndex, unet, vae, textEncoder, textEncoder2, tokenizerDir, tokenizer2Dir, schedulerConfig };
}
