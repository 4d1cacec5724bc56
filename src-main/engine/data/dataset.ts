// A dataset folder as one object, shared by the CLI, the server and the studio: its images with
// repeats, captions, sizes, problems and aspect buckets, a report, and caption editing that writes
// caption files atomically and never touches an image file.
//
//   Dataset.open(folder, options?): Promise<Dataset>     scan + validate + bucket
//   dataset.items / trainingItems() / item(relativePath)
//   dataset.orphanCaptions / skipped / problems() / summary()
//   dataset.setBuckets(options)                          re-bucket after a resolution change
//   dataset.caption(relativePath) / saveCaption(relativePath, text)
//   dataset.editCaptions(operation, relativePaths?): { changed }
//   dataset.tagFrequency()
//   trainingCaption(item, shuffle?): string               the caption text a training step uses
import { availableParallelism } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import { AspectBuckets, planCrop, summarizeBuckets } from './buckets';
import type { Bucket, BucketCount, BucketOptions, CropPlan, ResolvedBucketOptions } from './buckets';
import { captionForTraining, readCaptionFile, writeCaptionFile } from './caption-file';
import type { CaptionFormat } from './caption-file';
import { applyCaptionOperation, shuffleTags, tagFrequency } from './caption-ops';
import type { CaptionOperation } from './caption-ops';
import { mapConcurrent } from './concurrency';
import type { ImageFileFormat } from './image-files';
import type { ImageHeader } from './image-source';
import { makeProblem } from './problems';
import type { DatasetProblem, ProblemCode } from './problems';
import { createRandom } from './random';
import type { Random } from './random';
import { scanFolder } from './scan';
import type { SkippedFile } from './scan';
import { captionProblems, findDuplicates, inspectImage } from './validate';
import type { ValidationMode } from './validate';

export interface DatasetOptions extends Partial<BucketOptions> {
  /** Default 512. */
  resolution?: number;
  /** 'quick' (default): headers + end markers; 'full': decode every image. See validate.ts. */
  validation?: ValidationMode;
  /** Files read at once (default 16; full decodes use at most the CPU count). */
  concurrency?: number;
  /** Repeats for images outside any `N_name` folder (default 1). */
  defaultRepeats?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface DatasetItem {
  path: string;
  /** Relative to the dataset folder, '/'-separated; the item's id. */
  relativePath: string;
  format: ImageFileFormat;
  fileSize: number;
  repeats: number;
  /** From the repeat folder name (`10_mychar` -> "mychar"), else null. */
  trigger: string | null;
  captionPath: string | null;
  /** Caption text (BOM removed, LF line ends, no final newline); null when there is no caption file. */
  caption: string | null;
  captionFormat: CaptionFormat | null;
  /** Upright size (EXIF orientation applied); null when the image could not be read. */
  width: number | null;
  height: number | null;
  header: ImageHeader | null;
  problems: DatasetProblem[];
  /** True when a problem of severity 'error' keeps it out of training. */
  excluded: boolean;
  bucket: Bucket | null;
  /** The center crop it gets in its bucket (training may use random crops instead). */
  crop: CropPlan | null;
}

export interface DatasetSummary {
  folder: string;
  images: number;
  trainable: number;
  excluded: number;
  /** Trainable images counted with their repeats: the samples in one epoch. */
  samplesPerEpoch: number;
  captioned: number;
  uncaptioned: number;
  orphanCaptions: number;
  skippedFiles: number;
  errors: number;
  warnings: number;
  infos: number;
  problemCounts: Partial<Record<ProblemCode, number>>;
  bucketOptions: ResolvedBucketOptions;
  buckets: BucketCount[];
}

const BUCKET_CODES: ReadonlySet<ProblemCode> = new Set(['too-small', 'no-bucket']);
const CAPTION_CODES: ReadonlySet<ProblemCode> = new Set([
  'missing-caption',
  'empty-caption',
  'caption-not-utf8',
]);

export class Dataset {
  private bucketer: AspectBuckets;
  private readonly byRelativePath: Map<string, DatasetItem>;

