// Which layers get a LoRA. Module names are diffusers' (e.g.
// "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"); the kohya key is derived from them.

/** Named sets of layers, kohya-compatible: "attention" is what sd-scripts' networks.lora trains by default. */
export type LoraTargetSet = 'attention' | 'transformer' | 'transformer+conv';

const ATTENTION = /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;
// The transformer blocks' other Linear / 1x1 layers: feed-forward and the projections around the block.
const TRANSFORMER_OTHER = /(\.ff\.net\.0\.proj|\.ff\.net\.2|\.attentions\.\d+\.proj_in|\.attentions\.\d+\.proj_out)$/;
// 3x3 convolutions of the resnets and resamplers (LoCon).
const CONV3X3 = /(\.resnets\.\d+\.conv[12]|\.(down|up)samplers\.0\.conv|^conv_in|^conv_out)$/;
// CLIP text encoder: attention projections and MLP, as kohya's text-encoder LoRA.
const TEXT_ENCODER = /\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.fc1|mlp\.fc2)$/;

export interface TargetRule {
  /** Whether a module of this kind and weight shape gets a LoRA under this rule. */
  matches(module: string, kind: 'linear' | 'conv', weightShape: readonly number[]): boolean;
}

export function unetTargets(set: LoraTargetSet): TargetRule {
  return {
    matches(module, kind, weightShape) {
      const pointwise = kind === 'linear' || (weightShape[2] === 1 && weightShape[3] === 1);
      if (ATTENTION.test(module)) return true;
      if (set === 'attention') return false;
      if (TRANSFORMER_OTHER.test(module) && pointwise) return true;
      return set === 'transformer+conv' && kind === 'conv' && CONV3X3.test(module);
    },
  };
}

export const textEncoderTargets: TargetRule = {
  matches: (module, kind) => kind === 'linear' && TEXT_ENCODER.test(module),
};
