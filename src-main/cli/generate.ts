// `lora-studio generate`: text to image with optional LoRAs, PNGs with the settings embedded.
// Also the model / LoRA argument helpers `lora-studio merge` shares.
import { existsSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../engine/io/atomic-write';
import { openModelFolder, type OpenedModel } from '../engine/io/model-folder';
import { openSingleFile } from '../engine/io/single-file';
import { importLoraFile, loraFileHash, loraTargetCatalog, type ImportedLora } from '../engine/lora/lora-import';
import { ensureEmbeddedModel, EMBEDDED_MODEL_NAME } from '../engine/models/embedded-tiny-model';
import type { ProviderName } from '../engine/runtime/providers';
import { chooseProvider } from '../engine/runtime/session';
import type { Sampler } from '../engine/sample/create-scheduler';
import { slotSpecOf } from '../engine/sample/lora-slots';
import { encodePng, Generator } from '../engine/sample/txt2img';
import { loraStudioHome } from '../engine/train/settings';
import { CliUsageError, type CliCommand } from './command';

/** Where downloaded and embedded models live: $LORA_STUDIO_HOME/models, else ~/.cache/lora-studio/models. */
export function defaultModelsDir(): string {
  return join(loraStudioHome(), 'models');
}

/** `--model` as given (a diffusers folder or a single .safetensors file), or the embedded tiny model. */
export function openModelArgument(model: string | undefined, tokenizer: string | undefined): { model: OpenedModel; name: string } {
  if (model === undefined) {
    const dir = ensureEmbeddedModel(defaultModelsDir());
    return { model: openModelFolder(dir), name: EMBEDDED_MODEL_NAME };
  }
  const path = resolve(model);
  if (!existsSync(path)) throw new Error(`${path}: no such model folder or file`);
  if (statSync(path).isDirectory()) return { model: openModelFolder(path), name: basename(path) };
  return { model: openSingleFile(path, { tokenizerDir: tokenizer && resolve(tokenizer) }), name: basename(path, extname(path)) };
}

/** `FILE[:STRENGTH]` (strength defaults to 1; a Windows drive letter is not a strength). */
export function parseLoraArgument(value: string): { file: string; strength: number } {
  const m = /^(.+):(-?(?:\d+\.?\d*|\.\d+))$/.exec(value);
  const file = m ? m[1]! : value;
  const strength = m ? Number(m[2]) : 1;
  if (!Number.isFinite(strength)) throw new CliUsageError(`--lora ${value}: the strength after ":" must be a number`);
  return { file: resolve(file), strength };
}

/** Imports each --lora against the model, printing the keys that do not fit (they are not applied). */
export function importLoraArguments(model: OpenedModel, values: readonly string[]): { lora: ImportedLora; strength: number; hash: string }[] {
  const catalog = loraTargetCatalog(model);
  return values.map((value) => {
    const { file, strength } = parseLoraArgument(value);
    const lora = importLoraFile(file, catalog);
    console.log(`LoRA ${lora.name}: ${lora.modules.length} module(s) (${lora.format} format), strength ${strength}`);
    for (const note of lora.notes) console.log(`  note: ${note}`);
    if (lora.unmatched.length > 0) {
      console.warn(`  ${lora.unmatched.length} tensor(s) of ${file} match no layer of this model and are NOT applied:`);
      for (const key of lora.unmatched) console.warn(`    ${key}`);
    }
    return { lora, strength, hash: loraFileHash(file) };
  });
}

const SAMPLER_ARGUMENTS: Record<string, Sampler> = {
  ddim: 'DDIM',
  euler: 'Euler',
  'euler-a': 'Euler a',
  'dpmpp-2m': 'DPM++ 2M',
  'dpmpp-2m-karras': 'DPM++ 2M Karras',
};

const PROVIDERS: readonly ProviderName[] = ['cuda', 'dml', 'webgpu', 'cpu'];

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new CliUsageError(`--${name} must be a whole number of at least ${min}, got ${value}.`);
  return n;
}

function number(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new CliUsageError(`--${name} must be a number, got ${value}.`);
  return n;
}

