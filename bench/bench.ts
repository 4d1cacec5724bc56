// `npm run bench`: the real LoRA training step (UNet forward, loss, our backward to the LoRA
// tensors, AdamW) timed on a chosen device. With `--model sd15` or `--model sdxl` it builds the UNet
// at real size from its config with seeded random weights (the compute of the real checkpoint);
// SDXL's step also takes text_embeds [B, 1280] and time ids [B, 6], and 2048-wide text states.
// The default `--model tiny` uses the embedded tiny model, `--model tiny-sdxl` a tiny SDXL (the
// golden tiny-sdxl topology, seeded weights): the CI-machine figures on the CPU.
// `--build-only` builds and serialises the step graph and reports its size, FLOPs and build time
// without weights or a session (so `--model sdxl --device cuda --build-only` checks the real-size
// float16 SDXL graph on a machine without a GPU).
// Prints one JSON object per configuration and a summary array at the end.
//
//   npm run bench -- [--model tiny|tiny-sdxl|sd15|sdxl] [--device cpu|cuda|webgpu] [--batch 1,4]
//                    [--steps 20] [--resolution 512] [--rank 16] [--attention fused|composite]
//                    [--optimization all] [--build-only] [--json FILE] [--steps-per-run 1]
//                    [--previews (peak memory with the trainer's previews beside training)]
//                    [--gradient-checkpointing (attention chunks of at most 64 MiB then)] [--state-on-device (webgpu)] [--attention-chunk-mib 256] [--memory-pattern on|off] [--initializers-outside-arena on|off] [--session-config k=v,...] [--ort-env-log-level info]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { attentionBackward } from '../src-main/engine/autodiff/rules';
import { countFlops } from '../src-main/engine/graph/flops';
import { saveModel, serializeModel } from '../src-main/engine/graph/onnx-model';
import { Graph } from '../src-main/engine/graph/graph';
import * as op from '../src-main/engine/graph/ops';
import { openModelFolder } from '../src-main/engine/io/model-folder';
import { writeSafetensors } from '../src-main/engine/io/safetensors';
import { WeightSource } from '../src-main/engine/io/weights';
import { unetTargets } from '../src-main/engine/lora/targets';
import { ensureEmbeddedModel } from '../src-main/engine/models/embedded-tiny-model';
import { randomWeightsFor } from '../src-main/engine/models/random-weights';
import type { UNet2DConditionConfig } from '../src-main/engine/models/unet-2d-condition';
import { DeviceTensor, Session, setRuntimeLogLevel, type HostTensor, type OptimizationLevel } from '../src-main/engine/runtime/session';
import type { ProviderName } from '../src-main/engine/runtime/providers';
import { NoiseSchedule } from '../src-main/engine/sample/noise-schedule';
import { Rng } from '../src-main/engine/sample/rng';
import { adamwStepValues, DEFAULT_ADAMW } from '../src-main/engine/train/adamw';
import { addedCondShapeOf, backwardOptions, buildTrainStepGraph, type TrainStepSpec } from '../src-main/engine/train/train-step-graph';
import { buildMultiStepTrainGraph } from '../src-main/engine/train/multi-step-graph';
import type { WeightLocator } from '../src-main/engine/nn/params';
import { ShapeOnlyLocator } from '../src-main/engine/nn/shape-only-locator';
import { Generator, PREVIEW_GENERATOR_OPTIONS } from '../src-main/engine/sample/txt2img';
import { deviceName, gpuBusyPoller, gpuMemoryPoller } from './gpu-monitor';
import { ensureRandomModelFolder, requestUNetWeights } from './random-model-folder';
import { SD15, SDXL, TINY_SDXL } from './model-configs';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'tiny' },
    device: { type: 'string', default: 'cpu' },
    batch: { type: 'string' },
    steps: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    resolution: { type: 'string' },
    rank: { type: 'string', default: '16' },
    attention: { type: 'string', default: 'fused' },
    optimization: { type: 'string', default: 'all' },
    precision: { type: 'string' },
    json: { type: 'string' },
    'allow-cpu-fallback': { type: 'boolean', default: false },
    'ort-log-level': { type: 'string', default: '3' },
    'ort-env-log-level': { type: 'string' },
    profile: { type: 'boolean', default: false },
    'steps-per-run': { type: 'string', default: '1' },
    'memory-pattern': { type: 'string' },
    'initializers-outside-arena': { type: 'string' },
    'session-config': { type: 'string', default: '' },
    'gradient-checkpointing': { type: 'boolean', default: false },
    'state-on-device': { type: 'boolean', default: false },
    'attention-chunk-mib': { type: 'string', default: String(attentionBackward.chunkBytes / 2 ** 20) },
    'build-only': { type: 'boolean', default: false },
    previews: { type: 'boolean', default: false },
    'cache-dir': { type: 'string', default: join(process.env.LORA_STUDIO_HOME ?? join(homedir(), '.cache', 'lora-studio'), 'bench') },
  },
});

