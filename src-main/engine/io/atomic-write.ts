// Atomic file writes: data goes to a temp file in the same folder (`.<name>.tmp-<pid>-<random>`),
// is flushed to disk, then renamed over the target, so a crash leaves either the old file or the
// new one, never half of one. On any error the temp file is removed.
//
//   writeFileAtomic(path, data)                    whole buffer or string
//   AtomicFileWriter.open(path) -> write(bytes)..., commit() | abort()   streaming, synchronous
//   writeStreamAtomic(path, chunks): Promise<number>   streaming from an (async) iterable
//   tempPathFor(path)
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

/** A file being written in pieces; nothing appears at `path` until commit(). */
export class AtomicFileWriter {
  private fd: number | undefined;
  private written = 0;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  static open(path: string): AtomicFileWriter {
    const temp = tempPathFor(path);
    return new AtomicFileWriter(path, temp, openSync(temp, 'w'));
  }

  get bytesWritten(): number {
    return this.written;
  }

  write(bytes: Uint8Array): void {
    if (this.fd === undefined) throw new Error(`${this.path}: write after commit or abort`);
    let offset = 0;
    while (offset < bytes.byteLength) offset += writeSync(this.fd, bytes, offset, bytes.byteLength - offset);
    this.written += bytes.byteLength;
  }

  /** fsync, close, rename over `path`. On failure the temp file is removed and the error rethrown. */
  commit(): void {
    if (this.fd === undefined) throw new Error(`${this.path}: commit after commit or abort`);
    try {
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.fd = undefined;
      renameSync(this.tempPath, this.path);
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  /** Drops the temp file; safe to call more than once. */
  abort(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {
        // already unusable; removing the file is what matters
      }
      this.fd = undefined;
    }
    rmSync(this.tempPath, { force: true });
  }
}

export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  const writer = AtomicFileWriter.open(path);
  try {
    writer.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    writer.commit();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

/** Writes every chunk of `chunks` to `path` atomically; returns the byte count. */
export async function writeStreamAtomic(path: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<number> {
  const writer = AtomicFileWriter.open(path);
  try {
    for await (const chunk of chunks) writer.write(chunk);
    writer.commit();
    return writer.bytesWritten;
  } catch (error) {
    writer.abort();
    throw error;
  }
}
