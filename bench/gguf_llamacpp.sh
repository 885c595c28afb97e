#!/usr/bin/env bash
# llama.cpp runs what lcw reads and writes: for each GGUF file, llama.cpp's perplexity (through
# node-llama-cpp's prebuilt CPU binary, bench/llamacpp/ppl_llamacpp.mjs, computed as
# llama-perplexity does) next to lcw's (`lcw-cli eval FILE --ctx C --chunks N`, llama.cpp chunking)
# on the same text, the two engines' token ids of the text, and both engines' greedy ids for a
# fixed prompt. One JSON line per file:
#   {"metric":"ppl_lcw_vs_llamacpp", "file", "source", "lcw_ppl", "llamacpp_ppl", "rel_diff",
#    "agree_0.2pct", "same_token_ids" (first 32 ids of the text), "same_chunk_token_ids" (every
#    token the chunks use), "same_token_count", "same_prompt_ids", "same_greedy_ids",
#    "greedy_first_diff", "lcw_greedy_ids", "llamacpp_greedy_ids", "llamacpp_margins" (llama.cpp's
#    top-1 minus top-2 logit at each greedy step: a small one at greedy_first_diff is a near tie), ...}
# then {"metric":"ppl_lcw_vs_llamacpp_summary", ...}. Exit status 1 when a file's perplexities
# differ by more than 0.2 % (or an lcw export fails), 0 otherwise.
#   bench/gguf_llamacpp.sh [FILE.gguf ...]
# Without files: every .gguf in $SHARED/models/gguf-k/ and $SHARED/models/stories260K/gguf/, plus,
# when the build's lcw-cli has the `export` command, the files lcw exports (EXPORTS below) into
# $LCW_BENCH_DIR/gguf-export: gguf-k's model-f32.gguf with presets Q4_K_M (with and without its
# imatrix.dat), Q3_K_M with it, Q6_K and Q8_0, gguf-k's HF folder as --type f16, and
# stories260K's HF folder as --type f32 and q8_0 (EXPORT=0 skips them).
# Environment: BUILD (default build), SHARED (default $LCW_SHARED_DIR or ../shared), TEXT (default
# resources/data/tinystories_eval.txt), CTX (default 128), CHUNKS (default 0: the whole text; with
# few chunks llama.cpp's 8-bit activation rounding alone can move quantised files' PPL by 0.2 %,
# see bench/README.md), THREADS (default 1, both engines; these models are tiny), PROMPT (default
# "Once upon a time"), GEN (greedy tokens, default 32), LCW_BENCH_DIR (default /tmp/lcw-bench:
# node_modules and exports; never the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-${LCW_SHARED_DIR:-../shared}}
TEXT=${TEXT:-resources/data/tinystories_eval.txt}
CTX=${CTX:-128} CHUNKS=${CHUNKS:-0} GEN=${GEN:-32}
THREADS=${THREADS:-1}
PROMPT=${PROMPT:-Once upon a time}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
source bench/lcw_cli.sh
NODE_DIR=$DIR/node
source bench/llamacpp/node_dir.sh
node_llamacpp_setup bench/llamacpp/ppl_llamacpp.mjs bench/llamacpp/act_quant_check.mjs
TEXT=$(realpath "$TEXT")

# name|source model|lcw-cli export options: the files lcw writes (when its export command exists)
GK=$SHARED/models/gguf-k
EXPORTS=(
  "gguf-k-Q4_K_M|$GK/model-f32.gguf|--preset Q4_K_M"
  "gguf-k-Q4_K_M-imat|$GK/model-f32.gguf|--preset Q4_K_M --imatrix $GK/imatrix.dat"
  "gguf-k-Q3_K_M-imat|$GK/model-f32.gguf|--preset Q3_K_M --imatrix $GK/imatrix.dat"
  "gguf-k-Q6_K|$GK/model-f32.gguf|--preset Q6_K"
  "gguf-k-Q8_0|$GK/model-f32.gguf|--preset Q8_0"
  "gguf-k-hf-f16|$GK/hf|--type f16"
  "stories260K-f32|$SHARED/models/stories260K/hf|--type f32"
  "stories260K-q8_0|$SHARED/models/stories260K/hf|--type q8_0"
)

