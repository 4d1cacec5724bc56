// The dataset module's public surface (see each file's header for details).
export { Dataset, trainingCaption } from './dataset';
export type { DatasetItem, DatasetOptions, DatasetSummary } from './dataset';
export { AspectBuckets, bucketKey, planCrop, resolveBucketOptions, summarizeBuckets } from './buckets';
export type { Bucket, BucketCount, BucketOptions, CropPlan, ResolvedBucketOptions } from './buckets';
export {
  captionForTraining,
  decodeCaption,
  encodeCaption,
  readCaptionFile,
  writeCaptionFile,
  NEW_CAPTION_FORMAT,
} from './caption-file';
export type { CaptionFile, CaptionFormat } from './caption-file';
export {
  appendTrigger,
  applyCaptionOperation,
  findReplace,
  joinTags,
  prependTrigger,
  removeTag,
  shuffleTags,
  splitTags,
  tagFrequency,
} from './caption-ops';
export type { CaptionOperation } from './caption-ops';
export { CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, imageFormatOf, parseRepeatFolderName } from './image-files';
export type { ImageFileFormat, RepeatFolder } from './image-files';
export { ImageReadError, readImageHeader } from './image-source';
export type { ImageHeader } from './image-source';
export { loadTrainingImage } from './load-image';
export type { LoadTrainingImageOptions, TrainingImage } from './load-image';
export { PROBLEM_SEVERITY, makeProblem } from './problems';
export type { DatasetProblem, ProblemCode, ProblemSeverity } from './problems';
export { createRandom, randomInt } from './random';
export type { Random } from './random';
export { scanFolder } from './scan';
export type { ScanResult, ScannedImage, SkippedFile } from './scan';
export { ThumbnailCache } from './thumbnails';
export type { ThumbnailOptions, ThumbnailResult } from './thumbnails';
export { SHARP_PIXEL_LIMIT } from './validate';
export type { ValidationMode } from './validate';