  private constructor(
    readonly folder: string,
    readonly items: readonly DatasetItem[],
    readonly orphanCaptions: readonly string[],
    readonly skipped: readonly SkippedFile[],
    bucketOptions: BucketOptions,
  ) {
    this.bucketer = new AspectBuckets(bucketOptions);
    this.byRelativePath = new Map(items.map((item) => [item.relativePath, item]));
    this.assignBuckets();
  }

  static async open(folder: string, options: DatasetOptions = {}): Promise<Dataset> {
    const bucketOptions: BucketOptions = { ...options, resolution: options.resolution ?? 512 };
    new AspectBuckets(bucketOptions); // fail on bad bucket options before reading anything
    const scan = await scanFolder(folder, { defaultRepeats: options.defaultRepeats });
    const mode = options.validation ?? 'quick';
    const concurrency = Math.max(1, options.concurrency ?? 16);
    const readers = mode === 'full' ? Math.min(concurrency, availableParallelism()) : concurrency;
    let done = 0;
    const items = await mapConcurrent(scan.images, readers, async (image): Promise<DatasetItem> => {
      const inspection = await inspectImage(image, mode);
      const caption = image.captionPath ? readCaptionFile(image.captionPath) : null;
      const problems = [...inspection.problems];
      for (const unused of image.unusedCaptionPaths) {
        problems.push(
          makeProblem(
            'multiple-captions',
            image.relativePath,
            `has more than one caption file; using ${basename(image.captionPath!)}, not ${basename(unused)}`,
          ),
        );
      }
      problems.push(...captionProblems(image.relativePath, caption, image.trigger));
      options.onProgress?.(++done, scan.images.length);
      return {
        path: image.path,
        relativePath: image.relativePath,
        format: image.format,
        fileSize: image.fileSize,
        repeats: image.repeats,
        trigger: image.trigger,
        captionPath: image.captionPath,
        caption: caption?.text ?? null,
        captionFormat: caption?.format ?? null,
        width: inspection.header?.width ?? null,
        height: inspection.header?.height ?? null,
        header: inspection.header,
        problems,
        excluded: false,
        bucket: null,
        crop: null,
      };
    });
    const readable = items.filter((item) => !item.problems.some((p) => p.severity === 'error'));
    const duplicates = await findDuplicates(readable, concurrency);
    for (const item of readable) {
      const others = duplicates.get(item.relativePath);
      if (others)
        item.problems.push(
          makeProblem('duplicate', item.relativePath, `has the same content as ${others.join(', ')}`),
        );
    }
    return new Dataset(scan.root, items, scan.orphanCaptions, scan.skipped, bucketOptions);
  }

  get bucketOptions(): ResolvedBucketOptions {
    return this.bucketer.options;
  }

  /** Items that train: readable, bucketed, no error. */
  trainingItems(): DatasetItem[] {
    return this.items.filter((item) => !item.excluded);
  }

  item(relativePath: string): DatasetItem {
    const found = this.byRelativePath.get(relativePath);
    if (!found) throw new Error(`${join(this.folder, relativePath)}: not an image of this dataset`);
    return found;
  }

  /** Every problem: per image, then one per orphan caption. */
  problems(): DatasetProblem[] {
    return [
      ...this.items.flatMap((item) => item.problems),
      ...this.orphanCaptions.map((file) =>
        makeProblem('orphan-caption', file, 'is a caption file with no image of the same name next to it'),
      ),
    ];
  }

  summary(): DatasetSummary {
    const problems = this.problems();
    const problemCounts: Partial<Record<ProblemCode, number>> = {};
    for (const p of problems) problemCounts[p.code] = (problemCounts[p.code] ?? 0) + 1;
    const training = this.trainingItems();
    return {
      folder: this.folder,
      images: this.items.length,
      trainable: training.length,
      excluded: this.items.length - training.length,
      samplesPerEpoch: training.reduce((sum, item) => sum + item.repeats, 0),
      captioned: this.items.filter((item) => item.caption !== null && item.caption.trim() !== '').length,
      uncaptioned: this.items.filter((item) => item.caption === null || item.caption.trim() === '').length,
      orphanCaptions: this.orphanCaptions.length,
      skippedFiles: this.skipped.length,
      errors: problems.filter((p) => p.severity === 'error').length,
      warnings: problems.filter((p) => p.severity === 'warning').length,
      infos: problems.filter((p) => p.severity === 'info').length,
      problemCounts,
      bucketOptions: this.bucketer.options,
      buckets: summarizeBuckets(training),
    };
  }

