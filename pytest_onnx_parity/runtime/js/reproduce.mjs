// A reproducer of a gate failure on a JavaScript runtime: the bundle's model.onnx run in Node.js with
// onnxruntime-web (WASM) or onnxruntime-node on the bundle's inputs, against torch's outputs.
// Exit 1 while the outputs diverge beyond the bundle's tolerance, 0 once they agree.
//   NODE_PATH=<folder holding node_modules> node reproduce.mjs
// (onnx-parity runtimes --install onnxruntime-web puts the packages under ~/.cache/pytest-onnx-parity/npm)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const meta = JSON.parse(readFileSync(join(here, "bundle.json"), "utf8"));
const js = meta.js;
const require = createRequire(join(process.env.NODE_PATH || here, "noop.js"));
const ort = require(js.package);
if (js.package === "onnxruntime-web") {
  ort.env.wasm.numThreads = js.numThreads || 1;
}

function floats(file) {
  const buf = readFileSync(join(here, file));
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
}

const session = await ort.InferenceSession.create(join(here, meta.onnx_file), {
  executionProviders: [js.package === "onnxruntime-web" ? "wasm" : "cpu"],
  graphOptimizationLevel: js.graphOptimizationLevel || "all",
});
const input = new ort.Tensor("float32", floats(js.input_file), js.input_shape);
const names = meta.output_names && meta.output_names.length ? meta.output_names : [session.outputNames[0]];
const out = await session.run({ [meta.input_name]: input }, names);
const torch = floats(js.torch_file);
let got = [];
for (const n of names) got = got.concat(Array.from(out[n].data, Number));
let sq = 0;
for (const v of torch) sq += v * v;
const rms = Math.sqrt(sq / torch.length);
let worst = 0;
let bad = 0;
for (let i = 0; i < torch.length; i++) {
  const d = Math.abs(got[i] - torch[i]);
  worst = Math.max(worst, d);
  if (!(d <= meta.atol + meta.rtol * Math.abs(torch[i]))) bad++;
}
console.log(`${meta.model} on ${js.package} ${ort.env.versions ? JSON.stringify(ort.env.versions) : ""}: ` +
  `max abs diff ${worst.toExponential(3)} (${(worst / rms).toExponential(3)} x RMS), ` +
  `${bad} of ${torch.length} values beyond atol ${meta.atol} + rtol ${meta.rtol} x |torch|`);
process.exit(bad ? 1 : 0);
