// LoRA slots for generation: adapters attached through the layer hook whose down/up weights and
// strength are graph INPUTS, so one session serves any LoRA of the slot's shapes at any strength
// (a strength slider, or the trainer's current weights for previews) without a rebuild. A slot is
// described by its modules' shapes; modules may differ in rank (imported files do). Each adapter
// adds  strength * up(down(x))  to its layer's output; alpha / rank is folded into the fed `up`.
//
//   slotSpecOf(name, lora): LoraSlotSpec                  the slot an imported LoRA needs
//   slotHook(component, slots, next?): { hook, finish }
//   slotFeeds(component, slots, applications): Record<input name, HostTensor>
import type { Value } from '../graph/graph';
import * as op from '../graph/ops';
import type { LoraComponent, LoraModuleWeights } from '../lora/lora-import';
import type { LayerCall, LayerHook } from '../nn/params';
import type { HostTensor } from '../runtime/session';

export interface LoraSlotModule {
  component: LoraComponent;
  /** Canonical module name (as LoraModuleWeights.module). */
  module: string;
  kind: 'linear' | 'conv';
  downShape: readonly number[];
  upShape: readonly number[];
}

export interface LoraSlotSpec {
  /** Shown in errors. */
  name: string;
  modules: readonly LoraSlotModule[];
}

/** A LoRA's weights put into slot `slot` at `strength`. */
export interface LoraApplication {
  /** Index into the Generator's slots, or its name. */
  slot: number | string;
  weights: { modules: readonly LoraModuleWeights[] };
  strength: number;
  /** For the PNG parameters: name and A1111 short hash of the file. */
  name?: string;
  hash?: string;
}

export function slotSpecOf(name: string, lora: { modules: readonly LoraModuleWeights[] }): LoraSlotSpec {
  return {
    name,
    modules: lora.modules.map((m) => ({ component: m.component, module: m.module, kind: m.kind, downShape: [...m.downShape], upShape: [...m.upShape] })),
  };
}

export const strengthInputName = (slot: number): string => `lora${slot}.strength`;
const downInputName = (slot: number, m: LoraSlotModule): string => `lora${slot}.${m.component}.${m.module}.down`;
const upInputName = (slot: number, m: LoraSlotModule): string => `lora${slot}.${m.component}.${m.module}.up`;

/**
 * The hook that adds every slot's adapter to the layers of `component`; the builder reports
 * modules under the slots' (canonical) names. Call `finish()` after the build: it throws when a
 * slot module was never met (the LoRA does not fit this model).
 */
export function slotHook(
  component: LoraComponent,
  slots: readonly LoraSlotSpec[],
  next?: LayerHook,
): { hook: LayerHook; finish: () => void } {
  const wanted = new Map<string, { slot: number; module: LoraSlotModule }[]>();
  slots.forEach((spec, slot) => {
    for (const m of spec.modules) {
      if (m.component !== component) continue;
      const list = wanted.get(m.module) ?? [];
      list.push({ slot, module: m });
      wanted.set(m.module, list);
    }
  });
  const seen = new Set<string>();
  const strengths = new Map<number, Value>();

  const hook: LayerHook = (call: LayerCall): Value => {
    let output = next ? next(call) : call.output;
    const name = call.module;
    const adapters = wanted.get(name);
    if (!adapters) return output;
    seen.add(name);
    const g = call.input.graph;
    for (const { slot, module } of adapters) {
      const [outF, inF] = call.weightShape;
      const kernel = call.weightShape.slice(2);
      const rank = module.downShape[0]!;
      const expectedDown = [rank, inF, ...kernel].join();
      const expectedUp = [outF, rank, ...kernel.map(() => 1)].join();
      if (module.downShape.join() !== expectedDown || module.upShape.join() !== expectedUp)
        throw new Error(
          `LoRA slot "${slots[slot]!.name}": ${component} module ${name} has down [${module.downShape.join(', ')}] / up [${module.upShape.join(', ')}], the layer's weight is [${call.weightShape.join(', ')}]`,
        );
      let strength = strengths.get(slot);
      // One strength input per slot and graph: SDXL's text graph holds two encoders, each with its own hook.
      if (!strength) strengths.set(slot, (strength = g.inputs.find((v) => v.name === strengthInputName(slot)) ?? g.input(strengthInputName(slot), 'float32', [])));
      const dtype = call.output.dtype;
      const down = op.cast(g.input(downInputName(slot, module), 'float32', module.downShape), dtype); // [r, in(, k, k)]
      const up = op.cast(g.input(upInputName(slot, module), 'float32', module.upShape), dtype); // [out, r(, 1, 1)]
      let delta: Value;
      if (call.kind === 'linear') {
        const rows = op.reshape(call.input, [-1, inF!]); // [rows, in]
        const h = op.gemm(rows, down, null, { transB: true }); // [rows, r]
        delta = op.reshape(op.gemm(h, up, null, { transB: true }), call.output.shape); // [..., out]
      } else {
        const h = op.conv(call.input, down, null, call.conv); // [N, r, H', W']
        delta = op.conv(h, up, null); // [N, out, H', W']
      }
      output = op.add(output, op.mul(delta, op.cast(strength, dtype))); // same shape as the layer output
    }
    return output;
  };

  const finish = (): void => {
    const missing = [...wanted.keys()].filter((m) => !seen.has(m));
    if (missing.length > 0) {
      const slot = slots[wanted.get(missing[0]!)![0]!.slot]!;
      throw new Error(`LoRA slot "${slot.name}": ${missing.length} ${component} module(s) are not layers of this model, e.g. ${missing[0]}`);
    }
  };
  return { hook, finish };
}

