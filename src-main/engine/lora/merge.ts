// Merging LoRAs into a base model's weights: W' = W + sum_i strength_i * (alpha_i / rank_i) * up_i @ down_i
// (a conv LoRA's down [r, in, kh, kw] read as [r, in*kh*kw] and up [out, r, 1, 1] as [out, r]).
// Merged tensors are computed one at a time when asked for and keep the original dtype, so a
// merged model can be built into a graph (generation with the LoRA baked in) or streamed to a new
// single-file checkpoint without holding the model in memory.
//
//   loraDelta(module): Float32Array                       (alpha / rank) * up @ down, in the weight's layout
//   mergedWeightEntries(model, loras): MergedEntries       per component, diffusers key -> merged WeightEntry
//   mergeIntoModel(model, loras): OpenedModel              the same model with merged weights
//   mergeIntoCheckpoint(model, loras, outPath): { path, tensors, bytes, modules }
import type { OpenedModel } from '../io/model-folder';
import { float32ToBfloat16, float32ToFloat16 } from '../io/dtype-convert';
import { canonicalTextKey, clipTextPrefixOf, writeSingleFile } from '../io/single-file-writer';
import { WeightSource, type WeightEntry } from '../io/weights';
import type { LoraComponent, LoraModuleWeights } from './lora-import';

export interface WeightedLora {
  lora: { name: string; modules: readonly LoraModuleWeights[] };
  strength: number;
}

export type MergedEntries = Record<LoraComponent, Map<string, WeightEntry>>;

/** (alpha / rank) * up @ down as a flat [out, in * kh * kw] array (the weight's own layout). */
export function loraDelta(m: LoraModuleWeights): Float32Array {
  const rank = m.rank;
  const out = m.upShape[0]!;
  const inner = m.downShape.slice(1).reduce((a, b) => a * b, 1);
  const scale = m.alpha / rank;
  const delta = new Float32Array(out * inner);
  for (let o = 0; o < out; o++) {
    const row = delta.subarray(o * inner, (o + 1) * inner);
    for (let r = 0; r < rank; r++) {
      const u = m.up[o * rank + r]! * scale;
      if (u === 0) continue;
      const down = m.down.subarray(r * inner, (r + 1) * inner);
      for (let i = 0; i < inner; i++) row[i]! += u * down[i]!;
    }
  }
  return delta;
}

const sourceOf = (model: OpenedModel, component: LoraComponent): WeightSource | undefined =>
  component === 'unet' ? model.unet.weights : component === 'textEncoder' ? model.textEncoder.weights : model.textEncoder2?.weights;

/** The model's own key for a LoRA module's weight (text encoders may store "text_model."-less keys). */
function keyResolver(source: WeightSource, component: LoraComponent): (module: string) => string {
  if (component === 'unet') return (module) => `${module}.weight`;
  const prefix = clipTextPrefixOf(source.keys());
  const byCanonical = new Map(source.keys().map((k) => [canonicalTextKey(k, prefix), k]));
  return (module) => byCanonical.get(`${module}.weight`) ?? `${module}.weight`;
}

function encode(values: Float32Array, dtype: WeightEntry['dtype'], where: string): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case 'F16': {
      const bits = float32ToFloat16(values);
      return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
    }
    case 'BF16': {
      const bits = float32ToBfloat16(values);
      return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
    }
    default:
      throw new Error(`${where}: cannot merge into a ${dtype} tensor`);
  }
}

