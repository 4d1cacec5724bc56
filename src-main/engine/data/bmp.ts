// Windows BMP, which sharp's prebuilt libvips cannot read: our own header reader and decoder into
// raw RGB(A) bytes that sharp then takes as raw input.
//
// Layout: 14-byte file header ('BM', file size, pixel data offset at 10), then a DIB header whose
// first u32 is its size (12 = OS/2 core, 40 = BITMAPINFOHEADER, 52/56/108/124 = later versions that
// carry channel masks inside the header). Rows are padded to 4 bytes and stored bottom-up unless
// the height is negative. Supported: 1/4/8-bit palette, 16-bit (555 or bit fields), 24-bit,
// 32-bit (BGRx or bit fields, with alpha when the header gives an alpha mask). RLE is refused.
//
//   readBmpHeader(bytes, file): BmpHeader      needs the first 200 bytes at most
//   decodeBmp(bytes, file): { width, height, channels: 3 | 4, data: Uint8Array }
//   bmpPixelDataEnd(header): number            the file size a complete file has at least

export interface BmpHeader {
  width: number;
  height: number;
  topDown: boolean;
  bitCount: number;
  compression: number;
  dataOffset: number;
  rowStride: number;
  /** File offset of the palette and its entry size (3 for core headers, 4 otherwise). */
  paletteOffset: number;
  paletteEntrySize: 3 | 4;
  paletteSize: number;
  masks: { red: number; green: number; blue: number; alpha: number } | null;
}

const BI_RGB = 0;
const BI_BITFIELDS = 3;
const BI_ALPHABITFIELDS = 6;

export class BmpError extends Error {
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'BmpError';
  }
}

export function readBmpHeader(bytes: Uint8Array, file: string): BmpHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 26 || bytes[0] !== 0x42 || bytes[1] !== 0x4d)
    throw new BmpError(file, 'not a BMP file (no "BM" signature)');
  const dataOffset = view.getUint32(10, true);
  const dibSize = view.getUint32(14, true);
  if (dibSize === 12) {
    const width = view.getUint16(18, true);
    const height = view.getInt16(20, true);
    const bitCount = view.getUint16(24, true);
    return finish({
      width,
      height,
      bitCount,
      compression: BI_RGB,
      dataOffset,
      colorsUsed: 0,
      dibSize,
      masks: null,
      paletteEntrySize: 3,
    });
  }
  if (dibSize < 40 || bytes.byteLength < 14 + dibSize)
    throw new BmpError(file, `unsupported or truncated BMP header (${dibSize} bytes)`);
  const width = view.getInt32(18, true);
  const height = view.getInt32(22, true);
  const bitCount = view.getUint16(28, true);
  const compression = view.getUint32(30, true);
  const colorsUsed = view.getUint32(46, true);
  let masks: BmpHeader['masks'] = null;
  if (compression === BI_BITFIELDS || compression === BI_ALPHABITFIELDS) {
    // BITMAPINFOHEADER keeps the masks right after itself; later headers hold them inside.
    const at = 54;
    if (bytes.byteLength < at + 16) throw new BmpError(file, 'truncated BMP channel masks');
    const hasAlphaMask = dibSize >= 56 || compression === BI_ALPHABITFIELDS;
    masks = {
      red: view.getUint32(at, true),
      green: view.getUint32(at + 4, true),
      blue: view.getUint32(at + 8, true),
      alpha: hasAlphaMask ? view.getUint32(at + 12, true) : 0,
    };
  } else if (compression !== BI_RGB) {
    throw new BmpError(
      file,
      `compressed BMP (compression ${compression}, RLE/JPEG/PNG) is not supported; re-save it as PNG`,
    );
  }
  const extraMasks =
    dibSize === 40 && compression === BI_BITFIELDS
      ? 12
      : dibSize === 40 && compression === BI_ALPHABITFIELDS
        ? 16
        : 0;
  return finish({
    width,
    height,
    bitCount,
    compression,
    dataOffset,
    colorsUsed,
    dibSize: dibSize + extraMasks,
    masks,
    paletteEntrySize: 4,
  });

  function finish(h: {
    width: number;
    height: number;
    bitCount: number;
    compression: number;
    dataOffset: number;
    colorsUsed: number;
    dibSize: number;
    masks: BmpHeader['masks'];
    paletteEntrySize: 3 | 4;
  }): BmpHeader {
    if (![1, 4, 8, 16, 24, 32].includes(h.bitCount))
      throw new BmpError(file, `unsupported BMP bit depth ${h.bitCount}`);
    if (h.width <= 0 || h.height === 0) throw new BmpError(file, `invalid BMP size ${h.width}x${h.height}`);
    const paletteSize = h.bitCount <= 8 ? h.colorsUsed || 1 << h.bitCount : 0;
    return {
      width: h.width,
      height: Math.abs(h.height),
      topDown: h.height < 0,
      bitCount: h.bitCount,
      compression: h.compression,
      dataOffset: h.dataOffset,
      rowStride: Math.floor((h.bitCount * h.width + 31) / 32) * 4,
      paletteOffset: 14 + h.dibSize,
      paletteEntrySize: h.paletteEntrySize,
      paletteSize,
      masks: h.masks,
    };
  }
}

