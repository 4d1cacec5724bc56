// Caption sidecar files (`photo.txt` / `photo.caption` next to `photo.jpg`): UTF-8 with or without
// BOM, LF or CRLF. We hand out the text with BOM removed, LF line ends and no final newline, and
// remember how the file was written so a save keeps its BOM, line ends and final newline.
// Saves are atomic (temp file + rename); nothing here ever opens an image file.
//
//   decodeCaption(bytes): { text, format, validUtf8 }
//   encodeCaption(text, format): Buffer
//   readCaptionFile(path): CaptionFile
//   writeCaptionFile(path, text, format?)     keeps the existing file's format when none is given
//   captionForTraining(text): string           whitespace and line breaks collapsed to single spaces
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic-write';

export interface CaptionFormat {
  bom: boolean;
  eol: '\n' | '\r\n';
  finalNewline: boolean;
}

export const NEW_CAPTION_FORMAT: Readonly<CaptionFormat> = { bom: false, eol: '\n', finalNewline: false };

export interface CaptionFile {
  path: string;
  text: string;
  format: CaptionFormat;
  /** False when the bytes were not valid UTF-8 (invalid sequences became U+FFFD). */
  validUtf8: boolean;
}

const UTF8_BOM = [0xef, 0xbb, 0xbf];

export function decodeCaption(bytes: Uint8Array): {
  text: string;
  format: CaptionFormat;
  validUtf8: boolean;
} {
  const bom =
    bytes.length >= 3 && bytes[0] === UTF8_BOM[0] && bytes[1] === UTF8_BOM[1] && bytes[2] === UTF8_BOM[2];
  const body = bom ? bytes.subarray(3) : bytes;
  let raw: string;
  let validUtf8 = true;
  try {
    raw = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    validUtf8 = false;
    raw = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(body);
  }
  const eol = raw.includes('\r\n') ? '\r\n' : '\n';
  let text = raw.replace(/\r\n?/gu, '\n');
  const finalNewline = text.endsWith('\n');
  if (finalNewline) text = text.slice(0, -1);
  return { text, format: { bom, eol, finalNewline }, validUtf8 };
}

export function encodeCaption(text: string, format: CaptionFormat): Buffer {
  let body = text.replace(/\r\n?/gu, '\n');
  if (format.finalNewline && !body.endsWith('\n')) body += '\n';
  if (format.eol === '\r\n') body = body.replace(/\n/gu, '\r\n');
  const encoded = Buffer.from(body, 'utf8');
  return format.bom ? Buffer.concat([Buffer.from(UTF8_BOM), encoded]) : encoded;
}

export function readCaptionFile(path: string): CaptionFile {
  return { path, ...decodeCaption(readFileSync(path)) };
}

/** Writes `text` atomically; an existing file keeps its BOM, line ends and final newline. */
export function writeCaptionFile(path: string, text: string, format?: CaptionFormat): CaptionFormat {
  const keep = format ?? (existsSync(path) ? readCaptionFile(path).format : { ...NEW_CAPTION_FORMAT });
  writeFileAtomic(path, encodeCaption(text, keep));
  return keep;
}

export function captionForTraining(text: string): string {
  return text.replace(/\s+/gu, ' ').trim();
}
