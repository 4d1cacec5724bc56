// `lora-studio train`: trains a LoRA from a folder of captioned images (the main job).
// Ctrl-C stops after the current step with a checkpoint and the LoRA so far; a second Ctrl-C quits at once.
import { parseArgs } from 'node:util';
import { resolveTrainSettings, TrainSettingsError, DEFAULT_TRAIN_SETTINGS, type TrainSettingsInput } from '../engine/train/settings';
import { Trainer } from '../engine/train/trainer';
import type { TrainStepEvent } from '../engine/train/events';
import { CliUsageError, type CliCommand } from './command';

const d = DEFAULT_TRAIN_SETTINGS;

export const trainCommand: CliCommand = {
  summary: 'Train a LoRA from a folder of captioned images',
  usage: `lora-studio train --images <folder> --out <file.safetensors> [options]

  --images <folder>        images with .txt/.caption sidecars; kohya "N_name" folders repeat N times
  --out <file>             the LoRA to write (.safetensors)
  --model <dir|file|url>   diffusers model folder (SD 1.x, 2.x or SDXL), .safetensors checkpoint or
                           URL to one (default: the embedded tiny SD 1.x model, for trying things out)
  --models-dir <dir>       where models live (default $LORA_STUDIO_HOME/models or ~/.cache/lora-studio/models)
  --cache-dir <dir>        latent / text-embedding cache (default $LORA_STUDIO_HOME/cache)
  --rank <n>               LoRA rank (default ${d.rank})
  --alpha <x>              LoRA alpha; scale = alpha / rank (default ${d.alpha})
  --targets <set>          attention | transformer | transformer+conv (default ${d.targets})
  --steps <n>              optimizer steps (default ${d.steps})
  --lr <x>                 learning rate (default ${d.lr})
  --lr-schedule <name>     constant | constant_with_warmup | cosine | linear (default ${d.lrSchedule})
  --warmup-steps <n>       learning-rate warmup (default ${d.warmupSteps})
  --batch <n>              images per step (default ${d.batch})
  --grad-accum <n>         micro-batches per optimizer step (default ${d.gradAccum})
  --max-grad-norm <x>      gradient-norm clipping, 0 = off (default ${d.maxGradNorm})
  --weight-decay <x>       AdamW weight decay (default ${d.weightDecay})
  --resolution <px>        training resolution (default: the model's native size: 512 for SD 1.5,
                           768 for SD 2.x-768, 1024 for SDXL, ${d.resolution} for the embedded tiny model)
  --bucket-step <px>       aspect-bucket side step (default ${d.bucketStep})
  --min-snr-gamma <x>      min-SNR weighting, 0 = off (default ${d.minSnrGamma})
  --noise-offset <x>       noise offset (default ${d.noiseOffset})
  --clip-skip <n>          1 = last CLIP layer, 2 = penultimate (default ${d.clipSkip})
  --train-text-encoder [all|1|2]
                           also train a LoRA on the CLIP text encoder (it then runs every step):
                           all (the default; SDXL: both), or on SDXL only 1 (text_encoder,
                           lora_te1) or 2 (text_encoder_2, lora_te2); the other one stays frozen
                           and cached
  --te-lr <x>              the text encoder LoRA's learning rate (default: --lr)
  --gradient-checkpointing less GPU memory, ~10% slower: recompute each UNet block's activations in
                           the backward pass (same losses; a run may be resumed with it on or off)
  --trigger <word>         put in front of every caption
  --seed <n>               same seed, same data: same losses (default ${d.seed})
  --save-every <n>         checkpoint every n steps, 0 = at the end only (default ${d.saveEvery})
  --checkpoint <file>      checkpoint path (default <out>.checkpoint.safetensors)
  --resume <checkpoint>    continue a run from its checkpoint
  --format <f>             kohya (A1111, ComfyUI) | diffusers (default ${d.format})
  --precision <p>          fp16 | fp32 weights in the file (default ${d.precision})
  --device <d>             cpu | cuda | dml | webgpu (default ${d.device})
  --compute-precision <p>  auto | float32 | float16: the frozen model's precision; auto = float16 on
                           GPUs (float32 LoRA weights, dynamic loss scaling), float32 on the CPU
  --steps-per-run <n>      several optimizer steps per GPU run: faster on GPUs, more memory (default
                           ${d.stepsPerRun}; same losses; UNet-only training without --grad-accum)
  --log-every <n>          progress every n steps (default: 1 on a terminal, 10 otherwise)
  --title <text>           title in the file's metadata (default: the output file name)`,

  async run(args) {
    const values = parseCliArgs(args);
    const input = settingsFromArgs(values);
    let settings;
    try {
      settings = resolveTrainSettings(input);
    } catch (error) {
      if (error instanceof TrainSettingsError) throw new CliUsageError(error.message);
      throw error;
    }
    const trainer = new Trainer(settings);
    const tty = Boolean(process.stdout.isTTY);
    const progress = new ProgressLine(tty);
    const log = (line: string): void => progress.log(line);

    trainer.events.on('phase', (e) => log(e.message));
    trainer.events.on('problem', (p) => log(`skipped or flagged: ${p.message}`));
    trainer.events.on('cache', (e) => log(`cache: ${e.hits} reused, ${e.misses} computed (${e.dir})`));
    trainer.events.on('start', (e) =>
      log(`${e.images} image(s), ${e.samplesPerEpoch} sample(s) per epoch, bucket(s) ${e.buckets.join(', ')}; steps ${e.startStep + 1}..${e.totalSteps}${e.resumedFrom ? ` (resumed from ${e.resumedFrom})` : ''}`),
    );
    const logEvery = input.logEvery ?? (tty ? 1 : 10);
    trainer.events.on('step', (e) => {
      if (tty) progress.update(stepLine(e));
      else if (e.step % logEvery === 0 || e.step === e.totalSteps) log(stepLine(e));
    });
    trainer.events.on('checkpoint', (e) => log(`checkpoint at step ${e.step}: ${e.path}`));

    let interrupts = 0;
    const onSigint = (): void => {
      interrupts++;
      if (interrupts === 1) {
        log(`stopping after this ${settings.stepsPerRun > 1 ? `run of ${settings.stepsPerRun} steps` : 'step'} (Ctrl-C again to quit without saving)...`);
        trainer.stop();
      } else {
        process.exit(130);
      }
    };
    process.on('SIGINT', onSigint);
    try {
      const result = await trainer.run();
      progress.finish();
      console.log(
        `${result.stopped ? 'Stopped' : 'Done'} at step ${result.step} in ${result.seconds.toFixed(1)} s. LoRA: ${result.out}` +
          (result.stopped ? `\nResume with: --resume ${result.checkpoint}` : ''),
      );
      return result.stopped ? 130 : 0;
    } finally {
      progress.finish();
      process.off('SIGINT', onSigint);
    }
  },
};

