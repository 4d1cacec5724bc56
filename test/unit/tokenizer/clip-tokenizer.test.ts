// CLIP tokenizer behaviour on hand-made vocabularies, expected ids worked out by hand from the
// BPE rules: lowercase, CLIP word split, `</w>` on each word's last symbol, merges by rank.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipTokenizer } from '../../../src-main/engine/tokenizer/clip-tokenizer';

// Byte-level symbols for the characters used here are the characters themselves (printable ASCII).
const symbols = ['a', 'b', 'c', 'h', 't', '!', ',', '1', '2'];
const vocabList = [
  ...symbols,
  ...symbols.map((s) => `${s}</w>`),
  'ab', 'ab</w>', 'cat</w>', 'ca', 'ha', 'hat</w>', '!!</w>',
  '<|startoftext|>', '<|endoftext|>',
];
const vocab = Object.fromEntries(vocabList.map((token, id) => [token, id]));
const merges: [string, string][] = [['a', 'b'], ['a', 'b</w>'], ['c', 'a'], ['ca', 't</w>'], ['h', 'a'], ['ha', 't</w>'], ['!', '!</w>']];
const id = (token: string): number => {
  const value = vocab[token];
  if (value === undefined) throw new Error(token);
  return value;
};
const settings = { maxLength: 8, bosToken: '<|startoftext|>', eosToken: '<|endoftext|>', unkToken: '<|endoftext|>', padToken: '<|endoftext|>' };

describe('ClipTokenizer (hand-made vocabulary)', () => {
  const tokenizer = new ClipTokenizer(vocab, merges, settings);

  it('lowercases, splits words, applies merges by rank with </w> word ends', () => {
    // "CAT hat abab" -> cat</w> | hat</w> | a b a b</w> -> ab, ab</w>
    expect(tokenizer.tokenize('CAT hat abab')).toEqual(['cat</w>', 'hat</w>', 'ab', 'ab</w>']);
    expect(Array.from(tokenizer.encode('CAT hat abab'))).toEqual([
      id('<|startoftext|>'), id('cat</w>'), id('hat</w>'), id('ab'), id('ab</w>'), id('<|endoftext|>'), id('<|endoftext|>'), id('<|endoftext|>'),
    ]);
  });

  it('splits digits one by one and punctuation runs as words', () => {
    // "12,!!" -> 1 | 2 | ,!! (one punctuation word: ",", "!", "!</w>" then "!"+"!</w>" merge)
    expect(tokenizer.tokenize('12,!!')).toEqual(['1</w>', '2</w>', ',', '!!</w>']);
  });

  it('truncates to maxLength keeping the end token, and counts what was dropped', () => {
    const ids = tokenizer.encode('a b c a b c a b'); // 8 one-letter words, room for 6
    expect(ids).toHaveLength(8);
    expect(ids[0]).toBe(id('<|startoftext|>'));
    expect(Array.from(ids.subarray(1, 7))).toEqual(['a', 'b', 'c', 'a', 'b', 'c'].map((s) => id(`${s}</w>`)));
    expect(ids[7]).toBe(id('<|endoftext|>'));
    expect(tokenizer.countTokens('a b c a b c a b')).toEqual({ tokens: 8, capacity: 6, truncated: true, dropped: 2 });
    expect(tokenizer.countTokens('cat')).toEqual({ tokens: 1, capacity: 6, truncated: false, dropped: 0 });
  });

  it('pads with the configured pad token, which is also split out of the text (SDXL tokenizer_2 "!")', () => {
    const bang = new ClipTokenizer(vocab, merges, { ...settings, padToken: '!' });
    expect(Array.from(bang.encode('hat'))).toEqual([id('<|startoftext|>'), id('hat</w>'), id('<|endoftext|>'), id('!'), id('!'), id('!'), id('!'), id('!')]);
    // As an added token "!" is matched before BPE, so "!!" is two "!" tokens, not "!!</w>".
    expect(bang.contentIds('!!')).toEqual([id('!'), id('!')]);
    expect(tokenizer.contentIds('!!')).toEqual([id('!!</w>')]);
  });

  it('collapses whitespace and treats an empty caption as start + end', () => {
    expect(tokenizer.tokenize('  cat\t\n hat  ')).toEqual(['cat</w>', 'hat</w>']);
    expect(Array.from(tokenizer.encode('   ')).slice(0, 3)).toEqual([id('<|startoftext|>'), id('<|endoftext|>'), id('<|endoftext|>')]);
  });

  it('refuses settings whose special tokens are not in the vocabulary', () => {
    expect(() => new ClipTokenizer(vocab, merges, { ...settings, padToken: '<pad>' })).toThrow(/pad token "<pad>" is not in vocab.json/);
  });
});

describe('ClipTokenizer.fromFolder', () => {
  const dir = mkdtempSync(join(tmpdir(), 'clip-tok-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string): void => writeFileSync(join(dir, name), text);

  it('reads vocab.json, merges.txt and tokenizer_config.json (AddedToken objects included)', () => {
    write('vocab.json', JSON.stringify(vocab));
    write('merges.txt', ['#version: 0.2', ...merges.map((m) => m.join(' ')), ''].join('\n'));
    write('tokenizer_config.json', JSON.stringify({ model_max_length: 8, bos_token: { __type: 'AddedToken', content: '<|startoftext|>' }, pad_token: '!' }));
    const tokenizer = ClipTokenizer.fromFolder(dir);
    expect(tokenizer.maxLength).toBe(8);
    expect(tokenizer.padId).toBe(id('!'));
    expect(tokenizer.tokenize('cat')).toEqual(['cat</w>']);
  });

  it('names the file and line of a bad merges.txt', () => {
    write('merges.txt', '#version: 0.2\na b\nnot-a-pair\n');
    expect(() => ClipTokenizer.fromFolder(dir)).toThrow(/merges\.txt: line 3 is not a merge/);
  });

  it('names the missing file', () => {
    rmSync(join(dir, 'vocab.json'));
    expect(() => ClipTokenizer.fromFolder(dir)).toThrow(/vocab\.json: cannot read \(ENOENT\)/);
  });
});
