#!/usr/bin/env python3
"""Mutation probe of lcw-cli: crash and hang detection on damaged model folders.

Copies a model (folder or file) from ../shared/models, damages one of its files (random bytes,
runs of 0x00/0xff, truncation, insertions; in JSON files also numbers replaced by extreme ones),
and runs `lcw-cli info | generate | perplexity` on it under `ulimit -v 4194304` with a 10 s
limit. Exit codes 0, 1 (a refused file) and 2 are fine; anything else (a signal, an abort, a
sanitizer's report through a sanitized build's exit code) or a time-out is a finding, kept under
OUT/findings/ with the command line. Prints one JSON line at the end.

    scripts/mutate_cli.py [--runs 300] [--seed 1] [--cli build/app/lcw-cli] [--out /tmp/lcw-mutate]
"""
import argparse
import json
import os
import random
import re
import shutil
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
    a = ap.parse_args()
    models = os.path.join(a.shared, "models")
    if not os.path.isdir(models):
        print(f"mutate_cli: {models} not found (set LCW_SHARED_DIR)", file=sys.stderr)
        return 2
    sources = [os.path.join(models, "stories260K", "hf"), os.path.join(models, "stories260K", "gguf"),
               os.path.join(models, "babyllama")]
    tr = os.path.join(models, "tiny-random")
    if os.path.isdir(tr):
        sources += [os.path.join(tr, f, "model") for f in sorted(os.listdir(tr))]
    sources = [s for s in sources if os.path.isdir(s)]
    text = os.path.join(a.out, "text.txt")
    os.makedirs(os.path.join(a.out, "findings"), exist_ok=True)
    with open(os.path.join(repo, "resources", "data", "tinystories_eval.txt"), "rb") as f:
        open(text, "wb").write(f.read(3000))
    rng = random.Random(a.seed)
    findings, slowest = 0, 0.0
    for run in range(a.runs):
        src = rng.choice(sources)
        case = os.path.join(a.out, "case")
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(src, case)
        name = rng.choice(sorted(os.listdir(case)))
        path = os.path.join(case, name)
        os.chmod(path, 0o644)
        data = open(path, "rb").read()
        data = damage_json(data, rng) if name.endswith(".json") and rng.random() < 0.5 \
            else damage(data, rng)
        open(path, "wb").write(data)
        target = case
        ggufs = [f for f in os.listdir(case) if f.endswith(".gguf")]
        if ggufs:
            target = os.path.join(case, ggufs[0])
        elif os.path.exists(os.path.join(case, "tok105_model5000.bin")):
            target = os.path.join(case, "tok105_model5000.bin")
        cmd = rng.choice([["info", target], ["generate", target, "--prompt", "Once upon", "-n", "4"],
                          ["perplexity", target, "--text", text, "--ctx", "64"]])
        t0 = time.time()
        try:
            r = subprocess.run(["bash", "-c", 'ulimit -v 4194304; exec "$0" "$@"', a.cli] + cmd,
                               capture_output=True, timeout=a.timeout)
            rc, err = r.returncode, r.stderr[-400:].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, err = "timeout", ""
        slowest = max(slowest, time.time() - t0)
        if rc not in (0, 1, 2):
            findings += 1
            keep = os.path.join(a.out, "findings", f"{run:05d}-{os.path.basename(src)}-{name}")
            shutil.copy(path, keep)
            open(keep + ".txt", "w").write(f"{rc}\n{' '.join(cmd)}\n{err}\n")
            print(f"finding: {rc} {' '.join(cmd[:1])} {src} {name}: {err.strip()[-200:]}",
                  flush=True)
    print(json.dumps({"runs": a.runs, "seed": a.seed, "findings": findings,
                      "slowest_s": round(slowest, 2), "out": a.out}))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
