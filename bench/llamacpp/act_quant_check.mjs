// Where llama.cpp's logits on a quantised GGUF differ from lcw's, and why: compares llama.cpp's
// logits (node-llama-cpp's prebuilt CPU binary, all positions of one batch) with two plain
// JavaScript forward passes of the same Llama-architecture model over the same dequantised weights:
//   "plain": float arithmetic as lcw does it (f32 activations and KV, weights dequantised);
//   "ggml":  the same plus what ggml's CPU backend does to the inputs of its matrix products:
//            a linear's input row is quantised to its weight type's vec_dot_type (Q8_K blocks of
//            256 for Q2_K..Q6_K and IQ4_XS, Q8_0 blocks of 32 for Q4_0/Q5_0/Q8_0/IQ4_NL, f16 for
//            F16) as quantize_row_q8_K_ref / the AVX quantize_row_q8_0 do; K and V are cached
//            as f16; Q and the softmax probabilities are rounded to f16 for the two attention
//            products.
// One JSON line per mode: rms and max |Δlogit| against llama.cpp, and per position the max |Δ|
// (the first 8 positions and how many of all are within 1e-4); a third line compares llama.cpp
// with itself, fed one token at a time instead of one batch.
//   node act_quant_check.mjs MODEL.gguf DEQUANT_F32.gguf (--ids 1,2,3 | --text FILE [--tokens 128])
// MODEL.gguf: the file llama.cpp runs (its tensor types select the emulation); DEQUANT_F32.gguf:
// the same weights as F32 (`build/bench/gguf_export MODEL.gguf DEQUANT_F32.gguf`, lcw's
// dequantisation; tensor names and layout as MODEL.gguf). Only the plain llama graph (RMSNorm,
// RoPE on adjacent pairs, GQA, SiLU-gated MLP, no biases) at these small sizes: a diagnostic.
// bench/gguf_llamacpp.sh copies it into $LCW_BENCH_DIR/node (beside node_modules); run it there.
import {readGgufFileInfo} from "node-llama-cpp";
import {getCpuLlama} from "./cpu_llama.mjs";
import fs from "node:fs";
import process from "node:process";

const argv = process.argv.slice(2);
if (argv.length < 4) {
    console.error("usage: act_quant_check.mjs MODEL.gguf DEQUANT_F32.gguf (--ids 1,2,3 | --text FILE [--tokens 128])");
    process.exit(2);
}
const [modelPath, f32Path] = argv;
const opts = {tokens: "128"};
for (let i = 2; i + 1 < argv.length; i += 2) opts[argv[i].replace(/^--/, "")] = argv[i + 1];

// ---- llama.cpp's logits ----
const llama = await getCpuLlama(1);
const model = await llama.loadModel({modelPath, gpuLayers: 0});
let ids;
if (opts.ids) ids = opts.ids.split(",").map(Number);
else if (opts.text) {
    const body = model.tokenize(fs.readFileSync(opts.text, "utf8"), true);
    const bos = model.tokens.shouldPrependBosToken ? [model.tokens.bos] : [];
    ids = [...bos, ...body].slice(0, Number(opts.tokens));
} else throw new Error("give --ids or --text");
const context = await model.createContext({contextSize: ids.length, batchSize: ids.length, sequences: 1,
                                           threads: {ideal: 1, min: 1}, flashAttention: false});
// Raw logits of every position (see ppl_llamacpp.mjs: greedy sampler only, all vocabulary tokens).
const toRow = (o) => {
    const row = new Float64Array(o.next.logits.size);
    for (const [k, v] of o.next.logits) row[k] = v;
    return row;
};
const withLogits = (t) => [t, {generateNext: {logits: true}}];
const seq = context.getSequence();
const res = await seq.controlledEvaluate(ids.map(withLogits));
const llamaLogits = res.map(toRow);
// The same tokens one at a time (llama.cpp against itself: other summation orders in attention,
// which its 8-bit activation rounding can amplify).
await seq.clearHistory();
const llamaOneByOne = [];
for (const t of ids) llamaOneByOne.push(toRow((await seq.controlledEvaluate([withLogits(t)]))[0]));
await context.dispose();
await model.dispose();
await llama.dispose();

// ---- weights ----
const info = await readGgufFileInfo(f32Path, {readTensorInfo: true});
const types = Object.fromEntries((await readGgufFileInfo(modelPath, {readTensorInfo: true}))
    .tensorInfo.map((t) => [t.name, t.ggmlType]));
const file = fs.readFileSync(f32Path);
const W = {};
for (const t of info.tensorInfo) {
    if (t.ggmlType !== 0) throw new Error(f32Path + ": " + t.name + " is not F32");
    const n = t.dimensions.reduce((a, b) => a * Number(b), 1);
    const off = file.byteOffset + Number(t.fileOffset);
    W[t.name] = new Float32Array(file.buffer.slice(off, off + 4 * n));
}
const md = info.metadata.llama;
const dim = md.embedding_length, nLayers = md.block_count, nh = md.attention.head_count;
const nkv = md.attention.head_count_kv, ff = md.feed_forward_length;
const eps = md.attention.layer_norm_rms_epsilon, ropeBase = md.rope?.freq_base ?? 10000;
const hd = dim / nh, nVocab = llamaLogits[0].length;