function stepLine(e: TrainStepEvent): string {
  const width = 24;
  const filled = Math.round((width * e.step) / e.totalSteps);
  const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
  const eta = Number.isFinite(e.etaSeconds) ? `${Math.ceil(e.etaSeconds)}s` : '?';
  return `[${bar}] step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} avg ${e.smoothedLoss.toFixed(4)} lr ${e.learningRate.toExponential(2)} ${e.stepsPerSecond.toFixed(1)} it/s eta ${eta} rss ${Math.round(e.rssBytes / 2 ** 20)} MiB`;
}

/** One updating line on a terminal; other lines print above it. */
class ProgressLine {
  private active = false;
  constructor(private readonly tty: boolean) {}
  update(line: string): void {
    process.stdout.write(`\r\x1b[2K${line}`);
    this.active = true;
  }
  log(line: string): void {
    if (this.tty && this.active) process.stdout.write('\r\x1b[2K');
    console.log(line);
    this.active = false;
  }
  finish(): void {
    if (this.active) process.stdout.write('\n');
    this.active = false;
  }
}

type Values = ReturnType<typeof parseCliArgs>;

const TEXT_ENCODER_CHOICES = ['all', '1', '2'] as const;

/**
 * `--train-text-encoder` alone trains all text encoders; `--train-text-encoder 1` (or `=1`) picks
 * one. parseArgs has no options with an optional value, so the value is taken out here first.
 */
