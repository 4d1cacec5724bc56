// Loading one image for training: decode with sharp (first frame of an animation), apply the EXIF
// orientation, flatten transparency over white, convert CMYK / 16-bit / greyscale to 8-bit sRGB,
// resize so it covers the bucket and crop it (see buckets.ts), then lay it out as float32 CHW in
// [-1, 1] (x / 127.5 - 1), which is what the VAE encoder takes.
// Returned with it: the size and crop facts SDXL's micro-conditioning needs.
//
//   loadTrainingImage(file, bucket, { random?, flipHorizontal? }): Promise<TrainingImage>
import { ImageReadError, openImage, readImageHeader } from './image-source';
import { imageFormatOf } from './image-files';
import { planCrop } from './buckets';
import type { Bucket, CropPlan } from './buckets';
import type { Random } from './random';

export interface TrainingImage {
  /** [3, height, width], RGB, values in [-1, 1]. */
  pixels: Float32Array;
  width: number;
  height: number;
  /** SDXL original_size: the upright image before resizing. */
  originalSize: { width: number; height: number };
  /** SDXL crop_coords_top_left, in resized-image pixels (mirrored when flipped). */
  cropTopLeft: { top: number; left: number };
  /** SDXL target_size: the bucket. */
  targetSize: { width: number; height: number };
  crop: CropPlan;
  flipped: boolean;
}

export interface LoadTrainingImageOptions {
  /** Random crop offset drawn from this source; centered crop without it. */
  random?: Random;
  /** Mirror left-right after cropping (the crop itself is unchanged). */
  flipHorizontal?: boolean;
}

export async function loadTrainingImage(
  file: string,
  bucket: Bucket,
  options: LoadTrainingImageOptions = {},
): Promise<TrainingImage> {
  const format = imageFormatOf(file);
  if (!format)
    throw new ImageReadError(
      file,
      'not an image file name we read (jpg, jpeg, png, webp, avif, gif, bmp, tif, tiff)',
    );
  const header = await readImageHeader(file, format);
  const crop = planCrop(header.width, header.height, bucket, options.random);
  const image = await openImage(file, format);
  let decoded: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    decoded = await image
      .autoOrient()
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .resize(crop.resizedWidth, crop.resizedHeight, { fit: 'fill' })
      .extract({ left: crop.cropLeft, top: crop.cropTop, width: bucket.width, height: bucket.height })
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new ImageReadError(
      file,
      `cannot decode for training: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`,
    );
  }
  const { data, info } = decoded; // [height, width, 3] uint8
  if (info.channels !== 3 || info.width !== bucket.width || info.height !== bucket.height) {
    throw new ImageReadError(
      file,
      `decoded to ${info.width}x${info.height}x${info.channels}, expected ${bucket.width}x${bucket.height}x3`,
    );
  }
  const { width, height } = bucket;
  const plane = width * height;
  const pixels = new Float32Array(3 * plane); // [3, height, width]
  const flip = options.flipHorizontal ?? false;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const source = (y * width + (flip ? width - 1 - x : x)) * 3;
      const target = y * width + x;
      pixels[target] = data[source] / 127.5 - 1;
      pixels[plane + target] = data[source + 1] / 127.5 - 1;
      pixels[2 * plane + target] = data[source + 2] / 127.5 - 1;
    }
  }
  return {
    pixels,
    width,
    height,
    originalSize: { width: header.width, height: header.height },
    // A mirrored image's crop starts where the mirrored crop window starts (as kohya does).
    cropTopLeft: {
      top: crop.cropTop,
      left: flip ? crop.resizedWidth - width - crop.cropLeft : crop.cropLeft,
    },
    targetSize: { width, height },
    crop,
    flipped: flip,
  };
}
