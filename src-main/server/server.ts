// The headless studio: serves the built renderer over HTTP and the API contract over a WebSocket,
// so the studio runs in any browser on a machine without a display (a GPU box reached over SSH).
// Every request needs the random token printed at start; files are limited to opened folders.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { SocketPath, TokenParam, WireEvent, WireRequest, WireResponse } from '../api/contract';
import { ApiEventBus } from '../api/events';
import { callByName, createStudio, type ApiHandlers, type Studio } from '../api/handlers';
import { PathGuard } from '../api/path-guard';

const TOKEN_PARAM: TokenParam = 'token';
const SOCKET_PATH: SocketPath = '/api';
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export interface ServerOptions {
  /** Interface to bind; 127.0.0.1 unless the user asks otherwise. */
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Folder with the built renderer (index.html and assets). */
  rendererDir: string;
  handlers: ApiHandlers;
  events: ApiEventBus;
  /** Access token; a fresh random one when absent. */
  token?: string;
}

export interface RunningServer {
  /** The URL to open, token included. */
  url: string;
  origin: string;
  port: number;
  token: string;
  close(): Promise<void>;
}

export function createToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Constant-time token check; hashing first makes both sides the same length. */
export function tokensMatch(given: string | null | undefined, expected: string): boolean {
  if (typeof given !== 'string') return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const token = options.token ?? createToken();
  const rendererDir = resolve(options.rendererDir);
  if (!existsSync(join(rendererDir, 'index.html'))) {
    throw new Error(
      `${join(rendererDir, 'index.html')} not found: build the studio first with \`npm run build\`.`,
    );
  }
  let cookieName = 'lora_studio_token';

  const http = createServer((req, res) => {
    serveHttp(req, res).catch((err: unknown) => {
      console.error('LoRA Studio server:', err);
      if (!res.headersSent) send(res, 500, 'Internal error');
      else res.destroy();
    });
  });

  async function serveHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const fromQuery = url.searchParams.get(TOKEN_PARAM);
    if (tokensMatch(fromQuery, token)) {
      // The page's own asset requests carry no query, so the first visit leaves a cookie.
      res.setHeader('Set-Cookie', `${cookieName}=${token}; HttpOnly; SameSite=Strict; Path=/`);
    } else if (!tokensMatch(readCookie(req, cookieName), token)) {
      send(
        res,
        401,
        'LoRA Studio: open the URL that `lora-studio serve` printed; it carries the access token.',
      );
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'Method not allowed');
      return;
    }
    let file: string;
    try {
      file = resolve(rendererDir, '.' + decodeURIComponent(url.pathname));
    } catch {
      send(res, 400, 'Bad path');
      return;
    }
    const rel = relative(rendererDir, file);
    if (rel.startsWith('..') || isAbsolute(rel)) {
      send(res, 404, 'Not found');
      return;
    }
    const info = await stat(file).catch(() => null);
    if (info?.isDirectory()) file = join(file, 'index.html');
    else if (!info) {
      send(res, 404, 'Not found');
      return;
    }
    const body = await readFile(file).catch(() => null);
    if (!body) {
      send(res, 404, 'Not found');
      return;
    }
    res.writeHead(200, {
      'Content-Type': CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
      'Content-Length': body.length,
      ...SECURITY_HEADERS,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  const sockets = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== SOCKET_PATH || !tokensMatch(url.searchParams.get(TOKEN_PARAM), token)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    sockets.handleUpgrade(req, socket, head, (ws) => serveSocket(ws, options.handlers, options.events));
  });

  await new Promise<void>((done, fail) => {
    http.once('error', fail);
    http.listen(options.port, options.host, () => {
      http.off('error', fail);
      done();
    });
  });
  const port = (http.address() as AddressInfo).port;
  cookieName = `lora_studio_token_${port}`; // cookies ignore ports: keep two studios apart
  const hostInUrl = options.host.includes(':') ? `[${options.host}]` : options.host;
  const origin = `http://${hostInUrl}:${port}`;

  return {
    url: `${origin}/?${TOKEN_PARAM}=${token}`,
    origin,
    port,
    token,
    close: async () => {
      for (const ws of sockets.clients) ws.terminate();
      await new Promise<void>((done) => sockets.close(() => done()));
      http.closeAllConnections();
      await new Promise<void>((done) => http.close(() => done()));
    },
  };
}

/** One connected page: answers its requests and pushes every bus event to it. */
function serveSocket(ws: WebSocket, handlers: ApiHandlers, events: ApiEventBus): void {
  const unsubscribe = events.subscribe((event, payload) => {
    const frame: WireEvent = { event, payload };
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
  });
  ws.on('close', unsubscribe);
  ws.on('error', unsubscribe);
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const request = isBinary ? null : parseRequest(data);
    if (!request) {
      ws.close(1008, 'Expected a JSON {id, method, params} message');
      return;
    }
    void callByName(handlers, request.method, request.params).then((outcome) => {
      const frame: WireResponse = { id: request.id, ...outcome };
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
    });
  });
}

function parseRequest(data: RawData): WireRequest | null {
  try {
    const text = Array.isArray(data)
      ? Buffer.concat(data).toString('utf8')
      : Buffer.from(data as ArrayBuffer).toString('utf8');
    const msg: unknown = JSON.parse(text);
    if (typeof msg !== 'object' || msg === null) return null;
    const { id, method, params } = msg as Record<string, unknown>;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || typeof method !== 'string') return null;
    return { id, method, params };
  } catch {
    return null;
  }
}

function readCookie(req: IncomingMessage, name: string): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

function send(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS });
  res.end(text);
}

const SECURITY_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  // The page URL carries the token: never send it on as a referrer.
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
};

export interface HeadlessStudioOptions {
  host: string;
  port: number;
  /** Folders the studio may read and write; everything else is refused. */
  roots: string[];
  rendererDir?: string;
  token?: string;
  /** The studio's home (models, cache, projects); default $LORA_STUDIO_HOME or ~/.cache/lora-studio. */
  home?: string;
}

export interface HeadlessStudio extends RunningServer {
  guard: PathGuard;
  events: ApiEventBus;
  studio: Studio;
}

/** The whole headless studio: API handlers over opened folders, served with the built renderer. */
export async function startHeadlessStudio(options: HeadlessStudioOptions): Promise<HeadlessStudio> {
  const guard = new PathGuard(options.roots);
  const events = new ApiEventBus();
  // Workers are child processes of this one (child_process.fork through tsx).
  const studio = createStudio({ kind: 'server', version: packageVersion(), guard, events, home: options.home });
  const server = await startServer({
    host: options.host,
    port: options.port,
    rendererDir: options.rendererDir ?? defaultRendererDir(),
    handlers: studio.handlers,
    events,
    token: options.token,
  });
  return {
    ...server,
    guard,
    events,
    studio,
    close: async () => {
      studio.shutdown(); // project saved, training and task workers ended
      await server.close();
    },
  };
}

/** out/renderer of this checkout (the server runs from source, next to the build). */
export function defaultRendererDir(): string {
  return fileURLToPath(new URL('../../out/renderer', import.meta.url));
}

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}