function takeTextEncoderChoice(args: string[]): { rest: string[]; textEncoders: TrainSettingsInput['textEncoders'] } {
  const rest: string[] = [];
  let given: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith('--train-text-encoder=')) {
      given = arg.slice('--train-text-encoder='.length);
      rest.push('--train-text-encoder');
      continue;
    }
    rest.push(arg);
    if (arg === '--train-text-encoder' && i + 1 < args.length && !args[i + 1].startsWith('-')) given = args[++i];
  }
  if (given === undefined) return { rest, textEncoders: undefined };
  const choice = TEXT_ENCODER_CHOICES.find((c) => c === given.trim().toLowerCase());
  if (!choice) throw new CliUsageError(`--train-text-encoder takes all, 1 or 2 (which text encoders to train), got "${given}".`);
  return { rest, textEncoders: choice };
}

function parseCliArgs(args: string[]) {
  const string = { type: 'string' } as const;
  const { rest, textEncoders } = takeTextEncoderChoice(args);
  try {
    const { values } = parseArgs({
      args: rest,
      options: {
        images: string, out: string, model: string, 'models-dir': string, 'cache-dir': string, rank: string, alpha: string,
        targets: string, steps: string, lr: string, 'lr-schedule': string, 'warmup-steps': string, batch: string,
        'grad-accum': string, 'max-grad-norm': string, 'weight-decay': string, resolution: string, 'bucket-step': string,
        'min-snr-gamma': string, 'noise-offset': string, 'clip-skip': string, trigger: string, seed: string,
        'save-every': string, checkpoint: string, resume: string, format: string, precision: string, device: string,
        'log-every': string, title: string, 'compute-precision': string, 'train-text-encoder': { type: 'boolean' }, 'te-lr': string,
        'gradient-checkpointing': { type: 'boolean' }, 'steps-per-run': string,
      },
      allowPositionals: false,
      strict: true,
    });
    return { ...values, textEncoders };
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
}

function settingsFromArgs(v: Values): TrainSettingsInput {
  if (!v.images) throw new CliUsageError('--images <folder> is required.');
  if (!v.out) throw new CliUsageError('--out <file.safetensors> is required.');
  const num = (flag: string, value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new CliUsageError(`--${flag} must be a number, got "${value}".`);
    return n;
  };
  return {
    images: v.images,
    out: v.out,
    model: v.model,
    modelsDir: v['models-dir'],
    cacheDir: v['cache-dir'],
    rank: num('rank', v.rank),
    alpha: num('alpha', v.alpha),
    targets: v.targets as TrainSettingsInput['targets'],
    steps: num('steps', v.steps),
    lr: num('lr', v.lr),
    lrSchedule: v['lr-schedule'] as TrainSettingsInput['lrSchedule'],
    warmupSteps: num('warmup-steps', v['warmup-steps']),
    batch: num('batch', v.batch),
    gradAccum: num('grad-accum', v['grad-accum']),
    maxGradNorm: num('max-grad-norm', v['max-grad-norm']),
    weightDecay: num('weight-decay', v['weight-decay']),
    resolution: num('resolution', v.resolution),
    bucketStep: num('bucket-step', v['bucket-step']),
    minSnrGamma: num('min-snr-gamma', v['min-snr-gamma']),
    noiseOffset: num('noise-offset', v['noise-offset']),
    clipSkip: num('clip-skip', v['clip-skip']),
    trainTextEncoder: v['train-text-encoder'],
    textEncoders: v.textEncoders,
    textEncoderLr: num('te-lr', v['te-lr']),
    gradientCheckpointing: v['gradient-checkpointing'],
    trigger: v.trigger,
    seed: num('seed', v.seed),
    saveEvery: num('save-every', v['save-every']),
    checkpoint: v.checkpoint,
    resume: v.resume,
    format: v.format as TrainSettingsInput['format'],
    precision: v.precision as TrainSettingsInput['precision'],
    device: v.device as TrainSettingsInput['device'],
    computePrecision: v['compute-precision'] as TrainSettingsInput['computePrecision'],
    stepsPerRun: num('steps-per-run', v['steps-per-run']),
    logEvery: num('log-every', v['log-every']),
    title: v.title,
  };
}
