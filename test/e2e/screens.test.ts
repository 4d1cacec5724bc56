// Every studio screen in Debian's Chromium against the real headless server (`lora-studio serve`,
// the embedded tiny model, training in a worker process): each screen is used the way a user
// would, mostly from the keyboard, every form control must have a label, nothing may scroll
// sideways at 1280x800, and each screen is saved as docs/screenshots/<screen>.png.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, launchBrowser, repoRoot, startServerProcess, type ServerProcess } from './helpers';

const SCREENSHOTS = join(repoRoot, 'docs/screenshots');
const VIEWPORT = { width: 1280, height: 800 };

let server: ServerProcess;
let browser: Browser;
let page: Page;
let workspace: string;
let dataset: string;
const pageErrors: string[] = [];
const savedHome = process.env.LORA_STUDIO_HOME;

beforeAll(async () => {
  await ensureBuilt();
  workspace = realpathSync(mkdtempSync(join(tmpdir(), 'lora-screens-')));
  dataset = join(workspace, 'shapes');
  cpSync(join(repoRoot, 'resources/sample-dataset'), dataset, { recursive: true });
  process.env.LORA_STUDIO_HOME = join(workspace, 'home'); // the server's models, cache and project
  [server, browser] = await Promise.all([startServerProcess([workspace]), launchBrowser()]);
  mkdirSync(SCREENSHOTS, { recursive: true });
  page = await browser.newPage({ viewport: VIEWPORT });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(server.url);
  await page.getByTestId('providers').waitFor({ timeout: 20_000 });
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (savedHome === undefined) delete process.env.LORA_STUDIO_HOME;
  else process.env.LORA_STUDIO_HOME = savedHome;
  if (workspace) rmSync(workspace, { recursive: true, force: true });
});

async function showScreen(name: string): Promise<void> {
  await page.getByRole('tab', { name, exact: true }).click();
  expect(await page.getByRole('tab', { name, exact: true }).getAttribute('aria-selected')).toBe('true');
}

/** Form controls on the page without an accessible name (by label, aria-label or aria-labelledby). */
function unlabelledControls(): Promise<string[]> {
  return page.evaluate(`(() => {
    const controls = [...document.querySelectorAll('input, select, textarea, button, [role="option"], [role="tab"]')];
    return controls
      .filter((el) => {
        if (el.type === 'hidden') return false;
        const byLabel = el.labels && [...el.labels].some((l) => l.textContent.trim() !== '');
        const byAria = (el.getAttribute('aria-label') || '').trim() !== '';
        const byRef = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).some((id) => {
          const ref = id && document.getElementById(id);
          return ref && ref.textContent.trim() !== '';
        });
        const byText = el.tagName === 'BUTTON' && el.textContent.trim() !== '';
        return !(byLabel || byAria || byRef || byText);
      })
      .map((el) => el.outerHTML.slice(0, 120));
  })()`);
}

/** Checks what every screen must satisfy, then saves its screenshot. */
async function checkAndCapture(screen: string): Promise<void> {
  expect(await unlabelledControls(), `unlabelled controls on ${screen}`).toEqual([]);
  expect(await page.evaluate('document.documentElement.scrollWidth'), `${screen} scrolls sideways`).toBeLessThanOrEqual(VIEWPORT.width);
  await page.evaluate(`document.activeElement && document.activeElement.blur(); document.querySelector('main').scrollTo(0, 0)`);
  await page.mouse.move(VIEWPORT.width - 1, VIEWPORT.height - 1); // no hover effects in the picture
  await page.screenshot({ path: join(SCREENSHOTS, `${screen}.png`) });
  expect(pageErrors).toEqual([]);
}

const activeLabel = () => page.evaluate<string>(`(() => {
  const el = document.activeElement;
  return (el.labels && el.labels[0] ? el.labels[0].textContent : el.getAttribute('aria-label') || el.textContent || '').trim();
})()`);

