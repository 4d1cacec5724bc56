// The 'tasks' worker role: generation and merges, one at a time, off the main process. The last
// Generator is kept (keyed by model, provider and LoRA files), so trying strengths or seeds with
// the same LoRA reuses its sessions: strength is a session input, not a rebuild.
import { existsSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { openModelFolder, type OpenedModel } from '../engine/io/model-folder';
import { openSingleFile } from '../engine/io/single-file';
import { importLoraFile, loraFileHash, loraTargetCatalog, type ImportedLora } from '../engine/lora/lora-import';
import { mergeIntoCheckpoint } from '../engine/lora/merge';
import { EMBEDDED_MODEL_NAME, ensureEmbeddedModel } from '../engine/models/embedded-tiny-model';
import { chooseProvider } from '../engine/runtime/session';
import { slotSpecOf } from '../engine/sample/lora-slots';
import { encodePng, Generator } from '../engine/sample/txt2img';
import type { GenerateTask, GenerateTaskResult, MergeTask, WorkerTask } from './protocol';

function openModel(path: string | undefined, modelsDir: string): { model: OpenedModel; name: string } {
  if (path === undefined) return { model: openModelFolder(ensureEmbeddedModel(modelsDir)), name: EMBEDDED_MODEL_NAME };
  if (!existsSync(path)) throw new Error(`${path}: no such model folder or file`);
  if (statSync(path).isDirectory()) return { model: openModelFolder(path), name: basename(path) };
  return { model: openSingleFile(path), name: basename(path, extname(path)) };
}

export class TaskRunner {
  private cached: { key: string; generator: Generator; loras: { lora: ImportedLora; hash: string }[] } | undefined;

  async run(task: WorkerTask): Promise<unknown> {
    return task.kind === 'generate' ? this.generate(task) : this.merge(task);
  }

  private async generate(task: GenerateTask): Promise<GenerateTaskResult> {
    const key = JSON.stringify([task.model ?? null, task.modelsDir, task.device, task.loras.map((l) => l.path)]);
    if (this.cached?.key !== key) {
      await this.cached?.generator.release();
      this.cached = undefined;
      const { model, name } = openModel(task.model, task.modelsDir);
      const catalog = loraTargetCatalog(model);
      const loras = task.loras.map((l) => ({ lora: importLoraFile(l.path, catalog), hash: loraFileHash(l.path) }));
      const provider = task.device === 'cpu' ? 'cpu' : (await chooseProvider(task.device)).provider;
      const generator = await Generator.create(model, { provider, modelName: name, loras: loras.map(({ lora }) => slotSpecOf(lora.name, lora)), cacheDir: join(task.cacheDir, 'graphs') });
      this.cached = { key, generator, loras };
    }
    const { generator, loras } = this.cached;
    const images = await generator.generate(
      {
        prompt: task.prompt,
        negativePrompt: task.negativePrompt,
        seed: task.seed,
        steps: task.steps,
        guidance: task.guidance,
        width: task.width,
        height: task.height,
        sampler: task.sampler,
        clipSkip: task.clipSkip,
      },
      loras.map(({ lora, hash }, slot) => ({ slot, weights: lora, strength: task.loras[slot]!.strength, name: lora.name, hash })),
    );
    const out: GenerateTaskResult = { images: [] };
    for (const image of images) {
      const png = await encodePng(image);
      out.images.push({ seed: image.seed, png: `data:image/png;base64,${Buffer.from(png).toString('base64')}`, parameters: image.parameters });
    }
    return out;
  }

  private async merge(task: MergeTask): Promise<{ path: string }> {
    const { model } = openModel(task.model, task.modelsDir);
    const lora = importLoraFile(task.lora, loraTargetCatalog(model));
    const written = mergeIntoCheckpoint(model, [{ lora, strength: task.strength, hash: loraFileHash(task.lora) }], task.out);
    return { path: written.path };
  }

  async release(): Promise<void> {
    await this.cached?.generator.release();
    this.cached = undefined;
  }
}
