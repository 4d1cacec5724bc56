// Thumbnails for the studio's image grid, cached on disk: `<cacheDir>/<sha256>-<size>.<webp|jpg>`.
// Keying by content (not path) means a renamed file keeps its thumbnail and an edited one gets a
// new one. Generation is bounded (`concurrency` at a time, shared by every caller of one cache),
// upright (EXIF orientation applied), first frame only, never enlarged; JPEG thumbnails are
// flattened over white. Files are written atomically, so a crash never leaves half a thumbnail.
//
//   new ThumbnailCache(cacheDir, { size?, format?, quality?, concurrency? })
//     .path(file): Promise<string>                 cache path, generated if missing
//     .bytes(file): Promise<Buffer>
//     .generateAll(files, onEach?): Promise<ThumbnailResult[]>   one result per file, errors included
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic-write';
import { hashFile } from './content-hash';
import { mapConcurrent } from './concurrency';
import { ImageReadError, openImage } from './image-source';
import { imageFormatOf } from './image-files';

export interface ThumbnailOptions {
  /** Longest side in pixels (default 256). */
  size?: number;
  format?: 'webp' | 'jpeg';
  quality?: number;
  /** Thumbnails generated at once (default 4). */
  concurrency?: number;
}

export type ThumbnailResult = { file: string; path: string } | { file: string; error: string };

export class ThumbnailCache {
  readonly size: number;
  readonly format: 'webp' | 'jpeg';
  readonly quality: number;
  readonly concurrency: number;
  private readonly hashes = new Map<string, { size: number; mtimeMs: number; hash: string }>();
  private readonly inFlight = new Map<string, Promise<string>>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly cacheDir: string,
    options: ThumbnailOptions = {},
  ) {
    this.size = options.size ?? 256;
    this.format = options.format ?? 'webp';
    this.quality = options.quality ?? 80;
    this.concurrency = Math.max(1, options.concurrency ?? 4);
  }

  /** The cached thumbnail's path; generates it first when missing. */
  async path(file: string): Promise<string> {
    const hash = await this.contentHash(file);
    const target = join(this.cacheDir, `${hash}-${this.size}.${this.format === 'webp' ? 'webp' : 'jpg'}`);
    if (existsSync(target)) return target;
    // Two requests for the same thumbnail share one generation.
    let pending = this.inFlight.get(target);
    if (!pending) {
      pending = this.withSlot(() => this.generate(file, target)).finally(() => this.inFlight.delete(target));
      this.inFlight.set(target, pending);
    }
    return pending;
  }

  async bytes(file: string): Promise<Buffer> {
    return readFile(await this.path(file));
  }

  async generateAll(
    files: readonly string[],
    onEach?: (result: ThumbnailResult) => void,
  ): Promise<ThumbnailResult[]> {
    // Generation is bounded by the slots; this bound only keeps hashing from reading every file at once.
    return mapConcurrent(files, this.concurrency * 2, async (file) => {
      let result: ThumbnailResult;
      try {
        result = { file, path: await this.path(file) };
      } catch (error) {
        result = { file, error: error instanceof Error ? error.message : String(error) };
      }
      onEach?.(result);
      return result;
    });
  }

  private async contentHash(file: string): Promise<string> {
    const { size, mtimeMs } = statSync(file);
    const known = this.hashes.get(file);
    if (known && known.size === size && known.mtimeMs === mtimeMs) return known.hash;
    const hash = await hashFile(file);
    this.hashes.set(file, { size, mtimeMs, hash });
    return hash;
  }

  private async generate(file: string, target: string): Promise<string> {
    const format = imageFormatOf(file);
    if (!format) throw new ImageReadError(file, 'not an image file name we read');
    let pipeline = (await openImage(file, format))
      .autoOrient()
      .resize(this.size, this.size, { fit: 'inside', withoutEnlargement: true })
      .toColourspace('srgb');
    pipeline =
      this.format === 'webp'
        ? pipeline.webp({ quality: this.quality })
        : pipeline.flatten({ background: { r: 255, g: 255, b: 255 } }).jpeg({ quality: this.quality });
    let bytes: Buffer;
    try {
      bytes = await pipeline.toBuffer();
    } catch (error) {
      throw new ImageReadError(
        file,
        `cannot make a thumbnail: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`,
      );
    }
    mkdirSync(this.cacheDir, { recursive: true });
    writeFileAtomic(target, bytes);
    return target;
  }

  private async withSlot<T>(job: () => Promise<T>): Promise<T> {
    // A finishing job hands its slot straight to the next waiter, so `running` never overshoots.
    if (this.running >= this.concurrency) await new Promise<void>((takeSlot) => this.waiting.push(takeSlot));
    else this.running++;
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
