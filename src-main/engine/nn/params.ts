// Params: how a model file asks for its weights while it builds the graph. A model says
// `p.child('down_blocks.0').get('conv1.weight', [32, 4, 3, 3])`; Params finds the tensor in the
// checkpoint (asserting its shape), adds it as a file-backed initializer, and casts it to the
// compute dtype. Layers also report themselves to an optional hook: that is where LoRA attaches.
import type { DType } from '../graph/dtype';
import type { Graph, TensorData, Value } from '../graph/graph';
import { cast } from '../graph/ops';
import { recomputeInBackward } from '../autodiff/recompute';
import type { Shape } from '../graph/shape';

/** Where one checkpoint tensor lives; `take` throws (naming file, key, shapes) on a missing key or wrong shape. */
export interface TensorLocation {
  dtype: DType;
  shape: Shape;
  data: TensorData;
}

export interface WeightLocator {
  take(name: string, expectedShape: Shape): TensorLocation;
}

/** A linear or convolution layer as built, offered to the hook so an adapter can add to its output. */
export interface LayerCall {
  kind: 'linear' | 'conv';
  /** Full module name in diffusers naming, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
  module: string;
  input: Value;
  output: Value;
  weightShape: Shape;
  conv?: { strides: number[]; pads: number[] };
}

export type LayerHook = (call: LayerCall) => Value;

export type AttentionImpl = 'composite' | 'fused';

export interface BuildOptions {
  /** dtype of frozen weights and activations in the graph (float32 on CPU, float16 on GPUs). */
  dtype: DType;
  /** 'composite' = MatMul/Softmax/MatMul; 'fused' = com.microsoft MultiHeadAttention. */
  attention?: AttentionImpl;
  hook?: LayerHook;
  /**
   * Gradient checkpointing: blocks built through Params.recomputed keep nothing for the backward
   * but their inputs and are computed again there (autodiff/recompute.ts): less memory, more compute.
   */
  gradientCheckpointing?: boolean;
}

// Per graph and per weight source: two models in one graph may use the same key names (SDXL's
// two text encoders both store text_model.*), and must never share each other's weights.
const weightCache = new WeakMap<Graph, WeakMap<WeightLocator, Map<string, Value>>>();

export class Params {
  constructor(
    readonly graph: Graph,
    private readonly locator: WeightLocator,
    readonly options: BuildOptions,
    readonly prefix = '',
  ) {}

  get dtype(): DType {
    return this.options.dtype;
  }

  /** Params for a submodule: names are prefixed with `name.`. */
  child(name: string): Params {
    return new Params(this.graph, this.locator, this.options, this.qualify(name));
  }

  qualify(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  /**
   * The checkpoint tensor `prefix.name`, asserted to have `shape`, in the compute dtype. Asking
   * again in the same graph returns the same value, so a graph may build a model more than once
   * (several training steps in one run) over one copy of the weights.
   */
  get(name: string, shape: Shape): Value {
    const key = this.qualify(name);
    let perSource = weightCache.get(this.graph);
    if (!perSource) weightCache.set(this.graph, (perSource = new WeakMap()));
    let cache = perSource.get(this.locator);
    if (!cache) perSource.set(this.locator, (cache = new Map()));
    const cached = cache.get(`${key}:${this.dtype}`);
    if (cached && cached.shape.join() !== shape.join()) throw new Error(`weight ${key} was asked for as [${cached.shape}] and now as [${shape}]`);
    if (cached) return cached;
    const found = this.locator.take(key, shape);
    const value = cast(this.graph.initializer(key, found.dtype, shape, found.data), this.dtype);
    cache.set(`${key}:${this.dtype}`, value);
    return value;
  }

  /** `build`'s nodes as one recomputed segment when gradient checkpointing is on; else just build(). */
  recomputed<T>(build: () => T): T {
    return this.options.gradientCheckpointing ? recomputeInBackward(this.graph, build) : build();
  }

  /**
   * `build`'s nodes recomputed in the backward whatever the checkpointing setting: for a few cheap
   * nodes whose outputs are large (a GEGLU's projection), so that only their input stays alive from
   * the forward to the backward. Inside a checkpointed block (recomputed) they are recomputed with it.
   */
  alwaysRecomputed<T>(build: () => T): T {
    return this.options.gradientCheckpointing ? build() : recomputeInBackward(this.graph, build, 'activation');
  }

  /** Lets the hook (LoRA) see a layer's input and output; returns what the model should use. */
  layer(call: LayerCall): Value {
    return this.options.hook ? this.options.hook(call) : call.output;
  }
}
