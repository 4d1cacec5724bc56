// The API's implementation, independent of any transport: Electron IPC (src-main/app), the
// WebSocket server (src-main/server) and the CLI all call these same functions.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ApiOutcome, AppInfo, FolderEntry, MethodName, MethodRequest, MethodResponse } from './contract';
import { ApiError, settle } from './errors';
import type { ApiEventBus } from './events';
import type { PathGuard } from './path-guard';
import { usableProviders } from '../engine/runtime/session';

export type ApiHandlers = { [M in MethodName]: (req: MethodRequest<M>) => Promise<MethodResponse<M>> };

/** What the process hosting the API provides. */
export interface ApiHost {
  kind: AppInfo['host'];
  version: string;
  guard: PathGuard;
  events: ApiEventBus;
  /** Native folder picker; absent on hosts that have none (the headless server, the CLI). */
  pickFolder?: () => Promise<string | null>;
}

export function createApiHandlers(host: ApiHost): ApiHandlers {
  const rootsChanged = () => host.events.emit('fs.rootsChanged', { roots: host.guard.list() });

  return {
    'app.info': async () => ({
      name: 'LoRA Studio',
      version: host.version,
      nodeVersion: process.versions.node,
      platform: process.platform,
      arch: process.arch,
      providers: await usableProviders(),
      host: host.kind,
    }),

    'fs.roots': async () => ({ roots: host.guard.list() }),

    'fs.pickFolder': async () => {
      if (!host.pickFolder) {
        throw new ApiError(
          'unsupported',
          'This studio has no folder dialog: start `lora-studio serve --root <folder>` to open folders.',
        );
      }
      const picked = await host.pickFolder();
      if (picked === null) return { path: null };
      const path = host.guard.allow(picked);
      rootsChanged();
      return { path };
    },

    'fs.listFolder': async (req) => {
      const path = await host.guard.resolveExisting(requireString(req, 'path', 'fs.listFolder'));
      if (!(await stat(path)).isDirectory())
        throw new ApiError('not-a-folder', `${path} is a file, not a folder.`);
      const dirents = await readdir(path, { withFileTypes: true });
      const entries = await Promise.all(
        dirents.map(async (d): Promise<FolderEntry | null> => {
          try {
            // stat follows symlinks, so a link shows as what it points to.
            const info = await stat(join(path, d.name));
            return info.isDirectory()
              ? { name: d.name, kind: 'folder', size: 0 }
              : { name: d.name, kind: 'file', size: info.size };
          } catch {
            return null; // dangling link or vanished meanwhile
          }
        }),
      );
      const listed = entries.filter((e): e is FolderEntry => e !== null);
      listed.sort((a, b) =>
        a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'folder' ? -1 : 1,
      );
      return { path, entries: listed };
    },
  };
}

/** Calls a method by name with untrusted parameters (from a socket or IPC message). */
export function callByName(
  handlers: ApiHandlers,
  method: unknown,
  params: unknown,
): Promise<ApiOutcome<unknown>> {
  return settle(async () => {
    // Own properties only: 'constructor' or '__proto__' must not reach Object.prototype.
    if (typeof method !== 'string' || !Object.hasOwn(handlers, method)) {
      throw new ApiError('unknown-method', `Unknown API method ${JSON.stringify(method)}.`);
    }
    const handler = handlers[method as MethodName] as (req: unknown) => Promise<unknown>;
    return handler(params);
  });
}

function requireString(req: unknown, key: string, method: string): string {
  const value = typeof req === 'object' && req !== null ? (req as Record<string, unknown>)[key] : undefined;
  if (typeof value !== 'string') throw new ApiError('bad-request', `${method} needs a string "${key}".`);
  return value;
}
