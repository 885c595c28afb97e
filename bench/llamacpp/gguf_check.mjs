// llama.cpp (node-llama-cpp's prebuilt CPU binary) on a GGUF file that lcw exported, against
// lcw: llama.cpp's tokenization of TEXT and its logits for IDS at every position, compared with
// the ids lcw gave for TEXT and the logits lcw wrote (lcw-cli logits --out FILE.npy). One JSON
// line on stdout.
//   node gguf_check.mjs MODEL.gguf --text TEXT --lcw-text-ids 1,2,3 --ids 1,2,3 --lcw-logits L.npy
// Run it from a folder whose node_modules holds node-llama-cpp (see bench/gguf_llamacpp_check.sh).
import {getCpuLlama} from "./cpu_llama.mjs";
import fs from "node:fs";
import process from "node:process";

const argv = process.argv.slice(2);
const modelPath = argv[0];
const opt = {};
for (let i = 1; i + 1 < argv.length; i += 2) opt[argv[i].replace(/^--/, "")] = argv[i + 1];
if (!modelPath || !opt.text || !opt.ids || !opt["lcw-logits"] || !opt["lcw-text-ids"]) {
    console.error("usage: gguf_check.mjs MODEL.gguf --text T --lcw-text-ids 1,2 --ids 1,2 --lcw-logits L.npy");
    process.exit(2);
}
const ids = opt.ids.split(",").map(Number);
const lcwTextIds = opt["lcw-text-ids"].split(",").map(Number);

// float32 little-endian C-order .npy [positions, vocab]
function readNpy(path) {
    const b = fs.readFileSync(path);
    const hlen = b.readUInt16LE(8);
    const header = b.toString("latin1", 10, 10 + hlen);
    const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
    const data = new Float32Array(b.buffer.slice(b.byteOffset + 10 + hlen, b.byteOffset + b.length));
    return {shape, data};
}

const llama = await getCpuLlama();
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true});
const llamaIds = Array.from(model.tokenize(opt.text, false));
const context = await model.createContext({contextSize: Math.max(64, ids.length + 8), batchSize: ids.length,
    sequences: 1, flashAttention: false});
const results = await context.getSequence().controlledEvaluate(ids.map((t) => [t, {generateNext: {logits: true}}]));
const lcw = readNpy(opt["lcw-logits"]);
const vocab = lcw.shape[1];
let maxDiff = 0, argmaxSame = 0;
for (let p = 0; p < ids.length; ++p) {
    const got = results[p].next.logits;
    let bestA = 0, bestB = 0;
    for (let v = 0; v < vocab; ++v) {
        const a = got.get(v) ?? -Infinity, b = lcw.data[p * vocab + v];
        maxDiff = Math.max(maxDiff, Math.abs(a - b));
        if (a > (got.get(bestA) ?? -Infinity)) bestA = v;
        if (b > lcw.data[p * vocab + bestB]) bestB = v;
    }
    argmaxSame += bestA === bestB ? 1 : 0;
}
console.log(JSON.stringify({
    engine: "llama.cpp", model: modelPath,
    tokenizer_same: llamaIds.length === lcwTextIds.length && llamaIds.every((t, i) => t === lcwTextIds[i]),
    text_tokens: lcwTextIds.length, positions: ids.length,
    max_abs_logit_diff: maxDiff, argmax_same: argmaxSame,
}));
process.exit(0);
