#!/usr/bin/env bash
# lcw vs llama.cpp (CPU: the prebuilt binary of the npm package node-llama-cpp) on the SAME GGUF
# files, same threads, same token counts. Per shape: `lcw-cli synth --dtype f16` writes the
# random-weight model, `lcw-cli export --type f16` makes it one F16 GGUF, and llama.cpp's own
# quantiser (llama_model_quantize, the function llama-quantize runs, from node-llama-cpp's
# libllama: bench/llamacpp/llama_quantize_time.c) makes every TYPE from that file, F32/F16/BF16
# included, so both engines read exactly the bytes llama-quantize writes. Then per type REPS runs
# of each engine, interleaved (lcw, llama.cpp, lcw, ...), each a fresh process: load, one untimed
# warm-up decode step (pages the mmapped weights in, as llama-bench warms up), prefill PREFILL
# ids (pp), DECODE greedy single-token steps after it (tg); medians over the runs. The machine's
# read bandwidth comes from bench_membw (THREADS threads), and decode GB/s = weight bytes one
# decode step reads (the file's tensors minus all but one row of token_embd) x tokens/s.
#
# stdout: JSON lines —
#   {"metric":"read_bandwidth_gb_per_s",...}                     bench_membw, once per script run
#   {"metric":"quantize_seconds","engine":"llama.cpp",...}       per file llama.cpp quantised
#   {"metric":"run","engine":"lcw"|"llama.cpp","shape","type","rep","prefill_tokens_per_second",
#    "decode_tokens_per_second","peak_rss_bytes","load_seconds",...}   one per process
#   {"metric":"lcw_vs_llamacpp","shape","type","file_bytes","decode_weight_bytes",
#    "lcw_decode_tps","llamacpp_decode_tps","decode_ratio","lcw_prefill_tps",
#    "llamacpp_prefill_tps","prefill_ratio","lcw_decode_gb_per_s","lcw_decode_bw_fraction",
#    "llamacpp_decode_gb_per_s","llamacpp_decode_bw_fraction","lcw_peak_rss_bytes",
#    "llamacpp_peak_rss_bytes","bandwidth_gb_per_s","threads","prefill","decode","reps",
#    "lcw_flags","lcw_isa","llamacpp_cpu_variant","loadavg",...}   one per shape and type
# Ratios are lcw / llama.cpp (> 1: lcw is faster). The Markdown table of those lines goes to
# stderr and to $MD_OUT (default $LCW_BENCH_DIR/compare_llamacpp.md) for the README.
#   bench/compare_llamacpp.sh
# Environment:
#   SHAPES   synth shapes, "1.1b" (= tinyllama-1.1b), "8b" (= llama3-8b), "qwen7b"
#            (= qwen2.5-7b) or any `lcw-cli synth --shape` name (default "1.1b")
#   TYPES    default "F32 F16 BF16 Q8_0 Q4_0 Q4_K_M Q6_K" (also Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M
#            Q4_K_S Q5_K_M ...); TYPES_BIG for shapes over 4e9 parameters, default TYPES
#            without F32 (a 32 GB F32 8B file cannot stay in this machine's page cache)
#   PREFILL (512), DECODE (128), REPS (5), THREADS (nproc), WARMUP (1)
#   LCW_FLAGS  extra bench_runtime options for every lcw run, e.g. "--exact-activations"
#   KV_CACHE   lcw's KV cache, f16 (default: llama.cpp's default cache, so both engines store
#            the same bytes) or f32 (lcw-cli's default, exact)
#   LCW_ISA    passed on to lcw (portable|avx2|avx512: the kernels of that level only)
#   LLAMACPP_CPU  one of llama.cpp's CPU backend variants (haswell, alderlake, skylakex, zen4,
#            ...: the libggml-cpu-*.so files of node-llama-cpp): llama.cpp loads only that one
#            (a copy of the node folder without the others, $LCW_BENCH_DIR/node-VARIANT). With
#            LCW_ISA=avx2 LLAMACPP_CPU=haswell both engines run as on an AVX2 machine without
#            AVX-512 or VNNI.
#   BUILD (build), LCW_BENCH_DIR (/tmp/lcw-bench: node_modules, models, GGUF files; never the
#   repo), MEMBW_MB (1024), MD_OUT
#   Disk: the 1.1B shape keeps its files (~15 GB for the seven types) for reruns. A big shape
#   keeps only its F16 base GGUF between runs (16 GB for 8B): the synth folder is deleted once
#   exported and each type's file once measured (KEEP_BIG=1 keeps them).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lcw_cli.sh
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
PREFILL=${PREFILL:-512} DECODE=${DECODE:-128} REPS=${REPS:-5} WARMUP=${WARMUP:-1}
SHAPES=${SHAPES:-1.1b}
TYPES=${TYPES:-F32 F16 BF16 Q8_0 Q4_0 Q4_K_M Q6_K}
TYPES_BIG=${TYPES_BIG:-$(tr ' ' '\n' <<< "$TYPES" | { grep -vx F32 || true; } | tr '\n' ' ')}
LCW_FLAGS=${LCW_FLAGS:-}
KV_CACHE=${KV_CACHE:-f16}
MD_OUT=${MD_OUT:-$DIR/compare_llamacpp.md}
mkdir -p "$DIR"

