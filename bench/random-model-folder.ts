// A real-size Stable Diffusion model folder (diffusers layout) with seeded random float16 weights,
// for benchmarks of the whole sampling path (text encoders, UNet, VAE): the compute and the memory
// of the real checkpoint, with no download. The configs are the upstream ones (SD1.5:
// runwayml/stable-diffusion-v1-5, SDXL: stabilityai/stable-diffusion-xl-base-1.0); the tokenizer is
// the embedded tiny model's byte-level one, whose ids are all inside the real vocabulary. Written
// once per model into a temporary folder that is renamed into place.
import { cpSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../src-main/engine/io/safetensors';
import { buildVaeDecoder, buildVaeEncoder, type AutoencoderKLConfig } from '../src-main/engine/models/autoencoder-kl';
import { buildClipTextModel, type CLIPTextConfig } from '../src-main/engine/models/clip-text-model';
import { ensureEmbeddedModel } from '../src-main/engine/models/embedded-tiny-model';
import { randomWeightsFor } from '../src-main/engine/models/random-weights';
import { buildUNet2DCondition, type UNet2DConditionConfig } from '../src-main/engine/models/unet-2d-condition';
import { addedCondShapeOf } from '../src-main/engine/train/train-step-graph';
import type { Params } from '../src-main/engine/nn/params';
import { CLIP_BIG_G, CLIP_L, SD15, SDXL, vaeConfig } from './model-configs';

const SEED = 1234;
/** Bump when the written files change, so cached folders are written again. */
const VERSION = '1';

const SCHEDULER = {
  _class_name: 'EulerDiscreteScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
};

/** Builds `config`'s UNet on small dummy inputs, so `p`'s locator is asked for every weight it has. */
export function requestUNetWeights(p: Params, config: UNet2DConditionConfig): void {
  const g = p.graph;
  const added = addedCondShapeOf(config);
  buildUNet2DCondition(p, config, {
    sample: g.input('sample', 'float32', [1, 4, 8, 8]),
    timestep: g.input('t', 'float32', [1]),
    encoderHiddenStates: g.input('ehs', 'float32', [1, 77, config.cross_attention_dim as number]),
    addedCond: added && { textEmbeds: g.input('te', 'float32', [1, added.textEmbedsDim]), timeIds: g.input('ids', 'float32', [1, added.timeIds]) },
  });
}

/** Builds a CLIP text encoder (with its projection where `config` names one), asking for every weight in the diffusers-folder layout. */
export function requestTextEncoderWeights(p: Params, config: CLIPTextConfig): void {
  const withProjection = config.architectures?.includes('CLIPTextModelWithProjection') ?? false;
  buildClipTextModel(p, config, p.graph.input('ids', 'int64', [1, 77]), { textModelPrefix: 'text_model', withProjection });
}

const writeJson = (path: string, value: unknown): void => writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);

function writeTextEncoder(dir: string, config: CLIPTextConfig): void {
  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, 'config.json'), config);
  const tensors = randomWeightsFor(SEED, (p) => requestTextEncoderWeights(p, config), 'F16');
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
}

function writeUNet(dir: string, config: UNet2DConditionConfig): void {
  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, 'config.json'), config);
  const tensors = randomWeightsFor(SEED, (p) => requestUNetWeights(p, config), 'F16');
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tensors, { format: 'pt' });
}

function writeVae(dir: string, config: AutoencoderKLConfig): void {
  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, 'config.json'), config);
  const tensors = randomWeightsFor(SEED, (p) => {
    const g = p.graph;
    buildVaeEncoder(p, config, g.input('image', 'float32', [1, 3, 64, 64]));
    buildVaeDecoder(p, config, g.input('latents', 'float32', [1, 4, 8, 8]));
  }, 'F16');
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tensors, { format: 'pt' });
}

/** The folder of a seeded random real-size `model` under `cacheDir`, written on first use. */
export function ensureRandomModelFolder(model: 'sd15' | 'sdxl', cacheDir: string): string {
  const dir = join(cacheDir, `random-${model}-v${VERSION}`);
  if (existsSync(join(dir, 'model_index.json'))) return dir;
  const sdxl = model === 'sdxl';
  const temp = `${dir}.tmp-${process.pid}`;
  rmSync(temp, { recursive: true, force: true });
  mkdirSync(join(temp, 'scheduler'), { recursive: true });
  const tokenizer = join(ensureEmbeddedModel(join(cacheDir, 'models')), 'tokenizer');
  for (const name of sdxl ? ['tokenizer', 'tokenizer_2'] : ['tokenizer']) cpSync(tokenizer, join(temp, name), { recursive: true });
  writeJson(join(temp, 'scheduler', 'scheduler_config.json'), SCHEDULER);
  writeTextEncoder(join(temp, 'text_encoder'), CLIP_L);
  if (sdxl) writeTextEncoder(join(temp, 'text_encoder_2'), CLIP_BIG_G);
  writeUNet(join(temp, 'unet'), sdxl ? SDXL : SD15);
  writeVae(join(temp, 'vae'), vaeConfig(sdxl));
  // model_index.json last: its presence marks a complete folder.
  writeJson(join(temp, 'model_index.json'), {
    _class_name: sdxl ? 'StableDiffusionXLPipeline' : 'StableDiffusionPipeline',
    ...(sdxl ? { force_zeros_for_empty_prompt: true } : {}),
    scheduler: ['diffusers', 'EulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    ...(sdxl ? { text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'], tokenizer_2: ['transformers', 'CLIPTokenizer'] } : {}),
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  });
  rmSync(dir, { recursive: true, force: true });
  renameSync(temp, dir);
  return dir;
}
