// The CLI dispatcher, run as a user runs it (a child process through tsx).
import { describe, expect, it } from 'vitest';
import { commands } from '../../../src-main/cli/main';
import { cliIn } from '../../helpers/cli';

const cli = cliIn();

describe('lora-studio CLI', () => {
  it('lists every command of the table in its help', () => {
    const { code, out } = cli('help');
    expect(code).toBe(0);
    const lines = out.split('\n').map((l) => l.trim().split(/\s{2,}/));
    for (const [name, command] of Object.entries(commands))
      expect(lines).toContainEqual([name, command.summary]);
  });

  it('rejects unknown commands and bad options with exit code 2', () => {
    const unknown = cli('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('unknown command "frobnicate"');
    const badPort = cli('serve', '--port', 'seventy');
    expect(badPort.code).toBe(2);
    expect(badPort.err).toContain('--port must be a whole number');
    const badFlag = cli('serve', '--bogus');
    expect(badFlag.code).toBe(2);
    expect(badFlag.err).toContain('Usage: lora-studio serve');
  });

  it('info reports what app.info reports', () => {
    const { code, out } = cli('info', '--json');
    expect(code).toBe(0);
    const info = JSON.parse(out) as { name: string; providers: string[]; host: string; nodeVersion: string };
    expect(info).toMatchObject({ name: 'LoRA Studio', host: 'cli', nodeVersion: process.versions.node });
    expect(info.providers).toContain('cpu');
  });

  it('serve fails clearly on a folder that does not exist', () => {
    const { code, err } = cli('serve', '--root', '/no/such/folder/for/lora-studio');
    expect(code).toBe(1);
    expect(err).toContain('/no/such/folder/for/lora-studio: it does not exist');
  });
});
