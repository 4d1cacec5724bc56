// The project file: dataset folder, model, settings and every run with its loss curve and
// preview images, as JSON written atomically (temp file + rename) and autosaved. Preview PNGs are
// files beside the project (`<name>.previews/<runId>/NNNN-step-S.png`) that the JSON names, so the
// JSON stays small; reopening reads them back. The studio always has a project: until one is
// opened or saved elsewhere it is `<home>/projects/untitled.lora-studio.json`.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../engine/io/atomic-write';
import type { PreviewImage, ProjectView, RunView, TrainSettingsView } from './contract';
import { ApiError } from './errors';
import type { ApiEventBus } from './events';
import type { RunChange, RunManager } from './run-manager';

export const PROJECT_FORMAT = 'lora-studio-project';
const PROJECT_VERSION = 1;
export const PROJECT_EXTENSION = '.lora-studio.json';
/** Loss points arrive every step: save at most this often while training; status changes save at once. */
const PROGRESS_SAVE_MS = 2000;

type StoredPreview = Omit<PreviewImage, 'image'> & { file: string };
type StoredRun = Omit<RunView, 'previews'> & { previews: StoredPreview[] };

interface ProjectFile {
  format: typeof PROJECT_FORMAT;
  version: number;
  savedAt: string;
  datasetFolder: string | null;
  model: string;
  settings: TrainSettingsView | null;
  runs: StoredRun[];
}

export class ProjectStore {
  private path: string;
  private datasetFolder: string | null = null;
  private model = 'embedded';
  private settings: TrainSettingsView | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** Preview files already on disk, by absolute path. */
  private readonly written = new Set<string>();

  constructor(
    defaultPath: string,
    private readonly runs: RunManager,
    private readonly events: ApiEventBus,
  ) {
    this.path = defaultPath;
    if (existsSync(defaultPath)) {
      try {
        this.load(defaultPath);
      } catch (error) {
        console.error(`LoRA Studio: ${(error as Error).message}; starting with an empty project.`);
      }
    }
  }

  view(): ProjectView {
    return { path: this.path, datasetFolder: this.datasetFolder, model: this.model, settings: this.settings, runs: this.runs.list() };
  }

  /** Remembers what the page chose; saved at once. */
  update(change: Partial<Pick<ProjectView, 'datasetFolder' | 'model' | 'settings'>>): ProjectView {
    if (change.datasetFolder !== undefined) this.datasetFolder = change.datasetFolder;
    if (change.model !== undefined) this.model = change.model;
    if (change.settings !== undefined) this.settings = change.settings;
    this.save();
    this.events.emit('project.changed', this.view());
    return this.view();
  }

  /** Run changes: status changes save now, progress (loss points, previews) at most every 2 s. */
  runsChanged(change: RunChange): void {
    if (change === 'status') {
      this.save();
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.save();
    }, PROGRESS_SAVE_MS);
  }

  open(path: string): ProjectView {
    this.save(); // the current project keeps its last state
    this.load(path);
    this.path = path;
    this.events.emit('project.changed', this.view());
    return this.view();
  }

  /** Saves now; with `path`, saves as that file and keeps working in it. */
  saveAs(path?: string): ProjectView {
    if (path !== undefined) {
      if (!path.endsWith('.json')) throw new ApiError('bad-path', `${path}: a project file name ends in .json (e.g. my-lora${PROJECT_EXTENSION}).`);
      this.path = path;
    }
    this.save();
    this.events.emit('project.changed', this.view());
    return this.view();
  }

  /** Writes the project file (and any preview image not yet on disk). */
  save(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const folder = dirname(this.path);
    const previewsDir = join(folder, `${basename(this.path).replace(/\.json$/, '')}.previews`);
    const runs: StoredRun[] = this.runs.list().map((run) => ({
      ...run,
      previews: run.previews.map((p, index) => {
        const file = join(previewsDir, run.runId, `${String(index).padStart(4, '0')}-step-${p.step}.png`);
        if (!this.written.has(file)) {
          mkdirSync(dirname(file), { recursive: true });
          writeFileAtomic(file, decodeDataUrl(p.image));
          this.written.add(file);
        }
        const { image: _image, ...rest } = p;
        return { ...rest, file: relative(folder, file).split(sep).join('/') };
      }),
    }));
    const data: ProjectFile = {
      format: PROJECT_FORMAT,
      version: PROJECT_VERSION,
      savedAt: new Date().toISOString(),
      datasetFolder: this.datasetFolder,
      model: this.model,
      settings: this.settings,
      runs,
    };
    mkdirSync(folder, { recursive: true });
    writeFileAtomic(this.path, `${JSON.stringify(data, null, 1)}\n`);
  }

  private load(path: string): void {
    let data: ProjectFile;
    try {
      data = JSON.parse(readFileSync(path, 'utf8')) as ProjectFile;
    } catch (error) {
      throw new ApiError('bad-project', `${path}: not a readable project file (${(error as Error).message}).`);
    }
    if (data?.format !== PROJECT_FORMAT) throw new ApiError('bad-project', `${path}: not a LoRA Studio project (no "format": "${PROJECT_FORMAT}").`);
    if (data.version !== PROJECT_VERSION) throw new ApiError('bad-project', `${path}: project version ${data.version} is not supported (expected ${PROJECT_VERSION}).`);
    const folder = dirname(path);
    const runs: RunView[] = (data.runs ?? []).map((run) => ({
      ...run,
      previews: run.previews.map(({ file, ...rest }) => {
        const absolute = resolve(folder, file);
        // A project names its own preview files only: never read outside its folder.
        if (relative(folder, absolute).startsWith('..')) return { ...rest, image: '' };
        let image = '';
        try {
          image = `data:image/png;base64,${readFileSync(absolute).toString('base64')}`;
          this.written.add(absolute);
        } catch {
          // a deleted preview file leaves an empty image, not a failed project
        }
        return { ...rest, image };
      }),
    }));
    this.runs.restore(runs);
    this.datasetFolder = data.datasetFolder ?? null;
    this.model = data.model ?? 'embedded';
    this.settings = data.settings ?? null;
  }

  /** Saves a pending autosave now (the studio is closing). */
  flush(): void {
    if (this.timer) this.save();
  }
}

function decodeDataUrl(url: string): Uint8Array {
  const comma = url.indexOf(',');
  if (!url.startsWith('data:') || comma < 0 || !url.slice(0, comma).endsWith(';base64')) return new Uint8Array(0);
  return Buffer.from(url.slice(comma + 1), 'base64');
}
