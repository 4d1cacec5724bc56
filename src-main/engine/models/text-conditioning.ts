// What Stable Diffusion's UNet is conditioned on, from token ids through the CLIP text encoder(s):
// one graph builder shared by generation, the training feature cache (frozen encoders, once per
// caption) and text encoder training (a LoRA on the encoders, every step), so all three hand the
// UNet the same values:
// - SD 1.x/2.x: the last hidden state (clip skip 1) or finalNorm(hidden_states[-clipSkip]), as A1111;
// - SDXL: hidden_states[-(clipSkip + 1)] of both encoders, no final norm (clip skip 1 = the
//   penultimate layer, as diffusers and sd-scripts), concatenated on the last axis, and
//   text_encoder_2's pooled state through its text_projection (the UNet's text_embeds).
// Each encoder's weights enter the graph under its diffusers component name ("text_encoder.…",
// "text_encoder_2.…"): SDXL's two checkpoints use the same key names ("text_model.…"), and
// initializer names must be unique in a graph.
//
//   buildTextConditioning(encoders, inputIds, { clipSkip, build, hooks? }): { hidden, textEmbeds? }
// An SDXL encoder's entry may be its part already computed (a frozen encoder's cached output)
// instead of its ids.
import { Value } from '../graph/graph';
import * as op from '../graph/ops';
import { canonicalTextKey, clipTextPrefixOf } from '../io/single-file-writer';
import type { WeightSource } from '../io/weights';
import { buildClipTextModel, type CLIPTextConfig, type ClipTextOutputs } from './clip-text-model';
import { Params, type BuildOptions, type LayerHook } from '../nn/params';

export interface TextEncoderComponent {
  config: CLIPTextConfig;
  weights: WeightSource;
}

/** The text encoders of a model: SDXL has the second (CLIPTextModelWithProjection). */
export interface TextEncoders {
  textEncoder: TextEncoderComponent;
  textEncoder2?: TextEncoderComponent;
}

export interface TextConditioningOptions {
  /** A1111's clip skip: 1 = the last layer (SDXL: the penultimate, see above), n = n - 1 layers earlier. */
  clipSkip: number;
  /** dtype (and attention) of the encoders; LoRA hooks here are ignored, see `hooks`. */
  build: Omit<BuildOptions, 'hook'>;
  /**
   * A layer hook per encoder (the LoRA), in encoder order; it sees transformers' canonical module
   * names ("text_model.encoder.layers.0.self_attn.q_proj") whatever prefix the checkpoint stores.
   */
  hooks?: readonly (LayerHook | undefined)[];
}

export interface TextConditioning {
  /** The UNet's encoder_hidden_states [B, L, C] (SDXL: C = C1 + C2), in the build dtype. */
  hidden: Value;
  /** SDXL: the UNet's text_embeds [B, P], text_encoder_2's projected pooled state. */
  textEmbeds?: Value;
}

const COMPONENT_NAMES = ['text_encoder', 'text_encoder_2'] as const;

/** The CLIP outputs of one encoder, its weights under `component.` and its hook fed canonical names. */
function encode(component: string, encoder: TextEncoderComponent, inputIds: Value, build: TextConditioningOptions['build'], withProjection: boolean, hook?: LayerHook): ClipTextOutputs {
  const textModelPrefix = clipTextPrefixOf(encoder.weights.keys());
  const namespaced = encoder.weights.view((name) => `${component}.${name}`);
  // "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj" -> "text_model.encoder.layers.0.self_attn.q_proj"
  const canonical: LayerHook | undefined = hook && ((call) => hook({ ...call, module: canonicalTextKey(call.module.slice(component.length + 1), textModelPrefix) }));
  const params = new Params(inputIds.graph, namespaced, { ...build, hook: canonical }, component);
  return buildClipTextModel(params, encoder.config, inputIds, { textModelPrefix, withProjection });
}

function checkClipSkip(clipSkip: number, encoder: TextEncoderComponent, component: string): void {
  const layers = encoder.config.num_hidden_layers;
  if (!Number.isInteger(clipSkip) || clipSkip < 1 || clipSkip > layers) throw new Error(`clip skip ${clipSkip} is out of range for ${component} (1 to its ${layers} layers)`);
}

/**
 * The conditioning for token ids `inputIds` (int64 [B, L] per encoder: one for SD 1.x/2.x, two
 * for SDXL, each from its own tokenizer) in the graph of the ids.
 */
/** One SDXL encoder's part of the conditioning, in the build dtype: its states [B, L, Hi] and (encoder 2) its text_embeds [B, P]. */
export interface EncoderPart {
  hidden: Value;
  textEmbeds?: Value;
}

export function buildTextConditioning(encoders: TextEncoders, inputIds: readonly (Value | EncoderPart)[], options: TextConditioningOptions): TextConditioning {
  const { clipSkip, build, hooks = [] } = options;
  const parts = encoders.textEncoder2 ? [encoders.textEncoder, encoders.textEncoder2] : [encoders.textEncoder];
  if (inputIds.length !== parts.length) throw new Error(`text conditioning: ${parts.length} text encoder(s) need ${parts.length} input id tensor(s), got ${inputIds.length}`);
  parts.forEach((encoder, i) => checkClipSkip(clipSkip, encoder, COMPONENT_NAMES[i]));

  if (!encoders.textEncoder2) {
    if (!(inputIds[0] instanceof Value)) throw new Error('text conditioning: SD 1.x/2.x conditioning needs token ids, not a computed part');
    const out = encode(COMPONENT_NAMES[0], encoders.textEncoder, inputIds[0], build, false, hooks[0]);
    const hidden = clipSkip === 1 ? out.lastHiddenState : out.finalLayerNorm(out.hiddenStates.at(-clipSkip)!); // [B, L, H]
    return { hidden };
  }
  const part = (i: 0 | 1, encoder: TextEncoderComponent): EncoderPart => {
    const given = inputIds[i];
    if (!(given instanceof Value)) return given;
    const out: ClipTextOutputs = encode(COMPONENT_NAMES[i], encoder, given, build, i === 1, hooks[i]);
    return { hidden: out.hiddenStates.at(-(clipSkip + 1))!, textEmbeds: out.textEmbeds }; // [B, L, Hi], [B, P]
  };
  const [first, second] = [part(0, encoders.textEncoder), part(1, encoders.textEncoder2)];
  if (!second.textEmbeds) throw new Error('text conditioning: the given part of text_encoder_2 has no text_embeds');
  const hidden = op.concat([first.hidden, second.hidden], -1); // [B, L, H1 + H2]
  return { hidden, textEmbeds: second.textEmbeds }; // textEmbeds [B, P]
}
