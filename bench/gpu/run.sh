#!/usr/bin/env bash
# Runs on a bare GPU machine, from the repo root, with the folder bench/gpu/prepare.sh made (.gpu)
# beside it: unpacks it, loads the Vulkan loader, then the PHASES asked for, writing JSON lines to
# $OUT/gpu.jsonl as they come (so a run cut short still returns what it measured):
#   env     nvidia-smi, `lcw-cli devices --json`
#   tests   the Vulkan tests (test_vulkan_backend/_packed/_forward/_reduce) on the GPU:
#           every op and whole-model logits against lcw's CPU path
#   1.1b, 8b  the synthetic TinyLlama-1.1B / Llama-3-8B shape: `lcw-cli synth` + F16 GGUF export,
#           llama.cpp's quantiser for every TYPE, then per type lcw (bench_runtime --device
#           vulkan; lcw-cli perplexity --device vulkan) and llama.cpp's Vulkan build
#           (llama_gpu_bench) on the same file: pp PREFILL / tg DECODE medians of REPS, and
#           perplexity over the first PPL_BYTES bytes of wikitext-2 at ctx 512 (both engines the
#           same text); for 1.1B also lcw's CPU vs GPU perplexity on CHECK_BYTES bytes.
#   Environment: TYPES (F16 Q8_0 Q4_0 Q4_K_M), TYPES_8B (F16 Q4_0), PREFILL 512, DECODE 128,
#   REPS 3, PPL_BYTES 40000, PPL_BYTES_8B 20000, CHECK_BYTES 2100, DEADLINE (seconds from start
#   after which no new step starts; default 500), WORK (/tmp/lcw-gpu)
#   table   the Markdown table of the measurements so far ($OUT/table.md)
#   bench/gpu/run.sh "env tests 1.1b 8b table"
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
OUT=${OUT:-/tmp/lcw-gpu-out}
WORK=${WORK:-/tmp/lcw-gpu}
TYPES=${TYPES:-F16 Q8_0 Q4_0 Q4_K_M}
TYPES_8B=${TYPES_8B:-F16 Q4_0}
PREFILL=${PREFILL:-512} DECODE=${DECODE:-128} REPS=${REPS:-3}
PPL_BYTES=${PPL_BYTES:-40000} PPL_BYTES_8B=${PPL_BYTES_8B:-20000} CHECK_BYTES=${CHECK_BYTES:-2100}
DEADLINE=${DEADLINE:-500}
mkdir -p "$OUT" "$WORK"
J=$OUT/gpu.jsonl
G=$WORK/bundle
elapsed() { echo $(( $(date +%s) - T0 )); }
late() { [ "$(elapsed)" -ge "$DEADLINE" ] && { echo "{\"skipped\":\"$1\",\"elapsed\":$(elapsed)}" >> "$J"; }; }
log() { echo "[$(elapsed) s] $*" >&2; }

