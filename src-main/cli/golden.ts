// `lora-studio golden <folder>...` (also `npm run golden -- <folder>`): the conformance runner.
// Checks every case of a reference folder (cases.safetensors, cases.json, model/; see
// test/fixtures/golden/README.md) against the engine on the CPU in float32, prints a table per
// folder and a summary line; exit code 1 when any case fails (engine/conformance/runner.ts has the
// pass/fail policy).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { CASE_FAMILIES, formatReport, runConformance } from '../engine/conformance/runner';
import { CliUsageError, type CliCommand } from './command';

/** The transformers tokenizer reference kept with the tests (used when present: a source checkout). */
const REPO_TOKENIZER_REFERENCE = fileURLToPath(
  new URL('../../test/golden/tokenizer/clip-transformers-reference.json', import.meta.url),
);
const TOKENIZER_REFERENCE_NAME = 'clip-transformers-reference.json';

export const goldenCommand: CliCommand = {
  summary: 'Check the engine against a reference folder (conformance cases), print a table',
  usage: `lora-studio golden <folder>... [--only <family,...>] [--tokenizer-reference <file>]

  <folder>                     holds cases.safetensors, cases.json and model/ (e.g. test/fixtures/golden/tiny-sd15)
  --only <family,...>          run only these case families: ${CASE_FAMILIES.map((f) => f.name).join(', ')}
  --tokenizer-reference <file> transformers tokenizer ids (${TOKENIZER_REFERENCE_NAME} layout) to check our
                               tokenizer against; repeatable. Used by default when present: <folder>/${TOKENIZER_REFERENCE_NAME}
                               and test/golden/tokenizer/${TOKENIZER_REFERENCE_NAME} of a source checkout.
Exit code 0 when every case passes, 1 otherwise.`,

  async run(args) {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: { only: { type: 'string' }, 'tokenizer-reference': { type: 'string', multiple: true } },
        allowPositionals: true,
        strict: true,
      });
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const folders = parsed.positionals;
    if (folders.length === 0) throw new CliUsageError('name at least one reference folder.');
    const only = parsed.values.only
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const known = CASE_FAMILIES.map((f) => f.name);
    const wrong = only?.find((name) => !known.includes(name));
    if (wrong) throw new CliUsageError(`--only: unknown family "${wrong}" (families: ${known.join(', ')}).`);

    let failed = 0;
    for (const folder of folders.map((f) => resolve(f))) {
      const references = [
        ...(parsed.values['tokenizer-reference'] ?? []).map((f) => resolve(f)),
        join(folder, TOKENIZER_REFERENCE_NAME),
        REPO_TOKENIZER_REFERENCE,
      ].filter((f) => existsSync(f));
      const report = await runConformance(folder, {
        only,
        tokenizerReferences: references,
        log: (line) => process.stderr.write(`  ${line}\n`),
      });
      console.log(formatReport(report));
      console.log('');
      if (!report.passed) failed++;
    }
    if (folders.length > 1) console.log(`${folders.length - failed} of ${folders.length} folders pass`);
    return failed === 0 ? 0 : 1;
  },
};

// Run when executed (npm run golden -- <folder>), not when imported by main.ts or tests. The same
// reporting as main.ts's runCli (which cannot be imported from here without an import cycle).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(goldenCommand.usage);
  } else {
    try {
      process.exitCode = await goldenCommand.run(args);
    } catch (err) {
      const usage = err instanceof CliUsageError;
      console.error(
        `lora-studio golden: ${err instanceof Error ? err.message : String(err)}${usage ? `\n\nUsage: ${goldenCommand.usage}` : ''}`,
      );
      if (process.env.LORA_STUDIO_DEBUG && err instanceof Error) console.error(err.stack);
      process.exitCode = usage ? 2 : 1;
    }
  }
}
