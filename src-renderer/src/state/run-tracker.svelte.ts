// One training run as the Live screen follows it. Loss points arrive once per step and a run can
// have tens of thousands, so they go into plain arrays that grow in place (the chart reads them
// directly) and one `version` counter tells Svelte that they changed; the rest is replaced whole.
import type { LossPoint, RunStatus, RunView, TrainEvent } from '../../../src-main/api/contract';

export interface LiveStats {
  itPerSec: number;
  etaSeconds: number;
  memoryGiB: number | null;
}

/** Statuses after which a run does nothing more. */
export const FINAL_STATUSES: readonly RunStatus[] = ['stopped', 'finished', 'failed', 'crashed'];

export class RunTracker {
  #view = $state.raw<Omit<RunView, 'losses'>>() as Omit<RunView, 'losses'>;
  #version = $state.raw(0);
  #stats = $state.raw<LiveStats | null>(null);

  /** Column arrays for the chart: step, raw loss, smoothed loss, learning rate. */
  readonly steps: number[] = [];
  readonly loss: number[] = [];
  readonly smoothed: number[] = [];
  readonly lr: number[] = [];

  constructor(view: RunView) {
    this.replace(view);
  }

  get runId(): string {
    return this.#view.runId;
  }
  get view(): Omit<RunView, 'losses'> {
    return this.#view;
  }
  get status(): RunStatus {
    return this.#view.status;
  }
  get active(): boolean {
    return !FINAL_STATUSES.includes(this.#view.status);
  }
  /** Bumps on every new loss point; read it to redraw when the arrays grew. */
  get version(): number {
    return this.#version;
  }
  get stats(): LiveStats | null {
    return this.#stats;
  }
  get lastPoint(): LossPoint | null {
    const n = this.steps.length;
    return n === 0 ? null : { step: this.steps[n - 1], loss: this.loss[n - 1], smoothed: this.smoothed[n - 1], lr: this.lr[n - 1] };
  }

  /** Takes the back end's full record of the run (train.runs). */
  replace(view: RunView): void {
    const { losses, ...rest } = view;
    this.#view = rest;
    if (view.itPerSec !== undefined && view.etaSeconds !== undefined)
      this.#stats = { itPerSec: view.itPerSec, etaSeconds: view.etaSeconds, memoryGiB: this.#stats?.memoryGiB ?? null };
    this.steps.length = this.loss.length = this.smoothed.length = this.lr.length = 0;
    for (const p of losses) this.#push(p);
    this.#version++;
  }

  apply(event: TrainEvent): void {
    switch (event.type) {
      case 'status': {
        const { type: _t, runId: _r, ...change } = event;
        // Only the fields the event carries: a status without `out` keeps the known one.
        const defined = Object.fromEntries(Object.entries(change).filter(([, v]) => v !== undefined));
        this.#view = { ...this.#view, ...defined, message: event.message };
        break;
      }
      case 'step':
        this.#push(event.point);
        this.#version++;
        this.#view = { ...this.#view, step: event.point.step, totalSteps: event.totalSteps };
        this.#stats = { itPerSec: event.itPerSec, etaSeconds: event.etaSeconds, memoryGiB: event.memoryGiB };
        break;
      case 'preview':
        this.#view = { ...this.#view, previews: [...this.#view.previews, event.preview] };
        break;
      case 'checkpoint':
        this.#view = { ...this.#view, checkpoint: event.path, checkpointStep: event.step };
        break;
    }
  }

  /** Marks a pause or resume the back end accepted, unless the run ended meanwhile. */
  assume(status: RunStatus): void {
    if (this.active) this.#view = { ...this.#view, status };
  }

  #push(p: LossPoint): void {
    // A resumed run may resend steps it already reported: keep the step axis increasing.
    const last = this.steps.length - 1;
    if (last >= 0 && p.step <= this.steps[last]) {
      let keep = last;
      while (keep >= 0 && this.steps[keep] >= p.step) keep--;
      this.steps.length = this.loss.length = this.smoothed.length = this.lr.length = keep + 1;
    }
    this.steps.push(p.step);
    this.loss.push(p.loss);
    this.smoothed.push(p.smoothed);
    this.lr.push(p.lr);
  }
}
