// The one typed API between the studio's front end and its back end. Electron IPC, the headless
// WebSocket server and the CLI all serve these same methods; everything outside src-main imports
// this file type-only (the lint layers allow nothing else from src-main in the renderer), so it
// declares types only.

/** An execution provider onnxruntime can run on. */
export type ExecutionProvider = 'cuda' | 'dml' | 'webgpu' | 'cpu';

export interface AppInfo {
  name: string;
  version: string;
  /** `process.versions.node` of the process that runs the engine. */
  nodeVersion: string;
  platform: string;
  arch: string;
  /** Providers the installed onnxruntime-node offers, best first; always ends with 'cpu'. */
  providers: ExecutionProvider[];
  /** How the front end is connected: the Electron app or the headless server. */
  host: 'electron' | 'server' | 'cli';
}

export interface FolderEntry {
  name: string;
  kind: 'file' | 'folder';
  /** Bytes, for files; 0 for folders. */
  size: number;
}

export interface FolderListing {
  /** Absolute, symlink-free path of the listed folder. */
  path: string;
  entries: FolderEntry[];
}

export interface TrainProgress {
  runId: string;
  step: number;
  totalSteps: number;
  loss: number;
  learningRate: number;
}

/** Request/response methods: `req` is what the caller sends, `res` what it gets back. */
export interface ApiMethods {
  'app.info': { req: void; res: AppInfo };
  /** Folders the user opened; every path the API touches must lie inside one of them. */
  'fs.roots': { req: void; res: { roots: string[] } };
  /** Ask the user for a folder (native dialog; only where the host has one) and open it. */
  'fs.pickFolder': { req: void; res: { path: string | null } };
  'fs.listFolder': { req: { path: string }; res: FolderListing };
}

/** Events the back end pushes to every connected front end. */
export interface ApiEvents {
  'fs.rootsChanged': { roots: string[] };
  'train.progress': TrainProgress;
}

export type MethodName = keyof ApiMethods;
export type EventName = keyof ApiEvents;
export type MethodRequest<M extends MethodName> = ApiMethods[M]['req'];
export type MethodResponse<M extends MethodName> = ApiMethods[M]['res'];
export type EventPayload<E extends EventName> = ApiEvents[E];

/** What the caller learns about a failed call (same shape over every transport). */
export interface ApiErrorInfo {
  message: string;
  /** Machine-readable reason, e.g. 'path-outside-roots', 'unknown-method', 'not-found'. */
  code: string;
}

/** A call's outcome as it travels over a transport. */
export type ApiOutcome<T> = { result: T } | { error: ApiErrorInfo };

/** WebSocket frames: requests from the page, responses and pushed events from the server. */
export interface WireRequest {
  id: number;
  method: string;
  params?: unknown;
}
export type WireResponse = { id: number } & ApiOutcome<unknown>;
export interface WireEvent {
  event: string;
  payload: unknown;
}

/** The bridge the Electron preload exposes to the page as `window.loraStudio`. */
export interface LoraStudioBridge {
  invoke<M extends MethodName>(method: M, req: MethodRequest<M>): Promise<ApiOutcome<MethodResponse<M>>>;
  /** Subscribes to one event; returns the unsubscribe function. */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
}

// Wire constants as literal types, so this file stays types-only and both sides still agree:
// `const path: SocketPath = '/api'` fails to compile if either side changes.
/** Name of the global the preload bridge is exposed as. */
export type BridgeGlobal = 'loraStudio';
/** Query parameter that carries the headless server's access token. */
export type TokenParam = 'token';
/** Path of the headless server's WebSocket endpoint. */
export type SocketPath = '/api';
/** Electron IPC channel for calls: one channel, the method travels in the message. */
export type InvokeChannel = 'lora-studio:invoke';
/** Electron IPC channel for pushed events. */
export type EventChannel = 'lora-studio:event';
