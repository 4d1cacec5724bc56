// CLIP text encoder graphs against transformers' CLIPTextModel / CLIPTextModelWithProjection
// outputs stored in the golden fixtures (float32, CPU), plus a float16 build of the same graph.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph, type Value } from '../../../src-main/engine/graph/graph';
import type { DType } from '../../../src-main/engine/graph/dtype';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { Params } from '../../../src-main/engine/nn/params';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import {
  buildClipTextModel,
  clipTextKeyLayout,
  type ClipTextOutputs,
  type CLIPTextConfig,
} from '../../../src-main/engine/models/clip-text-model';
import { goldenDir, readGoldenTensors, type GoldenTensor } from '../../helpers/golden';
import { TestLocator } from '../../helpers/locator';
import { describeDifference, difference, floats } from './compare';

const sd15 = goldenDir('tiny-sd15');
const sdxl = goldenDir('tiny-sdxl');
const sd15Cases = readGoldenTensors(join(sd15, 'cases.safetensors'));
const sdxlCases = readGoldenTensors(join(sdxl, 'cases.safetensors'));

const readConfig = (dir: string): CLIPTextConfig => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as CLIPTextConfig;

function golden(cases: Map<string, GoldenTensor>, key: string): GoldenTensor {
  const t = cases.get(key);
  if (!t) throw new Error(`golden case ${key} is missing`);
  return t;
}

/** The first `rows` rows of an int64 [N, 77] golden tensor as a graph feed. */
function idsFeed(ids: GoldenTensor, rows: number): HostTensor {
  const length = ids.shape[1];
  return { dtype: 'int64', shape: [rows, length], data: (ids.data as BigInt64Array).slice(0, rows * length) };
}

interface Built {
  locator: TestLocator;
  session: Session;
}

/**
 * Builds the text encoder of `modelDir` over input_ids [rows, 77] in `dtype`, with the outputs
 * `pick` chooses (cast to float32 for comparison), and opens a CPU session on it.
 */
async function buildAndOpen(
  modelDir: string,
  rows: number,
  dtype: DType,
  pick: (out: ClipTextOutputs) => Record<string, Value>,
  configOverride: Partial<CLIPTextConfig> = {},
): Promise<Built> {
  const weights = join(modelDir, 'model.safetensors');
  const locator = new TestLocator([weights]);
  const bytes = readFileSync(weights);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as object;
  const layout = clipTextKeyLayout(Object.keys(header)); // transformers 5 CLIPTextModel files have no text_model. prefix
  const g = new Graph('clip_text');
  const inputIds = g.input('input_ids', 'int64', [rows, 77]);
  const p = new Params(g, locator, { dtype });
  const out = buildClipTextModel(p, { ...readConfig(modelDir), ...configOverride }, inputIds, { textModelPrefix: layout.textModelPrefix });
  for (const [name, value] of Object.entries(pick(out))) g.output(op.cast(value, 'float32'), name);
  return { locator, session: await Session.create(serializeModel(g)) };
}

