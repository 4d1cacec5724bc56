// The one typed API between the studio's front end and its back end. Electron IPC, the headless
// WebSocket server and the CLI all serve these same methods; everything outside src-main imports
// this file type-only (the lint layers allow nothing else from src-main in the renderer), so it
// declares types only.

/** An execution provider onnxruntime can run on. */
export type ExecutionProvider = 'cuda' | 'dml' | 'webgpu' | 'cpu';

export interface AppInfo {
  name: string;
  version: string;
  /** `process.versions.node` of the process that runs the engine. */
  nodeVersion: string;
  platform: string;
  arch: string;
  /** Providers the installed onnxruntime-node offers, best first; always ends with 'cpu'. */
  providers: ExecutionProvider[];
  /** How the front end is connected: the Electron app or the headless server. */
  host: 'electron' | 'server' | 'cli';
}

export interface FolderEntry {
  name: string;
  kind: 'file' | 'folder';
  /** Bytes, for files; 0 for folders. */
  size: number;
}

export interface FolderListing {
  /** Absolute, symlink-free path of the listed folder. */
  path: string;
  entries: FolderEntry[];
}

// ---------------------------------------------------------------- dataset

export type ProblemSeverity = 'error' | 'warning' | 'info';

export interface ProblemView {
  code: string;
  severity: ProblemSeverity;
  message: string;
}

export interface DatasetItemView {
  relativePath: string;
  width: number | null;
  height: number | null;
  repeats: number;
  caption: string | null;
  /** Token count of the caption and whether CLIP's 75-token window truncates it. */
  tokens: number;
  truncated: boolean;
  problems: ProblemView[];
  excluded: boolean;
  bucket: { width: number; height: number } | null;
}

export interface DatasetView {
  folder: string;
  resolution: number;
  items: DatasetItemView[];
  orphanCaptions: string[];
  summary: { images: number; trainable: number; excluded: number; errors: number; warnings: number; samplesPerEpoch: number };
  buckets: { width: number; height: number; images: number }[];
  tagFrequency: { tag: string; count: number }[];
}

export type CaptionOperationView =
  | { kind: 'prepend'; text: string }
  | { kind: 'append'; text: string }
  | { kind: 'replace'; find: string; replace: string; caseSensitive?: boolean }
  | { kind: 'remove-tag'; tag: string }
  | { kind: 'shuffle'; keepFirst: number; seed: number };

// ---------------------------------------------------------------- models

export interface ModelView {
  /** Folder or file path; 'embedded' for the embedded tiny model. */
  id: string;
  name: string;
  kind: 'sd1' | 'sd2' | 'sdxl';
  source: 'embedded' | 'folder' | 'single-file' | 'download';
  predictionType: string;
}

export interface KnownModel {
  name: string;
  url: string;
  sha256?: string;
  sizeBytes?: number;
  kind: 'sd1' | 'sd2' | 'sdxl';
}

export interface DownloadProgressEvent {
  downloadId: string;
  url: string;
  receivedBytes: number;
  totalBytes: number | null;
  done: boolean;
  error?: string;
  path?: string;
}

// ---------------------------------------------------------------- training

/** The settings a run is started with (the engine's TrainSettingsInput, minus what the studio fills in). */
export interface TrainSettingsView {
  images: string;
  model: string;
  out: string;
  rank: number;
  alpha: number;
  steps: number;
  lr: number;
  batch: number;
  resolution: number;
  seed: number;
  device: ExecutionProvider;
  saveEvery: number;
  targets: 'attention' | 'transformer' | 'transformer+conv';
  lrSchedule: 'constant' | 'constant_with_warmup' | 'cosine' | 'linear';
  warmupSteps: number;
  gradAccum: number;
  minSnrGamma: number | null;
  noiseOffset: number;
  maxGradNorm: number | null;
  trigger: string | null;
  /** Also train a LoRA on the CLIP text encoder (SDXL: both of them, or one: see textEncoders); the trained encoders run every step. */
  trainTextEncoder?: boolean;
  /**
   * SDXL: which text encoders trainTextEncoder trains: 'all' (default), or only '1' (text_encoder)
   * or '2' (text_encoder_2). Used only while trainTextEncoder is on; '2' fails on SD 1.x/2.x models.
   */
  textEncoders?: 'all' | '1' | '2';
  /** Recompute the UNet blocks' activations in the backward: less GPU memory, about 10% slower, same result. */
  gradientCheckpointing?: boolean;
  /** Optimizer steps per GPU run (default 1): faster on GPUs, more memory, same result; UNet-only training without accumulation. */
  stepsPerRun?: number;
  /** Preview prompts sampled every `previewEvery` steps and at the start (baseline). */
  previews: { prompt: string; seed: number; steps: number; guidance: number }[];
  previewEvery: number;
}

