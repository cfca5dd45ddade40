#!/usr/bin/env bash
# DP-SGD against non-private backprop on one H200, one call (about 5 minutes).
#   scripts/gpu/dp_sgd.sh            (from the copied checkout's root, with .gpu-bundle/bin/repro)
# Ours: `repro memory`, one call per model, rows dp-sgd (ghost clipping), dp-sgd-microbatch (one
# backward per example), backprop (AdamW) and backprop-sgd (plain SGD), all at the model's batch:
# RoBERTa-large f32 64 x 128, OPT-2.7B f16 16 x 256, SmolLM2-135M f32 64 x 64, plus OPT-1.3B
# f16 16 x 256 for the paper's memory comparison. Then the PyTorch per-sample (vmap) DP-SGD and
# backprop reference for the same models. Writes under $OUT:
#   memory-<model>/{zo_step.csv,details.jsonl,cells.log,comparison.md,provenance.json},
#   reference.csv, env.txt, provenance.json (`repro provenance`: bundle commit, GPU, driver, command)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
. scripts/gpu/torch-env.sh
repro=.gpu-bundle/bin/repro
[ -x "$repro" ] || { echo "missing $repro: run scripts/gpu-bundle.sh on the build machine" >&2; exit 2; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  date -u
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
status=0
"$repro" provenance --out "$OUT" --device cuda \
  --command "REPEATS=${REPEATS:-5} REFERENCE_SECONDS=${REFERENCE_SECONDS:-150} scripts/gpu/dp_sgd.sh" || status=1
for model in roberta-large opt-2.7b smollm2-135m opt-1.3b; do
  echo "== repro memory $model"
  # The model's own batch (so that no extra DP-SGD batch is measured).
  case "$model" in opt-*) batch=16 ;; *) batch=64 ;; esac
  timeout 150 "$repro" memory --device cuda --models "$model" \
    --methods dp-sgd,dp-sgd-microbatch,backprop,backprop-sgd --dp-sgd-batches "$batch" \
    --repeats "${REPEATS:-5}" --warmup 1 --out "$OUT/memory-$model" 2>&1 | grep -v '^wrote' || status=1
  sed -n '/## DP-SGD against/,$p' "$OUT/memory-$model/comparison.md" 2>/dev/null | tail -n 2
done
echo "== PyTorch per-sample reference (vmap) and backprop"
timeout "${REFERENCE_SECONDS:-150}" "$PY" scripts/perf/reference_pytorch.py --out "$OUT/reference.csv" \
  --models roberta-large opt-2.7b smollm2-135m --methods backprop dp-sgd --psg-batches "" \
  --warmup 1 --repeats 3 >"$OUT/reference.stdout" 2>"$OUT/reference.log" || status=1
cat "$OUT/reference.csv" 2>/dev/null
date -u >>"$OUT/env.txt"
exit $status
