// The training inputs that do not change between steps, computed once and kept on disk: each
// image's VAE latent distribution (mean and std at its bucket size; a latent is sampled from it at
// step time) and each caption's text embedding (the CLIP hidden state the UNet attends to).
// SDXL adds, per image and bucket, the size/crop micro-conditioning (time ids: original size, crop
// top-left, target size) and, per caption, both text encoders' penultimate states concatenated
// plus the pooled, projected embedding of text_encoder_2.
// Entries are small safetensors files named by a hash of everything that determines them: the
// image's content hash and crop, or the caption text and clip skip, plus the identity of the model
// component that made them. A second run over the same images and model reuses them all.
//
//   componentIdentity(weights, config): string          content-derived id of a model component
//   const cache = new FeatureCache(cacheDir, model, sessionOptions?, { dtype? })
//   await cache.latents(path, bucket, crop): { mean, std, shape, timeIds }  [C, h, w] each; [6]
//   await cache.text(caption, clipSkip): { hidden, shape, pooled? }      [L, H]; SDXL [L, H1 + H2], [P]
//   cache.stats: { hits, misses };  await cache.release()
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { hashFile } from '../data/content-hash';
import { loadTrainingImage } from '../data';
import type { Bucket, CropPlan } from '../data';
import { Graph } from '../graph/graph';
import { decodeSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors';
import type { OpenedModel } from '../io/model-folder';
import type { WeightSource } from '../io/weights';
import { buildVaeEncoder, vaeComputeDtype } from '../models/autoencoder-kl';
import * as op from '../graph/ops';
import { Params } from '../nn/params';
import { Session, type SessionOptions } from '../runtime/session';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';
import { buildTextConditioning } from '../models/text-conditioning';

const CACHE_VERSION = 1;
const SAMPLE_BYTES = 1 << 20;

/**
 * A content-derived identity of a model component: its config and, per weight file, the size and
 * a hash of the first and last MiB (the header with every name, shape and offset, and data at both
 * ends), so a different checkpoint at the same path gets a different id without hashing gigabytes.
 */
export function componentIdentity(weights: WeightSource, config: unknown): string {
  const hash = createHash('sha256').update(JSON.stringify(config));
  const files = [...new Set(weights.keys().map((k) => weights.entry(k)!.file))].sort();
  for (const file of files) {
    if (!existsSync(file)) continue; // in-memory weights: the config and key list below decide
    const size = statSync(file).size;
    hash.update(`${size}`);
    const fd = openSync(file, 'r');
    try {
      for (const start of [0, Math.max(0, size - SAMPLE_BYTES)]) {
        const chunk = Buffer.alloc(Math.min(SAMPLE_BYTES, size));
        readSync(fd, chunk, 0, chunk.length, start);
        hash.update(chunk);
      }
    } finally {
      closeSync(fd);
    }
  }
  hash.update(weights.keys().sort().join('\n'));
  return hash.digest('hex').slice(0, 24);
}

export interface CachedLatents {
  mean: Float32Array;
  std: Float32Array;
  shape: [number, number, number]; // [C, h, w]
  /** SDXL micro-conditioning [6]: original height, width, crop top, crop left, target height, width. */
  timeIds: Float32Array;
}

export interface CachedText {
  /** SD 1.x/2.x: the (clip-skipped) hidden state; SDXL: both encoders' penultimate states concatenated. */
  hidden: Float32Array;
  shape: [number, number]; // [L, H] (SDXL: H = H1 + H2)
  /** SDXL: text_encoder_2's pooled, projected embedding [P] (the UNet's text_embeds). */
  pooled?: Float32Array;
}

export interface FeatureCacheOptions {
  /** Compute dtype of the encoders (float32 by default); the VAE stays float32 where its config says force_upcast. */
  dtype?: 'float32' | 'float16';
}

/**
 * SDXL's add_time_ids for an image in its bucket, as sd-scripts and diffusers order them:
 * (original_size, crops_coords_top_left, target_size), each (height, width) / (top, left).
 */
export function sdxlTimeIds(crop: CropPlan): Float32Array {
  return Float32Array.of(crop.originalHeight, crop.originalWidth, crop.cropTop, crop.cropLeft, crop.bucket.height, crop.bucket.width); // [6]
}

const keyOf = (parts: unknown): string => createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);

