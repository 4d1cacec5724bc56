// Path helpers for paths the back end reported (POSIX or Windows); the renderer has no node:path.

/** The separator a path uses: a backslash for Windows paths without any forward slash. */
function separatorOf(path: string): string {
  return path.includes('\\') && !path.includes('/') ? '\\' : '/';
}

function trimTrailing(path: string): string {
  return path.length > 1 ? path.replace(/[\\/]+$/, '') : path;
}

export function joinPath(base: string, ...parts: string[]): string {
  const sep = separatorOf(base);
  return [trimTrailing(base), ...parts.map((p) => p.replace(/^[\\/]+|[\\/]+$/g, ''))]
    .filter((p) => p !== '')
    .join(sep);
}

export function basename(path: string): string {
  const trimmed = trimTrailing(path);
  return trimmed.slice(Math.max(trimmed.lastIndexOf('/'), trimmed.lastIndexOf('\\')) + 1);
}

export function dirname(path: string): string {
  const trimmed = trimTrailing(path);
  const cut = Math.max(trimmed.lastIndexOf('/'), trimmed.lastIndexOf('\\'));
  return cut <= 0 ? trimmed.slice(0, cut + 1) || '.' : trimmed.slice(0, cut);
}

/** The file name without its extension. */
export function stem(path: string): string {
  const name = basename(path);
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

/** Whether `path` is `folder` or lies inside it. */
export function isInside(path: string, folder: string): boolean {
  const f = trimTrailing(folder);
  return path === f || path.startsWith(f + separatorOf(f));
}
