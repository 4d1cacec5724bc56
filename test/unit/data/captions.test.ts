// Captions: decoding (BOM, CRLF), saving that keeps the file's format and is atomic, bulk tag
// operations, the seeded shuffle, tag frequencies, and Dataset edits that never touch an image.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decodeCaption,
  encodeCaption,
  readCaptionFile,
  writeCaptionFile,
} from '../../../src-main/engine/data/caption-file';
import {
  appendTrigger,
  findReplace,
  prependTrigger,
  removeTag,
  shuffleTags,
  splitTags,
  tagFrequency,
} from '../../../src-main/engine/data/caption-ops';
import { Dataset, trainingCaption } from '../../../src-main/engine/data/dataset';
import { createRandom } from '../../../src-main/engine/data/random';

const fixture = join(import.meta.dirname, '..', '..', 'fixtures', 'messy-dataset');
const temps: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-captions-'));
  temps.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('caption files', () => {
  it('decodes BOM + CRLF and encodes back to the same bytes', () => {
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('a, b\r\nline two\r\n')]);
    const decoded = decodeCaption(bytes);
    expect(decoded).toEqual({
      text: 'a, b\nline two',
      format: { bom: true, eol: '\r\n', finalNewline: true },
      validUtf8: true,
    });
    expect(encodeCaption(decoded.text, decoded.format).equals(bytes)).toBe(true);
    expect(decodeCaption(Buffer.from('plain'))).toEqual({
      text: 'plain',
      format: { bom: false, eol: '\n', finalNewline: false },
      validUtf8: true,
    });
    expect(decodeCaption(Buffer.from([0x61, 0xff, 0x62])).validUtf8).toBe(false);
  });

  it('saves atomically, keeping BOM, CRLF and the final newline of the existing file', () => {
    const dir = tempDir();
    const path = join(dir, 'photo.txt');
    cpSync(join(fixture, 'bom-crlf.txt'), path);
    writeCaptionFile(path, 'new first line\nnew second line');
    expect(
      readFileSync(path).equals(
        Buffer.concat([
          Buffer.from([0xef, 0xbb, 0xbf]),
          Buffer.from('new first line\r\nnew second line\r\n'),
        ]),
      ),
    ).toBe(true);
    expect(readCaptionFile(path).text).toBe('new first line\nnew second line');
    writeCaptionFile(join(dir, 'fresh.txt'), 'fresh caption');
    expect(readFileSync(join(dir, 'fresh.txt'), 'utf8')).toBe('fresh caption');
    expect(readdirSync(dir).sort()).toEqual(['fresh.txt', 'photo.txt']); // no temp files left behind
  });
});

describe('caption operations', () => {
  it('prepends and appends a trigger once, moving it when present elsewhere', () => {
    expect(prependTrigger('a dog, grass', 'sks')).toBe('sks, a dog, grass');
    expect(prependTrigger('sks, a dog', 'sks')).toBe('sks, a dog');
    expect(prependTrigger('a dog, sks, grass', 'sks')).toBe('sks, a dog, grass');
    expect(prependTrigger('', 'sks')).toBe('sks');
    expect(appendTrigger('a dog, grass', 'sks')).toBe('a dog, grass, sks');
    expect(appendTrigger('a dog, grass, sks', 'sks')).toBe('a dog, grass, sks');
  });

  it('finds and replaces, removes tags', () => {
    expect(findReplace('Red car, red hat', 'red', 'blue')).toBe('Red car, blue hat');
    expect(findReplace('Red car, red hat', 'red', 'blue', { caseSensitive: false })).toBe(
      'blue car, blue hat',
    );
    expect(findReplace('a+b (c)', '+b (', '.')).toBe('a.c)');
    expect(removeTag('1girl, Solo, smile,solo', 'solo')).toBe('1girl, smile');
    expect(removeTag('1girl, smile', 'solo')).toBe('1girl, smile');
  });

  it('shuffles tags after the first N, reproducibly from a seed', () => {
    const caption = 'sks, a, b, c, d, e, f, g, h';
    const shuffled = shuffleTags(caption, 2, createRandom(1));
    expect(splitTags(shuffled).slice(0, 2)).toEqual(['sks', 'a']);
    expect(splitTags(shuffled).sort()).toEqual(splitTags(caption).sort());
    expect(shuffleTags(caption, 2, createRandom(1))).toBe(shuffled);
    const orders = new Set(
      Array.from({ length: 20 }, (_, seed) => shuffleTags(caption, 2, createRandom(seed))),
    );
    expect(orders.size).toBeGreaterThan(10);
  });

  it('counts images per tag', () => {
    expect(tagFrequency(['a, b, a', 'b, c', '', 'b'])).toEqual([
      { tag: 'b', count: 3 },
      { tag: 'a', count: 1 },
      { tag: 'c', count: 1 },
    ]);
  });
});

