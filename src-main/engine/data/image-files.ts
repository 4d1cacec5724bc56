// What counts as an image, a caption sidecar or a hidden file in a dataset folder, and how a
// kohya-style repeat folder name (`10_mychar`: repeats 10, trigger "mychar") is read.
//
//   IMAGE_EXTENSIONS, CAPTION_EXTENSIONS
//   imageFormatOf(name): ImageFileFormat | null     by extension, any letter case
//   captionExtensionOf(name): CaptionExtension | null
//   isHiddenName(name)
//   parseRepeatFolderName(name): { repeats, trigger } | null
import { extname } from 'node:path';

export type ImageFileFormat = 'jpeg' | 'png' | 'webp' | 'avif' | 'gif' | 'bmp' | 'tiff';

const FORMAT_BY_EXTENSION: Readonly<Record<string, ImageFileFormat>> = {
  '.jpg': 'jpeg',
  '.jpeg': 'jpeg',
  '.jpe': 'jpeg',
  '.jfif': 'jpeg',
  '.png': 'png',
  '.webp': 'webp',
  '.avif': 'avif',
  '.gif': 'gif',
  '.bmp': 'bmp',
  '.tif': 'tiff',
  '.tiff': 'tiff',
};

export const IMAGE_EXTENSIONS: readonly string[] = Object.keys(FORMAT_BY_EXTENSION);

export type CaptionExtension = '.txt' | '.caption';
/** In order of preference when an image has both. */
export const CAPTION_EXTENSIONS: readonly CaptionExtension[] = ['.txt', '.caption'];

export function imageFormatOf(name: string): ImageFileFormat | null {
  return FORMAT_BY_EXTENSION[extname(name).toLowerCase()] ?? null;
}

export function captionExtensionOf(name: string): CaptionExtension | null {
  const ext = extname(name).toLowerCase();
  return (CAPTION_EXTENSIONS as readonly string[]).includes(ext) ? (ext as CaptionExtension) : null;
}

/** Dot files and folders (`.DS_Store`, `.git`, `._photo.jpg` from macOS) are never dataset content. */
export function isHiddenName(name: string): boolean {
  return name.startsWith('.');
}

export interface RepeatFolder {
  repeats: number;
  /** The text after the underscore: kohya's "identifier class", used as a trigger word. */
  trigger: string;
}

/** `10_mychar` -> { repeats: 10, trigger: 'mychar' }; anything else -> null. */
export function parseRepeatFolderName(name: string): RepeatFolder | null {
  const match = /^(\d+)_(.+)$/u.exec(name);
  if (!match) return null;
  const repeats = Number(match[1]);
  if (!Number.isSafeInteger(repeats) || repeats < 1) return null;
  return { repeats, trigger: match[2].trim() };
}
