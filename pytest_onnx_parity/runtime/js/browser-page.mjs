// The page browser-host.mjs opens in Chromium: onnxruntime-web as a web page imports it, and the canvas
// preprocessing a web page does. Called through window.parityHost; feeds, models and images are fetched from the
// local server, outputs are posted back to it as raw bytes.
const BUNDLES = { wasm: 'ort.bundle.min.mjs', webgpu: 'ort.webgpu.bundle.min.mjs' };
const modules = new Map();  // bundle file -> the imported onnxruntime-web module
const sessions = new Map();  // session id -> {ort, session}
const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array,
  uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
  bool: Uint8Array, float16: globalThis.Float16Array || Uint16Array,
};

async function ortModule(backend, bundle, numThreads) {
  const file = bundle || BUNDLES[backend] || BUNDLES.wasm;
  if (!modules.has(file)) {
    const ort = await import(`/ort/${file}`);
    ort.env.wasm.wasmPaths = '/ort/';
    if (numThreads) ort.env.wasm.numThreads = numThreads;
    ort.env.logLevel = 'error';
    modules.set(file, ort);
  }
  return { ort: modules.get(file), file };
}

async function bytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  return res.arrayBuffer();
}

async function post(token, data) {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const res = await fetch(`/out/${token}`, { method: 'POST', body: view });
  if (!res.ok) throw new Error(`posting ${token}: HTTP ${res.status}`);
}

function meta(list, names) {
  return names.map((name, i) => {
    const m = (list || [])[i] || {};
    return { name, type: m.type ?? null, shape: m.shape ?? null, isTensor: m.isTensor ?? true };
  });
}

async function load(a) {
  const { ort, file } = await ortModule(a.backend, a.bundle, a.numThreads);
  const options = { executionProviders: [a.backend], ...a.options };
  if (a.externalData.length) options.externalData = a.externalData;
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(await bytes(a.url), options);
  sessions.set(a.sid, { ort, session });
  return {
    load_ms: performance.now() - t0, bundle: file,
    inputs: meta(session.inputMetadata, session.inputNames), outputs: meta(session.outputMetadata, session.outputNames),
    numThreads: ort.env.wasm.numThreads ?? null, crossOriginIsolated: self.crossOriginIsolated,
  };
}

async function run(a) {
  const { ort, session } = sessions.get(a.sid) || {};
  if (!session) throw new Error(`no session ${a.sid}`);
  const feeds = {};
  for (const f of a.feeds) {
    const buf = await bytes(f.url);
    let data = new ARRAYS[f.type](buf);
    if (f.type === 'bool') data = new Uint8Array(buf);
    feeds[f.name] = new ort.Tensor(f.type, data, f.dims);
  }
  const t0 = performance.now();
  const results = await session.run(feeds, a.outputs && a.outputs.length ? a.outputs : undefined);
  const runMs = performance.now() - t0;
  const outs = [];
  let i = 0;
  for (const [name, tensor] of Object.entries(results)) {
    const data = tensor.location && tensor.location !== 'cpu' ? await tensor.getData(true) : tensor.data;
    const token = `${a.token}-${i++}`;
    await post(token, data);
    outs.push({ name, type: tensor.type, dims: Array.from(tensor.dims), token, run_ms: runMs,
                array: data.constructor.name });
    tensor.dispose?.();
  }
  return outs;
}

async function release(a) {
  const s = sessions.get(a.sid);
  sessions.delete(a.sid);
  if (s) await s.session.release();
  return {};
}

async function adapterInfo() {
  if (!navigator.gpu) return { available: false, reason: 'navigator.gpu is undefined (WebGPU is off in this Chromium)' };
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return { available: false, reason: 'navigator.gpu.requestAdapter() returned null (no WebGPU adapter)' };
  const i = adapter.info || {};
  return {
    available: true, features: [...adapter.features].sort(),
    info: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
            isFallbackAdapter: i.isFallbackAdapter ?? adapter.isFallbackAdapter ?? null },
  };
}

async function info() {
  const res = { userAgent: navigator.userAgent, hardwareConcurrency: navigator.hardwareConcurrency,
                crossOriginIsolated: self.crossOriginIsolated, float16Array: !!globalThis.Float16Array };
  res.webgpu = await adapterInfo();
  return res;
}

async function canvas(a) {
  // what a web page does: createImageBitmap, drawImage to the model's size, getImageData (transformers.js' way)
  const outs = [];
  let i = 0;
  for (const url of a.images) {
    const blob = await (await fetch(url)).blob();
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: a.colorSpaceConversion || 'default' });
    const [w, h] = a.raw ? [bitmap.width, bitmap.height] : [a.resize[0], a.resize[1]];
    const can = new OffscreenCanvas(w, h);
    const ctx = can.getContext('2d');
    if (a.quality) ctx.imageSmoothingQuality = a.quality;
    ctx.drawImage(bitmap, 0, 0, w, h);
    const [x, y, cw, ch] = a.raw ? [0, 0, w, h] : a.box;
    const rgba = ctx.getImageData(x, y, cw, ch).data;
    const source = [bitmap.width, bitmap.height];
    bitmap.close();
    const token = `${a.token}-${i++}`;
    await post(token, a.raw ? rgbBytes(rgba) : normalise(rgba, cw, ch, a.mean, a.std));
    outs.push({ token, width: cw, height: ch, source });
  }
  return outs;
}

function rgbBytes(rgba) {
  const n = rgba.length / 4;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) rgb[p * 3 + c] = rgba[p * 4 + c];
  return rgb;
}

function normalise(rgba, w, h, mean, std) {
  const plane = w * h;
  const chw = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) chw[c * plane + p] = (rgba[p * 4 + c] / 255 - mean[c]) / std[c];
  }
  return chw;
}

window.parityHost = { load, run, release, info, canvas };
