// The Export screen's state: the LoRA file to export, its metadata, the export settings, and the
// merge of the LoRA into the chosen model as a new checkpoint.
import type { ExportRequestView } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { basename, dirname, joinPath, stem } from '../lib/paths';
import { Action } from './action.svelte';

export interface LoraMetadata {
  metadata: Record<string, string>;
  modules: number;
  format: string;
}

export class ExportState {
  #lora = $state.raw('');
  #format = $state.raw<ExportRequestView['format']>('kohya');
  #precision = $state.raw<ExportRequestView['precision']>('fp16');
  #out = $state.raw('');
  #metadata = $state.raw<LoraMetadata | null>(null);
  #metadataFor = $state.raw<string | null>(null);
  #exported = $state.raw<{ path: string; metadata: Record<string, string> } | null>(null);
  #mergeStrength = $state.raw(1);
  #mergeOut = $state.raw('');
  #merged = $state.raw<string | null>(null);

  readonly reading = new Action();
  readonly exporting = new Action();
  readonly merging = new Action();

  constructor(
    private readonly api: ApiClient,
    private readonly modelId: () => string,
  ) {}

  get lora(): string {
    return this.#lora;
  }
  get format(): ExportRequestView['format'] {
    return this.#format;
  }
  get precision(): ExportRequestView['precision'] {
    return this.#precision;
  }
  get outInput(): string {
    return this.#out;
  }
  /** `<lora>-<format>-<precision>.safetensors` next to the LoRA, until the user types a path. */
  get defaultOut(): string {
    const lora = this.#lora.trim();
    return lora ? joinPath(dirname(lora), `${stem(lora)}-${this.#format}-${this.#precision}.safetensors`) : '';
  }
  get out(): string {
    return this.#out.trim() || this.defaultOut;
  }
  get metadata(): LoraMetadata | null {
    return this.#metadataFor === this.#lora.trim() ? this.#metadata : null;
  }
  get exported(): { path: string; metadata: Record<string, string> } | null {
    return this.#exported;
  }
  get mergeStrength(): number {
    return this.#mergeStrength;
  }
  get mergeOutInput(): string {
    return this.#mergeOut;
  }
  get defaultMergeOut(): string {
    const lora = this.#lora.trim();
    if (!lora) return '';
    const model = this.modelId();
    const modelName = model === 'embedded' ? 'tiny-sd15' : stem(basename(model));
    return joinPath(dirname(lora), `${modelName}-with-${stem(lora)}.safetensors`);
  }
  get mergeOut(): string {
    return this.#mergeOut.trim() || this.defaultMergeOut;
  }
  get merged(): string | null {
    return this.#merged;
  }

  /** Chooses the LoRA file; reads its metadata when asked to (picking from the list does). */
  async setLora(path: string, readMetadata = false): Promise<void> {
    this.#lora = path;
    this.#exported = null;
    this.#merged = null;
    if (readMetadata) await this.readMetadata();
  }
  setFormat(format: ExportRequestView['format']): void {
    this.#format = format;
  }
  setPrecision(precision: ExportRequestView['precision']): void {
    this.#precision = precision;
  }
  setOut(path: string): void {
    this.#out = path;
  }
  setMergeStrength(strength: number): void {
    this.#mergeStrength = strength;
  }
  setMergeOut(path: string): void {
    this.#mergeOut = path;
  }

  async readMetadata(): Promise<void> {
    const lora = this.#lora.trim();
    if (!lora) {
      this.reading.fail('Choose a LoRA file first.');
      return;
    }
    const read = await this.reading.run(() => this.api.call('export.metadata', { lora }));
    if (!read) return;
    this.#metadata = read;
    this.#metadataFor = lora;
  }

  async exportLora(): Promise<void> {
    const lora = this.#lora.trim();
    if (!lora) {
      this.exporting.fail('Choose a LoRA file first.');
      return;
    }
    const request: ExportRequestView = { lora, format: this.#format, precision: this.#precision, out: this.out };
    const done = await this.exporting.run(() => this.api.call('export.lora', request));
    if (done) this.#exported = done;
  }

  async merge(): Promise<void> {
    const lora = this.#lora.trim();
    if (!lora) {
      this.merging.fail('Choose a LoRA file first.');
      return;
    }
    const strength = this.#mergeStrength;
    if (!Number.isFinite(strength)) {
      this.merging.fail('Strength must be a number.');
      return;
    }
    const request = { model: this.modelId(), lora, strength, out: this.mergeOut };
    const done = await this.merging.run(() => this.api.call('export.merge', request));
    if (done) this.#merged = done.path;
  }
}
