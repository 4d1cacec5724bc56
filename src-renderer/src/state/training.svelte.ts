// The Train and Live screens' state: the settings being edited (a preset plus the user's changes),
// the estimate for them, the runs with their live progress, and the run the buttons control.
import type {
  ExecutionProvider,
  ModelView,
  RunView,
  TrainEstimate,
  TrainEvent,
  TrainPreset,
  TrainSettingsView,
} from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { nowIso } from '../lib/format';
import { basename, dirname, isInside, joinPath } from '../lib/paths';
import { Action } from './action.svelte';
import { RunTracker } from './run-tracker.svelte';

/** What the user edits; the dataset folder, the model and the output come from elsewhere. */
export type EditableSettings = Omit<TrainSettingsView, 'images' | 'model' | 'out'>;

/** Defaults for a first LoRA: the engine's own defaults, with a checkpoint every 100 steps. */
export const DEFAULT_SETTINGS: EditableSettings = {
  rank: 4,
  alpha: 4,
  steps: 500,
  lr: 1e-3,
  batch: 1,
  resolution: 64,
  seed: 42,
  device: 'cpu',
  saveEvery: 100,
  targets: 'attention',
  lrSchedule: 'constant',
  warmupSteps: 0,
  gradAccum: 1,
  minSnrGamma: null,
  noiseOffset: 0,
  maxGradNorm: 1,
  trigger: null,
  gradientCheckpointing: false,
  stepsPerRun: 1,
  previews: [{ prompt: 'a photo', seed: 1, steps: 20, guidance: 7 }],
  previewEvery: 100,
};

/** Where training gets the rest of its settings from: the other screens. */
export interface TrainingContext {
  datasetFolder(): string | null;
  modelId(): string;
  /** The chosen model's kind, once the model list knows it. */
  modelKind(): ModelView['kind'] | null;
  /** The model's native image side, used until the user sets a resolution. */
  modelResolution(): number;
  /** The device chosen in Settings, used until the user picks one here. */
  defaultDevice(): ExecutionProvider | null;
  roots(): string[];
  /** Providers this install offers (app.info); empty until known. */
  providers(): ExecutionProvider[];
  /** Chooses the model a preset names. */
  selectModel(id: string): void;
  /** Tells the project what to remember (it autosaves). */
  remember(settings: TrainSettingsView): void;
}

export class TrainingState {
  #presets = $state.raw<TrainPreset[]>([]);
  #presetId = $state.raw<string | null>(null);
  #settings = $state.raw<EditableSettings>(DEFAULT_SETTINGS);
  /** Settings the user (or a preset) set; the others follow the model and Settings screen. */
  #pinned = $state.raw<readonly (keyof EditableSettings)[]>([]);
  #out = $state.raw<string>('');
  #estimate = $state.raw<TrainEstimate | null>(null);
  #runs = $state.raw<RunTracker[]>([]);
  #activeRunId = $state.raw<string | null>(null);

  readonly loadingPresets = new Action();
  readonly estimating = new Action();
  readonly controlling = new Action();
  readonly loadingRuns = new Action();

  #unsubscribe: (() => void) | null = null;