for t in bench_runtime bench_membw; do
  [ -x "$BUILD/bench/$t" ] || cmake --build "$BUILD" --target "$t" >&2
done

NODE_DIR=$DIR/node
source bench/llamacpp/node_dir.sh
node_llamacpp_setup bench/llamacpp/bench_llamacpp.mjs
RUN_DIR=$NODE_DIR
LLAMACPP_CPU=${LLAMACPP_CPU:-}
if [ -n "$LLAMACPP_CPU" ]; then
  RUN_DIR=$DIR/node-$LLAMACPP_CPU
  if [ ! -d "$RUN_DIR" ] || [ "$NODE_DIR/package.json" -nt "$RUN_DIR" ]; then
    rm -rf "$RUN_DIR"
    cp -a "$NODE_DIR" "$RUN_DIR"
    keep=$(find "$RUN_DIR/node_modules/@node-llama-cpp" -name "libggml-cpu-$LLAMACPP_CPU.so" | head -1)
    if [ -z "$keep" ]; then
      echo "node-llama-cpp has no CPU variant '$LLAMACPP_CPU' (libggml-cpu-$LLAMACPP_CPU.so)" >&2
      rm -rf "$RUN_DIR"
      exit 1
    fi
    for f in "$(dirname "$keep")"/libggml-cpu-*.so; do [ "$f" = "$keep" ] || rm -f "$f"; done
  fi
  cp bench/llamacpp/cpu_llama.mjs bench/llamacpp/bench_llamacpp.mjs "$RUN_DIR/"
fi
llamacpp_quantize_setup "$TMP/lqt"

shape_name() {
  case $1 in 1.1b) echo tinyllama-1.1b ;; 8b) echo llama3-8b ;; qwen7b) echo qwen2.5-7b ;; *) echo "$1" ;; esac
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Bandwidth first, while nothing of ours runs.
"$BUILD/bench/bench_membw" --threads "$THREADS" --mb "${MEMBW_MB:-1024}" --reps 5 | tee "$TMP/membw.json"
BW=$(jq .value "$TMP/membw.json")

