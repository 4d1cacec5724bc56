// electron-builder packs the built app for Linux with our config, offline: the Electron binary
// is a stub (electronDist), and anything that tries the network hits a dead proxy and fails.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repoRoot } from '../../e2e/helpers';

const electronVersion = (
  JSON.parse(readFileSync(join(repoRoot, 'node_modules/electron/package.json'), 'utf8')) as {
    version: string;
  }
).version;
let work: string;
let appDir: string;
let log = '';

/** Paths of every file inside an asar archive (its header is a JSON tree after a 16-byte prefix). */
function asarFiles(archive: string): string[] {
  const buf = readFileSync(archive);
  const jsonLength = buf.readUInt32LE(12);
  type Node = { files?: Record<string, Node> };
  const root = JSON.parse(buf.subarray(16, 16 + jsonLength).toString('utf8')) as Node;
  const out: string[] = [];
  const walk = (node: Node, prefix: string) => {
    for (const [name, child] of Object.entries(node.files ?? {})) {
      if (child.files) walk(child, `${prefix}${name}/`);
      else out.push(`${prefix}${name}`);
    }
  };
  walk(root, '');
  return out;
}

function filesUnder(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? filesUnder(join(dir, d.name), `${prefix}${d.name}/`) : [`${prefix}${d.name}`],
  );
}

beforeAll(async () => {
  await ensureBuilt();
  work = mkdtempSync(join(tmpdir(), 'lora-pack-'));
  const electronDist = join(work, 'electron-dist');
  spawnSync('mkdir', ['-p', electronDist]);
  writeFileSync(join(electronDist, 'electron'), '#!/bin/sh\necho "stub Electron for packaging tests"\n');
  chmodSync(join(electronDist, 'electron'), 0o755);
  writeFileSync(join(electronDist, 'version'), electronVersion);

  const output = join(work, 'dist');
  const result = spawnSync(
    process.execPath,
    [
      join(repoRoot, 'node_modules/electron-builder/cli.js'),
      '--dir',
      '--linux',
      `-c.electronDist=${electronDist}`,
      `-c.directories.output=${output}`,
    ],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 110_000,
      env: {
        ...process.env,
        ELECTRON_SKIP_BINARY_DOWNLOAD: '1',
        ELECTRON_BUILDER_CACHE: join(work, 'cache'),
        CSC_IDENTITY_AUTO_DISCOVERY: 'false',
        // Any download attempt fails at once instead of reaching out.
        HTTPS_PROXY: 'http://127.0.0.1:9',
        HTTP_PROXY: 'http://127.0.0.1:9',
        ELECTRON_GET_USE_PROXY: '1',
        NO_PROXY: '',
      },
    },
  );
  log = `${result.stdout}\n${result.stderr}`;
  if (result.status !== 0)
    throw new Error(`electron-builder failed (${result.status ?? result.signal}):\n${log}`);
  appDir = join(output, 'linux-unpacked');
}, 120_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('electron-builder --dir --linux', () => {
  it('produces the unpacked app with our config', () => {
    expect(existsSync(join(appDir, 'lora-studio')), 'executable named by executableName').toBe(true);
    expect(existsSync(join(appDir, 'resources', 'app.asar'))).toBe(true);
  });

  it('packs the built main, preload and renderer, not the sources', () => {
    const files = asarFiles(join(appDir, 'resources', 'app.asar'));
    expect(files).toContain('out/main/index.js');
    expect(files).toContain('out/preload/index.cjs');
    expect(files).toContain('out/renderer/index.html');
    expect(files).toContain('package.json');
    expect(
      files.filter((f) => f.startsWith('src-main/') || f.startsWith('test/') || f.startsWith('.gpu-pack/')),
    ).toEqual([]);
  });

  it('unpacks the Linux onnxruntime binary and leaves out the Windows and macOS ones', () => {
    const unpacked = filesUnder(join(appDir, 'resources', 'app.asar.unpacked'));
    const packed = asarFiles(join(appDir, 'resources', 'app.asar'));
    expect(unpacked).toContain(
      `node_modules/onnxruntime-node/bin/napi-v6/linux/${process.arch}/onnxruntime_binding.node`,
    );
    expect(unpacked.some((f) => /^node_modules\/@img\/sharp-linux-.*\.node$/.test(f))).toBe(true);
    const foreign = [...unpacked, ...packed].filter((f) =>
      /onnxruntime-node\/bin\/napi-v6\/(win32|darwin)\//.test(f),
    );
    expect(foreign).toEqual([]);
  });
});
