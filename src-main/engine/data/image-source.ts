// Reading images through sharp: header facts without decoding pixels, a cheap "is the end of the
// file there" check, and a sharp pipeline for any format we accept (BMP goes through our decoder).
//
// Truncation: a cut-off JPEG or PNG still passes a header read, so the scan also reads the last
// bytes of the file: JPEG must end with the EOI marker (FFD9), PNG with the IEND chunk, GIF with
// its trailer (3B), WebP must be as long as its RIFF header says, BMP as long as its pixel rows.
// Files that fail this cheap check are decoded in full (failOn 'truncated'), which tells a really
// truncated file from one with harmless bytes after the end marker. AVIF and TIFF have no end marker:
// only a full decode (validation 'full') finds them truncated.
//
//   readImageHeader(path, format): Promise<ImageHeader>     throws ImageReadError
//   endMarkerLooksComplete(path, format, fileSize): boolean
//   decodeFully(path, format): Promise<void>                throws ImageReadError
//   openImage(path, format, options?): Promise<Sharp>       first frame, for any accepted format
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { bmpPixelDataEnd, decodeBmp, readBmpHeader } from './bmp';
import type { ImageFileFormat } from './image-files';

export interface ImageHeader {
  /** What the decoder found (may differ from the extension: a PNG named .jpg is still read). */
  format: string;
  /** Stored size, before EXIF orientation. */
  storedWidth: number;
  storedHeight: number;
  /** Displayed size: EXIF orientation applied (what training and previews see). */
  width: number;
  height: number;
  /** EXIF orientation 1..8, 1 when absent. */
  orientation: number;
  /** libvips colour space name: 'srgb', 'cmyk', 'b-w', 'rgb16', 'grey16', ... */
  space: string;
  channels: number;
  bitsPerSample: number;
  hasAlpha: boolean;
  /** Frames in an animated GIF/WebP (pages in a TIFF); 1 for still images. */
  frames: number;
}

export class ImageReadError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'ImageReadError';
  }
}

const BITS_BY_DEPTH: Readonly<Record<string, number>> = {
  uchar: 8,
  char: 8,
  ushort: 16,
  short: 16,
  uint: 32,
  int: 32,
  float: 32,
  double: 64,
};

/** Bytes of the file between `start` and `start + length` (fewer at the end of the file). */
function readRange(path: string, start: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const read = readSync(fd, buffer, 0, length, start);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

function cleanSharpMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message
    .split('\n')[0]
    .replace(/^Input (file|buffer) /u, '')
    .trim();
}

export async function readImageHeader(path: string, format: ImageFileFormat): Promise<ImageHeader> {
  if (format === 'bmp') {
    let header;
    try {
      header = readBmpHeader(readRange(path, 0, 200), path);
    } catch (error) {
      throw new ImageReadError(
        path,
        error instanceof Error ? error.message.replace(`${path}: `, '') : String(error),
      );
    }
    const hasAlpha = (header.masks?.alpha ?? 0) !== 0;
    return {
      format: 'bmp',
      storedWidth: header.width,
      storedHeight: header.height,
      width: header.width,
      height: header.height,
      orientation: 1,
      space: 'srgb',
      channels: hasAlpha ? 4 : 3,
      bitsPerSample: 8,
      hasAlpha,
      frames: 1,
    };
  }
  let meta;
  try {
    meta = await sharp(path).metadata();
  } catch (error) {
    throw new ImageReadError(path, cleanSharpMessage(error));
  }
  const orientation = meta.orientation ?? 1;
  const frames = meta.pages ?? 1;
  // For multi-frame files sharp's height can be all frames stacked; the frame height is what we load.
  const storedHeight = frames > 1 && meta.pageHeight ? meta.pageHeight : meta.height;
  const swap = orientation >= 5 && orientation <= 8;
  return {
    format: meta.format,
    storedWidth: meta.width,
    storedHeight,
    width: swap ? storedHeight : meta.width,
    height: swap ? meta.width : storedHeight,
    orientation,
    space: meta.space,
    channels: meta.channels,
    bitsPerSample: meta.bitsPerSample ?? BITS_BY_DEPTH[meta.depth] ?? 8,
    hasAlpha: meta.hasAlpha,
    frames,
  };
}

export function endMarkerLooksComplete(path: string, format: ImageFileFormat, fileSize: number): boolean {
  switch (format) {
    case 'jpeg': {
      const tail = readRange(path, Math.max(0, fileSize - 2), 2);
      return tail.length === 2 && tail[0] === 0xff && tail[1] === 0xd9;
    }
    case 'png': {
      // The IEND chunk: length 0, type "IEND", CRC AE 42 60 82.
      const tail = readRange(path, Math.max(0, fileSize - 12), 12);
      return tail.length === 12 && tail.toString('latin1', 4, 8) === 'IEND';
    }
    case 'gif': {
      const tail = readRange(path, Math.max(0, fileSize - 1), 1);
      return tail[0] === 0x3b;
    }
    case 'webp': {
      const head = readRange(path, 0, 12);
      if (head.length < 12 || head.toString('latin1', 0, 4) !== 'RIFF') return false;
      return head.readUInt32LE(4) + 8 <= fileSize;
    }
    case 'bmp': {
      try {
        return bmpPixelDataEnd(readBmpHeader(readRange(path, 0, 200), path)) <= fileSize;
      } catch {
        return false;
      }
    }
    case 'avif':
    case 'tiff':
      return true;
  }
}

/** Decodes every pixel of the first frame; throws when the data is truncated or corrupt. */
export async function decodeFully(path: string, format: ImageFileFormat): Promise<void> {
  try {
    const image = await openImage(path, format);
    await image.raw().toBuffer();
  } catch (error) {
    if (error instanceof ImageReadError) throw error;
    throw new ImageReadError(path, cleanSharpMessage(error));
  }
}

/**
 * A sharp pipeline on the first frame of the image. 'truncated' fails on cut-off data but lets
 * through the mild warnings real photos often carry (extraneous bytes before a marker).
 */
export async function openImage(path: string, format: ImageFileFormat): Promise<Sharp> {
  if (format === 'bmp') {
    try {
      const { width, height, channels, data } = decodeBmp(readFileSync(path), path);
      return sharp(data, { raw: { width, height, channels } });
    } catch (error) {
      throw new ImageReadError(
        path,
        error instanceof Error ? error.message.replace(`${path}: `, '') : String(error),
      );
    }
  }
  return sharp(path, { failOn: 'truncated', pages: 1, page: 0 });
}
