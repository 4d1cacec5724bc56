// Runs keyed jobs a few at a time, each key once until reset: thumbnails for a big folder are
// asked for as they scroll into view, and the back end should not get hundreds at once.
export class TaskQueue {
  private readonly requested = new Set<string>();
  private waiting: { key: string; job: () => Promise<void> }[] = [];
  private running = 0;

  constructor(private readonly concurrency: number) {}

  /** Queues `job` unless `key` was queued before (since the last reset). */
  add(key: string, job: () => Promise<void>): void {
    if (this.requested.has(key)) return;
    this.requested.add(key);
    this.waiting.push({ key, job });
    this.pump();
  }

  /** Forgets queued keys and drops jobs not yet started (a different folder was opened). */
  reset(): void {
    this.requested.clear();
    this.waiting = [];
  }

  private pump(): void {
    while (this.running < this.concurrency && this.waiting.length > 0) {
      const { job } = this.waiting.shift()!;
      this.running++;
      job()
        .catch(() => {}) // jobs record their own failures
        .finally(() => {
          this.running--;
          this.pump();
        });
    }
  }
}
