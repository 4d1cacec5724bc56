// The renderer's only door to the back end. Inside Electron it uses the preload bridge
// (window.loraStudio, IPC); in a browser it opens a WebSocket to the headless server that served
// the page, with the access token from the page URL. Screens never see which one.
import type {
  ApiErrorInfo,
  ApiOutcome,
  BridgeGlobal,
  EventName,
  EventPayload,
  LoraStudioBridge,
  MethodName,
  MethodRequest,
  MethodResponse,
  SocketPath,
  TokenParam,
  WireEvent,
  WireRequest,
  WireResponse,
} from '../../../src-main/api/contract';

const BRIDGE_GLOBAL: BridgeGlobal = 'loraStudio';
const TOKEN_PARAM: TokenParam = 'token';
const SOCKET_PATH: SocketPath = '/api';

/** Arguments after the method name: none for methods whose request is void. */
export type CallArgs<M extends MethodName> = MethodRequest<M> extends void ? [] : [req: MethodRequest<M>];

export interface ApiClient {
  readonly transport: 'ipc' | 'websocket';
  call<M extends MethodName>(method: M, ...args: CallArgs<M>): Promise<MethodResponse<M>>;
  /** Subscribes to one event; returns the unsubscribe function. */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
}

/** A failed call, with the back end's machine-readable code. */
export class ApiCallError extends Error {
  readonly code: string;
  constructor(info: ApiErrorInfo) {
    super(info.message);
    this.name = 'ApiCallError';
    this.code = info.code;
  }
}

function unwrap<T>(outcome: ApiOutcome<T>): T {
  if ('error' in outcome) throw new ApiCallError(outcome.error);
  return outcome.result;
}

class IpcClient implements ApiClient {
  readonly transport = 'ipc';
  constructor(private readonly bridge: LoraStudioBridge) {}

  async call<M extends MethodName>(method: M, ...args: CallArgs<M>): Promise<MethodResponse<M>> {
    return unwrap(await this.bridge.invoke(method, args[0] as MethodRequest<M>));
  }

  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void {
    return this.bridge.on(event, listener);
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

class SocketClient implements ApiClient {
  readonly transport = 'websocket';
  private socket: Promise<WebSocket> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<(payload: unknown) => void>>();

  constructor(private readonly url: string) {}

  async call<M extends MethodName>(method: M, ...args: CallArgs<M>): Promise<MethodResponse<M>> {
    const ws = await this.connect();
    const request: WireRequest = { id: this.nextId++, method, params: args[0] };
    return new Promise<MethodResponse<M>>((resolve, reject) => {
      this.pending.set(request.id, { resolve: resolve as (value: unknown) => void, reject });
      ws.send(JSON.stringify(request));
    });
  }

  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void {
    const set = this.listeners.get(event) ?? new Set();
    const relay = listener as (payload: unknown) => void;
    set.add(relay);
    this.listeners.set(event, set);
    void this.connect().catch(() => {}); // events flow only while a socket is open
    return () => set.delete(relay);
  }

  /** Opens the socket once; after it closes, the next call opens a new one. */
  private connect(): Promise<WebSocket> {
    this.socket ??= new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.addEventListener('open', () => resolve(ws));
      ws.addEventListener('message', (e) => this.receive(e.data));
      ws.addEventListener('close', (e) => {
        this.socket = null;
        const reason = `Lost the connection to the studio server (${e.code}${e.reason ? `: ${e.reason}` : ''}).`;
        reject(new Error(reason));
        for (const p of this.pending.values()) p.reject(new Error(reason));
        this.pending.clear();
      });
    });
    return this.socket;
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string') return;
    const msg = JSON.parse(data) as WireResponse | WireEvent;
    if ('event' in msg) {
      for (const listener of this.listeners.get(msg.event) ?? []) listener(msg.payload);
      return;
    }
    const pending = this.pending.get(msg.id);
    if (!pending) return;
    this.pending.delete(msg.id);
    if ('error' in msg) pending.reject(new ApiCallError(msg.error));
    else pending.resolve(msg.result);
  }
}

/** The client for this page: IPC inside Electron, else a socket back to the serving host. */
export function connectApi(): ApiClient {
  const bridge = (window as unknown as Partial<Record<BridgeGlobal, LoraStudioBridge>>)[BRIDGE_GLOBAL];
  if (bridge) return new IpcClient(bridge);
  const token = new URL(window.location.href).searchParams.get(TOKEN_PARAM) ?? '';
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${window.location.host}${SOCKET_PATH}?${TOKEN_PARAM}=${encodeURIComponent(token)}`;
  return new SocketClient(url);
}
