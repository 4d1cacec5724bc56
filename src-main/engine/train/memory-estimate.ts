// Predicts a training run's peak device memory before it starts (the studio's estimate). It builds
// the real training-step graph for the run's shape (without reading any weight) and takes:
//   the frozen weights
// + the most tensor bytes alive at once in onnxruntime's node order (graph/liveness.ts), times a
//   factor for what the allocator adds on top, rounded up to whole GiB on GPUs: onnxruntime's CUDA
//   arena grows in regions that double up to 1 GiB and then add 1 GiB each (its "Extending
//   BFCArena" log lines), so measured peaks rise in steps of 1 GiB
// + a fixed part (the CUDA context and handles, measured 0.65 GiB on an H100, plus a small rest).
// The factors are calibrated on H100 peaks (nvidia-smi; bench/results/2026-11-23-h100-session5.json,
// lease G) of SD1.5 at 512 px and checked in the tests on the shapes they were not fitted to (SDXL
// at 1024 px batch 1 and 4, with two steps per run too; SD1.5 batch 4 with 256 MiB attention groups,
// four steps per run).
// With gradient checkpointing far fewer bytes are alive, but the allocator's share is larger. A
// run of several steps measured one arena region (1 GiB; SDXL batch 4: 6) above its single step
// although the same bytes are alive in the modelled order; the extension comes within the first
// step of the run (the bench's run markers in onnxruntime's log), so it is the allocation order,
// not the steps after the first. Hence its own factor.
import type { DType } from '../graph/dtype';
import { peakLiveBytes } from '../graph/liveness';
import type { UNet2DConditionConfig } from '../io/configs';
import { unetTargets } from '../lora/targets';
import { ShapeOnlyLocator } from '../nn/shape-only-locator';
import { attentionBackward } from '../autodiff/rules';
import { DEFAULT_ADAMW } from './adamw';
import { buildMultiStepTrainGraph } from './multi-step-graph';
import { addedCondShapeOf, buildTrainStepGraph, type TrainStepSpec } from './train-step-graph';

const GiB = 2 ** 30;

/**
 * Device bytes per live tensor byte, and the fixed part (see above). On the CPU there is no CUDA
 * context: the fixed part is the process itself (the embedded model's training run measured
 * 0.29-0.33 GiB RSS in all); the CPU factor is the GPU's, not separately calibrated.
 */
export const MEMORY_CALIBRATION = {
  liveFactor: 1.525,
  liveFactorCheckpointing: 2.05,
  /** On top of the above for several optimizer steps per run. */
  multiStepFactor: 1.35,
  cudaContextBytes: 0.65 * GiB,
  fixedBytes: 0.21 * GiB,
  /** The arena's growth step on GPUs. */
  arenaStepBytes: 1 * GiB,
  cpuFixedBytes: 0.25 * GiB,
};

export interface MemoryEstimate {
  weightsBytes: number;
  /** The most intermediate tensor bytes alive at once during the step (onnxruntime's order). */
  liveBytes: number;
  factor: number;
  fixedBytes: number;
  peakBytes: number;
}

export interface MemoryEstimateOptions {
  target?: 'gpu' | 'cpu';
  gradientCheckpointing?: boolean;
  /** LoRA rank (default 16): the LoRA state is small next to the rest. */
  rank?: number;
  /** Optimizer steps per session run (settings.stepsPerRun, default 1): the multi-step graph's peak then. */
  stepsPerRun?: number;
}

/**
 * The last estimates by their inputs: the studio asks again on every settings change, most of
 * which (learning rate, steps, ...) leave memory as it was, and each estimate builds a whole step
 * graph (0.1-2 s for SD1.5 to SDXL at batch 4).
 */
const recentEstimates = new Map<string, MemoryEstimate>();
const RECENT_ESTIMATES = 8;

export function estimateTrainingMemory(
  config: UNet2DConditionConfig,
  shape: { batch: number; latentHeight: number; latentWidth: number; tokens: number; contextDim: number },
  dtype: DType,
  { target = 'gpu', gradientCheckpointing = false, rank = 16, stepsPerRun = 1 }: MemoryEstimateOptions = {},
): MemoryEstimate {
  const key = JSON.stringify([config, shape, dtype, target, gradientCheckpointing, rank, stepsPerRun, attentionBackward.chunkBytes]);
  const known = recentEstimates.get(key);
  if (known) return { ...known };
  const estimate = buildAndEstimate(config, shape, dtype, target, gradientCheckpointing, rank, stepsPerRun);
  recentEstimates.set(key, estimate);
  if (recentEstimates.size > RECENT_ESTIMATES) recentEstimates.delete(recentEstimates.keys().next().value!);
  return { ...estimate };
}

function buildAndEstimate(
  config: UNet2DConditionConfig,
  shape: { batch: number; latentHeight: number; latentWidth: number; tokens: number; contextDim: number },
  dtype: DType,
  target: 'gpu' | 'cpu',
  gradientCheckpointing: boolean,
  rank: number,
  stepsPerRun: number,
): MemoryEstimate {
  const locator = new ShapeOnlyLocator(dtype);
  const addedCond = addedCondShapeOf(config);
  const spec: TrainStepSpec = {
    unetConfig: config,
    weights: locator,
    build: { dtype, attention: 'fused', gradientCheckpointing },
    lora: { rank, alpha: rank, targets: unetTargets('attention') },
    shape: { ...shape, ...(addedCond ? { addedCond } : {}) },
    loss: { prediction: 'epsilon' },
    alphasCumprod: new Array<number>(1000).fill(0.5),
    adamw: DEFAULT_ADAMW,
    maxGradNorm: 1,
  };
  const step = stepsPerRun > 1 ? buildMultiStepTrainGraph(spec, stepsPerRun) : buildTrainStepGraph(spec);
  const liveBytes = peakLiveBytes(step.graph);
  const c = MEMORY_CALIBRATION;
  const factor = (gradientCheckpointing ? c.liveFactorCheckpointing : c.liveFactor) * (stepsPerRun > 1 ? c.multiStepFactor : 1);
  const fixedBytes = target === 'gpu' ? c.cudaContextBytes + c.fixedBytes : c.cpuFixedBytes;
  const arenaBytes = target === 'gpu' ? Math.ceil((factor * liveBytes) / c.arenaStepBytes) * c.arenaStepBytes : factor * liveBytes;
  return { weightsBytes: locator.bytes, liveBytes, factor, fixedBytes, peakBytes: locator.bytes + arenaBytes + fixedBytes };
}
