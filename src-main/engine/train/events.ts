// What a training run tells the outside world, as one typed stream: the CLI draws its progress
// bar from it, the studio worker forwards each event over IPC, tests read losses from it.
// Listeners run synchronously inside the training loop, so keep them quick.
//
//   const events = new TrainEvents(); events.on('step', (e) => ...); -> unsubscribe function
//   events.emit('step', {...})
//   for await (const event of events.stream()) ...   every event as { type, ...payload }, ends after done/error
import type { DatasetProblem } from '../data';

export interface TrainStepEvent {
  /** Optimizer steps done (1-based). */
  step: number;
  totalSteps: number;
  /** Mean loss over the step's micro-batches. */
  loss: number;
  /** Exponential moving average of the loss (0.9 decay, bias-corrected). */
  smoothedLoss: number;
  learningRate: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Optimizer steps per second over the recent steps. */
  stepsPerSecond: number;
  /** Seconds left at that rate. */
  etaSeconds: number;
  /** Process resident set size, bytes. */
  rssBytes: number;
  epoch: number;
}

export interface TrainEventMap {
  /** Before training: what the run will do. */
  start: { totalSteps: number; startStep: number; images: number; samplesPerEpoch: number; buckets: string[]; provider: string; resumedFrom: string | null };
  /** Preparation stages (model, dataset, cache, graphs) so a UI can show why nothing moves yet. */
  phase: { phase: 'model' | 'dataset' | 'cache' | 'graph' | 'train' | 'save'; message: string };
  /** Images that are left out (unreadable, not an image, no bucket) and other dataset notes. */
  problem: DatasetProblem;
  /** Cache work: how many latents/embeddings were reused and how many computed. */
  cache: { hits: number; misses: number; dir: string };
  step: TrainStepEvent;
  checkpoint: { step: number; path: string; reason: 'interval' | 'stop' | 'end' };
  /** Training finished (all steps, or stopped early); `out` is the written LoRA. */
  done: { step: number; totalSteps: number; out: string; checkpoint: string; stopped: boolean; seconds: number; finalLoss: number | null };
  error: { message: string };
}

export type TrainEventName = keyof TrainEventMap;
export type TrainEvent = { [K in TrainEventName]: { type: K } & TrainEventMap[K] }[TrainEventName];

type Listener<K extends TrainEventName> = (payload: TrainEventMap[K]) => void;

export class TrainEvents {
  private readonly listeners = new Map<TrainEventName, Set<Listener<TrainEventName>>>();
  private readonly anyListeners = new Set<(event: TrainEvent) => void>();

  on<K extends TrainEventName>(type: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<TrainEventName>);
    return () => set.delete(listener as Listener<TrainEventName>);
  }

  /** Every event, tagged with its type (what the worker forwards over IPC). */
  onAny(listener: (event: TrainEvent) => void): () => void {
    this.anyListeners.add(listener);
    return () => this.anyListeners.delete(listener);
  }

  emit<K extends TrainEventName>(type: K, payload: TrainEventMap[K]): void {
    for (const l of this.listeners.get(type) ?? []) l(payload);
    if (this.anyListeners.size > 0) {
      const event = { type, ...payload } as TrainEvent;
      for (const l of this.anyListeners) l(event);
    }
  }

  /** An async iterator over every event from now on; it ends after `done` or `error`. */
  stream(): AsyncIterableIterator<TrainEvent> {
    const queue: TrainEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const off = this.onAny((event) => {
      queue.push(event);
      if (event.type === 'done' || event.type === 'error') finished = true;
      wake?.();
    });
    const iterator: AsyncIterableIterator<TrainEvent> = {
      async next() {
        for (;;) {
          const event = queue.shift();
          if (event) return { value: event, done: false };
          if (finished) {
            off();
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      },
      async return() {
        off();
        finished = true;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }
}
