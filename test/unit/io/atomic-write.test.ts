import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AtomicFileWriter, writeFileAtomic, writeStreamAtomic } from '../../../src-main/engine/io/atomic-write';

const work = mkdtempSync(join(tmpdir(), 'atomic-write-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const leftovers = (): string[] => readdirSync(work).filter((n) => n.includes('.tmp-'));

describe('atomic writes', () => {
  it('replaces a file only on commit and cleans up on abort', () => {
    const path = join(work, 'a.bin');
    writeFileSync(path, 'old');
    const writer = AtomicFileWriter.open(path);
    writer.write(Buffer.from('new '));
    writer.write(Buffer.from('content'));
    expect(readFileSync(path, 'utf8')).toBe('old'); // untouched until commit
    expect(leftovers()).toHaveLength(1);
    writer.commit();
    expect(readFileSync(path, 'utf8')).toBe('new content');
    expect(writer.bytesWritten).toBe(11);

    const aborted = AtomicFileWriter.open(path);
    aborted.write(Buffer.from('half'));
    aborted.abort();
    expect(readFileSync(path, 'utf8')).toBe('new content');
    expect(leftovers()).toEqual([]);
    expect(() => aborted.write(Buffer.from('x'))).toThrow(/write after commit or abort/);
  });

  it('writeFileAtomic and writeStreamAtomic; a failing stream leaves nothing', async () => {
    const path = join(work, 'b.txt');
    writeFileAtomic(path, 'héllo');
    expect(readFileSync(path, 'utf8')).toBe('héllo');
    expect(await writeStreamAtomic(path, [Buffer.from('a'), Buffer.from('bc')])).toBe(3);
    expect(readFileSync(path, 'utf8')).toBe('abc');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('partial');
      throw new Error('source failed');
    }
    await expect(writeStreamAtomic(path, failing())).rejects.toThrow('source failed');
    expect(readFileSync(path, 'utf8')).toBe('abc');
    expect(leftovers()).toEqual([]);
    expect(() => writeFileAtomic(join(work, 'no-such-dir', 'c.txt'), 'x')).toThrow(/ENOENT/);
  });
});