  /** Stops following the back end's events. */
  dispose(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  constructor(
    private readonly api: ApiClient,
    private readonly context: TrainingContext,
  ) {}

  get presets(): TrainPreset[] {
    return this.#presets;
  }
  get presetId(): string | null {
    return this.#presetId;
  }
  /**
   * The settings as they will be sent (resolution and device follow the model and Settings; the
   * choice of text encoders is kept for SDXL models only, the others have one).
   */
  get settings(): EditableSettings {
    const s = this.#settings;
    return {
      ...s,
      resolution: this.#pinned.includes('resolution') ? s.resolution : this.context.modelResolution(),
      device: this.#pinned.includes('device') ? s.device : (this.context.defaultDevice() ?? s.device),
      textEncoders: this.hasTwoTextEncoders ? s.textEncoders : undefined,
    };
  }
  /** SDXL: text encoder training may train one of its two encoders. */
  get hasTwoTextEncoders(): boolean {
    return this.context.modelKind() === 'sdxl';
  }
  /** The output file as typed, or '' for the default. */
  get outInput(): string {
    return this.#out;
  }
  get defaultOut(): string | null {
    const folder = this.context.datasetFolder();
    if (!folder) return null;
    const name = `${basename(folder) || 'dataset'}-lora.safetensors`;
    const parent = dirname(folder);
    // Next to the dataset folder when that is still inside an opened folder, else inside it (the
    // dataset scan skips files that are not images). Both folders exist: the back end writes
    // only into existing folders.
    return this.context.roots().some((r) => isInside(parent, r)) ? joinPath(parent, name) : joinPath(folder, name);
  }
  get out(): string {
    return this.#out.trim() || this.defaultOut || '';
  }
  get estimate(): TrainEstimate | null {
    return this.#estimate;
  }
  get runs(): RunTracker[] {
    return this.#runs;
  }
  get activeRun(): RunTracker | null {
    return this.#runs.find((r) => r.runId === this.#activeRunId) ?? null;
  }

  /** What stops a start, in words; empty when the settings can be sent. */
  get problems(): string[] {
    const s = this.settings;
    const problems: string[] = [];
    if (!this.context.datasetFolder()) problems.push('Open a dataset folder on the Dataset screen first.');
    if (!this.out.toLowerCase().endsWith('.safetensors')) problems.push('The output file must end in .safetensors.');
    const whole = (name: string, value: number, min: number) => {
      if (!Number.isInteger(value) || value < min) problems.push(`${name} must be a whole number of at least ${min}.`);
    };
    whole('Rank', s.rank, 1);
    whole('Steps', s.steps, 1);
    whole('Batch size', s.batch, 1);
    whole('Gradient accumulation', s.gradAccum, 1);
    const stepsPerRun = s.stepsPerRun ?? 1;
    if (!Number.isInteger(stepsPerRun) || stepsPerRun < 1 || stepsPerRun > 64) problems.push('Steps per run must be a whole number from 1 to 64.');
    else if (stepsPerRun > 1 && (s.gradAccum > 1 || s.trainTextEncoder))
      problems.push('Steps per run above 1 works without gradient accumulation and text encoder training; set it to 1 for those.');
    whole('Warmup', s.warmupSteps, 0);
    whole('Seed', s.seed, 0);
    whole('Save every', s.saveEvery, 0);
    whole('Preview every', s.previewEvery, 0);
    const sampling = this.previewSampling;
    whole('Preview seed', sampling.seed, 0);
    whole('Preview quality (denoising steps)', sampling.steps, 1);
    if (!(sampling.guidance >= 0)) problems.push('Preview guidance must be a number of at least 0.');
    if (s.minSnrGamma !== null && !(s.minSnrGamma >= 0)) problems.push('Min-SNR gamma must be a number of at least 0, or empty.');
    if (s.maxGradNorm !== null && !(s.maxGradNorm >= 0)) problems.push('Max gradient norm must be a number of at least 0, or empty.');
    if (!(s.noiseOffset >= 0 && s.noiseOffset <= 1)) problems.push('Noise offset must be a number from 0 to 1.');
    const providers = this.context.providers();
    if (providers.length > 0 && !providers.includes(s.device))
      problems.push(`Device ${s.device} is not available here (this install offers ${providers.join(', ')}).`);
    if (!(s.lr > 0)) problems.push('Learning rate must be a number above 0.');
    if (!(s.alpha > 0)) problems.push('Alpha must be a number above 0.');
    if (!Number.isInteger(s.resolution) || s.resolution < 8 || s.resolution % 8 !== 0)
      problems.push('Resolution must be a multiple of 8.');
    return problems;
  }

  /** The preview prompts, one a line, as the user typed them. */
  get previewText(): string {
    return this.#settings.previews.map((p) => p.prompt).join('\n');
  }
  /** Seed, steps and guidance every preview prompt is sampled with. */
  get previewSampling(): { seed: number; steps: number; guidance: number } {
    const first = this.#settings.previews[0] ?? DEFAULT_SETTINGS.previews[0];
    return { seed: first.seed, steps: first.steps, guidance: first.guidance };
  }

  /** Lines stay as typed (blank ones too, so typing a newline works); the request drops blanks. */
  setPreviewText(text: string): void {
    const sampling = this.previewSampling;
    this.update({ previews: text.split('\n').map((prompt) => ({ prompt, ...sampling })) });
  }

  setPreviewSampling(patch: Partial<{ seed: number; steps: number; guidance: number }>): void {
    const sampling = { ...this.previewSampling, ...patch };
    const prompts = this.#settings.previews.length > 0 ? this.#settings.previews : [{ prompt: '' }];
    this.update({ previews: prompts.map((p) => ({ prompt: p.prompt, ...sampling })) });
  }

  /** The full settings for train.estimate and train.start. */
  get request(): TrainSettingsView {
    const settings = this.settings;
    return {
      ...settings,
      previews: settings.previews.filter((p) => p.prompt.trim() !== '').map((p) => ({ ...p, prompt: p.prompt.trim() })),
      images: this.context.datasetFolder() ?? '',
      model: this.context.modelId(),
      out: this.out,
    };
  }

  async load(): Promise<void> {
    if (!this.#unsubscribe) {
      const offEvent = this.api.on('train.event', (event) => this.#onEvent(event));
      const offRun = this.api.on('train.run', (run) => this.#onRun(run));
      this.#unsubscribe = () => {
        offEvent();
        offRun();
      };
    }
    await Promise.all([this.loadPresets(), this.refreshRuns()]);
  }

  async loadPresets(): Promise<void> {
    const presets = await this.loadingPresets.run(() => this.api.call('train.presets'));
    if (presets) this.#presets = presets;
  }

  async refreshRuns(): Promise<void> {
    const runs = await this.loadingRuns.run(() => this.api.call('train.runs'));
    if (runs) this.#setRuns(runs);
  }

  /** A preset's settings over the defaults (what the user changed before is replaced). */
  applyPreset(id: string): void {
    const preset = this.#presets.find((p) => p.id === id);
    if (!preset) return;
    const { images: _i, model, out, ...settings } = preset.settings;
    if (model) this.context.selectModel(model);
    this.#presetId = id;
    this.#settings = { ...DEFAULT_SETTINGS, ...settings };
    this.#pinned = Object.keys(settings) as (keyof EditableSettings)[];
    if (out) this.#out = out;
    this.#estimate = null;
    this.#remember();
  }

  update(patch: Partial<EditableSettings>): void {
    this.#settings = { ...this.settings, ...patch };
    const added = (Object.keys(patch) as (keyof EditableSettings)[]).filter((k) => !this.#pinned.includes(k));
    this.#pinned = [...this.#pinned, ...added];
    this.#remember();
  }

  setOut(path: string): void {
    this.#out = path;
    this.#remember();
  }

  #remember(): void {
    if (this.context.datasetFolder() && this.problems.length === 0) this.context.remember(this.request);
  }

  /** Restores what a saved project had. */
  restore(settings: TrainSettingsView): void {
    const { images: _i, model: _m, out, ...rest } = settings;
    this.#settings = { ...DEFAULT_SETTINGS, ...rest };
    this.#pinned = Object.keys(rest) as (keyof EditableSettings)[];
    this.#out = out;
  }

  async updateEstimate(): Promise<void> {
    if (this.problems.length > 0) {
      this.#estimate = null;
      return;
    }
    // No output file: the estimate does not depend on it, and one that cannot be written yet
    // (a folder still to be made) must not hide the estimate.
    const request = { ...this.request, out: '' };
    const estimate = await this.estimating.run(() => this.api.call('train.estimate', { settings: request }));
    if (estimate) this.#estimate = estimate;
  }

  /** Starts a run with the settings shown. */
  async start(): Promise<string | null> {
    const problems = this.problems;
    if (problems.length > 0) {
      this.controlling.fail(problems.join(' '));
      return null;
    }
    return this.#launch(this.request);
  }

  /** Continues a stopped or crashed run from its last checkpoint, with its own settings. */
  async continueRun(run: RunTracker): Promise<string | null> {
    const checkpoint = run.view.checkpoint;
    if (!checkpoint) {
      this.controlling.fail('This run wrote no checkpoint to continue from.');
      return null;
    }
    return this.#launch(run.view.settings, checkpoint);
  }

  async #launch(settings: TrainSettingsView, resume?: string): Promise<string | null> {
    const started = await this.controlling.run(() => this.api.call('train.start', { settings, resume }));
    if (!started) return null;
    // Events may have created the run already; otherwise show it as starting until they come.
    if (!this.#runs.some((r) => r.runId === started.runId)) {
      const placeholder: RunView = {
        runId: started.runId,
        settings,
        status: 'starting',
        step: 0,
        totalSteps: settings.steps,
        startedAt: nowIso(),
        losses: [],
        previews: [],
        resumedFrom: resume,
      };
      this.#runs = [...this.#runs, new RunTracker(placeholder)];
    }
    this.#activeRunId = started.runId;
    return started.runId;
  }

  async pause(): Promise<void> {
    const run = this.activeRun;
    if (!run) return;
    const done = await this.controlling.run(() => this.api.call('train.pause', { runId: run.runId }).then(() => true));
    if (done) run.assume('paused');
  }

  async resume(): Promise<void> {
    const run = this.activeRun;
    if (!run) return;
    const done = await this.controlling.run(() => this.api.call('train.resume', { runId: run.runId }).then(() => true));
    if (done) run.assume('running');
  }

  async stop(): Promise<void> {
    const run = this.activeRun;
    if (!run) return;
    await this.controlling.run(() => this.api.call('train.stop', { runId: run.runId }));
  }

  /** Which run the Live screen shows and the buttons control. */
  showRun(runId: string): void {
    this.#activeRunId = runId;
  }

  #setRuns(views: RunView[]): void {
    const known = this.#runs;
    this.#runs = views.map((view) => {
      const tracker = known.find((r) => r.runId === view.runId);
      if (!tracker) return new RunTracker(view);
      tracker.replace(view);
      return tracker;
    });
    if (!this.activeRun) {
      const live = this.#runs.find((r) => r.active);
      this.#activeRunId = (live ?? this.#runs.at(-1))?.runId ?? null;
    }
  }

  /** The back end's whole record of a run, sent after each status change. */
  #onRun(view: RunView): void {
    const tracker = this.#runs.find((r) => r.runId === view.runId);
    if (tracker) tracker.replace(view);
    else this.#runs = [...this.#runs, new RunTracker(view)];
    if (!this.activeRun) this.#activeRunId = view.runId;
  }

  #onEvent(event: TrainEvent): void {
    const run = this.#runs.find((r) => r.runId === event.runId);
    if (run) {
      run.apply(event);
      return;
    }
    // A run this page did not start (another window, or the CLI): fetch its whole record.
    void this.refreshRuns();
  }
}