/** Merged weight entries per component, keyed by the model's tensor names; computed on demand. */
export function mergedWeightEntries(model: OpenedModel, loras: readonly WeightedLora[]): MergedEntries {
  const byKey: Record<LoraComponent, Map<string, { module: LoraModuleWeights; strength: number }[]>> = {
    unet: new Map(),
    textEncoder: new Map(),
    textEncoder2: new Map(),
  };
  const resolvers = new Map<LoraComponent, (module: string) => string>();
  for (const { lora, strength } of loras) {
    if (strength === 0) continue;
    for (const m of lora.modules) {
      const source = sourceOf(model, m.component);
      if (!source) throw new Error(`LoRA ${lora.name}: module ${m.module} targets a ${m.component} this model does not have`);
      let resolve = resolvers.get(m.component);
      if (!resolve) resolvers.set(m.component, (resolve = keyResolver(source, m.component)));
      const key = resolve(m.module);
      const entry = source.entry(key);
      if (!entry) throw new Error(`LoRA ${lora.name}: the model has no weight ${key} for module ${m.module}`);
      const count = entry.shape.reduce((a, b) => a * b, 1);
      if (count !== m.upShape[0]! * m.downShape.slice(1).reduce((a, b) => a * b, 1))
        throw new Error(`LoRA ${lora.name}: module ${m.module} does not fit the model's ${key} [${entry.shape.join(', ')}]`);
      const list = byKey[m.component].get(key) ?? [];
      list.push({ module: m, strength });
      byKey[m.component].set(key, list);
    }
  }
  const result: MergedEntries = { unet: new Map(), textEncoder: new Map(), textEncoder2: new Map() };
  for (const component of ['unet', 'textEncoder', 'textEncoder2'] as const) {
    const source = sourceOf(model, component);
    for (const [key, parts] of byKey[component]) {
      const original = source!.entry(key)!;
      const length = original.shape.reduce((a, b) => a * b, 1) * (original.dtype === 'F32' ? 4 : 2);
      const compute = (): Uint8Array => {
        const weight = Float32Array.from(source!.readFloat32(key)); // a copy: the merge writes into it
        for (const { module, strength } of parts) {
          const delta = loraDelta(module);
          for (let i = 0; i < weight.length; i++) weight[i]! += strength * delta[i]!;
        }
        return encode(weight, original.dtype, `${source!.description} ${key}`);
      };
      result[component].set(key, { ...original, file: `${original.file} + LoRA`, bytes: { kind: 'computed', length, compute } });
    }
  }
  return result;
}

/** The same model with the LoRAs merged into its UNet and text encoder weights (fresh WeightSources). */
export function mergeIntoModel(model: OpenedModel, loras: readonly WeightedLora[]): OpenedModel {
  const merged = mergedWeightEntries(model, loras);
  const swap = (source: WeightSource, entries: Map<string, WeightEntry>): WeightSource =>
    source.view((name, entry) => [name, entries.get(name) ?? entry], `${source.description} (LoRA merged)`);
  return {
    ...model,
    unet: { ...model.unet, weights: swap(model.unet.weights, merged.unet) },
    vae: { ...model.vae, weights: model.vae.weights.view((name) => name) },
    textEncoder: { ...model.textEncoder, weights: swap(model.textEncoder.weights, merged.textEncoder) },
    textEncoder2: model.textEncoder2 && { ...model.textEncoder2, weights: swap(model.textEncoder2.weights, merged.textEncoder2) },
  };
}

/**
 * Writes base model + LoRAs as a new single-file checkpoint (LDM key layout), streaming and
 * atomically: a failure leaves no file at `outPath`. Every LoRA is resolved before anything is written.
 */
export function mergeIntoCheckpoint(
  model: OpenedModel,
  loras: readonly (WeightedLora & { hash?: string })[],
  outPath: string,
): { path: string; tensors: number; bytes: number; modules: number } {
  const merged = mergedWeightEntries(model, loras);
  const record = loras.map(({ lora, strength, hash }) => ({ name: lora.name, strength, ...(hash ? { hash } : {}) }));
  const written = writeSingleFile(model, outPath, {
    replace: merged,
    metadata: { lora_studio_merged_loras: JSON.stringify(record) },
  });
  return { ...written, modules: merged.unet.size + merged.textEncoder.size + merged.textEncoder2.size };
}
