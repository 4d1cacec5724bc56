// `npm run bench:sampling`: the speed and memory of text-to-image (the studio's Generate and the
// trainer's previews) through the real Generator: text encoders, the UNet on the guidance batch for
// every step, the VAE decoder. `--model sd15|sdxl` writes a real-size model folder with seeded
// random weights (bench/random-model-folder.ts: the compute of the real checkpoint); the default
// `--model tiny` is the embedded tiny model (the CI-machine figures on the CPU).
// The UNet's time per step comes from two step counts: (t(steps) - t(1)) / (steps - 1); the rest of
// t(1) is the text encoders, one UNet step and the VAE decoder. Prints one JSON object.
//
//   npm run bench:sampling -- [--model tiny|sd15|sdxl] [--device cpu|cuda|webgpu]
//                             [--dtype float32|float16] [--resolution (default: the model's native size)]
//                             [--steps 20] [--repeats 3] [--json FILE]
//                             [--ort-env-log-level info (onnxruntime's arena lines, with phase markers)]
import { appendFileSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { openModelFolder } from '../src-main/engine/io/model-folder';
import { ensureEmbeddedModel } from '../src-main/engine/models/embedded-tiny-model';
import type { ProviderName } from '../src-main/engine/runtime/providers';
import { setRuntimeLogLevel } from '../src-main/engine/runtime/session';
import { Generator, type GeneratorOptions } from '../src-main/engine/sample/txt2img';
import { deviceName, gpuBusyPoller, gpuMemoryPoller } from './gpu-monitor';
import { ensureRandomModelFolder } from './random-model-folder';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'tiny' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string' },
    resolution: { type: 'string' },
    steps: { type: 'string', default: '20' },
    repeats: { type: 'string', default: '3' },
    json: { type: 'string' },
    'ort-env-log-level': { type: 'string' },
    'cache-dir': { type: 'string', default: join(process.env.LORA_STUDIO_HOME ?? join(homedir(), '.cache', 'lora-studio'), 'bench') },
  },
});

const model = args.model!;
if (!['tiny', 'sd15', 'sdxl'].includes(model)) throw new Error(`--model must be tiny, sd15 or sdxl, got ${model}`);
const device = args.device as ProviderName;
const dtype = args.dtype as GeneratorOptions['dtype'];
if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new Error(`--dtype must be float32 or float16, got ${dtype}`);
const steps = Number(args.steps);
const repeats = Number(args.repeats);
if (!Number.isInteger(steps) || steps < 2) throw new Error(`--steps must be an integer of at least 2, got ${args.steps}`);
const cacheDir = args['cache-dir']!;
const logLevel = args['ort-env-log-level'] as Parameters<typeof setRuntimeLogLevel>[0] | undefined;
if (logLevel) setRuntimeLogLevel(logLevel);
/** A marker between onnxruntime's log lines, so its arena extensions can be told apart by phase. */
const mark = (phase: string): void => void (logLevel && console.error(`${new Date().toISOString()} [bench] ${phase}`));
mkdirSync(cacheDir, { recursive: true });

const t0 = performance.now();
const folder = model === 'tiny' ? ensureEmbeddedModel(join(cacheDir, 'models')) : ensureRandomModelFolder(model as 'sd15' | 'sdxl', cacheDir);
const writeS = (performance.now() - t0) / 1000;
const opened = openModelFolder(folder);
const memory = gpuMemoryPoller(device);

const created = performance.now();
const generator = await Generator.create(opened, { provider: device, dtype, cacheDir: join(cacheDir, 'graphs') });
// Default: the model's native size, the UNet's sample_size in latents times the VAE's downsampling.
const side = Number(args.resolution ?? (opened.unet.config.sample_size as number) * 2 ** (opened.vae.config.block_out_channels.length - 1));
const request = { prompt: 'a watercolor fox in the snow', negativePrompt: 'blurry', seed: 7, width: side, height: side };
mark('text encoder session built and run');
const imageSeconds = async (n: number): Promise<number> => {
  const t = performance.now();
  await generator.generate({ ...request, steps: n, onStep: ({ index, total }) => (index === total - 1 ? mark('last UNet step done') : undefined) });
  mark('image decoded');
  return (performance.now() - t) / 1000;
};
const firstImageS = (performance.now() - created) / 1000 + (await imageSeconds(steps));

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const busy = gpuBusyPoller(device);
const full: number[] = [];
const single: number[] = [];
for (let i = 0; i < repeats; i++) {
  full.push(await imageSeconds(steps));
  single.push(await imageSeconds(1));
}
const gpuBusyPercent = busy.stop();
const peakGiB = await memory.stop();
await generator.release();

const imageS = median(full);
const oneStepS = median(single);
const unetStepS = (imageS - oneStepS) / (steps - 1);
const result = {
  bench: 'sampling',
  date: new Date().toISOString().slice(0, 10),
  deviceName: deviceName(device),
  device,
  model,
  dtype: dtype ?? 'default',
  resolution: side,
  guidanceBatch: 2,
  steps,
  repeats,
  imageS: +imageS.toFixed(3),
  unetStepMs: +(unetStepS * 1000).toFixed(1),
  unetStepsPerS: +(1 / unetStepS).toFixed(2),
  textAndVaeMs: +((oneStepS - unetStepS) * 1000).toFixed(1),
  firstImageS: +firstImageS.toFixed(2),
  peakGpuMemoryGiB: peakGiB === undefined ? null : +peakGiB.toFixed(2),
  gpuBusyPercent: gpuBusyPercent === undefined ? null : Math.round(gpuBusyPercent),
  modelFolderWriteS: +writeS.toFixed(1),
};
console.log(JSON.stringify(result));
if (args.json) appendFileSync(args.json, `${JSON.stringify(result)}\n`);
