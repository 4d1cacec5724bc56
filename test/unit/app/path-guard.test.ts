// PathGuard: the only thing between an API caller and the user's disk.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../../src-main/api/errors';
import { PathGuard } from '../../../src-main/api/path-guard';

let base: string; // real path of a scratch folder: base/opened is opened, base/secret is not
let opened: string;
let secret: string;

beforeAll(() => {
  base = realpathSync(mkdtempSync(join(tmpdir(), 'lora-guard-')));
  opened = join(base, 'opened');
  secret = join(base, 'secret');
  mkdirSync(join(opened, 'images'), { recursive: true });
  mkdirSync(secret);
  writeFileSync(join(opened, 'images', 'a.png'), 'png');
  writeFileSync(join(secret, 'key.txt'), 'secret');
  symlinkSync(secret, join(opened, 'link-out')); // folder link leading outside
  symlinkSync(join(secret, 'key.txt'), join(opened, 'key-link.txt')); // file link leading outside
  symlinkSync(join(opened, 'images'), join(opened, 'link-in')); // link that stays inside
  mkdirSync(join(base, 'opened-sibling')); // shares the prefix "opened"
});

afterAll(() => rmSync(base, { recursive: true, force: true }));

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return (err as ApiError).code;
  }
  throw new Error('expected the guard to refuse');
}

describe('PathGuard', () => {
  it('admits the opened folder and what lies inside it', async () => {
    const guard = new PathGuard([opened]);
    expect(await guard.resolveExisting(opened)).toBe(opened);
    expect(await guard.resolveExisting(join(opened, 'images', 'a.png'))).toBe(
      join(opened, 'images', 'a.png'),
    );
    expect(await guard.resolveExisting(join(opened, 'link-in', 'a.png'))).toBe(
      join(opened, 'images', 'a.png'),
    );
  });

  it('refuses folders that were not opened, including a sibling with the same prefix', async () => {
    const guard = new PathGuard([opened]);
    expect(await refusal(guard.resolveExisting(join(secret, 'key.txt')))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveExisting(join(base, 'opened-sibling')))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveExisting(base))).toBe('path-outside-roots');
  });

  it('refuses `..` escapes', async () => {
    const guard = new PathGuard([opened]);
    const escape = `${opened}${sep}images${sep}..${sep}..${sep}secret${sep}key.txt`;
    expect(await refusal(guard.resolveExisting(escape))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveNew(`${opened}${sep}..${sep}secret${sep}new.txt`))).toBe(
      'path-outside-roots',
    );
    // `..` that stays inside is fine.
    expect(await guard.resolveExisting(`${opened}${sep}images${sep}..${sep}images`)).toBe(
      join(opened, 'images'),
    );
  });

  it('refuses symlinks that lead outside, to folders and to files', async () => {
    const guard = new PathGuard([opened]);
    expect(await refusal(guard.resolveExisting(join(opened, 'link-out')))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveExisting(join(opened, 'link-out', 'key.txt')))).toBe(
      'path-outside-roots',
    );
    expect(await refusal(guard.resolveExisting(join(opened, 'key-link.txt')))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveNew(join(opened, 'link-out', 'new.txt')))).toBe('path-outside-roots');
  });

  it('does not reveal whether a path outside exists', async () => {
    const guard = new PathGuard([opened]);
    expect(await refusal(guard.resolveExisting(join(secret, 'missing.txt')))).toBe('path-outside-roots');
    expect(await refusal(guard.resolveExisting(join(opened, 'missing.txt')))).toBe('not-found');
  });

  it('refuses relative paths and NUL bytes', async () => {
    const guard = new PathGuard([opened]);
    expect(await refusal(guard.resolveExisting('images/a.png'))).toBe('bad-path');
    expect(await refusal(guard.resolveExisting(`${opened}${sep}a\0b`))).toBe('bad-path');
  });

  it('resolves new files inside, under their real folder', async () => {
    const guard = new PathGuard([opened]);
    expect(await guard.resolveNew(join(opened, 'link-in', 'b.png'))).toBe(join(opened, 'images', 'b.png'));
  });

  it('opens folders through their real path, once, and only folders', () => {
    const guard = new PathGuard();
    expect(guard.list()).toEqual([]);
    expect(guard.allow(join(opened, 'link-in'))).toBe(join(opened, 'images'));
    guard.allow(join(opened, 'images'));
    expect(guard.list()).toEqual([join(opened, 'images')]);
    expect(() => guard.allow(join(opened, 'images', 'a.png'))).toThrow(/file, not a folder/);
    expect(() => guard.allow(join(base, 'nowhere'))).toThrow(/does not exist/);
  });
});
