// Sampling cases: `sample.<scheduler>.latents` (and `.image`, the VAE decode of latents /
// scaling_factor) from the reference pipeline, reproduced through OUR generation path
// (Generator.generate) with everything cases.json notes["sample.<scheduler>"] says: the full
// scheduler config, steps, guidance, prompt, negative prompt, clip skip, size; starting from
// `sample.initial_latents`.
//
// Token ids: the tiny fixtures' reference ids are broken (see tokenizer.ts) and the reference
// pipeline encoded its prompts with them, so only those ids reproduce its latents: they are fed
// through the Generator's promptIds override (see referenceIds). The negative prompt "" is encoded
// as the notes say (diffusers zeroes SDXL's negative embeddings only for negative_prompt=None).
import { join } from 'node:path';
import { schedulerConfigFrom } from '../io/configs';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';
import { Generator, type GeneratedImage, type GenerationRequest } from '../sample/txt2img';
import type { Sampler } from '../sample/create-scheduler';
import {
  attempt,
  caseTensor,
  compareClose,
  floatsOf,
  formatTolerance,
  FLOAT32_TOLERANCE,
  noteOf,
  NotSupportedError,
  type CaseFamily,
  type CaseResult,
  type ConformanceContext,
} from './context';

const KEY = /^sample\.([^.]+)\.(latents|image)$/;
const INITIAL = 'sample.initial_latents';

/** diffusers scheduler class -> our sampler name, and the case-name spelling used when a config names no class. */
const SAMPLER_OF_CLASS: Record<string, (config: Record<string, unknown>) => Sampler> = {
  DDIMScheduler: () => 'DDIM',
  EulerDiscreteScheduler: () => 'Euler',
  EulerAncestralDiscreteScheduler: () => 'Euler a',
  DPMSolverMultistepScheduler: (c) => (c.use_karras_sigmas ? 'DPM++ 2M Karras' : 'DPM++ 2M'),
};
const CLASS_OF_CASE_NAME: Record<string, string> = {
  ddim: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  dpmpp2m: 'DPMSolverMultistepScheduler',
  dpmpp2m_karras: 'DPMSolverMultistepScheduler',
};
/** Keys our sampler names force (create-scheduler.ts): a config that says otherwise is not what we would run. */
const FORCED: Partial<Record<Sampler, Record<string, unknown>>> = {
  Euler: { use_karras_sigmas: false },
  'DPM++ 2M': { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: false },
  'DPM++ 2M Karras': { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: true },
};

interface SampleNote {
  config: Record<string, unknown>;
  sampler: Sampler;
  request: GenerationRequest;
}

function readNote(ctx: ConformanceContext, name: string): SampleNote {
  const note = noteOf(ctx, `sample.${name}`);
  const where = `${ctx.folder}/cases.json notes["sample.${name}"]`;
  const raw = note.scheduler_config;
  if (typeof raw !== 'object' || raw === null) throw new Error(`${where}: scheduler_config is missing`);
  const className = (raw as Record<string, unknown>)._class_name ?? CLASS_OF_CASE_NAME[name];
  if (typeof className !== 'string')
    throw new NotSupportedError(
      `${where}: no _class_name and "${name}" is not a scheduler name we know (${Object.keys(CLASS_OF_CASE_NAME).join(', ')})`,
    );
  const samplerOf = SAMPLER_OF_CLASS[className];
  if (!samplerOf)
    throw new NotSupportedError(
      `scheduler ${className} is not supported (supported: ${Object.keys(SAMPLER_OF_CLASS).join(', ')})`,
    );
  const config: Record<string, unknown> = { ...(raw as Record<string, unknown>), _class_name: className };
  const sampler = samplerOf(config);
  for (const [key, value] of Object.entries(FORCED[sampler] ?? {}))
    if (key in config && config[key] !== value)
      throw new NotSupportedError(
        `${where}: scheduler_config ${key} = ${JSON.stringify(config[key])}; our ${sampler} always uses ${JSON.stringify(value)}`,
      );
  const number = (key: string, fallback?: number): number => {
    const v = note[key] ?? fallback;
    if (typeof v !== 'number') throw new Error(`${where}: ${key} must be a number`);
    return v;
  };
  const clipSkip = note.clip_skip;
  const request: GenerationRequest = {
    prompt: String(note.prompt ?? ''),
    negativePrompt: String(note.negative_prompt ?? ''),
    steps: number('steps'),
    guidance: number('guidance'),
    width: number('width'),
    height: number('height'),
    sampler,
    // diffusers' clip_skip counts skipped layers (None = 0); A1111's (ours) counts from 1.
    clipSkip: typeof clipSkip === 'number' ? clipSkip + 1 : 1,
  };
  // SDXL micro-conditioning: our Generator uses (height, width, 0, 0, height, width), diffusers' default.
  const timeIds = note.time_ids;
  const defaultIds = [request.height, request.width, 0, 0, request.height, request.width];
  if (timeIds !== undefined && (!Array.isArray(timeIds) || timeIds.some((v, i) => v !== defaultIds[i])))
    throw new NotSupportedError(
      `${where}: time_ids ${JSON.stringify(timeIds)} differ from the default ${JSON.stringify(defaultIds)}, which is what our Generator uses`,
    );
  return { config, sampler, request };
}

/** The recorded rows of `<tokenizer>.input_ids`, or undefined when the folder has none. */
function recordedRows(ctx: ConformanceContext, key: string): bigint[][] | undefined {
  const t = ctx.cases.get(key);
  if (!t) return undefined;
  const [rows, length] = t.shape as [number, number];
  const flat = Array.from(t.data as ArrayLike<number | bigint>, (v) => BigInt(v));
  return Array.from({ length: rows }, (_, r) => flat.slice(r * length, (r + 1) * length));
}

