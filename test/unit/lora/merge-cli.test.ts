// `lora-studio merge` run as a user runs it: unmatched LoRA keys are printed, the checkpoint is
// written in the LDM layout, and a LoRA for another model fails naming the file and shapes.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { decodeSafetensors, SafetensorsFile, writeSafetensors } from '../../../src-main/engine/io/safetensors';
import { goldenDir } from '../../helpers/golden';
import { cliIn } from '../../helpers/cli';

const work = mkdtempSync(join(tmpdir(), 'lora-studio-merge-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const model = join(goldenDir('tiny-sd15'), 'model');

const cli = cliIn();

describe('lora-studio merge', () => {
  it('merges, lists the keys that fit nothing, writes an LDM-layout checkpoint', () => {
    // the golden LoRA plus one stray tensor
    const withStray = join(work, 'with-stray.safetensors');
    const { tensors } = decodeSafetensors(readFileSync(join(goldenDir('tiny-sd15'), 'lora_kohya.safetensors')));
    writeSafetensors(withStray, [
      ...[...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, data: t.bytes })),
      { name: 'lora_unet_not_a_layer.lora_down.weight', dtype: 'F32', shape: [1, 2], data: new Float32Array(2) },
      { name: 'lora_unet_not_a_layer.lora_up.weight', dtype: 'F32', shape: [2, 1], data: new Float32Array(2) },
    ]);
    const r = cli('merge', '--model', model, '--lora', `${withStray}:0.5`, '--out', join(work, 'merged.safetensors'));
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('2 tensor(s) of');
    expect(r.err).toContain('lora_unet_not_a_layer.lora_down.weight');
    expect(r.out).toContain('128 layer(s) changed');
    const file = SafetensorsFile.open(join(work, 'merged.safetensors'));
    file.close();
    expect(file.has('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight')).toBe(true);
    expect(file.has('cond_stage_model.transformer.text_model.final_layer_norm.weight')).toBe(true);
  });

  it('refuses a LoRA for another base model and writes nothing', () => {
    const sdxlLora = join(goldenDir('tiny-sdxl'), 'lora_kohya.safetensors');
    const r = cli('merge', '--model', model, '--lora', sdxlLora, '--out', join(work, 'never.safetensors'));
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${sdxlLora}: LoRA tensor "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight" has shape [4, 64]`);
    expect(existsSync(join(work, 'never.safetensors'))).toBe(false);
  });
});
