#!/usr/bin/env bash
# Profiles on the H200 host with the Nsight tools, when the host has them:
#   OUT=/some/dir scripts/perf/profile_gpu.sh
# - nsys: per-kernel GPU time of the RoBERTa-large label-word forward with TF32 matmuls, ours
#   (`repro memory-cell`) and the PyTorch reference (`reference_pytorch.py`), as CSV summaries
#   (nsys-ours-tf32_cuda_gpu_kern_sum.csv, nsys-reference-tf32_cuda_gpu_kern_sum.csv);
# - ncu: per-kernel durations of one RoBERTa-large TF32 forward, ours and the reference
#   (ncu-forward-*.csv); one dense f16 perturbation launch (OPT-2.7B shapes, fast and exact normal math) with the
#   speed-of-light, pipe, warp-state and occupancy sections (ncu-dense-f16-*.txt).
# Needs .gpu-bundle/bin/repro and .gpu-bundle/perf/perturb_pass (scripts/gpu-bundle.sh).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/perf/profile-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
. scripts/gpu/torch-env.sh
tool() {
  command -v "$1" 2>/dev/null || ls /usr/local/cuda/bin/"$1" /opt/nvidia/nsight-*/*/bin/"$1" \
    /opt/nvidia/nsight-*/*/"$1" /usr/local/cuda/nsight-*/bin/"$1" /usr/local/cuda/nsight-*/"$1" 2>/dev/null | head -n 1
}
NSYS=$(tool nsys)
NCU=$(tool ncu)
echo "nsys: ${NSYS:-not found}; ncu: ${NCU:-not found}" | tee "$OUT/tools.txt"
status=0
if [ -n "$NSYS" ]; then
  export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
  "$NSYS" profile -o "$OUT/nsys-ours-tf32" --force-overwrite true \
    .gpu-bundle/bin/repro memory-cell --model roberta-large --method infer --dtype f32 --batch 64 \
    --seq 128 --repeats 10 --warmup 2 --device cuda >"$OUT/nsys-ours.log" 2>&1 || status=1
  "$NSYS" profile -o "$OUT/nsys-reference-tf32" --force-overwrite true \
    "$PY" scripts/perf/reference_pytorch.py --out "$OUT/nsys-reference.csv" --models roberta-large \
    --methods infer --repeats 10 >"$OUT/nsys-reference.log" 2>&1 || status=1
  for name in ours reference; do
    "$NSYS" stats --report cuda_gpu_kern_sum --format csv --output "$OUT/nsys-$name-tf32" \
      "$OUT/nsys-$name-tf32.nsys-rep" >>"$OUT/nsys-stats.log" 2>&1 || status=1
  done
  rm -f "$OUT"/*.nsys-rep "$OUT"/*.sqlite
  unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE
fi
if [ -n "$NCU" ]; then
  # Per-kernel durations of one RoBERTa-large forward with TF32 matmuls (model built, no warm-up),
  # ours and the reference: ncu-forward-{ours,reference}.csv (one row per launch).
  export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
  "$NCU" --csv --metrics gpu__time_duration.sum .gpu-bundle/bin/repro memory-cell \
    --model roberta-large --method infer --dtype f32 --batch 64 --seq 128 --repeats 1 --warmup 0 \
    --device cuda >"$OUT/ncu-forward-ours.csv" 2>"$OUT/ncu-forward-ours.log" || status=1
  "$NCU" --csv --metrics gpu__time_duration.sum "$PY" scripts/perf/reference_pytorch.py \
    --out "$OUT/ncu-reference.csv" --models roberta-large --methods infer --repeats 1 --warmup 0 \
    >"$OUT/ncu-forward-reference.csv" 2>"$OUT/ncu-forward-reference.log" || status=1
  unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE
  for math in fast exact; do
    # perturb_pass times the fast path second: skip to the first dense f16 launch of the math.
    skip=$([ "$math" = fast ] && echo 30 || echo 2)
    PERF_SKIP_ATEN=1 PERF_CSV="$OUT/ncu-pass.csv" "$NCU" --kernel-name regex:perturb_dense_f16 \
      --launch-skip "$skip" --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section WarpStateStats --section Occupancy --section InstructionStats --section LaunchStats \
      .gpu-bundle/perf/perturb_pass >"$OUT/ncu-dense-f16-$math.txt" 2>&1 || status=1
  done
fi
exit $status
