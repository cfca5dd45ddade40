#!/usr/bin/env bash
# One-off: writes the provenance.json of the GPU run folders under results/perf/ that were made
# before `repro` wrote one itself, from what their READMEs, provenance.md / provenance.txt,
# env.txt and started.txt record, through `repro provenance --reconstructed-from` (the code that
# writes run records' provenance). A field no source records is null.
#   scripts/perf/reconstruct_provenance.sh          (REPRO=path/to/repro; default target/debug/repro)
# Re-running rewrites the same files.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPRO=${REPRO:-target/debug/repro}
p=results/perf
# What the calls ran on where a folder has no env.txt: every 2026-11-30 call (results/perf/README.md)
# and the 2026-12-04 ones (their README) had the same GPU, driver and torch.
README_GPU="NVIDIA H200" README_DRIVER=580.159.04 README_TORCH=2.11.0+cu130
fallback="$p/README.md (GPU, driver and torch of every 2026-11-30 call)"

full() { git rev-parse --verify -q "$1^{commit}"; }

# rec FOLDER COMMIT DIRTY DATE COMMAND SOURCES: COMMIT, DIRTY, DATE or COMMAND may be "-" (null:
# no source records it).
rec() {
  local dir=$1 commit=$2 dirty=$3 date=$4 command=$5 sources=$6
  local args=(provenance --out "$p/$dir" --device cuda)
  local gpu=$README_GPU driver=$README_DRIVER torch=$README_TORCH
  if [ -f "$p/$dir/env.txt" ]; then
    # nvidia-smi's table (or its CSV query) and the torch version, as written by the GPU scripts.
    driver=$(grep -o 'Driver Version: [0-9.]*' "$p/$dir/env.txt" | head -n 1 | cut -d' ' -f3 || true)
    [ -n "$driver" ] || driver=$(grep -o 'NVIDIA H200, [0-9]* MiB, [0-9.]*' "$p/$dir/env.txt" | head -n 1 | cut -d' ' -f5 || true)
    gpu=$(grep -o 'NVIDIA H200' "$p/$dir/env.txt" | head -n 1 || true)
    torch=$(grep -o '^torch [^ ]*' "$p/$dir/env.txt" | head -n 1 | cut -d' ' -f2 || true)
    sources="$sources; $p/$dir/env.txt"
  else
    sources="$sources; $fallback"
  fi
  [ "$commit" = - ] || args+=(--git-commit "$(full "$commit")")
  [ "$dirty" = - ] || args+=(--git-dirty "$dirty")
  [ "$date" = - ] || args+=(--date "$date")
  [ -z "$gpu" ] || args+=(--gpu "$gpu")
  [ -z "$driver" ] || args+=(--driver "$driver")
  [ -z "$torch" ] || args+=(--libtorch "$torch")
  [ "$command" = - ] || args+=(--command "$command")
  args+=(--reconstructed-from "$sources")
  "$REPRO" "${args[@]}"
}

