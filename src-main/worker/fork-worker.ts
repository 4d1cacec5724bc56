// Worker processes for the headless server and the CLI: child_process.fork of the worker entry,
// run through tsx (worker-bootstrap.mjs). The Electron app uses utilityProcess instead (src-main/app).
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FromWorker, WorkerExit, WorkerProcess } from './protocol';

const BOOTSTRAP = fileURLToPath(new URL('./worker-bootstrap.mjs', import.meta.url));

export function forkWorker(): WorkerProcess {
  const child = fork(BOOTSTRAP, [], {
    // Not the parent's flags (e.g. --inspect); stdout/stderr go where the server's go.
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  });
  const exitListeners: ((exit: WorkerExit) => void)[] = [];
  let exited: WorkerExit | undefined;
  child.once('exit', (code, signal) => {
    exited = { code, signal };
    for (const listener of exitListeners) listener(exited);
  });
  // An IPC error (the child died mid-send) shows up as the exit; do not crash the server over it.
  child.on('error', () => {});
  return {
    get pid() {
      return child.pid;
    },
    send(message) {
      if (child.connected) child.send(message);
    },
    onMessage(listener) {
      child.on('message', (m) => listener(m as FromWorker));
    },
    onExit(listener) {
      if (exited) listener(exited);
      else exitListeners.push(listener);
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
