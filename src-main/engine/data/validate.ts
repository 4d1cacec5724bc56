// Per-image validation: what is wrong with one image file, its caption, and which files are exact
// duplicates of each other. Problems come back typed (see problems.ts) and name the file.
//
// Validation modes:
//   'quick' (default)  header read + end-marker check (see image-source.ts); only files whose end
//                      looks wrong are decoded in full to confirm. 10,000 images in seconds.
//   'full'             every image is decoded in full (bounded concurrency); also catches corrupt
//                      data in the middle of a file and truncated AVIF/TIFF.
//
//   inspectImage(image, mode): Promise<ImageInspection>
//   captionProblems(relativePath, caption): DatasetProblem[]
//   findDuplicates(images, concurrency): Promise<Map<relativePath, string[]>>  same-content groups
//   SHARP_PIXEL_LIMIT
import { basename } from 'node:path';
import { hashFile, hashFileHead } from './content-hash';
import { mapConcurrent } from './concurrency';
import { ImageReadError, decodeFully, endMarkerLooksComplete, readImageHeader } from './image-source';
import type { ImageHeader } from './image-source';
import { makeProblem } from './problems';
import type { DatasetProblem } from './problems';
import type { CaptionFile } from './caption-file';

export type ValidationMode = 'quick' | 'full';

/** sharp's default limitInputPixels (0x3FFF x 0x3FFF): larger images are refused at decode. */
export const SHARP_PIXEL_LIMIT = 0x3fff * 0x3fff;

export interface ImageInspection {
  header: ImageHeader | null;
  problems: DatasetProblem[];
}

const reasonOf = (error: unknown): string =>
  error instanceof ImageReadError ? error.reason : error instanceof Error ? error.message : String(error);

export async function inspectImage(
  image: {
    path: string;
    relativePath: string;
    format: Parameters<typeof readImageHeader>[1];
    fileSize: number;
  },
  mode: ValidationMode,
): Promise<ImageInspection> {
  const file = image.relativePath;
  if (image.fileSize === 0)
    return {
      header: null,
      problems: [makeProblem('zero-byte', file, 'the file is empty (0 bytes); it is left out of training')],
    };

  let header: ImageHeader;
  try {
    header = await readImageHeader(image.path, image.format);
  } catch (error) {
    return {
      header: null,
      problems: [
        makeProblem(
          'unreadable',
          file,
          `not a readable image: ${reasonOf(error)}; it is left out of training`,
        ),
      ],
    };
  }
  if (header.width * header.height > SHARP_PIXEL_LIMIT) {
    return {
      header,
      problems: [
        makeProblem(
          'too-many-pixels',
          file,
          `${header.width}x${header.height} is more than the ${SHARP_PIXEL_LIMIT} pixels we decode; it is left out of training`,
        ),
      ],
    };
  }

  const suspicious = !endMarkerLooksComplete(image.path, image.format, image.fileSize);
  if (mode === 'full' || suspicious) {
    try {
      await decodeFully(image.path, image.format);
    } catch (error) {
      return {
        header,
        problems: [
          makeProblem(
            'truncated',
            file,
            `image data is truncated or corrupt (${reasonOf(error)}); it is left out of training`,
          ),
        ],
      };
    }
  }

  const problems: DatasetProblem[] = [];
  if (header.orientation !== 1) {
    problems.push(
      makeProblem(
        'exif-orientation',
        file,
        `EXIF orientation ${header.orientation}: stored ${header.storedWidth}x${header.storedHeight}, used upright as ${header.width}x${header.height}`,
      ),
    );
  }
  if (header.space === 'cmyk')
    problems.push(makeProblem('cmyk', file, 'CMYK colours; converted to sRGB for training'));
  if (header.bitsPerSample > 8)
    problems.push(
      makeProblem(
        'high-bit-depth',
        file,
        `${header.bitsPerSample}-bit samples; reduced to 8-bit sRGB for training`,
      ),
    );
  // Only the header is read: an alpha channel may well be fully opaque.
  if (header.hasAlpha)
    problems.push(
      makeProblem('alpha', file, 'has an alpha channel; transparent areas become white for training'),
    );
  if (header.frames > 1)
    problems.push(
      makeProblem('animated', file, `animated (${header.frames} frames); only the first frame is used`),
    );
  return { header, problems };
}

/** Caption problems of one image; `trigger` is the repeat folder's, used when the caption is missing. */
export function captionProblems(
  relativePath: string,
  caption: Pick<CaptionFile, 'path' | 'text' | 'validUtf8'> | null,
  trigger: string | null = null,
): DatasetProblem[] {
  const fallback = trigger ? `; the folder's trigger "${trigger}" is used as its caption` : '';
  if (!caption)
    return [
      makeProblem(
        'missing-caption',
        relativePath,
        `has no caption file (.txt or .caption next to it)${fallback}`,
      ),
    ];
  const problems: DatasetProblem[] = [];
  const name = basename(caption.path);
  if (!caption.validUtf8)
    problems.push(
      makeProblem(
        'caption-not-utf8',
        relativePath,
        `its caption ${name} is not valid UTF-8; unreadable characters were replaced`,
      ),
    );
  if (caption.text.trim() === '')
    problems.push(makeProblem('empty-caption', relativePath, `its caption ${name} is empty${fallback}`));
  return problems;
}

/**
 * Exact duplicates by content, in three narrowing rounds so a folder without duplicates costs
 * few extra reads: same byte size, then same hash of the first 64 KiB, then same full SHA-256.
 * Returns, for each file in a duplicate group, the other files of its group.
 */
export async function findDuplicates(
  images: readonly { path: string; relativePath: string; fileSize: number }[],
  concurrency: number,
): Promise<Map<string, string[]>> {
  type Image = (typeof images)[number];
  const groupsOf = async (
    groups: Image[][],
    key: (image: Image) => Promise<string | null>,
  ): Promise<Image[][]> => {
    const candidates = groups.filter((group) => group.length > 1).flat();
    const keys = await mapConcurrent(candidates, concurrency, (image) => key(image).catch(() => null));
    const byKey = new Map<string, Image[]>();
    candidates.forEach((image, i) => {
      const k = keys[i];
      if (k !== null) byKey.set(k, [...(byKey.get(k) ?? []), image]);
    });
    return [...byKey.values()].filter((group) => group.length > 1);
  };
  const nonEmpty = images.filter((image) => image.fileSize > 0);
  const bySize = await groupsOf([nonEmpty], async (image) => String(image.fileSize));
  const byHead = await groupsOf(
    bySize,
    async (image) => `${image.fileSize}:${await hashFileHead(image.path, 65536)}`,
  );
  const byContent = await groupsOf(
    byHead,
    async (image) => `${image.fileSize}:${await hashFile(image.path)}`,
  );
  const duplicates = new Map<string, string[]>();
  for (const group of byContent) {
    const files = group.map((image) => image.relativePath);
    for (const file of files)
      duplicates.set(
        file,
        files.filter((other) => other !== file),
      );
  }
  return duplicates;
}
