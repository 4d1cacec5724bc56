// onnxruntime behind one file: sessions, execution-provider choice, tensors in and out.
// Nothing else in the engine imports onnxruntime-node (providers.ts only lists backends).
import { readFileSync, rmSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import type { DType } from '../graph/dtype';
import type { ProviderName } from './providers';
import { detectProviders } from './providers';
import { Graph } from '../graph/graph';
import { identity, mul, scalarLike } from '../graph/ops';
import { saveModel, serializeModel } from '../graph/onnx-model';

export type TensorArray = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array | Int8Array;

/** A tensor in host memory: float16/bfloat16 data are raw 16-bit patterns in a Uint16Array. */
export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: TensorArray;
}

export type OptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface SessionOptions {
  provider?: ProviderName;
  deviceId?: number;
  optimization?: OptimizationLevel;
  /** Fail at session creation instead of silently running unsupported nodes on the CPU. */
  forbidCpuFallback?: boolean;
  /** cuDNN convolution algorithm search: 'EXHAUSTIVE' (best, slow first run), 'HEURISTIC', 'DEFAULT'. */
  cudnnConvAlgoSearch?: 'EXHAUSTIVE' | 'HEURISTIC' | 'DEFAULT';
  /** onnxruntime's log level; 3 = errors only. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
  /** Per-node profiling to a JSON trace whose name starts with this prefix (see Session.endProfiling). */
  profilePrefix?: string;
  /**
   * onnxruntime's memory pattern (default: off on CUDA, on elsewhere): after the first run it allocates all planned
   * intermediates as one block. Off, each tensor is allocated from the arena as it is produced.
   */
  memoryPattern?: boolean;
  /**
   * Default on for CUDA. Initializers (the frozen weights) allocated directly on the device instead of from the arena,
   * whose regions grow in powers of two (session config session.use_device_allocator_for_initializers).
   */
  initializersOutsideArena?: boolean;
  /** Further onnxruntime session config entries (e.g. 'session.disable_prepacking': '1'). */
  config?: Record<string, string>;
  /**
   * WebGPU only: outputs left on the device (Session.runOnDevice returns them as DeviceTensors,
   * which feed the next run without a copy through the host). The Node binding offers this for
   * WebGPU only; on other providers these outputs come back to the host as usual.
   */
  outputsOnDevice?: readonly string[];
}

/**
 * A tensor a run left on the device (WebGPU): feed it to the next run, read it back with
 * Session.download (not Tensor.getData(), which aborted the process in onnxruntime-node 1.29 on
 * the H100), or dispose it. The trainer keeps its LoRA and AdamW state so (train/train-state.ts).
 */
export class DeviceTensor {
  constructor(readonly inner: ort.Tensor) {}
  dispose(): void {
    this.inner.dispose();
  }
}

/** A model either as a file (external data resolved beside it) or as bytes plus the files it references. */
export type ModelSource = string | { bytes: Uint8Array; externalFiles: { location: string; path: string }[] };

const ORT_TYPE: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: 'float32',
  float16: 'float16',
  float64: 'float64',
  int64: 'int64',
  int32: 'int32',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

const FROM_ORT: Record<string, DType> = Object.fromEntries(Object.entries(ORT_TYPE).map(([dtype, type]) => [type, dtype as DType]));

function executionProviders(opts: SessionOptions): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (opts.provider ?? 'cpu') {
    case 'cuda':
      return [{ name: 'cuda', deviceId: opts.deviceId ?? 0, ...(opts.cudnnConvAlgoSearch ? { cudnnConvAlgoSearch: opts.cudnnConvAlgoSearch } : {}) } as ort.InferenceSession.ExecutionProviderConfig];
    case 'dml':
      return [{ name: 'dml', deviceId: opts.deviceId ?? 0 } as ort.InferenceSession.ExecutionProviderConfig];
    case 'webgpu':
      return ['webgpu'];
    case 'cpu':
      return ['cpu'];
  }
}

function ortOptions(opts: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: executionProviders(opts),
    graphOptimizationLevel: opts.optimization ?? 'all',
    logSeverityLevel: opts.logSeverityLevel ?? 3,
    ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
    ...(opts.provider === 'webgpu' && opts.outputsOnDevice?.length
      ? { preferredOutputLocation: Object.fromEntries(opts.outputsOnDevice.map((name) => [name, 'gpu-buffer' as const])) }
      : {}),
    ...((opts.memoryPattern ?? !onCuda(opts)) ? {} : { enableMemPattern: false }),
    extra: sessionConfig(opts),
  };
}

