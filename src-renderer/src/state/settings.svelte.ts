// The Settings screen's state: the studio's device and folders as the back end keeps them.
import type { StudioSettings } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { Action } from './action.svelte';

export class SettingsState {
  #saved = $state.raw<StudioSettings | null>(null);
  #draft = $state.raw<StudioSettings | null>(null);

  readonly loading = new Action();
  readonly saving = new Action();

  constructor(private readonly api: ApiClient) {}

  /** What the back end has. */
  get saved(): StudioSettings | null {
    return this.#saved;
  }
  /** What the form shows. */
  get draft(): StudioSettings | null {
    return this.#draft;
  }
  get dirty(): boolean {
    const a = this.#saved;
    const b = this.#draft;
    return !!a && !!b && (a.device !== b.device || a.modelsDir !== b.modelsDir || a.cacheDir !== b.cacheDir);
  }

  async load(): Promise<void> {
    const settings = await this.loading.run(() => this.api.call('settings.get'));
    if (settings) this.#saved = this.#draft = settings;
  }

  update(patch: Partial<StudioSettings>): void {
    if (this.#draft) this.#draft = { ...this.#draft, ...patch };
  }

  revert(): void {
    this.#draft = this.#saved;
  }

  async save(): Promise<boolean> {
    const draft = this.#draft;
    const saved = this.#saved;
    if (!draft || !saved) return false;
    const patch: Partial<StudioSettings> = {};
    if (draft.device !== saved.device) patch.device = draft.device;
    if (draft.modelsDir.trim() !== saved.modelsDir) patch.modelsDir = draft.modelsDir.trim();
    if (draft.cacheDir.trim() !== saved.cacheDir) patch.cacheDir = draft.cacheDir.trim();
    const result = await this.saving.run(() => this.api.call('settings.set', patch));
    if (!result) return false;
    this.#saved = this.#draft = result;
    return true;
  }
}
