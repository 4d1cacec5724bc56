// The messages between the studio's main process (src-main/api/run-manager.ts, task-worker.ts)
// and a worker process (entry.ts). A worker has one role, set by its first message:
//  - 'train': one training run; the worker streams contract TrainEvents and obeys pause / resume / stop;
//  - 'tasks': a long-lived helper for generation and merges (heavy work the main process must not do),
//    answering each request by id.
// Messages are plain JSON-safe objects: they travel over Node's IPC (child_process.fork) in the
// headless server and over Electron's utilityProcess port in the app.
import type { ExecutionProvider, GenerateRequestView, TrainEvent } from '../api/contract';
import type { TrainSettings } from '../engine/train/settings';

export interface PreviewPrompt {
  prompt: string;
  seed: number;
  steps: number;
  guidance: number;
}

export interface TrainJob {
  runId: string;
  /** Resolved engine settings (absolute paths, defaults filled). */
  settings: TrainSettings;
  previews: PreviewPrompt[];
  /** Sample the prompts every N steps (0 = never), and once before training (the baseline, step 0). */
  previewEvery: number;
}

/** A studio generate request, resolved: the model path (undefined = embedded), folders and device. */
export interface GenerateTask extends Omit<GenerateRequestView, 'model'> {
  kind: 'generate';
  /** Model folder or single file; undefined = the embedded tiny model. */
  model: string | undefined;
  modelsDir: string;
  /** The graphs' model files go under `<cacheDir>/graphs` (they reference the checkpoint in place). */
  cacheDir: string;
  device: ExecutionProvider;
}

export interface GenerateTaskResult {
  images: { seed: number; png: string; parameters: string }[];
}

export interface MergeTask {
  kind: 'merge';
  model: string | undefined;
  modelsDir: string;
  lora: string;
  strength: number;
  out: string;
}

export type WorkerTask = GenerateTask | MergeTask;

export type ToWorker =
  | { type: 'train'; job: TrainJob }
  | { type: 'pause' }
  | { type: 'resume' }
  | { type: 'stop' }
  | { type: 'task'; id: number; task: WorkerTask }
  /** Leave now (the parent has everything it needs). */
  | { type: 'exit' };

export type FromWorker =
  | { type: 'ready'; pid: number }
  | { type: 'train'; event: TrainEvent }
  | { type: 'task-result'; id: number; result: unknown }
  | { type: 'task-error'; id: number; message: string };

/** How the worker ended, as the parent saw it. */
export interface WorkerExit {
  code: number | null;
  signal: string | null;
}

/** A running worker process, whatever started it (child_process.fork or Electron's utilityProcess). */
export interface WorkerProcess {
  readonly pid: number | undefined;
  send(message: ToWorker): void;
  onMessage(listener: (message: FromWorker) => void): void;
  onExit(listener: (exit: WorkerExit) => void): void;
  /** Ends the process at once (SIGKILL where there are signals). */
  kill(): void;
}

/** Starts a fresh worker process; the host (server or Electron app) decides how. */
export type SpawnWorker = () => WorkerProcess;

/** "exit code 1" / "signal SIGKILL", for messages. */
export function describeExit(exit: WorkerExit): string {
  if (exit.signal) return `signal ${exit.signal}`;
  return `exit code ${exit.code ?? 'unknown'}`;
}
