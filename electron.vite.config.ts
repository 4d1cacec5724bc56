// Builds the three parts of the Electron app into out/: main (ESM, Node), preload (CommonJS,
// because Electron runs sandboxed preloads only as CommonJS) and the Svelte renderer.
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'electron-vite';
import { resolve } from 'node:path';

const root = import.meta.dirname;

export default defineConfig({
  main: {
    build: {
      outDir: resolve(root, 'out/main'),
      // Named input so the bundle is out/main/index.js, package.json's "main".
      rolldownOptions: { input: { index: resolve(root, 'src-main/app/main.ts') } },
    },
  },
  preload: {
    build: {
      outDir: resolve(root, 'out/preload'),
      rolldownOptions: {
        input: { index: resolve(root, 'src-main/app/preload.ts') },
        // .cjs: the package is "type": "module", so a .js file would read as ESM.
        output: { format: 'cjs', entryFileNames: '[name].cjs' },
      },
    },
  },
  renderer: {
    root: resolve(root, 'src-renderer'),
    build: {
      outDir: resolve(root, 'out/renderer'),
      rolldownOptions: { input: resolve(root, 'src-renderer/index.html') },
    },
    // No svelte.config.js: Svelte 5 reads TypeScript in components without a preprocessor.
    plugins: [svelte({ configFile: false })],
  },
});
