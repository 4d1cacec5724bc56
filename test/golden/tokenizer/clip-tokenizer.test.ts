// CLIP tokenizer against transformers' CLIPTokenizer on the tiny golden tokenizer folders.
// clip-transformers-reference.json holds ids from CLIPTokenizer.from_pretrained(folder) (transformers
// 5.17): the cases.json prompts plus edge cases (accents, NFC, emoji, CJK, odd whitespace, literal
// special tokens, `!` runs for the `!`-padded SDXL tokenizer_2, exactly-75 and 76-token prompts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigJson } from '../../../src-main/engine/sample/create-scheduler';
import { ClipTokenizer } from '../../../src-main/engine/tokenizer/clip-tokenizer';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

interface FolderReference {
  prompts: string[];
  input_ids: number[][];
  untruncated_lengths: number[];
}
const reference = JSON.parse(readFileSync(join(import.meta.dirname, 'clip-transformers-reference.json'), 'utf8')) as {
  folders: Record<string, FolderReference>;
};
const fixtures = join(goldenDir('tiny-sd15'), '..');
// cases.json is written by Python's json (bare -Infinity in a scheduler config).
const casesPrompts = (variant: 'tiny-sd15' | 'tiny-sdxl'): string[] => {
  const file = join(goldenDir(variant), 'cases.json');
  return parseConfigJson(readFileSync(file, 'utf8'), file).prompts as string[];
};

describe('ClipTokenizer equals transformers CLIPTokenizer', () => {
  for (const [folder, ref] of Object.entries(reference.folders)) {
    it(`${folder}: ${ref.prompts.length} prompts, ids and token counts`, () => {
      const tokenizer = ClipTokenizer.fromFolder(join(fixtures, folder));
      ref.prompts.forEach((prompt, i) => {
        expect(Array.from(tokenizer.encode(prompt)), JSON.stringify(prompt)).toEqual(ref.input_ids[i]);
        const count = tokenizer.countTokens(prompt);
        expect(count.tokens, JSON.stringify(prompt)).toBe(ref.untruncated_lengths[i]! - 2);
        expect(count.truncated).toBe(ref.untruncated_lengths[i]! > 77);
      });
      const batch = tokenizer.encodeBatch(ref.prompts);
      expect(Array.from(batch)).toEqual(ref.input_ids.flat());
    });
  }
});

// The tokenizer.input_ids in cases.safetensors were written by CLIPTokenizer(vocab_file=...,
// merges_file=...), which transformers 5 ignores (it builds an empty vocabulary: every row is
// 0, then 1s/2s). Those rows cannot come from the real vocabulary; once the fixture is regenerated
// with from_pretrained these tests run.
function goldenIds(variant: 'tiny-sd15' | 'tiny-sdxl', key: string): number[][] {
  const tensor = readGoldenTensors(join(goldenDir(variant), 'cases.safetensors')).get(key)!;
  const [rows, cols] = tensor.shape as [number, number];
  const flat = Array.from(tensor.data as BigInt64Array, Number);
  return Array.from({ length: rows }, (_, r) => flat.slice(r * cols, (r + 1) * cols));
}
const fixtureFromEmptyVocab = (ids: number[][]): boolean => ids.every((row) => row.every((id) => id <= 2));

describe('cases.safetensors tokenizer ids', () => {
  const sd15 = goldenIds('tiny-sd15', 'tokenizer.input_ids');
  const prompts = casesPrompts('tiny-sd15');
  it.skipIf(fixtureFromEmptyVocab(sd15))('tiny-sd15 tokenizer.input_ids [6,77]', () => {
    const tokenizer = ClipTokenizer.fromFolder(join(goldenDir('tiny-sd15'), 'model', 'tokenizer'));
    expect(sd15).toHaveLength(6);
    prompts.forEach((p, i) => expect(Array.from(tokenizer.encode(p))).toEqual(sd15[i]));
  });
  for (const key of ['tokenizer', 'tokenizer_2'] as const) {
    const ids = goldenIds('tiny-sdxl', `${key}.input_ids`);
    it.skipIf(fixtureFromEmptyVocab(ids))(`tiny-sdxl ${key}.input_ids [2,77]`, () => {
      const sdxlPrompts = casesPrompts('tiny-sdxl');
      const tokenizer = ClipTokenizer.fromFolder(join(goldenDir('tiny-sdxl'), 'model', key));
      sdxlPrompts.forEach((p, i) => expect(Array.from(tokenizer.encode(p))).toEqual(ids[i]));
    });
  }
  it('the transformers reference covers every cases.json prompt', () => {
    expect(reference.folders['tiny-sd15/model/tokenizer']!.prompts.slice(0, 6)).toEqual(prompts);
    expect(reference.folders['tiny-sdxl/model/tokenizer_2']!.prompts.slice(0, 2)).toEqual(casesPrompts('tiny-sdxl'));
  });
});
