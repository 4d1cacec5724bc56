// Thumbnails: generated for every readable image of the messy folder, cached by content hash and
// size (a second request reuses the file, a copy under another name shares it), upright, bounded
// in size, and errors that name the broken file.
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { Dataset } from '../../../src-main/engine/data/dataset';
import { ThumbnailCache } from '../../../src-main/engine/data/thumbnails';

const fixture = join(import.meta.dirname, '..', '..', 'fixtures', 'messy-dataset');
const temps: string[] = [];
afterEach(() => {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-thumbs-'));
  temps.push(dir);
  return dir;
}

describe('ThumbnailCache', () => {
  it('makes a webp thumbnail per readable image, caches it, and names broken files', async () => {
    const cacheDir = tempDir();
    const dataset = await Dataset.open(fixture, { resolution: 64, step: 16 });
    const cache = new ThumbnailCache(cacheDir, { size: 32, concurrency: 2 });
    const seen: string[] = [];
    const results = await cache.generateAll(
      dataset.items.map((item) => item.path),
      (result) => seen.push(result.file),
    );
    expect(seen.sort()).toEqual(dataset.items.map((item) => item.path).sort());

    for (const [i, item] of dataset.items.entries()) {
      const result = results[i];
      expect(result.file).toBe(item.path);
      if (item.excluded) {
        expect('error' in result && result.error.includes(item.path)).toBe(true);
        continue;
      }
      if (!('path' in result)) throw new Error(`${item.relativePath}: ${result.error}`);
      expect(basename(result.path)).toMatch(/^[0-9a-f]{64}-32\.webp$/);
      const meta = await sharp(result.path).metadata();
      expect(meta.format).toBe('webp');
      expect(Math.max(meta.width, meta.height)).toBe(Math.min(32, Math.max(item.width!, item.height!)));
      expect(meta.width >= meta.height).toBe(item.width! >= item.height!); // upright, EXIF applied
    }
    // The two duplicates share one file; everything else has its own.
    const readable = dataset.items.filter((item) => !item.excluded).length;
    expect(readdirSync(cacheDir).length).toBe(readable - 1);

    const path = await cache.path(dataset.item('red-square.png').path);
    const before = statSync(path).mtimeMs;
    expect(await new ThumbnailCache(cacheDir, { size: 32 }).path(dataset.item('red-square.png').path)).toBe(
      path,
    );
    expect(statSync(path).mtimeMs).toBe(before);
  });

  it('keys by content and size, and writes JPEG over white when asked', async () => {
    const dir = tempDir();
    const cacheDir = join(dir, 'cache');
    cpSync(join(fixture, 'transparent.png'), join(dir, 'a.png'));
    cpSync(join(fixture, 'transparent.png'), join(dir, 'renamed.png'));
    const jpeg = new ThumbnailCache(cacheDir, { size: 16, format: 'jpeg' });
    const [a, renamed] = await Promise.all([
      jpeg.path(join(dir, 'a.png')),
      jpeg.path(join(dir, 'renamed.png')),
    ]);
    expect(renamed).toBe(a);
    expect(a.endsWith('-16.jpg')).toBe(true);
    const { data, info } = await sharp(a).raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(3);
    expect(Math.min(data[0], data[1], data[2])).toBeGreaterThan(240); // transparent corner -> white
    const bigger = await new ThumbnailCache(cacheDir, { size: 24, format: 'jpeg' }).bytes(join(dir, 'a.png'));
    expect((await sharp(bigger).metadata()).width).toBe(24);
    expect(readdirSync(cacheDir).sort()).toEqual(
      [basename(a), basename(a).replace('-16.jpg', '-24.jpg')].sort(),
    );
  });
});
