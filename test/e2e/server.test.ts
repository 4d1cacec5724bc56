// The headless studio end to end: the real `lora-studio serve`, Debian's Chromium, the built
// renderer, and API calls over the WebSocket with the real handlers (onnxruntime included).
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ensureBuilt, launchBrowser, startServerProcess, type ServerProcess } from './helpers';

let server: ServerProcess;
let browser: Browser;
let workspace: string;

beforeAll(async () => {
  await ensureBuilt();
  workspace = realpathSync(mkdtempSync(join(tmpdir(), 'lora-e2e-')));
  mkdirSync(join(workspace, 'images'));
  writeFileSync(join(workspace, 'images', 'cat.png'), 'not really a png');
  [server, browser] = await Promise.all([startServerProcess([workspace]), launchBrowser()]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (workspace) rmSync(workspace, { recursive: true, force: true });
});

describe('headless studio in Chromium', () => {
  it('shows the execution providers that app.info reports', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url);
    const providers = page.getByTestId('providers');
    await providers.waitFor({ timeout: 20_000 });
    const names = await providers.locator('li').allTextContents();
    expect(names).toContain('cpu');
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('LoRA Studio');

    // The opened folder arrives through fs.roots.
    expect(await page.getByTestId('roots').textContent()).toContain(workspace);

    // Keyboard: End moves to the last tab, which shows the same app.info over the socket.
    await page.getByRole('tab', { name: 'Dataset' }).focus();
    await page.keyboard.press('End');
    const settings = page.getByRole('tab', { name: 'Settings' });
    expect(await settings.getAttribute('aria-selected')).toBe('true');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Settings');
    expect(await page.getByRole('tabpanel').textContent()).toContain('headless server (websocket)');

    // The shell fits the target window without scrolling sideways.
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(1280);
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('closes a socket the page opens without the token', async () => {
    const page = await browser.newPage();
    await page.goto(server.url);
    // Page code as a string: it runs in the browser, not in this Node file.
    const outcome = await page.evaluate(`new Promise((resolve) => {
      const ws = new WebSocket('ws://' + location.host + '/api');
      ws.onopen = () => resolve('open');
      ws.onclose = () => resolve('closed');
    })`);
    expect(outcome).toBe('closed');
    await page.close();
  });
});

describe('headless studio access control', () => {
  it('refuses HTTP requests without the right token', async () => {
    expect((await fetch(`${server.origin}/`)).status).toBe(401);
    expect((await fetch(`${server.origin}/?token=wrong`)).status).toBe(401);
    expect((await fetch(`${server.origin}/index.html?token=${server.token}x`)).status).toBe(401);
    const ok = await fetch(server.url);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('<div id="app">');
  });

  it('refuses sockets without the right token', async () => {
    for (const query of ['', '?token=', '?token=wrong']) {
      const status = await new Promise<number | string>((resolve) => {
        const ws = new WebSocket(`${server.origin.replace('http', 'ws')}/api${query}`);
        ws.on('open', () => resolve('open'));
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('error', () => resolve('error'));
      });
      expect(status, query).toBe(401);
    }
  });

  it('lists opened folders over the socket and refuses paths outside them', async () => {
    const ws = new WebSocket(`${server.origin.replace('http', 'ws')}/api?token=${server.token}`);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const call = (id: number, method: string, params: unknown) =>
      new Promise<Record<string, unknown>>((resolve) => {
        const onMessage = (data: WebSocket.RawData) => {
          const msg = JSON.parse(data.toString()) as Record<string, unknown>;
          if (msg.id === id) {
            ws.off('message', onMessage);
            resolve(msg);
          }
        };
        ws.on('message', onMessage);
        ws.send(JSON.stringify({ id, method, params }));
      });

    const listing = await call(1, 'fs.listFolder', { path: workspace });
    expect(listing.result).toEqual({
      path: workspace,
      entries: [{ name: 'images', kind: 'folder', size: 0 }],
    });
    const outside = await call(2, 'fs.listFolder', { path: join(workspace, '..') });
    expect(outside.error).toMatchObject({ code: 'path-outside-roots' });
    ws.close();
  });
});
