// The CLIP text encoder of Stable Diffusion as a graph builder: transformers' CLIPTextModel and
// CLIPTextModelWithProjection (SDXL's second encoder). Token + position embeddings, a stack of
// pre-norm transformer layers with causal self-attention, a final LayerNorm, the pooled state at
// the end-of-text token and, with projection, text_projection of it.
import type { Value } from '../graph/graph';
import type { DType } from '../graph/dtype';
import * as op from '../graph/ops';
import { attention, layerNorm, linear } from '../nn/layers';
import type { Params } from '../nn/params';

/** transformers' CLIPTextConfig: the keys of a text encoder's config.json, spelled as upstream. */
export interface CLIPTextConfig {
  architectures?: string[];
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  projection_dim?: number;
  vocab_size: number;
  eos_token_id?: number;
  bos_token_id?: number;
  pad_token_id?: number;
  attention_dropout?: number;
  dropout?: number;
  initializer_factor?: number;
  initializer_range?: number;
  model_type?: string;
  torch_dtype?: string;
  dtype?: string;
  transformers_version?: string;
}

export interface ClipTextModelOptions {
  /**
   * Key prefix of the text transformer inside `p`: 'text_model' in transformers 4 checkpoints and
   * in every CLIPTextModelWithProjection; '' in a CLIPTextModel saved by transformers 5. See
   * `clipTextKeyLayout` to read it off a checkpoint's key names.
   */
  textModelPrefix?: string;
  /** Build text_projection (CLIPTextModelWithProjection); by default taken from config.architectures. */
  withProjection?: boolean;
}

export interface ClipTextOutputs {
  /** Output of the final LayerNorm: [B, L, H]. */
  lastHiddenState: Value;
  /**
   * transformers' hidden_states: [0] the embeddings, [i] the output of layer i (before the final
   * norm), num_hidden_layers + 1 entries of [B, L, H]; at(-2) is the "penultimate" state.
   */
  hiddenStates: Value[];
  /** The final-normed state at the end-of-text token: [B, H]. */
  pooled: Value;
  /** text_projection(pooled): [B, projection_dim], only with projection. */
  textEmbeds?: Value;
  /**
   * The model's final LayerNorm (same weights), for clip skip as diffusers and A1111 do it on
   * SD 1.x: finalLayerNorm(hiddenStates.at(-(skip + 1))). SDXL uses hiddenStates.at(-2) unnormed.
   */
  finalLayerNorm: (hidden: Value) => Value;
}

const ACTIVATIONS: Record<string, (x: Value) => Value> = {
  quick_gelu: op.quickGelu,
  gelu: op.gelu,
  gelu_new: op.geluTanh,
  gelu_pytorch_tanh: op.geluTanh,
};

/** Which key layout a CLIP text checkpoint uses, from its tensor names. */
export function clipTextKeyLayout(keys: Iterable<string>): { textModelPrefix: string; hasProjection: boolean } {
  const all = [...keys];
  const prefixed = all.some((k) => k.startsWith('text_model.'));
  return { textModelPrefix: prefixed ? 'text_model' : '', hasProjection: all.includes('text_projection.weight') };
}

