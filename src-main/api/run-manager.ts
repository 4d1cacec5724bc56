// Training runs as the studio sees them: each run trains in its own worker process (a crash or a
// long step never blocks the API), streams contract TrainEvents that update its RunView, and is
// marked 'crashed' when the process ends without saying it is done, with the exit and the last
// checkpoint in the message. One run trains at a time (they would fight over the device).
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { RunView, TrainEvent, TrainSettingsView } from './contract';
import { ApiError } from './errors';
import type { ApiEventBus } from './events';
import type { TrainSettings } from '../engine/train/settings';
import { describeExit, type SpawnWorker, type WorkerExit, type WorkerProcess } from '../worker/protocol';

const ACTIVE: ReadonlySet<RunView['status']> = new Set(['starting', 'running', 'paused']);

interface Run {
  view: RunView;
  worker: WorkerProcess | undefined;
  /** The worker said the run is over (finished, stopped, failed): its exit is expected. */
  ended: boolean;
}

export type RunChange = 'status' | 'progress';

export class RunManager {
  private readonly runs = new Map<string, Run>();

  constructor(
    private readonly spawn: SpawnWorker,
    private readonly events: ApiEventBus,
    private readonly onChange: (change: RunChange) => void,
  ) {}

  list(): RunView[] {
    return [...this.runs.values()].map((r) => r.view);
  }

  get(runId: string): RunView {
    return this.run(runId).view;
  }

  /** The worker's process id (tests kill it to prove a crash is survivable). */
  workerPid(runId: string): number | undefined {
    return this.run(runId).worker?.pid;
  }

  /** Runs from a saved project; ones that were training when it was saved did not finish. */
  restore(views: RunView[]): void {
    for (const r of this.runs.values()) if (r.worker && !r.ended) throw new ApiError('busy', 'A run is training: stop it before opening another project.');
    this.runs.clear();
    for (const view of views) {
      if (ACTIVE.has(view.status)) {
        view.status = 'crashed';
        view.message = `The studio closed while this run was training (step ${view.step}). ${checkpointAdvice(view)}`;
      }
      this.runs.set(view.runId, { view, worker: undefined, ended: true });
    }
  }

  start(settings: TrainSettingsView, engine: TrainSettings, resume?: string): string {
    const busy = [...this.runs.values()].find((r) => ACTIVE.has(r.view.status));
    if (busy) throw new ApiError('busy', `Run ${busy.view.runId} is still ${busy.view.status}: stop it first.`);
    const runId = `run-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(3).toString('hex')}`;
    const view: RunView = {
      runId,
      settings,
      status: 'starting',
      step: 0,
      totalSteps: engine.steps,
      startedAt: new Date().toISOString(),
      losses: [],
      previews: [],
    };
    if (resume) {
      view.resumedFrom = resume;
      // The curve continues: the losses the run that wrote this checkpoint had up to its step.
      const parent = [...this.runs.values()].reverse().find((r) => r.view.checkpoint === resume);
      if (parent) {
        const upTo = parent.view.checkpointStep ?? parent.view.step;
        view.losses = parent.view.losses.filter((p) => p.step <= upTo);
        view.step = upTo;
      }
    }
    const worker = this.spawn();
    const run: Run = { view, worker, ended: false };
    this.runs.set(runId, run);
    worker.onMessage((message) => {
      if (message.type === 'train') this.apply(run, message.event);
    });
    worker.onExit((exit) => this.exited(run, exit));
    worker.send({ type: 'train', job: { runId, settings: engine, previews: settings.previews, previewEvery: settings.previewEvery } });
    this.changed(run, 'status');
    return runId;
  }

  pause(runId: string): void {
    const run = this.active(runId, ['starting', 'running']);
    run.worker!.send({ type: 'pause' });
  }

  resume(runId: string): void {
    const run = this.active(runId, ['paused', 'running', 'starting']);
    run.worker!.send({ type: 'resume' });
  }

  stop(runId: string): void {
    const run = this.active(runId, ['starting', 'running', 'paused']);
    run.worker!.send({ type: 'stop' });
  }

  /** Ends every worker now (the studio is closing). */
  shutdown(): void {
    for (const run of this.runs.values()) run.worker?.kill();
  }

  private run(runId: unknown): Run {
    const run = typeof runId === 'string' ? this.runs.get(runId) : undefined;
    if (!run) throw new ApiError('not-found', `No training run ${JSON.stringify(runId)}.`);
    return run;
  }

  private active(runId: unknown, allowed: RunView['status'][]): Run {
    const run = this.run(runId);
    if (!allowed.includes(run.view.status) || !run.worker || run.ended)
      throw new ApiError('not-running', `Run ${run.view.runId} is ${run.view.status}.`);
    return run;
  }

  private apply(run: Run, event: TrainEvent): void {
    const view = run.view;
    if (event.runId !== view.runId) return;
    switch (event.type) {
      case 'status': {
        view.status = event.status;
        if (event.message !== undefined) view.message = event.message;
        if (event.step !== undefined) view.step = event.step;
        if (event.out !== undefined) view.out = event.out;
        if (event.checkpoint !== undefined) {
          view.checkpoint = event.checkpoint;
          view.checkpointStep = event.step ?? view.step;
        }
        if (!ACTIVE.has(event.status)) {
          run.ended = true;
          view.finishedAt = new Date().toISOString();
          view.itPerSec = undefined;
          view.etaSeconds = undefined;
          run.worker?.send({ type: 'exit' });
        }
        this.events.emit('train.event', event);
        this.changed(run, 'status');
        return;
      }
      case 'step':
        view.step = event.point.step;
        view.totalSteps = event.totalSteps;
        view.losses.push(event.point);
        view.itPerSec = event.itPerSec;
        view.etaSeconds = event.etaSeconds;
        break;
      case 'preview':
        view.previews.push(event.preview);
        break;
      case 'checkpoint':
        view.checkpoint = event.path;
        view.checkpointStep = event.step;
        break;
    }
    this.events.emit('train.event', event);
    this.changed(run, event.type === 'checkpoint' ? 'status' : 'progress');
  }

  private exited(run: Run, exit: WorkerExit): void {
    run.worker = undefined;
    if (run.ended) return;
    run.ended = true;
    const view = run.view;
    view.status = 'crashed';
    view.finishedAt = new Date().toISOString();
    view.itPerSec = undefined;
    view.etaSeconds = undefined;
    view.message = `The training process ended unexpectedly (${describeExit(exit)}) at step ${view.step}. ${checkpointAdvice(view)}`;
    this.events.emit('train.event', { type: 'status', runId: view.runId, status: 'crashed', message: view.message, step: view.step, checkpoint: view.checkpoint });
    this.changed(run, 'status');
  }

  private changed(run: Run, change: RunChange): void {
    if (change === 'status') this.events.emit('train.run', run.view);
    this.onChange(change);
  }
}

function checkpointAdvice(view: RunView): string {
  if (view.checkpoint && existsSync(view.checkpoint))
    return `The last checkpoint (step ${view.checkpointStep ?? '?'}) is ${view.checkpoint}: start training with it as "resume" to continue from there.`;
  return 'No checkpoint was written yet (set "save every" to keep one during the run).';
}
