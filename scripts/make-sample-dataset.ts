// Generates resources/sample-dataset/: eight small images of simple coloured shapes, each with a
// caption, that the README's first training run uses. Run once and commit the output:
//   npx tsx scripts/make-sample-dataset.ts
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const folder = join(dirname(fileURLToPath(import.meta.url)), '..', 'resources', 'sample-dataset');

interface SampleImage {
  name: string;
  width: number;
  height: number;
  background: string;
  /** SVG elements drawn in a 100x100 box, scaled to the image. */
  shape: string;
  caption: string;
}

const samples: SampleImage[] = [
  {
    name: 'red-circle',
    width: 96,
    height: 96,
    background: 'white',
    shape: '<circle cx="50" cy="50" r="32" fill="#d62828"/>',
    caption: 'a red circle on a white background',
  },
  {
    name: 'blue-square',
    width: 128,
    height: 128,
    background: 'white',
    shape: '<rect x="22" y="22" width="56" height="56" fill="#1d4ed8"/>',
    caption: 'a blue square on a white background',
  },
  {
    name: 'green-triangle',
    width: 64,
    height: 64,
    background: 'white',
    shape: '<polygon points="50,14 88,84 12,84" fill="#2a9d3f"/>',
    caption: 'a green triangle on a white background',
  },
  {
    name: 'yellow-star',
    width: 112,
    height: 112,
    background: '#1f2937',
    shape: '<polygon points="50,8 61,38 93,38 67,57 77,88 50,69 23,88 33,57 7,38 39,38" fill="#facc15"/>',
    caption: 'a yellow star on a dark gray background',
  },
  {
    name: 'purple-ring',
    width: 96,
    height: 96,
    background: '#f1f5f9',
    shape: '<circle cx="50" cy="50" r="30" fill="none" stroke="#7e22ce" stroke-width="12"/>',
    caption: 'a purple ring on a light gray background',
  },
  {
    name: 'orange-stripes',
    width: 128,
    height: 96,
    background: 'white',
    shape:
      '<rect x="0" y="15" width="100" height="14" fill="#f97316"/><rect x="0" y="43" width="100" height="14" fill="#f97316"/><rect x="0" y="71" width="100" height="14" fill="#f97316"/>',
    caption: 'orange horizontal stripes on a white background',
  },
  {
    name: 'teal-diamond',
    width: 96,
    height: 128,
    background: 'white',
    shape: '<polygon points="50,6 90,50 50,94 10,50" fill="#0d9488"/>',
    caption: 'a teal diamond on a white background',
  },
  {
    name: 'pink-heart',
    width: 80,
    height: 80,
    background: '#fff7ed',
    shape: '<path d="M50 85 L15 50 A18 18 0 0 1 50 25 A18 18 0 0 1 85 50 Z" fill="#ec4899"/>',
    caption: 'a pink heart on a cream background',
  },
];

rmSync(folder, { recursive: true, force: true });
mkdirSync(folder, { recursive: true });
for (const sample of samples) {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${sample.width}" height="${sample.height}" viewBox="0 0 100 100" preserveAspectRatio="none"><rect width="100" height="100" fill="${sample.background}"/>${sample.shape}</svg>`;
  const png = await sharp(Buffer.from(svg)).removeAlpha().png({ compressionLevel: 9 }).toBuffer();
  writeFileSync(join(folder, `${sample.name}.png`), png);
  writeFileSync(join(folder, `${sample.name}.txt`), `${sample.caption}\n`);
}
console.log(`wrote ${samples.length} images and captions to ${folder}`);
