// The tiny-sdxl UNet (text_time conditioning) with the golden LoRA attached: output, loss and every
// LoRA gradient against peft's. The golden files name the modules the way sd-scripts names SDXL
// LoRAs (LDM blocks: lora_unet_input_blocks_4_1_...), our network by diffusers module names; the
// product's renaming (toSdxlKohyaNames) pairs them, so every one of the 176 modules must find its
// tensors under that name. The gradient bound is the one of lora-unet.test.ts: 1e-3 relative, or
// four times the measured float32 sensitivity where the tiny random UNet amplifies rounding.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Graph } from '../../../src-main/engine/graph/graph';
import * as op from '../../../src-main/engine/graph/ops';
import { serializeModel } from '../../../src-main/engine/graph/onnx-model';
import { gradients } from '../../../src-main/engine/autodiff/gradients';
import { Session, type HostTensor } from '../../../src-main/engine/runtime/session';
import { downName, LoraNetwork, upName } from '../../../src-main/engine/lora/lora-network';
import { toSdxlKohyaNames } from '../../../src-main/engine/lora/lora-file';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { Params } from '../../../src-main/engine/nn/params';
import { buildUNet2DCondition } from '../../../src-main/engine/models/unet-2d-condition';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { compareLoraGradients, goldenDir, goldenFeed, maxRelError, nudged, readGoldenTensors } from '../../helpers/golden';

describe('LoRA on the tiny-sdxl UNet (golden lora.*)', () => {
  it('matches peft: output, loss and all 352 gradients, under sd-scripts SDXL names', async () => {
    const dir = goldenDir('tiny-sdxl');
    const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
    const loraFile = readGoldenTensors(join(dir, 'lora_kohya.safetensors'));
    const expectedGrads = readGoldenTensors(join(dir, 'lora_grads.safetensors'));
    const model = openModelFolder(join(dir, 'model'));
    const shapeOf = (key: string): number[] => cases.get(key)!.shape;

    const g = new Graph('lora_unet_sdxl');
    const sample = g.input('sample', 'float32', shapeOf('unet.input.sample'));
    const timestep = g.input('timestep', 'int64', shapeOf('unet.input.timestep'));
    const ehs = g.input('ehs', 'float32', shapeOf('unet.input.encoder_hidden_states'));
    const textEmbeds = g.input('text_embeds', 'float32', shapeOf('unet.input.text_embeds'));
    const timeIds = g.input('time_ids', 'float32', shapeOf('unet.input.time_ids'));
    const target = g.input('target', 'float32', shapeOf('lora.target'));
    const network = new LoraNetwork({ prefix: 'lora_unet', rank: 4, alpha: 8, targets: unetTargets('attention') });
    const p = new Params(g, model.unet.weights, { dtype: 'float32', hook: network.hook() });
    const out = buildUNet2DCondition(p, model.unet.config, { sample, timestep, encoderHiddenStates: ehs, addedCond: { textEmbeds, timeIds } });
    model.unet.weights.assertAllTaken();
    const diff = op.sub(out, target);
    const loss = op.meanAll(op.mul(diff, diff));
    const grads = gradients(loss, network.parameters());
    g.output(out, 'output');
    g.output(loss, 'loss');
    network.parameters().forEach((param, i) => g.output(grads[i], `grad:${param.name}`));
    expect(network.modules.length).toBe(176);

    // Our tensor names (diffusers-based kohya keys) -> the golden's sd-scripts SDXL names.
    const empty = new Float32Array(0);
    const renamed = toSdxlKohyaNames(
      network.modules.map((m) => ({ key: m.key, prefix: 'lora_unet' as const, module: m.module, rank: m.rank, alpha: m.alpha, down: empty, downShape: m.downShape, up: empty, upShape: m.upShape })),
      model.unet.config,
    );
    const goldenName = new Map<string, string>();
    network.modules.forEach((m, i) => {
      goldenName.set(downName(m.key), downName(renamed[i].key));
      goldenName.set(upName(m.key), upName(renamed[i].key));
    });
    expect(new Set(goldenName.values()).size).toBe(352);

    const session = await Session.create(serializeModel(g));
    const feeds: Record<string, HostTensor> = {
      sample: goldenFeed(cases.get('unet.input.sample')!),
      timestep: goldenFeed(cases.get('unet.input.timestep')!),
      ehs: goldenFeed(cases.get('unet.input.encoder_hidden_states')!),
      text_embeds: goldenFeed(cases.get('unet.input.text_embeds')!),
      time_ids: goldenFeed(cases.get('unet.input.time_ids')!),
      target: goldenFeed(cases.get('lora.target')!),
    };
    for (const name of network.parameterNames()) {
      const tensor = loraFile.get(goldenName.get(name)!);
      expect(tensor, `${name} -> ${goldenName.get(name)} in lora_kohya.safetensors`).toBeDefined();
      feeds[name] = goldenFeed(tensor!);
    }
    const r = await session.run(feeds);

    expect(maxRelError(r.output.data as Float32Array, cases.get('lora.output')!.data as Float32Array)).toBeLessThan(1e-3);
    expect(maxRelError(r.loss.data as Float32Array, cases.get('lora.loss')!.data as Float32Array)).toBeLessThan(1e-4);

    const r2 = await session.run({ ...feeds, sample: nudged(feeds.sample) });
    const { compared, wellConditioned, worst, worstName } = compareLoraGradients(
      network.parameterNames(),
      (name) => r[`grad:${name}`].data as Float32Array,
      (name) => r2[`grad:${name}`].data as Float32Array,
      (name) => expectedGrads.get(goldenName.get(name)!)!.data as Float32Array,
    );
    console.log(`tiny-sdxl LoRA gradients: ${compared} compared, ${wellConditioned} within 1e-3, worst error/bound ${worst.toFixed(3)} (${worstName})`);
    expect(compared).toBeGreaterThan(300);
    expect(wellConditioned).toBe(compared); // none needs the sensitivity allowance here
    expect(worst, `worst gradient ${worstName} (error / bound)`).toBeLessThan(1);
    expect(expectedGrads.size).toBe(352);
  });
});