/**
 * The row the reference tokenizer wrote for "" when cases.json does not list "": start id, end id,
 * then padding, read off the recorded rows (all must agree on the start id and the padding id; the
 * end id is the last id before the padding, or the padding id when no distinct one exists).
 */
function emptyRow(rows: bigint[][], key: string): bigint[] {
  const start = rows[0]![0]!;
  const pad = rows[0]!.at(-1)!;
  const ends = new Set<bigint>();
  for (const row of rows) {
    if (row[0] !== start || row.at(-1) !== pad)
      throw new Error(
        `${key}: the recorded rows disagree on the start or padding id; the ids of "" cannot be read off them`,
      );
    let last = row.length - 1;
    while (last > 0 && row[last] === pad) last--;
    ends.add(last > 0 ? row[last]! : pad);
  }
  if (ends.size !== 1)
    throw new Error(
      `${key}: the recorded rows end with different ids (${[...ends].join(', ')}); the ids of "" cannot be read off them`,
    );
  const end = [...ends][0]!;
  return [start, end, ...new Array<bigint>(rows[0]!.length - 2).fill(pad)];
}

/**
 * Token ids for the Generator. A consistent reference (its rows hold our tokenizer's start token)
 * needs none: our tokenizer gives its ids (the tokenizer cases check that). An inconsistent one was
 * still what the reference pipeline encoded, so its rows are fed: the row of each text listed in
 * cases.json prompts, and for "" (when not listed) the row read off the others (emptyRow).
 */
function referenceIds(
  ctx: ConformanceContext,
  request: GenerationRequest,
): { ids: GenerationRequest['promptIds']; note: string } {
  const model = ctx.model();
  const bos = BigInt(ClipTokenizer.fromFolder(join(ctx.folder, 'model', 'tokenizer')).bosId);
  const keys =
    model.kind === 'sdxl' ? ['tokenizer.input_ids', 'tokenizer_2.input_ids'] : ['tokenizer.input_ids'];
  const recorded = keys.map((key) => recordedRows(ctx, key));
  if (recorded.every((rows) => !rows || rows.some((row) => row.includes(bos))))
    return { ids: undefined, note: 'our tokenizer ids' };
  const derived: string[] = [];
  const rowOf = (rows: bigint[][] | undefined, key: string, text: string): bigint[] => {
    if (!rows) throw new Error(`${ctx.casesFile}: ${key} is missing; the reference token ids cannot be fed`);
    const index = ctx.prompts.indexOf(text);
    if (index >= 0 && index < rows.length) return rows[index]!;
    if (text !== '')
      throw new Error(
        `${ctx.casesFile}: ${key} holds no row for ${JSON.stringify(text)} (not among the first ${rows.length} cases.json prompts), and the recorded ids are not our tokenizer's`,
      );
    derived.push(key);
    return emptyRow(rows, key);
  };
  const negative = request.negativePrompt ?? '';
  const ids: NonNullable<GenerationRequest['promptIds']> = {
    prompt: rowOf(recorded[0], keys[0]!, request.prompt),
    negative: rowOf(recorded[0], keys[0]!, negative),
  };
  if (keys[1]) {
    ids.prompt2 = rowOf(recorded[1], keys[1], request.prompt);
    ids.negative2 = rowOf(recorded[1], keys[1], negative);
  }
  return {
    ids,
    note: `reference token ids${derived.length ? ` (of "": start, end, padding read off the recorded ${derived.join(' and ')} rows)` : ''}`,
  };
}

export const sampleCases: CaseFamily = {
  name: 'sample',
  claims: (key) => KEY.test(key) || key === INITIAL,

  async run(ctx) {
    const names = [...new Set([...ctx.cases.keys()].filter((k) => KEY.test(k)).map((k) => KEY.exec(k)![1]!))];
    const tolerance = formatTolerance(FLOAT32_TOLERANCE);
    const results: CaseResult[] = [];
    for (const name of names) {
      const keys = ['latents', 'image']
        .map((part) => `sample.${name}.${part}`)
        .filter((k) => ctx.cases.has(k));
      let image: GeneratedImage | undefined;
      let idsNote = '';
      const failed = await attempt(`sample.${name}`, tolerance, async () => {
        const { config, request } = readNote(ctx, name);
        const model = ctx.model();
        const schedulerConfig = schedulerConfigFrom(
          config,
          `cases.json notes["sample.${name}"].scheduler_config`,
        );
        let generator: Generator;
        try {
          generator = await Generator.create({ ...model, schedulerConfig }, ctx.generator);
        } catch (error) {
          const message = (error as Error).message;
          // The engine refusing the model kind (SDXL before its pipeline exists) is a missing feature.
          if (/not (yet )?(implemented|supported)/i.test(message))
            throw new NotSupportedError(`our Generator: ${message}`);
          throw error;
        }
        try {
          const { ids, note } = referenceIds(ctx, request);
          idsNote = note;
          [image] = await generator.generate({
            ...request,
            initialLatents: floatsOf(caseTensor(ctx, INITIAL)),
            promptIds: ids,
          });
        } finally {
          await generator.release();
        }
        return [];
      });
      if (failed.length > 0) {
        results.push(...keys.map((key) => ({ ...failed[0]!, name: key })));
        continue;
      }
      for (const key of keys) {
        const ours = key.endsWith('.latents') ? image!.latents : image!.image;
        results.push(compareClose(key, ours, floatsOf(caseTensor(ctx, key)), FLOAT32_TOLERANCE, idsNote));
      }
    }
    return results;
  },
};
