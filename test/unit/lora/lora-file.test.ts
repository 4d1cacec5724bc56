// LoRA files: what we write has the keys, shapes and alphas of the reference files for the same
// targets (tiny-sd15, rank 4, alpha 8, attention), the kohya/modelspec metadata, and readLoraFile
// reads kohya and diffusers files (ours and the references) into the same normalized form.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../src-main/engine/graph/graph';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { decodeSafetensors } from '../../../src-main/engine/io/safetensors';
import { kohyaTrainingMetadata, loraModulesFromNetwork, moduleFromKohyaKey, readLoraFile, writeLoraFile } from '../../../src-main/engine/lora/lora-file';
import { initLoraWeights, LoraNetwork } from '../../../src-main/engine/lora/lora-network';
import { unetTargets } from '../../../src-main/engine/lora/targets';
import { buildUNet2DCondition } from '../../../src-main/engine/models/unet-2d-condition';
import { Params } from '../../../src-main/engine/nn/params';
import { Rng } from '../../../src-main/engine/sample/rng';
import { goldenDir } from '../../helpers/golden';

const dir = goldenDir('tiny-sd15');
const work = mkdtempSync(join(tmpdir(), 'lora-file-'));

function headerOf(path: string): Map<string, { dtype: string; shape: number[] }> {
  const { tensors } = decodeSafetensors(readFileSync(path), path);
  return new Map([...tensors].map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape }]));
}

/** Our adapters on the tiny-sd15 UNet, with random nonzero weights. */
function trainedModules() {
  const model = openModelFolder(join(dir, 'model'));
  const g = new Graph('discover');
  const network = new LoraNetwork({ prefix: 'lora_unet', rank: 4, alpha: 8, targets: unetTargets('attention') });
  buildUNet2DCondition(new Params(g, model.unet.weights, { dtype: 'float32', hook: network.hook() }), model.unet.config, {
    sample: g.input('sample', 'float32', [1, 4, 8, 8]),
    timestep: g.input('t', 'float32', [1]),
    encoderHiddenStates: g.input('ehs', 'float32', [1, 77, 32]),
  });
  const rng = new Rng(1);
  const weights = initLoraWeights(network.modules, () => rng.uniform());
  for (const [name, w] of weights) if (name.endsWith('lora_up.weight')) for (let i = 0; i < w.length; i++) w[i] = rng.normalValue() * 0.01;
  return loraModulesFromNetwork(network.modules, weights);
}

const info = {
  kind: 'sd1' as const, prediction: 'epsilon' as const, title: 'test lora', rank: 4, alpha: 8, resolution: { width: 64, height: 64 },
  numTrainImages: 8, tagFrequency: { 'sample-dataset': { red: 2, circle: 1 } }, steps: 10, maxSteps: 10, epoch: 2, seed: 42,
  learningRate: 1e-3, lrScheduler: 'constant', lrWarmupSteps: 0, batchSize: 1, gradientAccumulation: 1, maxGradNorm: 1,
  minSnrGamma: undefined, noiseOffset: 0, clipSkip: 1, baseModelName: 'tiny', precision: 'fp32' as const,
  trainingStartedAt: 1_790_000_000, trainingFinishedAt: 1_790_000_100,
};

