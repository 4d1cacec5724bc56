// The worker process's entry: in the Electron app an utilityProcess (messages through
// process.parentPort), in the headless server a Node child process (process.send). The first
// message sets the role: 'train' (one run) or 'task' (the tasks helper). Anything the worker
// cannot handle is reported as a message, never as a silent exit.
import type { FromWorker, ToWorker } from './protocol';
import { TaskRunner } from './tasks';
import { TrainJobRunner } from './train-job';

interface ParentPort {
  on(event: 'message', listener: (event: { data: unknown }) => void): void;
  postMessage(message: unknown): void;
}

const parentPort = (process as unknown as { parentPort?: ParentPort }).parentPort;

function post(message: FromWorker): void {
  if (parentPort) parentPort.postMessage(message);
  else process.send?.(message);
}

function onMessage(listener: (message: ToWorker) => void): void {
  if (parentPort) parentPort.on('message', (e) => listener(e.data as ToWorker));
  else process.on('message', (m) => listener(m as ToWorker));
}

if (!parentPort && !process.send) {
  console.error('lora-studio worker: start me through the studio (no parent channel).');
  process.exit(2);
}

let training: TrainJobRunner | undefined;
let tasks: TaskRunner | undefined;
// Tasks run one at a time: the engine's sessions are not shared between concurrent calls.
let queue: Promise<void> = Promise.resolve();

onMessage((message) => {
  switch (message.type) {
    case 'train':
      if (training) return;
      training = new TrainJobRunner(message.job, (event) => post({ type: 'train', event }));
      void training.run();
      return;
    case 'pause':
      training?.pause();
      return;
    case 'resume':
      training?.resume();
      return;
    case 'stop':
      training?.stop();
      return;
    case 'task': {
      const { id, task } = message;
      tasks ??= new TaskRunner();
      const runner = tasks;
      queue = queue.then(async () => {
        try {
          post({ type: 'task-result', id, result: await runner.run(task) });
        } catch (error) {
          post({ type: 'task-error', id, message: error instanceof Error ? error.message : String(error) });
        }
      });
      return;
    }
    case 'exit':
      process.exit(0);
  }
});

// Node IPC: the parent went away (crash or close): nothing is left to report to.
process.on('disconnect', () => process.exit(0));

post({ type: 'ready', pid: process.pid });