# --- unpack and environment
if [ ! -x "$G/bin/lcw-cli" ]; then
  mkdir -p "$G"
  tar -C "$G" -xJf .gpu/bundle.tar.xz 2>/dev/null ||
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .gpu/bundle.tar.xz "$G"
fi
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export LD_LIBRARY_PATH=$G/lib:$G/llama${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cxx=$(ldconfig -p | awk '$1 == "libstdc++.so.6" {print $NF; exit}')
if [ -z "$cxx" ] || ! grep -q GLIBCXX_3.4.30 "$cxx"; then LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$G/lib-cxx; fi
if [ -z "${VK_DRIVER_FILES:-}" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
  [ -n "$icd" ] && export VK_DRIVER_FILES=$icd
fi
export PATH=$G/bin:$PATH LLAMA_BINS=$G/llama LCW_SHARED_DIR=$G/shared QT_QPA_PLATFORM=offscreen
# The test binaries were built in /work/main and read resources/ from there.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
CLI=$G/bin/lcw-cli
THREADS=$(nproc)

run_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv >&2 || true
  log "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} threads=$THREADS"
  "$CLI" devices --json | jq -c '{metric: "devices"} + .' >> "$J"
  tail -1 "$J" >&2
}

run_tests() {
  local t rc s
  for t in test_vulkan_backend test_vulkan_packed test_vulkan_forward test_vulkan_reduce; do
    late "$t" && return
    s=$(date +%s)
    timeout 150 "$G/bin/$t" > "$OUT/$t.log" 2>&1
    rc=$?
    jq -nc --arg t "$t" --argjson rc "$rc" --argjson sec "$(( $(date +%s) - s ))" \
      --arg summary "$(grep -E '^Totals:' "$OUT/$t.log" | tail -1)" \
      --arg fails "$(grep -E '^FAIL!' -A3 "$OUT/$t.log" | head -40)" \
      '{metric: "test", test: $t, exit_status: $rc, seconds: $sec, totals: $summary, failures: $fails}' >> "$J"
    tail -1 "$J" >&2
  done
}

# llamacpp_ftype_id: llama.h's id of a llama-quantize type name
source bench/llamacpp/node_dir.sh

# bench_shape SHAPE TYPES PPL_BYTES: one synthetic shape, every type, both engines.
bench_shape() {
  local shape=$1 types=$2 pbytes=$3 d=$WORK/$1 t f s
  late "$shape" && return
  mkdir -p "$d"
  s=$(date +%s)
  if [ ! -f "$d/F16.gguf" ]; then
    "$CLI" synth --shape "$shape" --dtype f16 --out "$d/src" --quiet >&2 &&
      "$CLI" export "$d/src" --type f16 --out "$d/F16.gguf" --no-kl --quiet >&2 || return
    rm -rf "$d/src"
  fi
  echo "{\"metric\":\"make_model\",\"shape\":\"$shape\",\"seconds\":$(( $(date +%s) - s ))}" >> "$J"
  head -c "$pbytes" "$LCW_SHARED_DIR/data/wiki.test.raw" > "$d/ppl.txt"
  head -c "$CHECK_BYTES" "$LCW_SHARED_DIR/data/wiki.test.raw" > "$d/check.txt"
  for t in $types; do
    late "$shape $t" && return
    f=$d/$t.gguf
    if [ "$t" != F16 ] && [ ! -f "$f" ]; then
      "$G/bin/llama_quantize_time" "$(ls "$G"/llama/libllama.*.so)" "$d/F16.gguf" "$f" "$(llamacpp_ftype_id "$t")" "$THREADS" \
        2>> "$OUT/quantize.err" | jq -c --arg t "$t" --arg s "$shape" '. + {type: $t, shape: $s}' >> "$J" || continue
    fi
    log "$shape $t: lcw"
    timeout 240 "$G/bin/bench_runtime" "$f" --device vulkan --prefill "$PREFILL" --decode "$DECODE" \
      --reps "$REPS" --warmup 1 2>> "$OUT/lcw.err" |
      jq -c --arg t "$t" --arg s "$shape" '. + {engine: "lcw", type: $t, shape: $s}' >> "$J"
    timeout 240 "$CLI" perplexity "$f" --text "$d/ppl.txt" --ctx 512 --device vulkan --json --quiet 2>> "$OUT/lcw.err" |
      jq -c --arg t "$t" --arg s "$shape" '{metric: "perplexity", engine: "lcw", type: $t, shape: $s,
        value: .ppl, seconds, tokens_per_second, chunks, tokens, device}' >> "$J"
    if [ "$shape" != llama3-8b ] && { [ "$t" = F16 ] || [ "$t" = Q4_K_M ]; }; then
      for dev in cpu vulkan; do
        timeout 120 "$CLI" perplexity "$f" --text "$d/check.txt" --ctx 512 --device "$dev" --json --quiet 2>> "$OUT/lcw.err" |
          jq -c --arg t "$t" --arg s "$shape" '{metric: "ppl_check", engine: "lcw", type: $t, shape: $s,
            value: .ppl, mean_nll, chunks, seconds, device}' >> "$J"
      done
    fi
    log "$shape $t: llama.cpp"
    timeout 300 "$G/bin/llama_gpu_bench" "$f" --prefill "$PREFILL" --decode "$DECODE" --reps "$REPS" \
      --ppl "$d/ppl.txt" --ctx 512 2>> "$OUT/llama.err" |
      jq -c --arg t "$t" --arg s "$shape" '. + {type: $t, shape: $s}' >> "$J"
    grep -h '"metric":"\(prefill\|decode\)_tokens_per_second\|"metric":"perplexity"' "$J" | tail -4 |
      jq -c '{engine, type, metric, value, seconds}' >&2
    [ "$shape" = llama3-8b ] && [ "$t" != F16 ] && rm -f "$f"
  done
}

# table: the Markdown table of what gpu.jsonl holds (per shape and type, both engines; ratios are
# lcw / llama.cpp), to $OUT/table.md and stderr.
run_table() {
  jq -rs '
    def v(e; t; s; m): [.[] | select(.engine == e and .type == t and .shape == s and .metric == m)][0];
    def r(a; b): if a == null or b == null or b == 0 then "–" else ((a / b * 100 | round) / 100 | tostring) end;
    def f(x): if x == null then "–" else ((x * 10 | round) / 10 | tostring) end;
    ([.[] | select(.metric == "prefill_tokens_per_second") | {shape, type}] | unique) as $rows |
    "| shape | type | lcw prefill tok/s | llama.cpp prefill tok/s | × | lcw decode tok/s | llama.cpp decode tok/s | × | lcw ppl s (chunks) | llama.cpp ppl s | ppl lcw / llama.cpp |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ($rows[] | . as $k |
      ($all | v("lcw"; $k.type; $k.shape; "prefill_tokens_per_second").value) as $lp |
      ($all | v("llama.cpp"; $k.type; $k.shape; "prefill_tokens_per_second").value) as $cp |
      ($all | v("lcw"; $k.type; $k.shape; "decode_tokens_per_second").value) as $ld |
      ($all | v("llama.cpp"; $k.type; $k.shape; "decode_tokens_per_second").value) as $cd |
      ($all | v("lcw"; $k.type; $k.shape; "perplexity")) as $lx |
      ($all | v("llama.cpp"; $k.type; $k.shape; "perplexity")) as $cx |
      "| \($k.shape) | \($k.type) | \(f($lp)) | \(f($cp)) | \(r($lp; $cp)) | \(f($ld)) | \(f($cd)) | \(r($ld; $cd)) | \(f($lx.seconds)) (\($lx.chunks // "–")) | \(f($cx.seconds)) | \(r($lx.value; $cx.value)) |")
  ' --argjson all "$(jq -s . "$J")" "$J" | tee "$OUT/table.md" >&2
}

for phase in "${@:-env tests 1.1b table}"; do
  for p in $phase; do
    case $p in
      env) run_env ;;
      tests) run_tests ;;
      1.1b) bench_shape tinyllama-1.1b "$TYPES" "$PPL_BYTES" ;;
      table) run_table ;;
      8b) bench_shape llama3-8b "$TYPES_8B" "$PPL_BYTES_8B" ;;
      tiny) bench_shape llama-tiny "$TYPES" "$CHECK_BYTES" ;; # a check of this script itself
      *) echo "unknown phase $p" >&2 ;;
    esac
  done
done
log "done"
