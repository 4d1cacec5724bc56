// Walking a dataset folder: every image file (any depth, any letter case of extension), its
// caption sidecar, its repeats from the nearest kohya repeat folder (`10_mychar`), orphan captions
// and what was skipped. No image is opened here: this is names and sizes only.
//
// Rules: hidden files and folders (leading dot) are skipped and not descended into; a symlinked
// file is followed, a symlinked folder is not (loops); an image `a.png` pairs with `a.txt` or
// else `a.caption` in the same folder (names compared in Unicode NFC, so macOS NFD names pair);
// `a.png` and `a.jpg` may share `a.txt`. The repeat folder is the nearest ancestor inside the
// dataset folder whose name is `N_name`, else the dataset folder itself when its name is, else
// repeats = defaultRepeats (1) and no trigger.
//
//   scanFolder(root, { defaultRepeats? }): Promise<ScanResult>
import { readdir, stat } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import {
  CAPTION_EXTENSIONS,
  captionExtensionOf,
  imageFormatOf,
  isHiddenName,
  parseRepeatFolderName,
} from './image-files';
import type { ImageFileFormat, RepeatFolder } from './image-files';

export interface ScannedImage {
  path: string;
  /** Relative to the dataset folder, '/'-separated. */
  relativePath: string;
  format: ImageFileFormat;
  fileSize: number;
  mtimeMs: number;
  repeats: number;
  /** From the repeat folder name (`10_mychar` -> "mychar"), else null. */
  trigger: string | null;
  captionPath: string | null;
  /** Other caption sidecars for the same image that were not used (e.g. a.caption when a.txt exists). */
  unusedCaptionPaths: string[];
}

export interface SkippedFile {
  relativePath: string;
  reason: 'hidden' | 'not-an-image' | 'symlinked-folder' | 'unreadable-entry';
}

export interface ScanResult {
  root: string;
  images: ScannedImage[];
  /** Caption files (relative paths) with no image of the same name next to them. */
  orphanCaptions: string[];
  skipped: SkippedFile[];
}

interface FolderContext {
  absolute: string;
  relative: string;
  repeat: RepeatFolder | null;
}

const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const stemKey = (name: string): string => basename(name, extname(name)).normalize('NFC');

export async function scanFolder(
  root: string,
  options: { defaultRepeats?: number } = {},
): Promise<ScanResult> {
  const absoluteRoot = resolve(root);
  const rootStat = await stat(absoluteRoot).catch((error: NodeJS.ErrnoException) => {
    throw new Error(`${absoluteRoot}: cannot open the dataset folder (${error.code ?? error.message})`);
  });
  if (!rootStat.isDirectory()) throw new Error(`${absoluteRoot}: not a folder`);
  const defaultRepeats = options.defaultRepeats ?? 1;
  const result: ScanResult = { root: absoluteRoot, images: [], orphanCaptions: [], skipped: [] };
  const rootRepeat = parseRepeatFolderName(basename(absoluteRoot));
  await scanOne({ absolute: absoluteRoot, relative: '', repeat: rootRepeat }, defaultRepeats, result);
  result.images.sort((a, b) => byCodeUnits(a.relativePath, b.relativePath));
  result.orphanCaptions.sort(byCodeUnits);
  result.skipped.sort((a, b) => byCodeUnits(a.relativePath, b.relativePath));
  return result;
}

async function scanOne(folder: FolderContext, defaultRepeats: number, result: ScanResult): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await readdir(folder.absolute, { withFileTypes: true });
  } catch {
    result.skipped.push({ relativePath: folder.relative || '.', reason: 'unreadable-entry' });
    return;
  }
  const rel = (name: string): string => (folder.relative ? `${folder.relative}/${name}` : name);
  const images: { name: string; format: ImageFileFormat }[] = [];
  const captions = new Map<string, string[]>(); // stem (NFC) -> caption file names, preferred first
  const subfolders: string[] = [];

  for (const entry of entries) {
    const name = entry.name;
    if (isHiddenName(name)) {
      result.skipped.push({ relativePath: rel(name), reason: 'hidden' });
      continue;
    }
    let isFile = entry.isFile();
    let isDirectory = entry.isDirectory();
    if (entry.isSymbolicLink()) {
      const target = await stat(join(folder.absolute, name)).catch(() => null);
      if (!target) {
        result.skipped.push({ relativePath: rel(name), reason: 'unreadable-entry' });
        continue;
      }
      if (target.isDirectory()) {
        result.skipped.push({ relativePath: rel(name), reason: 'symlinked-folder' });
        continue;
      }
      isFile = target.isFile();
      isDirectory = false;
    }
    if (isDirectory) {
      subfolders.push(name);
      continue;
    }
    if (!isFile) continue;
    const format = imageFormatOf(name);
    if (format) {
      images.push({ name, format });
      continue;
    }
    if (captionExtensionOf(name)) {
      const list = captions.get(stemKey(name)) ?? [];
      list.push(name);
      captions.set(stemKey(name), list);
      continue;
    }
    result.skipped.push({ relativePath: rel(name), reason: 'not-an-image' });
  }

  const usedCaptions = new Set<string>();
  const repeats = folder.repeat?.repeats ?? defaultRepeats;
  const trigger = folder.repeat?.trigger ?? null;
  const stats = await Promise.all(
    images.map(({ name }) => stat(join(folder.absolute, name)).catch(() => null)),
  );
  images.forEach(({ name, format }, i) => {
    const fileStat = stats[i];
    const candidates = (captions.get(stemKey(name)) ?? []).slice().sort((a, b) => {
      const rank = (n: string): number => CAPTION_EXTENSIONS.indexOf(captionExtensionOf(n)!);
      return rank(a) - rank(b) || byCodeUnits(a, b);
    });
    candidates.forEach((c) => usedCaptions.add(c));
    result.images.push({
      path: join(folder.absolute, name),
      relativePath: rel(name),
      format,
      fileSize: fileStat?.size ?? 0,
      mtimeMs: fileStat?.mtimeMs ?? 0,
      repeats,
      trigger,
      captionPath: candidates.length > 0 ? join(folder.absolute, candidates[0]) : null,
      unusedCaptionPaths: candidates.slice(1).map((c) => join(folder.absolute, c)),
    });
  });
  for (const names of captions.values()) {
    for (const name of names) if (!usedCaptions.has(name)) result.orphanCaptions.push(rel(name));
  }

  for (const name of subfolders) {
    const repeat = parseRepeatFolderName(name) ?? folder.repeat;
    await scanOne(
      { absolute: join(folder.absolute, name), relative: rel(name), repeat },
      defaultRepeats,
      result,
    );
  }
}
