// The conformance runner: checks every case of a reference folder (cases.safetensors + cases.json
// + model/, the layout of test/fixtures/golden/<name>, see its README) against our engine, on the
// CPU in float32, and prints one table row per case.
//
//   runConformance(folder, { tokenizerReferences?, only?, log? }): Promise<ConformanceReport>
//   formatReport(report): string          the fixed-width table and the summary line
//   CASE_FAMILIES                         tokenizer, text-encoder, vae, unet, ddpm, lora, adamw, sample, train
//
// Every key of cases.safetensors must be claimed by a family; one that is not is an "unknown case"
// (a failure), so a new case in a folder is never silently ignored. Settings come from the folder:
// the model's configs and cases.json notes, never from this code.
//
// Pass/fail policy. A run passes when every row is "pass", except: a "reference inconsistent" row
// (the reference data contradicts its own reference implementation, e.g. token ids that cannot come
// from the folder's vocabulary) is NOT a pass and is listed in the summary; it fails the run unless
// an independent reference check of the same component passed (named in the row). Without such a
// check the component would be unverified, so the run fails.
import { existsSync, statSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openModelFolder, type OpenedModel } from '../io/model-folder';
import { parseConfigJson } from '../sample/create-scheduler';
import { adamwCases } from './adamw';
import { readCaseFile, type CaseFamily, type CaseResult, type ConformanceContext, type SamplingDevice } from './context';
import { ddpmCases } from './ddpm';
import { loraCases } from './lora';
import { sampleCases } from './sample';
import { textEncoderCases } from './text-encoder';
import { tokenizerCases } from './tokenizer';
import { trainCases } from './train';
import { unetCases } from './unet';
import { vaeCases } from './vae';

export type { CaseResult, CaseStatus } from './context';

export const CASE_FAMILIES: readonly CaseFamily[] = [
  tokenizerCases,
  textEncoderCases,
  vaeCases,
  unetCases,
  ddpmCases,
  loraCases,
  adamwCases,
  sampleCases,
  trainCases,
];

export interface ConformanceOptions {
  /** clip-transformers-reference.json files (independent tokenizer references); missing files are ignored. */
  tokenizerReferences?: readonly string[];
  /** Run only these families (by name); keys only other families read are not checked (unknown keys are still reported). */
  only?: readonly string[];
  /** Progress lines (family started / done). */
  log?: (line: string) => void;
  /** Run the sampling cases elsewhere than the CPU in float32 (their tolerances are for float32). */
  generator?: SamplingDevice;
}

export interface ConformanceReport {
  folder: string;
  results: CaseResult[];
  /** Rows that fail the run (see the policy above). */
  failures: CaseResult[];
  passed: boolean;
  /** Families run, with their wall time. */
  timings: { family: string; seconds: number }[];
  seconds: number;
  only?: readonly string[];
}

/** Whether a row fails the run: anything but a pass, or a reference-inconsistent row no independent check covers. */
export const failsRun = (r: CaseResult): boolean =>
  r.status !== 'pass' && !(r.status === 'reference inconsistent' && r.coveredBy !== undefined);

function shapeRows(
  folder: string,
  declared: unknown,
  cases: ReadonlyMap<string, { shape: number[] }>,
): CaseResult[] {
  if (typeof declared !== 'object' || declared === null) return [];
  const rows: CaseResult[] = [];
  for (const [key, shape] of Object.entries(declared as Record<string, unknown>)) {
    const t = cases.get(key);
    const expected = Array.isArray(shape) ? shape.join(',') : String(shape);
    if (!t)
      rows.push({
        name: key,
        status: 'FAIL',
        tolerance: 'declared case',
        note: `listed in ${folder}/cases.json but absent from cases.safetensors`,
      });
    else if (t.shape.join(',') !== expected)
      rows.push({
        name: key,
        status: 'FAIL',
        tolerance: 'declared shape',
        note: `shape [${t.shape}] in cases.safetensors, cases.json says [${expected}]`,
      });
  }
  return rows;
}

