#!/usr/bin/env bash
# Continues a `repro <target> --preset mini` grid on the GPU host from the records kept there and
# the committed ones this checkout carries (cells are resumed by spec hash, so no call spends time
# on a recorded cell), then returns the records, tuning.csv, summaries and claims it wrote as one
# tarball.
#   scripts/gpu/campaign.sh TARGET SECONDS [repro args…]
# PRESET=… picks another preset than mini (e.g. ablations' mini-horizon or mini-sst2-mask).
# JOBS=auto picks the worker count, and whether they share the GPU through MPS, with the most
# strict-f32 packed DPZero steps/s in $OUT/mini_throughput.csv (written by scripts/gpu/throughput.sh
# earlier in the same call), else in the copy throughput.sh keeps in /root/dpzo-gpu from an earlier
# call, else in the committed results/perf/mini_throughput.csv (THROUGHPUT_CSV names another);
# JOBS=n runs n workers (MPS=1: under an
# MPS daemon); unset: one process. FORWARD=paired runs the ZO methods with both points of a
# direction in one forward (`--zo-forward paired`, not part of the spec hash), and JOBS=auto then
# reads the paired rows (f32+packed+paired[+mps]). JOINT=K (with FORWARD=paired) runs K cells
# per worker as threads whose paired forwards are joined (`--joint-cells K`); JOBS=auto then reads
# the f32+packed+paired+jointK[+mps] rows, whose cell count is workers x K.
# DEADLINE=1 (for a session's last call, whose cut cells are lost with the host) passes
# `--deadline SECONDS-10`: no cell starts that timing.csv's slowest rate of its task and method
# (or, without one, of its task and a method that steps as it does) says would end after it, nor
# one with no such rate, so the call's tail goes to shorter cells that finish.
# RESULTS=DIR writes into DIR instead of the host's main results tree, seeded with nothing (e.g. a
# --compute or --set comparison that must not set the main records aside).
# Needs what the staging calls left in /root/dpzo-gpu (scripts/gpu/README.md): assets/ with the
# SmolLM2 GGUF, data/ holding lm-bff/ and superglue/, bundle/bin/repro.
set -u -o pipefail
cd "$(dirname "$0")/../.."
target=${1:?target}
seconds=${2:?seconds}
shift 2
keep=/root/dpzo-gpu
OUT=${OUT:-/tmp/out}
results=${RESULTS:-$keep/results}
preset=${PRESET:-mini}
mkdir -p "$OUT" "$results"
. scripts/gpu/torch-env.sh
export DPZO_ASSETS_DIR=$keep/assets DPZO_DATA_DIR=$keep/data
repro=$keep/bundle/bin/repro
# Committed records first (never over a record the host already has).
# Every committed grid folder the host lacks (ablations inherit table2's tuning from the same tree).
if [ -z "${RESULTS:-}" ]; then
  for d in results/table2/* results/table3/* results/ablations/*; do
    [ -d "$d" ] && [ ! -d "$results/${d#results/}" ] && mkdir -p "$(dirname "$results/${d#results/}")" &&
      cp -r "$d" "$results/${d#results/}"
  done
fi
# What this call writes is what is newer than this marker: the host's older records came back with
# earlier calls, and the committed ones are in the checkout already.
marker=$(mktemp)
jobs=()
mps=${MPS:-0}
tp=${THROUGHPUT_CSV:-$OUT/mini_throughput.csv}
[ -f "$tp" ] || tp=$keep/mini_throughput.csv
[ -f "$tp" ] || tp=results/perf/mini_throughput.csv # the committed H200 measurements
forward=()
label='f32[+]packed' # [+]: a literal plus in any awk, with no escapes for -v to eat
case "${FORWARD:-sequential}" in
  sequential) ;;
  paired) forward=(--zo-forward paired) label='f32[+]packed[+]paired' ;;
  *) echo "FORWARD=$FORWARD: expected sequential or paired" >&2; exit 2 ;;
esac
joint=${JOINT:-1}
if [ "$joint" -gt 1 ]; then
  [ "${FORWARD:-}" = paired ] || { echo "JOINT=$joint joins paired forwards: set FORWARD=paired" >&2; exit 2; }
  forward+=(--joint-cells "$joint")
  label="$label[+]joint$joint"
fi
if [ "${JOBS:-}" = auto ] && [ -f "$tp" ]; then
  # Compute labels: f32+packed[+paired][+mps] (throughput.sh; the grid's own precision is f32).
  read -r n mps < <(awk -F, -v label="$label" 'NR > 1 && $2 ~ ("^" label "([+]mps)?$") && $5 > best {
    best = $5; n = $4; m = ($2 ~ /mps$/) } END { print n + 0, m + 0 }' "$tp")
  n=$((n / joint)) # a row counts every cell of every worker
  [ "$n" -gt 1 ] && jobs=(--jobs-per-gpu "$n" --gpus 0)
elif [ -n "${JOBS:-}" ] && [ "${JOBS}" != auto ] && [ "$JOBS" -gt 1 ]; then
  jobs=(--jobs-per-gpu "$JOBS" --gpus 0)
fi
deadline=()
[ "${DEADLINE:-0}" = 1 ] && deadline=(--deadline $((seconds - 10)))
if [ "${#jobs[@]}" -gt 0 ] && [ "$mps" = 1 ]; then
  . scripts/gpu/mps.sh
  mps_start && trap mps_stop EXIT
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$repro" --version
  date -u +%Y-%m-%dT%H:%M:%SZ
  echo "repro $target --preset $preset --device cuda ${jobs[*]} ${forward[*]} ${deadline[*]} $*${CUDA_MPS_PIPE_DIRECTORY:+ (workers under MPS)}"
} >"$OUT/provenance.txt" 2>&1
# What remains before this call (cells, steps, device time at the fastest measured rates).
"$repro" "$target" --preset "$preset" --device cuda --out "$results" --experiments experiments \
  --dry-run "$@" 2>&1 | grep '^plan' >>"$OUT/provenance.txt"
timeout "$seconds" "$repro" "$target" --preset "$preset" --device cuda --out "$results" \
  --experiments experiments "${jobs[@]}" "${forward[@]}" "${deadline[@]}" "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' >"$OUT/campaign.log"
echo "exit $? after $SECONDS s" >>"$OUT/campaign.log"
tail -n 40 "$OUT/campaign.log"
"$repro" check "$target" --preset "$preset" --out "$results" --experiments experiments >>"$OUT/campaign.log" 2>&1
# Records and tables that this call wrote, not the whole tree: on 2026-12-08 a tarball of all of
# table2 was 11.1 MB of the 16 MiB a returned file may have, and a file over it does not come back.
# No checkpoints either: an unfinished run's is hundreds of MB.
(cd "$results" && find "$target" -type f -newer "$marker" -not -path '*/checkpoints/*' \
  -not -path '*/locks/*' -print0) | tar czf "$OUT/$target-$preset.tgz" --null -C "$results" -T -
# A call's own records stay far below that limit (about 40 kB a cell); should one not, it comes
# back in 15 MiB pieces (`cat TARGET-PRESET.tgz.part* | tar xz`).
if [ "$(stat -c %s "$OUT/$target-$preset.tgz")" -gt $((15 * 1024 * 1024)) ]; then
  split -b 15M -d -a 1 "$OUT/$target-$preset.tgz" "$OUT/$target-$preset.tgz.part" &&
    rm "$OUT/$target-$preset.tgz"
fi
rm -f "$marker"
date -u +%Y-%m-%dT%H:%M:%SZ >>"$OUT/provenance.txt"
ls -la "$OUT"
