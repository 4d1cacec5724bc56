// Lint = correctness rules plus the architecture's layers (DEVELOPERS.md, "The house"):
//  - src-main/engine/** is plain TypeScript: no Electron, no DOM;
//  - only src-main/engine/runtime/** loads onnxruntime-node;
//  - src-renderer/** imports no Node built-ins and nothing from src-main/ except the API
//    contract, type-only;
//  - only the two IPC helper files touch ipcMain/ipcRenderer.
// test/unit/app/layers.test.ts lints small violating snippets to prove each layer rule fires.
// No type-aware rules: they are slow and the type checker already runs in `npm test`.
import js from '@eslint/js';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

const ENGINE = 'src-main/engine/**';
const RUNTIME = 'src-main/engine/runtime/**';
const RENDERER = 'src-renderer/**';
const IPC_HELPERS = ['src-main/app/ipc-main.ts', 'src-main/app/ipc-renderer.ts'];
const TS_FILES = ['**/*.ts', '**/*.mts', '**/*.cts'];

const NODE_BUILTINS = [...new Set(builtinModules.map((m) => m.replace(/^node:/, '')))];

// Each restriction is a reusable piece; a layer's rule lists every piece that applies to it,
// because a later config object replaces (not merges) an earlier one's options for a rule.
const noIpcOutsideHelpers = {
  name: 'electron',
  importNames: ['ipcMain', 'ipcRenderer'],
  message: 'Only src-main/app/ipc-main.ts and ipc-renderer.ts touch IPC: use handle/invoke/on from there.',
};
const noElectron = {
  name: 'electron',
  message: 'This layer must not depend on Electron (engine: pure TypeScript; renderer: use the API client).',
};
const noOnnxruntime = ['onnxruntime-node', 'onnxruntime-common', 'onnxruntime-web'].map((name) => ({
  name,
  message: 'Only src-main/engine/runtime/** talks to onnxruntime; go through its session API.',
}));
const noNodeBuiltins = NODE_BUILTINS.map((name) => ({
  name,
  message: 'The renderer runs in a browser page: no Node built-ins; ask the back end through the API client.',
}));
const noNodePrefixed = {
  regex: '^node:',
  message: 'The renderer runs in a browser page: no Node built-ins; ask the back end through the API client.',
};
// Anything under src-main/ except the contract, whatever the number of ../ in front.
const noMainFromRenderer = {
  regex: '(^|/)src-main/(?!api/contract$)',
  message: 'The renderer may import from src-main/ only the API contract (src-main/api/contract), type-only.',
};
const contractTypesOnly = {
  regex: '(^|/)src-main/api/contract$',
  allowTypeImports: true,
  message: 'Import the API contract with `import type`: the renderer bundles no back-end code.',
};

/** A no-restricted-imports setting for the typescript-eslint variant (it adds allowTypeImports). */
const restrict = (paths, patterns = []) => ['error', { paths, patterns }];

// Reaching IPC through a namespace or default import (`electron.ipcMain`) is caught here.
const ipcMemberAccess = {
  selector: 'MemberExpression[property.name=/^ipc(Main|Renderer)$/]',
  message: 'Only src-main/app/ipc-main.ts and ipc-renderer.ts touch IPC: use handle/invoke/on from there.',
};
const dynamicImportOf = (names, message) => ({
  selector: `ImportExpression[source.value=/^(${names.join('|')})$/]`,
  message,
});

const DOM_GLOBALS = [
  'window',
  'document',
  'navigator',
  'location',
  'localStorage',
  'sessionStorage',
  'HTMLElement',
  'HTMLCanvasElement',
  'HTMLImageElement',
  'Element',
  'Node',
  'Image',
  'ImageData',
  'OffscreenCanvas',
  'CanvasRenderingContext2D',
  'XMLHttpRequest',
  'requestAnimationFrame',
  'alert',
].map((name) => ({ name, message: `The engine runs without a browser: no DOM (${name}).` }));

export default tseslint.config(
  {
    ignores: [
      'out/**',
      '.gpu-build/**',
      '.gpu-pack/**',
      '.scratch/**',
      'dist/**',
      'node_modules/**',
      'coverage/**',
      '.gpu-pack/**',
      '.scratch/**',
      '.cache/**',
      'tmp/**',
      'test-results/**',
      'test/fixtures/**',
    ],
  },

  // Correctness rules for everything.
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...svelte.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // Stylistic or redundant with the type checker: not worth failing the build over.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-empty-object-type': 'off',
      'no-empty': ['error', { allowEmptyCatch: true }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['**/*.svelte', '**/*.svelte.ts'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: { parser: tseslint.parser, extraFileExtensions: ['.svelte'] },
    },
  },
  {
    // TypeScript itself reports undefined names (and knows type-only globals, which no-undef does not).
    files: [...TS_FILES, '**/*.svelte'],
    rules: { 'no-undef': 'off' },
  },

  // Layers. Every TypeScript file outside the exceptions below: IPC via the helpers only.
  {
    files: [...TS_FILES, '**/*.svelte'],
    rules: {
      'no-restricted-imports': 'off',
      '@typescript-eslint/no-restricted-imports': restrict([noIpcOutsideHelpers]),
      'no-restricted-syntax': ['error', ipcMemberAccess],
    },
  },
  {
    files: ['src-main/**/*.ts'],
    ignores: [RUNTIME, ...IPC_HELPERS],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([noIpcOutsideHelpers, ...noOnnxruntime]),
      'no-restricted-syntax': [
        'error',
        ipcMemberAccess,
        dynamicImportOf(
          ['onnxruntime-node', 'onnxruntime-common', 'onnxruntime-web'],
          noOnnxruntime[0].message,
        ),
      ],
    },
  },
  {
    files: [ENGINE],
    ignores: [RUNTIME],
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([noElectron, ...noOnnxruntime]),
      'no-restricted-syntax': [
        'error',
        dynamicImportOf(
          ['electron', 'onnxruntime-node', 'onnxruntime-common', 'onnxruntime-web'],
          noElectron.message,
        ),
      ],
      'no-restricted-globals': ['error', ...DOM_GLOBALS],
    },
  },
  {
    files: [RUNTIME],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([noElectron]),
      'no-restricted-syntax': ['error', dynamicImportOf(['electron'], noElectron.message)],
      'no-restricted-globals': ['error', ...DOM_GLOBALS],
    },
  },
  {
    files: IPC_HELPERS,
    rules: {
      '@typescript-eslint/no-restricted-imports': 'off',
      'no-restricted-syntax': 'off',
    },
  },
  {
    files: [`${RENDERER}/*.ts`, `${RENDERER}/*.svelte`],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict(
        [noElectron, ...noOnnxruntime, ...noNodeBuiltins],
        [noNodePrefixed, noMainFromRenderer, contractTypesOnly],
      ),
      'no-restricted-syntax': [
        'error',
        ipcMemberAccess,
        dynamicImportOf(
          ['electron', 'node:.*'],
          'The renderer runs in a browser page: no Electron or Node modules.',
        ),
      ],
    },
  },
);