function readEntry(path: string): Map<string, { shape: number[]; data: Float32Array }> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const { tensors } = decodeSafetensors(readFileSync(path), path);
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, t] of tensors) {
      if (t.dtype !== 'F32') return undefined;
      out.set(name, { shape: t.shape, data: new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4) });
    }
    return out;
  } catch {
    return undefined; // a damaged entry is recomputed and rewritten
  }
}

export class FeatureCache {
  readonly stats = { hits: 0, misses: 0 };
  private readonly vaeId: string;
  private readonly textId: string;
  private readonly encoders = new Map<string, Promise<Session>>();
  private textSession: Promise<Session> | undefined;
  private textSessionSkip = 0;
  private tokenizer: ClipTokenizer | undefined;
  private tokenizer2: ClipTokenizer | undefined;
  private readonly fileHashes = new Map<string, Promise<string>>();
  private readonly dtype: 'float32' | 'float16';

  constructor(
    readonly dir: string,
    private readonly model: OpenedModel,
    private readonly sessionOptions: SessionOptions = {},
    options: FeatureCacheOptions = {},
  ) {
    this.dtype = options.dtype ?? 'float32';
    this.vaeId = componentIdentity(model.vae.weights, model.vae.config);
    this.textId = componentIdentity(model.textEncoder.weights, model.textEncoder.config);
    if (model.kind === 'sdxl') {
      if (!model.textEncoder2) throw new Error('an SDXL model needs its second text encoder (text_encoder_2)');
      this.textId += `+${componentIdentity(model.textEncoder2.weights, model.textEncoder2.config)}`;
    }
    // Entries made in float16 are not the float32 ones: the dtype is part of the identity.
    if (this.dtype !== 'float32') this.textId += `:${this.dtype}`;
    const vaeDtype = vaeComputeDtype(model.vae.config, this.dtype);
    if (vaeDtype !== 'float32') this.vaeId += `:${vaeDtype}`;
    mkdirSync(join(dir, 'latents'), { recursive: true });
    mkdirSync(join(dir, 'text'), { recursive: true });
  }

  /** The latent distribution of one image, loaded into `bucket` with `crop`'s (center) crop. */
  async latents(imagePath: string, bucket: Bucket, crop: CropPlan): Promise<CachedLatents> {
    let contentHash = this.fileHashes.get(imagePath);
    if (!contentHash) this.fileHashes.set(imagePath, (contentHash = hashFile(imagePath)));
    const key = keyOf({ v: CACHE_VERSION, vae: this.vaeId, image: await contentHash, bucket, crop: [crop.resizedWidth, crop.resizedHeight, crop.cropLeft, crop.cropTop] });
    const path = join(this.dir, 'latents', `${key}.safetensors`);
    const hit = readEntry(path);
    const timeIds = sdxlTimeIds(crop); // [6], a function of the crop plan
    if (hit?.has('mean') && hit.has('std')) {
      this.stats.hits++;
      const shape = hit.get('mean')!.shape as [number, number, number];
      return { mean: hit.get('mean')!.data, std: hit.get('std')!.data, shape, timeIds };
    }
    this.stats.misses++;
    const image = await loadTrainingImage(imagePath, bucket); // [3, H, W] in [-1, 1], centered crop
    const session = await this.encoderFor(bucket);
    const r = await session.run({ image: { dtype: 'float32', shape: [1, 3, bucket.height, bucket.width], data: image.pixels } });
    const mean = r.mean.data as Float32Array; // [1, C, h, w]
    const std = r.std.data as Float32Array; // [1, C, h, w]
    const shape = r.mean.shape.slice(1) as [number, number, number];
    writeSafetensors(path, [
      { name: 'mean', dtype: 'F32', shape, data: mean },
      { name: 'std', dtype: 'F32', shape, data: std },
      { name: 'time_ids', dtype: 'F32', shape: [6], data: timeIds },
    ]);
    return { mean, std, shape, timeIds };
  }

