// `lora-studio <command> [options]`: one entry per command in the table below.
import { pathToFileURL } from 'node:url';
import { CliUsageError, type CliCommand } from './command';
import { generateCommand } from './generate';
import { goldenCommand } from './golden';
import { infoCommand } from './info';
import { mergeCommand } from './merge';
import { serveCommand } from './serve';
import { trainCommand } from './train';

export const commands: Record<string, CliCommand> = {
  serve: serveCommand,
  info: infoCommand,
  train: trainCommand,
  generate: generateCommand,
  merge: mergeCommand,
  golden: goldenCommand,
};

function helpText(): string {
  const width = Math.max(...Object.keys(commands).map((n) => n.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    'Usage: lora-studio <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'lora-studio help <command> shows its options.',
  ].join('\n');
}

export async function runCli(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? args[0] : undefined;
    if (topic !== undefined && Object.hasOwn(commands, topic)) console.log(commands[topic].usage);
    else console.log(helpText());
    return 0;
  }
  if (!Object.hasOwn(commands, name)) {
    console.error(`lora-studio: unknown command "${name}".\n\n${helpText()}`);
    return 2;
  }
  const command = commands[name];
  if (args.includes('--help') || args.includes('-h')) {
    console.log(command.usage);
    return 0;
  }
  try {
    return await command.run(args);
  } catch (err) {
    if (err instanceof CliUsageError) {
      console.error(`lora-studio ${name}: ${err.message}\n\nUsage: ${command.usage}`);
      return 2;
    }
    console.error(`lora-studio ${name}: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.LORA_STUDIO_DEBUG && err instanceof Error) console.error(err.stack);
    return 1;
  }
}

// Run when executed (tsx src-main/cli/main.ts, bin/lora-studio.mjs), not when imported by tests.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await runCli(process.argv.slice(2));
}
