#!/usr/bin/env bash
# Installs the Debian 12 packages lcw needs, only those that are missing. Sourced by run.sh and
# test.sh; runs apt-get as root (or through sudo when available).
set -euo pipefail

LCW_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  qt6-base-dev qt6-base-dev-tools libqcustomplot-dev libqcustomplot2.1-qt6 qt6-svg-dev
  libeigen3-dev libhdf5-dev nlohmann-json3-dev libre2-dev libyaml-cpp-dev
  libvulkan-dev glslc glslang-tools mesa-vulkan-drivers vulkan-tools
  xvfb xauth fonts-dejavu-core
)

lcw_install_deps() {
  local missing=()
  for p in "${LCW_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "lcw: all Debian packages present"
    return 0
  fi
  echo "lcw: installing missing packages: ${missing[*]}"
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "lcw: need root (or sudo) to install: ${missing[*]}" >&2; return 1
    fi
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
}

# Configures and builds into $1 (default build/) with the given extra CMake options.
lcw_build() {
  local dir="${1:-build}"; shift || true
  local jobs
  jobs="$(nproc 2>/dev/null || echo 2)"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
  cmake --build "$dir" -j "$jobs"
}
