// A transport-neutral event bus: the engine side emits contract events, each transport (Electron
// IPC, every WebSocket) subscribes and forwards them to its front end.
import type { EventName, EventPayload } from './contract';

export type AnyEventListener = <E extends EventName>(event: E, payload: EventPayload<E>) => void;

export class ApiEventBus {
  private readonly listeners = new Set<AnyEventListener>();

  emit<E extends EventName>(event: E, payload: EventPayload<E>): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event, payload);
      } catch (err) {
        // One broken transport must not stop the others from hearing the event.
        console.error(`LoRA Studio: a listener of ${event} failed:`, err);
      }
    }
  }

  /** Adds a listener for every event; returns the unsubscribe function. */
  subscribe(listener: AnyEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
