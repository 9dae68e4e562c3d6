// A deployment's preprocessing written in plain Node (no packages): what a JavaScript service would run.
// Usage: node preprocess.js IMAGES OUTPUT CONFIG [--bgr]
//   IMAGES: a text file, one image path a line (binary PPM, P6, 8-bit; decode JPEG upstream)
//   OUTPUT: the .npy file written (float32, N,3,H,W)
//   CONFIG: the data config as JSON (input_size, interpolation, mean, std, crop_pct, crop_mode)
// Resize: the shorter edge to floor(size / crop_pct) with an antialiased bicubic or bilinear filter (Pillow's
// algorithm: the filter support widened by the downscale factor, a horizontal then a vertical pass, each
// rounded to 8 bits), then a centre crop, then (x / 255 - mean) / std.
"use strict";
const fs = require("fs");
const [imagesFile, outputFile, configFile, ...flags] = process.argv.slice(2);
const bgr = flags.includes("--bgr");
const cfg = JSON.parse(fs.readFileSync(configFile, "utf8"));

function readPPM(path) {
  const buf = fs.readFileSync(path);
  const tokens = [];
  let i = 0;
  while (tokens.length < 4) {
    while (/\s/.test(String.fromCharCode(buf[i]))) i++;
    if (buf[i] === 0x23) { while (buf[i] !== 0x0a) i++; continue; }
    let t = "";
    while (!/\s/.test(String.fromCharCode(buf[i]))) t += String.fromCharCode(buf[i++]);
    tokens.push(t);
  }
  if (tokens[0] !== "P6" || tokens[3] !== "255") throw new Error(`${path}: not an 8-bit binary PPM`);
  return { w: +tokens[1], h: +tokens[2], data: buf.subarray(i + 1) };
}

const FILTERS = {
  bicubic: [2, (x) => { const a = -0.5; x = Math.abs(x);
    return x < 1 ? ((a + 2) * x - (a + 3)) * x * x + 1 : x < 2 ? (((x - 5) * x + 8) * x - 4) * a : 0; }],
  bilinear: [1, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
};

function weights(inSize, outSize, filter) {
  const [support0, f] = filter;
  const scale = inSize / outSize, fs_ = Math.max(scale, 1), support = support0 * fs_;
  const out = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0), hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = [];
    let sum = 0;
    for (let x = lo; x < hi; x++) { const v = f((x - center + 0.5) / fs_); w.push(v); sum += v; }
    out.push({ lo, w: w.map((v) => (sum ? v / sum : 0)) });
  }
  return out;
}

const clip8 = (v) => Math.min(255, Math.max(0, Math.floor(v + 0.5)));

function resize(img, W, H, filter) {
  let { w, h, data } = img;
  if (W !== w) {  // horizontal pass
    const ws = weights(w, W, filter), out = new Uint8Array(W * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) {
      let s = 0; const { lo, w: k } = ws[x];
      for (let j = 0; j < k.length; j++) s += data[(y * w + lo + j) * 3 + c] * k[j];
      out[(y * W + x) * 3 + c] = clip8(s);
    }
    data = out; w = W;
  }
  if (H !== h) {  // vertical pass
    const ws = weights(h, H, filter), out = new Uint8Array(w * H * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
      let s = 0; const { lo, w: k } = ws[y];
      for (let j = 0; j < k.length; j++) s += data[((lo + j) * w + x) * 3 + c] * k[j];
      out[(y * w + x) * 3 + c] = clip8(s);
    }
    data = out; h = H;
  }
  return { w, h, data };
}

function preprocess(path) {
  const img = readPPM(path);
  const [, th, tw] = cfg.input_size;
  const scale = Math.floor(th / cfg.crop_pct);
  const [W, H] = img.w <= img.h ? [scale, Math.trunc(scale * img.h / img.w)] : [Math.trunc(scale * img.w / img.h), scale];
  const r = resize(img, W, H, FILTERS[cfg.interpolation] || FILTERS.bicubic);
  const top = Math.round((H - th) / 2), left = Math.round((W - tw) / 2);
  const out = new Float32Array(3 * th * tw);
  for (let c = 0; c < 3; c++) {
    const src = bgr ? 2 - c : c;
    for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) {
      const v = r.data[((y + top) * W + x + left) * 3 + src] / 255;
      out[(c * th + y) * tw + x] = (v - cfg.mean[c]) / cfg.std[c];
    }
  }
  return out;
}

function writeNpy(path, arrays, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}), }`;
  header += " ".repeat(64 - ((10 + header.length + 1) % 64)) + "\n";
  const pre = Buffer.alloc(10);
  Buffer.from("\x93NUMPY", "latin1").copy(pre, 0);
  pre[6] = 1; pre[7] = 0; pre.writeUInt16LE(header.length, 8);
  const body = Buffer.concat(arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
  fs.writeFileSync(path, Buffer.concat([pre, Buffer.from(header, "latin1"), body]));
}

const paths = fs.readFileSync(imagesFile, "utf8").split("\n").filter((l) => l.trim());
const tensors = paths.map(preprocess);
const [, th, tw] = cfg.input_size;
writeNpy(outputFile, tensors, [tensors.length, 3, th, tw]);
