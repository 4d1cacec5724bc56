// Aspect-ratio buckets: the kohya rules (step grid, area limit, side limits, closest aspect ratio,
// no-upscale) checked as properties, and crop plans that cover the bucket exactly.
import { describe, expect, it } from 'vitest';
import { AspectBuckets, planCrop, summarizeBuckets } from '../../../src-main/engine/data/buckets';
import { createRandom } from '../../../src-main/engine/data/random';

describe('AspectBuckets', () => {
  it('builds kohya-style buckets at 512: 64-px steps, area <= 512², sides 256..1024, both orientations', () => {
    const { buckets, options } = new AspectBuckets({ resolution: 512 });
    expect(options).toEqual({ resolution: 512, step: 64, minSide: 256, maxSide: 1024, noUpscale: false });
    const keys = new Set(buckets.map((b) => `${b.width}x${b.height}`));
    expect(keys.has('512x512')).toBe(true);
    for (const { width, height } of buckets) {
      expect(width % 64).toBe(0);
      expect(height % 64).toBe(0);
      expect(width * height).toBeLessThanOrEqual(512 * 512);
      expect(Math.min(width, height)).toBeGreaterThanOrEqual(256);
      expect(Math.max(width, height)).toBeLessThanOrEqual(1024);
      expect(keys.has(`${height}x${width}`)).toBe(true);
      // As large as the grid allows: one side is the largest that fits with the other.
      const breaksLimit = (w: number, h: number) => w * h > 512 * 512 || Math.max(w, h) > 1024;
      expect(breaksLimit(width, height + 64) || breaksLimit(width + 64, height)).toBe(true);
    }
    // The kohya list at 512 (min 256, max 1024) has these, among others.
    for (const key of [
      '256x1024',
      '320x768',
      '384x640',
      '448x576',
      '576x448',
      '640x384',
      '768x320',
      '1024x256',
    ])
      expect(keys.has(key)).toBe(true);
  });

  it('assigns the bucket with the closest aspect ratio', () => {
    const bucketer = new AspectBuckets({ resolution: 512 });
    for (const [w, h] of [
      [512, 512],
      [1000, 500],
      [300, 900],
      [4000, 3000],
      [1080, 1920],
      [64, 2000],
    ]) {
      const bucket = bucketer.assign(w, h)!;
      const error = (b: { width: number; height: number }) => Math.abs(b.width / b.height - w / h);
      expect(error(bucket)).toBe(Math.min(...bucketer.buckets.map(error)));
    }
    expect(bucketer.assign(777, 777)).toEqual({ width: 512, height: 512 });
  });

  it('with noUpscale gives small images their own size rounded down, large ones shrunk to the area', () => {
    const bucketer = new AspectBuckets({ resolution: 512, noUpscale: true });
    expect(bucketer.assign(300, 200)).toEqual({ width: 256, height: 192 });
    const large = bucketer.assign(4000, 3000)!;
    expect(large.width * large.height).toBeLessThanOrEqual(512 * 512);
    expect((large.width % 64) + (large.height % 64)).toBe(0);
    expect(large).toEqual({ width: 576, height: 448 }); // what kohya's bucket_no_upscale gives too
    expect(bucketer.assign(40, 300)).toBeNull();
  });

  it('refuses options that allow no square bucket', () => {
    expect(() => new AspectBuckets({ resolution: 512, minSide: 640 })).toThrow(/minSide 640/);
    expect(() => new AspectBuckets({ resolution: 30, step: 64 })).toThrow(/resolution/);
  });
});

describe('planCrop', () => {
  it('resizes to cover the bucket and center-crops', () => {
    const plan = planCrop(1000, 500, { width: 512, height: 512 });
    expect(plan.scale).toBeCloseTo(512 / 500, 12);
    expect([plan.resizedWidth, plan.resizedHeight]).toEqual([1024, 512]);
    expect([plan.cropLeft, plan.cropTop]).toEqual([256, 0]);
    expect(plan.sourceRect).toEqual({ left: 250, top: 0, width: 500, height: 500 });
  });

  it('always covers the bucket and keeps the crop inside the resized image', () => {
    const random = createRandom(7);
    for (let i = 0; i < 200; i++) {
      const w = 17 + Math.floor(random() * 3000);
      const h = 17 + Math.floor(random() * 3000);
      const bucket = {
        width: 64 * (1 + Math.floor(random() * 16)),
        height: 64 * (1 + Math.floor(random() * 16)),
      };
      for (const plan of [planCrop(w, h, bucket), planCrop(w, h, bucket, random)]) {
        expect(plan.resizedWidth).toBeGreaterThanOrEqual(bucket.width);
        expect(plan.resizedHeight).toBeGreaterThanOrEqual(bucket.height);
        expect(
          Math.min(plan.resizedWidth - bucket.width, plan.resizedHeight - bucket.height),
        ).toBeLessThanOrEqual(1);
        expect(plan.cropLeft).toBeGreaterThanOrEqual(0);
        expect(plan.cropTop).toBeGreaterThanOrEqual(0);
        expect(plan.cropLeft + bucket.width).toBeLessThanOrEqual(plan.resizedWidth);
        expect(plan.cropTop + bucket.height).toBeLessThanOrEqual(plan.resizedHeight);
        expect(plan.sourceRect.left + plan.sourceRect.width).toBeLessThanOrEqual(w + 1e-9);
        expect(plan.sourceRect.top + plan.sourceRect.height).toBeLessThanOrEqual(h + 1e-9);
      }
    }
  });

  it('draws random crops reproducibly from a seed', () => {
    const offsets = (seed: number) => {
      const random = createRandom(seed);
      return Array.from(
        { length: 20 },
        () => planCrop(2000, 1000, { width: 512, height: 512 }, random).cropLeft,
      );
    };
    expect(offsets(1)).toEqual(offsets(1));
    expect(offsets(1)).not.toEqual(offsets(2));
    expect(new Set(offsets(1)).size).toBeGreaterThan(10);
  });
});

describe('summarizeBuckets', () => {
  it('counts images and repeated samples per bucket', () => {
    const summary = summarizeBuckets([
      { bucket: { width: 512, height: 512 }, repeats: 1 },
      { bucket: { width: 512, height: 512 }, repeats: 10 },
      { bucket: { width: 384, height: 640 }, repeats: 2 },
      { bucket: null, repeats: 5 },
    ]);
    expect(summary).toEqual([
      { width: 384, height: 640, key: '384x640', images: 1, samples: 2 },
      { width: 512, height: 512, key: '512x512', images: 2, samples: 11 },
    ]);
  });
});
