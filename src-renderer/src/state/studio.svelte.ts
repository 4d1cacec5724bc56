// App-wide state: what the back end reported about itself, and which screen is showing.
import type { AppInfo } from '../../../src-main/api/contract';
import type { ApiClient } from '../lib/api-client';
import { SCREENS, type ScreenId } from '../screens/screens';

export class StudioState {
  #info = $state.raw<AppInfo | null>(null);
  #loadError = $state.raw<string | null>(null);
  #screen = $state.raw<ScreenId>(SCREENS[0].id);
  #roots = $state.raw<string[]>([]);

  constructor(readonly api: ApiClient) {}

  get info(): AppInfo | null {
    return this.#info;
  }
  get loadError(): string | null {
    return this.#loadError;
  }
  get screen(): ScreenId {
    return this.#screen;
  }
  get roots(): string[] {
    return this.#roots;
  }

  /** Fetches app.info and the opened folders, and follows later changes to the folders. */
  async load(): Promise<void> {
    this.api.on('fs.rootsChanged', ({ roots }) => {
      this.#roots = roots;
    });
    try {
      const [info, { roots }] = await Promise.all([this.api.call('app.info'), this.api.call('fs.roots')]);
      this.#info = info;
      this.#roots = roots;
      this.#loadError = null;
    } catch (err) {
      this.#loadError = err instanceof Error ? err.message : String(err);
    }
  }

  show(screen: ScreenId): void {
    this.#screen = screen;
  }
}
