// The messy fixture folder (test/fixtures/make-messy-dataset.ts says what each file is): the scan
// finds exactly the images, pairs captions, reads repeat folders, reports each problem on the
// right file, and every trainable image loads for training upright, flattened over white, in sRGB.
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Dataset, trainingCaption } from '../../../src-main/engine/data/dataset';
import type { DatasetItem } from '../../../src-main/engine/data/dataset';
import { loadTrainingImage } from '../../../src-main/engine/data/load-image';
import type { TrainingImage } from '../../../src-main/engine/data/load-image';
import type { ProblemCode } from '../../../src-main/engine/data/problems';
import { scanFolder } from '../../../src-main/engine/data/scan';

const fixture = join(import.meta.dirname, '..', '..', 'fixtures', 'messy-dataset');
// Small buckets so the 64-128 px fixture images fit without upscaling (only tiny.png is too small).
const options = { resolution: 64, step: 16 };

/** Which files each problem code must name: exactly these, no others. */
const EXPECTED: Partial<Record<ProblemCode, string[]>> = {
  'zero-byte': ['empty.png'],
  unreadable: ['corrupt.webp', 'not-an-image.png'],
  truncated: ['truncated-png.png', 'truncated.jpg'],
  'exif-orientation': ['exif-rotated.jpg'],
  cmyk: ['cmyk.jpg'],
  'high-bit-depth': ['deep-16bit.png'],
  alpha: ['animated.gif', 'transparent.png'],
  animated: ['animated.gif'],
  duplicate: ['dup-original.png', 'nested/dup-copy.png'],
  'missing-caption': ['10_subject/subject-b.jpg', 'no-caption.png'],
  'empty-caption': ['empty-caption.png'],
  'multiple-captions': ['both-captions.png'],
  'too-small': ['tiny.png'],
  'orphan-caption': ['orphan.txt'],
};

const IMAGES = [
  '10_subject/subject-a.jpg',
  '10_subject/subject-b.jpg',
  'UPPER.JPG',
  'animated.gif',
  'bom-crlf.png',
  'both-captions.png',
  'cmyk.jpg',
  'corrupt.webp',
  'deep-16bit.png',
  'dup-original.png',
  'empty-caption.png',
  'empty.png',
  'exif-rotated.jpg',
  'formats/avif-photo.avif',
  'formats/bmp-photo.bmp',
  'formats/gray.png',
  'formats/tiff-photo.TIFF',
  'huge.png',
  'nested/deeper/nested-image.webp',
  'nested/dup-copy.png',
  'no-caption.png',
  'not-an-image.png',
  'red-square.png',
  'tiny.png',
  'trailing-data.jpg',
  'transparent.png',
  'truncated-png.png',
  'truncated.jpg',
  'ünïcödé-名前.png',
].sort();

/** RGB in [-1, 1] of pixel (x, y) of a CHW image. */
function rgbAt(image: TrainingImage, x: number, y: number): [number, number, number] {
  const plane = image.width * image.height;
  const i = y * image.width + x;
  return [image.pixels[i], image.pixels[plane + i], image.pixels[2 * plane + i]];
}

function filesWith(dataset: Dataset, code: ProblemCode): string[] {
  return [
    ...new Set(
      dataset
        .problems()
        .filter((p) => p.code === code)
        .map((p) => p.file),
    ),
  ].sort();
}

