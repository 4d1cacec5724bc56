// Builds a scheduler from a diffusers scheduler config (scheduler_config.json: `_class_name` and
// upstream keys), optionally as another sampler the user picked ("Euler a" on an SD1.5 model whose
// config says PNDMScheduler), the way diffusers' `OtherScheduler.from_config(config)` does: the
// schedule keys carry over, keys the target class lacks are ignored. Unsupported classes and
// values are refused with an error that names the source and the key.
//
//   createScheduler(config, { sampler?, eta?, source? }): Scheduler
//   readSchedulerConfig(file): Record<string, unknown>      (accepts Python's -Infinity / NaN)
//   parseConfigJson(text, source): Record<string, unknown>
//   SAMPLERS, SCHEDULER_CLASSES
import { readFileSync } from 'node:fs';
import { DDIMScheduler } from './ddim';
import { DDPMScheduler } from './ddpm';
import { DPMSolverMultistepScheduler } from './dpmpp-2m';
import { EulerDiscreteScheduler } from './euler';
import { EulerAncestralDiscreteScheduler } from './euler-ancestral';
import { PNDMScheduler } from './pndm';
import type { Scheduler } from './scheduler';

/** Samplers offered to the user, by their usual (A1111) names. */
export const SAMPLERS = ['DDIM', 'Euler', 'Euler a', 'DPM++ 2M', 'DPM++ 2M Karras'] as const;
export type Sampler = (typeof SAMPLERS)[number];

type Config = Readonly<Record<string, unknown>>;

const CLASS_BUILDERS: Record<string, (config: Config, eta: number | undefined) => Scheduler> = {
  DDIMScheduler: (c, eta) => new DDIMScheduler(c, { eta }),
  DDPMScheduler: (c) => new DDPMScheduler(c),
  DPMSolverMultistepScheduler: (c) => new DPMSolverMultistepScheduler(c),
  EulerDiscreteScheduler: (c) => new EulerDiscreteScheduler(c),
  EulerAncestralDiscreteScheduler: (c) => new EulerAncestralDiscreteScheduler(c),
  PNDMScheduler: (c) => new PNDMScheduler(c),
};
export const SCHEDULER_CLASSES = Object.keys(CLASS_BUILDERS);

/** What each sampler choice means: a class, and the keys it forces. */
const SAMPLER_TARGETS: Record<Sampler, { className: string; overrides: Config }> = {
  DDIM: { className: 'DDIMScheduler', overrides: {} },
  Euler: { className: 'EulerDiscreteScheduler', overrides: { use_karras_sigmas: false } },
  'Euler a': { className: 'EulerAncestralDiscreteScheduler', overrides: {} },
  'DPM++ 2M': { className: 'DPMSolverMultistepScheduler', overrides: { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: false } },
  'DPM++ 2M Karras': { className: 'DPMSolverMultistepScheduler', overrides: { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: true } },
};

export interface CreateSchedulerOptions {
  /** Use this sampler instead of the config's `_class_name`. */
  sampler?: Sampler;
  /** DDIM's eta (0 by default). */
  eta?: number;
  /** Names the config in errors, e.g. its file path. */
  source?: string;
}

export function createScheduler(config: Config, options: CreateSchedulerOptions = {}): Scheduler {
  const source = options.source ?? 'scheduler config';
  let className = config._class_name;
  let merged: Config = config;
  if (options.sampler !== undefined) {
    const target = SAMPLER_TARGETS[options.sampler];
    if (!target) throw new Error(`${source}: unknown sampler ${JSON.stringify(options.sampler)} (supported: ${SAMPLERS.join(', ')})`);
    className = target.className;
    merged = { ...config, ...target.overrides };
  }
  if (typeof className !== 'string')
    throw new Error(`${source}: _class_name is missing; pass a sampler (${SAMPLERS.join(', ')}) to choose one`);
  const build = CLASS_BUILDERS[className];
  if (!build)
    throw new Error(`${source}: scheduler ${className} is not supported (supported: ${SCHEDULER_CLASSES.join(', ')}); choose a sampler (${SAMPLERS.join(', ')}) instead`);
  try {
    return build(merged, options.eta);
  } catch (error) {
    throw new Error(`${source}: ${(error as Error).message}`, { cause: error });
  }
}

/** Reads a scheduler_config.json. */
export function readSchedulerConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  return parseConfigJson(text, file);
}

const NON_FINITE: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN };
const NON_FINITE_MARK = '\u0000nonfinite:';

/**
 * JSON.parse for configs written by Python's json module, which writes float('-inf') as a bare
 * `-Infinity` (diffusers' DPMSolverMultistepScheduler lambda_min_clipped) and NaN as `NaN`.
 */
export function parseConfigJson(text: string, source: string): Record<string, unknown> {
  // Quote the bare tokens outside strings, then turn them back into numbers.
  let quoted = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      quoted += ch;
      if (ch === '\\') quoted += text[++i] ?? '';
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      quoted += ch;
      continue;
    }
    const token = ['-Infinity', 'Infinity', 'NaN'].find((name) => text.startsWith(name, i));
    if (token) {
      quoted += JSON.stringify(NON_FINITE_MARK + token);
      i += token.length - 1;
    } else {
      quoted += ch;
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(quoted, (_key, v: unknown) =>
      typeof v === 'string' && v.startsWith(NON_FINITE_MARK) ? NON_FINITE[v.slice(NON_FINITE_MARK.length)] : v,
    );
  } catch (error) {
    throw new Error(`${source}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${source}: not a JSON object`);
  return value as Record<string, unknown>;
}
