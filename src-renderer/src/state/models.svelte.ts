// The Model screen's state: models the back end knows, the one chosen for training and
// generation, and downloads with their progress (a failed or interrupted one can be resumed).
import type { DownloadProgressEvent, KnownModel, ModelView } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { Action } from './action.svelte';

/** The embedded tiny model's id (ModelView.id); always available, the default choice. */
export const EMBEDDED_MODEL_ID = 'embedded';

export interface DownloadView {
  /** The known model's name. */
  name: string;
  url: string;
  sha256?: string;
  downloadId: string;
  receivedBytes: number;
  totalBytes: number | null;
  done: boolean;
  error?: string;
  path?: string;
}

/** The image side a model was trained at: the natural default for training and generation. */
export function nativeResolution(model: ModelView | undefined): number {
  if (!model || model.source === 'embedded') return 64;
  return model.kind === 'sdxl' ? 1024 : model.kind === 'sd2' ? 768 : 512;
}

export class ModelState {
  #models = $state.raw<ModelView[]>([]);
  #known = $state.raw<KnownModel[]>([]);
  #selectedId = $state.raw<string>(EMBEDDED_MODEL_ID);
  /** By URL: downloading the same model again replaces (resumes) its entry. */
  #downloads = $state.raw<Record<string, DownloadView>>({});

  readonly listing = new Action();
  readonly opening = new Action();
  readonly downloading = new Action();

  #unsubscribe: (() => void) | null = null;

  /** Stops following the back end's events. */
  dispose(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  constructor(
    private readonly api: ApiClient,
    /** Tells the project which model is chosen (it autosaves). */
    private readonly remember: (modelId: string) => void = () => {},
  ) {}

  get models(): ModelView[] {
    return this.#models;
  }
  get known(): KnownModel[] {
    return this.#known;
  }
  get selectedId(): string {
    return this.#selectedId;
  }
  get selected(): ModelView | undefined {
    return this.#models.find((m) => m.id === this.#selectedId);
  }
  get downloads(): DownloadView[] {
    return Object.values(this.#downloads);
  }
  download(url: string): DownloadView | undefined {
    return this.#downloads[url];
  }

  async load(): Promise<void> {
    this.#unsubscribe ??= this.api.on('model.download', (event) => this.#onProgress(event));
    await this.refresh();
  }

  async refresh(): Promise<void> {
    const listed = await this.listing.run(() => this.api.call('model.list'));
    if (!listed) return;
    this.#models = listed.models;
    this.#known = listed.known;
    if (!listed.models.some((m) => m.id === this.#selectedId) && listed.models.length > 0) {
      this.#selectedId = (listed.models.find((m) => m.id === EMBEDDED_MODEL_ID) ?? listed.models[0]).id;
    }
  }

  select(id: string): void {
    if (id === this.#selectedId) return;
    this.#selectedId = id;
    this.remember(id);
  }

  /** Opens a model folder (diffusers layout) or a single checkpoint file and selects it. */
  async open(path: string): Promise<ModelView | undefined> {
    const trimmed = path.trim();
    if (!trimmed) {
      this.opening.fail('Type the path of a model folder or a .safetensors file first.');
      return undefined;
    }
    const model = await this.opening.run(() => this.api.call('model.open', { path: trimmed }));
    if (!model) return undefined;
    this.#models = [...this.#models.filter((m) => m.id !== model.id), model];
    this.select(model.id);
    return model;
  }

  /** Starts (or resumes: the back end continues a partial file) downloading a known model. */
  async startDownload(model: KnownModel): Promise<void> {
    const started = await this.downloading.run(() =>
      this.api.call('model.download', { url: model.url, sha256: model.sha256, name: model.name }),
    );
    if (!started) return;
    const previous = this.#downloads[model.url];
    this.#downloads = {
      ...this.#downloads,
      [model.url]: {
        name: model.name,
        url: model.url,
        sha256: model.sha256,
        downloadId: started.downloadId,
        receivedBytes: previous?.receivedBytes ?? 0,
        totalBytes: previous?.totalBytes ?? model.sizeBytes ?? null,
        done: false,
      },
    };
  }

  #onProgress(event: DownloadProgressEvent): void {
    const entry = this.#downloads[event.url];
    const name = entry?.name ?? this.#known.find((k) => k.url === event.url)?.name ?? event.url;
    this.#downloads = {
      ...this.#downloads,
      [event.url]: { ...entry, name, ...event },
    };
    // A finished download becomes a model in the list.
    if (event.done && !event.error) void this.refresh();
  }
}
