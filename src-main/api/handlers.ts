// The API's implementation, independent of any transport: Electron IPC (src-main/app), the
// WebSocket server (src-main/server) and the CLI all call these same functions. Heavy work runs
// in worker processes (training: one per run; generation and merges: the tasks worker); here only
// file reads, small writes and bookkeeping happen.
import { readdir, stat } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type {
  ApiOutcome,
  AppInfo,
  CaptionOperationView,
  DatasetView,
  ExportRequestView,
  FolderEntry,
  GenerateRequestView,
  MethodName,
  MethodRequest,
  MethodResponse,
  ModelView,
  TrainSettingsView,
} from './contract';
import { ApiError, settle } from './errors';
import type { ApiEventBus } from './events';
import type { PathGuard } from './path-guard';
import { ProjectStore, PROJECT_EXTENSION } from './project-store';
import { RunManager } from './run-manager';
import { StudioSettingsStore } from './studio-settings';
import { TaskClient } from './task-client';
import { checkPreviews, engineSettings, estimateRun, fillSettingsView, TRAIN_PRESETS } from './train-setup';
import { datasetItemView, datasetView, EMBEDDED_MODEL_ID, embeddedModelView, KNOWN_MODELS, modelView, openModelPath, scanModelsDir, TokenizerCache } from './views';
import { Dataset, ThumbnailCache } from '../engine/data';
import { downloadFile } from '../engine/io/download';
import { openModelFolder } from '../engine/io/model-folder';
import { readLoraFile, writeLoraFile } from '../engine/lora/lora-file';
import { ensureEmbeddedModel } from '../engine/models/embedded-tiny-model';
import { usableProviders } from '../engine/runtime/session';
import { forkWorker } from '../worker/fork-worker';
import type { GenerateTaskResult, SpawnWorker } from '../worker/protocol';

export type ApiHandlers = { [M in MethodName]: (req: MethodRequest<M>) => Promise<MethodResponse<M>> };

/** What the process hosting the API provides. */
export interface ApiHost {
  kind: AppInfo['host'];
  version: string;
  guard: PathGuard;
  events: ApiEventBus;
  /** Native folder picker; absent on hosts that have none (the headless server, the CLI). */
  pickFolder?: () => Promise<string | null>;
  /** Starts a worker process: utilityProcess in the app; default child_process.fork of the worker through tsx. */
  spawnWorker?: SpawnWorker;
  /** The studio's home folder (models, cache, projects, settings); default $LORA_STUDIO_HOME or ~/.cache/lora-studio. */
  home?: string;
}

/** The studio's back end: the handler table and what the host must close on exit. */
export interface Studio {
  handlers: ApiHandlers;
  runs: RunManager;
  project: ProjectStore;
  settings: StudioSettingsStore;
  /** Saves the project and ends every worker process. */
  shutdown(): void;
}

export function createApiHandlers(host: ApiHost): ApiHandlers {
  return createStudio(host).handlers;
}

