// PNG text chunks: the generation settings travel inside the image as A1111 writes them (a text
// chunk with keyword "parameters"), so A1111, ComfyUI, Civitai and our own studio can read them
// back. sharp encodes the pixels; the chunk is spliced in right after IHDR here, because sharp
// writes no arbitrary text chunks.
//
//   addPngTextChunk(png, keyword, text): Uint8Array   tEXt (Latin-1) or, when needed, iTXt (UTF-8)
//   readPngTextChunks(png): Map<keyword, text>        tEXt, iTXt (uncompressed) and zTXt
import { inflateSync } from 'node:zlib';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309) of the chunk type and data, as PNG requires. */
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function checkSignature(png: Uint8Array, what: string): void {
  if (png.length < 8 || SIGNATURE.some((b, i) => png[i] !== b)) throw new Error(`${what}: not a PNG file (bad signature)`);
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const isLatin1 = (text: string): boolean => [...text].every((ch) => ch.codePointAt(0)! <= 0xff);

/** The PNG with one more text chunk after IHDR; Latin-1 text goes to tEXt, anything else to iTXt. */
export function addPngTextChunk(png: Uint8Array, keyword: string, text: string): Uint8Array {
  checkSignature(png, 'addPngTextChunk');
  if (keyword.length < 1 || keyword.length > 79 || !isLatin1(keyword) || keyword.includes('\0'))
    throw new Error(`addPngTextChunk: keyword ${JSON.stringify(keyword)} must be 1-79 Latin-1 characters`);
  const ihdrLength = new DataView(png.buffer, png.byteOffset, png.byteLength).getUint32(8);
  const afterIhdr = 8 + 12 + ihdrLength;
  const key = Buffer.from(keyword, 'latin1');
  const data = isLatin1(text)
    ? Buffer.concat([key, Buffer.from([0]), Buffer.from(text, 'latin1')])
    : // iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translated keyword, 0, UTF-8 text
      Buffer.concat([key, Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]);
  const added = chunk(isLatin1(text) ? 'tEXt' : 'iTXt', data);
  const out = new Uint8Array(png.length + added.length);
  out.set(png.subarray(0, afterIhdr), 0);
  out.set(added, afterIhdr);
  out.set(png.subarray(afterIhdr), afterIhdr + added.length);
  return out;
}

/** Every text chunk of a PNG, by keyword (CRCs checked). */
export function readPngTextChunks(png: Uint8Array, what = 'PNG'): Map<string, string> {
  checkSignature(png, what);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const texts = new Map<string, string>();
  let offset = 8;
  while (offset + 12 <= png.length) {
    const length = view.getUint32(offset);
    const type = Buffer.from(png.subarray(offset + 4, offset + 8)).toString('latin1');
    if (offset + 12 + length > png.length) throw new Error(`${what}: chunk ${type} at byte ${offset} runs past the end of the file (truncated)`);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (view.getUint32(offset + 8 + length) !== crc32(png.subarray(offset + 4, offset + 8 + length)))
      throw new Error(`${what}: chunk ${type} at byte ${offset} has a bad CRC`);
    const zero = data.indexOf(0);
    if (type === 'tEXt' && zero > 0) {
      texts.set(Buffer.from(data.subarray(0, zero)).toString('latin1'), Buffer.from(data.subarray(zero + 1)).toString('latin1'));
    } else if (type === 'zTXt' && zero > 0) {
      texts.set(Buffer.from(data.subarray(0, zero)).toString('latin1'), inflateSync(data.subarray(zero + 2)).toString('latin1'));
    } else if (type === 'iTXt' && zero > 0) {
      const compressed = data[zero + 1] === 1;
      let p = zero + 3;
      p = data.indexOf(0, p) + 1; // language tag
      p = data.indexOf(0, p) + 1; // translated keyword
      const body = data.subarray(p);
      texts.set(Buffer.from(data.subarray(0, zero)).toString('latin1'), (compressed ? inflateSync(body) : Buffer.from(body)).toString('utf8'));
    }
    if (type === 'IEND') break;
    offset += 12 + length;
  }
  return texts;
}
