// Runs the `lora-studio` command line (src-main/cli/main.ts through tsx) in a child process, as a
// user runs it; with a `home`, LORA_STUDIO_HOME points there so the run never touches the user's folders.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** A runner of `lora-studio ARGS...`, with its home folder in `home` when given. */
export function cliIn(home?: string): (...args: string[]) => CliResult {
  return (...args) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src-main/cli/main.ts', ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: home === undefined ? process.env : { ...process.env, LORA_STUDIO_HOME: home },
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
}
