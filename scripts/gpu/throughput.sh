#!/usr/bin/env bash
# Fidelity and throughput of f32 / TF32 / bf16 compute for SmolLM2-135M mini cells, in one call on
# the GPU host (about 7 minutes). Needs what `scripts/gpu/stage.sh receive-b` left in
# /root/dpzo-gpu (the joined GGUF, the LM-BFF data, the bundle; a carried .gpu-bundle/ is used
# first), or DPZO_ASSETS_DIR, DPZO_DATA_DIR and REPRO pointing elsewhere. Writes under $OUT:
#   mini_fidelity.csv     per-example ZO differences of tf32 / bf16 against f32 (and an f32
#                         repeat: the floor), >= 1000 (theta, z, batch) draws on real SST-2 batches
#   mini_throughput.csv   model,compute,batch,cells_concurrent,steps_per_s_total,roofline_fraction
#   throughput.log        everything printed, steps/*.json the per-process results
#   provenance.json       the bundle's commit, GPU, driver, libtorch, date and this command's settings
#   mini_kernels.csv      with PROFILE="tf32 f32": launches and kernel time per DPZero step by kind
#                         of kernel (matrix products, attention, perturbation passes, ...), from an
#                         Nsight Compute capture of one process per compute setting (`repro
#                         throughput kernels`); ncu.tgz the raw captures
#   DRAWS=0 WINDOW=15 CONFIGS="f32:1::padded f32:1 tf32:1::padded tf32:1 tf32:4:mps" scripts/gpu/throughput.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
keep=/root/dpzo-gpu
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/steps"
. scripts/gpu/torch-env.sh
export DPZO_ASSETS_DIR=${DPZO_ASSETS_DIR:-$keep/assets} DPZO_DATA_DIR=${DPZO_DATA_DIR:-$keep/data}
# The binary: $REPRO, else a carried .gpu-bundle (the freshest), else the one receive-b kept.
if [ -z "${REPRO:-}" ]; then
  REPRO=.gpu-bundle/bin/repro
  [ -x "$REPRO" ] || REPRO=$keep/bundle/bin/repro
fi
"$REPRO" throughput --help >/dev/null 2>&1 || { echo "$REPRO has no throughput command: rebuild the bundle (scripts/gpu-bundle.sh)" >&2; exit 2; }
DRAWS=${DRAWS:-1000}
WINDOW=${WINDOW:-15}
# compute:processes[:sharing[:layout[:method[:forward[:cells]]]]]; sharing `mps` runs the processes under an MPS
# daemon started for them (without MPS the GPU time-slices between processes instead of running
# their kernels concurrently); layout `packed` (the default: only real tokens outside attention) or
# `padded` (every position); method `dpzero` (the default) or `dp-ft` (DP-SGD by ghost clipping);
# forward `sequential` (the default) or `paired` (a DPZero step's two points in one forward with
# replicated weights); cells per process (default 1; more joins the paired forwards of that many
# cells, threads of one process, into one forward), e.g. `f32:1::padded f32:1
# f32:1::packed:dp-ft tf32:4:mps::dpzero:paired f32:2:mps::dpzero:paired:4`.
CONFIGS=${CONFIGS:-"f32:1::padded f32:1 tf32:1::padded tf32:1 tf32:4:mps bf16:1"}
log=$OUT/throughput.log
status=0
"$REPRO" provenance --out "$OUT" --device cuda --command "DPZO_DATA_DIR=$DPZO_DATA_DIR \
DPZO_ASSETS_DIR=$DPZO_ASSETS_DIR DRAWS=$DRAWS WINDOW=$WINDOW CONFIGS='$CONFIGS' scripts/gpu/throughput.sh" || status=1
cat "$OUT/provenance.json"

if [ "$DRAWS" -gt 0 ]; then
  echo "== fidelity: $DRAWS draws, f32 vs f32-repeat, tf32, bf16" | tee -a "$log"
  timeout 260 "$REPRO" throughput fidelity --device cuda --draws "$DRAWS" --max-seconds 200 \
    --out "$OUT/mini_fidelity.csv" 2>&1 | tee -a "$log" || status=1
