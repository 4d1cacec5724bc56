// Exporting an SDXL LoRA: the kohya file in sd-scripts' SDXL layout (LDM block names, lora_te1/te2)
// with SDXL metadata, and the diffusers file, both with exactly the keys and shapes of the golden
// tiny-sdxl files for the same targets (rank 4, alpha 8, to_q/k/v/out.0); what we write reads back
// and imports onto the model with nothing left unmatched.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { SafetensorsFile } from '../../../src-main/engine/io/safetensors';
import { kohyaTrainingMetadata, loraModulesFromNetwork, toSdxlKohyaNames, writeLoraFile } from '../../../src-main/engine/lora/lora-file';
import { importLoraFile, loraTargetCatalog } from '../../../src-main/engine/lora/lora-import';
import { downName, LoraNetwork, upName } from '../../../src-main/engine/lora/lora-network';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { buildUNet2DCondition } from '../../../src-main/engine/models/unet-2d-condition';
import { Params } from '../../../src-main/engine/nn/params';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';

const dir = goldenDir('tiny-sdxl');
const work = mkdtempSync(join(tmpdir(), 'lora-sdxl-export-'));

/** Name -> shape of every tensor in a safetensors file, and its metadata. */
function layoutOf(path: string): { shapes: Map<string, string>; metadata: Record<string, string> } {
  const file = SafetensorsFile.open(path);
  try {
    return { shapes: new Map(file.names().map((n) => [n, JSON.stringify(file.tensor(n).shape)])), metadata: { ...(file.metadata ?? {}) } };
  } finally {
    file.close();
  }
}

describe('SDXL LoRA export', () => {
  const model = openModelFolder(join(dir, 'model'));
  // The trainer's network on the tiny-sdxl UNet: attention targets, rank 4, alpha 8.
  const g = new Graph('discover');
  const network = new LoraNetwork({ prefix: 'lora_unet', rank: 4, alpha: 8, targets: unetTargets('attention') });
  buildUNet2DCondition(new Params(g, model.unet.weights, { dtype: 'float32', hook: network.hook() }), model.unet.config, {
    sample: g.input('sample', 'float32', [1, 4, 8, 8]),
    timestep: g.input('t', 'float32', [1]),
    encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 64]),
    addedCond: { textEmbeds: g.input('te', 'float32', [1, 32]), timeIds: g.input('ids', 'float32', [1, 6]) },
  });
  // Weights: the golden LoRA's, found under the renamed keys (values travel with the names).
  const golden = readGoldenTensors(join(dir, 'lora_kohya.safetensors'));
  const placeholder = loraModulesFromNetwork(network.modules, new Map(network.modules.flatMap((m) => [[downName(m.key), new Float32Array(0)], [upName(m.key), new Float32Array(0)]])));
  const ldmKeys = toSdxlKohyaNames(placeholder, model.unet.config).map((m) => m.key);
  const weights = new Map<string, Float32Array>();
  network.modules.forEach((m, i) => {
    weights.set(downName(m.key), golden.get(downName(ldmKeys[i]))!.data as Float32Array);
    weights.set(upName(m.key), golden.get(upName(ldmKeys[i]))!.data as Float32Array);
  });
  const trained = loraModulesFromNetwork(network.modules, weights);
  const metadata = kohyaTrainingMetadata({
    kind: 'sdxl', prediction: 'epsilon', title: 'tiny', rank: 4, alpha: 8, resolution: { width: 1024, height: 1024 }, numTrainImages: 1,
    tagFrequency: {}, steps: 1, maxSteps: 1, epoch: 1, seed: 0, learningRate: 1e-4, lrScheduler: 'constant', lrWarmupSteps: 0, batchSize: 1,
    gradientAccumulation: 1, maxGradNorm: 1, minSnrGamma: undefined, noiseOffset: 0, clipSkip: 1, baseModelName: 'tiny-sdxl', precision: 'fp32',
    trainingStartedAt: 0, trainingFinishedAt: 1,
  });

  it('kohya: the sd-scripts SDXL keys and shapes of lora_kohya.safetensors, SDXL metadata, same values', () => {
    const out = join(work, 'kohya.safetensors');
    writeLoraFile(out, toSdxlKohyaNames(trained, model.unet.config), { format: 'kohya', precision: 'fp32', metadata });
    const ours = layoutOf(out);
    const expected = layoutOf(join(dir, 'lora_kohya.safetensors'));
    expect([...ours.shapes].sort()).toEqual([...expected.shapes].sort());
    expect(ours.shapes.has('lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight')).toBe(true);
    expect(ours.metadata).toMatchObject({ ss_base_model_version: 'sdxl_base_v1-0', 'modelspec.architecture': 'stable-diffusion-xl-v1-base/lora', ss_network_dim: '4', ss_network_alpha: '8' });
    const written = readGoldenTensors(out);
    for (const [name, t] of golden) expect(Array.from(written.get(name)!.data as Float32Array), name).toEqual(Array.from(t.data as Float32Array));
  });

  it('diffusers: the keys and shapes of lora_diffusers.safetensors (alpha / rank folded into lora_B)', () => {
    const out = join(work, 'diffusers.safetensors');
    writeLoraFile(out, trained, { format: 'diffusers', precision: 'fp32', metadata });
    const ours = layoutOf(out);
    const expected = layoutOf(join(dir, 'lora_diffusers.safetensors'));
    expect([...ours.shapes].sort()).toEqual([...expected.shapes].sort());
    const written = readGoldenTensors(out);
    const referenceB = readGoldenTensors(join(dir, 'lora_diffusers.safetensors')); // stores up unscaled, without alphas
    for (const [name, t] of referenceB) {
      const ref = t.data as Float32Array;
      const factor = name.endsWith('lora_B.weight') ? 2 : 1; // alpha 8 / rank 4
      const mine = written.get(name)!.data as Float32Array;
      for (let i = 0; i < ref.length; i++) expect(mine[i]).toBeCloseTo(ref[i] * factor, 6);
    }
  });

  it('the kohya export (LDM names) and text-encoder prefixes import onto the SDXL model completely', () => {
    const out = join(work, 'kohya-import.safetensors');
    writeLoraFile(out, toSdxlKohyaNames(trained, model.unet.config), { format: 'kohya', precision: 'fp16', metadata });
    const imported = importLoraFile(out, loraTargetCatalog(model));
    expect(imported.unmatched).toEqual([]);
    expect(imported.modules).toHaveLength(176);
    expect(new Set(imported.modules.map((m) => m.module))).toEqual(new Set(network.modules.map((m) => m.module)));

    // Text-encoder modules: te1 keeps its module name under lora_te1_, te2 stays lora_te2_.
    const [te1, te2] = toSdxlKohyaNames(
      [
        { ...trained[0]!, prefix: 'lora_te', key: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj', module: 'text_model.encoder.layers.0.self_attn.q_proj' },
        { ...trained[0]!, prefix: 'lora_te2', key: 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj', module: 'text_model.encoder.layers.0.self_attn.q_proj' },
      ],
      model.unet.config,
    );
    expect([te1!.prefix, te1!.key, te2!.key]).toEqual(['lora_te1', 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj', 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj']);
  });
});