describe('LoRA files', () => {
  it('kohya output has the reference keys, shapes and alphas, and the ss_* / modelspec metadata', () => {
    const path = join(work, 'kohya.safetensors');
    writeLoraFile(path, trainedModules(), { format: 'kohya', precision: 'fp32', metadata: kohyaTrainingMetadata(info) });
    const ours = headerOf(path);
    const reference = headerOf(join(dir, 'lora_kohya.safetensors'));
    expect([...ours.keys()].sort()).toEqual([...reference.keys()].sort());
    for (const [k, t] of reference) expect(ours.get(k)!.shape, k).toEqual(t.shape);
    const read = readLoraFile(path);
    expect(read.format).toBe('kohya');
    expect(read.modules.every((m) => m.alpha === 8 && m.rank === 4)).toBe(true);
    expect(read.metadata).toMatchObject({
      ss_network_module: 'networks.lora', ss_network_dim: '4', ss_network_alpha: '8', ss_base_model_version: 'sd_v1',
      ss_resolution: '(64, 64)', ss_num_train_images: '8', ss_steps: '10', ss_seed: '42', ss_learning_rate: '0.001',
      ss_training_started_at: '1790000000', 'modelspec.sai_model_spec': '1.0.0', 'modelspec.architecture': 'stable-diffusion-v1/lora',
      'modelspec.implementation': 'diffusers', 'modelspec.title': 'test lora', 'modelspec.resolution': '64x64',
    });
    expect(JSON.parse(read.metadata.ss_tag_frequency)).toEqual(info.tagFrequency);
    expect(read.metadata['modelspec.date']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
  });

  it('diffusers output has the reference keys and shapes, with alpha / rank folded into lora_B', () => {
    const modules = trainedModules();
    const path = join(work, 'diffusers.safetensors');
    writeLoraFile(path, modules, { format: 'diffusers', precision: 'fp32' });
    const ours = headerOf(path);
    const reference = headerOf(join(dir, 'lora_diffusers.safetensors'));
    expect([...ours.keys()].sort()).toEqual([...reference.keys()].sort());
    for (const [k, t] of reference) expect(ours.get(k)!.shape, k).toEqual(t.shape);
    const read = readLoraFile(path);
    expect(read.format).toBe('diffusers');
    read.modules.forEach((m) => {
      const original = modules.find((o) => o.key === m.key)!;
      expect(m.module).toBe(original.module);
      expect(m.alpha).toBe(m.rank); // no alpha in the file: scale 1
      expect(Array.from(m.down)).toEqual(Array.from(original.down));
      m.up.forEach((u, j) => expect(u).toBeCloseTo(original.up[j] * 2, 6)); // alpha 8 / rank 4
    });
  });

  it('fp16 output stores F16 weights (alpha stays F32) and reads back within float16 rounding', () => {
    const modules = trainedModules();
    const path = join(work, 'half.safetensors');
    writeLoraFile(path, modules, { format: 'kohya', precision: 'fp16' });
    const header = headerOf(path);
    expect(header.get(`${modules[0].key}.lora_down.weight`)!.dtype).toBe('F16');
    expect(header.get(`${modules[0].key}.alpha`)!.dtype).toBe('F32');
    const read = readLoraFile(path);
    for (const m of read.modules) {
      const original = modules.find((o) => o.key === m.key)!;
      m.down.forEach((x, j) => expect(Math.abs(x - original.down[j])).toBeLessThan(1e-3 * Math.abs(original.down[j]) + 1e-7));
    }
  });

  it('reads the reference kohya and diffusers files to the same modules', () => {
    const kohya = readLoraFile(join(dir, 'lora_kohya.safetensors'));
    const diffusers = readLoraFile(join(dir, 'lora_diffusers.safetensors'));
    expect(kohya.modules).toHaveLength(128);
    expect(kohya.modules.map((m) => m.key)).toEqual(diffusers.modules.map((m) => m.key));
    // module names rebuilt from kohya keys equal the diffusers names
    expect(kohya.modules.map((m) => m.module)).toEqual(diffusers.modules.map((m) => m.module));
    kohya.modules.forEach((m, i) => {
      expect(m.alpha).toBe(8);
      expect(diffusers.modules[i].alpha).toBe(4);
      expect(Array.from(m.up)).toEqual(Array.from(diffusers.modules[i].up));
    });
    expect(moduleFromKohyaKey('text_model_encoder_layers_11_self_attn_q_proj')).toBe('text_model.encoder.layers.11.self_attn.q_proj');
    expect(moduleFromKohyaKey('up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj')).toBe('up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj');
  });

  it('names the file and the problem for a file that is not a LoRA', () => {
    expect(() => readLoraFile(join(dir, 'model', 'vae', 'diffusion_pytorch_model.safetensors'))).toThrow(/diffusion_pytorch_model.safetensors: no LoRA tensors found/);
    expect(() => readLoraFile(join(work, 'missing.safetensors'))).toThrow(/missing.safetensors: cannot read the LoRA file \(ENOENT\)/);
  });
});
