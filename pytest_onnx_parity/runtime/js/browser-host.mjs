// One long-lived Node.js process that drives one headless Chromium for pytest-onnx-parity: onnxruntime-web on
// WASM or WebGPU in a real page, and the canvas preprocessor (createImageBitmap + drawImage + getImageData).
//
// Protocol: one JSON command per line on stdin, {"id": N, "cmd": "...", ...}; one JSON reply per line on stdout,
// {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error": "..."}. Tensors never travel as JSON:
// the page fetches feeds and images from files this process serves on 127.0.0.1, and posts its outputs back as
// raw bytes, which land in files under the output directory named in the reply.
//
// Environment: ONNX_PARITY_NPM_DIR (the npm directory holding node_modules), ONNX_PARITY_CHROMIUM (the browser),
// ONNX_PARITY_OUT_DIR (where outputs are written), ONNX_PARITY_PROFILE_DIR (Chromium's fresh profile),
// ONNX_PARITY_CHROMIUM_ARGS (extra flags, JSON list).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const NPM_DIR = process.env.ONNX_PARITY_NPM_DIR;
const CHROMIUM = process.env.ONNX_PARITY_CHROMIUM || '/usr/bin/chromium';
const OUT_DIR = process.env.ONNX_PARITY_OUT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-parity-out-'));
const EXTRA_ARGS = JSON.parse(process.env.ONNX_PARITY_CHROMIUM_ARGS || '[]');
const require = createRequire(path.join(NPM_DIR, 'package.json'));
const ORT_DIST = path.join(NPM_DIR, 'node_modules', 'onnxruntime-web', 'dist');
const ORT_VERSION = JSON.parse(fs.readFileSync(path.join(ORT_DIST, '..', 'package.json'), 'utf8')).version;
const DEFAULT_TIMEOUT_S = 600;
const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
console.log = (...a) => process.stderr.write(a.join(' ') + '\n');  // stdout carries the protocol only

// ---- the local server: the page, onnxruntime-web's files, registered files, posted outputs ------------------------
const served = new Map();  // token -> path on disk
let nextToken = 0;
function serve(file) {
  const token = `f${nextToken++}`;
  served.set(token, file);
  return `/file/${token}/${encodeURIComponent(path.basename(file))}`;
}
const TYPES = { '.mjs': 'text/javascript', '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
const PAGE = `<!doctype html><meta charset="utf-8"><title>pytest-onnx-parity</title>
<script type="module" src="/page.mjs"></script>`;
const PAGE_JS = fs.readFileSync(new URL('./browser-page.mjs', import.meta.url), 'utf8');

function handle(req, res) {
  // cross-origin isolation: SharedArrayBuffer, so onnxruntime-web's WASM backend may use threads
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
  res.setHeader('Cache-Control', 'no-store');
  const url = new URL(req.url, 'http://127.0.0.1');
  const parts = url.pathname.split('/').filter(Boolean);
  if (req.method === 'POST' && parts[0] === 'out' && /^[\w.-]+$/.test(parts[1] || '')) {
    const dest = path.join(OUT_DIR, parts[1]);
    const sink = fs.createWriteStream(dest);
    req.pipe(sink);
    sink.on('finish', () => res.end('ok'));
    sink.on('error', (e) => { res.statusCode = 500; res.end(String(e)); });
    return;
  }
  let file = null;
  if (url.pathname === '/') { res.setHeader('Content-Type', 'text/html'); return res.end(PAGE); }
  if (url.pathname === '/favicon.ico') { res.statusCode = 204; return res.end(); }
  if (url.pathname === '/page.mjs') { res.setHeader('Content-Type', 'text/javascript'); return res.end(PAGE_JS); }
  if (parts[0] === 'ort' && parts.length === 2 && !parts[1].includes('..')) file = path.join(ORT_DIST, parts[1]);
  if (parts[0] === 'file') file = served.get(parts[1]) || null;
  if (!file || !fs.existsSync(file)) { res.statusCode = 404; return res.end('not found'); }
  res.setHeader('Content-Type', TYPES[path.extname(file)] || 'application/octet-stream');
  fs.createReadStream(file).pipe(res);
}
const server = http.createServer(handle);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const ORIGIN = `http://127.0.0.1:${server.address().port}`;

// ---- Chromium: one browser, one page per WASM thread count (onnxruntime-web reads numThreads once per page) -------
const puppeteer = require('puppeteer-core');
const userDataDir = process.env.ONNX_PARITY_PROFILE_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-parity-chromium-'));
fs.mkdirSync(userDataDir, { recursive: true });
const CHROMIUM_ARGS = [
  '--no-first-run', '--disable-quic', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-default-apps', '--disable-extensions', '--no-default-browser-check',
  '--enable-unsafe-webgpu', '--disable-dev-shm-usage', '--js-flags=--max-old-space-size=8192',
  ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []), ...EXTRA_ARGS];