export function createStudio(host: ApiHost): Studio {
  const rootsChanged = () => host.events.emit('fs.rootsChanged', { roots: host.guard.list() });
  const { guard, events } = host;
  const spawnWorker = host.spawnWorker ?? forkWorker;
  // Made on first use, so `lora-studio info` (app.info only) creates no folders.
  let backend: { settings: StudioSettingsStore; runs: RunManager; project: ProjectStore; tasks: TaskClient } | undefined;
  const open = () => {
    if (!backend) {
      const settings = new StudioSettingsStore(guard, host.home);
      const runs = new RunManager(spawnWorker, events, (change) => project.runsChanged(change));
      const project: ProjectStore = new ProjectStore(join(settings.projectsDir, `untitled${PROJECT_EXTENSION}`), runs, events);
      backend = { settings, runs, project, tasks: new TaskClient(spawnWorker) };
      rootsChanged();
    }
    return backend;
  };
  const tokenizers = new TokenizerCache(() => open().settings.get().modelsDir);
  const datasets = new Map<string, Dataset>();
  const thumbnails = new Map<number, ThumbnailCache>();
  const openedModels = new Map<string, ModelView>();
  let downloads = 0;

  const tokenizer = () => tokenizers.for(open().project.view().model);
  const viewOf = (dataset: Dataset): DatasetView => datasetView(dataset, tokenizer());

  async function openDataset(folder: string, resolution?: number): Promise<Dataset> {
    const real = await guard.resolveExisting(folder);
    if (!(await stat(real)).isDirectory()) throw new ApiError('not-a-folder', `${folder} is a file, not a folder.`);
    const res = resolution ?? open().project.view().settings?.resolution ?? 512;
    const dataset = await Dataset.open(real, { resolution: res, step: Math.min(64, res) });
    datasets.set(real, dataset);
    return dataset;
  }

  /** The opened dataset of `folder` (opened now when it was not). */
  async function dataset(folder: string): Promise<Dataset> {
    const real = await guard.resolveExisting(folder);
    return datasets.get(real) ?? openDataset(real);
  }

  function item(ds: Dataset, relativePath: unknown) {
    if (typeof relativePath !== 'string') throw new ApiError('bad-request', 'Expected a string "relativePath".');
    try {
      return ds.item(relativePath);
    } catch {
      throw new ApiError('not-found', `${relativePath} is not an image of ${ds.folder}.`);
    }
  }

  /** A model id from the page as a checked path; undefined = the embedded model. */
  async function modelPath(id: unknown): Promise<string | undefined> {
    if (id === undefined || id === null || id === '' || id === EMBEDDED_MODEL_ID) return undefined;
    if (typeof id !== 'string') throw new ApiError('bad-request', 'Expected a model path.');
    return guard.resolveExisting(id);
  }

  async function checkedSettings(req: { settings: Partial<TrainSettingsView>; resume?: string } | undefined) {
    const view = fillSettingsView(req?.settings);
    checkPreviews(view);
    const checked: TrainSettingsView = {
      ...view,
      images: view.images ? await guard.resolveExisting(view.images) : '',
      out: view.out ? await guard.resolveNew(view.out) : '',
      model: (await modelPath(view.model)) ?? EMBEDDED_MODEL_ID,
    };
    const resume = req?.resume ? await guard.resolveExisting(req.resume) : undefined;
    const { modelsDir, cacheDir } = open().settings.get();
    return { view: checked, engine: engineSettings(checked, { modelsDir, cacheDir }, resume), resume };
  }

  const handlers: ApiHandlers = {
    'app.info': async () => ({
      name: 'LoRA Studio',
      version: host.version,
      nodeVersion: process.versions.node,
      platform: process.platform,
      arch: process.arch,
      providers: await usableProviders(),
      host: host.kind,
    }),

    'fs.roots': async () => ({ roots: host.guard.list() }),

    'fs.pickFolder': async () => {
      if (!host.pickFolder) {
        throw new ApiError(
          'unsupported',
          'This studio has no folder dialog: start `lora-studio serve --root <folder>` to open folders.',
        );
      }
      const picked = await host.pickFolder();
      if (picked === null) return { path: null };
      const path = host.guard.allow(picked);
      rootsChanged();
      return { path };
    },

    'fs.listFolder': async (req) => {
      const path = await host.guard.resolveExisting(requireString(req, 'path', 'fs.listFolder'));
      if (!(await stat(path)).isDirectory())
        throw new ApiError('not-a-folder', `${path} is a file, not a folder.`);
      const dirents = await readdir(path, { withFileTypes: true });
      const entries = await Promise.all(
        dirents.map(async (d): Promise<FolderEntry | null> => {
          try {
            // stat follows symlinks, so a link shows as what it points to.
            const info = await stat(join(path, d.name));
            return info.isDirectory()
              ? { name: d.name, kind: 'folder', size: 0 }
              : { name: d.name, kind: 'file', size: info.size };
          } catch {
            return null; // dangling link or vanished meanwhile
          }
        }),
      );
      const listed = entries.filter((e): e is FolderEntry => e !== null);
      listed.sort((a, b) =>
        a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'folder' ? -1 : 1,
      );
      return { path, entries: listed };
    },

    // ------------------------------------------------------------ dataset

    'dataset.open': async (req) => {
      const folder = requireString(req, 'folder', 'dataset.open');
      const resolution = optionalInteger(req, 'resolution', 'dataset.open', 8);
      const ds = await openDataset(folder, resolution);
      if (open().project.view().datasetFolder !== ds.folder) open().project.update({ datasetFolder: ds.folder });
      return viewOf(ds);
    },

    'dataset.thumbnail': async (req) => {
      const ds = await dataset(requireString(req, 'folder', 'dataset.thumbnail'));
      const image = item(ds, req.relativePath);
      const size = optionalInteger(req, 'size', 'dataset.thumbnail', 16) ?? 256;
      if (size > 1024) throw new ApiError('bad-request', `dataset.thumbnail: size must be at most 1024, got ${size}.`);
      let cache = thumbnails.get(size);
      if (!cache) thumbnails.set(size, (cache = new ThumbnailCache(join(open().settings.get().cacheDir, 'thumbnails'), { size })));
      const bytes = await cache.bytes(image.path);
      return { image: `data:image/webp;base64,${bytes.toString('base64')}` };
    },

    'dataset.saveCaption': async (req) => {
      const ds = await dataset(requireString(req, 'folder', 'dataset.saveCaption'));
      const caption = requireString(req, 'caption', 'dataset.saveCaption');
      const saved = ds.saveCaption(item(ds, req.relativePath).relativePath, caption);
      return datasetItemView(saved, tokenizer());
    },

    'dataset.bulkCaption': async (req) => {
      const ds = await dataset(requireString(req, 'folder', 'dataset.bulkCaption'));
      const operation = req.operation as CaptionOperationView;
      if (typeof operation !== 'object' || operation === null || !['prepend', 'append', 'replace', 'remove-tag', 'shuffle'].includes(operation.kind))
        throw new ApiError('bad-request', 'dataset.bulkCaption needs an operation: prepend, append, replace, remove-tag or shuffle.');
      const paths = req.relativePaths?.map((p) => item(ds, p).relativePath);
      const { changed } = ds.editCaptions(operation, paths);
      return { changed, dataset: viewOf(ds) };
    },

    // ------------------------------------------------------------ models

    'model.list': async () => {
      const models = [embeddedModelView(), ...scanModelsDir(open().settings.get().modelsDir)];
      for (const opened of openedModels.values()) if (!models.some((m) => m.id === opened.id)) models.push(opened);
      return { models, known: KNOWN_MODELS };
    },

    'model.open': async (req) => {
      const path = await guard.resolveExisting(requireString(req, 'path', 'model.open'));
      let view: ModelView;
      try {
        const model = openModelPath(path);
        view = modelView(path, model, (await stat(path)).isDirectory() ? 'folder' : 'single-file');
      } catch (error) {
        throw new ApiError('bad-model', (error as Error).message);
      }
      openedModels.set(path, view);
      return view;
    },

    'model.download': async (req) => {
      const url = requireString(req, 'url', 'model.download');
      const name = requireString(req, 'name', 'model.download');
      if (!/^https?:\/\//.test(url)) throw new ApiError('bad-request', `model.download: ${url} is not an http(s) URL.`);
      const fromUrl = basename(new URL(url).pathname);
      const ext = extname(fromUrl) || '.safetensors';
      const fileName = `${name.replace(/[^\w.-]+/g, '-').replace(/^-+|-+$/g, '') || 'model'}${name.endsWith(ext) ? '' : ext}`;
      const dest = join(open().settings.get().modelsDir, fileName);
      const downloadId = `download-${++downloads}`;
      let lastSent = 0;
      const progress = (receivedBytes: number, totalBytes: number | null, done: boolean, extra: { error?: string; path?: string } = {}) =>
        events.emit('model.download', { downloadId, url, receivedBytes, totalBytes, done, ...extra });
      void downloadFile(url, dest, {
        sha256: typeof req.sha256 === 'string' ? req.sha256 : undefined,
        onProgress: ({ received, total }) => {
          const now = Date.now();
          if (now - lastSent < 250) return; // a few updates a second is plenty for a progress bar
          lastSent = now;
          progress(received, total ?? null, false);
        },
      }).then(
        (result) => progress(result.bytes, result.bytes, true, { path: result.path }),
        (error: unknown) => progress(0, null, true, { error: error instanceof Error ? error.message : String(error) }),
      );
      return { downloadId };
    },

    // ------------------------------------------------------------ training

    'train.presets': async () => TRAIN_PRESETS,

    'train.estimate': async (req) => {
      // An estimate needs no output file yet: a placeholder in the cache passes the checks.
      const given = req?.settings ?? ({} as Partial<TrainSettingsView>);
      const { view, engine } = await checkedSettings({ settings: { ...given, out: given.out || join(open().settings.get().cacheDir, 'estimate.safetensors') } });
      const ds = datasets.get(engine.images) ?? (await openDataset(engine.images, view.resolution));
      if (ds.bucketOptions.resolution !== view.resolution) ds.setBuckets({ resolution: view.resolution, step: Math.min(64, view.resolution) });
      const opened = engine.model === undefined ? openModelFolder(ensureEmbeddedModel(engine.modelsDir)) : openModelPath(engine.model);
      return estimateRun(view, ds.summary().samplesPerEpoch, { opened, embedded: engine.model === undefined });
    },

    'train.start': async (req) => {
      const { view, engine, resume } = await checkedSettings(req);
      // The run needs the GPU's memory more than an idle Generate does (its worker restarts on the next one).
      if (view.device !== 'cpu') open().tasks.releaseIfIdle();
      const runId = open().runs.start(view, engine, resume);
      open().project.update({ settings: view, datasetFolder: view.images });
      return { runId };
    },
    'train.pause': async (req) => open().runs.pause(requireString(req, 'runId', 'train.pause')),
    'train.resume': async (req) => open().runs.resume(requireString(req, 'runId', 'train.resume')),
    'train.stop': async (req) => open().runs.stop(requireString(req, 'runId', 'train.stop')),
    'train.runs': async () => open().runs.list(),

    // ------------------------------------------------------------ generation and export

    'generate.run': async (req: GenerateRequestView) => {
      if (typeof req !== 'object' || req === null) throw new ApiError('bad-request', 'generate.run needs a request.');
      const model = await modelPath(req.model);
      const loras = await Promise.all((req.loras ?? []).map(async (l) => ({ path: await guard.resolveExisting(l.path), strength: Number(l.strength) })));
      const { modelsDir, cacheDir, device } = open().settings.get();
      const result = await open().tasks.run<GenerateTaskResult>({
        kind: 'generate',
        model,
        modelsDir,
        cacheDir,
        device,
        prompt: requireString(req, 'prompt', 'generate.run'),
        negativePrompt: typeof req.negativePrompt === 'string' ? req.negativePrompt : '',
        seed: req.seed ?? 0,
        steps: req.steps ?? 20,
        guidance: req.guidance ?? 7.5,
        width: req.width ?? 512,
        height: req.height ?? 512,
        sampler: req.sampler ?? 'Euler a',
        clipSkip: req.clipSkip ?? 1,
        loras,
      });
      return { images: result.images.map((i) => ({ seed: i.seed, image: i.png, parameters: i.parameters })) };
    },

    'export.lora': async (req: ExportRequestView) => {
      const source = await guard.resolveExisting(requireString(req, 'lora', 'export.lora'));
      const out = await guard.resolveNew(requireString(req, 'out', 'export.lora'));
      if (!out.toLowerCase().endsWith('.safetensors')) throw new ApiError('bad-path', `${out}: a LoRA file name ends in .safetensors.`);
      if (out === source) throw new ApiError('bad-path', `${out} is the LoRA being exported: choose another file.`);
      if (req.format !== 'kohya' && req.format !== 'diffusers') throw new ApiError('bad-request', 'export.lora: format must be kohya or diffusers.');
      if (req.precision !== 'fp16' && req.precision !== 'fp32') throw new ApiError('bad-request', 'export.lora: precision must be fp16 or fp32.');
      const lora = readLoraFile(source);
      writeLoraFile(out, lora.modules, { format: req.format, precision: req.precision, metadata: lora.metadata });
      return { path: out, metadata: lora.metadata };
    },

    'export.metadata': async (req) => {
      const path = await guard.resolveExisting(requireString(req, 'lora', 'export.metadata'));
      try {
        const lora = readLoraFile(path);
        return { metadata: lora.metadata, modules: lora.modules.length, format: lora.format };
      } catch (error) {
        throw new ApiError('bad-lora', (error as Error).message);
      }
    },

    'export.merge': async (req) => {
      const model = await modelPath(req.model);
      const lora = await guard.resolveExisting(requireString(req, 'lora', 'export.merge'));
      const out = await guard.resolveNew(requireString(req, 'out', 'export.merge'));
      if (!out.toLowerCase().endsWith('.safetensors')) throw new ApiError('bad-path', `${out}: a checkpoint file name ends in .safetensors.`);
      if (out === model || out === lora) throw new ApiError('bad-path', `${out} is an input of the merge: choose another file.`);
      const strength = Number(req.strength ?? 1);
      if (!Number.isFinite(strength)) throw new ApiError('bad-request', 'export.merge: strength must be a number.');
      return open().tasks.run<{ path: string }>({ kind: 'merge', model, modelsDir: open().settings.get().modelsDir, lora, strength, out });
    },

    // ------------------------------------------------------------ project and settings

    'project.get': async () => open().project.view(),
    'project.open': async (req) => open().project.open(await guard.resolveExisting(requireString(req, 'path', 'project.open'))),
    'project.save': async (req) => open().project.saveAs(req?.path === undefined ? undefined : await guard.resolveNew(requireString(req, 'path', 'project.save'))),
    'project.update': async (req) => {
      if (typeof req !== 'object' || req === null) throw new ApiError('bad-request', 'project.update needs the fields to change.');
      return open().project.update({
        datasetFolder: req.datasetFolder === undefined || req.datasetFolder === null ? req.datasetFolder : await guard.resolveExisting(req.datasetFolder),
        model: req.model === undefined ? undefined : ((await modelPath(req.model)) ?? EMBEDDED_MODEL_ID),
        settings: req.settings === undefined || req.settings === null ? req.settings : fillSettingsView(req.settings),
      });
    },
    'settings.get': async () => open().settings.get(),
    'settings.set': async (req) => {
      const next = await open().settings.set(req ?? {});
      thumbnails.clear();
      return next;
    },
  };

  return {
    handlers,
    get runs() {
      return open().runs;
    },
    get project() {
      return open().project;
    },
    get settings() {
      return open().settings;
    },
    shutdown() {
      if (!backend) return;
      backend.runs.shutdown();
      backend.tasks.shutdown();
      backend.project.save();
    },
  };
}

/** Calls a method by name with untrusted parameters (from a socket or IPC message). */
export function callByName(
  handlers: ApiHandlers,
  method: unknown,
  params: unknown,
): Promise<ApiOutcome<unknown>> {
  return settle(async () => {
    // Own properties only: 'constructor' or '__proto__' must not reach Object.prototype.
    if (typeof method !== 'string' || !Object.hasOwn(handlers, method)) {
      throw new ApiError('unknown-method', `Unknown API method ${JSON.stringify(method)}.`);
    }
    const handler = handlers[method as MethodName] as (req: unknown) => Promise<unknown>;
    return handler(params);
  });
}

function field(req: unknown, key: string): unknown {
  return typeof req === 'object' && req !== null ? (req as Record<string, unknown>)[key] : undefined;
}

function requireString(req: unknown, key: string, method: string): string {
  const value = field(req, key);
  if (typeof value !== 'string') throw new ApiError('bad-request', `${method} needs a string "${key}".`);
  return value;
}

function optionalInteger(req: unknown, key: string, method: string, min: number): number | undefined {
  const value = field(req, key);
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new ApiError('bad-request', `${method}: "${key}" must be a whole number from ${min} up, got ${JSON.stringify(value)}.`);
  return value;
}
