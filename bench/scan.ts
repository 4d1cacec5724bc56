// Dataset scan speed: Dataset.open on a generated folder of N images (default 10,000: JPEG, PNG and
// WebP of 512-768 px, captions for 9 in 10, ten kohya repeat folders), header reads only
// (validation 'quick'). Prints one JSON line: { images, seconds, ... }.
//   npx tsx bench/scan.ts [--count 10000] [--dir <folder>] [--full]
// The folder is generated once under the OS temp folder and reused (its files are then in the
// page cache: this measures our work, not the disk).
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { mapConcurrent } from '../src-main/engine/data/concurrency';
import { Dataset } from '../src-main/engine/data/dataset';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    dir: { type: 'string' },
    full: { type: 'boolean', default: false },
  },
});
const count = Number(values.count);
const folder = values.dir ?? join(tmpdir(), `lora-studio-bench-scan-v2-${count}`);

/** A gradient with one coloured block and `index` drawn in binary: every file differs. */
function imageBytes(index: number, width: number, height: number): Buffer {
  const pixels = Buffer.alloc(width * height * 3); // [height, width, 3]
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      pixels[o] = (x * 255) / width;
      pixels[o + 1] = (y * 255) / height;
      pixels[o + 2] = (index * 37) & 255;
    }
  }
  const bx = (index * 53) % (width - 64);
  const by = (index * 97) % (height - 64);
  for (let y = by; y < by + 64; y++)
    pixels.fill((index * 11) & 255, (y * width + bx) * 3, (y * width + bx + 64) * 3);
  // The index in binary, 8x8 black or white squares along the top: no two files alike.
  for (let bit = 0; bit < 16; bit++) {
    const value = (index >> bit) & 1 ? 255 : 0;
    for (let y = 0; y < 8; y++) pixels.fill(value, (y * width + bit * 8) * 3, (y * width + bit * 8 + 8) * 3);
  }
  return pixels;
}

async function generate(): Promise<number> {
  const started = performance.now();
  rmSync(folder, { recursive: true, force: true });
  const sizes: [number, number][] = [
    [512, 512],
    [768, 512],
    [512, 768],
    [640, 640],
  ];
  await mapConcurrent(
    Array.from({ length: count }, (_, i) => i),
    availableParallelism() * 2,
    async (i) => {
      const sub = join(folder, `5_concept${i % 10}`);
      mkdirSync(sub, { recursive: true });
      const [width, height] = sizes[i % sizes.length];
      const image = sharp(imageBytes(i, width, height), { raw: { width, height, channels: 3 } });
      const kind = i % 10;
      const [ext, bytes] =
        kind < 7
          ? ['jpg', await image.jpeg({ quality: 85 }).toBuffer()]
          : kind < 9
            ? ['png', await image.png({ compressionLevel: 1 }).toBuffer()]
            : ['webp', await image.webp({ quality: 80 }).toBuffer()];
      writeFileSync(join(sub, `image-${i}.${ext}`), bytes);
      if (i % 10 !== 3)
        writeFileSync(join(sub, `image-${i}.txt`), `concept${i % 10}, a gradient, block ${i}`);
    },
  );
  writeFileSync(join(folder, '.complete'), String(count));
  return (performance.now() - started) / 1000;
}

const generatedSeconds = existsSync(join(folder, '.complete')) ? 0 : await generate();
const started = performance.now();
const dataset = await Dataset.open(folder, { resolution: 512, validation: values.full ? 'full' : 'quick' });
const seconds = (performance.now() - started) / 1000;
const summary = dataset.summary();
console.log(
  JSON.stringify({
    bench: 'dataset-scan',
    images: summary.images,
    seconds: Number(seconds.toFixed(3)),
    imagesPerSecond: Math.round(summary.images / seconds),
    validation: values.full ? 'full' : 'quick',
    trainable: summary.trainable,
    problems: summary.problemCounts,
    buckets: summary.buckets.length,
    generatedSeconds: Number(generatedSeconds.toFixed(1)),
    cpu: `${cpus()[0]?.model ?? 'unknown'} x${availableParallelism()}`,
    node: process.version,
    date: new Date().toISOString(),
  }),
);
