// A LoRA network: low-rank adapters on the layers a TargetRule picks. It attaches through the
// layer hook of nn/params.ts while a model is built, so the model files know nothing about LoRA.
// Each adapter adds  strength * (alpha / rank) * up(down(x))  to its layer's output; the down and
// up weights are float32 graph inputs named by their kohya keys, so training feeds and reads them
// by name and the trained file needs no renaming.
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import type { LayerCall, LayerHook } from '../nn/params';
import type { TargetRule } from './targets';

/** kohya prefixes: "lora_unet", "lora_te" (SD1/2 text encoder), "lora_te1"/"lora_te2" (SDXL). */
export type LoraPrefix = 'lora_unet' | 'lora_te' | 'lora_te1' | 'lora_te2';

export interface LoraSpec {
  prefix: LoraPrefix;
  rank: number;
  alpha: number;
  /** Rank and alpha for 3x3 convolutions (LoCon); defaults to rank and alpha. */
  convRank?: number;
  convAlpha?: number;
  targets: TargetRule;
}

export interface LoraModule {
  /** kohya base key, e.g. "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q". */
  key: string;
  /** diffusers module name, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
  module: string;
  kind: 'linear' | 'conv';
  rank: number;
  alpha: number;
  downShape: number[]; // [r, in] or [r, in, k, k]
  upShape: number[]; // [out, r] or [out, r, 1, 1]
  down: Value;
  up: Value;
}

export const kohyaKey = (prefix: LoraPrefix, module: string): string => `${prefix}_${module.replace(/\./g, '_')}`;
export const downName = (key: string): string => `${key}.lora_down.weight`;
export const upName = (key: string): string => `${key}.lora_up.weight`;
export const alphaName = (key: string): string => `${key}.alpha`;

/** Supplies a LoRA tensor by name (default: a float32 graph input of that name). */
export type LoraTensorSource = (name: string, shape: number[]) => Value;

export class LoraNetwork {
  readonly modules: LoraModule[] = [];

  constructor(
    readonly spec: LoraSpec,
    private readonly source?: LoraTensorSource,
  ) {}

  /**
   * The layer hook. `strength` multiplies every adapter: a number (1 when training) or a scalar
   * float32 graph input, so a strength slider needs no graph rebuild.
   */
  hook(strength: Value | number = 1, next?: LayerHook): LayerHook {
    return (call: LayerCall): Value => {
      const output = next ? next(call) : call.output;
      if (!this.spec.targets.matches(call.module, call.kind, call.weightShape)) return output;
      return op.add(output, this.adapter(call, strength)); // same shape as the layer output
    };
  }

  private adapter(call: LayerCall, strength: Value | number): Value {
    const g = call.input.graph;
    const pointwise = call.kind === 'linear' || (call.weightShape[2] === 1 && call.weightShape[3] === 1);
    const rank = pointwise ? this.spec.rank : (this.spec.convRank ?? this.spec.rank);
    const alpha = pointwise ? this.spec.alpha : (this.spec.convAlpha ?? this.spec.alpha);
    const key = kohyaKey(this.spec.prefix, call.module);
    const [outF, inF] = call.weightShape;
    const dtype = call.output.dtype;
    const kernel = call.weightShape.slice(2);
    const downShape = [rank, inF, ...kernel];
    const upShape = [outF, rank, ...kernel.map(() => 1)];
    const tensor = this.source ?? ((name: string, shape: number[]) => g.input(name, 'float32', shape));
    const down = tensor(downName(key), downShape);
    const up = tensor(upName(key), upShape);
    this.modules.push({ key, module: call.module, kind: call.kind, rank, alpha, downShape, upShape, down, up });

    const scale = alpha / rank;
    let scaled: Value; // scale * up(down(x))
    if (call.kind === 'linear') {
      const x = call.input; // [..., in]
      const rows = op.reshape(x, [-1, inF]); // [rows, in]
      const h = op.gemm(rows, op.cast(down, dtype), null, { transB: true }); // [rows, r]
      const y = op.gemm(h, op.cast(up, dtype), null, { transB: true, alpha: scale }); // [rows, out], scaled in the GEMM (no extra pass)
      scaled = op.reshape(y, call.output.shape); // [..., out]
    } else {
      const conv = call.conv!;
      const h = op.conv(call.input, op.cast(down, dtype), null, conv); // [N, r, H', W']
      scaled = op.mul(op.conv(h, op.cast(up, dtype), null), scale); // [N, out, H', W']
    }
    if (strength === 1) return scaled;
    return op.mul(scaled, typeof strength === 'number' ? strength : op.cast(strength, dtype));
  }

  /** Names of every trainable tensor, in a stable order (down, up per module). */
  parameterNames(): string[] {
    return this.modules.flatMap((m) => [downName(m.key), upName(m.key)]);
  }

  parameters(): Value[] {
    return this.modules.flatMap((m) => [m.down, m.up]);
  }
}

/** Where each LoRA tensor lives in one flat float32 vector (training keeps weights and moments flat). */
export interface FlatLoraLayout {
  tensors: { name: string; shape: number[]; offset: number; size: number }[];
  size: number;
}

export function flatLayout(modules: readonly Pick<LoraModule, 'key' | 'downShape' | 'upShape'>[]): FlatLoraLayout {
  const tensors: FlatLoraLayout['tensors'] = [];
  let offset = 0;
  for (const m of modules) {
    for (const [name, shape] of [[downName(m.key), m.downShape], [upName(m.key), m.upShape]] as const) {
      const size = shape.reduce((a, b) => a * b, 1);
      tensors.push({ name, shape: [...shape], offset, size });
      offset += size;
    }
  }
  return { tensors, size: offset };
}

/**
 * Fresh adapter weights: down kaiming-uniform (torch's default Linear init, a = sqrt(5), which
 * is U(-1/sqrt(fan_in), 1/sqrt(fan_in))), up zero, so training starts from the base model exactly.
 */
export function initLoraWeights(modules: readonly LoraModule[], uniform: () => number): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  for (const m of modules) {
    const fanIn = m.downShape.slice(1).reduce((a, b) => a * b, 1);
    const bound = 1 / Math.sqrt(fanIn);
    const down = new Float32Array(m.downShape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < down.length; i++) down[i] = (2 * uniform() - 1) * bound;
    weights.set(downName(m.key), down);
    weights.set(upName(m.key), new Float32Array(m.upShape.reduce((a, b) => a * b, 1)));
  }
  return weights;
}