export async function runConformance(
  folder: string,
  options: ConformanceOptions = {},
): Promise<ConformanceReport> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new Error(`${folder}: not a folder`);
  const casesFile = join(folder, 'cases.safetensors');
  const notesFile = join(folder, 'cases.json');
  for (const f of [casesFile, notesFile, join(folder, 'model')])
    if (!existsSync(f))
      throw new Error(
        `${folder}: no ${f.slice(folder.length + 1)} (a conformance folder holds cases.safetensors, cases.json and model/)`,
      );
  const cases = readCaseFile(casesFile);
  const json = parseConfigJson(readFileSync(notesFile, 'utf8'), notesFile);
  const notes = (json.notes ?? {}) as Record<string, unknown>;
  const prompts = Array.isArray(json.prompts) ? json.prompts.map(String) : [];

  let model: OpenedModel | undefined;
  const ctx: ConformanceContext = {
    folder,
    casesFile,
    cases,
    notes,
    prompts,
    model: () => (model ??= openModelFolder(join(folder, 'model'))),
    tokenizerReferences: options.tokenizerReferences ?? [],
    generator: options.generator ?? { provider: 'cpu', dtype: 'float32' },
    log,
  };

  if (options.only) {
    const unknown = options.only.filter((name) => !CASE_FAMILIES.some((f) => f.name === name));
    if (unknown.length > 0)
      throw new Error(
        `unknown case family "${unknown[0]}" (families: ${CASE_FAMILIES.map((f) => f.name).join(', ')})`,
      );
  }
  const selected = CASE_FAMILIES.filter((f) => !options.only || options.only.includes(f.name));
  const results: CaseResult[] = shapeRows(folder, json.cases, cases);
  const timings: ConformanceReport['timings'] = [];
  for (const family of selected) {
    if (![...cases.keys()].some((k) => family.claims(k))) continue;
    const t0 = performance.now();
    log(`${family.name}...`);
    try {
      results.push(...(await family.run(ctx)));
    } catch (error) {
      // families report their own errors per case; this is a bug in one, still reported, never lost
      results.push({
        name: `${family.name} (family)`,
        status: 'error',
        tolerance: '-',
        note: (error as Error).message,
      });
    }
    timings.push({ family: family.name, seconds: (performance.now() - t0) / 1000 });
  }
  for (const key of cases.keys())
    if (!CASE_FAMILIES.some((f) => f.claims(key)))
      results.push({
        name: key,
        status: 'unknown case',
        tolerance: '-',
        note: 'no check of this runner reads this key',
      });

  const failures = results.filter(failsRun);
  return {
    folder,
    results,
    failures,
    passed: failures.length === 0,
    timings,
    seconds: (performance.now() - started) / 1000,
    only: options.only,
  };
}

const number = (v: number | undefined): string =>
  v === undefined ? '-' : Number.isNaN(v) ? 'NaN' : v === 0 ? '0' : v.toExponential(2);

/** The table (case, max abs error, max rel error, tolerance, status, note) and the summary line. */
export function formatReport(report: ConformanceReport): string {
  const header = ['case', 'max abs err', 'max rel err', 'tolerance', 'status', 'note'];
  const rows = report.results.map((r) => {
    const status =
      r.status === 'pass'
        ? 'pass'
        : r.status === 'reference inconsistent'
          ? `ref. inconsistent${r.coveredBy ? '' : ' (FAIL)'}`
          : r.status === 'FAIL'
            ? 'FAIL'
            : `FAIL: ${r.status}`;
    const note =
      r.status === 'reference inconsistent'
        ? `${r.note ?? ''}; ${r.coveredBy ? `covered by "${r.coveredBy}" (pass)` : 'no independent reference covers it'}`
        : (r.note ?? '');
    return [r.name, number(r.maxAbs), number(r.maxRel), r.tolerance, status, note];
  });
  const widths = header.slice(0, 5).map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 5 ? c : i === 1 || i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [
    `conformance: ${report.folder}${report.only ? ` (only: ${report.only.join(', ')})` : ''}`,
    line(header),
    line(widths.map((w) => '-'.repeat(w)).concat('----')),
  ];
  out.push(...rows.map(line));

  const count = (pred: (r: CaseResult) => boolean): number => report.results.filter(pred).length;
  const inconsistent = report.results.filter((r) => r.status === 'reference inconsistent');
  if (inconsistent.length > 0)
    out.push(
      '',
      'Policy: a "reference inconsistent" case is not a pass. It fails the run unless an independent reference check of the',
      'same component passed (named in its row); then the run may pass, and the case stays listed below.',
    );
  out.push(
    '',
    'max rel err: max |ours - ref| / |ref| over values with |ref| > atol (for |d|/|ref| rows: that norm ratio);',
    'rtol/atol rows pass when every value is within atol + rtol |ref|.',
  );
  out.push(`time: ${report.timings.map((t) => `${t.family} ${t.seconds.toFixed(1)} s`).join(', ')}`);
  const parts = [
    `${report.results.length} cases`,
    `${count((r) => r.status === 'pass')} pass`,
    `${count((r) => r.status === 'FAIL')} fail`,
    `${count((r) => r.status === 'error')} error`,
    `${count((r) => r.status === 'not supported')} not supported`,
    `${count((r) => r.status === 'unknown case')} unknown`,
    `${inconsistent.length} reference inconsistent${inconsistent.length ? ` (${inconsistent.map((r) => `${r.name}${r.coveredBy ? ', covered' : ', NOT covered'}`).join('; ')})` : ''}`,
  ];
  out.push(
    `${report.passed ? 'PASS' : 'FAIL'} ${report.folder}: ${parts.join(', ')} in ${report.seconds.toFixed(1)} s`,
  );
  return out.join('\n');
}
