// `lora-studio train` as a user runs it (a child process through tsx): the main job on the sample
// images, bad input with exit codes and messages that name the path, and Ctrl-C (SIGINT) stopping
// with a checkpoint that resumes.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readLoraFile } from '../../src-main/engine/lora/lora-file';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'lora-train-cli-'));
const env = { ...process.env, LORA_STUDIO_HOME: join(work, 'home') };

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src-main/cli/main.ts', 'train', ...args], { cwd: repoRoot, encoding: 'utf8', env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('lora-studio train', () => {
  it('trains on the sample images and writes a kohya LoRA with its metadata', () => {
    const out = join(work, 'sample-lora.safetensors');
    const { code, out: stdout, err } = cli('--images', 'resources/sample-dataset', '--out', out, '--steps', '20', '--trigger', 'shapez');
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(stdout).toContain('step 20/20 loss');
    expect(stdout).toContain(`Done at step 20`);
    const lora = readLoraFile(out);
    expect(lora.format).toBe('kohya');
    expect(lora.modules.length).toBeGreaterThan(0);
    expect(lora.metadata).toMatchObject({ ss_network_module: 'networks.lora', ss_steps: '20', 'modelspec.trigger_phrase': 'shapez' });
    expect(JSON.parse(lora.metadata.ss_tag_frequency)['sample-dataset'].shapez).toBe(8);
    expect(existsSync(join(work, 'sample-lora.checkpoint.safetensors'))).toBe(true);
  }, 120_000);

  it('reports bad input with the path and the right exit code', () => {
    const badFlag = cli('--images', 'x', '--out', 'y.safetensors', '--rank', 'four');
    expect(badFlag.code).toBe(2);
    expect(badFlag.err).toContain('--rank must be a number, got "four"');
    const missingOut = cli('--images', 'x');
    expect(missingOut.code).toBe(2);
    expect(missingOut.err).toContain('--out <file.safetensors> is required');
    const empty = join(work, 'empty');
    mkdirSync(empty);
    const emptyRun = cli('--images', empty, '--out', join(work, 'e.safetensors'));
    expect(emptyRun.code).toBe(1);
    expect(emptyRun.err).toContain(`${empty}: no trainable images`);
    const noModel = cli('--images', 'resources/sample-dataset', '--out', join(work, 'm.safetensors'), '--model', join(work, 'nope'));
    expect(noModel.code).toBe(1);
    expect(noModel.err).toContain(`${join(work, 'nope')}: the model does not exist`);
  }, 120_000);

  it('stops on Ctrl-C with a checkpoint, and --resume continues from it', async () => {
    const out = join(work, 'interrupted.safetensors');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src-main/cli/main.ts', 'train', '--images', 'resources/sample-dataset', '--out', out, '--steps', '100000', '--log-every', '1'], { cwd: repoRoot, env });
    let stdout = '';
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (/step \d+\/100000/.test(stdout) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code).toBe(130);
    expect(stdout).toMatch(/Stopped at step \d+/);
    expect(stdout).toContain('Resume with: --resume');
    const checkpoint = join(work, 'interrupted.checkpoint.safetensors');
    const stoppedAt = Number(/Stopped at step (\d+)/.exec(stdout)![1]);
    expect(Number(readLoraFile(out).metadata.ss_steps)).toBe(stoppedAt);
    const resumed = cli('--images', 'resources/sample-dataset', '--out', out, '--steps', String(stoppedAt + 3), '--resume', checkpoint);
    expect(resumed.code).toBe(0);
    expect(resumed.out).toContain(`steps ${stoppedAt + 1}..${stoppedAt + 3} (resumed from ${checkpoint})`);
    expect(readLoraFile(out).metadata.ss_steps).toBe(String(stoppedAt + 3));
  }, 120_000);
});