export function bmpPixelDataEnd(header: BmpHeader): number {
  return header.dataOffset + header.rowStride * header.height;
}

/** Shift and scale that turn a channel mask into an 8-bit value. */
function maskReader(mask: number): (pixel: number) => number {
  if (mask === 0) return () => 255;
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  const max = mask >>> shift;
  return (pixel) => Math.round((((pixel & mask) >>> shift) * 255) / max);
}

export function decodeBmp(
  bytes: Uint8Array,
  file: string,
): { width: number; height: number; channels: 3 | 4; data: Uint8Array } {
  const h = readBmpHeader(bytes, file);
  if (bytes.byteLength < bmpPixelDataEnd(h))
    throw new BmpError(
      file,
      `truncated BMP: ${bytes.byteLength} bytes, pixel data needs ${bmpPixelDataEnd(h)}`,
    );
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const masks =
    h.masks ?? (h.bitCount === 16 ? { red: 0x7c00, green: 0x03e0, blue: 0x001f, alpha: 0 } : null);
  const channels: 3 | 4 = masks && masks.alpha !== 0 ? 4 : 3;
  const out = new Uint8Array(h.width * h.height * channels); // [height, width, channels]
  const red = maskReader(masks?.red ?? 0);
  const green = maskReader(masks?.green ?? 0);
  const blue = maskReader(masks?.blue ?? 0);
  const alpha = maskReader(masks?.alpha ?? 0);
  for (let y = 0; y < h.height; y++) {
    const row = h.dataOffset + (h.topDown ? y : h.height - 1 - y) * h.rowStride;
    for (let x = 0; x < h.width; x++) {
      const o = (y * h.width + x) * channels;
      if (h.bitCount <= 8) {
        const bitOffset = x * h.bitCount;
        const byte = bytes[row + (bitOffset >> 3)];
        const index = (byte >> (8 - h.bitCount - (bitOffset & 7))) & ((1 << h.bitCount) - 1);
        const entry = h.paletteOffset + Math.min(index, h.paletteSize - 1) * h.paletteEntrySize;
        out[o] = bytes[entry + 2];
        out[o + 1] = bytes[entry + 1];
        out[o + 2] = bytes[entry];
      } else if (h.bitCount === 24 || (h.bitCount === 32 && !h.masks)) {
        const p = row + x * (h.bitCount / 8);
        out[o] = bytes[p + 2];
        out[o + 1] = bytes[p + 1];
        out[o + 2] = bytes[p];
      } else {
        const pixel =
          h.bitCount === 16 ? view.getUint16(row + x * 2, true) : view.getUint32(row + x * 4, true);
        out[o] = red(pixel);
        out[o + 1] = green(pixel);
        out[o + 2] = blue(pixel);
        if (channels === 4) out[o + 3] = alpha(pixel);
      }
    }
  }
  return { width: h.width, height: h.height, channels, data: out };
}
