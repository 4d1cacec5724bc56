// Engine objects as contract views: datasets (with token counts from the training model's CLIP
// tokenizer) and models.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Dataset, DatasetItem } from '../engine/data';
import { openModelFolder, type OpenedModel } from '../engine/io/model-folder';
import { openSingleFile } from '../engine/io/single-file';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../engine/models/embedded-tiny-model';
import { ClipTokenizer } from '../engine/tokenizer/clip-tokenizer';
import type { DatasetItemView, DatasetView, KnownModel, ModelView } from './contract';

/** The id of the embedded tiny model in ModelView / TrainSettingsView.model. */
export const EMBEDDED_MODEL_ID = 'embedded';

export const KNOWN_MODELS: KnownModel[] = [
  {
    name: 'Stable Diffusion 1.5 (pruned, EMA only)',
    url: 'https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors',
    kind: 'sd1',
  },
  {
    name: 'Stable Diffusion 2.1 (768, EMA, pruned)',
    url: 'https://huggingface.co/stabilityai/stable-diffusion-2-1/resolve/main/v2-1_768-ema-pruned.safetensors',
    kind: 'sd2',
  },
];

export function embeddedModelView(): ModelView {
  return { id: EMBEDDED_MODEL_ID, name: `Embedded tiny model (${EMBEDDED_MODEL_NAME}, for trying things out)`, kind: 'sd1', source: 'embedded', predictionType: 'epsilon' };
}

/** Opens a model folder or single file (throws naming the path when it is neither). */
export function openModelPath(path: string): OpenedModel {
  return statSync(path).isDirectory() ? openModelFolder(path) : openSingleFile(path);
}

export function modelView(path: string, model: OpenedModel, source: ModelView['source']): ModelView {
  return { id: path, name: basename(path), kind: model.kind, source, predictionType: model.schedulerConfig.prediction_type };
}

/** Models in the models folder: diffusers folders and downloaded .safetensors files (unreadable ones are skipped). */
export function scanModelsDir(modelsDir: string): ModelView[] {
  if (!existsSync(modelsDir)) return [];
  const views: ModelView[] = [];
  for (const name of readdirSync(modelsDir).sort()) {
    if (name === EMBEDDED_MODEL_NAME || name.startsWith(`${EMBEDDED_MODEL_NAME}.tmp`)) continue;
    const path = join(modelsDir, name);
    try {
      if (statSync(path).isDirectory()) {
        if (existsSync(join(path, 'model_index.json'))) views.push(modelView(path, openModelFolder(path), 'folder'));
      } else if (name.toLowerCase().endsWith('.safetensors')) {
        views.push(modelView(path, openSingleFile(path), 'download'));
      }
    } catch {
      // not a model we can open (a LoRA, a partial file): not listed
    }
  }
  return views;
}

/** CLIP tokenizers by model id, for caption token counts. */
export class TokenizerCache {
  private readonly byModel = new Map<string, ClipTokenizer>();

  constructor(private readonly modelsDir: () => string) {}

  for(modelId: string | null | undefined): ClipTokenizer {
    const id = modelId && modelId !== EMBEDDED_MODEL_ID ? modelId : EMBEDDED_MODEL_ID;
    let tokenizer = this.byModel.get(id);
    if (!tokenizer) {
      let dir: string | undefined;
      if (id === EMBEDDED_MODEL_ID) dir = join(ensureEmbeddedModel(this.modelsDir()), 'tokenizer');
      else if (existsSync(join(id, 'tokenizer', 'vocab.json'))) dir = join(id, 'tokenizer');
      // A single-file checkpoint carries no tokenizer: count with the embedded model's (byte-level, an overestimate).
      if (!dir) return this.for(EMBEDDED_MODEL_ID);
      tokenizer = ClipTokenizer.fromFolder(dir);
      this.byModel.set(id, tokenizer);
    }
    return tokenizer;
  }
}

export function datasetItemView(item: DatasetItem, tokenizer: ClipTokenizer): DatasetItemView {
  const count = tokenizer.countTokens(item.caption ?? '');
  return {
    relativePath: item.relativePath,
    width: item.width,
    height: item.height,
    repeats: item.repeats,
    caption: item.caption,
    tokens: count.tokens,
    truncated: count.truncated,
    problems: item.problems.map((p) => ({ code: p.code, severity: p.severity, message: p.message })),
    excluded: item.excluded,
    bucket: item.bucket ? { width: item.bucket.width, height: item.bucket.height } : null,
  };
}

export function datasetView(dataset: Dataset, tokenizer: ClipTokenizer): DatasetView {
  const summary = dataset.summary();
  return {
    folder: dataset.folder,
    resolution: summary.bucketOptions.resolution,
    items: dataset.items.map((item) => datasetItemView(item, tokenizer)),
    orphanCaptions: [...dataset.orphanCaptions],
    summary: {
      images: summary.images,
      trainable: summary.trainable,
      excluded: summary.excluded,
      errors: summary.errors,
      warnings: summary.warnings,
      samplesPerEpoch: summary.samplesPerEpoch,
    },
    buckets: summary.buckets.map((b) => ({ width: b.width, height: b.height, images: b.images })),
    tagFrequency: dataset.tagFrequency(),
  };
}
