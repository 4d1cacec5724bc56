// Which file paths the API may touch: only those inside the folders the user opened. Paths are
// compared after resolving `..` and symlinks, so neither can lead outside an opened folder.
import { realpathSync, statSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { ApiError } from './errors';

export class PathGuard {
  /** Real (symlink-free) paths of the opened folders, in the order they were opened. */
  private readonly roots: string[] = [];

  constructor(roots: readonly string[] = []) {
    for (const root of roots) this.allow(root);
  }

  /** Opens a folder: it and everything under it become reachable. Returns its real path. */
  allow(folder: string): string {
    let real: string;
    try {
      real = realpathSync(resolve(folder));
    } catch {
      throw new ApiError('not-found', `Cannot open folder ${folder}: it does not exist.`);
    }
    if (!statSync(real).isDirectory()) {
      throw new ApiError('not-a-folder', `Cannot open ${folder}: it is a file, not a folder.`);
    }
    if (!this.roots.includes(real)) this.roots.push(real);
    return real;
  }

  list(): string[] {
    return [...this.roots];
  }

  /** True when `realPath` (already symlink-free) is an opened folder or lies inside one. */
  contains(realPath: string): boolean {
    return this.roots.some((root) => {
      const rel = relative(root, realPath);
      return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
    });
  }

  /** Real path of an existing file or folder, or an ApiError when it is missing or outside. */
  async resolveExisting(path: string): Promise<string> {
    const absolute = this.absolute(path);
    let real: string;
    try {
      real = await realpath(absolute);
    } catch {
      // Refuse before admitting the path is missing: existence outside the roots is no one's business.
      if (!this.contains(absolute)) throw this.outside(path);
      throw new ApiError('not-found', `${path} does not exist.`);
    }
    if (!this.contains(real)) throw this.outside(path);
    return real;
  }

  /** Real path for a file about to be created: its folder must exist inside an opened folder. */
  async resolveNew(path: string): Promise<string> {
    const absolute = this.absolute(path);
    const name = basename(absolute);
    if (name === '' || name === '.' || name === '..') {
      throw new ApiError('bad-path', `${path} does not name a file.`);
    }
    const folder = await this.resolveExisting(dirname(absolute));
    return join(folder, name);
  }

  private absolute(path: string): string {
    if (typeof path !== 'string' || path === '') throw new ApiError('bad-path', 'Expected a file path.');
    if (path.includes('\0')) throw new ApiError('bad-path', 'File paths cannot contain NUL characters.');
    if (!isAbsolute(path)) throw new ApiError('bad-path', `${path} is not an absolute path.`);
    return resolve(path);
  }

  private outside(path: string): ApiError {
    return new ApiError('path-outside-roots', `${path} is outside the folders opened in LoRA Studio.`);
  }
}
