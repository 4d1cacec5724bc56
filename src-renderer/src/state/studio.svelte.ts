// App-wide state: what the back end reported about itself, which screen is showing, and each
// screen's own state (kept here so that switching tabs loses nothing).
import type { AppInfo, ProjectView } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { describeError } from '../lib/errors';
import { SCREENS, type ScreenId } from '../screens/screens';
import { DatasetState } from './dataset.svelte';
import { ExportState } from './exporting.svelte';
import { GenerateState } from './generation.svelte';
import { ModelState, nativeResolution } from './models.svelte';
import { SettingsState } from './settings.svelte';
import { TrainingState } from './training.svelte';

/** The fields project.update takes. */
type ProjectPatch = Partial<Pick<ProjectView, 'datasetFolder' | 'model' | 'settings'>>;

export class StudioState {
  #info = $state.raw<AppInfo | null>(null);
  #loadError = $state.raw<string | null>(null);
  #screen = $state.raw<ScreenId>(SCREENS[0].id);
  #roots = $state.raw<string[]>([]);

  readonly dataset: DatasetState;
  readonly models: ModelState;
  readonly training: TrainingState;
  readonly generation: GenerateState;
  readonly exporting: ExportState;
  readonly settings: SettingsState;

  /** What the project should remember, gathered for one project.update a moment later. */
  #projectPatch: ProjectPatch = {};
  #projectTimer: ReturnType<typeof setTimeout> | null = null;
  /** Off while the project's own state is being restored (it would only echo it back). */
  #remembering = true;

  constructor(readonly api: ApiClient) {
    const remember = (patch: ProjectPatch) => this.#remember(patch);
    this.models = new ModelState(api, (model) => remember({ model }));
    this.settings = new SettingsState(api);
    const modelId = () => this.models.selectedId;
    const modelResolution = () => nativeResolution(this.models.selected);
    this.training = new TrainingState(api, {
      datasetFolder: () => this.dataset.folder,
      modelId,
      modelKind: () => this.models.selected?.kind ?? null,
      modelResolution,
      defaultDevice: () => this.settings.saved?.device ?? null,
      roots: () => this.#roots,
      providers: () => this.#info?.providers ?? [],
      selectModel: (id) => this.models.select(id),
      remember: (settings) => remember({ settings }),
    });
    this.dataset = new DatasetState(
      api,
      () => this.training.settings.resolution,
      (datasetFolder) => remember({ datasetFolder }),
    );
    this.generation = new GenerateState(api, { modelId, modelResolution });
    this.exporting = new ExportState(api, modelId);
  }

  get info(): AppInfo | null {
    return this.#info;
  }
  get loadError(): string | null {
    return this.#loadError;
  }
  get screen(): ScreenId {
    return this.#screen;
  }
  get roots(): string[] {
    return this.#roots;
  }

  /**
   * Fetches app.info and the opened folders, and follows later changes to the folders; then each
   * screen's data. A screen whose back-end methods fail shows that failure; the others still work.
   */
  async load(): Promise<void> {
    this.api.on('fs.rootsChanged', ({ roots }) => {
      this.#roots = roots;
    });
    try {
      const [info, { roots }] = await Promise.all([this.api.call('app.info'), this.api.call('fs.roots')]);
      this.#info = info;
      this.#roots = roots;
      this.#loadError = null;
    } catch (err) {
      this.#loadError = describeError(err);
      return;
    }
    await Promise.all([this.models.load(), this.training.load(), this.settings.load()]);
    await this.#restoreProject();
  }

  show(screen: ScreenId): void {
    this.#screen = screen;
  }

  /** Picks up where the project left off: its dataset, model and settings. */
  async #restoreProject(): Promise<void> {
    let project;
    try {
      project = await this.api.call('project.get');
    } catch {
      return; // no project support: nothing to restore, and every screen works without it
    }
    this.#remembering = false;
    try {
      if (project.model && this.models.models.some((m) => m.id === project.model)) this.models.select(project.model);
      if (project.settings) this.training.restore(project.settings);
      if (project.datasetFolder && !this.dataset.view) await this.dataset.open(project.datasetFolder);
    } finally {
      this.#remembering = true;
    }
  }

  /** Sends what changed to the project after a short pause (typing in a field sends once). */
  #remember(patch: ProjectPatch): void {
    if (!this.#remembering) return;
    this.#projectPatch = { ...this.#projectPatch, ...patch };
    if (this.#projectTimer) clearTimeout(this.#projectTimer);
    this.#projectTimer = setTimeout(() => {
      const pending = this.#projectPatch;
      this.#projectPatch = {};
      this.#projectTimer = null;
      // The project is a convenience: a back end without it (or a refused path) changes nothing here.
      this.api.call('project.update', pending).catch(() => {});
    }, 800);
  }
}