  /** Re-buckets every image (e.g. the resolution changed) without reading the folder again. */
  setBuckets(options: BucketOptions): void {
    this.bucketer = new AspectBuckets(options);
    this.assignBuckets();
  }

  caption(relativePath: string): string {
    return this.item(relativePath).caption ?? '';
  }

  /** Saves one caption (atomically; creates `<image name>.txt` when the image had none). */
  saveCaption(relativePath: string, text: string): DatasetItem {
    const item = this.item(relativePath);
    const captionPath =
      item.captionPath ?? join(dirname(item.path), `${basename(item.path, extname(item.path))}.txt`);
    item.captionFormat = writeCaptionFile(captionPath, text, item.captionFormat ?? undefined);
    item.captionPath = captionPath;
    item.caption = text.replace(/\r\n?/gu, '\n');
    item.problems = [
      ...item.problems.filter((p) => !CAPTION_CODES.has(p.code)),
      ...captionProblems(
        item.relativePath,
        { path: captionPath, text: item.caption, validUtf8: true },
        item.trigger,
      ),
    ];
    return item;
  }

  /**
   * Applies one bulk operation to the captions of `relativePaths` (default: every image) and saves
   * the ones that changed. An image without a caption is treated as having an empty one.
   */
  editCaptions(operation: CaptionOperation, relativePaths?: readonly string[]): { changed: string[] } {
    const targets = relativePaths ? relativePaths.map((p) => this.item(p)) : this.items;
    const random = operation.kind === 'shuffle' ? createRandom(operation.seed) : undefined;
    const changed: string[] = [];
    for (const item of targets) {
      const before = item.caption ?? '';
      const after = applyCaptionOperation(before, operation, random);
      if (after === before) continue;
      this.saveCaption(item.relativePath, after);
      changed.push(item.relativePath);
    }
    return { changed };
  }

  /** Images per tag over all captions, most frequent first. */
  tagFrequency(): { tag: string; count: number }[] {
    return tagFrequency(this.items.map((item) => item.caption ?? ''));
  }

  private assignBuckets(): void {
    const { resolution } = this.bucketer.options;
    for (const item of this.items) {
      item.problems = item.problems.filter((p) => !BUCKET_CODES.has(p.code));
      item.bucket = null;
      item.crop = null;
      const unreadable = item.problems.some((p) => p.severity === 'error');
      if (!unreadable && item.width !== null && item.height !== null) {
        const bucket = this.bucketer.assign(item.width, item.height);
        if (!bucket) {
          item.problems.push(
            makeProblem(
              'no-bucket',
              item.relativePath,
              `${item.width}x${item.height} is smaller than one ${this.bucketer.options.step}-pixel step without upscaling; it is left out of training`,
            ),
          );
        } else {
          item.bucket = bucket;
          item.crop = planCrop(item.width, item.height, bucket);
          if (item.crop.scale > 1) {
            item.problems.push(
              makeProblem(
                'too-small',
                item.relativePath,
                `${item.width}x${item.height} is smaller than its ${bucket.width}x${bucket.height} bucket at resolution ${resolution}; it is enlarged ${item.crop.scale.toFixed(2)}x and will look soft`,
              ),
            );
          }
        }
      }
      item.excluded = item.problems.some((p) => p.severity === 'error');
    }
  }
}

/**
 * The caption a training step uses: the caption text on one line, or the repeat folder's trigger
 * when there is no caption (kohya's class-token fallback); with `shuffle`, tags after the first
 * `keepFirst` are shuffled (kohya's shuffle_caption + keep_tokens).
 */
export function trainingCaption(
  item: Pick<DatasetItem, 'caption' | 'trigger'>,
  shuffle?: { keepFirst: number; random: Random },
): string {
  const text = captionForTraining(item.caption ?? '') || (item.trigger ?? '');
  return shuffle ? shuffleTags(text, shuffle.keepFirst, shuffle.random) : text;
}
