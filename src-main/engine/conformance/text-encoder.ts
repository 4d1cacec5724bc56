// Text encoder cases: `<text encoder folder>.last_hidden_state` / `.penultimate_hidden_state`
// [N, 77, H] and `.text_embeds` [N, P] (CLIPTextModelWithProjection) from the reference's own
// token ids (`<tokenizer folder>.input_ids`, first N rows), and SDXL's `prompt_embeds` [N, 77, H1 + H2]
// = the two penultimate states side by side (what the SDXL UNet receives).
import { Graph, type Value } from '../graph/graph';
import { serializeModel } from '../graph/onnx-model';
import type { CLIPTextConfig, ComponentWithWeights, OpenedModel } from '../io/model-folder';
import { buildClipTextModel, clipTextKeyLayout } from '../models/clip-text-model';
import { Params } from '../nn/params';
import { Session } from '../runtime/session';
import {
  attempt,
  caseTensor,
  compareClose,
  formatTolerance,
  FLOAT32_TOLERANCE,
  int64Feed,
  type CaseFamily,
  type CaseResult,
  type ConformanceContext,
} from './context';

const KEY = /^(text_encoder(?:_(\d+))?)\.(last_hidden_state|penultimate_hidden_state|text_embeds)$/;
const PROMPT_EMBEDS = 'prompt_embeds';

const OUTPUTS = {
  last_hidden_state: 'last',
  penultimate_hidden_state: 'penultimate',
  text_embeds: 'textEmbeds',
} as const;

function componentOf(model: OpenedModel, folderName: string): ComponentWithWeights<CLIPTextConfig> {
  const component =
    folderName === 'text_encoder'
      ? model.textEncoder
      : folderName === 'text_encoder_2'
        ? model.textEncoder2
        : undefined;
  if (!component) throw new Error(`the model has no ${folderName}/`);
  return component;
}

const tokenizerKeyOf = (folderName: string): string =>
  `${folderName.replace(/^text_encoder/, 'tokenizer')}.input_ids`;

/** Runs one text encoder on the reference ids; returns the requested outputs [rows, ...] as float32. */
async function encode(
  ctx: ConformanceContext,
  folderName: string,
  rows: number,
  wanted: ReadonlySet<keyof typeof OUTPUTS>,
): Promise<Map<string, Float32Array>> {
  const { config, weights } = componentOf(ctx.model(), folderName);
  const ids = int64Feed(caseTensor(ctx, tokenizerKeyOf(folderName)), rows); // [rows, 77]
  const source = weights.view((n) => n);
  const layout = clipTextKeyLayout(source.keys());
  const g = new Graph(`${folderName}_conformance`);
  const inputIds = g.input('input_ids', 'int64', [...ids.shape]);
  const p = new Params(g, source, { dtype: 'float32' });
  const out = buildClipTextModel(p, config, inputIds, {
    textModelPrefix: layout.textModelPrefix,
    withProjection: wanted.has('text_embeds') || layout.hasProjection,
  });
  source.assertAllTaken();
  const values: Record<string, Value | undefined> = {
    last: out.lastHiddenState,
    penultimate: out.hiddenStates.at(-2),
    textEmbeds: out.textEmbeds,
  };
  for (const key of wanted) {
    const value = values[OUTPUTS[key]];
    if (!value) throw new Error(`${folderName}: the model gives no ${key}`);
    g.output(value, OUTPUTS[key]);
  }
  const session = await Session.create(serializeModel(g));
  try {
    const result = await session.run({ input_ids: ids });
    return new Map([...wanted].map((key) => [key, result[OUTPUTS[key]]!.data as Float32Array]));
  } finally {
    await session.release();
  }
}

