// The tasks worker from the main process's side: generation and merges run in one long-lived
// worker process (started on first use, again after it dies), answered by request id.
import { ApiError } from './errors';
import { describeExit, type SpawnWorker, type WorkerProcess, type WorkerTask } from '../worker/protocol';

export class TaskClient {
  private worker: WorkerProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(private readonly spawn: SpawnWorker) {}

  run<T>(task: WorkerTask): Promise<T> {
    const worker = this.ensureWorker();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.send({ type: 'task', id, task });
    });
  }

  shutdown(): void {
    this.worker?.kill();
  }

  /**
   * Ends the worker if no task is waiting on it, so what it holds goes back to the device (the last
   * Generator's sessions: on an H100, 6 GiB for SD1.5 and 17 GiB for SDXL) before a
   * training run needs the GPU; the next task starts a fresh worker. Returns whether it ended one.
   */
  releaseIfIdle(): boolean {
    const worker = this.worker;
    if (!worker || this.pending.size > 0) return false;
    this.worker = undefined;
    worker.kill();
    return true;
  }

  private ensureWorker(): WorkerProcess {
    if (this.worker) return this.worker;
    const worker = this.spawn();
    worker.onMessage((message) => {
      if (message.type !== 'task-result' && message.type !== 'task-error') return;
      const waiting = this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id);
      if (message.type === 'task-result') waiting.resolve(message.result);
      else waiting.reject(new ApiError('task-failed', message.message));
    });
    worker.onExit((exit) => {
      if (this.worker !== worker) return; // a released idle worker: nothing was waiting on it
      this.worker = undefined;
      for (const waiting of this.pending.values())
        waiting.reject(new ApiError('worker-crashed', `The studio's worker process ended unexpectedly (${describeExit(exit)}); try again.`));
      this.pending.clear();
    });
    this.worker = worker;
    return worker;
  }
}