export interface TrainPreset {
  id: string;
  name: string;
  description: string;
  settings: Partial<TrainSettingsView>;
}

export interface TrainEstimate {
  steps: number;
  samplesPerEpoch: number;
  epochs: number;
  seconds: number | null;
  peakMemoryGiB: number | null;
  device: ExecutionProvider;
  notes: string[];
}

export type RunStatus = 'starting' | 'running' | 'paused' | 'stopped' | 'finished' | 'failed' | 'crashed';

export interface LossPoint {
  step: number;
  loss: number;
  smoothed: number;
  lr: number;
}

export interface PreviewImage {
  step: number;
  prompt: string;
  seed: number;
  /** PNG as a data: URL. */
  image: string;
  seconds: number;
}

export interface RunView {
  runId: string;
  settings: TrainSettingsView;
  status: RunStatus;
  message?: string;
  step: number;
  totalSteps: number;
  startedAt: string;
  losses: LossPoint[];
  previews: PreviewImage[];
  /** The last checkpoint written (absent until one is): what `train.start` with `resume` continues from. */
  checkpoint?: string;
  /** The LoRA file, once written (run finished or stopped). */
  out?: string;
  /** Step of `checkpoint`. */
  checkpointStep?: number;
  /** The checkpoint this run continued from (`train.start` with `resume`). */
  resumedFrom?: string;
  /** Latest speed and time left while it runs. */
  itPerSec?: number;
  etaSeconds?: number;
  finishedAt?: string;
}

export type TrainEvent =
  /** Status changes, and progress messages while preparing (status 'starting') or saving. */
  | { type: 'status'; runId: string; status: RunStatus; message?: string; step?: number; out?: string; checkpoint?: string }
  | { type: 'step'; runId: string; point: LossPoint; totalSteps: number; itPerSec: number; etaSeconds: number; memoryGiB: number | null }
  | { type: 'preview'; runId: string; preview: PreviewImage }
  | { type: 'checkpoint'; runId: string; step: number; path: string };

// ---------------------------------------------------------------- generation and export

export interface GenerateRequestView {
  model: string;
  prompt: string;
  negativePrompt: string;
  seed: number;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  sampler: 'DDIM' | 'Euler' | 'Euler a' | 'DPM++ 2M' | 'DPM++ 2M Karras';
  clipSkip: number;
  loras: { path: string; strength: number }[];
}

export interface GeneratedImageView {
  seed: number;
  /** PNG with A1111-style parameters, as a data: URL. */
  image: string;
  parameters: string;
}

export interface ExportRequestView {
  /** A trained LoRA file (a run's output or any LoRA file). */
  lora: string;
  format: 'kohya' | 'diffusers';
  precision: 'fp16' | 'fp32';
  out: string;
}

// ---------------------------------------------------------------- project and settings

export interface ProjectView {
  path: string | null;
  datasetFolder: string | null;
  model: string;
  settings: TrainSettingsView | null;
  runs: RunView[];
}

export interface StudioSettings {
  device: ExecutionProvider;
  modelsDir: string;
  cacheDir: string;
}

/** Request/response methods: `req` is what the caller sends, `res` what it gets back. */
export interface ApiMethods {
  'app.info': { req: void; res: AppInfo };
  /** Folders the user opened; every path the API touches must lie inside one of them. */
  'fs.roots': { req: void; res: { roots: string[] } };
  /** Ask the user for a folder (native dialog; only where the host has one) and open it. */
  'fs.pickFolder': { req: void; res: { path: string | null } };
  'fs.listFolder': { req: { path: string }; res: FolderListing };