# run_engine ENGINE SHAPE TYPE REP FILE: one process, its lines folded into one "run" line.
run_engine() {
  local engine=$1 shape=$2 type=$3 rep=$4 file=$5 out=$TMP/run.jsonl rc=0
  if [ "$engine" = lcw ]; then
    # shellcheck disable=SC2086  # LCW_FLAGS holds whole options
    "$BUILD/bench/bench_runtime" "$file" --threads "$THREADS" --prefill "$PREFILL" \
      --decode "$DECODE" --reps 1 --warmup "$WARMUP" --kv-cache "$KV_CACHE" $LCW_FLAGS > "$out" \
      2> "$TMP/err.txt" || rc=$?
  else
    (cd "$RUN_DIR" && node bench_llamacpp.mjs "$file" --threads "$THREADS" --prefill "$PREFILL" \
       --decode "$DECODE" --reps 1 --warmup "$WARMUP") > "$out" 2> "$TMP/err.txt" || rc=$?
  fi
  jq -sc --arg e "$engine" --arg s "$shape" --arg t "$type" --argjson r "$rep" --argjson rc "$rc" \
      --arg err "$(tail -c 300 "$TMP/err.txt")" --arg load "$(loadavg)" '
    def v(m): [.[] | select(.metric == m)][0].value;
    {metric: "run", engine: $e, shape: $s, type: $t, rep: $r,
     prefill_tokens_per_second: v("prefill_tokens_per_second"),
     decode_tokens_per_second: v("decode_tokens_per_second"),
     peak_rss_bytes: v("peak_rss_bytes"), load_seconds: v("load_seconds"),
     decode_weight_bytes: (.[0].decode_weight_bytes // null),
     threads: (.[0].threads // null), kv_cache: ([.[] | .kv_cache | select(. != null)][0] // null),
     loadavg: $load}
    + (if $rc != 0 then {error: $err, exit_status: $rc} else {} end)' "$out"
}

rows=()
for sh in $SHAPES; do
  shape=$(shape_name "$sh")
  gdir=$DIR/gguf-$shape
  base=$gdir/base-f16.gguf
  mkdir -p "$gdir"
  if [ ! -f "$base" ]; then
    src=$DIR/$shape-f16
    [ -f "$src/config.json" ] || "$CLI" synth --shape "$shape" --dtype f16 --out "$src" --quiet >&2
    "$CLI" export "$src" --type f16 --out "$base" --no-kl --quiet > "$TMP/export.log" 2>&1 ||
      { cat "$TMP/export.log" >&2; exit 1; }
  fi
  params=$("$CLI" info "$base" --json | jq -r '.parameters')
  big=0
  if [ "$params" -gt 4000000000 ]; then
    big=1
    [ "${KEEP_BIG:-0}" = 1 ] || rm -rf "$DIR/$shape-f16"
  fi
  types=$TYPES
  [ "$big" = 1 ] && types=$TYPES_BIG
  for type in $types; do
    file=$gdir/$type.gguf
    if [ ! -f "$file" ] || [ "$base" -nt "$file" ]; then
      id=$(llamacpp_ftype_id "$type")
      LD_LIBRARY_PATH="$LLAMA_BINS" "$TMP/lqt" "$LLAMA_LIB" "$base" "$file" "$id" "$THREADS" \
        2> "$TMP/q.err" | jq -c --arg t "$type" --arg s "$shape" --arg f "$file" \
        '. + {type: $t, shape: $s, output: $f}' || {
        echo "llama.cpp could not quantise $base to $type: $(tail -3 "$TMP/q.err")" >&2
        rm -f "$file"
        continue
      }
    fi
    : > "$TMP/runs.jsonl"
    for ((r = 0; r < REPS; ++r)); do
      for engine in lcw llama.cpp; do
        run_engine "$engine" "$shape" "$type" "$r" "$file" | tee -a "$TMP/runs.jsonl"
      done
    done
    line=$(jq -sc --arg s "$shape" --arg t "$type" --argjson bw "$BW" --argjson fb "$(stat -c %s "$file")" \
        --argjson th "$THREADS" --argjson pp "$PREFILL" --argjson tg "$DECODE" --argjson reps "$REPS" \
        --arg flags "$LCW_FLAGS" --arg kv "$KV_CACHE" --arg load "$(loadavg)" --arg isa "${LCW_ISA:-}" \
        --arg variant "$LLAMACPP_CPU" '
      def med: map(select(. != null)) | sort | if length == 0 then null
               elif length % 2 == 1 then .[length / 2 | floor]
               else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      def of(e; k): [.[] | select(.engine == e) | .[k]] | med;
      def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;
      ([.[] | .decode_weight_bytes | select(. != null)][0]) as $wb |
      def gbs(t): if t == null or $wb == null then null else $wb * t / 1e9 end;
      of("lcw"; "decode_tokens_per_second") as $ld | of("llama.cpp"; "decode_tokens_per_second") as $cd |
      of("lcw"; "prefill_tokens_per_second") as $lp | of("llama.cpp"; "prefill_tokens_per_second") as $cp |
      {metric: "lcw_vs_llamacpp", shape: $s, type: $t, file_bytes: $fb, decode_weight_bytes: $wb,
       lcw_decode_tps: $ld, llamacpp_decode_tps: $cd, decode_ratio: ratio($ld; $cd),
       lcw_prefill_tps: $lp, llamacpp_prefill_tps: $cp, prefill_ratio: ratio($lp; $cp),
       lcw_decode_gb_per_s: gbs($ld), lcw_decode_bw_fraction: ratio(gbs($ld); $bw),
       llamacpp_decode_gb_per_s: gbs($cd), llamacpp_decode_bw_fraction: ratio(gbs($cd); $bw),
       lcw_peak_rss_bytes: of("lcw"; "peak_rss_bytes"),
       llamacpp_peak_rss_bytes: of("llama.cpp"; "peak_rss_bytes"),
       lcw_errors: [.[] | select(.engine == "lcw" and .error) | .error] | unique,
       llamacpp_errors: [.[] | select(.engine == "llama.cpp" and .error) | .error] | unique,
       bandwidth_gb_per_s: $bw, threads: $th, prefill: $pp, decode: $tg, reps: $reps,
       lcw_flags: $flags, lcw_kv_cache: $kv, lcw_isa: $isa, llamacpp_cpu_variant: $variant,
       loadavg_end: $load}' "$TMP/runs.jsonl")
    echo "$line"
    rows+=("$line")
    if [ "$big" = 1 ] && [ "${KEEP_BIG:-0}" != 1 ]; then rm -f "$file"; fi
  done
done

# The Markdown table of the summary lines.
{
  echo "lcw vs llama.cpp (node-llama-cpp $(jq -r .version "$NODE_DIR/node_modules/node-llama-cpp/package.json"))," \
       "same GGUF files (llama.cpp's quantiser), $THREADS threads, pp$PREFILL / tg$DECODE," \
       "median of $REPS interleaved runs, read bandwidth $(printf '%.1f' "$BW") GB/s" \
       "(bench_membw, $THREADS threads), lcw KV cache $KV_CACHE${LCW_FLAGS:+, lcw $LCW_FLAGS}${LCW_ISA:+, lcw LCW_ISA=$LCW_ISA}" \
       "${LLAMACPP_CPU:+, llama.cpp CPU variant $LLAMACPP_CPU only}, load $(loadavg):"
  echo
  echo "| shape | type | file GB | decode lcw t/s | decode llama.cpp t/s | decode ×" \
       "| lcw GB/s (% BW) | llama.cpp GB/s (% BW) | prefill lcw t/s | prefill llama.cpp t/s" \
       "| prefill × | peak RSS lcw GB | peak RSS llama.cpp GB |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for l in "${rows[@]}"; do
    jq -r '
      def f(d): if . == null then "–" else (. * pow(10; d) | round) / pow(10; d) | tostring end;
      def gb: if . == null then "–" else (. / 1e9 * 100 | round) / 100 | tostring end;
      def pct: if . == null then "" else " (" + (. * 100 | round | tostring) + " %)" end;
      "| \(.shape) | \(.type) | \(.file_bytes | gb) | \(.lcw_decode_tps | f(2)) | \(.llamacpp_decode_tps | f(2))" +
      " | \(.decode_ratio | f(2))× | \(.lcw_decode_gb_per_s | f(1))\(.lcw_decode_bw_fraction | pct)" +
      " | \(.llamacpp_decode_gb_per_s | f(1))\(.llamacpp_decode_bw_fraction | pct)" +
      " | \(.lcw_prefill_tps | f(1)) | \(.llamacpp_prefill_tps | f(1)) | \(.prefill_ratio | f(2))×" +
      " | \(.lcw_peak_rss_bytes | gb) | \(.llamacpp_peak_rss_bytes | gb) |"' <<< "$l"
  done
} | tee "$MD_OUT" >&2
