// Shared pieces of the end-to-end tests: the built studio, the headless server as a child
// process (started exactly as a user would: the CLI's `serve`), and Debian's Chromium.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const CHROMIUM = '/usr/bin/chromium';

const BUILD_OUTPUTS = ['out/main/index.js', 'out/preload/index.cjs', 'out/renderer/index.html'];

/**
 * Builds out/ when a test runs without `npm test` having built it first. Test files run in
 * parallel: a lock folder makes one build while the others wait for it.
 */
export async function ensureBuilt(): Promise<void> {
  const built = () => BUILD_OUTPUTS.every((f) => existsSync(repoRoot + f));
  if (built()) return;
  const lock = join(
    tmpdir(),
    `lora-studio-build-${createHash('sha256').update(repoRoot).digest('hex').slice(0, 12)}`,
  );
  try {
    mkdirSync(lock);
  } catch {
    for (let waited = 0; waited < 120_000 && existsSync(lock); waited += 250) await delay(250);
    if (built()) return;
    throw new Error(`Another test's build of out/ did not finish (lock ${lock}); run \`npm run build\`.`);
  }
  try {
    const result = spawnSync(
      process.execPath,
      [repoRoot + 'node_modules/electron-vite/bin/electron-vite.js', 'build'],
      {
        cwd: repoRoot,
        encoding: 'utf8',
      },
    );
    if (result.status !== 0)
      throw new Error(`electron-vite build failed:\n${result.stdout}\n${result.stderr}`);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export interface ServerProcess {
  url: string;
  origin: string;
  token: string;
  /** Everything the server printed so far. */
  output(): string;
  stop(): Promise<void>;
}

/** Runs `lora-studio serve --port 0` from source and waits for the URL it prints. */
export async function startServerProcess(roots: string[], timeoutMs = 30_000): Promise<ServerProcess> {
  const args = [
    '--import',
    'tsx',
    'src-main/cli/main.ts',
    'serve',
    '--port',
    '0',
    ...roots.flatMap((r) => ['--root', r]),
  ];
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((done) => child.once('exit', () => done()));

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => fail(`no URL within ${timeoutMs} ms`), timeoutMs);
    const check = () => {
      const match = /serving at (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    function fail(why: string) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`lora-studio serve: ${why}. Output:\n${output}`));
    }
    child.stdout!.on('data', check);
    child.once('exit', (code) => fail(`exited with ${code}`));
  });

  const parsed = new URL(url);
  return {
    url,
    origin: parsed.origin,
    token: parsed.searchParams.get('token') ?? '',
    output: () => output,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Debian's Chromium, headless, with nothing that reaches the network on its own. */
export function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); .ci/run does.`,
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}
