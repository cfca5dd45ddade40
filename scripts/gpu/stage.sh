#!/usr/bin/env bash
# Staging on the GPU host (scripts/gpu/README.md), in two calls within the machine's warm window,
# since one call carries at most 64 MiB and the SmolLM2 GGUF alone is 94 MiB. Run from the copied
# checkout's root. The parts' sizes follow what the checkout leaves of the 64 MiB (results grow).
#   stage.sh receive-a [reference]   .gpu-xfer-a/: part-a (the GGUF's first bytes) and
#                                    either repro.xz (an xz'd stripped release repro) or bundle/
#   stage.sh receive-m               .gpu-xfer-m/: part-m (the next bytes), when three calls are needed
#   stage.sh receive-b               .gpu-xfer-b/: part-b (the rest), smol.sha256, data.txz (a
#                                    folder holding lm-bff/ and superglue/), optionally bundle/
# Then scripts/gpu/campaign.sh, throughput.sh, … use /root/dpzo-gpu/{assets,data,bundle/bin/repro}.
set -u
cd "$(dirname "$0")/../.."
keep=/root/dpzo-gpu            # survives between calls while the machine stays warm
OUT=${OUT:-/tmp/out}
mkdir -p "$keep" "$OUT"
. scripts/gpu/torch-env.sh
take_bundle() { # $1: the transfer folder
  if [ -f "$1/repro.xz" ]; then
    mkdir -p "$keep/bundle/bin" && xz -dc "$1/repro.xz" >"$keep/bundle/bin/repro" && chmod +x "$keep/bundle/bin/repro"
  elif [ -d "$1/bundle" ]; then
    rm -rf "$keep/bundle" && cp -r "$1/bundle" "$keep/bundle"
  fi
}
case "${1:-}" in
  receive-a)
    cp .gpu-xfer-a/part-a "$keep/part-a"
    take_bundle .gpu-xfer-a
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    [ -x "$keep/bundle/bin/repro" ] && "$keep/bundle/bin/repro" --version
    ls -la "$keep"
    # The PyTorch reference needs no bundle: it can run in this first call.
    if [ "${2:-}" = reference ]; then
      OUT="$OUT/perf" scripts/perf/run_gpu.sh reference
    fi
    ;;
  receive-m)
    [ -f "$keep/part-a" ] || { echo "part a is gone: the machine was not warm; rerun receive-a" >&2; exit 3; }
    cp .gpu-xfer-m/part-m "$keep/part-m" && ls -la "$keep"
    ;;
  receive-b)
    [ -f "$keep/part-a" ] || { echo "part a is gone: the machine was not warm; rerun receive-a" >&2; exit 3; }
    mkdir -p "$keep/assets/smollm2" "$keep/data"
    gguf=$keep/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    parts=("$keep/part-a")
    [ -f "$keep/part-m" ] && parts+=("$keep/part-m")
    cat "${parts[@]}" .gpu-xfer-b/part-b >"$gguf"
    echo "$(cat .gpu-xfer-b/smol.sha256)  $gguf" | sha256sum -c - || exit 4
    tar xJf .gpu-xfer-b/data.txz -C "$keep/data"
    take_bundle .gpu-xfer-b
    "$keep/bundle/bin/repro" device 2>&1 | tee "$OUT/device.txt"
    ;;
  *) echo "usage: stage.sh receive-a [reference] | receive-m | receive-b" >&2; exit 2 ;;
esac