describe('CLIP text encoder (tiny-sd15, CLIPTextModel, quick_gelu)', () => {
  const modelDir = join(sd15, 'model', 'text_encoder');
  const ids = golden(sd15Cases, 'tokenizer.input_ids');

  it('matches last_hidden_state and the penultimate hidden state, and takes every weight', async () => {
    const { locator, session } = await buildAndOpen(modelDir, 4, 'float32', (o) => ({
      last: o.lastHiddenState,
      penultimate: o.hiddenStates.at(-2)!,
      // the clip-skip path: the final norm applied to a chosen hidden state (here the last one)
      renormed: o.finalLayerNorm(o.hiddenStates.at(-1)!),
    }));
    expect(locator.untaken()).toEqual([]);
    const result = await session.run({ input_ids: idsFeed(ids, 4) });
    for (const [name, key] of [
      ['last', 'text_encoder.last_hidden_state'],
      ['penultimate', 'text_encoder.penultimate_hidden_state'],
      ['renormed', 'text_encoder.last_hidden_state'],
    ]) {
      expect(result[name].shape).toEqual([4, 77, 32]);
      const d = difference(floats(result[name]), floats(golden(sd15Cases, key)));
      console.log(describeDifference(`tiny-sd15 ${name} vs ${key}`, d));
      expect(d.outside).toBe(0);
    }
  });

  it('pools at the first end-of-text token, as transformers does under both of its rules', async () => {
    // The golden input_ids hold no end-of-text token (see the report on the fixture), so the
    // selection is checked on ids made here: pooled must equal last_hidden_state at the first
    // eos_token_id (704, the largest id, as in real CLIP vocabularies), or at position 0 when a
    // row has none (torch's argmax of all-false).
    const config = readConfig(modelDir);
    const eos = config.eos_token_id!;
    const rows = [
      [703, 5, 17, 300, eos, ...new Array<number>(72).fill(eos)], // padded with end-of-text
      [703, 42, 42, eos, 0, 0, 9, eos, ...new Array<number>(69).fill(0)], // padded with "!" (id 0), as tokenizer_2
      Array.from({ length: 77 }, (_, i) => 10 + i), // no end-of-text: the rules differ here
    ];
    const expectedPositions = [4, 3, 0];
    const feed: HostTensor = { dtype: 'int64', shape: [3, 77], data: BigInt64Array.from(rows.flat(), BigInt) };
    const hidden = config.hidden_size;
    // eos_token_id 2 selects the legacy rule, argmax(input_ids): the same positions while the
    // end-of-text token is present, the largest id's position (76) in the row without one
    for (const [override, positions] of [[{}, expectedPositions], [{ eos_token_id: 2 }, [4, 3, 76]]] as const) {
      const { session } = await buildAndOpen(modelDir, 3, 'float32', (o) => ({ pooled: o.pooled, last: o.lastHiddenState }), override);
      const result = await session.run({ input_ids: feed });
      const last = floats(result.last); // [3, 77, H]
      const expected = new Float32Array(3 * hidden);
      positions.forEach((pos, b) => expected.set(last.subarray((b * 77 + pos) * hidden, (b * 77 + pos + 1) * hidden), b * hidden));
      expect(result.pooled.shape).toEqual([3, hidden]);
      expect(Array.from(floats(result.pooled))).toEqual(Array.from(expected));
    }
  });

  it('refuses an activation it does not implement', () => {
    const g = new Graph('clip_text');
    const p = new Params(g, new TestLocator([join(modelDir, 'model.safetensors')]), { dtype: 'float32' });
    const config = { ...readConfig(modelDir), hidden_act: 'swish' };
    expect(() => buildClipTextModel(p, config, g.input('input_ids', 'int64', [1, 77]))).toThrow(/hidden_act "swish" is not supported/);
  });

  it('float16 build (weights cast in the graph) stays close to float32', async () => {
    const { session } = await buildAndOpen(modelDir, 4, 'float16', (o) => ({ last: o.lastHiddenState, penultimate: o.hiddenStates.at(-2)! }));
    const result = await session.run({ input_ids: idsFeed(ids, 4) });
    for (const [name, key] of [['last', 'text_encoder.last_hidden_state'], ['penultimate', 'text_encoder.penultimate_hidden_state']]) {
      const reference = floats(golden(sd15Cases, key));
      const d = difference(floats(result[name]), reference, { rtol: 1e-2, atol: 1e-2 });
      console.log(describeDifference(`tiny-sd15 ${key} float16 (CPU) vs float32`, d));
      expect(d.outside).toBe(0);
    }
  });
});

describe('CLIP text encoders (tiny-sdxl)', () => {
  it('text_encoder (CLIPTextModel, quick_gelu): penultimate hidden state, every weight taken', async () => {
    const { locator, session } = await buildAndOpen(join(sdxl, 'model', 'text_encoder'), 2, 'float32', (o) => ({
      penultimate: o.hiddenStates.at(-2)!,
      last: o.lastHiddenState,
    }));
    expect(locator.untaken()).toEqual([]);
    const result = await session.run({ input_ids: idsFeed(golden(sdxlCases, 'tokenizer.input_ids'), 2) });
    const d = difference(floats(result.penultimate), floats(golden(sdxlCases, 'text_encoder.penultimate_hidden_state')));
    console.log(describeDifference('tiny-sdxl text_encoder.penultimate_hidden_state', d));
    expect(d.outside).toBe(0);
  });

  it('text_encoder_2 (CLIPTextModelWithProjection, gelu, text_model. keys): penultimate state and text_embeds', async () => {
    const { locator, session } = await buildAndOpen(join(sdxl, 'model', 'text_encoder_2'), 2, 'float32', (o) => ({
      penultimate: o.hiddenStates.at(-2)!,
      textEmbeds: o.textEmbeds!,
    }));
    expect(locator.untaken()).toEqual([]);
    const result = await session.run({ input_ids: idsFeed(golden(sdxlCases, 'tokenizer_2.input_ids'), 2) });
    expect(result.textEmbeds.shape).toEqual([2, 32]);
    for (const [name, key] of [['penultimate', 'text_encoder_2.penultimate_hidden_state'], ['textEmbeds', 'text_encoder_2.text_embeds']]) {
      const d = difference(floats(result[name]), floats(golden(sdxlCases, key)));
      console.log(describeDifference(`tiny-sdxl ${key}`, d));
      expect(d.outside).toBe(0);
    }
  });

  it('text_encoder_2 float16 build stays close to float32', async () => {
    const { session } = await buildAndOpen(join(sdxl, 'model', 'text_encoder_2'), 2, 'float16', (o) => ({
      penultimate: o.hiddenStates.at(-2)!,
      textEmbeds: o.textEmbeds!,
    }));
    const result = await session.run({ input_ids: idsFeed(golden(sdxlCases, 'tokenizer_2.input_ids'), 2) });
    for (const [name, key] of [['penultimate', 'text_encoder_2.penultimate_hidden_state'], ['textEmbeds', 'text_encoder_2.text_embeds']]) {
      const d = difference(floats(result[name]), floats(golden(sdxlCases, key)), { rtol: 1e-2, atol: 1e-2 });
      console.log(describeDifference(`tiny-sdxl ${key} float16 (CPU) vs float32`, d));
      expect(d.outside).toBe(0);
    }
  });
});