/** Refuses config values this builder does not implement, naming the key and value. */
export function checkClipTextConfig(config: CLIPTextConfig, where = 'text encoder config.json'): void {
  if (!(config.hidden_act in ACTIVATIONS))
    throw new Error(`${where}: hidden_act "${config.hidden_act}" is not supported (expected one of ${Object.keys(ACTIVATIONS).join(', ')})`);
  if (config.hidden_size % config.num_attention_heads !== 0)
    throw new Error(`${where}: hidden_size ${config.hidden_size} is not divisible by num_attention_heads ${config.num_attention_heads}`);
  for (const key of ['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'max_position_embeddings', 'vocab_size'] as const)
    if (!Number.isInteger(config[key]) || config[key] <= 0) throw new Error(`${where}: ${key} must be a positive integer, got ${config[key]}`);
}

/**
 * The text encoder on token ids `inputIds` int64 [B, L] (L <= max_position_embeddings, 77 in SD).
 * `p` is the root of the checkpoint (where text_projection.weight lives).
 */
export function buildClipTextModel(p: Params, config: CLIPTextConfig, inputIds: Value, options: ClipTextModelOptions = {}): ClipTextOutputs {
  checkClipTextConfig(config);
  if (inputIds.rank !== 2 || (inputIds.dtype !== 'int64' && inputIds.dtype !== 'int32'))
    throw new Error(`CLIP text model: input_ids must be int64 [B, L], got ${inputIds}`);
  const [batch, length] = inputIds.shape;
  if (length > config.max_position_embeddings)
    throw new Error(`CLIP text model: ${length} tokens exceed max_position_embeddings ${config.max_position_embeddings}`);
  const hidden = config.hidden_size;
  const withProjection = options.withProjection ?? (config.architectures ?? []).includes('CLIPTextModelWithProjection');
  const tp = options.textModelPrefix ? p.child(options.textModelPrefix) : p;
  const g = inputIds.graph;

  // embeddings: token lookup plus the first L position embeddings (position ids 0..L-1)
  const emb = tp.child('embeddings');
  const tokenTable = emb.get('token_embedding.weight', [config.vocab_size, hidden]); // [V, H]
  const positionTable = emb.get('position_embedding.weight', [config.max_position_embeddings, hidden]); // [P, H]
  const tokens = op.gather(tokenTable, inputIds, 0); // [B, L, H]
  const positions = op.slice(positionTable, [0], [length], [0]); // [L, H]
  let h = op.add(tokens, positions); // [B, L, H]

  const mask = causalMask(inputIds, length, p.dtype); // [1, 1, L, L]
  const hiddenStates = [h];
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const layer = tp.child(`encoder.layers.${i}`);
    h = g.scope(`encoder.layers.${i}`, () => encoderLayer(layer, config, h, mask)); // [B, L, H]
    hiddenStates.push(h);
  }
  const finalNorm = tp.child('final_layer_norm');
  const normScale = finalNorm.get('weight', [hidden]); // [H]
  const normBias = finalNorm.get('bias', [hidden]); // [H]
  const finalLayerNorm = (x: Value): Value => op.layerNorm(x, normScale, normBias, { axis: -1, epsilon: config.layer_norm_eps }); // [B, L, H]
  const lastHiddenState = finalLayerNorm(h); // [B, L, H]

  // pooled: the state at the end-of-text token. transformers takes argmax(input_ids) when
  // eos_token_id is 2 (old configs, where EOS is the largest id), else the first eos_token_id.
  const ids = op.cast(inputIds, 'int64'); // [B, L]
  const isEos =
    config.eos_token_id === undefined || config.eos_token_id === 2
      ? op.equal(ids, op.reduceMax(ids, [1])) // [B, L] bool: positions of the largest id
      : op.equal(ids, config.eos_token_id); // [B, L] bool
  const pick = op.cast(firstTrueOneHot(isEos), p.dtype); // [B, L]
  const pooled = op.reshape(op.matmul(op.reshape(pick, [batch, 1, length]), lastHiddenState), [batch, hidden]); // [B, H]

  const out: ClipTextOutputs = { lastHiddenState, hiddenStates, pooled, finalLayerNorm };
  if (withProjection) {
    const projection = config.projection_dim ?? hidden;
    out.textEmbeds = linear(p, 'text_projection', pooled, projection, { bias: false }); // [B, proj]
  }
  return out;
}

/** CLIPEncoderLayer: pre-norm causal self-attention and MLP, each with a residual. */
function encoderLayer(p: Params, config: CLIPTextConfig, x: Value, mask: Value): Value {
  const hidden = config.hidden_size;
  const heads = config.num_attention_heads;
  const normed = layerNorm(p, 'layer_norm1', x, config.layer_norm_eps); // [B, L, H]
  const attn = p.child('self_attn');
  const q = linear(attn, 'q_proj', normed, hidden); // [B, L, H]
  const k = linear(attn, 'k_proj', normed, hidden); // [B, L, H]
  const v = linear(attn, 'v_proj', normed, hidden); // [B, L, H]
  const mixed = attention(p, q, k, v, heads, { mask }); // [B, L, H]
  const afterAttention = op.add(x, linear(attn, 'out_proj', mixed, hidden)); // [B, L, H]

  const normed2 = layerNorm(p, 'layer_norm2', afterAttention, config.layer_norm_eps); // [B, L, H]
  const mlp = p.child('mlp');
  const act = ACTIVATIONS[config.hidden_act];
  const inner = act(linear(mlp, 'fc1', normed2, config.intermediate_size)); // [B, L, I]
  return op.add(afterAttention, linear(mlp, 'fc2', inner, hidden)); // [B, L, H]
}

/** Additive causal mask: 0 where key <= query, the dtype's lowest finite value above the diagonal. */
function causalMask(anchor: Value, length: number, dtype: DType): Value {
  const blocked = dtype === 'float16' ? -65504 : dtype === 'bfloat16' ? -3.3895e38 : -3.4028234663852886e38;
  const values = new Array<number>(length * length);
  for (let q = 0; q < length; q++) for (let k = 0; k < length; k++) values[q * length + k] = k > q ? blocked : 0;
  return anchor.graph.constant(values, dtype, [1, 1, length, length]); // [1, 1, L, L]
}

/**
 * One-hot of the first true position per row of `flags` bool [B, L] (position 0 when none is
 * true: torch's argmax of the flags). Each position scores (L - pos), plus L when flagged; the
 * row maximum is then the first flagged position, or position 0.
 */
function firstTrueOneHot(flags: Value): Value {
  const length = flags.shape[1];
  const g = flags.graph;
  const descending = g.constant(Array.from({ length }, (_, i) => length - i), 'int64', [1, length]); // [1, L]
  const score = op.add(descending, op.mul(op.cast(flags, 'int64'), length)); // [B, L]
  return op.equal(score, op.reduceMax(score, [1])); // [B, L] bool, one true per row
}
