// The Generate screen's state: the request form, and the base image next to the LoRA image drawn
// with the same seed (two generate.run calls: without the LoRA, then with it).
import type { GenerateRequestView, GeneratedImageView } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { Action } from './action.svelte';

export const SAMPLERS: readonly GenerateRequestView['sampler'][] = ['DDIM', 'Euler', 'Euler a', 'DPM++ 2M', 'DPM++ 2M Karras'];

export interface GenerateForm {
  prompt: string;
  negativePrompt: string;
  seed: number;
  steps: number;
  guidance: number;
  sampler: GenerateRequestView['sampler'];
  /** null: the model's native size. */
  width: number | null;
  height: number | null;
  clipSkip: number;
  lora: string;
  strength: number;
}

const DEFAULT_FORM: GenerateForm = {
  prompt: '',
  negativePrompt: '',
  seed: 1,
  steps: 20,
  guidance: 7,
  sampler: 'Euler a',
  width: null,
  height: null,
  clipSkip: 1,
  lora: '',
  strength: 1,
};

export interface GenerateContext {
  modelId(): string;
  modelResolution(): number;
}

export class GenerateState {
  #form = $state.raw<GenerateForm>(DEFAULT_FORM);
  #base = $state.raw<GeneratedImageView | null>(null);
  #withLora = $state.raw<GeneratedImageView | null>(null);
  /** The LoRA and strength the shown LoRA image was drawn with. */
  #drawnWith = $state.raw<{ lora: string; strength: number } | null>(null);

  readonly generating = new Action();

  constructor(
    private readonly api: ApiClient,
    private readonly context: GenerateContext,
  ) {}

  get form(): GenerateForm {
    return this.#form;
  }
  get width(): number {
    return this.#form.width ?? this.context.modelResolution();
  }
  get height(): number {
    return this.#form.height ?? this.context.modelResolution();
  }
  get base(): GeneratedImageView | null {
    return this.#base;
  }
  get withLora(): GeneratedImageView | null {
    return this.#withLora;
  }
  get drawnWith(): { lora: string; strength: number } | null {
    return this.#drawnWith;
  }

  update(patch: Partial<GenerateForm>): void {
    this.#form = { ...this.#form, ...patch };
  }

  randomSeed(): void {
    this.update({ seed: Math.floor(Math.random() * 2 ** 31) });
  }

  /** The base image, then (when a LoRA file is set) the same seed with the LoRA. */
  async generate(): Promise<void> {
    const f = this.#form;
    if (!f.prompt.trim()) {
      this.generating.fail('Type a prompt first.');
      return;
    }
    if (!Number.isInteger(f.seed) || f.seed < 0) {
      this.generating.fail('Seed must be a whole number of at least 0.');
      return;
    }
    const base: GenerateRequestView = {
      model: this.context.modelId(),
      prompt: f.prompt,
      negativePrompt: f.negativePrompt,
      seed: f.seed,
      steps: f.steps,
      guidance: f.guidance,
      width: this.width,
      height: this.height,
      sampler: f.sampler,
      clipSkip: f.clipSkip,
      loras: [],
    };
    const lora = f.lora.trim();
    await this.generating.run(async () => {
      this.#base = null;
      this.#withLora = null;
      this.#drawnWith = null;
      const plain = await this.api.call('generate.run', base);
      this.#base = plain.images[0] ?? null;
      if (!lora) return;
      const adapted = await this.api.call('generate.run', { ...base, loras: [{ path: lora, strength: f.strength }] });
      this.#withLora = adapted.images[0] ?? null;
      this.#drawnWith = { lora, strength: f.strength };
    });
  }
}
