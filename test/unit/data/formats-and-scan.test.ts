// BMP variants our decoder reads (palette, 16-bit, 32-bit with alpha, top-down), file-name rules,
// repeat folders, caption pairing across Unicode normalisation forms, and the end-marker check.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeBmp, readBmpHeader } from '../../../src-main/engine/data/bmp';
import { imageFormatOf, parseRepeatFolderName } from '../../../src-main/engine/data/image-files';
import { endMarkerLooksComplete } from '../../../src-main/engine/data/image-source';
import { scanFolder } from '../../../src-main/engine/data/scan';

const temps: string[] = [];
afterEach(() => {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-scan-'));
  temps.push(dir);
  return dir;
}

/** A BMP file: 14-byte file header + `dib` (its first u32 is its size) + optional palette + pixel rows. */
function bmpFile(dib: Buffer, palette: Buffer, rows: Buffer): Buffer {
  const header = Buffer.alloc(14);
  header.write('BM', 0, 'latin1');
  const dataOffset = 14 + dib.length + palette.length;
  header.writeUInt32LE(dataOffset + rows.length, 2);
  header.writeUInt32LE(dataOffset, 10);
  return Buffer.concat([header, dib, palette, rows]);
}

function infoHeader(
  size: number,
  width: number,
  height: number,
  bitCount: number,
  compression: number,
  colorsUsed = 0,
): Buffer {
  const dib = Buffer.alloc(size);
  dib.writeUInt32LE(size, 0);
  dib.writeInt32LE(width, 4);
  dib.writeInt32LE(height, 8);
  dib.writeUInt16LE(1, 12);
  dib.writeUInt16LE(bitCount, 14);
  dib.writeUInt32LE(compression, 16);
  dib.writeUInt32LE(colorsUsed, 32);
  return dib;
}

describe('BMP decoding', () => {
  it('reads an 8-bit palette image, bottom-up, with row padding', () => {
    // 3x2, palette: 0 red, 1 green, 2 blue. Bottom row first in the file.
    const palette = Buffer.from([0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0]);
    const rows = Buffer.from([2, 2, 2, 0, /* bottom */ 0, 1, 2, 0 /* top */]);
    const decoded = decodeBmp(bmpFile(infoHeader(40, 3, 2, 8, 0, 3), palette, rows), 'p.bmp');
    expect([decoded.width, decoded.height, decoded.channels]).toEqual([3, 2, 3]);
    expect([...decoded.data]).toEqual([255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255]);
  });

  it('reads 32-bit bit fields with alpha (V4 header), top-down', () => {
    const dib = infoHeader(108, 2, -1, 32, 3);
    dib.writeUInt32LE(0x00ff0000, 40); // red mask
    dib.writeUInt32LE(0x0000ff00, 44);
    dib.writeUInt32LE(0x000000ff, 48);
    dib.writeUInt32LE(0xff000000, 52); // alpha mask
    const rows = Buffer.alloc(8);
    rows.writeUInt32LE(0x80ff0000, 0); // red, alpha 128
    rows.writeUInt32LE(0xff0000ff, 4); // blue, opaque
    const decoded = decodeBmp(bmpFile(dib, Buffer.alloc(0), rows), 'a.bmp');
    expect(decoded.channels).toBe(4);
    expect([...decoded.data]).toEqual([255, 0, 0, 128, 0, 0, 255, 255]);
  });

  it('reads 16-bit 5-5-5 and refuses RLE and truncated files with the file name', () => {
    const rows = Buffer.alloc(4);
    rows.writeUInt16LE(0x7c00, 0); // red
    rows.writeUInt16LE(0x001f, 2); // blue
    expect([...decodeBmp(bmpFile(infoHeader(40, 2, 1, 16, 0), Buffer.alloc(0), rows), 'x.bmp').data]).toEqual(
      [255, 0, 0, 0, 0, 255],
    );
    expect(() =>
      readBmpHeader(bmpFile(infoHeader(40, 2, 1, 8, 1), Buffer.alloc(0), rows), 'rle.bmp'),
    ).toThrow(/rle\.bmp: compressed BMP/);
    const full = bmpFile(infoHeader(40, 4, 4, 24, 0), Buffer.alloc(0), Buffer.alloc(48));
    expect(() => decodeBmp(full.subarray(0, 70), 'cut.bmp')).toThrow(/cut\.bmp: truncated BMP/);
  });
});

describe('file names and folders', () => {
  it('knows image extensions in any case and kohya repeat folders', () => {
    expect(
      ['a.JPG', 'b.Jpeg', 'c.PNG', 'd.webp', 'e.AVIF', 'f.gif', 'g.BMP', 'h.tif', 'i.TIFF'].map(
        imageFormatOf,
      ),
    ).toEqual(['jpeg', 'jpeg', 'png', 'webp', 'avif', 'gif', 'bmp', 'tiff', 'tiff']);
    expect(imageFormatOf('notes.txt')).toBeNull();
    expect(parseRepeatFolderName('10_mychar')).toEqual({ repeats: 10, trigger: 'mychar' });
    expect(parseRepeatFolderName('3_sks dog')).toEqual({ repeats: 3, trigger: 'sks dog' });
    expect(parseRepeatFolderName('0_none')).toBeNull();
    expect(parseRepeatFolderName('photos')).toBeNull();
    expect(parseRepeatFolderName('v2_style')).toBeNull();
  });

  it('takes repeats from the nearest repeat folder, or the dataset folder itself, and pairs NFD captions', async () => {
    const root = join(tempDir(), '4_outer');
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } })
      .png()
      .toBuffer();
    mkdirSync(join(root, '12_inner', 'plain'), { recursive: true });
    writeFileSync(join(root, 'top.png'), png);
    writeFileSync(join(root, '12_inner', 'plain', 'deep.png'), png);
    writeFileSync(join(root, 'caf\u00e9.png'), png); // NFC name
    writeFileSync(join(root, 'cafe\u0301.txt'), 'a cafe'); // NFD name, as macOS may write it
    const scan = await scanFolder(root);
    const byPath = new Map(scan.images.map((image) => [image.relativePath, image]));
    expect([byPath.get('top.png')?.repeats, byPath.get('top.png')?.trigger]).toEqual([4, 'outer']);
    expect([
      byPath.get('12_inner/plain/deep.png')?.repeats,
      byPath.get('12_inner/plain/deep.png')?.trigger,
    ]).toEqual([12, 'inner']);
    expect(byPath.get('caf\u00e9.png')?.captionPath).toBe(join(root, 'cafe\u0301.txt'));
    expect(scan.orphanCaptions).toEqual([]);
    await expect(scanFolder(join(root, 'missing'))).rejects.toThrow(
      /missing: cannot open the dataset folder/,
    );
  });
});

describe('end-marker check', () => {
  it('passes complete JPEG/PNG/GIF/WebP files and fails cut ones', async () => {
    const dir = tempDir();
    const base = sharp({ create: { width: 32, height: 32, channels: 3, background: 'blue' } });
    for (const [ext, format] of [
      ['jpg', 'jpeg'],
      ['png', 'png'],
      ['gif', 'gif'],
      ['webp', 'webp'],
    ] as const) {
      const bytes = await base.clone().toFormat(format).toBuffer();
      writeFileSync(join(dir, `ok.${ext}`), bytes);
      writeFileSync(join(dir, `cut.${ext}`), bytes.subarray(0, bytes.length - 5));
      expect(endMarkerLooksComplete(join(dir, `ok.${ext}`), format, bytes.length)).toBe(true);
      expect(endMarkerLooksComplete(join(dir, `cut.${ext}`), format, bytes.length - 5)).toBe(false);
    }
  });
});