/**
 * On CUDA both memory options default to the leaner setting: with the memory pattern on, the
 * planned block of the second run did not fit the arena regions the first run had grown, and
 * arena-allocated weights round up to power-of-two regions. Measured on an H100 for the SD1.5
 * training step (BENCHMARKS.md): peak 6.67 -> 4.43 GiB at batch 1, 16.7 -> 8.4 GiB at batch 4.
 */
const onCuda = (opts: SessionOptions): boolean => opts.provider === 'cuda';

/** Session config entries as the binding takes them: 'a.b.c' keys become nested objects under `extra`. */
function sessionConfig(opts: SessionOptions): Record<string, unknown> {
  const entries: Record<string, string> = { ...opts.config };
  if (opts.forbidCpuFallback) entries['session.disable_cpu_ep_fallback'] = '1';
  if (opts.initializersOutsideArena ?? onCuda(opts)) entries['session.use_device_allocator_for_initializers'] = '1';
  const extra: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entries)) {
    const parts = key.split('.');
    let at = extra;
    for (const part of parts.slice(0, -1)) at = (at[part] ??= {}) as Record<string, unknown>;
    at[parts.at(-1)!] = value;
  }
  return extra;
}

/**
 * onnxruntime's process-wide log level, for messages outside any session (e.g. the CUDA arena's
 * "Extending BFCArena" lines at 'info'). Takes effect only before the first session is created.
 */
export function setRuntimeLogLevel(level: 'verbose' | 'info' | 'warning' | 'error' | 'fatal'): void {
  ort.env.logLevel = level;
}

export function toOrtTensor(t: HostTensor): ort.Tensor {
  const type = ORT_TYPE[t.dtype];
  if (!type) throw new Error(`onnxruntime-node has no tensor type for ${t.dtype}`);
  const data = t.dtype === 'bool' && t.data instanceof Uint8Array ? Uint8Array.from(t.data) : t.data;
  return new ort.Tensor(type, data as never, [...t.shape]);
}

export function fromOrtTensor(t: ort.Tensor): HostTensor {
  const dtype = FROM_ORT[t.type];
  if (!dtype) throw new Error(`unsupported output tensor type ${t.type}`);
  return { dtype, shape: [...t.dims], data: t.data as TensorArray };
}

let graphCounter = 0;

export class Session {
  private constructor(
    private readonly inner: ort.InferenceSession,
    readonly provider: ProviderName,
  ) {}

  private readonly copySessions = new Map<string, Session>();

  static async create(model: ModelSource, opts: SessionOptions = {}): Promise<Session> {
    const options = ortOptions(opts);
    let inner: ort.InferenceSession;
    try {
      if (typeof model === 'string') {
        inner = await ort.InferenceSession.create(model, options);
      } else {
        const externalData = model.externalFiles.map((f) => ({ path: f.location, data: readFileSync(f.path) }));
        inner = await ort.InferenceSession.create(model.bytes, { ...options, externalData });
      }
    } catch (error) {
      const where = typeof model === 'string' ? model : 'in-memory model';
      throw new Error(`could not create an onnxruntime session on ${opts.provider ?? 'cpu'} for ${where}: ${(error as Error).message}`);
    }
    return new Session(inner, opts.provider ?? 'cpu');
  }

  /**
   * A session for a built graph. A graph whose weights live in files (a real checkpoint) is written
   * as a small model file in `workDir` that references those files, so onnxruntime reads the
   * weights itself and nothing is copied through JS; a graph without file-backed weights (or when
   * no `workDir` is given) goes over as bytes.
   */
  static async fromGraph(graph: Graph, opts: SessionOptions = {}, workDir?: string): Promise<Session> {
    const fileBacked = [...graph.initializers.values()].some((i) => i.data.kind === 'file');
    if (!workDir || !fileBacked) return Session.create(serializeModel(graph), opts);
    const modelPath = saveModel(graph, workDir, `${graph.name}-${process.pid}-${graphCounter++}`);
    try {
      return await Session.create(modelPath, opts);
    } finally {
      // The session has read the model; only the hard-linked weights (reused by key) stay in workDir.
      // (Where a file is still mapped and the OS refuses, e.g. on Windows, it stays; it is small.)
      for (const file of [modelPath, `${modelPath}.data`]) {
        try {
          rmSync(file, { force: true });
        } catch {
          // kept
        }
      }
    }
  }

  get inputNames(): readonly string[] {
    return this.inner.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.inner.outputNames;
  }