/** [rows, L, a] and [rows, L, b] -> [rows, L, a + b]. */
function concatLastAxis(a: Float32Array, aWidth: number, b: Float32Array, bWidth: number): Float32Array {
  const positions = a.length / aWidth;
  const out = new Float32Array(positions * (aWidth + bWidth));
  for (let i = 0; i < positions; i++) {
    out.set(a.subarray(i * aWidth, (i + 1) * aWidth), i * (aWidth + bWidth));
    out.set(b.subarray(i * bWidth, (i + 1) * bWidth), i * (aWidth + bWidth) + aWidth);
  }
  return out;
}

export const textEncoderCases: CaseFamily = {
  name: 'text-encoder',
  claims: (key) => KEY.test(key) || key === PROMPT_EMBEDS,

  async run(ctx) {
    const tolerance = formatTolerance(FLOAT32_TOLERANCE);
    // folder name -> requested outputs and the rows they need
    const plan = new Map<string, { wanted: Set<keyof typeof OUTPUTS>; rows: number }>();
    const want = (folderName: string, output: keyof typeof OUTPUTS, rows: number): void => {
      const entry = plan.get(folderName) ?? { wanted: new Set(), rows: 0 };
      entry.wanted.add(output);
      entry.rows = Math.max(entry.rows, rows);
      plan.set(folderName, entry);
    };
    const keys = [...ctx.cases.keys()].filter((k) => KEY.test(k));
    for (const key of keys) {
      const [, folderName, , output] = KEY.exec(key)!;
      want(folderName!, output as keyof typeof OUTPUTS, ctx.cases.get(key)!.shape[0]!);
    }
    const promptEmbeds = ctx.cases.get(PROMPT_EMBEDS);
    if (promptEmbeds)
      for (const folderName of ['text_encoder', 'text_encoder_2'])
        want(folderName, 'penultimate_hidden_state', promptEmbeds.shape[0]!);

    const results: CaseResult[] = [];
    const encoded = new Map<string, Map<string, Float32Array>>();
    for (const [folderName, { wanted, rows }] of plan) {
      const ours = await attempt(folderName, tolerance, async () => {
        encoded.set(folderName, await encode(ctx, folderName, rows, wanted));
        return [];
      });
      const mine = keys.filter((k) => KEY.exec(k)![1] === folderName);
      if (ours.length > 0) {
        // could not build or run: every case of this encoder is an error with that message
        results.push(...mine.map((name) => ({ ...ours[0]!, name })));
        continue;
      }
      for (const key of mine) {
        const output = KEY.exec(key)![3] as keyof typeof OUTPUTS;
        const expected = caseTensor(ctx, key);
        const all = encoded.get(folderName)!.get(output)!;
        results.push(compareClose(key, all.subarray(0, expected.data.length), expected.data as Float32Array));
      }
    }
    if (promptEmbeds) {
      results.push(
        ...(await attempt(PROMPT_EMBEDS, tolerance, () => {
          if (ctx.model().kind !== 'sdxl')
            throw new Error('prompt_embeds is defined for SDXL models (two text encoders)');
          const first = encoded.get('text_encoder')?.get('penultimate_hidden_state');
          const second = encoded.get('text_encoder_2')?.get('penultimate_hidden_state');
          if (!first || !second) throw new Error('a text encoder failed (see its rows)');
          const [rows, length, width] = promptEmbeds.shape as [number, number, number];
          const firstWidth = first.length / (plan.get('text_encoder')!.rows * length);
          const secondWidth = second.length / (plan.get('text_encoder_2')!.rows * length);
          if (firstWidth + secondWidth !== width)
            throw new Error(
              `the two penultimate states are ${firstWidth} + ${secondWidth} wide, prompt_embeds ${width}`,
            );
          const ours = concatLastAxis(
            first.subarray(0, rows * length * firstWidth),
            firstWidth,
            second.subarray(0, rows * length * secondWidth),
            secondWidth,
          );
          return [
            compareClose(
              PROMPT_EMBEDS,
              ours,
              promptEmbeds.data as Float32Array,
              FLOAT32_TOLERANCE,
              'penultimate states of text_encoder and text_encoder_2 concatenated',
            ),
          ];
        })),
      );
    }
    return results;
  },
};
