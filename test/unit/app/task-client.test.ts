// The tasks worker's client: an idle worker is ended before a GPU training run (what it holds goes
// back to the device), a busy one is left alone, and a released worker's exit fails no later task.
// The worker processes here are in-memory stand-ins that answer each task on demand.
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../../src-main/api/errors';
import { TaskClient } from '../../../src-main/api/task-client';
import type { FromWorker, ToWorker, WorkerExit, WorkerProcess, WorkerTask } from '../../../src-main/worker/protocol';

class StandInWorker implements WorkerProcess {
  readonly pid = undefined;
  killed = false;
  readonly received: ToWorker[] = [];
  private readonly messageListeners: ((m: FromWorker) => void)[] = [];
  private readonly exitListeners: ((e: WorkerExit) => void)[] = [];
  send(message: ToWorker): void {
    this.received.push(message);
  }
  onMessage(listener: (m: FromWorker) => void): void {
    this.messageListeners.push(listener);
  }
  onExit(listener: (e: WorkerExit) => void): void {
    this.exitListeners.push(listener);
  }
  kill(): void {
    this.killed = true;
    for (const l of this.exitListeners) l({ code: null, signal: 'SIGKILL' });
  }
  /** Answers the task with this id. */
  answer(id: number, result: unknown): void {
    for (const l of this.messageListeners) l({ type: 'task-result', id, result });
  }
}

const merge: WorkerTask = { kind: 'merge', model: undefined, modelsDir: '/models', lora: '/a.safetensors', strength: 1, out: '/b.safetensors' };
const lastId = (w: StandInWorker): number => (w.received.at(-1) as { id: number }).id;

describe('TaskClient', () => {
  it('ends an idle worker, keeps a busy one, and starts a fresh worker for the next task', async () => {
    const spawned: StandInWorker[] = [];
    const client = new TaskClient(() => {
      const w = new StandInWorker();
      spawned.push(w);
      return w;
    });
    expect(client.releaseIfIdle()).toBe(false); // nothing started yet

    const first = client.run<string>(merge);
    expect(client.releaseIfIdle()).toBe(false); // a task is waiting on it
    expect(spawned[0]!.killed).toBe(false);
    spawned[0]!.answer(lastId(spawned[0]!), 'merged');
    await expect(first).resolves.toBe('merged');

    expect(client.releaseIfIdle()).toBe(true);
    expect(spawned[0]!.killed).toBe(true);

    const second = client.run<string>(merge);
    expect(spawned).toHaveLength(2);
    spawned[1]!.answer(lastId(spawned[1]!), 'again');
    await expect(second).resolves.toBe('again');
  });

  it('fails the waiting tasks when the current worker dies, not when a released one exits', async () => {
    let exitOld: (() => void) | undefined;
    const spawned: StandInWorker[] = [];
    const client = new TaskClient(() => {
      const w = new StandInWorker();
      // The first worker's exit is delivered late, after the next worker took a task.
      if (spawned.length === 0) {
        const kill = w.kill.bind(w);
        w.kill = () => {
          w.killed = true;
          exitOld = kill;
        };
      }
      spawned.push(w);
      return w;
    });
    const first = client.run<string>(merge);
    spawned[0]!.answer(lastId(spawned[0]!), 'one');
    await first;
    client.releaseIfIdle();
    const waiting = client.run<string>(merge);
    exitOld!(); // the released worker's exit arrives now
    spawned[1]!.answer(lastId(spawned[1]!), 'two');
    await expect(waiting).resolves.toBe('two');

    const crashed = client.run<string>(merge);
    spawned[1]!.kill();
    await expect(crashed).rejects.toBeInstanceOf(ApiError);
  });
});
