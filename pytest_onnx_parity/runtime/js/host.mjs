// pytest-onnx-parity's Node.js host: one long-lived process that runs ONNX files on onnxruntime-node
// (backend "node") and onnxruntime-web's WASM backend (backend "web-wasm") for a whole Python run.
//
//   node host.mjs NPM_DIR
//
// Protocol: one JSON request per line on stdin, one JSON reply per line on stdout, in order:
//   {"id": 1, "cmd": "load", "backend": "node"|"web-wasm", "model": "/abs/model.onnx",
//    "externalData": [{"path": "model.onnx.data", "file": "/abs/model.onnx.data"}], "options": {...},
//    "numThreads": 2}
//      -> {"id": 1, "ok": true, "session": "s1", "inputs": [{"name", "dims", "type"}], "outputs": [...], "numThreads": n}
//   {"id": 2, "cmd": "run", "session": "s1", "feeds": [{"name", "dtype", "dims", "file"}], "outputs": [names] | null,
//    "dir": "/tmp/..."}
//      -> {"id": 2, "ok": true, "outputs": [{"name", "dtype", "dims", "file"}]}
//   {"cmd": "release", "session": "s1"}, {"cmd": "versions"}, {"cmd": "ping"}, {"cmd": "exit"}
// Errors: {"id": n, "ok": false, "error": "message"}. Tensors travel as raw little-endian files (float16 as
// its raw 16-bit words), never inside the JSON.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const out = process.stdout;
// stdout carries the protocol only: anything a library logs goes to stderr
console.log = console.error;
console.info = console.error;
console.debug = console.error;
console.warn = console.error;

const npmDir = process.argv[2] || process.cwd();
const requireFrom = createRequire(join(npmDir, 'package.json'));
const PACKAGES = { node: 'onnxruntime-node', 'web-wasm': 'onnxruntime-web' };
const ARRAYS = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array,
  uint64: BigUint64Array, bool: Uint8Array,
};
const libs = {};
const sessions = new Map();
let nextSession = 0;
let nextOutput = 0;
let wasmStarted = false; // onnxruntime-web reads env.wasm.numThreads once, when its first session starts

function lib(backend) {
  const pkg = PACKAGES[backend];
  if (!pkg) throw new Error(`unknown backend ${backend}: choose one of ${Object.keys(PACKAGES).join(', ')}`);
  if (!libs[backend]) libs[backend] = requireFrom(pkg);
  return libs[backend];
}

function version(pkg) {
  try {
    return JSON.parse(readFileSync(join(npmDir, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function describe(metadata, names) {
  return names.map((name, i) => {
    const m = (metadata && metadata[i]) || {};
    const type = m.isTensor === false ? 'non-tensor' : (m.type || 'unknown');
    return { name, dims: (m.shape || []).map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))), type };
  });
}

async function load(req) {
  const ort = lib(req.backend);
  const options = { ...(req.options || {}) };
  let model = req.model;
  if (req.backend === 'web-wasm') {
    if (req.numThreads && !wasmStarted) ort.env.wasm.numThreads = req.numThreads;
    wasmStarted = true;
    options.executionProviders = ['wasm'];
    model = new Uint8Array(readFileSync(req.model));
    if (req.externalData && req.externalData.length) {
      options.externalData = req.externalData.map((e) => ({ path: e.path, data: new Uint8Array(readFileSync(e.file)) }));
    }
  } else {
    options.executionProviders = ['cpu'];
  }
  const session = await ort.InferenceSession.create(model, options);
  const id = `s${++nextSession}`;
  sessions.set(id, { session, ort, backend: req.backend });
  return {
    session: id,
    inputs: describe(session.inputMetadata, session.inputNames),
    outputs: describe(session.outputMetadata, session.outputNames),
    numThreads: req.backend === 'web-wasm' ? ort.env.wasm.numThreads : (options.intraOpNumThreads || null),
  };
}

function toTensor(ort, feed) {
  const buf = readFileSync(feed.file);
  const Array_ = ARRAYS[feed.dtype];
  if (!Array_) throw new Error(`input ${feed.name}: dtype ${feed.dtype} is not supported by this host`);
  const bytes = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  return new ort.Tensor(feed.dtype, new Array_(bytes), feed.dims);
}

async function run(req) {
  const entry = sessions.get(req.session);
  if (!entry) throw new Error(`no session ${req.session} (released, or the host restarted): open the file again`);
  const feeds = {};
  for (const f of req.feeds) feeds[f.name] = toTensor(entry.ort, f);
  const fetches = req.outputs && req.outputs.length ? req.outputs : undefined;
  const results = await entry.session.run(feeds, fetches);
  const names = fetches || entry.session.outputNames;
  const outputs = [];
  for (const name of names) {
    const t = results[name];
    let data = t.data;
    if (t.type === 'string') throw new Error(`output ${name}: string tensors are not supported by this host`);
    if (t.type === 'float16' && !(data instanceof Uint16Array)) data = new Uint16Array(data.buffer, data.byteOffset, data.length);
    const file = join(req.dir, `out-${++nextOutput}.bin`);
    writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    outputs.push({ name, dtype: t.type, dims: t.dims, file });
    if (typeof t.dispose === 'function') t.dispose();
  }
  return { outputs };
}

async function release(req) {
  const entry = sessions.get(req.session);
  sessions.delete(req.session);
  if (entry) await entry.session.release();
  return {};
}

function versions() {
  return { node: process.versions.node, 'onnxruntime-node': version('onnxruntime-node'), 'onnxruntime-web': version('onnxruntime-web') };
}

const COMMANDS = { load, run, release, versions, ping: () => ({ pid: process.pid }) };

async function handle(line) {
  let req = {};
  try {
    req = JSON.parse(line);
    if (req.cmd === 'exit') process.exit(0);
    const command = COMMANDS[req.cmd];
    if (!command) throw new Error(`unknown command ${req.cmd}`);
    return { id: req.id, ok: true, ...(await command(req)) };
  } catch (err) {
    const message = err && err.message ? err.message : String(err);
    return { id: req.id, ok: false, error: message };
  }
}

let chain = Promise.resolve();
createInterface({ input: process.stdin, crlfDelay: Infinity }).on('line', (line) => {
  if (!line.trim()) return;
  chain = chain.then(async () => out.write(`${JSON.stringify(await handle(line))}\n`));
}).on('close', () => chain.then(() => process.exit(0)));
out.write(`${JSON.stringify({ id: 0, ok: true, ready: true, pid: process.pid })}\n`);
