#!/usr/bin/env node
// `npm test`: every check the project has, in one command, streaming as it goes.
//   lint, typecheck, build (one check each), then vitest on test/unit, test/golden, test/e2e
//   (each vitest test one check; the e2e tests need the build).
// The last line is always `N passed, N failed` (CI reads it); the exit code is 0 only if nothing
// failed. Later steps run even after an earlier one fails, so one run shows every problem.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = (path) => join(root, 'node_modules', path);

/** Runs `node <script> ...args` in the repo root with output streamed; resolves to the exit code. */
function run(script, args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin(script), ...args], { cwd: root, stdio: 'inherit' });
    child.on('error', (err) => {
      console.error(`Could not start ${script}: ${err.message}`);
      resolve(1);
    });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

const checks = [
  { name: 'lint', commands: [['eslint/bin/eslint.js', ['.', '--max-warnings', '0']]] },
  {
    name: 'typecheck',
    commands: [
      ['typescript/bin/tsc', ['-p', 'tsconfig.node.json', '--noEmit']],
      ['svelte-check/bin/svelte-check', ['--tsconfig', 'tsconfig.web.json', '--fail-on-warnings']],
    ],
  },
  { name: 'build', commands: [['electron-vite/bin/electron-vite.js', ['build']]] },
];

const results = []; // { name, ok, seconds }
const started = Date.now();

function banner(text) {
  console.log(`\n━━ ${text} ${'━'.repeat(Math.max(0, 72 - text.length))}`);
}

for (const check of checks) {
  banner(check.name);
  const t0 = Date.now();
  let ok = true;
  for (const [script, args] of check.commands) {
    // Run every command of the check even if one fails: both halves of typecheck are useful.
    if ((await run(script, args)) !== 0) ok = false;
  }
  results.push({ name: check.name, ok, seconds: (Date.now() - t0) / 1000 });
  console.log(ok ? `✓ ${check.name}` : `✗ ${check.name} failed`);
}

banner('vitest: test/unit test/golden test/e2e');
const reportDir = mkdtempSync(join(tmpdir(), 'lora-test-'));
const reportFile = join(reportDir, 'vitest.json');
const t0 = Date.now();
const vitestCode = await run('vitest/vitest.mjs', [
  'run',
  'test/unit',
  'test/golden',
  'test/e2e',
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=${reportFile}`,
]);
const vitestSeconds = (Date.now() - t0) / 1000;

let testsPassed = 0;
let testsFailed = 0;
const failedFiles = [];
if (existsSync(reportFile)) {
  const report = JSON.parse(readFileSync(reportFile, 'utf8'));
  testsPassed = report.numPassedTests ?? 0;
  testsFailed = report.numFailedTests ?? 0;
  for (const file of report.testResults ?? []) {
    const failedTests = (file.assertionResults ?? []).filter((t) => t.status === 'failed');
    if (file.status === 'failed' && failedTests.length === 0) {
      // The file failed outside any test (import error, failing beforeAll): count it once.
      testsFailed += 1;
      failedFiles.push(`${file.name.replace(root, '')} (${(file.message ?? 'failed').split('\n')[0]})`);
    } else if (failedTests.length > 0) {
      for (const t of failedTests)
        failedFiles.push(`${file.name.replace(root, '')} > ${t.fullName ?? t.title}`);
    }
  }
  if (vitestCode !== 0 && testsFailed === 0) {
    testsFailed = 1; // vitest failed for a reason its report does not show (unhandled error...)
    failedFiles.push(`vitest exited with code ${vitestCode}`);
  }
} else {
  testsFailed = 1;
  failedFiles.push(`vitest wrote no report (exit code ${vitestCode})`);
}
rmSync(reportDir, { recursive: true, force: true });

banner('summary');
for (const r of results)
  console.log(`${r.ok ? '✓' : '✗'} ${r.name.padEnd(10)} ${r.seconds.toFixed(1).padStart(6)} s`);
console.log(
  `${testsFailed === 0 ? '✓' : '✗'} ${'vitest'.padEnd(10)} ${vitestSeconds.toFixed(1).padStart(6)} s  ` +
    `${testsPassed} passed, ${testsFailed} failed`,
);
for (const f of failedFiles) console.log(`    failed: ${f}`);
console.log(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);

const passed = results.filter((r) => r.ok).length + testsPassed;
const failed = results.filter((r) => !r.ok).length + testsFailed;
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