  /**
   * The text embedding of one caption. SD 1.x/2.x: last hidden state (clipSkip 1) or
   * finalNorm(hidden_states[-clipSkip]). SDXL: hidden_states[-(clipSkip + 1)] of both encoders, no
   * final norm (clipSkip 1 = the penultimate layer, as diffusers and sd-scripts), concatenated,
   * and the pooled projection of text_encoder_2.
   */
  async text(caption: string, clipSkip: number): Promise<CachedText> {
    const sdxl = this.model.kind === 'sdxl';
    const key = keyOf({ v: CACHE_VERSION, te: this.textId, caption, clipSkip });
    const path = join(this.dir, 'text', `${key}.safetensors`);
    const hit = readEntry(path);
    if (hit?.has('hidden') && (!sdxl || hit.has('pooled'))) {
      this.stats.hits++;
      return { hidden: hit.get('hidden')!.data, shape: hit.get('hidden')!.shape as [number, number], ...(sdxl ? { pooled: hit.get('pooled')!.data } : {}) };
    }
    this.stats.misses++;
    this.tokenizer ??= this.openTokenizer(this.model.tokenizerDir, 'tokenizer');
    const toFeed = (ids: Int32Array) => ({ dtype: 'int64' as const, shape: [1, ids.length], data: BigInt64Array.from(ids, (x) => BigInt(x)) });
    const ids = this.tokenizer.encode(caption); // [L] int32
    const feeds: Record<string, ReturnType<typeof toFeed>> = { input_ids: toFeed(ids) };
    if (sdxl) {
      this.tokenizer2 ??= this.openTokenizer(this.model.tokenizer2Dir, 'tokenizer_2');
      feeds.input_ids_2 = toFeed(this.tokenizer2.encode(caption)); // [L] int32, its own pad token
    }
    const session = await this.textEncoderFor(clipSkip, ids.length);
    const r = await session.run(feeds);
    const hidden = r.hidden.data as Float32Array; // [1, L, H]
    const shape = r.hidden.shape.slice(1) as [number, number];
    const entries: TensorToWrite[] = [{ name: 'hidden', dtype: 'F32', shape, data: hidden }];
    const pooled = sdxl ? (r.pooled.data as Float32Array) : undefined; // [1, P]
    if (pooled) entries.push({ name: 'pooled', dtype: 'F32', shape: [pooled.length], data: pooled });
    writeSafetensors(path, entries);
    return { hidden, shape, ...(pooled ? { pooled } : {}) };
  }

  async release(): Promise<void> {
    for (const s of this.encoders.values()) await (await s).release();
    if (this.textSession) await (await this.textSession).release();
    this.encoders.clear();
    this.textSession = undefined;
  }

  private openTokenizer(dir: string | undefined, what: string): ClipTokenizer {
    if (!dir) throw new Error(`the model has no ${what} folder (vocab.json + merges.txt); use a diffusers model folder`);
    return ClipTokenizer.fromFolder(dir);
  }

  private encoderFor(bucket: Bucket): Promise<Session> {
    const key = `${bucket.width}x${bucket.height}`;
    let session = this.encoders.get(key);
    if (!session) {
      const g = new Graph('vae_encoder');
      const image = g.input('image', 'float32', [1, 3, bucket.height, bucket.width]); // [1, 3, H, W]
      const dtype = vaeComputeDtype(this.model.vae.config, this.dtype);
      const dist = buildVaeEncoder(new Params(g, this.model.vae.weights, { dtype }), this.model.vae.config, op.cast(image, dtype));
      g.output(op.cast(dist.mean, 'float32'), 'mean'); // [1, C, h, w]
      g.output(op.cast(dist.std, 'float32'), 'std'); // [1, C, h, w]
      session = Session.fromGraph(g, this.sessionOptions, join(this.dir, 'graphs'));
      this.encoders.set(key, session);
    }
    return session;
  }

  private textEncoderFor(clipSkip: number, length: number): Promise<Session> {
    if (this.textSession && this.textSessionSkip === clipSkip) return this.textSession;
    const g = new Graph('text_encoder');
    const sdxl = this.model.kind === 'sdxl';
    const inputIds = (sdxl ? ['input_ids', 'input_ids_2'] : ['input_ids']).map((name) => g.input(name, 'int64', [1, length])); // [1, L] each
    // The builder generation and text encoder training use too (models/text-conditioning.ts): the same values.
    const { hidden, textEmbeds } = buildTextConditioning({ textEncoder: this.model.textEncoder, textEncoder2: sdxl ? this.model.textEncoder2 : undefined }, inputIds, { clipSkip, build: { dtype: this.dtype } });
    g.output(op.cast(hidden, 'float32'), 'hidden'); // [1, L, H]; SDXL [1, L, H1 + H2]
    if (textEmbeds) g.output(op.cast(textEmbeds, 'float32'), 'pooled'); // [1, P]
    this.textSession = Session.fromGraph(g, this.sessionOptions, join(this.dir, 'graphs'));
    this.textSessionSkip = clipSkip;
    return this.textSession;
  }
}
