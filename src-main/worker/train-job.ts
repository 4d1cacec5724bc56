// One training run inside the worker process: the engine's Trainer, with its events turned into
// contract TrainEvents, previews sampled by one Generator per run (created at the first preview,
// fed the trainer's live LoRA), and pause / resume / stop between steps.
//
// Pause works through the trainer's preview hook, which training awaits after a step: the hook's
// `previewEvery` is read every step, so a pause request sets it to 1 and the next step's hook
// waits until resume. (The engine has no pause of its own; see the report in run-manager.ts.)
import { join } from 'node:path';
import type { PreviewImage, RunStatus, TrainEvent } from '../api/contract';
import type { LoraModuleWeights } from '../engine/lora/lora-file';
import { fromKohyaModules } from '../engine/lora/lora-import';
import { chooseProvider } from '../engine/runtime/session';
import { slotSpecOf } from '../engine/sample/lora-slots';
import { encodePng, Generator, PREVIEW_GENERATOR_OPTIONS } from '../engine/sample/txt2img';
import { Trainer, type TrainerHooks, type TrainingModel } from '../engine/train/trainer';
import type { TrainJob } from './protocol';

const SLOT = 'training';

export class TrainJobRunner {
  private readonly trainer: Trainer;
  private readonly hooks: TrainerHooks;
  private pauseRequested = false;
  private resumeWaiter: (() => void) | undefined;
  private baselineDone: boolean;
  private generator: Generator | undefined;
  private status: RunStatus = 'starting';
  private stopping = false;

  constructor(
    private readonly job: TrainJob,
    private readonly post: (event: TrainEvent) => void,
  ) {
    const hasPreviews = job.previews.length > 0;
    // The baseline needs the LoRA's module shapes, known only once the trainer has built its
    // graph: the hook runs after step 1 and samples strength 0 there, which is exactly the base
    // model (strength 0 adds nothing), i.e. step 0. A resumed run has its baseline already.
    this.baselineDone = !hasPreviews || job.settings.resume !== undefined;
    this.hooks = { onPreview: (p) => this.afterStep(p.step, p.lora, p.model), previewEvery: this.cadence() };
    this.trainer = new Trainer(job.settings, this.hooks);
  }

  private cadence(): number {
    if (this.pauseRequested || !this.baselineDone) return 1;
    return this.job.previews.length > 0 ? this.job.previewEvery : 0;
  }

  private setStatus(status: RunStatus, message?: string, extra: { step?: number; out?: string; checkpoint?: string } = {}): void {
    this.status = status;
    this.post({ type: 'status', runId: this.job.runId, status, message, ...extra });
  }

  pause(): void {
    if (this.stopping || this.status === 'paused') return;
    this.pauseRequested = true;
    this.hooks.previewEvery = this.cadence();
  }

  resume(): void {
    this.pauseRequested = false;
    this.hooks.previewEvery = this.cadence();
    const wake = this.resumeWaiter;
    this.resumeWaiter = undefined;
    wake?.();
  }

  /** Ends after the current step: checkpoint and LoRA written, then status 'stopped'. */
  stop(): void {
    this.stopping = true;
    this.trainer.stop();
    this.resume();
  }

  async run(): Promise<void> {
    const { runId } = this.job;
    const t = this.trainer.events;
    let started = false;
    t.on('phase', (e) => this.setStatus(started ? this.status : 'starting', e.message));
    t.on('start', (e) => {
      started = true;
      this.setStatus('running', `training steps ${e.startStep + 1}..${e.totalSteps} on ${e.provider} (${e.images} images, ${e.samplesPerEpoch} samples per epoch)`, { step: e.startStep });
    });
    t.on('step', (e) =>
      this.post({
        type: 'step',
        runId,
        point: { step: e.step, loss: e.loss, smoothed: e.smoothedLoss, lr: e.learningRate },
        totalSteps: e.totalSteps,
        itPerSec: e.stepsPerSecond,
        etaSeconds: Number.isFinite(e.etaSeconds) ? e.etaSeconds : 0,
        memoryGiB: e.rssBytes / 2 ** 30,
      }),
    );
    t.on('checkpoint', (e) => this.post({ type: 'checkpoint', runId, step: e.step, path: e.path }));
    try {
      const result = await this.trainer.run();
      const what = result.stopped ? `Stopped at step ${result.step}` : `Finished ${result.step} steps`;
      this.setStatus(result.stopped ? 'stopped' : 'finished', `${what} in ${result.seconds.toFixed(1)} s. LoRA: ${result.out}; checkpoint: ${result.checkpoint}`, {
        step: result.step,
        out: result.out,
        checkpoint: result.checkpoint,
      });
    } catch (error) {
      this.setStatus('failed', error instanceof Error ? error.message : String(error));
    } finally {
      await this.generator?.release();
    }
  }

  /** The trainer's hook after a step: baseline, previews, and the pause point. */
  private async afterStep(step: number, lora: LoraModuleWeights[], model: TrainingModel): Promise<void> {
    if (!this.baselineDone) {
      await this.renderPreviews(0, lora, 0, model);
      this.baselineDone = true;
    }
    const every = this.job.previewEvery;
    if (every > 0 && step % every === 0 && this.job.previews.length > 0) await this.renderPreviews(step, lora, 1, model);
    if (this.pauseRequested && !this.stopping) {
      this.setStatus('paused', `Paused after step ${step}`, { step });
      await new Promise<void>((wake) => (this.resumeWaiter = wake));
      if (!this.stopping) this.setStatus('running', `Resumed at step ${step}`, { step });
    }
    this.hooks.previewEvery = this.cadence();
  }

  /** Samples the preview prompts with the trainer's own opened model (nothing is loaded twice). */
  private async renderPreviews(step: number, kohyaModules: LoraModuleWeights[], strength: number, { model, description }: TrainingModel): Promise<void> {
    const { settings } = this.job;
    const modules = fromKohyaModules(kohyaModules);
    if (!this.generator) {
      const provider = settings.device === 'cpu' ? 'cpu' : (await chooseProvider(settings.device)).provider;
      this.generator = await Generator.create(model, { ...PREVIEW_GENERATOR_OPTIONS, provider, loras: [slotSpecOf(SLOT, { modules })], modelName: description, cacheDir: join(settings.cacheDir, 'graphs') });
    }
    for (const p of this.job.previews) {
      if (this.stopping) return;
      const started = performance.now();
      const [image] = await this.generator.generate(
        { prompt: p.prompt, seed: p.seed, steps: p.steps, guidance: p.guidance, width: settings.resolution, height: settings.resolution },
        [{ slot: 0, weights: { modules }, strength, name: SLOT }],
      );
      const png = await encodePng(image!);
      const preview: PreviewImage = {
        step,
        prompt: p.prompt,
        seed: p.seed,
        image: `data:image/png;base64,${Buffer.from(png).toString('base64')}`,
        seconds: (performance.now() - started) / 1000,
      };
      this.post({ type: 'preview', runId: this.job.runId, preview });
    }
  }
}
