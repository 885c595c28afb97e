// llama.cpp's perplexity of a GGUF file on a text, computed through node-llama-cpp's prebuilt CPU
// binary the way `llama-perplexity -m MODEL -f TEXT -c CTX [--chunks N]` computes it:
//   - the whole text is tokenized once with the model's tokenizer, special tokens parsed, with BOS
//     in front when the model's vocabulary asks for one (llama_vocab_get_add_bos);
//   - non-overlapping chunks of CTX tokens from the start (an incomplete tail is dropped), at most
//     --chunks of them; each chunk runs in a fresh, empty context sequence;
//   - with BOS, each chunk's first token is replaced by BOS;
//   - only the second half is scored: the logits at positions CTX/2 .. CTX-2 of the chunk predict
//     the tokens at CTX/2+1 .. CTX-1;
//   - PPL = exp(mean NLL) over all scored tokens; the ± is llama-perplexity's
//     PPL * sqrt((mean(NLL²) - mean(NLL)²) / (N - 1)).
// JSON lines on stdout:
//   {"metric":"tokens", "count", "add_bos", "bos", "ids": first --print-ids ids (default 32)}
//   {"metric":"perplexity", "ppl", "ppl_se", "mean_nll", "ctx", "chunks", "scored_tokens",
//    "n_vocab", "running_ppl": [PPL after each chunk], "seconds", ...}
//   {"metric":"greedy", "prompt_ids", "ids": generated ids, "margins": top-1 minus top-2 logit of
//    each step, "stopped_at_eog"}   (with --gen N)
//
//   node ppl_llamacpp.mjs MODEL.gguf --text FILE [--ctx 128] [--chunks N] [--threads T]
//        [--print-ids K] [--gen N (--prompt TEXT | --prompt-ids 1,2,3)]
// --prompt is tokenized with BOS (as `lcw-cli generate --prompt` does); --prompt-ids is used as
// given. Greedy generation stops after N tokens or at an end-of-generation token.
// Without --text only the greedy part runs.
//
// How the probabilities are obtained, and why they are the plain softmax over the whole vocabulary:
// LlamaContextSequence.controlledEvaluate() evaluates the chunk in one llama_decode (batchSize =
// contextSize = CTX) and, for every input position marked with generateNext.logits === true,
// returns that position's logits (llama_get_logits_ith) for every token of the vocabulary. The
// addon passes them through the sampler chain first; we give no sampling options, so node-llama-
// cpp resolves temperature 0, and with temperature <= 0 its chain is only llama.cpp's greedy
// sampler (AddonSampler::rebuildChainIfNeeded: top-k/top-p/min-p/temperature/dist samplers are
// added only on the non-greedy branch; repetition/DRY penalties and token bias only when given).
// The greedy sampler only picks the argmax and leaves the logits untouched. Below, each position's
// result is checked to hold exactly n_vocab distinct tokens (no top-k truncation), and the log-
// softmax is computed here in double precision from those raw logits, as llama-perplexity's
// log_softmax does (max logit, sum of exp(logit - max), logit[tok] - max - log(sum)).
// Run it from a folder whose node_modules holds node-llama-cpp (see bench/gguf_llamacpp.sh).
import {getCpuLlama} from "./cpu_llama.mjs";
import fs from "node:fs";
import os from "node:os";
import process from "node:process";

function usage(msg) {
    if (msg) console.error("ppl_llamacpp.mjs: " + msg);
    console.error("usage: ppl_llamacpp.mjs MODEL.gguf [--text FILE] [--ctx 128] [--chunks N] [--threads T] " +
                  "[--print-ids K] [--gen N (--prompt TEXT | --prompt-ids 1,2,3)]");
    process.exit(2);
}

const argv = process.argv.slice(2);
if (argv.length < 1 || argv[0].startsWith("--")) usage();
const modelPath = argv[0];
const opt = {ctx: 128, chunks: 0, threads: 0, "print-ids": 32, gen: 0};
let textPath = null, prompt = null, promptIds = null;
for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    const val = argv[i + 1];
    if (val === undefined) usage("missing value for " + argv[i]);
    if (key === "text") textPath = val;
    else if (key === "prompt") prompt = val;
    else if (key === "prompt-ids") {
        if (!/^\d+(,\d+)*$/.test(val)) usage("--prompt-ids expects comma-separated ids");
        promptIds = val.split(",").map(Number);
    } else if (key in opt && /^\d+$/.test(val)) opt[key] = Number(val);
    else usage("bad option " + argv[i] + " " + val);
}
if (opt.ctx < 4 || opt.ctx % 2) usage("--ctx must be an even number >= 4");
if (opt.gen > 0 && (prompt === null) === (promptIds === null))
    usage("--gen needs exactly one of --prompt or --prompt-ids");
const threads = opt.threads > 0 ? opt.threads : os.availableParallelism();
const now = () => Number(process.hrtime.bigint()) / 1e9;