# Session 1.
rec h200-2026-11-30 7692ab8 - 2026-11-30T07:31:17Z "scripts/gpu/stage.sh receive-b" "$p/h200-2026-11-30/README.md"
# Session 2: commits from results/perf/README.md; the commands were not recorded.
rec h200-2026-11-30b/run-a cbe7672 - 2026-11-30T09:03:46Z - "$p/README.md"
rec h200-2026-11-30b/run-b 81a3a49 - 2026-11-30 - "$p/README.md"
# Session 3: code per call from provenance.md (the host's provenance.txt names the session's
# starting commit for every call), times from provenance.txt; the commands were not recorded.
s3="$p/h200-2026-11-30c/provenance.md"
rec h200-2026-11-30c/run-a e9080d6 true 2026-11-30T11:42:54Z - "$s3; $p/h200-2026-11-30c/run-a/provenance.txt"
rec h200-2026-11-30c/run-b 206206d true 2026-11-30T11:53:29Z - "$s3; $p/h200-2026-11-30c/run-b/provenance.txt"
rec h200-2026-11-30c/run-c b1ec69a true 2026-11-30T12:09:35Z - "$s3; $p/h200-2026-11-30c/run-c/provenance.txt"
rec h200-2026-11-30c/run-d b1ec69a true 2026-11-30T12:18:14Z - "$s3; $p/h200-2026-11-30c/run-d/provenance.txt"
rec h200-2026-11-30c/run-e 67e07c4 false 2026-11-30T12:24:09Z - "$s3; $p/h200-2026-11-30c/run-e/provenance.txt"
rec h200-2026-11-30c/run-f 67e07c4 true 2026-11-30T12:27:26Z - "$s3; $p/h200-2026-11-30c/run-f/provenance.txt"
rec h200-2026-11-30c/run-g 86f9215 false 2026-11-30T12:32:35Z - "$s3; $p/h200-2026-11-30c/run-g/provenance.txt"
# Session 4: code and parts of run_gpu.sh from provenance.md, start times from started.txt.
s4="$p/h200-2026-11-30d/provenance.md"
rec h200-2026-11-30d/run-a 1857d2b true 2026-11-30T13:43:24Z "scripts/perf/run_gpu.sh tests tune pass" "$s4; $p/h200-2026-11-30d/run-a/started.txt"
rec h200-2026-11-30d/run-b eab1ee7 true 2026-11-30T13:53:49Z "scripts/perf/run_gpu.sh tests tune pass" "$s4; $p/h200-2026-11-30d/run-b/started.txt"
rec h200-2026-11-30d/run-c eab1ee7 false 2026-11-30T13:59:51Z "scripts/perf/run_gpu.sh tests pass ours tf32 reference" "$s4; $p/h200-2026-11-30d/run-c/started.txt"
rec h200-2026-11-30d/run-e d979c8e false 2026-11-30T14:16:39Z "scripts/perf/run_gpu.sh tests pass ours tf32 reference" "$s4; $p/h200-2026-11-30d/run-e/started.txt"
rec h200-2026-11-30d/mini d8d2eef - 2026-11-30T14:30Z "scripts/gpu/stage.sh receive-a; scripts/gpu/stage.sh receive-b" "$s4"
rec h200-2026-11-30d/run-f 5ebafe9 false 2026-11-30T14:42:57Z "scripts/perf/masked_sweep_gpu.sh" "$s4; $p/h200-2026-11-30d/run-f/started.txt"
rec h200-2026-11-30d/run-g 17cc828 false 2026-11-30T14:53:55Z "scripts/perf/run_gpu.sh tests" "$s4; $p/h200-2026-11-30d/run-g/started.txt"
# Session 5: code and commands from provenance.md, start times from started.txt. run-h's binary
# may or may not hold 5f7074d's training-loop edit (provenance.md): its dirty flag is unknown.
s5="$p/h200-2026-11-30e/provenance.md"
ours='PERF_SKIP_ATEN=1 OURS_METHODS=infer,zo,dp-zoso,dp-zopo FAST_METHODS=infer,zo,dp-zoso,dp-zopo REFERENCE_METHODS="infer zo perturb" scripts/perf/run_gpu.sh tests pass ours nocarry tf32 reference'
rec h200-2026-11-30e/run-h 7a7c73f - 2026-11-30T16:00:40Z "$ours" "$s5; $p/h200-2026-11-30e/run-h/started.txt"
rec h200-2026-11-30e/run-i d9f7270 false 2026-11-30T16:11:10Z "$ours" "$s5; $p/h200-2026-11-30e/run-i/started.txt"
rec h200-2026-11-30e/run-j d9f7270 false 2026-11-30T16:15:38Z "scripts/perf/run_gpu.sh scale" "$s5; $p/h200-2026-11-30e/run-j/started.txt"
rec h200-2026-11-30e/run-k 46201b0 false 2026-11-30T16:57:48Z "scripts/perf/run_gpu.sh tests" "$s5; $p/h200-2026-11-30e/run-k/started.txt"
# 2026-12-04: the binary's commit from the folder's README; its dirty flag was not recorded.
s6="$p/h200-2026-12-04/README.md"
fallback="$s6 (GPU, driver and torch)"
rec h200-2026-12-04/dpsgd 462d3f2 - 2026-12-04T14:09:57Z "REPEATS=3 scripts/gpu/dp_sgd.sh" "$s6"
rec h200-2026-12-04/tp 462d3f2 - 2026-12-04T14:12:23Z "DRAWS=1000 WINDOW=12 CONFIGS='f32:1 tf32:1 bf16:1 bf16:8 tf32:8:mps bf16:8:mps' scripts/gpu/throughput.sh" \
  "$s6; $p/h200-2026-12-04/tp/provenance.txt"
# The binary: commit 009f8e8 plus 979da71's candidate-folder change (the folder's README).
s7="$p/h200-2026-12-04-concurrency/README.md"
fallback="$s7 (GPU, driver) and $s6 (torch of the 2026-12-04 calls)"
rec h200-2026-12-04-concurrency 009f8e8 true 2026-12-04T15:11:28Z "DRAWS=0 WINDOW=15 CONFIGS='f32:1 f32:2 f32:4' scripts/gpu/throughput.sh" \
  "$s7; $p/h200-2026-12-04-concurrency/provenance.txt"
