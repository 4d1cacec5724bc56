// The headless server in-process: token checks, static files, and the WebSocket protocol
// ({id, method, params} / {id, result|error} / {event, payload}) over the real handlers.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startHeadlessStudio, tokensMatch, type HeadlessStudio } from '../../../src-main/server/server';

let base: string;
let studio: HeadlessStudio;

beforeAll(async () => {
  base = realpathSync(mkdtempSync(join(tmpdir(), 'lora-server-')));
  mkdirSync(join(base, 'renderer', 'assets'), { recursive: true });
  mkdirSync(join(base, 'data'));
  writeFileSync(join(base, 'renderer', 'index.html'), '<!doctype html><title>probe</title>');
  writeFileSync(join(base, 'renderer', 'assets', 'app.js'), 'console.log(1)');
  writeFileSync(join(base, 'outside.txt'), 'not served');
  studio = await startHeadlessStudio({
    host: '127.0.0.1',
    port: 0,
    roots: [join(base, 'data')],
    rendererDir: join(base, 'renderer'),
  });
});

afterAll(async () => {
  await studio?.close();
  rmSync(base, { recursive: true, force: true });
});

function openSocket(query = `?token=${studio.token}`): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${studio.port}/api${query}`);
  return new Promise((resolve, reject) => ws.once('open', () => resolve(ws)).once('error', reject));
}

function nextMessage(ws: WebSocket): Promise<Record<string, unknown>> {
  return new Promise((resolve) =>
    ws.once('message', (d) => resolve(JSON.parse(d.toString()) as Record<string, unknown>)),
  );
}

describe('tokens', () => {
  it('match only when equal', () => {
    expect(tokensMatch('abc', 'abc')).toBe(true);
    expect(tokensMatch('abd', 'abc')).toBe(false);
    expect(tokensMatch('abcd', 'abc')).toBe(false);
    expect(tokensMatch(null, 'abc')).toBe(false);
    expect(tokensMatch('', 'abc')).toBe(false);
  });

  it('are random, long and URL-safe', () => {
    expect(studio.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(studio.url).toBe(`http://127.0.0.1:${studio.port}/?token=${studio.token}`);
  });
});

describe('HTTP', () => {
  it('serves the page with the token and leaves a cookie that admits its assets', async () => {
    const page = await fetch(studio.url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    const cookie = page.headers.get('set-cookie')!.split(';')[0];
    expect(cookie).toBe(`lora_studio_token_${studio.port}=${studio.token}`);

    expect((await fetch(`${studio.origin}/assets/app.js`)).status).toBe(401);
    const asset = await fetch(`${studio.origin}/assets/app.js`, { headers: { cookie } });
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toMatch(/text\/javascript/);
    expect(await asset.text()).toBe('console.log(1)');
    const wrongCookie = await fetch(`${studio.origin}/assets/app.js`, { headers: { cookie: `${cookie}x` } });
    expect(wrongCookie.status).toBe(401);
  });

  it('serves nothing outside the renderer folder and only GET/HEAD', async () => {
    const t = `token=${studio.token}`;
    for (const path of [
      '/../outside.txt',
      '/%2e%2e/outside.txt',
      '/assets/%2e%2e%2f%2e%2e%2foutside.txt',
      '/missing.js',
    ]) {
      expect((await fetch(`${studio.origin}${path}?${t}`)).status, path).toBe(404);
    }
    // fetch normalises `..` away; a raw request sends it as is.
    const raw = await new Promise<number>((resolve, reject) =>
      get({ host: '127.0.0.1', port: studio.port, path: `/../outside.txt?${t}` }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject),
    );
    expect(raw).toBe(404);
    expect((await fetch(`${studio.url}`, { method: 'POST' })).status).toBe(405);
  });
});

describe('WebSocket protocol', () => {
  it('refuses a socket without the token', async () => {
    await expect(openSocket('')).rejects.toThrow(/401/);
    await expect(openSocket('?token=nope')).rejects.toThrow(/401/);
  });

  it('answers calls with results and errors by id', async () => {
    const ws = await openSocket();
    ws.send(JSON.stringify({ id: 7, method: 'app.info' }));
    const info = await nextMessage(ws);
    expect(info.id).toBe(7);
    expect(info.result).toMatchObject({
      name: 'LoRA Studio',
      host: 'server',
      nodeVersion: process.versions.node,
    });
    expect((info.result as { providers: string[] }).providers).toContain('cpu');

    ws.send(JSON.stringify({ id: 8, method: 'fs.listFolder', params: { path: base } }));
    expect(await nextMessage(ws)).toEqual({
      id: 8,
      error: { code: 'path-outside-roots', message: `${base} is outside the folders opened in LoRA Studio.` },
    });

    for (const method of ['no.such', 'constructor', '__proto__', 'toString']) {
      ws.send(JSON.stringify({ id: 9, method }));
      expect(await nextMessage(ws), method).toMatchObject({ id: 9, error: { code: 'unknown-method' } });
    }

    ws.send(JSON.stringify({ id: 10, method: 'fs.listFolder', params: {} }));
    expect(await nextMessage(ws)).toMatchObject({ id: 10, error: { code: 'bad-request' } });

    ws.send(JSON.stringify({ id: 11, method: 'fs.pickFolder' }));
    expect(await nextMessage(ws)).toMatchObject({ id: 11, error: { code: 'unsupported' } });
    ws.close();
  });

  it('pushes events to every open socket', async () => {
    const [a, b] = await Promise.all([openSocket(), openSocket()]);
    const payload = { runId: 'r1', status: 'running' as const, message: 'probe' };
    const received = Promise.all([nextMessage(a), nextMessage(b)]);
    studio.events.emit('train.event', { type: 'status', ...payload });
    expect(await received).toEqual([
      { event: 'train.event', payload: { type: 'status', ...payload } },
      { event: 'train.event', payload: { type: 'status', ...payload } },
    ]);
    a.close();
    b.close();
  });

  it('closes a socket that sends something other than a request', async () => {
    const ws = await openSocket();
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send('{"method": "app.info"}'); // no id
    expect(await closed).toBe(1008);
  });
});
