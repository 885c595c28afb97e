#!/usr/bin/env python3
"""Mutation probe of lcw-cli: crash and hang detection on damaged model folders.

Copies a model (folder or file) from ../shared/models, damages one of its files and runs
`lcw-cli info | generate | perplexity` (semantic mode also `eval --preset W4A16-g64`, `stats`,
`export --preset Q4_K_M --format gguf`, `compress --preset W8A8 --save`) on it under
`ulimit -v 4194304` with a 10 s limit. Exit codes 0, 1 (a refused file) and 2 are fine; anything
else (a signal, an abort, a sanitizer's report through a sanitized build's exit code) or a
time-out is a finding, kept under OUT/findings/ with the command line. Prints one JSON line at
the end.

Two kinds of damage (--mode bytes|semantic|mixed, default mixed):
- bytes: random bytes, runs of 0x00/0xff, truncation, insertions; in JSON files also numbers
  replaced by extreme ones. Most such files fail the parsers' first checks.
- semantic: files that stay well-formed and lie about the model. GGUF files are parsed and
  written back whole, with one metadata value changed to a plausible or extreme one (head counts,
  lengths, token ids, rope dimensions, the architecture or tokenizer name), an array cut short, a
  key dropped or repeated, or a tensor's shape, type, offset or name changed (offsets stay
  consistent, so the reader sees a valid file); safetensors headers get a tensor's shape, dtype
  or offsets changed; config.json / tokenizer.json numbers become nearby values (n±1, 2n, n/2, 0,
  1) or their strings other architectures' names; llama2.c headers get one of their seven
  integers changed; f32 weights get NaN / Inf / 1e38 values.

    scripts/mutate_cli.py [--runs 300] [--seed 1] [--mode mixed] [--cli build/app/lcw-cli]
                          [--out /tmp/lcw-mutate] [--vmem-kb 4194304]
    (--vmem-kb 0: no address-space limit, for AddressSanitizer builds, which reserve terabytes)
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time

EXTREME = ["0", "-1", "4294967296", "9223372036854775807", "1e308", "1e309",
           "99999999999999999999", "2147483648"]


def damage(data, rng):
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.7 and b:
            i, v = rng.randrange(len(b)), rng.choice([0x00, 0xFF, 0x7F, 0x80])
            for k in range(rng.randint(1, 8)):
                if i + k < len(b):
                    b[i + k] = v
        elif op < 0.85 and b:
            del b[rng.randrange(len(b)):]
        else:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def damage_json(data, rng):
    text = data.decode("utf-8", "replace")
    nums = list(re.finditer(r"\d+", text))
    if not nums:
        return damage(data, rng)
    m = rng.choice(nums)
    return (text[:m.start()] + rng.choice(EXTREME) + text[m.end():]).encode()


# --- semantic damage -----------------------------------------------------------------------

ARCHS = ["llama", "gemma", "gemma2", "qwen2", "qwen3", "phi3", "mamba", "gpt2", "opt", "bloom",
         "falcon", "stablelm", "gptneox", "mixtral", "bert", "t5", "", "llama\u0000x"]
TOKENIZERS = ["llama", "gpt2", "bert", "t5", "rwkv", "none", ""]
HF_STRINGS = {"model_type": ["llama", "gemma", "qwen2", "mistral", "mixtral", "phi3", "mamba",
                             "gpt2", "opt", "falcon", "bloom", "t5", "bert"],
              "hidden_act": ["silu", "gelu", "gelu_pytorch_tanh", "relu", "tanh", "swish", "x"],
              "torch_dtype": ["float16", "bfloat16", "float32", "int8", "x"],
              "type": ["BPE", "WordPiece", "Unigram", "WordLevel", "x"]}


WHAT = []  # what the last semantic damage did (for the run log)


def nearby_int(v, rng, lo=None, hi=None):
    """A plausible lie about an integer: off by one, doubled, halved, 0, 1, or an extreme."""
    c = rng.choice([v - 1, v + 1, v * 2, v // 2, 0, 1, 3, v * 3 + 1, 2**31 - 1, 2**31, 2**32 - 1,
                    2**32 + v, 2**62, -1])
    if lo is not None:
        c = max(lo, min(hi, c))
    return c


INT_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}
INT_RANGE = {0: (0, 255), 1: (-128, 127), 2: (0, 65535), 3: (-32768, 32767), 4: (0, 2**32 - 1),
             5: (-2**31, 2**31 - 1), 10: (0, 2**64 - 1), 11: (-2**63, 2**63 - 1)}


class Gguf:
    """A GGUF file parsed into metadata, tensor infos and the data section (written back with
    the same relative tensor offsets, so edits of the header keep the file readable)."""

    def __init__(self, data):
        self.b, self.p = data, 0
        if data[:4] != b"GGUF":
            raise ValueError("not gguf")
        self.p = 4
        self.version = self.u("<I")
        nt, nkv = self.u("<Q"), self.u("<Q")
        self.kv = [(self.s(), *self.val()) for _ in range(nkv)]
        self.tensors = []
        for _ in range(nt):
            name = self.s()
            nd = self.u("<I")
            dims = [self.u("<Q") for _ in range(nd)]
            self.tensors.append([name, dims, self.u("<I"), self.u("<Q")])
        align = self.alignment()
        start = (self.p + align - 1) // align * align
        self.data = data[start:]

    def alignment(self):
        for k, t, v in self.kv:
            if k == "general.alignment" and t in INT_FMT and isinstance(v, int) and v > 0:
                return v
        return 32

    def u(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def s(self):
        n = self.u("<Q")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v.decode("utf-8", "replace")

    def val(self, t=None):
        if t is None:
            t = self.u("<I")
        if t in INT_FMT:
            return t, self.u(INT_FMT[t])
        if t == 6:
            return t, self.u("<f")
        if t == 12:
            return t, self.u("<d")
        if t == 7:
            return t, self.u("<B")
        if t == 8:
            return t, self.s()
        if t == 9:
            et, n = self.u("<I"), self.u("<Q")
            return t, (et, [self.val(et)[1] for _ in range(n)])
        raise ValueError(f"type {t}")

    @staticmethod
    def put_s(out, v):
        b = v.encode("utf-8", "surrogatepass")
        out += struct.pack("<Q", len(b)) + b

    def put_val(self, out, t, v, typed=True):
        if typed:
            out += struct.pack("<I", t)
        if t in INT_FMT:
            lo, hi = INT_RANGE[t]
            out += struct.pack(INT_FMT[t], max(lo, min(hi, v)))
        elif t == 6:
            out += struct.pack("<f", v)
        elif t == 12:
            out += struct.pack("<d", v)
        elif t == 7:
            out += struct.pack("<B", v & 0xFF)
        elif t == 8:
            self.put_s(out, v)
        elif t == 9:
            et, items = v
            out += struct.pack("<IQ", et, len(items))
            for it in items:
                self.put_val(out, et, it, typed=False)

    def write(self):
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))
        for k, t, v in self.kv:
            self.put_s(out, k)
            self.put_val(out, t, v)
        for name, dims, typ, off in self.tensors:
            self.put_s(out, name)
            out += struct.pack("<I", len(dims))
            for d in dims:
                out += struct.pack("<Q", max(0, min(2**64 - 1, d)))
            out += struct.pack("<IQ", typ, max(0, min(2**64 - 1, off)))
        align = self.alignment()
        out += b"\0" * ((-len(out)) % align)
        return bytes(out + self.data)


def damage_gguf_semantic(data, rng):
    g = Gguf(data)
    op = rng.random()
    ints = [i for i, (k, t, v) in enumerate(g.kv) if t in INT_FMT]
    if op < 0.3 and ints:
        i = rng.choice(ints)
        k, t, v = g.kv[i]
        g.kv[i] = (k, t, nearby_int(v, rng))
        WHAT.append(f"{k}: {v} -> {g.kv[i][2]}")
    elif op < 0.38:
        strs = [i for i, (k, t, v) in enumerate(g.kv) if t == 8]
        if strs:
            i = rng.choice(strs)
            k, t, v = g.kv[i]
            pool = ARCHS if k == "general.architecture" else TOKENIZERS
            g.kv[i] = (k, t, rng.choice(pool))
            WHAT.append(f"{k}: {v!r} -> {g.kv[i][2]!r}")
            if k == "general.architecture" and rng.random() < 0.7:
                # Rename the architecture's own keys too, so the file reads as that family.
                arch = g.kv[i][2]
                g.kv = [(arch + kk[len(v):] if kk.startswith(v + ".") else kk, tt, vv)
                        for kk, tt, vv in g.kv]
    elif op < 0.46:
        floats = [i for i, (k, t, v) in enumerate(g.kv) if t in (6, 12)]
        if floats:
            i = rng.choice(floats)
            k, t, v = g.kv[i]
            g.kv[i] = (k, t, rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30]))
            WHAT.append(f"{k}: {v} -> {g.kv[i][2]}")
    elif op < 0.54:
        arrays = [i for i, (k, t, v) in enumerate(g.kv) if t == 9]
        if arrays:
            i = rng.choice(arrays)
            k, t, (et, items) = g.kv[i]
            r = rng.random()
            if r < 0.4:
                items = items[:rng.randrange(len(items) + 1)]
            elif r < 0.6 and items:
                items = items + items[:rng.randint(1, min(len(items), 64))]
            elif et in INT_FMT and items:
                j = rng.randrange(len(items))
                items = list(items)
                items[j] = nearby_int(items[j], rng)
            elif et == 8 and items:
                j = rng.randrange(len(items))
                items = list(items)
                items[j] = rng.choice(["", "<0xZZ>", "<0x41>", "\u2581" * 40, items[0]])
            WHAT.append(f"{k}: array of {len(g.kv[i][2][1])} edited, now {len(items)}")
            g.kv[i] = (k, t, (et, items))
    elif op < 0.6 and g.kv:
        i = rng.randrange(len(g.kv))
        WHAT.append(f"{g.kv[i][0]}: dropped or repeated")
        if rng.random() < 0.5:
            del g.kv[i]
        else:
            g.kv.insert(rng.randrange(len(g.kv) + 1), g.kv[i])
    elif g.tensors:
        ti = rng.randrange(len(g.tensors))
        name, dims, typ, off = g.tensors[ti]
        before = f"{name} {list(dims)} type {typ} offset {off}"
        r = rng.random()
        if r < 0.35 and dims:
            j = rng.randrange(len(dims))
            dims[j] = max(0, nearby_int(dims[j], rng))
        elif r < 0.45:
            dims.reverse() if rng.random() < 0.5 else dims.append(rng.choice([1, 2]))
        elif r < 0.6:
            g.tensors[ti][2] = rng.choice([0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 16, 20, 23,
                                           24, 26, 30, 31, 39, 40, 99])
        elif r < 0.7:
            g.tensors[ti][3] = rng.choice([off + 32, off + 1, max(0, off - 32), len(g.data),
                                           2**40, 0])
        elif r < 0.8:
            other = rng.randrange(len(g.tensors))
            g.tensors[ti][0], g.tensors[other][0] = g.tensors[other][0], name
        elif r < 0.9:
            del g.tensors[ti]
        else:
            g.tensors.insert(rng.randrange(len(g.tensors) + 1), list(g.tensors[ti]))
        WHAT.append(f"tensor {before} -> {r:.2f} op")
    return g.write()


# config.json keys that shape the model (preferred targets: most other keys change nothing).
STRUCT_KEYS = {"hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "num_hidden_layers", "vocab_size", "max_position_embeddings",
               "rope_theta", "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon",
               "tie_word_embeddings", "sliding_window", "partial_rotary_factor",
               "num_experts_per_tok", "num_local_experts", "state_size", "expand", "conv_kernel",
               "time_step_rank", "d_model", "n_head", "n_embd", "n_layer", "n_positions",
               "n_inner", "ffn_dim", "word_embed_proj_dim", "do_layer_norm_before",
               "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
               "factor", "original_max_position_embeddings", "rope_type", "model_type",
               "hidden_act", "torch_dtype", "bos_token_id", "eos_token_id", "pad_token_id",
               "use_sliding_window", "max_window_layers", "attention_bias", "mlp_bias"}


def damage_json_semantic(data, rng):
    try:
        doc = json.loads(data)
    except ValueError:
        return damage(data, rng)
    slots = []  # (container, key) of every scalar

    def walk(x, depth=0):
        if depth > 64:
            return
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else []
        for k, v in items:
            if isinstance(v, (dict, list)):
                walk(v, depth + 1)
            else:
                slots.append((x, k))
    walk(doc)
    if not slots:
        return damage(data, rng)
    # Prefer the keys that shape the model, then other named numbers, over the thousands of
    # vocabulary entries.
    named = [s for s in slots if isinstance(s[1], str) and not isinstance(s[0].get(s[1]), str)]
    struct_ = [s for s in slots if isinstance(s[1], str) and s[1] in STRUCT_KEYS]
    r = rng.random()
    pool = struct_ if struct_ and r < 0.6 else named if named and r < 0.85 else slots
    x, k = rng.choice(pool)
    v = x[k]
    WHAT.append(f"json {k!r}: {str(v)[:40]!r}")
    if isinstance(v, bool):
        x[k] = not v if rng.random() < 0.7 else None
    elif isinstance(v, int):
        x[k] = nearby_int(v, rng)
    elif isinstance(v, float):
        x[k] = rng.choice([0.0, -1.0, v * 2, v / 2, 1e30, float("nan")])
    elif isinstance(v, str):
        x[k] = rng.choice(HF_STRINGS.get(k, ["", v + "x", "llama", "<unk>"]))
    elif v is None:
        x[k] = rng.choice([0, 1, "", [], {}])
    if isinstance(x, dict) and rng.random() < 0.1:
        del x[rng.choice(list(x.keys()))]
    return json.dumps(doc).replace("NaN", "1e999").encode()


def damage_safetensors_semantic(data, rng):
    n = struct.unpack_from("<Q", data, 0)[0]
    try:
        head = json.loads(data[8:8 + n])
    except ValueError:
        return damage(data, rng)
    names = [k for k in head if k != "__metadata__"]
    if not names:
        return damage(data, rng)
    t = head[rng.choice(names)]
    WHAT.append(f"safetensors header {t}")
    r = rng.random()
    if r < 0.4 and t.get("shape"):
        j = rng.randrange(len(t["shape"]))
        t["shape"][j] = max(0, nearby_int(t["shape"][j], rng))
    elif r < 0.55:
        t["shape"] = list(reversed(t.get("shape", []))) + ([1] if rng.random() < 0.3 else [])
    elif r < 0.75:
        t["dtype"] = rng.choice(["F16", "BF16", "F32", "F64", "I8", "U8", "I32", "F8_E4M3", "X"])
    else:
        a, b = t.get("data_offsets", [0, 0])
        t["data_offsets"] = rng.choice([[a, b + 4], [a + 4, b], [b, a], [0, b], [a, a]])
    body = json.dumps(head).encode()
    return struct.pack("<Q", len(body)) + body + data[8 + n:]


def damage_llama2c_semantic(data, rng):
    h = list(struct.unpack_from("<7i", data, 0))
    j = rng.randrange(7)
    WHAT.append(f"llama2c header field {j}: {h[j]}")
    h[j] = nearby_int(h[j], rng, -2**31, 2**31 - 1)
    return struct.pack("<7i", *h) + data[28:]


def poison_floats(data, start, rng):
    """NaN / Inf / huge values written over a few f32 weights after `start`."""
    b = bytearray(data)
    WHAT.append("non-finite weights")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(start, max(start + 1, len(b) - 4)) & ~3
        b[i:i + 4] = struct.pack("<f", rng.choice([float("nan"), float("inf"), -float("inf"),
                                                   1e38, -1e38]))
    return bytes(b)


def damage_semantic(name, data, rng):
    """A well-formed file that lies; falls back to byte damage for formats it does not know."""
    try:
        if data[:4] == b"GGUF":
            if rng.random() < 0.1:
                return poison_floats(data, len(data) // 2, rng)
            return damage_gguf_semantic(data, rng)
        if name.endswith(".json"):
            return damage_json_semantic(data, rng)
        if name.endswith(".safetensors"):
            if rng.random() < 0.15:
                return poison_floats(data, 8 + struct.unpack_from("<Q", data, 0)[0], rng)
            return damage_safetensors_semantic(data, rng)
        if name.endswith(".bin") and not name.startswith("tok"):
            if rng.random() < 0.15:
                return poison_floats(data, 28, rng)
            return damage_llama2c_semantic(data, rng)
    except (ValueError, struct.error, KeyError, TypeError, IndexError):
        pass
    return damage(data, rng)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cli", default=os.path.join(repo, "build", "app", "lcw-cli"))
    ap.add_argument("--shared", default=os.environ.get("LCW_SHARED_DIR",
                                                       os.path.join(repo, "..", "shared")))
    ap.add_argument("--out", default="/tmp/lcw-mutate")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--log", action="store_true", help="one line per run in OUT/runs.log")
    ap.add_argument("--mode", choices=["bytes", "semantic", "mixed"], default="mixed")
    ap.add_argument("--vmem-kb", type=int, default=4194304,
                    help="ulimit -v for each run (0: none, for AddressSanitizer builds)")
    a = ap.parse_args()
    models = os.path.join(a.shared, "models")
    if not os.path.isdir(models):
        print(f"mutate_cli: {models} not found (set LCW_SHARED_DIR)", file=sys.stderr)
        return 2
    sources = [os.path.join(models, "stories260K", "hf"), os.path.join(models, "stories260K", "gguf"),
               os.path.join(models, "babyllama"), os.path.join(models, "stories260K", "llama2c")]
    tr = os.path.join(models, "tiny-random")
    if os.path.isdir(tr):
        sources += [os.path.join(tr, f, "model") for f in sorted(os.listdir(tr))]
    gk = os.path.join(models, "gguf-k")  # K-quant and IQ4_NL blocks (single files)
    sources += [os.path.join(gk, f) for f in ("model-Q4_K_M.gguf", "model-Q2_K-imat.gguf",
                                              "model-IQ4_NL-imat.gguf", "model-Q6_K.gguf")]
    sources = [s for s in sources if os.path.exists(s)]
    text = os.path.join(a.out, "text.txt")
    os.makedirs(os.path.join(a.out, "findings"), exist_ok=True)
    with open(os.path.join(repo, "resources", "data", "tinystories_eval.txt"), "rb") as f:
        open(text, "wb").write(f.read(3000))
    rng = random.Random(a.seed)
    findings, slowest, codes = 0, 0.0, {}
    for run in range(a.runs):
        src = rng.choice(sources)
        case = os.path.join(a.out, "case")
        shutil.rmtree(case, ignore_errors=True)
        if os.path.isdir(src):
            shutil.copytree(src, case)
        else:
            os.makedirs(case)
            shutil.copy(src, case)
        name = rng.choice(sorted(os.listdir(case)))
        path = os.path.join(case, name)
        os.chmod(path, 0o644)
        data = open(path, "rb").read()
        semantic = a.mode == "semantic" or (a.mode == "mixed" and rng.random() < 0.5)
        WHAT.clear()
        if semantic:
            data = damage_semantic(name, data, rng)
        else:
            data = damage_json(data, rng) if name.endswith(".json") and rng.random() < 0.5 \
                else damage(data, rng)
        open(path, "wb").write(data)
        target = case
        ggufs = [f for f in os.listdir(case) if f.endswith(".gguf")]
        if ggufs:
            target = os.path.join(case, name if name.endswith(".gguf") else ggufs[0])
        else:
            for ckpt in ("tok105_model5000.bin", "stories260K.bin"):
                if os.path.exists(os.path.join(case, ckpt)):
                    target = os.path.join(case, ckpt)
        cmds = [["info", target], ["generate", target, "--prompt", "Once upon", "-n", "4"],
                ["perplexity", target, "--text", text, "--ctx", "64"]]
        if semantic:
            # Damage that passes the readers reaches everything a user runs next.
            work = os.path.join(a.out, "work")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            cmds += [["eval", target, "--preset", "W4A16-g64", "--text", text, "--ctx", "64",
                      "--no-record", "--speed-tokens", "0"],
                     ["stats", target, "--calib", text, "--samples", "1", "--seq-len", "32",
                      "--out", os.path.join(work, "s.h5")],
                     ["export", target, "--preset", "Q4_K_M", "--format", "gguf", "--out",
                      os.path.join(work, "q.gguf"), "--no-kl"],
                     ["compress", target, "--preset", "W8A8", "--save",
                      os.path.join(work, "overlay")]]
        cmd = rng.choice(cmds)
        t0 = time.time()
        try:
            limit = f"ulimit -v {a.vmem_kb}; " if a.vmem_kb > 0 else ""
            r = subprocess.run(["bash", "-c", limit + 'exec "$0" "$@"', a.cli] + cmd,
                               capture_output=True, timeout=a.timeout)
            rc, err = r.returncode, r.stderr[-400:].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, err = "timeout", ""
        slowest = max(slowest, time.time() - t0)
        codes[str(rc)] = codes.get(str(rc), 0) + 1
        if a.log:
            with open(os.path.join(a.out, "runs.log"), "a") as lg:
                lg.write(f"{run} rc={rc} {' '.join(cmd[:1])} {src} {name} [{'; '.join(WHAT)}]: "
                         f"{err.strip().splitlines()[-1] if err.strip() else ''}\n")
        if rc not in (0, 1, 2):
            findings += 1
            keep = os.path.join(a.out, "findings", f"{run:05d}-{os.path.basename(src)}-{name}")
            shutil.copy(path, keep)
            open(keep + ".txt", "w").write(f"{rc}\n{' '.join(cmd)}\n{err}\n")
            print(f"finding: {rc} {' '.join(cmd[:1])} {src} {name}: {err.strip()[-200:]}",
                  flush=True)
    print(json.dumps({"runs": a.runs, "seed": a.seed, "mode": a.mode, "findings": findings, "exit_codes": codes,
                      "slowest_s": round(slowest, 2), "out": a.out}))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
