// The Dataset screen's state: the open folder's view, which image is being captioned, the caption
// draft, thumbnails fetched so far, and the bulk caption tools.
import type { CaptionOperationView, DatasetItemView, DatasetView } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { describeError } from '../lib/errors';
import { TaskQueue } from '../lib/task-queue';
import { Action } from './action.svelte';

export type DatasetFilter = 'all' | 'problems';

/** Thumbnails requested at once; more would only queue up in the back end. */
const THUMBNAIL_CONCURRENCY = 4;

export function problemCounts(item: DatasetItemView): { error: number; warning: number; info: number } {
  const counts = { error: 0, warning: 0, info: 0 };
  for (const p of item.problems) counts[p.severity]++;
  return counts;
}

export class DatasetState {
  #folderInput = $state.raw('');
  #view = $state.raw<DatasetView | null>(null);
  #filter = $state.raw<DatasetFilter>('all');
  #selected = $state.raw<string | null>(null);
  #draft = $state.raw('');
  #thumbnails = $state.raw<Record<string, string>>({});
  #thumbnailErrors = $state.raw<Record<string, string>>({});
  #lastChanged = $state.raw<string[] | null>(null);

  #visible = $derived.by(() => {
    const items = this.#view?.items ?? [];
    return this.#filter === 'problems' ? items.filter((i) => i.problems.length > 0 || i.excluded) : items;
  });

  /** Opening, reopening and bulk edits. */
  readonly loading = new Action();
  /** Saving the caption being edited. */
  readonly saving = new Action();

  readonly #thumbnailQueue = new TaskQueue(THUMBNAIL_CONCURRENCY);

  constructor(
    private readonly api: ApiClient,
    /** The training resolution, which decides the bucket summary. */
    private readonly resolution: () => number | undefined,
    /** Tells the project which folder is open (it autosaves). */
    private readonly remember: (folder: string) => void = () => {},
  ) {}

  /** The folder path as typed in the Dataset folder field. */
  get folderInput(): string {
    return this.#folderInput;
  }
  setFolderInput(path: string): void {
    this.#folderInput = path;
  }

  get view(): DatasetView | null {
    return this.#view;
  }
  get folder(): string | null {
    return this.#view?.folder ?? null;
  }
  get filter(): DatasetFilter {
    return this.#filter;
  }
  get visibleItems(): DatasetItemView[] {
    return this.#visible;
  }
  get selectedPath(): string | null {
    return this.#selected;
  }
  get selected(): DatasetItemView | null {
    return this.#view?.items.find((i) => i.relativePath === this.#selected) ?? null;
  }
  get draft(): string {
    return this.#draft;
  }
  /** Whether the draft differs from the saved caption. */
  get dirty(): boolean {
    const item = this.selected;
    return item !== null && this.#draft !== (item.caption ?? '');
  }
  /** Files the last bulk edit changed (null before any). */
  get lastChanged(): string[] | null {
    return this.#lastChanged;
  }

  thumbnail(relativePath: string): string | undefined {
    return this.#thumbnails[relativePath];
  }
  thumbnailError(relativePath: string): string | undefined {
    return this.#thumbnailErrors[relativePath];
  }

  async open(folder: string): Promise<boolean> {
    const trimmed = folder.trim();
    if (!trimmed) {
      this.loading.fail('Type the path of a folder of images first.');
      return false;
    }
    const view = await this.loading.run(() =>
      this.api.call('dataset.open', { folder: trimmed, resolution: this.resolution() }),
    );
    if (!view) return false;
    const sameFolder = view.folder === this.#view?.folder;
    if (!sameFolder) {
      this.#thumbnails = {};
      this.#thumbnailErrors = {};
      this.#thumbnailQueue.reset();
      this.#lastChanged = null;
    }
    this.#setView(view);
    this.#folderInput = view.folder;
    if (!sameFolder) this.remember(view.folder);
    return true;
  }

  /** The native folder dialog (Electron only), then open what was picked. */
  async pickAndOpen(): Promise<string | null> {
    const picked = await this.loading.run(() => this.api.call('fs.pickFolder'));
    if (!picked?.path) return null;
    await this.open(picked.path);
    return picked.path;
  }

  /** Reads the folder again (after edits made outside the studio, or to refresh tag counts). */
  async reload(): Promise<void> {
    if (this.#view) await this.open(this.#view.folder);
  }

  setFilter(filter: DatasetFilter): void {
    this.#filter = filter;
  }

  /** Shows one image in the caption editor (the draft restarts from its saved caption). */
  select(relativePath: string): void {
    const item = this.#view?.items.find((i) => i.relativePath === relativePath);
    if (!item) return;
    this.#selected = relativePath;
    this.#draft = item.caption ?? '';
    this.saving.clear();
  }

  setDraft(text: string): void {
    this.#draft = text;
  }

  async saveCaption(): Promise<boolean> {
    const view = this.#view;
    const item = this.selected;
    if (!view || !item) return false;
    const caption = this.#draft;
    const saved = await this.saving.run(() =>
      this.api.call('dataset.saveCaption', { folder: view.folder, relativePath: item.relativePath, caption }),
    );
    if (!saved) return false;
    const current = this.#view;
    if (current) {
      const before = current.items.find((i) => i.relativePath === saved.relativePath);
      const items = current.items.map((i) => (i.relativePath === saved.relativePath ? saved : i));
      // Problems the folder has besides this image's (orphan captions…) stay counted as they were.
      const was = before ? problemCounts(before) : { error: 0, warning: 0 };
      const now = problemCounts(saved);
      const summary = {
        ...current.summary,
        errors: current.summary.errors + now.error - was.error,
        warnings: current.summary.warnings + now.warning - was.warning,
      };
      this.#view = { ...current, items, summary };
    }
    // The user may have typed on while the save was under way: keep that.
    if (this.#selected === saved.relativePath && this.#draft === caption) this.#draft = saved.caption ?? '';
    return true;
  }

  /** Saves a changed caption, then moves by `delta` among the shown images; stays on a failed save. */
  async move(delta: number): Promise<boolean> {
    if (this.dirty && !(await this.saveCaption())) return false;
    const items = this.#visible;
    if (items.length === 0) return false;
    const index = items.findIndex((i) => i.relativePath === this.#selected);
    const next = index < 0 ? 0 : Math.min(items.length - 1, Math.max(0, index + delta));
    if (index === next) return false;
    this.select(items[next].relativePath);
    return true;
  }

  /** Applies a caption operation to every image, or only to `relativePaths`. */
  async bulk(operation: CaptionOperationView, relativePaths?: string[]): Promise<string[] | null> {
    const view = this.#view;
    if (!view) return null;
    // A half-typed caption would be overwritten by the bulk result: save it first.
    if (this.dirty && !(await this.saveCaption())) return null;
    const outcome = await this.loading.run(() =>
      this.api.call('dataset.bulkCaption', { folder: view.folder, operation, relativePaths }),
    );
    if (!outcome) return null;
    this.#setView(outcome.dataset);
    this.#lastChanged = outcome.changed;
    return outcome.changed;
  }

  /** Asks for a thumbnail once; at most a few requests run at a time. */
  requestThumbnail(relativePath: string): void {
    const folder = this.#view?.folder;
    if (!folder) return;
    this.#thumbnailQueue.add(relativePath, async () => {
      if (this.#view?.folder !== folder) return; // another folder was opened meanwhile
      try {
        const { image } = await this.api.call('dataset.thumbnail', { folder, relativePath, size: 192 });
        if (this.#view?.folder === folder) this.#thumbnails = { ...this.#thumbnails, [relativePath]: image };
      } catch (err) {
        if (this.#view?.folder === folder)
          this.#thumbnailErrors = { ...this.#thumbnailErrors, [relativePath]: describeError(err) };
      }
    });
  }

  #setView(view: DatasetView): void {
    const unsaved = this.dirty; // a reload must not throw away what the user is typing
    this.#view = view;
    const still = view.items.find((i) => i.relativePath === this.#selected);
    const first = still ?? view.items[0] ?? null;
    this.#selected = first?.relativePath ?? null;
    if (!(still && unsaved)) this.#draft = first?.caption ?? '';
  }
}
