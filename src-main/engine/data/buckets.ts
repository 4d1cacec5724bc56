// Aspect-ratio buckets, kohya-style: every bucket has sides that are multiples of `step` (64),
// an area of at most resolution², and sides between minSide and maxSide. An image goes to the
// bucket whose aspect ratio (width / height) is closest to its own; it is resized so it covers
// the bucket, then cropped (center, or a random offset at training time).
// With noUpscale, an image gets its own bucket instead: its size, shrunk to the area limit if
// larger, sides on the step grid (closest aspect ratio); it is never enlarged.
//
//   new AspectBuckets(options): .options (resolved), .buckets (predefined set), .assign(w, h)
//   planCrop(width, height, bucket, random?): CropPlan     resize-to-cover + crop, in both spaces
//   summarizeBuckets(entries): BucketCount[]                images per bucket (and with repeats)
//   bucketKey(bucket): "WxH"
import { randomInt } from './random';
import type { Random } from './random';

export interface Bucket {
  width: number;
  height: number;
}

export interface BucketOptions {
  /** Training resolution: buckets hold at most resolution² pixels. */
  resolution: number;
  /** Side granularity (default 64; the VAE needs multiples of 8, SD's UNet multiples of 64 to be safe). */
  step?: number;
  /** Default: half the resolution rounded to the step (kohya: 256 at 512). */
  minSide?: number;
  /** Default: twice the resolution (kohya: 1024 at 512). */
  maxSide?: number;
  noUpscale?: boolean;
}

export type ResolvedBucketOptions = Required<BucketOptions>;

export const bucketKey = (bucket: Bucket): string => `${bucket.width}x${bucket.height}`;

export function resolveBucketOptions(options: BucketOptions): ResolvedBucketOptions {
  const step = options.step ?? 64;
  const { resolution } = options;
  if (!Number.isInteger(step) || step < 1)
    throw new Error(`bucket step must be a positive integer, got ${step}`);
  if (!Number.isInteger(resolution) || resolution < step)
    throw new Error(`resolution must be an integer of at least the step ${step}, got ${resolution}`);
  const minSide = options.minSide ?? Math.max(step, Math.floor(resolution / 2 / step) * step);
  const maxSide = options.maxSide ?? resolution * 2;
  if (minSide > resolution || maxSide < resolution) {
    throw new Error(
      `bucket sides must allow a square bucket: minSide ${minSide} <= resolution ${resolution} <= maxSide ${maxSide}`,
    );
  }
  return { resolution, step, minSide, maxSide, noUpscale: options.noUpscale ?? false };
}

export class AspectBuckets {
  readonly options: ResolvedBucketOptions;
  /** The predefined buckets, sorted by width then height (used unless noUpscale). */
  readonly buckets: readonly Bucket[];
  private readonly ratios: number[];

  constructor(options: BucketOptions) {
    this.options = resolveBucketOptions(options);
    const { resolution, step, minSide, maxSide } = this.options;
    const maxArea = resolution * resolution;
    const keys = new Set<string>();
    const buckets: Bucket[] = [];
    const add = (width: number, height: number): void => {
      const key = `${width}x${height}`;
      if (keys.has(key)) return;
      keys.add(key);
      buckets.push({ width, height });
    };
    const square = Math.floor(resolution / step) * step;
    add(square, square);
    // For each width, the tallest height on the step grid that keeps the area within the limit.
    for (let width = Math.ceil(minSide / step) * step; width <= maxSide; width += step) {
      const height = Math.min(maxSide, Math.floor(maxArea / width / step) * step);
      if (height < minSide) continue;
      add(width, height);
      add(height, width);
    }
    buckets.sort((a, b) => a.width - b.width || a.height - b.height);
    this.buckets = buckets;
    this.ratios = buckets.map((b) => b.width / b.height);
  }