  'dataset.open': { req: { folder: string; resolution?: number }; res: DatasetView };
  /** A cached thumbnail as a data: URL. */
  'dataset.thumbnail': { req: { folder: string; relativePath: string; size?: number }; res: { image: string } };
  'dataset.saveCaption': { req: { folder: string; relativePath: string; caption: string }; res: DatasetItemView };
  'dataset.bulkCaption': { req: { folder: string; operation: CaptionOperationView; relativePaths?: string[] }; res: { changed: string[]; dataset: DatasetView } };

  'model.list': { req: void; res: { models: ModelView[]; known: KnownModel[] } };
  'model.open': { req: { path: string }; res: ModelView };
  'model.download': { req: { url: string; sha256?: string; name: string }; res: { downloadId: string } };

  'train.presets': { req: void; res: TrainPreset[] };
  'train.estimate': { req: { settings: TrainSettingsView }; res: TrainEstimate };
  /** `resume`: a checkpoint (a RunView's `checkpoint`) to continue from; settings.steps is the new total. */
  'train.start': { req: { settings: TrainSettingsView; resume?: string }; res: { runId: string } };
  'train.pause': { req: { runId: string }; res: void };
  'train.resume': { req: { runId: string }; res: void };
  'train.stop': { req: { runId: string }; res: void };
  'train.runs': { req: void; res: RunView[] };

  'generate.run': { req: GenerateRequestView; res: { images: GeneratedImageView[] } };
  'export.lora': { req: ExportRequestView; res: { path: string; metadata: Record<string, string> } };
  'export.metadata': { req: { lora: string }; res: { metadata: Record<string, string>; modules: number; format: string } };
  'export.merge': { req: { model: string; lora: string; strength: number; out: string }; res: { path: string } };

  'project.get': { req: void; res: ProjectView };
  'project.open': { req: { path: string }; res: ProjectView };
  'project.save': { req: { path?: string }; res: ProjectView };
  /** Changes what the project remembers (it autosaves); runs change only through train.*. */
  'project.update': { req: Partial<Pick<ProjectView, 'datasetFolder' | 'model' | 'settings'>>; res: ProjectView };
  'settings.get': { req: void; res: StudioSettings };
  'settings.set': { req: Partial<StudioSettings>; res: StudioSettings };
}

/** Events the back end pushes to every connected front end. */
export interface ApiEvents {
  'fs.rootsChanged': { roots: string[] };
  'train.event': TrainEvent;
  /** The whole run after each status change (not after every step: follow 'train.event' for those). */
  'train.run': RunView;
  'model.download': DownloadProgressEvent;
  'project.changed': ProjectView;
}

export type MethodName = keyof ApiMethods;
export type EventName = keyof ApiEvents;
export type MethodRequest<M extends MethodName> = ApiMethods[M]['req'];
export type MethodResponse<M extends MethodName> = ApiMethods[M]['res'];
export type EventPayload<E extends EventName> = ApiEvents[E];

/** What the caller learns about a failed call (same shape over every transport). */
export interface ApiErrorInfo {
  message: string;
  /** Machine-readable reason, e.g. 'path-outside-roots', 'unknown-method', 'not-found'. */
  code: string;
}

/** A call's outcome as it travels over a transport. */
export type ApiOutcome<T> = { result: T } | { error: ApiErrorInfo };

/** WebSocket frames: requests from the page, responses and pushed events from the server. */
export interface WireRequest {
  id: number;
  method: string;
  params?: unknown;
}
export type WireResponse = { id: number } & ApiOutcome<unknown>;
export interface WireEvent {
  event: string;
  payload: unknown;
}

/** The bridge the Electron preload exposes to the page as `window.loraStudio`. */
export interface LoraStudioBridge {
  invoke<M extends MethodName>(method: M, req: MethodRequest<M>): Promise<ApiOutcome<MethodResponse<M>>>;
  /** Subscribes to one event; returns the unsubscribe function. */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
}

// Wire constants as literal types, so this file stays types-only and both sides still agree:
// `const path: SocketPath = '/api'` fails to compile if either side changes.
/** Name of the global the preload bridge is exposed as. */
export type BridgeGlobal = 'loraStudio';
/** Query parameter that carries the headless server's access token. */
export type TokenParam = 'token';
/** Path of the headless server's WebSocket endpoint. */
export type SocketPath = '/api';
/** Electron IPC channel for calls: one channel, the method travels in the message. */
export type InvokeChannel = 'lora-studio:invoke';
/** Electron IPC channel for pushed events. */
export type EventChannel = 'lora-studio:event';