describe('Dataset caption editing', () => {
  const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

  it('edits and creates captions, keeps formats, and never touches an image file', async () => {
    const dir = tempDir();
    cpSync(fixture, dir, { recursive: true });
    const dataset = await Dataset.open(dir, { resolution: 64, step: 16 });
    const images = dataset.items.map((item) => ({
      path: item.path,
      hash: sha(item.path),
      mtimeMs: statSync(item.path).mtimeMs,
    }));

    dataset.saveCaption('no-caption.png', 'a black dot');
    expect(readFileSync(join(dir, 'no-caption.txt'), 'utf8')).toBe('a black dot');
    expect(dataset.item('no-caption.png').problems.map((p) => p.code)).not.toContain('missing-caption');

    const { changed } = dataset.editCaptions({ kind: 'prepend', text: 'mytrigger' });
    expect(changed.length).toBe(dataset.items.length);
    expect(dataset.caption('red-square.png')).toBe('mytrigger, a red square on a white background');
    expect(
      readFileSync(join(dir, 'bom-crlf.txt')).equals(
        Buffer.from('\ufeffmytrigger, navy square, tag one, second line\r\n'),
      ),
    ).toBe(true);
    expect(readFileSync(join(dir, '10_subject', 'subject-b.txt'), 'utf8')).toBe('mytrigger');
    expect(dataset.item('empty-caption.png').problems.map((p) => p.code)).not.toContain('empty-caption');
    // Doing it again changes nothing.
    expect(dataset.editCaptions({ kind: 'prepend', text: 'mytrigger' }).changed).toEqual([]);

    expect(
      dataset.editCaptions({ kind: 'remove-tag', tag: 'mytrigger' }, ['red-square.png', 'UPPER.JPG']).changed,
    ).toEqual(['red-square.png', 'UPPER.JPG']);
    expect(readFileSync(join(dir, 'UPPER.caption'), 'utf8')).toBe(
      'an uppercase extension, caption in a .caption file',
    );
    expect(dataset.editCaptions({ kind: 'replace', find: 'circle', replace: 'disc' }).changed).toContain(
      'ünïcödé-名前.png',
    );
    expect(dataset.tagFrequency()[0]).toEqual({ tag: 'mytrigger', count: dataset.items.length - 2 });
    expect(() => dataset.saveCaption('../outside.png', 'x')).toThrow(/not an image of this dataset/);

    for (const image of images) {
      expect(sha(image.path)).toBe(image.hash);
      expect(statSync(image.path).mtimeMs).toBe(image.mtimeMs);
    }
    const reopened = await Dataset.open(dir, { resolution: 64, step: 16 });
    expect(reopened.caption('ünïcödé-名前.png')).toBe('mytrigger, ユニコード, a teal disc');
    expect(trainingCaption(reopened.item('10_subject/subject-b.jpg'))).toBe('mytrigger');
    expect(reopened.orphanCaptions).toEqual(['orphan.txt']);
    expect(readdirSync(dir).filter((name) => name.includes('.tmp-'))).toEqual([]);
  });

  it('shuffles each caption differently but reproducibly from one seed', async () => {
    const dir = tempDir();
    for (let i = 0; i < 6; i++) {
      cpSync(join(fixture, 'red-square.png'), join(dir, `img${i}.png`));
      writeCaptionFile(join(dir, `img${i}.txt`), 'keep, a, b, c, d, e, f');
    }
    const run = async () => {
      const dataset = await Dataset.open(dir, { resolution: 64, step: 16 });
      for (const item of dataset.items) dataset.saveCaption(item.relativePath, 'keep, a, b, c, d, e, f');
      dataset.editCaptions({ kind: 'shuffle', keepFirst: 1, seed: 42 });
      return dataset.items.map((item) => item.caption);
    };
    const first = await run();
    expect(await run()).toEqual(first);
    expect(new Set(first).size).toBeGreaterThan(1);
    for (const caption of first) expect(caption!.startsWith('keep, ')).toBe(true);
  });
});
