#!/usr/bin/env bash
# Staging on the GPU host (scripts/gpu/README.md), in calls made within the machine's warm window,
# since one call carries at most 64 MiB and the SmolLM2 GGUF alone is 94 MiB. Run from the copied
# checkout's root. The parts' sizes follow what the checkout leaves of the 64 MiB (results grow).
#   stage.sh receive-a [reference]   .gpu-xfer-a/: part-a (the GGUF's first bytes) and
#                                    either repro.xz (an xz'd stripped release repro) or bundle/
#   stage.sh receive-m [K]           .gpu-xfer-m/part-m (K = 1, the default), else
#                                    .gpu-xfer-mK/part-mK: the next bytes, in as many middle
#                                    parts as the checkout's size asks for
#   stage.sh receive-b               .gpu-xfer-b/: part-b (the rest), smol.sha256, data.txz (a
#                                    folder holding lm-bff/ and superglue/), optionally bundle/
#   stage.sh pack DATA_DIR           here, not on the host: fills those folders from the GGUF
#                                    ($DPZO_ASSETS_DIR or .assets), DATA_DIR and .gpu-bundle/
#                                    (scripts/gpu-bundle.sh; its xz'd repro alone unless
#                                    FULL_BUNDLE=1), each part sized to what the checkout
#                                    leaves of a call's 64 MiB, and says which calls to make
# Then scripts/gpu/campaign.sh, throughput.sh, … use /root/dpzo-gpu/{assets,data,bundle/bin/repro}.
set -u
cd "$(dirname "$0")/../.."
# The name of middle part K: m for the first (as before there were several), mK after it.
middle() { if [ "$1" -gt 1 ]; then echo "m$1"; else echo m; fi; }
if [ "${1:-}" = pack ]; then
  set -eo pipefail
  data=${2:?usage: stage.sh pack DATA_DIR (holding lm-bff/ and superglue/)}
  gguf=${DPZO_ASSETS_DIR:-.assets}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$gguf" ] || { echo "no GGUF at $gguf: run scripts/setup.sh" >&2; exit 2; }
  [ -x .gpu-bundle/bin/repro ] || { echo "no .gpu-bundle/bin/repro: run scripts/gpu-bundle.sh" >&2; exit 2; }
  # What travels besides the carried folder: tracked files and untracked ones git does not
  # ignore, counted as a tar of them (512-byte headers, padding, long-name entries). Their bare
  # bytes undercount it by about 2.5 MB with 2559 files: on 2026-12-07 parts sized from the
  # bytes with a 2.5 MB margin made a tar of 67,133,440 bytes and the call was refused. The
  # margin left covers the carried parts' own headers and the checkout's directories.
  beside=$(git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | wc -c)
  room=$((64 * 1024 * 1024 - beside - 1000000))
  rm -rf .gpu-xfer-*/
  mkdir -p .gpu-xfer-a .gpu-xfer-b
  # The whole bundle (GPU test binaries too) with FULL_BUNDLE=1; else the xz'd repro alone, a
  # seventh of the room, which is all that campaign.sh and throughput.sh run.
  if [ "${FULL_BUNDLE:-0}" = 1 ]; then
    cp -r .gpu-bundle .gpu-xfer-a/bundle
  else
    xz -9 -T2 -c .gpu-bundle/bin/repro >.gpu-xfer-a/repro.xz
  fi
  # The LM-BFF splits of every seed the presets run, and SuperGLUE.
  (cd "$data" && tar cJf - lm-bff/k-shot-1k-test/*/512-{13,21,42,87,100} superglue) >.gpu-xfer-b/data.txz
  sha256sum "$gguf" | cut -d' ' -f1 >.gpu-xfer-b/smol.sha256
  total=$(stat -c %s "$gguf")
  a=$((room - $(du -sb .gpu-xfer-a | cut -f1)))
  b_room=$((room - $(stat -c %s .gpu-xfer-b/data.txz) - 100))
  [ "$a" -gt 0 ] && [ "$b_room" -gt 0 ] || {
    echo "a call's room ($room bytes beside a $beside-byte checkout) does not hold part a's or part b's other files" >&2
    exit 3
  }
  dd if="$gguf" of=.gpu-xfer-a/part-a bs=4M iflag=count_bytes count="$a" status=none
  parts=(.gpu-xfer-a/part-a)
  calls="stage.sh receive-a (carry .gpu-xfer-a)"
  # Middle parts, each a whole call's room, until part b's room holds the rest.
  done_bytes=$a
  k=1
  while [ $((total - done_bytes)) -gt "$b_room" ]; do
    name=$(middle "$k")
    size=$((total - done_bytes - b_room))
    if [ "$size" -gt "$room" ]; then size=$room; fi
    mkdir -p ".gpu-xfer-$name"
    dd if="$gguf" of=".gpu-xfer-$name/part-$name" bs=4M iflag=skip_bytes,count_bytes \
      skip="$done_bytes" count="$size" status=none
    parts+=(".gpu-xfer-$name/part-$name")
    calls="$calls, stage.sh receive-m $k (carry .gpu-xfer-$name)"
    done_bytes=$((done_bytes + size))
    k=$((k + 1))
  done
  dd if="$gguf" of=.gpu-xfer-b/part-b bs=4M iflag=skip_bytes skip="$done_bytes" status=none
  parts+=(.gpu-xfer-b/part-b)
  [ "$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)" = "$(cat .gpu-xfer-b/smol.sha256)" ] ||
    { echo "the parts do not join to the GGUF" >&2; exit 4; }
  echo "checkout $beside bytes; each call may carry $room more"
  du -sb .gpu-xfer-*
  echo "calls: $calls, stage.sh receive-b (carry .gpu-xfer-b)"
  exit 0
fi
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
    name=$(middle "${2:-1}")
    cp ".gpu-xfer-$name/part-$name" "$keep/part-$name" && ls -la "$keep"
    ;;
  receive-b)
    [ -f "$keep/part-a" ] || { echo "part a is gone: the machine was not warm; rerun receive-a" >&2; exit 3; }
    mkdir -p "$keep/assets/smollm2" "$keep/data"
    gguf=$keep/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    parts=("$keep/part-a")
    k=1
    while :; do
      name=$(middle "$k")
      [ -f "$keep/part-$name" ] || break
      parts+=("$keep/part-$name")
      k=$((k + 1))
    done
    cat "${parts[@]}" .gpu-xfer-b/part-b >"$gguf"
    echo "$(cat .gpu-xfer-b/smol.sha256)  $gguf" | sha256sum -c - || exit 4
    tar xJf .gpu-xfer-b/data.txz -C "$keep/data"
    take_bundle .gpu-xfer-b
    "$keep/bundle/bin/repro" device 2>&1 | tee "$OUT/device.txt"
    ;;
  *) echo "usage: stage.sh receive-a [reference] | receive-m [K] | receive-b | pack DATA_DIR" >&2; exit 2 ;;
esac