  async run(feeds: Record<string, HostTensor>, outputs?: readonly string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(t);
    const result = outputs ? await this.inner.run(ortFeeds, [...outputs]) : await this.inner.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(result)) out[name] = fromOrtTensor(t);
    return out;
  }

  /**
   * Like run, with DeviceTensors allowed as feeds; outputs named in outputsOnDevice (WebGPU) come
   * back as DeviceTensors, the rest as host tensors.
   */
  async runOnDevice(feeds: Record<string, HostTensor | DeviceTensor>): Promise<{ host: Record<string, HostTensor>; device: Record<string, DeviceTensor> }> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = t instanceof DeviceTensor ? t.inner : toOrtTensor(t);
    const result = await this.inner.run(ortFeeds);
    const host: Record<string, HostTensor> = {};
    const device: Record<string, DeviceTensor> = {};
    for (const [name, t] of Object.entries(result)) {
      if (t.location === 'gpu-buffer') device[name] = new DeviceTensor(t);
      else host[name] = fromOrtTensor(t);
    }
    return { host, device };
  }

  /** Stops profiling; onnxruntime writes the trace file (its name starts with profilePrefix). */
  endProfiling(): void {
    this.inner.endProfiling();
  }

  /**
   * Copies a tensor a run left on the device to the host, through a one-node session on the same
   * provider whose output comes back as usual (reading the buffer itself, Tensor.getData(),
   * aborted the process). One copy session per dtype and shape, kept until release.
   */
  async download(t: DeviceTensor): Promise<HostTensor> {
    const dtype = FROM_ORT[t.inner.type];
    if (!dtype) throw new Error(`download: unsupported tensor type ${t.inner.type}`);
    const key = `${dtype}[${t.inner.dims.join(',')}]`;
    let copy = this.copySessions.get(key);
    if (!copy) {
      const g = new Graph('download');
      const x = g.input('x', dtype, [...t.inner.dims]);
      g.output(mul(x, scalarLike(x, 1)), 'y'); // a real kernel: the output is produced on the device, then read back
      copy = await Session.fromGraph(g, { provider: this.provider });
      this.copySessions.set(key, copy);
    }
    return (await copy.runOnDevice({ x: t })).host.y;
  }

  async release(): Promise<void> {
    for (const copy of this.copySessions.values()) await copy.release();
    this.copySessions.clear();
    await this.inner.release();
  }
}

let usableCache: Promise<ProviderName[]> | undefined;

/**
 * Providers that can really create a session here, best first (the binary lists cuda even when
 * its libraries are absent, so each is probed once with a one-node model).
 */
export function usableProviders(): Promise<ProviderName[]> {
  usableCache ??= (async () => {
    const usable: ProviderName[] = [];
    for (const provider of detectProviders()) {
      if (provider === 'cpu' || (await canCreate(provider))) usable.push(provider);
    }
    return usable;
  })();
  return usableCache;
}

// A one-node model (Identity on float32[1]) used to probe a provider.
function probeModel(): Uint8Array {
  const g = new Graph('probe');
  g.output(identity(g.input('x', 'float32', [1])), 'y');
  return serializeModel(g).bytes;
}

async function canCreate(provider: ProviderName): Promise<boolean> {
  // A missing provider library is an expected answer here, not an error worth printing.
  const level = ort.env.logLevel;
  ort.env.logLevel = 'fatal';
  try {
    const s = await ort.InferenceSession.create(probeModel(), {
      ...ortOptions({ provider, forbidCpuFallback: true }),
    });
    await s.release();
    return true;
  } catch {
    return false;
  } finally {
    ort.env.logLevel = level;
  }
}

/**
 * The provider to use: the requested one if it works here, else the best usable one, with a
 * message that says why the request was not met.
 */
export async function chooseProvider(requested?: ProviderName): Promise<{ provider: ProviderName; note?: string }> {
  if (requested) {
    // Probe only what was asked for: probing the others loads (and logs about) their libraries.
    if (requested === 'cpu' || (detectProviders().includes(requested) && (await canCreate(requested)))) return { provider: requested };
    const fallback = 'cpu';
    const hint =
      requested === 'cuda'
        ? ' (the CUDA provider needs its libraries: see README, "GPU acceleration")'
        : requested === 'dml'
          ? ' (DirectML exists only on Windows)'
          : '';
    return { provider: fallback, note: `execution provider ${requested} is not available here${hint}; using ${fallback}` };
  }
  return { provider: (await usableProviders())[0] ?? 'cpu' };
}
