import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadFile, DownloadError, partPathFor, type DownloadProgress } from '../../../src-main/engine/io/download';

const work = mkdtempSync(join(tmpdir(), 'download-test-'));
const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff));
const payloadSha = createHash('sha256').update(payload).digest('hex');
const requests: { path: string; range: string | undefined }[] = [];
let dropNext = true;
let server: Server;
let base = '';

beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push({ path: req.url ?? '', range: req.headers.range });
    if (req.url === '/missing') {
      res.writeHead(404, 'Not Found').end();
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      res.writeHead(206, { 'content-length': payload.length - start, 'content-range': `bytes ${start}-${payload.length - 1}/${payload.length}` });
      res.end(payload.subarray(start));
      return;
    }
    res.writeHead(200, { 'content-length': payload.length });
    if (req.url === '/model.safetensors' && dropNext) {
      dropNext = false;
      // Send part of the body, then cut the connection.
      res.write(payload.subarray(0, 120_000), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(payload);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  rmSync(work, { recursive: true, force: true });
});

describe('downloadFile', () => {
  it('keeps the .part file when the connection drops, then resumes with a Range request', async () => {
    const dest = join(work, 'model.safetensors');
    const error = await downloadFile(`${base}/model.safetensors`, dest, { sha256: payloadSha }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as Error).message).toMatch(/model\.safetensors: connection (lost|closed) after \d+ /);
    expect(existsSync(dest)).toBe(false);
    const kept = statSync(partPathFor(dest)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(payload.length);

    const progress: DownloadProgress[] = [];
    const result = await downloadFile(`${base}/model.safetensors`, dest, { sha256: payloadSha, onProgress: (p) => progress.push(p) });
    expect(requests.at(-1)).toEqual({ path: '/model.safetensors', range: `bytes=${kept}-` });
    expect(result).toEqual({ path: dest, bytes: payload.length, sha256: payloadSha, resumedFrom: kept });
    expect(readFileSync(dest).equals(payload)).toBe(true);
    expect(existsSync(partPathFor(dest))).toBe(false);
    expect(progress[0]).toEqual({ received: kept, total: payload.length });
    expect(progress.at(-1)).toEqual({ received: payload.length, total: payload.length });
    for (let i = 1; i < progress.length; i++) expect(progress[i].received).toBeGreaterThanOrEqual(progress[i - 1].received);
  });

  it('reports HTTP errors and checksum mismatches, naming the URL or file', async () => {
    const dest = join(work, 'other.safetensors');
    await expect(downloadFile(`${base}/missing`, dest)).rejects.toThrow(`${base}/missing: HTTP 404 Not Found`);
    await expect(downloadFile(`${base}/whole`, dest, { sha256: '0'.repeat(64) })).rejects.toThrow(`${dest}: checksum mismatch: sha256 ${payloadSha}, expected ${'0'.repeat(64)}`);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(partPathFor(dest))).toBe(false);
    const ok = await downloadFile(`${base}/whole`, dest);
    expect(ok.sha256).toBe(payloadSha);
    await expect(downloadFile('http://127.0.0.1:1/nothing', join(work, 'x'))).rejects.toThrow(/127\.0\.0\.1:1\/nothing: request failed/);
  });
});
