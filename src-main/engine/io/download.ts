// Downloads a URL to a file in the models folder: bytes go to `<dest>.part` (kept when the
// connection drops, and resumed with an HTTP Range request next time), the sha256 is checked when
// one is given, and only a complete, verified file is renamed to `dest`.
//
//   downloadFile(url, dest, { sha256?, onProgress?, signal?, headers? }): Promise<DownloadResult>
//   DownloadError (message names the URL or file and the problem)
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';

export interface DownloadProgress {
  /** Bytes of the file on disk so far (resumed bytes included). */
  received: number;
  /** Full size when the server says it, else undefined. */
  total: number | undefined;
}

export interface DownloadOptions {
  /** Expected sha256 of the whole file, hex. */
  sha256?: string;
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  sha256: string;
  /** Bytes that came from an earlier, interrupted download. */
  resumedFrom: number;
}

export class DownloadError extends Error {
  override name = 'DownloadError';
}

export const partPathFor = (dest: string): string => `${dest}.part`;

async function hashFile(path: string, hash: ReturnType<typeof createHash>): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

/** Parses "bytes start-end/total" of a 206 response. */
function contentRange(header: string | null): { start: number; total: number | undefined } | undefined {
  const m = header ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header.trim()) : null;
  return m ? { start: Number(m[1]), total: m[2] === '*' ? undefined : Number(m[2]) } : undefined;
}

export async function downloadFile(url: string, dest: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  const part = partPathFor(dest);
  let resumeFrom = existsSync(part) ? statSync(part).size : 0;
  const headers: Record<string, string> = { ...options.headers };
  if (resumeFrom > 0) headers.range = `bytes=${resumeFrom}-`;

  let response: Response;
  try {
    response = await fetch(url, { headers, signal: options.signal, redirect: 'follow' });
  } catch (error) {
    throw new DownloadError(`${url}: request failed (${describe(error)})`);
  }

  let total: number | undefined;
  if (response.status === 206 && resumeFrom > 0) {
    const range = contentRange(response.headers.get('content-range'));
    if (!range || range.start !== resumeFrom) {
      await response.body?.cancel();
      rmSync(part, { force: true }); // the server answered another range: start over
      return downloadFile(url, dest, options);
    }
    total = range.total;
  } else if (response.status === 416 && resumeFrom > 0) {
    await response.body?.cancel();
    rmSync(part, { force: true }); // the part file is not a prefix of this resource: start over
    return downloadFile(url, dest, options);
  } else if (response.ok) {
    resumeFrom = 0; // a full response (the server ignored Range): replace the part file
    const length = response.headers.get('content-length');
    total = length !== null && response.headers.get('content-encoding') === null ? Number(length) : undefined;
  } else {
    await response.body?.cancel();
    throw new DownloadError(`${url}: HTTP ${response.status} ${response.statusText}`.trimEnd());
  }

  const hash = createHash('sha256');
  if (resumeFrom > 0) await hashFile(part, hash);
  const fd = openSync(part, resumeFrom > 0 ? 'a' : 'w');
  let received = resumeFrom;
  try {
    options.onProgress?.({ received, total });
    if (response.body) {
      try {
        for await (const chunk of response.body) {
          let offset = 0;
          while (offset < chunk.byteLength) offset += writeSync(fd, chunk, offset, chunk.byteLength - offset);
          hash.update(chunk);
          received += chunk.byteLength;
          options.onProgress?.({ received, total });
        }
      } catch (error) {
        throw new DownloadError(`${url}: connection lost after ${received} bytes (${describe(error)}); ${part} is kept and the next download resumes from it`);
      }
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }

  if (total !== undefined && received !== total)
    throw new DownloadError(`${url}: connection closed after ${received} of ${total} bytes; ${part} is kept and the next download resumes from it`);
  const digest = hash.digest('hex');
  if (options.sha256 && digest !== options.sha256.toLowerCase()) {
    rmSync(part, { force: true });
    throw new DownloadError(`${dest}: checksum mismatch: sha256 ${digest}, expected ${options.sha256.toLowerCase()} (the download was deleted)`);
  }
  renameSync(part, dest);
  return { path: dest, bytes: received, sha256: digest, resumedFrom: resumeFrom };
}

function describe(error: unknown): string {
  const e = error as { message?: string; cause?: { code?: string; message?: string } };
  return [e.message, e.cause?.code ?? e.cause?.message].filter(Boolean).join(': ');
}
