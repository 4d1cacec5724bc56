// `lora-studio train` on an SDXL model folder (the tiny-sdxl fixture), run as a user runs it: the
// resolution defaults to the model's native size, and the LoRA comes out in sd-scripts' SDXL
// layout, which `lora-studio generate --lora` then applies to the same model.
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readLoraFile } from '../../../src-main/engine/lora/lora-file';
import { cliIn } from '../../helpers/cli';
import { goldenDir } from '../../helpers/golden';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'lora-cli-sdxl-'));

const cli = cliIn(join(work, 'home'));

describe('lora-studio train on an SDXL model', () => {
  it('trains, writes an sd-scripts SDXL LoRA, and generate applies it', () => {
    const model = join(goldenDir('tiny-sdxl'), 'model');
    const out = join(work, 'sdxl.safetensors');
    const train = cli('train', '--model', model, '--images', join(repoRoot, 'resources', 'sample-dataset'), '--out', out, '--steps', '3', '--log-every', '1');
    expect(train.code, train.err).toBe(0);
    expect(train.out).toContain('bucket(s) 64x64'); // tiny-sdxl's native size (sample_size 8 x 8)
    const file = readLoraFile(out);
    expect(file.modules).toHaveLength(176);
    expect(file.modules.some((m) => m.key === 'lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q')).toBe(true);
    expect(file.metadata.ss_base_model_version).toBe('sdxl_base_v1-0');

    const png = join(work, 'out.png');
    const generate = cli('generate', '--model', model, '--prompt', 'a red circle', '--lora', `${out}:0.8`, '--steps', '2', '--provider', 'cpu', '--out', png);
    expect(generate.code, generate.err).toBe(0);
    expect(generate.out).toContain('176 module(s)');
    expect(generate.err).not.toContain('NOT applied');
    expect(existsSync(png)).toBe(true);
  }, 120_000);
});
