// Worker processes in the Electron app: Electron's utilityProcess (a Node process the app
// supervises), running the built worker entry. A crash there leaves the window responsive and is
// reported as the run's 'crashed' status.
import { utilityProcess } from 'electron';
import workerEntry from '../worker/entry?modulePath';
import type { FromWorker, WorkerExit, WorkerProcess } from '../worker/protocol';

export function spawnUtilityWorker(): WorkerProcess {
  const child = utilityProcess.fork(workerEntry, [], { serviceName: 'LoRA Studio worker', stdio: 'inherit' });
  const exitListeners: ((exit: WorkerExit) => void)[] = [];
  let exited: WorkerExit | undefined;
  child.once('exit', (code) => {
    // utilityProcess reports only a code; a signal death shows as a non-zero code.
    exited = { code, signal: null };
    for (const listener of exitListeners) listener(exited);
  });
  return {
    get pid() {
      return child.pid;
    },
    send(message) {
      if (!exited) child.postMessage(message);
    },
    onMessage(listener) {
      child.on('message', (message: unknown) => listener(message as FromWorker));
    },
    onExit(listener) {
      if (exited) listener(exited);
      else exitListeners.push(listener);
    },
    kill() {
      if (!exited) child.kill();
    },
  };
}