fi

rm -f "$OUT/mini_throughput.csv"
. scripts/gpu/mps.sh
for config in $CONFIGS; do
  IFS=: read -r compute jobs sharing layout method forward cells <<<"$config"
  layout=${layout:-packed}
  method=${method:-dpzero}
  forward=${forward:-sequential}
  cells=${cells:-1}
  mps=()
  if [ "$sharing" = mps ]; then
    mps_start 2>>"$log" || { status=1; continue; }
    mps=(--mps)
  fi
  # The processes meet in a fresh folder once warm (however long loading takes) and count steps
  # over the same WINDOW seconds; each gets its share of the host's CPU threads.
  meet=$(mktemp -d /tmp/dpzo-meet.XXXXXX)
  threads=$(( $(nproc) / jobs )); [ "$threads" -ge 1 ] || threads=1
  echo "== steps: $method, $compute x $jobs processes${sharing:+ ($sharing)} x $cells cells, $layout, $forward, window ${WINDOW}s" | tee -a "$log"
  files=()
  for j in $(seq 1 "$jobs"); do
    f=$OUT/steps/$method-$compute-$jobs${sharing:+-$sharing}-$layout-$forward-x$cells-$j.json
    files+=("$f")
    OMP_NUM_THREADS=$threads timeout $((WINDOW + 240)) "$REPRO" throughput steps --device cuda \
      --compute "$compute" --method "$method" --layout "$layout" --zo-forward "$forward" --seconds "$WINDOW" \
      --cells "$cells" --rendezvous "$meet" --parties $((jobs * cells)) >"$f" 2>>"$log" &
  done
  wait
  rm -rf "$meet"
  [ "$sharing" = mps ] && mps_stop
  "$REPRO" throughput total "${mps[@]}" --out "$OUT/mini_throughput.csv" "${files[@]}" 2>&1 | tee -a "$log" || status=1
done
# Where a step's GPU time goes: ncu times every kernel of about 3 steps after 20000 launches
# (model load and warm-up), one kernel at a time, without flushing caches or locking clocks; the
# process then runs out its 60 s window unprofiled. The sum per step, set against a step's wall
# time in the configurations above, says how busy one process keeps the GPU.
if [ -n "${PROFILE:-}" ]; then
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
  if [ -z "$NCU" ]; then
    echo "PROFILE: ncu not found" | tee -a "$log"; status=1
  else
    mkdir -p "$OUT/ncu"
    rm -f "$OUT/mini_kernels.csv"
    for compute in $PROFILE; do
      echo "== kernels: dpzero, $compute, one process, sequential, packed (ncu)" | tee -a "$log"
      timeout 300 "$NCU" --csv --metrics gpu__time_duration.sum --cache-control none \
        --clock-control none --launch-skip 20000 --launch-count 4000 \
        "$REPRO" throughput steps --device cuda --compute "$compute" --seconds 60 \
        >"$OUT/ncu/$compute.csv" 2>>"$log"
      "$REPRO" throughput kernels --ncu "$OUT/ncu/$compute.csv" --label "$compute" \
        --out "$OUT/mini_kernels.csv" 2>&1 | tee -a "$log" || status=1
    done
    tar czf "$OUT/ncu.tgz" -C "$OUT" ncu && rm -rf "$OUT/ncu"
  fi
fi
echo "== mini_throughput.csv" | tee -a "$log"
cat "$OUT/mini_throughput.csv" | tee -a "$log"
# Kept on the host for campaign.sh's JOBS=auto in later calls.
cp "$OUT/mini_throughput.csv" "$keep/mini_throughput.csv" 2>/dev/null
[ -f "$OUT/mini_fidelity.csv" ] && { echo "== mini_fidelity.csv"; cat "$OUT/mini_fidelity.csv"; } | tee -a "$log"
# At most 8 files come back: fold the per-process results into one.
(cd "$OUT/steps" && for f in *.json; do echo "$f $(tail -n 1 "$f")"; done) >"$OUT/steps.txt" 2>/dev/null
rm -rf "$OUT/steps"
exit $status
