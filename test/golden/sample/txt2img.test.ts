// The sampling golden cases (diffusers' StableDiffusionPipeline with DDIM, Euler and DPM++ 2M on
// tiny-sd15) reproduced through OUR generation path: Generator.generate with the prompt of
// cases.json, negative prompt "", 8 steps, guidance 7.5, 64x64, from sample.initial_latents.
//
// About the token ids: every row of the fixture's tokenizer.input_ids is [0, 2, 2, ..., 2] ("!",
// then "#" x 76), whatever the prompt, while our tokenizer (checked against transformers in
// test/golden/tokenizer) encodes "a photo of a red circle" as [703, 320, 562, 512, 320, 563, 566,
// 704, ...] and "" as [703, 704, ...]. The reference pipeline encoded its prompts with those same
// broken ids: with our tokenizer's ids the latents miss by ~1e+1 (relative), with the fixture's
// rows 0 (the prompt) and 4 (the empty negative prompt) they match to ~1e-5. So the goldens can
// only be reproduced by feeding the reference ids (the `promptIds` option); a test below keeps
// that finding honest by checking that our tokenizer's ids do NOT reproduce them.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModelFolder } from '../../../src-main/engine/io/model-folder';
import { Generator, type GenerationRequest } from '../../../src-main/engine/sample/txt2img';
import { readSchedulerConfig, type Sampler } from '../../../src-main/engine/sample/create-scheduler';
import { goldenDir, readGoldenTensors } from '../../helpers/golden';
import { describeDifference, difference } from '../models/compare';

const dir = goldenDir('tiny-sd15');
const cases = readGoldenTensors(join(dir, 'cases.safetensors'));
// cases.json holds Python's bare -Infinity (DPM-Solver's lambda_min_clipped): parse it as the scheduler configs are.
const caseNotes = readSchedulerConfig(join(dir, 'cases.json')).notes as Record<string, { prompt: string; negative_prompt: string; steps: number; guidance: number; width: number; height: number }>;
const ids = cases.get('tokenizer.input_ids')!.data as BigInt64Array;
const referenceIds = { prompt: ids.slice(0, 77), negative: ids.slice(4 * 77, 5 * 77) }; // rows of "a photo of a red circle" and ""
const floats = (key: string): Float32Array => cases.get(key)!.data as Float32Array;

let generator: Generator;
beforeAll(async () => {
  generator = await Generator.create(openModelFolder(join(dir, 'model')));
});
afterAll(() => generator.release());

const request = (name: string, sampler: Sampler): GenerationRequest => {
  const n = caseNotes[`sample.${name}`]!;
  return {
    prompt: n.prompt,
    negativePrompt: n.negative_prompt,
    steps: n.steps,
    guidance: n.guidance,
    width: n.width,
    height: n.height,
    sampler,
    initialLatents: floats('sample.initial_latents'),
  };
};

describe('txt2img against StableDiffusionPipeline (tiny-sd15)', () => {
  for (const [name, sampler] of [['ddim', 'DDIM'], ['euler', 'Euler'], ['dpmpp2m', 'DPM++ 2M']] as const) {
    it(`sample.${name}: latents and decoded image`, async () => {
      const [image] = await generator.generate({ ...request(name, sampler), promptIds: referenceIds });
      const latents = difference(image!.latents, floats(`sample.${name}.latents`));
      const decoded = difference(image!.image, floats(`sample.${name}.image`));
      console.log(describeDifference(`sample.${name}.latents`, latents));
      console.log(describeDifference(`sample.${name}.image`, decoded));
      expect(latents.outside).toBe(0);
      expect(decoded.outside).toBe(0);
    });
  }

  it('the reference did not use real token ids: our tokenizer ids give other latents', async () => {
    const [image] = await generator.generate(request('euler', 'Euler'));
    const d = difference(image!.latents, floats('sample.euler.latents'));
    expect(d.maxRel).toBeGreaterThan(1e-1);
  });
});
