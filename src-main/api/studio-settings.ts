// The studio's own folders and preferences: models, cache and projects under $LORA_STUDIO_HOME
// (or ~/.cache/lora-studio), kept in <home>/settings.json (written atomically). These folders are
// always open to the PathGuard; a new models or cache folder must itself lie in an opened folder,
// so settings cannot widen what the API may touch.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../engine/io/atomic-write';
import { loraStudioHome } from '../engine/train/settings';
import type { ExecutionProvider, StudioSettings } from './contract';
import { ApiError } from './errors';
import type { PathGuard } from './path-guard';

const DEVICES: readonly ExecutionProvider[] = ['cuda', 'dml', 'webgpu', 'cpu'];

export class StudioSettingsStore {
  readonly home: string;
  readonly projectsDir: string;
  private current: StudioSettings;

  constructor(
    private readonly guard: PathGuard,
    home = loraStudioHome(),
  ) {
    this.home = home;
    this.projectsDir = join(home, 'projects');
    const defaults: StudioSettings = { device: 'cpu', modelsDir: join(home, 'models'), cacheDir: join(home, 'cache') };
    this.current = { ...defaults, ...this.readFile() };
    for (const dir of [this.current.modelsDir, this.current.cacheDir, this.projectsDir]) {
      mkdirSync(dir, { recursive: true });
      guard.allow(dir);
    }
    this.current.modelsDir = guard.allow(this.current.modelsDir);
    this.current.cacheDir = guard.allow(this.current.cacheDir);
  }

  private get file(): string {
    return join(this.home, 'settings.json');
  }

  private readFile(): Partial<StudioSettings> {
    if (!existsSync(this.file)) return {};
    try {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as Partial<StudioSettings>;
      const out: Partial<StudioSettings> = {};
      if (typeof parsed.device === 'string' && DEVICES.includes(parsed.device)) out.device = parsed.device;
      if (typeof parsed.modelsDir === 'string') out.modelsDir = parsed.modelsDir;
      if (typeof parsed.cacheDir === 'string') out.cacheDir = parsed.cacheDir;
      return out;
    } catch {
      console.error(`LoRA Studio: ${this.file} is not valid JSON; using the default settings.`);
      return {};
    }
  }

  get(): StudioSettings {
    return { ...this.current };
  }

  async set(change: Partial<StudioSettings>): Promise<StudioSettings> {
    const next = { ...this.current };
    if (change.device !== undefined) {
      if (!DEVICES.includes(change.device)) throw new ApiError('bad-request', `device must be one of ${DEVICES.join(', ')}, got ${JSON.stringify(change.device)}.`);
      next.device = change.device;
    }
    for (const key of ['modelsDir', 'cacheDir'] as const) {
      if (change[key] === undefined) continue;
      next[key] = await this.guard.resolveExisting(change[key]!);
    }
    this.current = next;
    mkdirSync(this.home, { recursive: true });
    writeFileAtomic(this.file, `${JSON.stringify(this.current, null, 2)}\n`);
    return this.get();
  }
}
