// Predicts the GPU memory the trainer's previews take: their Generator is held beside the training
// session for the whole run (PREVIEW_GENERATOR_OPTIONS: float16, fused attention on CUDA, the VAE
// decoder on the CPU, so none of it is on the GPU).
//   the weights of its GPU sessions in float16: the UNet and the text encoders
// + the arenas of those sessions, which grow with the preview's pixels
// + a fixed part (the sessions' own cuBLAS/cuDNN handles and the smallest arena regions).
// Calibrated on H100 peaks (nvidia-smi, bench/results/2026-11-23-h100-session6.json "previews",
// `npm run bench -- --previews`: a training run with a 20-step preview beside it, minus the run
// alone) of SD1.5 at 512 px and SDXL at 1024 px, and checked in the tests on both at 768 px.

const GiB = 2 ** 30;

/** Fitted on the measured preview peaks (see above): arena bytes per (side / 512 px)^2, and fixed bytes. */
export const PREVIEW_MEMORY_CALIBRATION = {
  arenaBytesPer512Square: 0.413 * GiB,
  fixedBytes: 0.577 * GiB,
};

export interface PreviewModelSize {
  unetParams: number;
  /** One entry per text encoder (SDXL has two). */
  textEncoderParams: readonly number[];
}

export interface PreviewMemoryEstimate {
  weightsBytes: number;
  arenaBytes: number;
  fixedBytes: number;
  peakBytes: number;
}

/** GPU memory of the trainer's preview Generator making images of side x side pixels. */
export function estimatePreviewMemory(size: PreviewModelSize, side: number): PreviewMemoryEstimate {
  const weightsBytes = 2 * (size.unetParams + size.textEncoderParams.reduce((a, b) => a + b, 0)); // float16
  const c = PREVIEW_MEMORY_CALIBRATION;
  const arenaBytes = c.arenaBytesPer512Square * (side / 512) ** 2;
  return { weightsBytes, arenaBytes, fixedBytes: c.fixedBytes, peakBytes: weightsBytes + arenaBytes + c.fixedBytes };
}
