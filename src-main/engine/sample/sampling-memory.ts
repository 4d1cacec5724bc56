// Predicts the device memory a Generator takes on a GPU for images of one size: the trainer's
// previews (held beside the training session for the whole run) and the studio's Generate.
//   the weights of its own sessions, in the Generator's GPU dtypes: text encoders and UNet in
//   float16, the VAE in float32 where its config says force_upcast (SD1.x's and SDXL's do)
// + the activations and workspaces of the sessions' CUDA arenas: mostly the VAE decoder's (cuDNN
//   searches convolution algorithms with as much workspace as they ask for, and the arena keeps
//   what it grew to), which grows with the image's pixels
// + a fixed part (the sessions' own cuBLAS/cuDNN handles, the UNet's arena).
// Calibrated on H100 peaks (nvidia-smi, bench/results/2026-11-23-h100-session6.json, `npm run
// bench -- --previews`: a training run with a 20-step preview beside it, minus the run alone) of
// SD1.5 at 512 px and SDXL at 1024 px, and checked in the tests on both at 768 px. On a smaller GPU
// the convolution search takes less workspace (it skips algorithms that need more than is free).

const GiB = 2 ** 30;

/** Fitted on the measured preview peaks (see above): arena GiB per (side / 512 px)^2, and fixed GiB. */
export const SAMPLING_MEMORY_CALIBRATION = {
  arenaBytesPer512Square: 2.3 * GiB,
  fixedBytes: 1.22 * GiB,
};

export interface SamplingModelSize {
  unetParams: number;
  /** One entry per text encoder (SDXL has two). */
  textEncoderParams: readonly number[];
  /** The VAE decoder's (post_quant_conv and decoder): the Generator loads no encoder. */
  vaeParams: number;
  /** The VAE runs in float32 (config force_upcast, diffusers' default when the key is absent). */
  vaeFloat32: boolean;
}

export interface SamplingMemoryEstimate {
  weightsBytes: number;
  arenaBytes: number;
  fixedBytes: number;
  peakBytes: number;
}

/** Device memory of a GPU Generator (float16, fused attention on CUDA) making images of side x side pixels. */
export function estimateSamplingMemory(size: SamplingModelSize, side: number): SamplingMemoryEstimate {
  const halfParams = size.unetParams + size.textEncoderParams.reduce((a, b) => a + b, 0);
  const weightsBytes = 2 * halfParams + (size.vaeFloat32 ? 4 : 2) * size.vaeParams;
  const c = SAMPLING_MEMORY_CALIBRATION;
  const arenaBytes = c.arenaBytesPer512Square * (side / 512) ** 2;
  return { weightsBytes, arenaBytes, fixedBytes: c.fixedBytes, peakBytes: weightsBytes + arenaBytes + c.fixedBytes };
}