describe('messy dataset folder', () => {
  let dataset: Dataset;
  beforeAll(async () => {
    dataset = await Dataset.open(fixture, options);
  });

  it('finds every image (any case, unicode, nested) and skips hidden and non-image files', async () => {
    expect(dataset.items.map((item) => item.relativePath)).toEqual(IMAGES);
    expect(dataset.skipped).toEqual([
      { relativePath: '.hidden-folder', reason: 'hidden' },
      { relativePath: '.hidden.png', reason: 'hidden' },
      { relativePath: 'notes.md', reason: 'not-an-image' },
    ]);
    expect(dataset.orphanCaptions).toEqual(['orphan.txt']);
    const scan = await scanFolder(fixture);
    expect(scan.images.map((image) => image.relativePath)).toEqual(IMAGES);
  });

  it('reports each problem on the right file, with a message that names it', () => {
    for (const [code, files] of Object.entries(EXPECTED)) {
      expect({ code, files: filesWith(dataset, code as ProblemCode) }).toEqual({ code, files });
    }
    for (const problem of dataset.problems())
      expect(problem.message.startsWith(`${problem.file}: `)).toBe(true);
    // Only the expected codes occur at all, and files with no expected problem have none.
    expect(new Set(dataset.problems().map((p) => p.code))).toEqual(new Set(Object.keys(EXPECTED)));
    for (const clean of [
      'red-square.png',
      'trailing-data.jpg',
      'huge.png',
      'UPPER.JPG',
      'bom-crlf.png',
      'formats/bmp-photo.bmp',
      'ünïcödé-名前.png',
    ]) {
      expect({ clean, problems: dataset.item(clean).problems }).toEqual({ clean, problems: [] });
    }
  });

  it('excludes exactly the unreadable, truncated and empty files', () => {
    const excluded = dataset.items.filter((item) => item.excluded).map((item) => item.relativePath);
    expect(excluded.sort()).toEqual([
      'corrupt.webp',
      'empty.png',
      'not-an-image.png',
      'truncated-png.png',
      'truncated.jpg',
    ]);
    for (const item of dataset.items) {
      expect(item.excluded).toBe(item.problems.some((p) => p.severity === 'error'));
      expect(item.bucket === null).toBe(item.excluded);
    }
    const summary = dataset.summary();
    expect(summary.images).toBe(IMAGES.length);
    expect(summary.excluded).toBe(5);
    expect(summary.trainable).toBe(IMAGES.length - 5);
    expect(summary.orphanCaptions).toBe(1);
    expect(summary.buckets.reduce((n, b) => n + b.images, 0)).toBe(summary.trainable);
    // Two images in the repeat folder count ten times each.
    expect(summary.samplesPerEpoch).toBe(summary.trainable - 2 + 20);
  });

  it('finds the same errors when every image is decoded in full', async () => {
    const full = await Dataset.open(fixture, { ...options, validation: 'full', concurrency: 2 });
    const errors = (d: Dataset): string[] =>
      d
        .problems()
        .filter((p) => p.severity === 'error')
        .map((p) => `${p.file}:${p.code}`)
        .sort();
    expect(errors(full)).toEqual(errors(dataset));
  });

  it('reads repeat folders, sizes and captions (BOM, CRLF, .caption, unicode)', () => {
    const subjectA = dataset.item('10_subject/subject-a.jpg');
    expect([subjectA.repeats, subjectA.trigger]).toEqual([10, 'subject']);
    expect([dataset.item('red-square.png').repeats, dataset.item('red-square.png').trigger]).toEqual([
      1,
      null,
    ]);
    expect(trainingCaption(dataset.item('10_subject/subject-b.jpg'))).toBe('subject');

    const bom = dataset.item('bom-crlf.png');
    expect(bom.caption).toBe('navy square, tag one\nsecond line');
    expect(bom.captionFormat).toEqual({ bom: true, eol: '\r\n', finalNewline: true });
    expect(trainingCaption(bom)).toBe('navy square, tag one second line');
    expect(dataset.item('UPPER.JPG').caption).toBe('an uppercase extension, caption in a .caption file');
    expect(dataset.item('ünïcödé-名前.png').caption).toBe('ユニコード, a teal circle');
    expect(dataset.item('both-captions.png').caption).toBe('the txt caption wins');
    expect(dataset.item('no-caption.png').caption).toBeNull();

    const rotated = dataset.item('exif-rotated.jpg');
    expect([
      rotated.header?.storedWidth,
      rotated.header?.storedHeight,
      rotated.width,
      rotated.height,
    ]).toEqual([128, 64, 64, 128]);
    expect([dataset.item('huge.png').width, dataset.item('huge.png').height]).toEqual([6000, 4000]);
    expect([
      dataset.item('animated.gif').width,
      dataset.item('animated.gif').height,
      dataset.item('animated.gif').header?.frames,
    ]).toEqual([64, 64, 2]);
  });
});

