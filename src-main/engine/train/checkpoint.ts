// Training checkpoints: everything a run needs to continue exactly where it stopped, in one
// safetensors file written atomically (temp file + rename), so a crash or Ctrl-C mid-write leaves
// the previous checkpoint intact.
//
// Tensors: the LoRA tensors under their kohya names, the AdamW moments as `<name>.m` / `<name>.v`
// (the train-step graph's input names), all float32. Metadata `lora_studio.checkpoint`: JSON with
// the step, the Rng state, the model identity, the LoRA spec and the settings.
//
//   saveCheckpoint(path, state)      loadCheckpoint(path): CheckpointState
//   checkResumable(checkpoint, expected): throws naming the file and what differs
import { readFileSync } from 'node:fs';
import { decodeSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors';
import type { RngState } from '../sample/rng';

export const CHECKPOINT_FORMAT = 'lora-studio-checkpoint';
const CHECKPOINT_VERSION = 1;
const META_KEY = 'lora_studio.checkpoint';

export interface CheckpointInfo {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Optimizer steps done. */
  step: number;
  rng: RngState;
  /** UNet identity (feature-cache componentIdentity): a checkpoint only resumes on the same UNet. */
  modelIdentity: string;
  modelDescription: string;
  lora: { rank: number; alpha: number; targets: string };
  /** settingsFingerprint of the run: a different one changes the trajectory (allowed, reported). */
  settingsFingerprint: string;
  settings: Record<string, unknown>;
  /** Dynamic loss scaling (float16 runs): the current scale, finite steps since the last change, and AdamW's own step count (overflowed steps are skipped). */
  lossScaling?: { scale: number; goodSteps: number; optimizerSteps: number };
  /** Loss EMA state, so the smoothed curve continues. */
  smoothedLoss: { value: number; weight: number };
  trainingStartedAt: number;
  savedAt: string;
}

export interface CheckpointState {
  info: CheckpointInfo;
  /** LoRA tensors and moments by graph input name (`<kohya name>`, `<kohya name>.m`, `<kohya name>.v`). */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

export function saveCheckpoint(path: string, state: CheckpointState): void {
  const tensors: TensorToWrite[] = [...state.tensors].map(([name, t]) => ({ name, dtype: 'F32', shape: t.shape, data: t.data }));
  writeSafetensors(path, tensors, { format: 'pt', [META_KEY]: JSON.stringify(state.info) });
}

export function loadCheckpoint(path: string): CheckpointState {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new Error(`${path}: cannot read the checkpoint (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const { tensors, metadata } = decodeSafetensors(bytes, path);
  const raw = metadata?.[META_KEY];
  if (!raw) throw new Error(`${path}: not a LoRA Studio training checkpoint (no ${META_KEY} metadata; a finished LoRA file cannot be resumed)`);
  let info: CheckpointInfo;
  try {
    info = JSON.parse(raw) as CheckpointInfo;
  } catch {
    throw new Error(`${path}: the checkpoint's ${META_KEY} metadata is not valid JSON`);
  }
  if (info.format !== CHECKPOINT_FORMAT || info.version !== CHECKPOINT_VERSION)
    throw new Error(`${path}: checkpoint format ${info.format} v${info.version} is not supported (expected ${CHECKPOINT_FORMAT} v${CHECKPOINT_VERSION})`);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of tensors) {
    if (t.dtype !== 'F32') throw new Error(`${path}: checkpoint tensor "${name}" is ${t.dtype}, expected F32`);
    out.set(name, { shape: t.shape, data: new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4) });
  }
  return { info, tensors: out };
}

export function newCheckpointInfo(fields: Omit<CheckpointInfo, 'format' | 'version' | 'savedAt'>): CheckpointInfo {
  return { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, ...fields, savedAt: new Date().toISOString() };
}

/**
 * Refuses a checkpoint from another model or with another LoRA shape, naming the file and the
 * difference. `expectedShapes` are the training state's tensor names and shapes.
 */
export function checkResumable(path: string, checkpoint: CheckpointState, expected: { modelIdentity: string; modelDescription: string; expectedShapes: ReadonlyMap<string, readonly number[]> }): void {
  const { info } = checkpoint;
  if (info.modelIdentity !== expected.modelIdentity)
    throw new Error(`${path}: this checkpoint was trained on another model (${info.modelDescription}), not on ${expected.modelDescription}`);
  for (const [name, shape] of expected.expectedShapes) {
    const found = checkpoint.tensors.get(name);
    if (!found)
      throw new Error(`${path}: the checkpoint has no tensor "${name}": it was trained with another LoRA layout (checkpoint: rank ${info.lora.rank}, targets ${info.lora.targets})`);
    if (found.shape.length !== shape.length || found.shape.some((d, i) => d !== shape[i]))
      throw new Error(`${path}: tensor "${name}" is [${found.shape.join(', ')}] in the checkpoint, this run needs [${shape.join(', ')}] (checkpoint: rank ${info.lora.rank}, targets ${info.lora.targets})`);
  }
  const extra = [...checkpoint.tensors.keys()].filter((n) => !expected.expectedShapes.has(n));
  if (extra.length > 0)
    throw new Error(`${path}: the checkpoint has LoRA tensors this run does not train (e.g. "${extra[0]}"): it was trained with other targets (${info.lora.targets})`);
}
