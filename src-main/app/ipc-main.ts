// Main-process side of the typed IPC: with ipc-renderer.ts, the only code that touches ipcMain
// or ipcRenderer. One channel carries every call; the method name travels in the message.
import { ipcMain, type WebContents } from 'electron';
import type {
  ApiOutcome,
  EventChannel,
  EventName,
  EventPayload,
  InvokeChannel,
  MethodName,
  MethodRequest,
  MethodResponse,
} from '../api/contract';
import { ApiError, settle } from '../api/errors';
import type { ApiHandlers } from '../api/handlers';

const INVOKE_CHANNEL: InvokeChannel = 'lora-studio:invoke';
const EVENT_CHANNEL: EventChannel = 'lora-studio:event';

type AnyHandler = (req: unknown) => Promise<unknown>;
const registered = new Map<string, AnyHandler>();

/** Serves one contract method to every window. */
export function handle<M extends MethodName>(
  method: M,
  fn: (req: MethodRequest<M>) => Promise<MethodResponse<M>>,
): void {
  registerUntyped(method, fn as AnyHandler);
}

function registerUntyped(method: string, fn: AnyHandler): void {
  if (registered.size === 0) {
    ipcMain.handle(INVOKE_CHANNEL, (_event, method: unknown, req: unknown): Promise<ApiOutcome<unknown>> => {
      const target = typeof method === 'string' ? registered.get(method) : undefined;
      if (!target) {
        return settle(() =>
          Promise.reject(new ApiError('unknown-method', `Unknown API method ${JSON.stringify(method)}.`)),
        );
      }
      return settle(() => target(req));
    });
  }
  registered.set(method, fn);
}

/** Serves every method of a transport-neutral handler table. */
export function handleAll(handlers: ApiHandlers): void {
  for (const method of Object.keys(handlers) as MethodName[]) {
    registerUntyped(method, handlers[method] as AnyHandler);
  }
}

/** Pushes one contract event to a window's page. */
export function sendEvent<E extends EventName>(
  target: WebContents,
  event: E,
  payload: EventPayload<E>,
): void {
  if (!target.isDestroyed()) target.send(EVENT_CHANNEL, event, payload);
}
