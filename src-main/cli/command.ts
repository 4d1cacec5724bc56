// The shape of one `lora-studio <command>`: main.ts keeps a table of these, one entry per command.

export interface CliCommand {
  /** One line for `lora-studio help`. */
  summary: string;
  /** Full usage text for `lora-studio help <command>` and usage errors. */
  usage: string;
  /** Runs with the arguments after the command name; resolves to the exit code. */
  run(args: string[]): Promise<number>;
}

/** Wrong arguments: main.ts prints the message and the command's usage, exits with 2. */
export class CliUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliUsageError';
  }
}
