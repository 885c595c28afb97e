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
