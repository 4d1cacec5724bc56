// The training inputs that do not change between steps, computed once and kept on disk: each
// image's VAE latent distribution (mean and std at its bucket size; a latent is sampled from it at
// step time) and each caption's text embedding (the CLIP hidden state the UNet attends to).
// Entries are small safetensors files named by a hash of everything that determines them: the
// image's content hash and crop, or the caption text and clip skip, plus the identity of the model
// component that made them. A second run over the same images and model reuses them all.
//
//   componentIdentity(weights, config): string          content-derived id of a model component
//   const cache = new FeatureCache(cacheDir, model)
//   await cache.latents(path, bucket, crop): { mean, std, shape }  [C, h, w] each
//   await cache.text(caption, clipSkip): { hidden, shape }         [L, H]
//   cache.stats: { hits, misses };  await cache.release()
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { hashFile } from '../data/content-hash';
import { loadTrainingImage } from '../data';
import type { Bucket, CropPlan } from '../data';
import { Graph } from '../graph/graph';
import { serializeModel } from '../graph/onnx-model';
import { decodeSafetensors, writeSafetensors } from '../io/safetensors';
import type { OpenedModel } from '../io/model-folder';
import type { WeightSource } from '../io/weights';
import { buildVaeEncoder } from '../models/autoencoder-kl';
import { buildClipTextModel, clipTextKeyLayout } from '../models/clip-text-model';
import { Params } from '../nn/params';
import { Session, type SessionOptions } from '../runtime/session';
import { ClipTokenizer } from '../tokenizer/clip-tokenizer';

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
}

export interface CachedText {
  hidden: Float32Array;
  shape: [number, number]; // [L, H]
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
  private readonly fileHashes = new Map<string, Promise<string>>();

  constructor(
    readonly dir: string,
    private readonly model: OpenedModel,
    private readonly sessionOptions: SessionOptions = {},
  ) {
    this.vaeId = componentIdentity(model.vae.weights, model.vae.config);
    this.textId = componentIdentity(model.textEncoder.weights, model.textEncoder.config);
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
    if (hit?.has('mean') && hit.has('std')) {
      this.stats.hits++;
      const shape = hit.get('mean')!.shape as [number, number, number];
      return { mean: hit.get('mean')!.data, std: hit.get('std')!.data, shape };
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
    ]);
    return { mean, std, shape };
  }

  /** The text embedding of one caption: last hidden state (clipSkip 1) or finalNorm(hidden_states[-clipSkip]). */
  async text(caption: string, clipSkip: number): Promise<CachedText> {
    const key = keyOf({ v: CACHE_VERSION, te: this.textId, caption, clipSkip });
    const path = join(this.dir, 'text', `${key}.safetensors`);
    const hit = readEntry(path);
    if (hit?.has('hidden')) {
      this.stats.hits++;
      return { hidden: hit.get('hidden')!.data, shape: hit.get('hidden')!.shape as [number, number] };
    }
    this.stats.misses++;
    this.tokenizer ??= this.openTokenizer();
    const ids = this.tokenizer.encode(caption); // [L] int32
    const session = await this.textEncoderFor(clipSkip, ids.length);
    const r = await session.run({ input_ids: { dtype: 'int64', shape: [1, ids.length], data: BigInt64Array.from(ids, (x) => BigInt(x)) } });
    const hidden = r.hidden.data as Float32Array; // [1, L, H]
    const shape = r.hidden.shape.slice(1) as [number, number];
    writeSafetensors(path, [{ name: 'hidden', dtype: 'F32', shape, data: hidden }]);
    return { hidden, shape };
  }

  async release(): Promise<void> {
    for (const s of this.encoders.values()) await (await s).release();
    if (this.textSession) await (await this.textSession).release();
    this.encoders.clear();
    this.textSession = undefined;
  }

  private openTokenizer(): ClipTokenizer {
    if (!this.model.tokenizerDir) throw new Error('the model has no tokenizer folder (vocab.json + merges.txt); use a diffusers model folder');
    return ClipTokenizer.fromFolder(this.model.tokenizerDir);
  }

  private encoderFor(bucket: Bucket): Promise<Session> {
    const key = `${bucket.width}x${bucket.height}`;
    let session = this.encoders.get(key);
    if (!session) {
      const g = new Graph('vae_encoder');
      const image = g.input('image', 'float32', [1, 3, bucket.height, bucket.width]); // [1, 3, H, W]
      const dist = buildVaeEncoder(new Params(g, this.model.vae.weights, { dtype: 'float32' }), this.model.vae.config, image);
      g.output(dist.mean, 'mean'); // [1, C, h, w]
      g.output(dist.std, 'std'); // [1, C, h, w]
      session = Session.create(serializeModel(g), this.sessionOptions);
      this.encoders.set(key, session);
    }
    return session;
  }

  private textEncoderFor(clipSkip: number, length: number): Promise<Session> {
    if (this.textSession && this.textSessionSkip === clipSkip) return this.textSession;
    const g = new Graph('text_encoder');
    const ids = g.input('input_ids', 'int64', [1, length]); // [1, L]
    const weights = this.model.textEncoder.weights;
    const { textModelPrefix } = clipTextKeyLayout(weights.keys());
    const params = new Params(g, weights, { dtype: 'float32' });
    const out = buildClipTextModel(params, this.model.textEncoder.config, ids, { textModelPrefix, withProjection: false });
    const layers = out.hiddenStates.length - 1;
    if (clipSkip > layers) throw new Error(`clip skip ${clipSkip} exceeds the text encoder's ${layers} layers`);
    const hidden = clipSkip === 1 ? out.lastHiddenState : out.finalLayerNorm(out.hiddenStates.at(-clipSkip)!); // [1, L, H]
    g.output(hidden, 'hidden');
    this.textSession = Session.create(serializeModel(g), this.sessionOptions);
    this.textSessionSkip = clipSkip;
    return this.textSession;
  }
}
