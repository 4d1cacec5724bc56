// `lora-studio generate` run as a user runs it: the embedded model (made in a temporary
// LORA_STUDIO_HOME), a LoRA at a strength, a batch of seeds, PNGs with the settings inside.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readPngTextChunks } from '../../../src-main/engine/sample/png-metadata';
import { parseParameters } from '../../../src-main/engine/sample/txt2img';
import { goldenDir } from '../../helpers/golden';
import { cliIn } from '../../helpers/cli';

const work = mkdtempSync(join(tmpdir(), 'lora-studio-generate-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const cli = cliIn(join(work, 'home'));

describe('lora-studio generate', () => {
  it('generates a batch with a LoRA on the embedded model and embeds the settings', () => {
    const model = join(goldenDir('tiny-sd15'), 'model');
    const lora = join(goldenDir('tiny-sd15'), 'lora_kohya.safetensors');
    const r = cli('generate', '--model', model, '--prompt', 'a red circle', '--negative', 'blurry', '--lora', `${lora}:0.8`, '--steps', '3', '--guidance', '5', '--seed', '7', '--batch', '2', '--width', '64', '--height', '64', '--scheduler', 'dpmpp-2m-karras', '--clip-skip', '2', '--out', join(work, 'img.png'));
    expect(r.err + r.out).toContain(`wrote ${join(work, 'img-8.png')} (seed 8)`);
    expect(r.code).toBe(0);
    const { prompt, negativePrompt, fields } = parseParameters(readPngTextChunks(readFileSync(join(work, 'img-8.png'))).get('parameters')!);
    expect(prompt).toBe('a red circle <lora:lora_kohya:0.8>');
    expect(negativePrompt).toBe('blurry');
    expect(fields).toMatchObject({ Steps: '3', Sampler: 'DPM++ 2M Karras', 'CFG scale': '5', Seed: '8', Size: '64x64', Model: 'model', 'Clip skip': '2' });
    expect(fields['Lora hashes']).toMatch(/^lora_kohya: [0-9a-f]{12}$/);
  });

  it('uses the embedded tiny model without --model, and reports bad options', () => {
    const r = cli('generate', '--prompt', 'x', '--steps', '2', '--out', join(work, 'tiny.png'));
    expect(r.code).toBe(0);
    expect(readPngTextChunks(readFileSync(join(work, 'tiny.png'))).get('parameters')).toContain('Model: lora-studio-tiny-sd15');
    const bad = cli('generate', '--prompt', 'x', '--scheduler', 'plms');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--scheduler must be one of ddim, euler, euler-a, dpmpp-2m, dpmpp-2m-karras');
  });
});