  /** The bucket for an image of this (displayed) size; null when noUpscale leaves a side under one step. */
  assign(width: number, height: number): Bucket | null {
    if (!(width > 0 && height > 0)) return null;
    if (this.options.noUpscale) return this.ownBucket(width, height);
    const ratio = width / height;
    let best = 0;
    for (let i = 1; i < this.ratios.length; i++) {
      if (Math.abs(this.ratios[i] - ratio) < Math.abs(this.ratios[best] - ratio)) best = i;
    }
    return this.buckets[best];
  }

  /**
   * noUpscale: shrink to the area limit (never enlarge), then take the grid size around it (each
   * side rounded down or up to the step) that stays within the limit and the image and has the
   * closest aspect ratio; larger area on a tie.
   */
  private ownBucket(width: number, height: number): Bucket | null {
    const { resolution, step } = this.options;
    const maxArea = resolution * resolution;
    const shrink = Math.min(1, Math.sqrt(maxArea / (width * height)));
    const [w, h] = [width * shrink, height * shrink];
    const logRatio = Math.log(width / height);
    let best: Bucket | null = null;
    let bestError = Infinity;
    for (const bw of [Math.floor(w / step) * step, Math.ceil(w / step) * step]) {
      for (const bh of [Math.floor(h / step) * step, Math.ceil(h / step) * step]) {
        if (bw < step || bh < step || bw > width || bh > height || bw * bh > maxArea) continue;
        const error = Math.abs(Math.log(bw / bh) - logRatio);
        if (
          error < bestError - 1e-12 ||
          (Math.abs(error - bestError) <= 1e-12 && best && bw * bh > best.width * best.height)
        ) {
          best = { width: bw, height: bh };
          bestError = error;
        }
      }
    }
    return best;
  }
}

export interface CropPlan {
  bucket: Bucket;
  originalWidth: number;
  originalHeight: number;
  /** Resize factor applied to the original (> 1 means the image is enlarged). */
  scale: number;
  resizedWidth: number;
  resizedHeight: number;
  /** Top-left of the bucket-sized crop in the resized image (SDXL's crop_coords_top_left). */
  cropLeft: number;
  cropTop: number;
  /** The same crop in original-image pixels, for previews. */
  sourceRect: { left: number; top: number; width: number; height: number };
}

/** Resize so the image covers the bucket, then crop: centered, or at a random offset when `random` is given. */
export function planCrop(width: number, height: number, bucket: Bucket, random?: Random): CropPlan {
  const scale = Math.max(bucket.width / width, bucket.height / height);
  const resizedWidth = Math.max(bucket.width, Math.round(width * scale));
  const resizedHeight = Math.max(bucket.height, Math.round(height * scale));
  const spareX = resizedWidth - bucket.width;
  const spareY = resizedHeight - bucket.height;
  const cropLeft = random ? randomInt(random, spareX + 1) : Math.floor(spareX / 2);
  const cropTop = random ? randomInt(random, spareY + 1) : Math.floor(spareY / 2);
  const scaleX = resizedWidth / width;
  const scaleY = resizedHeight / height;
  return {
    bucket,
    originalWidth: width,
    originalHeight: height,
    scale,
    resizedWidth,
    resizedHeight,
    cropLeft,
    cropTop,
    sourceRect: {
      left: cropLeft / scaleX,
      top: cropTop / scaleY,
      width: bucket.width / scaleX,
      height: bucket.height / scaleY,
    },
  };
}

export interface BucketCount extends Bucket {
  key: string;
  images: number;
  /** Images counted with their repeats: the samples one epoch draws from this bucket. */
  samples: number;
}

export function summarizeBuckets(
  entries: Iterable<{ bucket: Bucket | null; repeats: number }>,
): BucketCount[] {
  const byKey = new Map<string, BucketCount>();
  for (const { bucket, repeats } of entries) {
    if (!bucket) continue;
    const key = bucketKey(bucket);
    const count = byKey.get(key) ?? {
      width: bucket.width,
      height: bucket.height,
      key,
      images: 0,
      samples: 0,
    };
    count.images += 1;
    count.samples += repeats;
    byKey.set(key, count);
  }
  return [...byKey.values()].sort((a, b) => a.width - b.width || a.height - b.height);
}