let browser = null;
const pages = new Map();  // key -> {page, log}
async function getBrowser() {
  if (browser && browser.connected) return browser;
  // pipe: Chromium exits when this process does, even killed (a websocket would leave it running)
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, userDataDir, args: CHROMIUM_ARGS, pipe: true,
    protocolTimeout: DEFAULT_TIMEOUT_S * 1000 + 60000 });
  pages.clear();
  return browser;
}
async function getPage(key) {
  const have = pages.get(key);
  if (have && !have.page.isClosed()) return have;
  const page = await (await getBrowser()).newPage();
  const log = [];
  const keep = (line) => { log.push(line); if (log.length > 40) log.shift(); };
  page.on('console', (m) => keep(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => keep(`page error: ${e.message}`));
  await page.goto(`${ORIGIN}/`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.parityHost !== undefined, { timeout: 30000 });
  const entry = { page, log };
  pages.set(key, entry);
  return entry;
}
async function dropPage(key) {
  const have = pages.get(key);
  pages.delete(key);
  if (have) await have.page.close().catch(() => {});
}
const pageKey = (threads) => `threads=${threads ?? 'default'}`;

// ---- the commands -----------------------------------------------------------------------------------------------
const sessionPages = new Map();  // session id -> page key
let nextSession = 0;
async function call(key, fn, args) {
  const { page } = await getPage(key);
  return page.evaluate((name, a) => window.parityHost[name](a), fn, args);
}
const COMMANDS = {
  async hello() {
    return { origin: ORIGIN, out_dir: OUT_DIR, ort_version: ORT_VERSION, pid: process.pid };
  },
  async load(c) {
    const key = pageKey(c.numThreads);
    const sid = `s${nextSession++}`;
    const externalData = (c.external || []).map((e) => ({ path: e.path, data: serve(e.file) }));
    const res = await call(key, 'load', { sid, url: serve(c.model), backend: c.backend, bundle: c.bundle,
      numThreads: c.numThreads, options: c.options || {}, externalData });
    sessionPages.set(sid, key);
    return { session: sid, ...res };
  },
  async run(c) {
    const key = sessionPages.get(c.session);
    if (!key) throw new Error(`no session ${c.session} (it was released, or its page was closed after a timeout)`);
    const feeds = c.feeds.map((f) => ({ ...f, url: serve(f.file) }));
    try {
      const res = await call(key, 'run', { sid: c.session, feeds, outputs: c.outputs, token: `r${nextToken++}` });
      return res.map((o) => ({ ...o, file: path.join(OUT_DIR, o.token) }));
    } finally {
      for (const f of feeds) {
        served.delete(f.url.split('/')[2]);
        if (f.cleanup) fs.rm(f.file, () => {});
      }
    }
  },
  async release(c) {
    const key = sessionPages.get(c.session);
    sessionPages.delete(c.session);
    if (key && pages.has(key)) await call(key, 'release', { sid: c.session });
    return {};
  },
  async info(c) {
    const res = await call(pageKey(c.numThreads), 'info', {});
    return { ...res, chromium: await (await getBrowser()).version(), ort_version: ORT_VERSION, chromium_path: CHROMIUM };
  },
  async canvas(c) {
    const images = c.images.map((f) => serve(f));
    const res = await call(pageKey('canvas'), 'canvas', { ...c, images, token: `c${nextToken++}` });
    return res.map((o) => ({ ...o, file: path.join(OUT_DIR, o.token) }));
  },
  async quit() {
    setTimeout(shutdown, 10);
    return {};
  },
};

function withTimeout(promise, seconds, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${seconds} s in Chromium`)), seconds * 1000);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function execute(msg) {
  const fn = COMMANDS[msg.cmd];
  if (!fn) return out({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` });
  const seconds = msg.timeout_s || DEFAULT_TIMEOUT_S;
  try {
    const result = await withTimeout(fn(msg), seconds, msg.cmd);
    out({ id: msg.id, ok: true, result });
  } catch (e) {
    const key = msg.session ? sessionPages.get(msg.session) : pageKey(msg.cmd === 'canvas' ? 'canvas' : msg.numThreads);
    const log = (pages.get(key)?.log || []).slice(-8);
    const timedOut = /took over/.test(String(e && e.message));
    if (timedOut && key) {  // a page stuck in a computation is dropped: the next command gets a fresh one
      for (const [sid, k] of sessionPages) if (k === key) sessionPages.delete(sid);
      await dropPage(key);
    }
    out({ id: msg.id, ok: false, error: String((e && e.message) || e), timeout: timedOut, log });
  }
}

let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let msg;
  try { msg = JSON.parse(line); } catch (e) { return out({ id: null, ok: false, error: `bad JSON: ${e.message}` }); }
  queue = queue.then(() => execute(msg));  // one command at a time, in order
});
rl.on('close', shutdown);

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  try { if (browser) await withTimeout(browser.close(), 10, 'closing Chromium'); } catch (e) {
    try { browser.process()?.kill('SIGKILL'); } catch (_) { /* gone */ }
  }
  server.close();
  fs.rm(userDataDir, { recursive: true, force: true }, () => process.exit(0));
}
process.on('SIGTERM', shutdown);
out({ id: 0, ok: true, result: { ready: true, origin: ORIGIN, out_dir: OUT_DIR, ort_version: ORT_VERSION } });
