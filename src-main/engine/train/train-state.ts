// The trainable state between training-step runs: the flat LoRA weights and both AdamW moments,
// each a float32 [P] vector in the layout's order. Where the step session keeps its new-state
// outputs on the device (WebGPU, Session option outputsOnDevice) they stay there and feed the next
// run as they are, which saves copying 3 x P floats to the host and back every run (+23% it/s for
// SD1.5 512 on WebGPU, BENCHMARKS.md); elsewhere they come back to the host and go in again. The
// trainer reads the state only where the host needs it: checkpoints, previews, the exported LoRA.
//
//   const state = new TrainState({ params, m, v }, session)        the host's first state; session reads device tensors back
//   const r = await session.runOnDevice({ ...batch, ...state.feeds(names) })
//   state.update(names, r)                                          the run's new state (the previous device tensors freed)
//   const { params, m, v } = await state.toHost()                   on the host (the next run uploads it again)
//   state.dispose()                                                 frees what is still on the device
import type { Graph } from '../graph/graph';
import { DeviceTensor, type HostTensor, type Session, type SessionOptions } from '../runtime/session';

/** What a training step runs through: a Session (tests wrap one to keep outputs "on the device" on the CPU). */
export type StepSession = Pick<Session, 'run' | 'runOnDevice' | 'download' | 'release'>;
export type StepRunResult = Awaited<ReturnType<Session['runOnDevice']>>;
/** Opens a step graph's session, as Session.fromGraph. */
export type OpenStepSession = (graph: Graph, opts: SessionOptions, workDir?: string) => Promise<StepSession>;

/** A step graph's state inputs and the outputs that replace them (TrainStepGraph['state'], UpdateGraph['state']). */
export interface StateNames {
  params: string;
  m: string;
  v: string;
  newParams: string;
  newM: string;
  newV: string;
}

/** The state on the host: LoRA weights and AdamW moments, each [P]. */
export interface HostTrainState {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

type Part = keyof HostTrainState;
const PARTS: readonly Part[] = ['params', 'm', 'v'];
const NEW: Record<Part, 'newParams' | 'newM' | 'newV'> = { params: 'newParams', m: 'newM', v: 'newV' };

export class TrainState {
  private readonly parts: Record<Part, Float32Array | DeviceTensor>;
  private readonly size: number;
  private deviceReads = 0;

  constructor(
    initial: HostTrainState,
    /** Reads a device tensor back: any session on the provider that made it. */
    private readonly reader: Pick<StepSession, 'download'>,
  ) {
    this.parts = { ...initial };
    this.size = initial.params.length;
  }

  /** How many times toHost read the state back from the device (0: it never left the host). */
  get readBacks(): number {
    return this.deviceReads;
  }

  /** The state as the inputs `names` of the next run: device tensors as they are, host vectors as [P] tensors. */
  feeds(names: StateNames): Record<string, HostTensor | DeviceTensor> {
    return Object.fromEntries(PARTS.map((part) => [names[part], this.asFeed(this.parts[part])]));
  }

  /** Takes a run's new state (from its device or its host outputs) and frees the one it replaces. */
  update(names: StateNames, result: StepRunResult): void {
    for (const part of PARTS) {
      const name = names[NEW[part]];
      const next = result.device[name] ?? (result.host[name]?.data as Float32Array | undefined);
      if (!next) throw new Error(`the training step returned no "${name}"`);
      this.free(part);
      this.parts[part] = next;
    }
  }

  /** The state on the host; what was on the device is read back and freed there (the next run uploads it). */
  async toHost(): Promise<HostTrainState> {
    if (PARTS.some((part) => this.parts[part] instanceof DeviceTensor)) this.deviceReads++;
    for (const part of PARTS) {
      const t = this.parts[part];
      if (!(t instanceof DeviceTensor)) continue;
      const host = await this.reader.download(t);
      if (host.dtype !== 'float32' || host.data.length !== this.size)
        throw new Error(`reading the training state back: ${part} came back as ${host.dtype}[${host.shape.join(', ')}], expected float32[${this.size}]`);
      t.dispose();
      this.parts[part] = host.data as Float32Array;
    }
    return { params: this.parts.params as Float32Array, m: this.parts.m as Float32Array, v: this.parts.v as Float32Array };
  }

  /** Frees what is on the device (the run is over; without toHost first, that state is gone). */
  dispose(): void {
    for (const part of PARTS) this.free(part);
  }

  private free(part: Part): void {
    const t = this.parts[part];
    if (t instanceof DeviceTensor) t.dispose();
  }

  private asFeed(t: Float32Array | DeviceTensor): HostTensor | DeviceTensor {
    return t instanceof DeviceTensor ? t : { dtype: 'float32', shape: [this.size], data: t };
  }
}