// ---- ggml's roundings ----
const f32 = Math.fround;
const roundEven = (v) => (Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
function f16(x) { // nearest f16 value, ties to even (normal and subnormal range)
    if (x === 0 || !Number.isFinite(x)) return x;
    const ulp = Math.pow(2, Math.max(Math.floor(Math.log2(Math.abs(x))), -14) - 10);
    return roundEven(x / ulp) * ulp;
}
const Q8K = new Set([10, 11, 12, 13, 14, 23]); // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS
const Q80 = new Set([2, 6, 8, 20]);            // Q4_0, Q5_0, Q8_0, IQ4_NL
function vecDotInput(x, type) {
    if (type === 0) return x;
    const y = new Float32Array(x.length);
    if (type === 1) {
        for (let i = 0; i < x.length; ++i) y[i] = f16(x[i]);
    } else if (Q8K.has(type)) {
        for (let b = 0; b < x.length; b += 256) {
            let amax = 0, max = 0;
            for (let j = b; j < b + 256; ++j) if (Math.abs(x[j]) > amax) { amax = Math.abs(x[j]); max = x[j]; }
            if (amax === 0) continue;
            const iscale = f32(-127 / max), d = f32(1 / iscale);
            for (let j = b; j < b + 256; ++j) y[j] = f32(d * Math.min(127, roundEven(f32(iscale * x[j]))));
        }
    } else if (Q80.has(type)) {
        for (let b = 0; b < x.length; b += 32) {
            let amax = 0;
            for (let j = b; j < b + 32; ++j) amax = Math.max(amax, Math.abs(x[j]));
            const id = amax !== 0 ? f32(127 / amax) : 0, d = f16(f32(amax / 127));
            for (let j = b; j < b + 32; ++j) y[j] = f32(d * roundEven(f32(x[j] * id)));
        }
    } else throw new Error("no vec_dot_type emulation for ggml type " + type);
    return y;
}

function forward(ggml) {
    const r16 = (v) => (ggml ? v.map(f16) : v);
    const linear = (name, x, k, out) => {
        const w = W[name], xq = ggml ? vecDotInput(x, types[name]) : x, y = new Float32Array(out);
        for (let o = 0; o < out; ++o) {
            let s = 0;
            for (let i = 0, r = o * k; i < k; ++i) s += w[r + i] * xq[i];
            y[o] = s;
        }
        return y;
    };
    const rmsnorm = (x, g) => {
        let s = 0;
        for (const v of x) s += v * v;
        const sc = 1 / Math.sqrt(s / x.length + eps);
        return x.map((v, i) => f32(v * sc) * g[i]);
    };
    const rope = (v, pos, heads) => {
        for (let h = 0; h < heads; ++h)
            for (let i = 0; i < hd; i += 2) {
                const th = pos * Math.pow(ropeBase, -i / hd), c = Math.cos(th), s = Math.sin(th);
                const a = v[h * hd + i], b = v[h * hd + i + 1];
                v[h * hd + i] = a * c - b * s;
                v[h * hd + i + 1] = a * s + b * c;
            }
    };
    let xs = ids.map((t) => W["token_embd.weight"].slice(t * dim, (t + 1) * dim));
    for (let l = 0; l < nLayers; ++l) {
        const p = "blk." + l + ".", Q = [], K = [], V = [];
        xs.forEach((x, t) => {
            const c = rmsnorm(x, W[p + "attn_norm.weight"]);
            const q = linear(p + "attn_q.weight", c, dim, dim), k = linear(p + "attn_k.weight", c, dim, nkv * hd);
            rope(q, t, nh);
            rope(k, t, nkv);
            Q.push(r16(q));
            K.push(r16(k));
            V.push(r16(linear(p + "attn_v.weight", c, dim, nkv * hd)));
        });
        xs = xs.map((x, t) => {
            const att = new Float32Array(dim);
            for (let h = 0; h < nh; ++h) {
                const kh = Math.floor(h / (nh / nkv)), sc = [];
                for (let u = 0; u <= t; ++u) {
                    let s = 0;
                    for (let i = 0; i < hd; ++i) s += Q[t][h * hd + i] * K[u][kh * hd + i];
                    sc.push(s / Math.sqrt(hd));
                }
                const m = Math.max(...sc), e = sc.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
                for (let u = 0; u <= t; ++u) {
                    const pu = ggml ? f16(e[u] / z) : e[u] / z;
                    for (let i = 0; i < hd; ++i) att[h * hd + i] += pu * V[u][kh * hd + i];
                }
            }
            const o = linear(p + "attn_output.weight", att, dim, dim);
            const h1 = x.map((v, i) => v + o[i]);
            const c = rmsnorm(h1, W[p + "ffn_norm.weight"]);
            const g = linear(p + "ffn_gate.weight", c, dim, ff), u = linear(p + "ffn_up.weight", c, dim, ff);
            const d = linear(p + "ffn_down.weight", g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]), ff, dim);
            return h1.map((v, i) => v + d[i]);
        });
    }
    const out = W["output.weight"] ? "output.weight" : "token_embd.weight";
    return xs.map((x) => linear(out, rmsnorm(x, W["output_norm.weight"]), dim, nVocab));
}

for (const mode of ["plain", "ggml", "llamacpp_one_token_at_a_time"]) {
    const logits = mode === "plain" ? forward(false) : mode === "ggml" ? forward(true) : llamaOneByOne;
    let ss = 0, maxAll = 0;
    const perPos = logits.map((row, t) => {
        let m = 0;
        for (let k = 0; k < nVocab; ++k) {
            const d = Math.abs(row[k] - llamaLogits[t][k]);
            m = Math.max(m, d);
            ss += d * d;
        }
        maxAll = Math.max(maxAll, m);
        return m;
    });
    console.log(JSON.stringify({
        metric: "logits_vs_llamacpp", mode, model: modelPath, tokens: ids.length,
        rms_dlogit: Math.sqrt(ss / (ids.length * nVocab)), max_dlogit: maxAll,
        "positions_within_1e-4": perPos.filter((m) => m < 1e-4).length,
        first_positions_max_dlogit: perPos.slice(0, 8),
    }));
}
