// The lint layers are rules like any other code: lint small snippets placed in each layer and
// check that the right rule fires (and that legal code in the same place passes).
import { ESLint } from 'eslint';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const eslint = new ESLint({ cwd: repoRoot });

/** Rule ids reported for `code` as if it were the file at `filePath` (relative to the repo). */
async function rulesFiring(code: string, filePath: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${repoRoot}${filePath}` });
  const fatal = result.messages.filter((m) => m.fatal);
  if (fatal.length > 0) throw new Error(`${filePath}: snippet did not parse: ${fatal[0].message}`);
  return result.messages.map((m) => m.ruleId ?? 'none');
}

const ENGINE_FILE = 'src-main/engine/graph/__layer_probe.ts';
const RUNTIME_FILE = 'src-main/engine/runtime/__layer_probe.ts';
const RENDERER_FILE = 'src-renderer/src/lib/__layer_probe.ts';
const RENDERER_SVELTE = 'src-renderer/src/screens/__LayerProbe.svelte';
const APP_FILE = 'src-main/app/__layer_probe.ts';
const SERVER_FILE = 'src-main/server/__layer_probe.ts';

describe('engine layer', () => {
  it('refuses electron', async () => {
    expect(
      await rulesFiring(`import { app } from 'electron';\nexport const a = app;\n`, ENGINE_FILE),
    ).toContain('@typescript-eslint/no-restricted-imports');
    expect(await rulesFiring(`export const e = import('electron');\n`, ENGINE_FILE)).toContain(
      'no-restricted-syntax',
    );
  });

  it('refuses DOM globals', async () => {
    for (const name of ['window', 'document', 'navigator', 'HTMLElement']) {
      expect(await rulesFiring(`export const x = ${name};\n`, ENGINE_FILE), name).toContain(
        'no-restricted-globals',
      );
    }
  });

  it('refuses onnxruntime-node outside runtime/, allows it inside', async () => {
    const code = `import * as ort from 'onnxruntime-node';\nexport const o = ort;\n`;
    expect(await rulesFiring(code, ENGINE_FILE)).toContain('@typescript-eslint/no-restricted-imports');
    expect(await rulesFiring(code, SERVER_FILE)).toContain('@typescript-eslint/no-restricted-imports');
    expect(await rulesFiring(code, RUNTIME_FILE)).toEqual([]);
  });

  it('allows Node built-ins', async () => {
    expect(
      await rulesFiring(
        `import { readFile } from 'node:fs/promises';\nexport const r = readFile;\n`,
        ENGINE_FILE,
      ),
    ).toEqual([]);
  });
});

describe('renderer layer', () => {
  it('refuses Node built-ins, prefixed or bare', async () => {
    for (const mod of ['node:fs', 'fs', 'path', 'child_process', 'fs/promises']) {
      const rules = await rulesFiring(`import * as m from '${mod}';\nexport const x = m;\n`, RENDERER_FILE);
      expect(rules, mod).toContain('@typescript-eslint/no-restricted-imports');
    }
  });

  it('refuses electron', async () => {
    expect(
      await rulesFiring(`import { shell } from 'electron';\nexport const s = shell;\n`, RENDERER_FILE),
    ).toContain('@typescript-eslint/no-restricted-imports');
  });

  it('imports the API contract type-only and nothing else from src-main', async () => {
    const typeOnly = `import type { AppInfo } from '../../../src-main/api/contract';\nexport type A = AppInfo;\n`;
    const valueImport = `import { BRIDGE } from '../../../src-main/api/contract';\nexport const b = BRIDGE;\n`;
    const otherModule = `import type { ApiHandlers } from '../../../src-main/api/handlers';\nexport type H = ApiHandlers;\n`;
    const engine = `import { Graph } from '../../../src-main/engine/graph/graph';\nexport const g = Graph;\n`;
    expect(await rulesFiring(typeOnly, RENDERER_FILE)).toEqual([]);
    expect(await rulesFiring(valueImport, RENDERER_FILE)).toContain(
      '@typescript-eslint/no-restricted-imports',
    );
    expect(await rulesFiring(otherModule, RENDERER_FILE)).toContain(
      '@typescript-eslint/no-restricted-imports',
    );
    expect(await rulesFiring(engine, RENDERER_FILE)).toContain('@typescript-eslint/no-restricted-imports');
  });

  it('applies inside .svelte components too', async () => {
    const component = (imp: string) =>
      `<script lang="ts">\n  ${imp}\n  console.log(x);\n</script>\n\n<p>probe</p>\n`;
    expect(await rulesFiring(component(`import * as x from 'node:path';`), RENDERER_SVELTE)).toContain(
      '@typescript-eslint/no-restricted-imports',
    );
    expect(
      await rulesFiring(component(`import { x } from '../../../src-main/api/handlers';`), RENDERER_SVELTE),
    ).toContain('@typescript-eslint/no-restricted-imports');
    expect(
      await rulesFiring(
        component(`import type { AppInfo as x } from '../../../src-main/api/contract';`),
        RENDERER_SVELTE,
      ),
    ).toEqual([]);
  });
});

describe('IPC layer', () => {
  it('only the IPC helpers import ipcMain / ipcRenderer', async () => {
    const main = `import { ipcMain } from 'electron';\nexport const i = ipcMain;\n`;
    const renderer = `import { ipcRenderer } from 'electron';\nexport const i = ipcRenderer;\n`;
    expect(await rulesFiring(main, APP_FILE)).toContain('@typescript-eslint/no-restricted-imports');
    expect(await rulesFiring(renderer, 'src-main/app/preload.ts')).toContain(
      '@typescript-eslint/no-restricted-imports',
    );
    expect(await rulesFiring(main, SERVER_FILE)).toContain('@typescript-eslint/no-restricted-imports');
    expect(await rulesFiring(main, 'test/unit/app/__layer_probe.ts')).toContain(
      '@typescript-eslint/no-restricted-imports',
    );
    expect(await rulesFiring(main, 'src-main/app/ipc-main.ts')).toEqual([]);
    expect(await rulesFiring(renderer, 'src-main/app/ipc-renderer.ts')).toEqual([]);
  });

  it('catches IPC reached through the module object', async () => {
    const code = `import electron from 'electron';\nexport const i = electron.ipcMain;\n`;
    expect(await rulesFiring(code, APP_FILE)).toContain('no-restricted-syntax');
  });

  it('lets the rest of the app use electron', async () => {
    expect(
      await rulesFiring(
        `import { app, BrowserWindow } from 'electron';\nexport const a = [app, BrowserWindow];\n`,
        APP_FILE,
      ),
    ).toEqual([]);
  });
});
