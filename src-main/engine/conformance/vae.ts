// VAE cases: `vae.encode.input` [1, 3, H, W] in [-1, 1] -> the latent distribution's
// `vae.encode.mean` / `vae.encode.std`; `vae.decode.input` latents -> `vae.decode.output` image (no
// scaling factor applied). Encoder and decoder are built together so every VAE weight is asserted
// used (the decoder runs on zeros when the folder has no decode case).
import { Graph, type Value } from '../graph/graph';
import { serializeModel } from '../graph/onnx-model';
import { buildVaeDecoder, buildVaeEncoder } from '../models/autoencoder-kl';
import { Params } from '../nn/params';
import { Session, type HostTensor } from '../runtime/session';
import {
  attempt,
  compareClose,
  floatFeed,
  formatTolerance,
  FLOAT32_TOLERANCE,
  type CaseFamily,
  type CaseResult,
} from './context';

const CHECKS = [
  ['vae.encode.mean', 'mean'],
  ['vae.encode.std', 'std'],
  ['vae.decode.output', 'decoded'],
] as const;

export const vaeCases: CaseFamily = {
  name: 'vae',
  claims: (key) => key.startsWith('vae.'),

  async run(ctx) {
    const present = CHECKS.filter(([key]) => ctx.cases.has(key));
    if (present.length === 0) return [];
    const tolerance = formatTolerance(FLOAT32_TOLERANCE);
    let result: Record<string, HostTensor> = {};
    const failed = await attempt('vae', tolerance, async () => {
      const { config, weights } = ctx.model().vae;
      const image = ctx.cases.get('vae.encode.input');
      const latents = ctx.cases.get('vae.decode.input');
      for (const [key] of present)
        if (!(key.startsWith('vae.encode') ? image : latents))
          throw new Error(
            `${ctx.casesFile}: ${key} is there but its input ${key.startsWith('vae.encode') ? 'vae.encode.input' : 'vae.decode.input'} is missing`,
          );
      const factor = 2 ** (config.block_out_channels.length - 1);
      const imageShape = image?.shape ?? [1, config.in_channels, 8 * factor, 8 * factor];
      const latentShape = latents?.shape ?? [
        1,
        config.latent_channels,
        imageShape[2]! / factor,
        imageShape[3]! / factor,
      ];
      const source = weights.view((n) => n);
      const g = new Graph('vae_conformance');
      const p = new Params(g, source, { dtype: 'float32' });
      const dist = buildVaeEncoder(p, config, g.input('image', 'float32', imageShape)); // mean, std [1, 4, h, w]
      const decoded = buildVaeDecoder(p, config, g.input('latents', 'float32', latentShape)); // [1, 3, H, W]
      source.assertAllTaken();
      const outputs: Record<string, Value> = { mean: dist.mean, std: dist.std, decoded };
      for (const [name, value] of Object.entries(outputs)) g.output(value, name);
      const zeros = (shape: number[]): HostTensor => ({
        dtype: 'float32',
        shape,
        data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
      });
      const session = await Session.create(serializeModel(g));
      try {
        result = await session.run({
          image: image ? floatFeed(image) : zeros(imageShape),
          latents: latents ? floatFeed(latents) : zeros(latentShape),
        });
      } finally {
        await session.release();
      }
      return [];
    });
    if (failed.length > 0) return present.map(([key]) => ({ ...failed[0]!, name: key }));
    return present.map(([key, output]): CaseResult =>
      compareClose(key, result[output]!.data as Float32Array, ctx.cases.get(key)!.data as Float32Array),
    );
  },
};
