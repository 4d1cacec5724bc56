// Classifier-free guidance (Ho & Salimans 2022): eps = uncond + g * (cond - uncond), with the
// optional guidance rescale of Lin et al. 2023 (sec. 3.4) that matches the guided prediction's
// per-sample standard deviation to the conditional one's, against over-exposure. As diffusers'
// StableDiffusionPipeline and rescale_noise_cfg (torch.std: unbiased, over all dims but batch).
//
//   classifierFreeGuidance(uncond, cond, scale): Float32Array
//   rescaleGuidance(guided, cond, rescale, batch): Float32Array
//   guideBatchedOutput(output [2B, ...], scale, { rescale?, batch? }): Float32Array [B, ...]

export function classifierFreeGuidance(uncond: Float32Array, cond: Float32Array, scale: number): Float32Array {
  if (uncond.length !== cond.length) throw new Error(`classifierFreeGuidance: uncond has ${uncond.length} values, cond ${cond.length}`);
  const out = new Float32Array(cond.length);
  for (let i = 0; i < cond.length; i++) out[i] = uncond[i]! + scale * (cond[i]! - uncond[i]!);
  return out;
}

/**
 * guided * (rescale * std(cond) / std(guided) + 1 - rescale), per batch item.
 * guided, cond: [batch, ...] flat.
 */
export function rescaleGuidance(guided: Float32Array, cond: Float32Array, rescale: number, batch: number): Float32Array {
  if (guided.length !== cond.length) throw new Error(`rescaleGuidance: guided has ${guided.length} values, cond ${cond.length}`);
  if (!Number.isInteger(batch) || batch < 1 || guided.length % batch !== 0) throw new Error(`rescaleGuidance: ${guided.length} values do not split into ${batch} batch items`);
  const per = guided.length / batch;
  if (per < 2) throw new Error('rescaleGuidance: need at least 2 values per batch item for a standard deviation');
  const out = new Float32Array(guided.length);
  for (let b = 0; b < batch; b++) {
    const from = b * per;
    const to = from + per;
    const factor = rescale * (std(cond, from, to) / std(guided, from, to)) + (1 - rescale);
    for (let i = from; i < to; i++) out[i] = guided[i]! * factor;
  }
  return out;
}

export interface GuidanceOptions {
  /** guidance_rescale in [0, 1]; 0 (default) = plain CFG. */
  rescale?: number;
}

/**
 * CFG on a UNet output run on the doubled batch [uncond x B, cond x B] (diffusers' order:
 * negative prompt first). Returns [B, ...].
 */
export function guideBatchedOutput(output: Float32Array, scale: number, options: GuidanceOptions & { batch?: number } = {}): Float32Array {
  if (output.length % 2 !== 0) throw new Error(`guideBatchedOutput: ${output.length} values cannot be split into uncond and cond halves`);
  const half = output.length / 2;
  const uncond = output.subarray(0, half);
  const cond = output.subarray(half);
  const guided = classifierFreeGuidance(uncond, cond, scale);
  const rescale = options.rescale ?? 0;
  return rescale > 0 ? rescaleGuidance(guided, cond, rescale, options.batch ?? 1) : guided;
}

/** Unbiased standard deviation of values[from, to), accumulated in float64. */
function std(values: Float32Array, from: number, to: number): number {
  const n = to - from;
  let mean = 0;
  for (let i = from; i < to; i++) mean += values[i]!;
  mean /= n;
  let sumSq = 0;
  for (let i = from; i < to; i++) sumSq += (values[i]! - mean) ** 2;
  return Math.sqrt(sumSq / (n - 1));
}