describe('the studio screens in Chromium', () => {
  it('Dataset: opens a folder from the keyboard, shows thumbnails and badges, captions image after image', async () => {
    await showScreen('Dataset');
    const folderInput = page.getByLabel('Dataset folder');
    await folderInput.fill(dataset);
    await folderInput.press('Enter'); // the form submits like the Open button
    const grid = page.getByRole('listbox', { name: 'Images' });
    await expect.poll(() => grid.getByRole('option').count(), { timeout: 30_000 }).toBe(8);
    await expect.poll(() => grid.locator('img').count(), { timeout: 30_000 }).toBe(8);
    expect(await page.getByTestId('dataset-summary').textContent()).toMatch(/8\s+images/);

    // Arrow keys move the selection in the grid; Enter goes to the caption.
    const options = grid.getByRole('option');
    await options.first().focus();
    await page.keyboard.press('ArrowRight');
    expect(await options.nth(1).getAttribute('aria-selected')).toBe('true');
    expect(await activeLabel()).toContain('green-triangle.png');
    await page.keyboard.press('Enter');
    expect(await activeLabel()).toBe('Caption');

    // Type, then Alt+ArrowDown: the caption is saved to its sidecar and the next image is shown.
    const caption = page.getByLabel('Caption', { exact: true });
    await caption.fill('shapez, a green triangle, keyboard edit');
    await page.keyboard.press('Alt+ArrowDown');
    await expect.poll(() => options.nth(2).getAttribute('aria-selected')).toBe('true');
    expect(readFileSync(join(dataset, 'green-triangle.txt'), 'utf8').trim()).toBe('shapez, a green triangle, keyboard edit');
    expect(await activeLabel()).toBe('Caption'); // still typing captions
    // Ctrl+Shift+Enter goes back; the saved caption and its token count are there.
    await page.keyboard.press('Control+Shift+Enter');
    await expect.poll(() => options.nth(1).getAttribute('aria-selected')).toBe('true');
    expect(await caption.inputValue()).toBe('shapez, a green triangle, keyboard edit');
    expect(await page.getByTestId('caption-tokens').textContent()).toMatch(/\d+ \/ 75 tokens/);

    // A bulk prepend reaches every caption file.
    await page.getByLabel('Operation').selectOption('prepend');
    await page.getByLabel('Text', { exact: true }).fill('zq');
    await page.getByRole('button', { name: 'Apply to captions' }).click();
    await expect.poll(() => page.getByText(/Changed \d+ captions?\./).count(), { timeout: 10_000 }).toBe(1);
    expect(readFileSync(join(dataset, 'red-circle.txt'), 'utf8').startsWith('zq')).toBe(true);
    expect(await page.getByRole('cell', { name: 'zq', exact: true }).count()).toBe(1); // the tag table

    await checkAndCapture('dataset');
  });

  it('Model: the embedded model is listed and chosen; a bad path shows the error', async () => {
    await showScreen('Model');
    const embedded = page.getByRole('radio').first();
    await embedded.waitFor();
    expect(await embedded.isChecked()).toBe(true);
    await page.getByLabel('Model path').fill(join(workspace, 'no-such-model'));
    await page.getByLabel('Model path').press('Enter');
    await page.getByRole('alert').waitFor({ timeout: 10_000 });
    expect(await page.getByRole('alert').textContent()).toContain('no-such-model');
    await page.getByLabel('Model path').fill('');
    await checkAndCapture('model');
  });

  it('Train: a preset fills the settings, the estimate follows them, Advanced opens from the keyboard', async () => {
    await showScreen('Train');
    await page.getByLabel('Preset').selectOption({ label: 'Tiny (embedded model, quick try)' });
    expect(await page.getByLabel('Rank').inputValue()).toBe('4');
    expect(await page.getByLabel('Learning rate').inputValue()).toBe('0.001');
    await page.getByLabel('Steps', { exact: true }).fill('40');
    await page.getByLabel('Preview prompts').fill('zq shapez, a red circle');
    await expect.poll(async () => (await page.getByTestId('estimate').textContent()) ?? '', { timeout: 30_000 }).toMatch(/Steps\s*40/);

    const advanced = page.getByText('Advanced', { exact: true });
    await advanced.focus();
    await page.keyboard.press('Enter');
    await page.getByLabel('Alpha').waitFor({ state: 'visible' });
    await page.getByLabel('Preview every').fill('10');
    await page.getByLabel('Preview quality').fill('2');
    await page.getByLabel('Output file').fill(join(workspace, 'shapes.safetensors'));
    expect(await page.getByRole('button', { name: 'Start training' }).isEnabled()).toBe(true);
    expect(await page.getByRole('button', { name: 'Pause' }).isDisabled()).toBe(true);
    await checkAndCapture('train');
  });

  it('Live: a run streams loss, status and previews; pause, resume and the log scale work', async () => {
    await showScreen('Train');
    await page.getByRole('button', { name: 'Start training' }).click();
    await showScreen('Live');
    const chart = page.getByRole('img', { name: /Loss curve/ });
    const chartStep = async () => Number(/up to step (\d+)/.exec((await chart.getAttribute('aria-label')) ?? '')?.[1] ?? 0);
    await expect.poll(chartStep, { timeout: 120_000 }).toBeGreaterThan(2);

    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => page.getByTestId('run-status').textContent(), { timeout: 30_000 }).toBe('paused');
    await page.getByRole('button', { name: 'Resume' }).click();
    await expect.poll(() => page.getByTestId('run-status').textContent(), { timeout: 30_000 }).toBe('running');

    await page.getByLabel('Log scale').focus();
    await page.keyboard.press('Space');
    expect(await page.getByLabel('Log scale').isChecked()).toBe(true);
    await expect.poll(() => page.locator('.u-axis').first().count()).toBe(1);

    await expect.poll(() => page.getByTestId('run-status').textContent(), { timeout: 180_000 }).toBe('finished');
    // Baseline plus a preview every 10 steps, compared side by side.
    for (const step of [0, 10, 20, 30, 40]) expect(await page.getByRole('button', { name: `Compare step ${step}`, exact: true }).count()).toBe(1);
    await page.getByLabel('Step N').selectOption('10');
    expect(await page.getByRole('img', { name: /^Step N = 10/ }).count()).toBe(1);
    expect(await page.getByRole('img', { name: /^Baseline \(step 0\)/ }).count()).toBe(1);
    expect(await page.getByTestId('live-stats').textContent()).toContain('40 / 40');
    await checkAndCapture('live');
  }, 300_000);

  it('Generate: base and LoRA side by side with the same seed, each with a save link', async () => {
    await showScreen('Generate');
    await page.getByLabel('Prompt', { exact: true }).fill('zq shapez, a red circle');
    await page.getByLabel('Sampling steps').fill('4');
    await page.getByLabel('LoRA file').fill(join(workspace, 'shapes.safetensors'));
    await page.getByLabel('LoRA strength').focus();
    await page.keyboard.press('ArrowLeft'); // 1 -> 0.95
    expect(await page.getByLabel('LoRA strength').inputValue()).toBe('0.95');
    await page.getByRole('button', { name: 'Generate' }).click();
    const saves = page.getByRole('link', { name: 'Save image' });
    await expect.poll(() => saves.count(), { timeout: 120_000 }).toBe(2);
    expect(await saves.first().getAttribute('href')).toMatch(/^data:image\/png;base64,/);
    expect(await page.getByTestId('image-lora').textContent()).toContain('shapes.safetensors at 0.95');
    await checkAndCapture('generate');
  }, 180_000);

  it('Export: a run output, its metadata, and an fp32 export', async () => {
    await showScreen('Export');
    await page.getByLabel('From a run').selectOption({ index: 1 });
    await page.getByTestId('metadata').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('metadata').textContent()).toContain('ss_network_dim');
    await page.getByLabel('fp32').check();
    await page.getByRole('button', { name: 'Export', exact: true }).click();
    await page.getByText(/Exported to/).waitFor({ timeout: 30_000 });
    expect(await page.getByRole('status').first().textContent()).toContain('shapes-kohya-fp32.safetensors');
    await checkAndCapture('export');
  });

  it('Settings: device and folders from the back end', async () => {
    await showScreen('Settings');
    const device = page.getByLabel('Device');
    await device.waitFor();
    expect(await device.inputValue()).toBe('cpu');
    expect(await page.getByLabel('Models folder').inputValue()).toContain(workspace);
    await checkAndCapture('settings');
  });

  it('the tabs work from the keyboard and focus is visible', async () => {
    const tab = page.getByRole('tab', { name: 'Settings' });
    await tab.focus();
    await page.keyboard.press('Home');
    expect(await page.getByRole('tab', { name: 'Dataset' }).getAttribute('aria-selected')).toBe('true');
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { name: 'Model' }).getAttribute('aria-selected')).toBe('true');
    // Tab leaves the tab list for the screen's first control, with a visible focus ring.
    await page.keyboard.press('Tab');
    const outline = await page.evaluate<string>('getComputedStyle(document.activeElement).outlineStyle');
    expect(outline).not.toBe('none');
    expect(pageErrors).toEqual([]);
  });
});