const H100_DENSE_FP16_TFLOPS = 989;
const MODELS = ['tiny', 'tiny-sdxl', 'sd15', 'sdxl'];
if (!MODELS.includes(args.model!)) throw new Error(`--model must be one of ${MODELS.join(', ')}, got ${args.model}`);
const device = args.device as ProviderName;
const realSize = args.model === 'sd15' || args.model === 'sdxl';
const buildOnly = args['build-only']!;
const dtype = (args.precision ?? (device === 'cpu' ? 'float32' : 'float16')) as 'float32' | 'float16';
const batches = (args.batch ?? '1,4').split(',').map(Number);
const resolution = Number(args.resolution ?? (args.model === 'sdxl' ? 1024 : realSize ? 512 : 64));
const cacheDir = args['cache-dir']!;
// WebGPU: the LoRA weights and moments stay on the device between runs (Session.runOnDevice).
const stateOnDevice = args['state-on-device']! && device === 'webgpu';
attentionBackward.chunkBytes = Number(args['attention-chunk-mib']) * 2 ** 20;
// 'info' shows the CUDA arena's growth ("Extending BFCArena ... rounded_bytes"): what sets the peak.
if (args['ort-env-log-level']) setRuntimeLogLevel(args['ort-env-log-level'] as Parameters<typeof setRuntimeLogLevel>[0]);
mkdirSync(cacheDir, { recursive: true });

/** Node count per op type, most frequent first: where the per-node dispatch cost goes. */
function nodesByOp(graph: { nodes: readonly { op: string; domain: string }[] }): Record<string, number> {
  const counts = new Map<string, number>();
  for (const n of graph.nodes) {
    const key = n.domain ? `${n.domain}:${n.op}` : n.op;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]));
}

/** --build-only: every weight a location in a never-read file (building and serialising only list locations). */
const shapeOnlyWeights = (): WeightLocator => new ShapeOnlyLocator(dtype === 'float16' ? 'float16' : 'float32');

