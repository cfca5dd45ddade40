#!/usr/bin/env bash
# On the H200 host (after scripts/gpu-bundle.sh here): the masked kernels' coordinates per thread
# (DPZO_PERTURB_MASKED = 4, 8, 16, 2), one perturbation-pass benchmark each, then `repro memory`
# (infer, zo, dp-zopo; exact normal math) for OPT-1.3B and OPT-2.7B with the fastest, all in
# one call. Writes $OUT/run-f.tgz (session 4's run-f).
set -u
cd "$(dirname "$0")/../.."
D=$OUT/run-f; mkdir -p $D; date -u > $D/started.txt
PY=/opt/torch/.venv/bin/python3
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
NVRTC=$(find "$(dirname "$(dirname "$TORCH_LIB")")" /usr/local/cuda/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)
export LD_LIBRARY_PATH="$TORCH_LIB:$(dirname "$NVRTC"):/usr/local/cuda/lib64"
for m in 4 8 16 2; do
  DPZO_PERTURB_MASKED=$m PERF_SKIP_ATEN=1 PERF_CSV=$D/masked-$m.csv timeout 60 .gpu-bundle/perf/perturb_pass > $D/masked-$m.log 2>&1
  echo "m=$m: $(grep 'mask1pct ours-nvrtc:' $D/masked-$m.log | sed 's/ floor.*//' | tr '\n' ';')"
done | tee $D/summary.txt
best=$(for m in 4 8 16 2; do awk -F, -v m=$m '$1=="opt-2.7b" && $5=="perturb-mask1pct" && $6=="ours-nvrtc" {print $7, m}' $D/masked-$m.csv; done | sort -g | head -1 | cut -d' ' -f2)
echo "best masked per thread: $best" | tee -a $D/summary.txt
DPZO_PERTURB_MASKED=$best timeout 150 .gpu-bundle/bin/repro memory --device cuda --out $D/memory-exact --normal-math exact --models opt-1.3b,opt-2.7b --methods infer,zo,dp-zopo 2>&1 | tail -n 8
cat $D/memory-exact/zo_step.csv; date -u >> $D/started.txt
cd $OUT && tar czf run-f.tgz run-f && rm -rf run-f
