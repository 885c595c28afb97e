// llama.cpp reference timings through node-llama-cpp's prebuilt CPU binary, measured the way
// bench/bench_runtime.cpp measures lcw: W warm-up decode steps (default 1, untimed: they fault
// the mmapped weights in), then per repetition the same synthetic prompt ids
// ((i*7919+13) % vocab) in one prefill of P tokens and N single-token greedy decode steps
// starting from the prompt's last id; "value" is the median of R repetitions ("best", "runs").
// JSON lines on stdout, in bench_runtime's shape plus "engine".
//   node bench_llamacpp.mjs MODEL.gguf [--prefill N] [--decode N] [--threads T] [--reps R]
//                           [--warmup W] [--ids 1,2,3]   (a given prompt instead of the synthetic one)
// The decode line carries the greedy ids. With --ids, all but the last id are the prefill and
// decoding starts from the last one, so "ids" equals what `lcw-cli generate --temp 0 --json`
// generates after those prompt ids (a correctness check of an exported GGUF).
// Run it from a folder whose node_modules holds node-llama-cpp (ES modules ignore NODE_PATH; see
// bench/compare_llamacpp.sh, which installs it into $LCW_BENCH_DIR/node).
import {getCpuLlama} from "./cpu_llama.mjs";
import os from "node:os";
import process from "node:process";

function usage() {
    console.error("usage: bench_llamacpp.mjs MODEL.gguf [--prefill N] [--decode N] [--threads T] [--reps R] [--warmup W] [--ids 1,2,3]");
    process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.length < 1 || argv[0].startsWith("--")) usage();
const modelPath = argv[0];
const opt = {prefill: 128, decode: 64, threads: 0, reps: 3, warmup: 1};
let givenIds = null;
for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (key === "ids" && i + 1 < argv.length && /^\d+(,\d+)*$/.test(argv[i + 1])) {
        givenIds = argv[i + 1].split(",").map(Number);
        continue;
    }
    if (!(key in opt) || i + 1 >= argv.length || !/^\d+$/.test(argv[i + 1])) usage();
    opt[key] = Number(argv[i + 1]);
}
const threads = opt.threads > 0 ? opt.threads : os.availableParallelism();
const now = () => Number(process.hrtime.bigint()) / 1e9;

const llama = await getCpuLlama(threads);

const t0 = now();
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true});
const loadSec = now() - t0;

const tensors = model.fileInfo.tensorInfo ?? [];
const embd = tensors.find((t) => t.name === "token_embd.weight");
if (!embd) throw new Error(modelPath + ": no token_embd.weight");
const nVocab = Number(embd.dimensions[1]);
const nParams = tensors.reduce((s, t) => s + t.dimensions.reduce((p, d) => p * Number(d), 1), 0);
const trainCtx = Number(model.trainContextSize);
if (givenIds && givenIds.length < 2) usage();
const nPrefill = givenIds ? givenIds.length - 1 : Math.min(opt.prefill, Math.max(1, trainCtx - opt.decode - 1));
const nDecode = opt.decode;

const context = await model.createContext({
    contextSize: nPrefill + nDecode + 1,
    batchSize: nPrefill, // the whole prompt in one batch, like lcw's Session (batch 512)
    sequences: 1,
    threads: {ideal: threads, min: threads},
    flashAttention: false,
});
const sequence = context.getSequence();

const prompt = givenIds ? givenIds.slice(0, -1) : [];
if (!givenIds) for (let i = 0; i < nPrefill; ++i) prompt.push((i * 7919 + 13) % nVocab);
const firstDecodeId = givenIds ? givenIds[givenIds.length - 1] : prompt[prompt.length - 1];

const base = {
    engine: "llama.cpp",
    llama_cpp: "node-llama-cpp " + (llama.buildType ?? "") + " " + (llama.llamaCppRelease?.release ?? ""),
    model: modelPath,
    arch: model.fileInfo.metadata?.general?.architecture,
    parameters: nParams,
    stored_bytes: model.size,
    threads: context.currentThreads,
    system_info: llama.systemInfo,
};
const emit = (j) => console.log(JSON.stringify({...j, ...base}));
emit({metric: "load_seconds", value: loadSec});

// Warm-up: whole-model passes that page the weights in, then forgotten.
for (let i = 0; i < Math.min(opt.warmup, nPrefill); ++i)
    await sequence.evaluateWithoutGeneratingNewTokens([prompt[i]]);
await sequence.clearHistory();

const prefillTps = [], decodeTps = [];
let generated = [];
for (let r = 0; r < opt.reps; ++r) {
    await sequence.clearHistory();
    // Prefill: all prompt tokens, logits only for the last one (as lcw's forward(prompt)).
    let a = now();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    prefillTps.push(nPrefill / (now() - a));
    // Decode: N single-token evaluations with greedy sampling; the first input is the prompt's
    // last id again, as in bench_runtime (or the last --ids id).
    a = now();
    const ids = [];
    const it = sequence.evaluate([firstDecodeId], {temperature: 0});
    for (let i = 0; i < nDecode; ++i) {
        const {value, done} = await it.next();
        if (done) break;
        ids.push(value);
    }
    await it.return();
    decodeTps.push(ids.length / (now() - a));
    generated = ids;
}
const median = (v) => {
    const s = [...v].sort((x, y) => x - y), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
emit({metric: "prefill_tokens_per_second", value: median(prefillTps), best: Math.max(...prefillTps),
      runs: prefillTps, tokens: nPrefill});
emit({metric: "decode_tokens_per_second", value: median(decodeTps), best: Math.max(...decodeTps),
      runs: decodeTps, tokens: nDecode, ids: generated});
const rss = process.resourceUsage().maxRSS * 1024;
emit({metric: "peak_rss_bytes", value: rss, ratio_to_f32_size: rss / (nParams * 4),
      note: "includes the node.js runtime"});

await context.dispose();
await model.dispose();
await llama.dispose();