const llama = await getCpuLlama(threads);
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true});
const embd = (model.fileInfo.tensorInfo ?? []).find((t) => t.name === "token_embd.weight");
if (!embd) throw new Error(modelPath + ": no token_embd.weight");
const nVocab = Number(embd.dimensions[1]);
const addBos = model.tokens.shouldPrependBosToken;
const bos = model.tokens.bos;
const base = {
    engine: "llama.cpp",
    llama_cpp: "node-llama-cpp " + (llama.buildType ?? "") + " " + (llama.llamaCppRelease?.release ?? ""),
    model: modelPath,
};
const emit = (j) => console.log(JSON.stringify({...j, ...base}));

const pids = opt.gen <= 0 ? []
    : promptIds ?? [...(addBos && bos != null ? [bos] : []), ...model.tokenize(prompt, true)];

// One context for everything: a chunk (or the prompt and its continuation) in one batch.
const ctxSize = Math.max(opt.ctx, pids.length + opt.gen);
const context = await model.createContext({
    contextSize: ctxSize,
    batchSize: ctxSize,
    sequences: 1,
    threads: {ideal: threads, min: threads},
    flashAttention: false, // llama-perplexity b4747's default
});
const sequence = context.getSequence();

// -ln p(tok) from one position's full-vocabulary logits (a Map token -> logit).
function nllOf(logits, tok, where) {
    if (logits.size !== nVocab) throw new Error(where + ": got " + logits.size + " logits, want " + nVocab);
    let max = -Infinity;
    for (const v of logits.values()) if (v > max) max = v;
    let sum = 0;
    for (const v of logits.values()) sum += Math.exp(v - max);
    const lt = logits.get(tok);
    if (lt === undefined) throw new Error(where + ": no logit for token " + tok);
    return -(lt - max - Math.log(sum));
}

if (textPath !== null) {
    const text = fs.readFileSync(textPath, "utf8");
    const body = model.tokenize(text, true); // special tokens parsed, as common_tokenize(.., true)
    const tokens = addBos && bos != null ? [bos, ...body] : Array.from(body);
    emit({metric: "tokens", text_file: textPath, count: tokens.length, add_bos: addBos, bos,
          ids: tokens.slice(0, opt["print-ids"])});

    const ctx = opt.ctx, first = ctx / 2;
    const maxChunks = Math.floor(tokens.length / ctx);
    if (maxChunks < 1) throw new Error(textPath + ": " + tokens.length + " tokens, fewer than --ctx " + ctx);
    const nChunks = opt.chunks > 0 ? Math.min(opt.chunks, maxChunks) : maxChunks;
    let nll = 0, nll2 = 0, count = 0;
    const running = [];
    const t0 = now();
    for (let c = 0; c < nChunks; ++c) {
        const chunk = tokens.slice(c * ctx, (c + 1) * ctx);
        if (addBos && bos != null) chunk[0] = bos;
        await sequence.clearHistory();
        const input = chunk.map((t, i) =>
            i >= first && i <= ctx - 2 ? [t, {generateNext: {logits: true}}] : t);
        const out = await sequence.controlledEvaluate(input);
        for (let i = first; i <= ctx - 2; ++i) {
            const r = out[i];
            if (!r?.next?.logits) throw new Error("chunk " + c + " position " + i + ": no logits");
            const v = nllOf(r.next.logits, chunk[i + 1], "chunk " + c + " position " + i);
            nll += v;
            nll2 += v * v;
            ++count;
        }
        running.push(Math.exp(nll / count));
    }
    const seconds = now() - t0;
    const meanNll = nll / count;
    const var_ = nll2 / count - meanNll * meanNll;
    const ppl = Math.exp(meanNll);
    emit({metric: "perplexity", text_file: textPath, ppl,
          ppl_se: var_ > 0 && count > 1 ? ppl * Math.sqrt(var_ / (count - 1)) : null,
          mean_nll: meanNll, ctx, chunks: nChunks, chunks_in_text: maxChunks, scored_tokens: count,
          n_vocab: nVocab, running_ppl: running, seconds, threads: context.currentThreads});
}

if (opt.gen > 0) {
    await sequence.clearHistory();
    // Greedy: temperature 0 is node-llama-cpp's default (llama.cpp's greedy sampler only). The two
    // largest logits of each step come along: their gap ("margins") says how close a step was to
    // a tie, where another engine's rounding can pick the other token.
    const next = {generateNext: {token: true, logits: {filter: {tokens: [], includeTop: 2}}}};
    let input = pids.map((t, i) => (i === pids.length - 1 ? [t, next] : t));
    const ids = [], margins = [];
    let eog = false;
    while (ids.length < opt.gen) {
        const out = await sequence.controlledEvaluate(input);
        const r = out[input.length - 1]?.next;
        if (r?.token == null) throw new Error("greedy step " + ids.length + ": no token");
        ids.push(r.token);
        const top = [...(r.logits?.values() ?? [])];
        margins.push(top.length === 2 ? top[0] - top[1] : null);
        if (model.isEogToken(r.token)) {
            eog = true;
            break;
        }
        input = [[r.token, next]];
    }
    emit({metric: "greedy", prompt, prompt_ids: pids, ids, margins, stopped_at_eog: eog});
}

await context.dispose();
await model.dispose();
await llama.dispose();