const zerosCache = new Map<number, Float32Array>();
const zeros = (n: number): Float32Array => {
  let z = zerosCache.get(n);
  if (!z) zerosCache.set(n, (z = new Float32Array(n)));
  return z;
};
const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Resolves an application's slot (index or name) to an index. */
export function slotIndex(slots: readonly LoraSlotSpec[], slot: number | string): number {
  const index = typeof slot === 'number' ? slot : slots.findIndex((s) => s.name === slot);
  if (index < 0 || index >= slots.length || !Number.isInteger(index))
    throw new Error(`no LoRA slot ${JSON.stringify(slot)} (the generator has ${slots.length}: ${slots.map((s) => s.name).join(', ') || 'none'})`);
  return index;
}

/**
 * Feeds for the slot inputs of one component's graph: each application's weights (up scaled by
 * alpha / rank) and strength; unused slots get strength 0 and zero weights. `inputNames` limits
 * the feeds to inputs the session has.
 */
export function slotFeeds(
  component: LoraComponent,
  slots: readonly LoraSlotSpec[],
  applications: readonly LoraApplication[],
  inputNames: ReadonlySet<string>,
): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  const bySlot = new Map<number, LoraApplication>();
  for (const a of applications) {
    const index = slotIndex(slots, a.slot);
    if (bySlot.has(index)) throw new Error(`LoRA slot "${slots[index]!.name}" is given two LoRAs`);
    if (!Number.isFinite(a.strength)) throw new Error(`LoRA ${a.name ?? slots[index]!.name}: strength ${a.strength} is not a number`);
    bySlot.set(index, a);
  }
  slots.forEach((spec, slot) => {
    const application = bySlot.get(slot);
    const given = new Map((application?.weights.modules ?? []).map((m) => [`${m.component}:${m.module}`, m]));
    const slotModules = new Set(spec.modules.map((m) => `${m.component}:${m.module}`));
    const extra = [...given.keys()].filter((k) => !slotModules.has(k));
    if (extra.length > 0)
      throw new Error(`LoRA ${application?.name ?? ''} has ${extra.length} module(s) that slot "${spec.name}" was not built with, e.g. ${extra[0]}`);
    const strengthName = strengthInputName(slot);
    if (inputNames.has(strengthName)) feeds[strengthName] = { dtype: 'float32', shape: [], data: Float32Array.of(application?.strength ?? 0) };
    for (const m of spec.modules) {
      if (m.component !== component) continue;
      const down = downInputName(slot, m);
      const up = upInputName(slot, m);
      if (!inputNames.has(down)) continue;
      const w = given.get(`${m.component}:${m.module}`);
      if (w && (w.downShape.join() !== m.downShape.join() || w.upShape.join() !== m.upShape.join()))
        throw new Error(`LoRA ${application?.name ?? ''}: module ${m.module} has shapes [${w.downShape.join(', ')}] / [${w.upShape.join(', ')}], slot "${spec.name}" expects [${m.downShape.join(', ')}] / [${m.upShape.join(', ')}]`);
      const scale = w ? w.alpha / w.rank : 0;
      feeds[down] = { dtype: 'float32', shape: m.downShape, data: w ? w.down : zeros(count(m.downShape)) };
      feeds[up] = { dtype: 'float32', shape: m.upShape, data: w ? (scale === 1 ? w.up : w.up.map((v) => v * scale)) : zeros(count(m.upShape)) };
    }
  });
  return feeds;
}
