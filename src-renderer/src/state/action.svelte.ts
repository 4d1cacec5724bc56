// One asynchronous user action (open, save, start…): whether it is running and how it last failed.
// Screens show `busy` on their button and `error` in an alert; the state classes call `run`.
import { describeError } from '../lib/errors';

export class Action {
  #busy = $state.raw(false);
  #error = $state.raw<string | null>(null);

  get busy(): boolean {
    return this.#busy;
  }
  get error(): string | null {
    return this.#error;
  }

  /** Runs `work`, recording its failure instead of throwing; returns undefined when it failed. */
  async run<T>(work: () => Promise<T>): Promise<T | undefined> {
    this.#busy = true;
    this.#error = null;
    try {
      return await work();
    } catch (err) {
      this.#error = describeError(err);
      return undefined;
    } finally {
      this.#busy = false;
    }
  }

  /** Records a failure found before calling the back end (bad input). */
  fail(message: string): void {
    this.#error = message;
  }

  clear(): void {
    this.#error = null;
  }
}