/** A seeded random UNet weight file for `config` in the cache (written once per config and dtype). */
function randomUNetFile(name: string, config: UNet2DConditionConfig): string {
  const dtypeTag = dtype === 'float16' ? 'F16' : 'F32';
  const file = join(cacheDir, `${name}-unet-random-${dtypeTag}.safetensors`);
  if (!existsSync(file)) {
    const t = performance.now();
    const tensors = randomWeightsFor(1234, (p) => requestUNetWeights(p, config), dtypeTag);
    writeSafetensors(file, tensors, { format: 'pt' });
    console.error(`wrote seeded random ${name} UNet weights to ${file} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  return file;
}

/** The UNet config and a weight source: seeded random SD1.5 / SDXL at real size, a tiny SDXL, or the embedded tiny model. */
function prepareModel(): { config: UNet2DConditionConfig; weights: () => WeightLocator; contextDim: number; scheduler: Record<string, unknown> } {
  const sdSchedule = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', num_train_timesteps: 1000, prediction_type: 'epsilon' };
  if (args.model === 'tiny') {
    const model = openModelFolder(ensureEmbeddedModel(join(cacheDir, 'models')));
    const weights = buildOnly ? shapeOnlyWeights : () => openModelFolder(ensureEmbeddedModel(join(cacheDir, 'models'))).unet.weights;
    return { config: model.unet.config, weights, contextDim: model.unet.config.cross_attention_dim as number, scheduler: sdSchedule };
  }
  const config = args.model === 'sd15' ? SD15 : args.model === 'sdxl' ? SDXL : TINY_SDXL;
  const contextDim = config.cross_attention_dim as number; // 768, 2048 (both SDXL encoders), 64
  if (buildOnly) return { config, weights: shapeOnlyWeights, contextDim, scheduler: sdSchedule };
  const file = randomUNetFile(args.model!, config);
  return { config, weights: () => WeightSource.open([file]), contextDim, scheduler: sdSchedule };
}

/**
 * What this process holds on the GPU with a one-node CUDA session (the CUDA context, cuBLAS and
 * cuDNN handles): the part of the peak that is not tensors. PyTorch's peak figures
 * (max_memory_allocated) leave it out.
 */
async function cudaBaselineGiB(): Promise<number | undefined> {
  if (device !== 'cuda') return undefined;
  const g = new Graph('baseline');
  const x = g.input('x', 'float32', [1, 8]);
  g.output(op.relu(x), 'y');
  const probe = await Session.fromGraph(g, { provider: 'cuda' });
  await probe.run({ x: { dtype: 'float32', shape: [1, 8], data: new Float32Array(8) } });
  try {
    const lines = execFileSync('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'], { encoding: 'utf8' }).split('\n');
    const mine = lines.map((l) => l.split(',').map((t) => t.trim())).find(([pid]) => Number(pid) === process.pid);
    return mine ? Number(mine[1]) / 1024 : undefined;
  } finally {
    await probe.release();
  }
}


const randn = (n: number, seed: number): Float32Array => new Rng(seed).normal(n);

/** Prints where the time went, by op type and by node, from onnxruntime's profile trace. */
function summarizeProfile(dir: string, prefix: string, runs: number): void {
  const file = readdirSync(dir).filter((f) => f.startsWith(prefix) && f.endsWith('.json')).sort().pop();
  if (!file) return;
  const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string; provider?: string } }[];
  const byOp = new Map<string, number>();
  const byNode = new Map<string, number>();
  const providers = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const opName = e.args?.op_name ?? '?';
    byOp.set(opName, (byOp.get(opName) ?? 0) + e.dur);
    byNode.set(e.name, (byNode.get(e.name) ?? 0) + e.dur);
    const prov = e.args?.provider ?? '?';
    providers.set(prov, (providers.get(prov) ?? 0) + 1);
  }
  const top = (m: Map<string, number>, n: number): [string, number][] => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, +(v / runs / 1000).toFixed(2)]);
  const total = [...byOp.values()].reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ profile: file, kernelMsPerStep: +(total / runs / 1000).toFixed(1), byOpMsPerStep: top(byOp, 25), topNodesMsPerStep: top(byNode, 25), nodeEventsByProvider: Object.fromEntries(providers) }));
}

async function benchOne(batch: number): Promise<Record<string, unknown>> {
  const model = prepareModel();
  const latent = resolution / 8;
  const schedule = NoiseSchedule.fromConfig(model.scheduler as never);
  const rank = Number(args.rank);
  const addedCond = addedCondShapeOf(model.config); // SDXL: text_embeds [B, 1280], time ids [B, 6]
  const t0 = performance.now();
  const stepsPerRun = Number(args['steps-per-run']);
  const spec: TrainStepSpec = {
    unetConfig: model.config,
    weights: model.weights(),
    build: { dtype, attention: args.attention as 'fused' | 'composite', gradientCheckpointing: args['gradient-checkpointing'] },
    lora: { rank, alpha: rank, targets: unetTargets('attention') },
    shape: { batch, latentHeight: latent, latentWidth: latent, tokens: 77, contextDim: model.contextDim, ...(addedCond ? { addedCond } : {}) },
    loss: { prediction: 'epsilon' },
    alphasCumprod: schedule.alphasCumprod,
    adamw: DEFAULT_ADAMW,
    maxGradNorm: 1,
  };
  const step = stepsPerRun > 1 ? buildMultiStepTrainGraph(spec, stepsPerRun) : buildTrainStepGraph(spec);
  const buildMs = performance.now() - t0;
  const flops = countFlops(step.graph);
  /** What was built, the same in the build-only and the timed results. */
  const built = {
    date: new Date().toISOString().slice(0, 10),
    resolution,
    batch,
    precision: dtype,
    attention: args.attention,
    loraRank: rank,
    stepsPerRun,
    gradientCheckpointing: args['gradient-checkpointing'],
    attentionChunkMiB: (backwardOptions(spec.build).attentionChunkBytes ?? attentionBackward.chunkBytes) / 2 ** 20, // what the step used
  };
  if (buildOnly) {
    const t1 = performance.now();
    const proto = serializeModel(step.graph);
    const result = {
      model: args.model,
      buildOnly: true,
      ...built,
      loraParameters: step.layout.size,
      loraModules: step.layout.tensors.length / 2,
      inputs: step.inputs,
      nodes: step.graph.nodes.length,
      nodesByOp: nodesByOp(step.graph),
      protoMiB: +(proto.bytes.byteLength / 2 ** 20).toFixed(1),
      buildS: +(buildMs / 1000).toFixed(2),
      serializeS: +((performance.now() - t1) / 1000).toFixed(2),
      tflopPerStep: +(flops / stepsPerRun / 1e12).toFixed(4),
      peakHostRssGiB: +(process.resourceUsage().maxRSS / 2 ** 20).toFixed(2),
    };
    console.log(JSON.stringify(result));
    return result;
  }
  const modelPath = saveModel(step.graph, join(cacheDir, 'graphs'), `${args.model}-b${batch}-${resolution}-${dtype}-${args.attention}-k${stepsPerRun}`);
  const serializeMs = performance.now() - t0 - buildMs;
  const baselineGiB = await cudaBaselineGiB();
  const poller = gpuMemoryPoller(device);
  const session = await Session.create(modelPath, {
    provider: device,
    optimization: args.optimization as OptimizationLevel,
    forbidCpuFallback: device !== 'cpu' && !args['allow-cpu-fallback'],
    cudnnConvAlgoSearch: 'EXHAUSTIVE',
    ...(args['memory-pattern'] ? { memoryPattern: args['memory-pattern'] === 'on' } : {}),
    ...(args['initializers-outside-arena'] ? { initializersOutsideArena: args['initializers-outside-arena'] === 'on' } : {}),
    ...(stateOnDevice ? { outputsOnDevice: [step.state.newParams, step.state.newM, step.state.newV] } : {}),
    config: Object.fromEntries(args['session-config']!.split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string])),
    logSeverityLevel: Number(args['ort-log-level']) as 0 | 1 | 2 | 3 | 4,
    ...(args.profile ? { profilePrefix: join(cacheDir, `profile-b${batch}`) } : {}),
  });
  const sessionMs = performance.now() - t0 - buildMs - serializeMs;

  const f32 = (shape: readonly number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
  const rows = batch * stepsPerRun; // K batches stacked
  const latentShape = [rows, 4, latent, latent];
  const elems = latentShape.reduce((a, b) => a * b, 1);
  const feeds: Record<string, HostTensor | DeviceTensor> = {
    [step.inputs.latents]: f32(latentShape, randn(elems, 1)),
    [step.inputs.noise]: f32(latentShape, randn(elems, 2)),
    [step.inputs.timesteps]: { dtype: 'int64', shape: [rows], data: BigInt64Array.from({ length: rows }, (_, i) => BigInt((i * 397 + 11) % 1000)) },
    [step.inputs.encoderHiddenStates]: f32([rows, 77, model.contextDim], randn(rows * 77 * model.contextDim, 3)),
  };
  if (addedCond) {
    // SDXL micro-conditioning of a square image at the bench resolution, uncropped.
    feeds[step.inputs.textEmbeds!] = f32([rows, addedCond.textEmbedsDim], randn(rows * addedCond.textEmbedsDim, 4));
    feeds[step.inputs.timeIds!] = f32([rows, 6], Float32Array.from({ length: rows * 6 }, (_, i) => [resolution, resolution, 0, 0, resolution, resolution][i % 6]!));
  }
  if (step.lossScaling) feeds[step.lossScaling.scale] = f32([], Float32Array.of(1024));
  const size = step.layout.size;
  const params = new Float32Array(size);
  for (const t of step.layout.tensors) if (t.name.includes('lora_down')) params.set(randn(t.size, t.offset).map((v) => v * 0.01), t.offset);
  feeds[step.state.params] = f32([size], params);
  feeds[step.state.m] = f32([size], new Float32Array(size));
  feeds[step.state.v] = f32([size], new Float32Array(size));
  const stateBytes = 3 * size * 4;
  // With onnxruntime's log on, each run's end is logged too: the arena's extension lines can then be placed in a step.
  const markRun = (t: number): void => {
    if (args['ort-env-log-level']) console.error(`${new Date().toISOString()} [bench] run of steps ${t}..${t + stepsPerRun - 1} done`);
  };
  /** One session run: `stepsPerRun` optimizer steps starting at step t. */
  const runStep = async (t: number): Promise<number> => {
    const perStep = Array.from({ length: stepsPerRun }, (_, k) => adamwStepValues(DEFAULT_ADAMW, 1e-4, t + k));
    for (const name of Object.keys(perStep[0])) {
      const values = Float32Array.from(perStep, (sv) => sv[name]);
      feeds[name] = stepsPerRun > 1 ? f32([stepsPerRun], values) : f32([], values);
    }
    if (stateOnDevice) {
      const previous = [feeds[step.state.params], feeds[step.state.m], feeds[step.state.v]];
      const { host, device: onDevice } = await session.runOnDevice(feeds);
      for (const t of previous) if (t instanceof DeviceTensor) t.dispose();
      feeds[step.state.params] = onDevice[step.state.newParams];
      feeds[step.state.m] = onDevice[step.state.newM];
      feeds[step.state.v] = onDevice[step.state.newV];
      const lossOut = host[step.outputs.loss].data as Float32Array;
      markRun(t);
      return lossOut[lossOut.length - 1];
    }
    const r = await session.run(feeds as Record<string, HostTensor>);
    markRun(t);
    feeds[step.state.params] = r[step.state.newParams];
    feeds[step.state.m] = r[step.state.newM];
    feeds[step.state.v] = r[step.state.newV];
    const lossOut = r[step.outputs.loss].data as Float32Array;
    return lossOut[lossOut.length - 1];
  };
  let t = 1;
  let loss = await runStep(t);
  const firstStepMs = performance.now() - t0;
  const warmup = Number(args.warmup);
  for (let i = 0; i < warmup; i++) loss = await runStep((t += stepsPerRun));
  const runs = Math.max(1, Math.round(Number(args.steps) / stepsPerRun));
  const times: number[] = [];
  const busy = gpuBusyPoller(device);
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    loss = await runStep((t += stepsPerRun));
    times.push((performance.now() - s) / stepsPerRun);
  }
  const gpuBusyPercent = busy.stop();
  const peakGpuGiB = await poller.stop();
  // With the state on the device, read it back as the trainer would for a checkpoint: it must
  // arrive whole, finite, and moved from where it started.
  let stateDownload: Record<string, number | boolean> | undefined;
  if (stateOnDevice) {
    const s0 = performance.now();
    const downloaded = [];
    for (const name of [step.state.params, step.state.m, step.state.v]) downloaded.push((await session.download(feeds[name] as DeviceTensor)).data as Float32Array);
    const [p, m] = downloaded;
    let maxChange = 0;
    for (let i = 0; i < size; i++) maxChange = Math.max(maxChange, Math.abs(p[i] - params[i]));
    stateDownload = { ms: +(performance.now() - s0).toFixed(1), complete: downloaded.every((d) => d.length === size), finite: downloaded.every((d) => d.every(Number.isFinite)), maxParamChange: maxChange, mNonZero: m.some((x) => x !== 0) };
  }
  const preview = args.previews ? await previewBesideTraining(() => runStep((t += stepsPerRun)), resolution) : undefined;
  if (args.profile) {
    session.endProfiling();
    summarizeProfile(join(cacheDir), `profile-b${batch}`, (runs + warmup + 1) * stepsPerRun);
  }
  await session.release();
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)] / 1000;
  const itPerSec = 1 / median;
  const result = {
    model: args.model === 'tiny' ? 'embedded tiny sd15' : `${args.model} (seeded random weights)`,
    device,
    deviceName: deviceName(device),
    ...built,
    memoryPattern: args['memory-pattern'] ?? 'default',
    initializersOutsideArena: args['initializers-outside-arena'] ?? 'default',
    sessionConfig: args['session-config'],
    nodes: step.graph.nodes.length,
    itPerSec: +itPerSec.toFixed(3),
    imagesPerSec: +(itPerSec * batch).toFixed(3),
    medianStepMs: +(median * 1000).toFixed(1),
    timeToFirstStepS: +(firstStepMs / 1000).toFixed(2),
    buildS: +(buildMs / 1000).toFixed(2),
    serializeS: +(serializeMs / 1000).toFixed(2),
    sessionS: +(sessionMs / 1000).toFixed(2),
    peakGpuMemoryGiB: peakGpuGiB === undefined ? null : +peakGpuGiB.toFixed(2),
    gpuBusyPercent: gpuBusyPercent === undefined ? null : +gpuBusyPercent.toFixed(1),
    ...(preview ? { withPreview: preview } : {}),
    cudaBaselineGiB: baselineGiB === undefined ? null : +baselineGiB.toFixed(2),
    peakHostRssGiB: +(process.resourceUsage().maxRSS / 2 ** 20).toFixed(2),
    stateOnDevice,
    ...(stateDownload ? { stateDownload } : {}),
    hostStateMiBPerStep: stateOnDevice ? 0 : +((2 * stateBytes) / stepsPerRun / 2 ** 20).toFixed(1),
    tflopPerStep: +(flops / stepsPerRun / 1e12).toFixed(4),
    achievedTflops: +((flops / stepsPerRun * itPerSec) / 1e12).toFixed(2),
    fractionOfH100Fp16Peak: device === 'cuda' ? +((flops / stepsPerRun * itPerSec) / 1e12 / H100_DENSE_FP16_TFLOPS).toFixed(4) : null,
    finalLoss: loss,
  };
  console.log(JSON.stringify(result));
  return result;
}

/**
 * --previews: what the trainer's previews add. With the training session still held, a Generator
 * (the trainer's preview options: GPU defaults, the VAE on the CPU) opens the model at real size
 * (bench/random-model-folder.ts: seeded random text encoders, UNet and VAE) and makes one 20-step
 * image at the training resolution, as the trainer's previews are; then one more training step
 * runs. The peak over all that is what a training run with previews needs.
 */
async function previewBesideTraining(trainStep: () => Promise<number>, side: number): Promise<Record<string, number | string | null>> {
  const folder = args.model === 'sd15' || args.model === 'sdxl' ? ensureRandomModelFolder(args.model, cacheDir) : ensureEmbeddedModel(join(cacheDir, 'models'));
  const opened = openModelFolder(folder);
  const poller = gpuMemoryPoller(device);
  const started = performance.now();
  const generator = await Generator.create(opened, { ...PREVIEW_GENERATOR_OPTIONS, provider: device, cacheDir: join(cacheDir, 'graphs') });
  await generator.generate({ prompt: 'a photo', seed: 1, steps: 20, guidance: 7, width: side, height: side });
  const imageS = (performance.now() - started) / 1000;
  await trainStep();
  const peak = await poller.stop();
  await generator.release();
  return { previewSize: side, firstPreviewImageS: +imageS.toFixed(2), peakGpuMemoryGiB: peak === undefined ? null : +peak.toFixed(2) };
}

const results: Record<string, unknown>[] = [];
for (const batch of batches) results.push(await benchOne(batch));
if (args.json) writeFileSync(args.json, `${JSON.stringify(results, null, 2)}\n`);
