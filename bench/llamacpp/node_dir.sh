# Sourced by the bench scripts: installs node-llama-cpp with its prebuilt linux-x64 CPU binaries
# into $NODE_DIR (from the npm registry only) unless it is there already, and copies the given
# .mjs scripts beside node_modules (ES modules resolve packages from the script's own folder),
# with cpu_llama.mjs, which they import.
# --ignore-scripts skips its postinstall (which may try to download/build llama.cpp from GitHub),
# --omit=optional skips the CUDA/Vulkan/other-platform binary packages.
#   NODE_DIR=... ; . bench/llamacpp/node_dir.sh; node_llamacpp_setup bench/llamacpp/x.mjs ...
node_llamacpp_setup() {
  if ! cmp -s bench/llamacpp/package.json "$NODE_DIR/package.json" ||
     [ ! -d "$NODE_DIR/node_modules/node-llama-cpp" ]; then
    mkdir -p "$NODE_DIR"
    cp bench/llamacpp/package.json "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --ignore-scripts --omit=optional --omit=dev --no-audit --no-fund \
       --loglevel=error >&2)
  fi
  for s in bench/llamacpp/cpu_llama.mjs "$@"; do cp "$s" "$NODE_DIR/"; done
}

# llama.cpp's quantiser (llama_model_quantize from node-llama-cpp's libllama, through
# bench/llamacpp/llama_quantize_time.c built into $1): sets LLAMA_BINS (the library folder, for
# LD_LIBRARY_PATH) and LLAMA_LIB. Run it as
#   LD_LIBRARY_PATH="$LLAMA_BINS" "$1" "$LLAMA_LIB" IN.gguf OUT.gguf "$(llamacpp_ftype_id Q4_K_M)" THREADS
llamacpp_quantize_setup() {
  local f
  LLAMA_BINS=$(dirname "$(find "$NODE_DIR/node_modules/@node-llama-cpp" -name 'libllama*.so' | head -1)")
  LLAMA_LIB=
  for f in "$LLAMA_BINS"/libllama*.so; do
    case $f in *common*) ;; *) LLAMA_LIB=$f; break ;; esac
  done
  gcc -O2 -o "$1" bench/llamacpp/llama_quantize_time.c -ldl
}

# llama_ftype id (llama.h) of a llama-quantize type name.
llamacpp_ftype_id() {
  case $1 in
    F32) echo 0 ;; F16) echo 1 ;; BF16) echo 32 ;; Q4_0) echo 2 ;; Q4_1) echo 3 ;;
    Q8_0) echo 7 ;; Q5_0) echo 8 ;; Q5_1) echo 9 ;; Q2_K) echo 10 ;; Q3_K_S) echo 11 ;;
    Q3_K_M) echo 12 ;; Q3_K_L) echo 13 ;; Q4_K_S) echo 14 ;; Q4_K_M) echo 15 ;;
    Q5_K_S) echo 16 ;; Q5_K_M) echo 17 ;; Q6_K) echo 18 ;; IQ4_NL) echo 25 ;; IQ4_XS) echo 30 ;;
    *) echo "unknown llama.cpp type $1" >&2; return 1 ;;
  esac
}