export const generateCommand: CliCommand = {
  summary: 'Generate images from a prompt, optionally with LoRAs',
  usage: `lora-studio generate --prompt <text> [options]

  --prompt <text>          what to draw (required)
  --negative <text>        what to avoid (default: none; SDXL models with force_zeros_for_empty_prompt
                           then use zero negative embeddings, as diffusers does)
  --model <folder|file>    diffusers model folder or single-file .safetensors checkpoint
                           (default: the embedded tiny test model, made on first use in
                           $LORA_STUDIO_HOME/models or ~/.cache/lora-studio/models)
  --tokenizer <folder>     vocab.json + merges.txt for a single-file checkpoint
  --lora <file[:strength]> apply a LoRA (kohya or diffusers format) at a strength (default 1); repeatable
  --merge-loras            merge the LoRAs into the weights instead of applying them as adapters
  --steps <n>              sampling steps (default 20)
  --guidance <x>           classifier-free guidance scale (default 7.5; 5 for SDXL)
  --seed <n>               seed of the first image (default 0); image i uses seed + i
  --batch <n>              images to generate (default 1)
  --width <px> --height <px>  image size (default: the model's native size)
  --scheduler <name>       ddim | euler | euler-a | dpmpp-2m | dpmpp-2m-karras (default euler-a)
  --clip-skip <n>          1 = last text encoder layer (default), 2 = penultimate, ...
  --provider <name>        cuda | dml | webgpu | cpu (default: the best available)
  --out <file.png>         output file (default lora-studio-<seed>.png); with --batch > 1,
                           -<seed> is added before .png`,

  async run(args) {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: {
          prompt: { type: 'string' },
          negative: { type: 'string' },
          model: { type: 'string' },
          tokenizer: { type: 'string' },
          lora: { type: 'string', multiple: true },
          'merge-loras': { type: 'boolean', default: false },
          steps: { type: 'string' },
          guidance: { type: 'string' },
          seed: { type: 'string' },
          batch: { type: 'string' },
          width: { type: 'string' },
          height: { type: 'string' },
          scheduler: { type: 'string', default: 'euler-a' },
          'clip-skip': { type: 'string' },
          provider: { type: 'string' },
          out: { type: 'string' },
        },
        allowPositionals: false,
        strict: true,
      });
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const v = parsed.values;
    if (v.prompt === undefined) throw new CliUsageError('--prompt is required.');
    const sampler = SAMPLER_ARGUMENTS[v.scheduler];
    if (!sampler) throw new CliUsageError(`--scheduler must be one of ${Object.keys(SAMPLER_ARGUMENTS).join(', ')}, got ${v.scheduler}.`);
    if (v.provider !== undefined && !PROVIDERS.includes(v.provider as ProviderName))
      throw new CliUsageError(`--provider must be one of ${PROVIDERS.join(', ')}, got ${v.provider}.`);
    const steps = integer('steps', v.steps, 1) ?? 20;
    const guidance = number('guidance', v.guidance); // default: the Generator's (7.5; 5 for SDXL, as diffusers)
    const seed = integer('seed', v.seed, 0) ?? 0;
    const batch = integer('batch', v.batch, 1) ?? 1;
    const clipSkip = integer('clip-skip', v['clip-skip'], 1) ?? 1;
    const out = v.out ?? `lora-studio-${seed}.png`;
    if (!out.toLowerCase().endsWith('.png')) throw new CliUsageError(`--out must name a .png file, got ${out}.`);

    const { model, name } = openModelArgument(v.model, v.tokenizer);
    const native = (model.unet.config.sample_size ?? 64) * 2 ** (model.vae.config.block_out_channels.length - 1);
    const width = integer('width', v.width, 8) ?? native;
    const height = integer('height', v.height, 8) ?? native;
    const loras = importLoraArguments(model, v.lora ?? []);
    const { provider, note } = await chooseProvider(v.provider as ProviderName | undefined);
    if (note) console.warn(note);

    const merge = v['merge-loras'];
    const generator = await Generator.create(model, {
      provider,
      modelName: name,
      loras: merge ? [] : loras.map(({ lora }) => slotSpecOf(lora.name, lora)),
      merge: merge ? loras : [],
      cacheDir: join(loraStudioHome(), 'cache', 'graphs'),
    });
    try {
      const started = Date.now();
      const images = await generator.generate(
        { prompt: v.prompt, negativePrompt: v.negative, steps, guidance, seed, batch, width, height, sampler, clipSkip },
        merge ? [] : loras.map(({ lora, strength, hash }, slot) => ({ slot, weights: lora, strength, name: lora.name, hash })),
      );
      for (const image of images) {
        const path = batch > 1 ? out.replace(/\.png$/i, `-${image.seed}.png`) : out;
        writeFileAtomic(resolve(path), await encodePng(image));
        console.log(`wrote ${path} (seed ${image.seed})`);
      }
      console.log(`${images.length} image(s), ${steps} steps, ${width}x${height}, ${sampler}, on ${provider} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      await generator.release();
    }
    return 0;
  },
};
