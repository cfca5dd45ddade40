#!/usr/bin/env bash
# Steps of the GPU-host run (scripts/gpu/README.md). Run from the copied checkout's root.
#   stage.sh receive-a [reference] | receive-b | mini [extra repro table2 args]
set -u
cd "$(dirname "$0")/../.."
keep=/root/dpzo-gpu            # survives between calls while the machine stays warm
OUT=${OUT:-/tmp/out}
mkdir -p "$keep" "$OUT"
PY=/opt/torch/.venv/bin/python3
[ -x "$PY" ] || PY=python3
TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
NVRTC=$(find "$(dirname "$(dirname "$TORCH_LIB")")" /usr/local/cuda/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)
export LD_LIBRARY_PATH="$TORCH_LIB${NVRTC:+:$(dirname "$NVRTC")}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
case "${1:-}" in
  receive-a)
    cp .gpu-xfer-a/smol.part-a "$keep/"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    ls -la "$keep"
    # The PyTorch reference needs no bundle: run it in this first call.
    if [ "${2:-}" = reference ]; then
      OUT="$OUT/perf" scripts/perf/run_gpu.sh reference
    fi
    ;;
  receive-b)
    [ -f "$keep/smol.part-a" ] || { echo "part a is gone: the machine was not warm; rerun receive-a" >&2; exit 3; }
    mkdir -p "$keep/assets/smollm2" "$keep/data"
    cat "$keep/smol.part-a" .gpu-xfer-b/smol.part-b >"$keep/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat .gpu-xfer-b/smol.sha256)  $keep/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 4
    tar xJf .gpu-xfer-b/data.txz -C "$keep/data"
    rm -rf "$keep/bundle" && cp -r .gpu-xfer-b/bundle "$keep/bundle"
    {
      echo "== repro device"; "$keep/bundle/bin/repro" device
      echo "== models_parity --ignored (bf16 on CUDA vs transformers fixtures)"
      (cd crates/trainer && "$keep/bundle/tests/models_parity" --ignored --test-threads=1)
    } 2>&1 | tee "$OUT/gpu_tests.txt"
    mkdir -p .gpu-bundle && rm -rf .gpu-bundle/perf .gpu-bundle/bin
    cp -r "$keep/bundle/perf" .gpu-bundle/perf && cp -r "$keep/bundle/bin" .gpu-bundle/bin
    # PERF_SECONDS=0 skips the performance runs (a call that goes on to the mini grid).
    [ "${PERF_SECONDS:-420}" = 0 ] || OUT="$OUT/perf" timeout "${PERF_SECONDS:-420}" scripts/perf/run_gpu.sh ours
    ;;
  mini)
    shift
    export DPZO_ASSETS_DIR="$keep/assets" DPZO_DATA_DIR="$keep/data/lm-bff"
    mkdir -p "$keep/results"
    timeout "${MINI_SECONDS:-540}" "$keep/bundle/bin/repro" table2 --preset mini --device cuda \
      --out "$keep/results" "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 60
    "$keep/bundle/bin/repro" check table2 --preset mini --out "$keep/results" || true
    # Records, summary, comparison and plot only: an unfinished run's checkpoint is hundreds of MB.
    tar czf "$OUT/mini.tgz" --exclude=checkpoints -C "$keep/results" table2
    ls -la "$OUT"
    ;;
  *) echo "usage: stage.sh receive-a | receive-b | mini [repro args]" >&2; exit 2 ;;
esac
