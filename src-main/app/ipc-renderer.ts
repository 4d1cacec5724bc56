// Preload side of the typed IPC: with ipc-main.ts, the only code that touches ipcMain or
// ipcRenderer. The preload hands these two functions to the page through contextBridge.
import { ipcRenderer, type IpcRendererEvent } from 'electron';
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

const INVOKE_CHANNEL: InvokeChannel = 'lora-studio:invoke';
const EVENT_CHANNEL: EventChannel = 'lora-studio:event';

export function invoke<M extends MethodName>(
  method: M,
  req: MethodRequest<M>,
): Promise<ApiOutcome<MethodResponse<M>>> {
  return ipcRenderer.invoke(INVOKE_CHANNEL, method, req) as Promise<ApiOutcome<MethodResponse<M>>>;
}

/** Subscribes to one event; returns the unsubscribe function. */
export function on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void {
  const relay = (_e: IpcRendererEvent, name: unknown, payload: unknown) => {
    if (name === event) listener(payload as EventPayload<E>);
  };
  ipcRenderer.on(EVENT_CHANNEL, relay);
  return () => {
    ipcRenderer.removeListener(EVENT_CHANNEL, relay);
  };
}
