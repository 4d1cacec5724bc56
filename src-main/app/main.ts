// The Electron main process, kept thin: the window, the menu, and serving the API handlers over
// IPC. Heavy work (training, generation, merges) runs in utility processes (utility-worker.ts),
// never on this event loop.
import {
  app,
  BrowserWindow,
  dialog,
  Menu,
  shell,
  type MenuItemConstructorOptions,
  type OpenDialogOptions,
} from 'electron';
import { fileURLToPath } from 'node:url';
import { ApiEventBus } from '../api/events';
import { createStudio } from '../api/handlers';
import { PathGuard } from '../api/path-guard';
import { handleAll, sendEvent } from './ipc-main';
import { spawnUtilityWorker } from './utility-worker';

const guard = new PathGuard();
const events = new ApiEventBus();

async function pickFolder(): Promise<string | null> {
  const owner = BrowserWindow.getFocusedWindow();
  const options: OpenDialogOptions = {
    title: 'Open a folder',
    properties: ['openDirectory', 'createDirectory'],
  };
  const result = owner ? await dialog.showOpenDialog(owner, options) : await dialog.showOpenDialog(options);
  return result.canceled || result.filePaths.length === 0 ? null : result.filePaths[0];
}

const studio = createStudio({
  kind: 'electron',
  version: app.getVersion(),
  guard,
  events,
  pickFolder,
  spawnWorker: spawnUtilityWorker,
});
const handlers = studio.handlers;

function createWindow(): BrowserWindow {
  const win = new BrowserWindow({
    width: 1280,
    height: 800,
    minWidth: 960,
    minHeight: 600,
    title: 'LoRA Studio',
    show: false,
    webPreferences: {
      // A sandboxed CommonJS preload (see electron.vite.config.ts); the page gets only the bridge.
      preload: fileURLToPath(new URL('../preload/index.cjs', import.meta.url)),
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
    },
  });
  win.once('ready-to-show', () => win.show());

  // The page is ours alone: links open in the system browser, never inside the app.
  win.webContents.setWindowOpenHandler(({ url }) => {
    if (url.startsWith('https://')) void shell.openExternal(url);
    return { action: 'deny' };
  });
  win.webContents.on('will-navigate', (event) => event.preventDefault());

  const devServer = process.env.ELECTRON_RENDERER_URL; // set by `electron-vite dev`
  if (devServer) void win.loadURL(devServer);
  else void win.loadFile(fileURLToPath(new URL('../renderer/index.html', import.meta.url)));
  return win;
}

function buildMenu(): Menu {
  const template: MenuItemConstructorOptions[] = [
    {
      label: 'File',
      submenu: [
        { label: 'Open Folder…', accelerator: 'CmdOrCtrl+O', click: () => void handlers['fs.pickFolder']() },
        { type: 'separator' },
        { role: 'quit' },
      ],
    },
    { role: 'editMenu' },
    {
      label: 'View',
      submenu: [
        { role: 'reload' },
        { role: 'toggleDevTools' },
        { type: 'separator' },
        { role: 'togglefullscreen' },
      ],
    },
    { role: 'windowMenu' },
  ];
  if (process.platform === 'darwin') template.unshift({ role: 'appMenu' });
  return Menu.buildFromTemplate(template);
}

app.whenReady().then(() => {
  handleAll(handlers);
  events.subscribe((event, payload) => {
    for (const win of BrowserWindow.getAllWindows()) sendEvent(win.webContents, event, payload);
  });
  Menu.setApplicationMenu(buildMenu());
  createWindow();
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) createWindow();
  });
});

// The project is saved and no worker outlives the app.
app.on('will-quit', () => studio.shutdown());

app.on('window-all-closed', () => {
  if (process.platform !== 'darwin') app.quit();
});
