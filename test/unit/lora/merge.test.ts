// Merging LoRAs: into a new single-file checkpoint (streamed, atomic) and into a Generator's
// weights. Generation with a LoRA applied at strength s (slot inputs, nothing merged) must equal
// generation from the merged weights within float32 noise: this checks the merge arithmetic for
// linear, 1x1 and 3x3 conv and text-encoder modules against the adapter graph.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { writeSafetensors, type TensorToWrite } from '../../../src-main/engine/io/safetensors';
import { openSingleFile } from '../../../src-main/engine/io/single-file';
import { SafetensorsFile } from '../../../src-main/engine/io/safetensors';
import { importLoraFile, loraTargetCatalog, type ImportedLora } from '../../../src-main/engine/lora/lora-import';
import { mergeIntoCheckpoint } from '../../../src-main/engine/lora/merge';
import { slotSpecOf } from '../../../src-main/engine/sample/lora-slots';
import { Generator, type GenerationRequest } from '../../../src-main/engine/sample/txt2img';
import { goldenDir } from '../../helpers/golden';
import { describeDifference, difference } from '../../golden/models/compare';

const dir = goldenDir('tiny-sd15');
const model = openModelFolder(join(dir, 'model'));
const catalog = loraTargetCatalog(model);
const work = mkdtempSync(join(tmpdir(), 'lora-studio-merge-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const request: GenerationRequest = { prompt: 'a photo of a red circle', negativePrompt: 'blurry', steps: 4, guidance: 7.5, width: 64, height: 64, sampler: 'Euler', seed: 3 };

/** A LoRA on 3x3 and 1x1 convolutions, a linear layer and the text encoder, with sizeable weights. */
function locon(): ImportedLora {
  const path = join(work, 'locon.safetensors');
  const t = (name: string, shape: number[], seed: number, scale = 0.2): TensorToWrite => ({
    name,
    dtype: 'F32',
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => scale * Math.sin(seed * 7.1 + i * 0.37)),
  });
  writeSafetensors(path, [
    t('lora_unet_up_blocks_1_resnets_0_conv2.lora_down.weight', [2, 64, 3, 3], 1),
    t('lora_unet_up_blocks_1_resnets_0_conv2.lora_up.weight', [64, 2, 1, 1], 2),
    { name: 'lora_unet_up_blocks_1_resnets_0_conv2.alpha', dtype: 'F32', shape: [], data: Float32Array.of(1) },
    t('lora_unet_down_blocks_1_attentions_0_proj_out.lora_down.weight', [4, 32, 1, 1], 3),
    t('lora_unet_down_blocks_1_attentions_0_proj_out.lora_up.weight', [32, 4, 1, 1], 4),
    t('lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2.lora_down.weight', [4, 256], 5),
    t('lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2.lora_up.weight', [64, 4], 6),
    t('lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight', [2, 32], 7, 1),
    t('lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight', [37, 2], 8, 1),
  ]);
  return importLoraFile(path, catalog);
}

describe('LoRA merge', () => {
  it('the golden kohya LoRA at strength 1 in a slot equals it merged into a single-file checkpoint', async () => {
    const lora = importLoraFile(join(dir, 'lora_kohya.safetensors'), catalog);
    const out = join(work, 'merged.safetensors');
    const written = mergeIntoCheckpoint(model, [{ lora, strength: 1, hash: 'abc' }], out);
    expect(written.modules).toBe(128);
    expect(JSON.parse(SafetensorsFile.open(out).metadata!.lora_studio_merged_loras!)).toEqual([{ name: 'lora_kohya', strength: 1, hash: 'abc' }]);

    const withSlot = await Generator.create(model, { loras: [slotSpecOf('lora_kohya', lora)] });
    // a single file cannot tell head counts of a non-standard (tiny) model: give the folder's configs
    const configOverrides = { unet: model.unet.config, vae: model.vae.config, textEncoder: model.textEncoder.config };
    const merged = await Generator.create(openSingleFile(out, { tokenizerDir: model.tokenizerDir, configOverrides }));
    const [a] = await withSlot.generate(request, [{ slot: 0, weights: lora, strength: 1 }]);
    const [b] = await merged.generate(request);
    const [base] = await withSlot.generate(request);
    const d = difference(b!.latents, a!.latents, { rtol: 1e-4, atol: 1e-4 });
    console.log(describeDifference('merged checkpoint vs slot at strength 1 (latents)', d));
    expect(d.outside).toBe(0);
    expect(difference(base!.latents, a!.latents, { rtol: 1e-2, atol: 1e-2 }).outside).toBeGreaterThan(0); // the LoRA does change the image
    await Promise.all([withSlot.release(), merged.release()]);
  });

  it('conv (3x3, 1x1), linear and text-encoder modules: slot at 0.7 equals Generator merge at 0.7', async () => {
    const lora = locon();
    expect(lora.modules).toHaveLength(4);
    const withSlot = await Generator.create(model, { loras: [slotSpecOf('locon', lora)] });
    const merged = await Generator.create(model, { merge: [{ lora, strength: 0.7 }] });
    const [a] = await withSlot.generate(request, [{ slot: 'locon', weights: lora, strength: 0.7 }]);
    const [b] = await merged.generate(request);
    const [base] = await withSlot.generate(request);
    // Merged weights round W + delta once; the adapter adds delta's product to W's: float32
    // rounding differs, and 4 sampling steps through this tiny random UNet amplify it to ~1e-3.
    const d = difference(b!.latents, a!.latents, { rtol: 5e-3, atol: 1e-3 });
    console.log(describeDifference('Generator merge vs slot at strength 0.7 (latents)', d));
    expect(d.outside).toBe(0);
    expect(difference(base!.latents, a!.latents, { rtol: 1e-2, atol: 1e-2 }).outside).toBeGreaterThan(0);
    expect(b!.parameters).toContain('Lora merged: "locon: 0.7"');
    await Promise.all([withSlot.release(), merged.release()]);
  });

  it('writes nothing when the merge fails', () => {
    const lora = importLoraFile(join(dir, 'lora_kohya.safetensors'), catalog);
    const broken = { ...lora, modules: [...lora.modules, { ...lora.modules[0]!, module: 'down_blocks.9.no_such_layer' }] };
    const out = join(work, 'never.safetensors');
    expect(() => mergeIntoCheckpoint(model, [{ lora: broken, strength: 1 }], out)).toThrow(/no weight down_blocks\.9\.no_such_layer\.weight/);
    expect(existsSync(out)).toBe(false);
    expect(() => mergeIntoCheckpoint(model, [{ lora, strength: 1 }], join(work, 'no-such-dir', 'x.safetensors'))).toThrow(/ENOENT/);
    expect(readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