describe('loadTrainingImage on the messy folder', () => {
  let dataset: Dataset;
  const loaded = new Map<string, TrainingImage>();
  beforeAll(async () => {
    dataset = await Dataset.open(fixture, options);
  });

  it('loads every trainable item at its bucket size, CHW in [-1, 1]', async () => {
    for (const item of dataset.trainingItems()) {
      const image = await loadTrainingImage(item.path, item.bucket!);
      loaded.set(item.relativePath, image);
      const { width, height } = item.bucket!;
      expect([image.width, image.height, image.pixels.length]).toEqual([width, height, 3 * width * height]);
      expect(image.pixels.every((v) => Number.isFinite(v) && v >= -1 && v <= 1)).toBe(true);
      expect(image.originalSize).toEqual({ width: item.width, height: item.height });
      expect(image.targetSize).toEqual({ width, height });
      expect(image.cropTopLeft).toEqual({ top: item.crop!.cropTop, left: item.crop!.cropLeft });
    }
    expect(loaded.size).toBe(dataset.trainingItems().length);
  });

  it('applies the EXIF orientation: upright portrait, red above blue', async () => {
    const item: DatasetItem = dataset.item('exif-rotated.jpg');
    const image = await loadTrainingImage(item.path, { width: 64, height: 128 });
    expect(image.crop.scale).toBe(1);
    const [r1, g1, b1] = rgbAt(image, 32, 10);
    const [r2, g2, b2] = rgbAt(image, 32, 117);
    expect(r1).toBeGreaterThan(0.8);
    expect(Math.max(g1, b1)).toBeLessThan(-0.8);
    expect(b2).toBeGreaterThan(0.8);
    expect(Math.max(r2, g2)).toBeLessThan(-0.8);
  });

  it('flattens transparency over white', async () => {
    const image = await loadTrainingImage(dataset.item('transparent.png').path, { width: 64, height: 64 });
    for (const v of rgbAt(image, 8, 32)) expect(v).toBeCloseTo(1, 5);
    const [r, g, b] = rgbAt(image, 56, 32);
    expect([r, g]).toEqual([-1, -1]);
    expect(b).toBe(1);
  });

  it('turns CMYK, 16-bit, greyscale, BMP and animated input into 8-bit sRGB', async () => {
    const at = async (file: string, width: number, height: number, x: number, y: number) =>
      rgbAt(await loadTrainingImage(dataset.item(file).path, { width, height }), x, y);
    // CMYK orange (255,128,0) survives the round trip through a CMYK profile approximately.
    const [cr, cg, cb] = await at('cmyk.jpg', 96, 80, 48, 40);
    expect(cr).toBeGreaterThan(0.8);
    expect(Math.abs(cg)).toBeLessThan(0.2);
    expect(cb).toBeLessThan(-0.7);
    // 16-bit (65535, 32768, 0) -> 8-bit (255, 128, 0).
    const deep = await at('deep-16bit.png', 64, 64, 10, 10);
    expect(deep.map((v) => Math.round((v + 1) * 127.5))).toEqual([255, 128, 0]);
    const [gr, gg, gb] = await at('formats/gray.png', 64, 64, 32, 32);
    expect(gr).toBe(gg);
    expect(gg).toBe(gb);
    // BMP: red left half, green top right, blue bottom right.
    expect(await at('formats/bmp-photo.bmp', 80, 64, 10, 32)).toEqual([1, -1, -1]);
    expect(await at('formats/bmp-photo.bmp', 80, 64, 70, 10)).toEqual([-1, 1, -1]);
    expect(await at('formats/bmp-photo.bmp', 80, 64, 70, 54)).toEqual([-1, -1, 1]);
    // First frame of the GIF is green, the second magenta.
    const [fr, fg, fb] = await at('animated.gif', 64, 64, 32, 32);
    expect(fg).toBeGreaterThan(0.4);
    expect(Math.max(fr, fb)).toBeLessThan(-0.9);
  });

  it('refuses the broken files with an error that names them', async () => {
    for (const file of [
      'truncated.jpg',
      'truncated-png.png',
      'not-an-image.png',
      'empty.png',
      'corrupt.webp',
    ]) {
      const path = dataset.item(file).path;
      await expect(loadTrainingImage(path, { width: 64, height: 64 })).rejects.toThrow(path);
    }
  });
});
