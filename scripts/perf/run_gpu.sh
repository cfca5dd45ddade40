#!/usr/bin/env bash
# Performance harness for the H200 host. Run from the repository root of the copied checkout
# after scripts/perf/bundle.sh has put the binaries into .gpu-bundle/perf/:
#   OUT=/some/dir scripts/perf/run_gpu.sh        # default OUT: results/perf/run-<date>
# Writes into $OUT:
#   env.txt             nvidia-smi, torch/transformers versions, library paths
#   perturb_gpu.txt     the #[ignore]d GPU tests of perturb (CUDA z == CPU z bitwise, paths agree)
#   ours.csv            our perturbation pass timings (impl ours-nvrtc / ours-aten)
#   perturb_pass.log    the same with the bandwidth-floor ratios
#   reference.csv       PyTorch 2.11 + transformers reference (impl pytorch-reference)
#   reference.log       its stderr (errors such as OOM per method)
# All CSVs share the header model,dtype,batch,seq,method,impl,ms_median,peak_bytes.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/perf/run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=python3
TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
# NVRTC for the fused kernel: the pip wheel's nvidia/cu13/lib, else the toolkit's lib64.
NVRTC=$(find "$(dirname "$(dirname "$TORCH_LIB")")" /usr/local/cuda/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)
NVRTC_DIR=${NVRTC:+$(dirname "$NVRTC")}
export LD_LIBRARY_PATH="$TORCH_LIB${NVRTC_DIR:+:$NVRTC_DIR}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  nvidia-smi
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "nvrtc: ${NVRTC:-not found}"
} >"$OUT/env.txt" 2>&1
status=0
bundle=.gpu-bundle/perf
if [ -x "$bundle/perturb_gpu" ]; then
  (cd crates/trainer && "../../$bundle/perturb_gpu" --ignored --test-threads=1) >"$OUT/perturb_gpu.txt" 2>&1 || status=1
  PERF_CSV="$OUT/ours.csv" "$bundle/perturb_pass" >"$OUT/perturb_pass.log" 2>&1 || status=1
else
  echo "missing $bundle: run scripts/perf/bundle.sh on the build machine first" | tee "$OUT/perturb_gpu.txt"
  status=1
fi
"$PY" scripts/perf/reference_pytorch.py --out "$OUT/reference.csv" >"$OUT/reference.stdout" 2>"$OUT/reference.log" || status=1
tail -n 3 "$OUT"/perturb_gpu.txt "$OUT"/perturb_pass.log 2>/dev/null
cat "$OUT"/reference.csv 2>/dev/null
exit $status
