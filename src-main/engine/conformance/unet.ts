// UNet case: `unet.input.sample` [B, 4, h, w], `unet.input.timestep` [B], `unet.input.encoder_hidden_states`
// [B, L, C] (and for text_time UNets `unet.input.text_embeds` [B, P], `unet.input.time_ids` [B, 6])
// -> `unet.output`. The LoRA cases reuse the same inputs (unetFeeds, unetGraphInputs).
import { Graph, type Value } from '../graph/graph';
import { serializeModel } from '../graph/onnx-model';
import { buildUNet2DCondition, type UNetInputs } from '../models/unet-2d-condition';
import { Params } from '../nn/params';
import { Session, type HostTensor } from '../runtime/session';
import {
  attempt,
  caseTensor,
  compareClose,
  floatFeed,
  formatTolerance,
  FLOAT32_TOLERANCE,
  type CaseFamily,
  type ConformanceContext,
} from './context';

const REQUIRED = ['sample', 'timestep', 'encoder_hidden_states'] as const;
const ADDED = ['text_embeds', 'time_ids'] as const;

/** The reference UNet inputs as float32 feeds named by their short names (timesteps as float32 too). */
export function unetFeeds(ctx: ConformanceContext): Record<string, HostTensor> {
  const textTime = ctx.model().unet.config.addition_embed_type === 'text_time';
  const names = textTime ? [...REQUIRED, ...ADDED] : REQUIRED;
  return Object.fromEntries(names.map((name) => [name, floatFeed(caseTensor(ctx, `unet.input.${name}`))]));
}

/** Graph inputs for `feeds` and the UNet call that uses them. */
export function unetGraphInputs(g: Graph, feeds: Record<string, HostTensor>): UNetInputs {
  const input = (name: string): Value => g.input(name, 'float32', [...feeds[name]!.shape]);
  return {
    sample: input('sample'), // [B, 4, h, w]
    timestep: input('timestep'), // [B]
    encoderHiddenStates: input('encoder_hidden_states'), // [B, L, C]
    addedCond: feeds.text_embeds
      ? { textEmbeds: input('text_embeds'), timeIds: input('time_ids') }
      : undefined, // [B, P], [B, 6]
  };
}

export const unetCases: CaseFamily = {
  name: 'unet',
  claims: (key) => key.startsWith('unet.'),

  async run(ctx) {
    if (!ctx.cases.has('unet.output')) return [];
    return attempt('unet.output', formatTolerance(FLOAT32_TOLERANCE), async () => {
      const { config, weights } = ctx.model().unet;
      const feeds = unetFeeds(ctx);
      const source = weights.view((n) => n);
      const g = new Graph('unet_conformance');
      const out = buildUNet2DCondition(
        new Params(g, source, { dtype: 'float32' }),
        config,
        unetGraphInputs(g, feeds),
      ); // [B, 4, h, w]
      source.assertAllTaken();
      g.output(out, 'out');
      const session = await Session.create(serializeModel(g));
      try {
        const result = await session.run(feeds);
        return [
          compareClose(
            'unet.output',
            result.out!.data as Float32Array,
            caseTensor(ctx, 'unet.output').data as Float32Array,
          ),
        ];
      } finally {
        await session.release();
      }
    });
  },
};
