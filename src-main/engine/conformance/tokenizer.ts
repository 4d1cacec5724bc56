// Tokenizer cases: `<tokenizer folder>.input_ids` [N, 77] = the first N cases.json prompts through
// transformers' CLIPTokenizer; our ClipTokenizer must give the same ids exactly.
//
// The reference can be broken: the golden generator built CLIPTokenizer(vocab_file=...,
// merges_file=...), which transformers 5 ignores (empty vocabulary: every row [0, 2, 2, ...] or
// [0, 1, ..., 2]). A row of a real CLIP encoding always holds the start token, so reference rows
// without it are reported as "reference inconsistent" rather than as our failure; our tokenizer
// is then checked against an independent transformers reference (clip-transformers-reference.json,
// made with CLIPTokenizer.from_pretrained) when one covers the folder.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseConfigJson } from '../sample/create-scheduler';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';
import { attempt, caseTensor, type CaseFamily, type CaseResult, type ConformanceContext } from './context';

const KEY = /^(tokenizer(?:_\d+)?)\.input_ids$/;
const EXACT = 'exact ids';

interface FolderReference {
  prompts: string[];
  input_ids: number[][];
  untruncated_lengths?: number[];
}

function rowsOf(
  data: BigInt64Array | Int32Array | Float32Array | Float64Array,
  rows: number,
  cols: number,
): number[][] {
  const flat = Array.from(data as ArrayLike<number | bigint>, Number);
  return Array.from({ length: rows }, (_, r) => flat.slice(r * cols, (r + 1) * cols));
}

function firstDifference(
  ours: readonly number[][],
  reference: readonly number[][],
): { rows: number; first?: string } {
  let rows = 0;
  let first: string | undefined;
  reference.forEach((ref, r) => {
    const at = ref.findIndex((id, i) => id !== ours[r]?.[i]);
    if (at < 0) return;
    rows++;
    first ??= `row ${r} position ${at}: ours ${ours[r]?.[at]}, reference ${ref[at]}`;
  });
  return { rows, first };
}

/** Our tokenizer against the transformers reference entry for `<folder name>/model/<sub>`, if a file has one. */
function checkTransformersReference(
  ctx: ConformanceContext,
  sub: string,
  tokenizer: ClipTokenizer,
): CaseResult | undefined {
  const entryName = `${basename(ctx.folder)}/model/${sub}`;
  for (const file of ctx.tokenizerReferences) {
    if (!existsSync(file)) continue;
    const json = parseConfigJson(readFileSync(file, 'utf8'), file) as {
      generator?: string;
      folders?: Record<string, FolderReference>;
    };
    const ref = json.folders?.[entryName];
    if (!ref) continue;
    const name = `${sub} (transformers reference)`;
    const ours = ref.prompts.map((p) => Array.from(tokenizer.encode(p)));
    const { rows, first } = firstDifference(ours, ref.input_ids);
    const counts = (ref.untruncated_lengths ?? []).filter(
      (n, i) => tokenizer.countTokens(ref.prompts[i]!).tokens !== n - 2,
    ).length;
    const ok = rows === 0 && counts === 0;
    const source = `${ref.prompts.length} prompts from ${basename(file)} (${json.generator ?? 'transformers'})`;
    return {
      name,
      status: ok ? 'pass' : 'FAIL',
      tolerance: EXACT,
      note: ok
        ? source
        : `${rows} row(s) differ${first ? ` (first: ${first})` : ''}, ${counts} token count(s) differ; ${source}`,
    };
  }
  return undefined;
}

export const tokenizerCases: CaseFamily = {
  name: 'tokenizer',
  claims: (key) => KEY.test(key),

  async run(ctx) {
    const results: CaseResult[] = [];
    for (const key of [...ctx.cases.keys()].filter((k) => KEY.test(k))) {
      const sub = KEY.exec(key)![1]!;
      results.push(
        ...(await attempt(key, EXACT, () => {
          const dir = join(ctx.folder, 'model', sub);
          if (!existsSync(dir)) throw new Error(`${dir}: no such tokenizer folder for case ${key}`);
          const tokenizer = ClipTokenizer.fromFolder(dir);
          const expected = caseTensor(ctx, key);
          const [count, length] = expected.shape as [number, number];
          if (count > ctx.prompts.length)
            throw new Error(`${key} has ${count} rows but cases.json has ${ctx.prompts.length} prompts`);
          const reference = rowsOf(expected.data, count, length);
          const ours = ctx.prompts.slice(0, count).map((p) => Array.from(tokenizer.encode(p)));
          const { rows, first } = firstDifference(ours, reference);
          const independent = checkTransformersReference(ctx, sub, tokenizer);
          const rowsOut: CaseResult[] = [];
          if (!reference.some((row) => row.includes(tokenizer.bosId))) {
            rowsOut.push({
              name: key,
              status: 'reference inconsistent',
              tolerance: EXACT,
              note: `no reference row holds the start token (id ${tokenizer.bosId}), so these ids did not come from this vocabulary (${rows}/${count} rows differ from ours)`,
              coveredBy: independent?.status === 'pass' ? independent.name : undefined,
            });
          } else {
            rowsOut.push({
              name: key,
              status: rows === 0 ? 'pass' : 'FAIL',
              tolerance: EXACT,
              note: rows === 0 ? `${count} prompts` : `${rows}/${count} rows differ (first: ${first})`,
            });
          }
          if (independent) rowsOut.push(independent);
          return rowsOut;
        })),
      );
    }
    return results;
  },
};