files=() sources=() failed=0 export_failures=0
if [ $# -gt 0 ]; then
  for f in "$@"; do files+=("$(realpath "$f")"); sources+=("given"); done
else
  for f in "$SHARED"/models/gguf-k/*.gguf "$SHARED"/models/stories260K/gguf/*.gguf; do
    [ -f "$f" ] && { files+=("$(realpath "$f")"); sources+=("shared (llama.cpp's converter/llama-quantize)"); }
  done
  if [ "${EXPORT:-1}" = 0 ]; then
    echo "EXPORT=0: not exporting with lcw" >&2
  elif ! "$CLI" export --help > "$TMP/export_help.txt" 2>&1 &&
       grep -q "unknown command" "$TMP/export_help.txt"; then
    echo "note: $CLI has no 'export' command yet; skipping the files lcw would export" >&2
  else
    mkdir -p "$DIR/gguf-export"
    for e in "${EXPORTS[@]}"; do
      IFS='|' read -r name src eopts <<< "$e"
      out=$DIR/gguf-export/lcw-$name.gguf
      # shellcheck disable=SC2086  # eopts holds whole options
      if "$CLI" export "$src" $eopts --format gguf --out "$out" > "$TMP/export.log" 2>&1; then
        files+=("$out"); sources+=("lcw-cli export $src $eopts")
      else
        echo "lcw-cli export $src $eopts failed:" >&2
        tail -5 "$TMP/export.log" >&2
        jq -nc --arg f "$out" --arg s "$src" --arg o "$eopts" \
          '{metric: "ppl_lcw_vs_llamacpp", file: $f, export_failed: true, source: $s, options: $o,
            "agree_0.2pct": false}'
        failed=1 export_failures=$((export_failures + 1))
      fi
    done
  fi
fi
[ ${#files[@]} -gt 0 ] || { echo "no GGUF files (SHARED=$SHARED)" >&2; exit 2; }

# lcw's token ids of a prefix of the text (about 100 KB cut at a line end: command lines hold
# 128 KiB at most), compared with llama.cpp's ids of the whole text up to the last chunk token.
head -c 100000 "$TEXT" | sed '$d' > "$TMP/prefix.txt"
NEED=$((CTX * CHUNKS))
[ "$CHUNKS" -gt 0 ] || NEED=100000000 # all chunks: as far as the prefix goes

# lcw's greedy ids for $PROMPT as {"prompt_ids", "ids" (prompt + generated), "prompt_tokens",
# "via"}: `lcw-cli generate --temp 0 --json`, or, where that fails (its JSON carries the decoded
# text, and random-weight models generate byte tokens that are not valid UTF-8), a greedy loop over
# `lcw-cli logits` (argmax of the last position, stopping at an EOS id, as generate does).
lcw_greedy() { # FILE
  local f=$1 ids eos next i
  if "$CLI" generate "$f" --prompt "$PROMPT" -n "$GEN" --temp 0 --threads "$THREADS" --json \
       > "$TMP/gen.json" 2> "$TMP/gen_err.txt"; then
    jq -c '{prompt_ids, ids, prompt_tokens, via: "lcw-cli generate --temp 0"}' "$TMP/gen.json"
    return
  fi
  ids=$("$CLI" tokenize "$f" --text "$PROMPT" --json | jq -r '.ids | join(",")')
  eos=$("$CLI" info "$f" --json | jq -c '[.eos_ids[]?, .tokenizer.eos_id] | unique')
  local prompt_ids=$ids
  for ((i = 0; i < GEN; ++i)); do
    "$CLI" logits "$f" --ids "$ids" --out "$TMP/logits.npy" --threads "$THREADS" --quiet
    next=$(python3 - "$TMP/logits.npy" <<'PY'
import ast, struct, sys
b = open(sys.argv[1], "rb").read()
hl = struct.unpack("<H", b[8:10])[0]
h = ast.literal_eval(b[10:10 + hl].decode())
assert h["descr"] == "<f4" and not h["fortran_order"], h
rows, vocab = h["shape"]
last = struct.unpack_from("<%df" % vocab, b, 10 + hl + 4 * vocab * (rows - 1))
print(max(range(vocab), key=lambda k: (last[k], -k)))  # first maximum, as argmax
PY
)
    ids=$ids,$next
    jq -e --argjson n "$next" 'index($n) != null' <<< "$eos" > /dev/null && break
  done
  jq -nc --arg p "$prompt_ids" --arg a "$ids" --arg e "$(head -c 200 "$TMP/gen_err.txt")" \
    '($p | split(",") | map(tonumber)) as $pi |
     {prompt_ids: $pi, ids: ($a | split(",") | map(tonumber)), prompt_tokens: ($pi | length),
      via: ("greedy loop over lcw-cli logits (lcw-cli generate --json: " + $e + ")")}'
}

n=0 agree=0 maxrel=0
for i in "${!files[@]}"; do
  f=${files[$i]} src=${sources[$i]}
  # Each step's failure (a type one engine cannot run, a crash) is reported and counted, and the
  # next file runs.
  err=
  (cd "$NODE_DIR" && node ppl_llamacpp.mjs "$f" --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" \
     --threads "$THREADS" --print-ids "$NEED" --gen "$GEN" --prompt "$PROMPT") \
     > "$TMP/llama.jsonl" 2> "$TMP/err.txt" || err="llama.cpp: $(grep -m1 -iE 'error' "$TMP/err.txt" || tail -1 "$TMP/err.txt")"
  if [ -z "$err" ]; then
    { "$CLI" eval "$f" --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" --threads "$THREADS" \
        --speed-tokens 0 --no-record --quiet --json > "$TMP/lcw_eval.json" &&
      "$CLI" tokenize "$f" --text "$(cat "$TMP/prefix.txt")" --json > "$TMP/lcw_tok.json" &&
      lcw_greedy "$f" > "$TMP/lcw_gen.json"; } 2> "$TMP/err.txt" || err="lcw: $(grep -m1 -iE 'error' "$TMP/err.txt" || tail -1 "$TMP/err.txt")"
  fi
  if [ -n "$err" ]; then
    jq -nc --arg f "$f" --arg s "$src" --arg e "$err" \
      '{metric: "ppl_lcw_vs_llamacpp", file: $f, source: $s, error: $e, "agree_0.2pct": false}'
    n=$((n + 1)) failed=1
    continue
  fi
  line=$(jq -sc --arg f "$f" --arg src "$src" --argjson need "$NEED" --argjson threads "$THREADS" \
      --slurpfile ev "$TMP/lcw_eval.json" --slurpfile tk "$TMP/lcw_tok.json" \
      --slurpfile gn "$TMP/lcw_gen.json" '
    (map(select(.metric == "tokens"))[0]) as $lt |
    (map(select(.metric == "perplexity"))[0]) as $lp |
    (map(select(.metric == "greedy"))[0]) as $lg |
    $ev[0] as $e | $tk[0].ids as $ti | $gn[0] as $g |
    ($g.ids[$g.prompt_tokens:]) as $lcwgen |
    # tokens near the end of the prefix may differ from the whole text'"'"'s: leave the last 16 out
    ([$need, ($ti | length) - 16] | min) as $cmp |
    (($e.baseline.ppl - $lp.ppl) / $lp.ppl | fabs) as $rel |
    {metric: "ppl_lcw_vs_llamacpp", file: $f, source: $src, ctx: $lp.ctx, chunks: $lp.chunks,
     scored_tokens: $lp.scored_tokens, lcw_scored_tokens: $e.scored_tokens,
     lcw_ppl: $e.baseline.ppl, llamacpp_ppl: $lp.ppl, rel_diff: $rel,
     "agree_0.2pct": ($rel <= 0.002 and $e.chunks == $lp.chunks and $e.scored_tokens == $lp.scored_tokens),
     same_token_ids: ($ti[:32] == $lt.ids[:32]),
     same_chunk_token_ids: ($ti[:$cmp] == $lt.ids[:$cmp]), compared_token_ids: $cmp,
     same_token_count: ($e.tokens == $lt.count), lcw_tokens: $e.tokens, llamacpp_tokens: $lt.count,
     llamacpp_add_bos: $lt.add_bos,
     prompt: $lg.prompt, same_prompt_ids: ($g.prompt_ids == $lg.prompt_ids),
     same_greedy_ids: ($lcwgen == $lg.ids),
     greedy_first_diff: ([range([($lcwgen | length), ($lg.ids | length)] | max)]
                         | map(select($lcwgen[.] != $lg.ids[.])) | first // null),
     llamacpp_margins: $lg.margins,
     lcw_greedy_via: $g.via, lcw_greedy_ids: $lcwgen, llamacpp_greedy_ids: $lg.ids,
     llamacpp_seconds: $lp.seconds, lcw_seconds: $e.baseline.ppl_seconds, threads: $threads}
  ' "$TMP/llama.jsonl")
  echo "$line"
  n=$((n + 1))
  if [ "$(jq '."agree_0.2pct"' <<< "$line")" = true ]; then agree=$((agree + 1)); else failed=1; fi
  maxrel=$(jq -n --argjson a "$maxrel" --argjson b "$(jq .rel_diff <<< "$line")" '[$a, $b] | max')
done
jq -nc --argjson n "$n" --argjson a "$agree" --argjson m "$maxrel" --arg t "$TEXT" \
  --argjson c "$CTX" --argjson k "$CHUNKS" --argjson e "$export_failures" \
  '{metric: "ppl_lcw_vs_llamacpp_summary", files: $n, agree: $a, max_rel_diff: $m,
    export_failures: $e, text: $t, ctx: $c, chunks: $k}'
exit "$failed"
