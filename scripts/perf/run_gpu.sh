#!/usr/bin/env bash
# Performance harness for the H200 host. Run from the repository root of the copied checkout
# after scripts/perf/bundle.sh has put the binaries into .gpu-bundle/:
#   OUT=/some/dir scripts/perf/run_gpu.sh [ours] [reference]   # default: both; OUT default results/perf/run-<date>
# Writes into $OUT:
#   env.txt               nvidia-smi, torch/transformers versions, library paths
#   perturb_gpu.txt       the #[ignore]d GPU tests of perturb (CUDA z == CPU z bitwise, fast z bound)
#   ours.csv              perturbation pass timings (impl ours-nvrtc / ours-aten, exact and fast math)
#   perturb_pass.log      the same with the bandwidth-floor ratios
#   memory-exact/         `repro memory`: zo_step.csv, details.jsonl, cells.log (exact normal math)
#   memory-fast/          the same for the ZO methods with the fast normal math
#   reference.csv         PyTorch 2.11 + transformers reference (impl pytorch-reference)
#   reference.csv.allocator.csv, reference.log
# All step CSVs share the header model,dtype,batch,seq,method,impl,ms_median,peak_bytes.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/perf/run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
parts=${*:-ours reference}
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
bundle=.gpu-bundle
case " $parts " in *" ours "*)
  if [ -x "$bundle/perf/perturb_gpu" ] && [ -x "$bundle/bin/repro" ]; then
    (cd crates/trainer && "../../$bundle/perf/perturb_gpu" --ignored --test-threads=1 --nocapture) >"$OUT/perturb_gpu.txt" 2>&1 || status=1
    PERF_CSV="$OUT/ours.csv" "$bundle/perf/perturb_pass" >"$OUT/perturb_pass.log" 2>&1 || status=1
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-exact" --normal-math exact 2>&1 | tail -n 40 || status=1
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-fast" --normal-math fast \
      --methods zo,dp-zoso-noanchor,dp-zopo 2>&1 | tail -n 20 || status=1
    # Scale: the largest OPT whose ZO step fits one GPU in bf16 (random weights).
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-scale" --models opt-30b,opt-66b \
      --dtype bf16 --batch 4 --seq 128 --methods infer,zo --repeats 3 --warmup 1 2>&1 | tail -n 10 || status=1
  else
    echo "missing $bundle/perf or $bundle/bin/repro: run scripts/perf/bundle.sh on the build machine first" | tee "$OUT/perturb_gpu.txt"
    status=1
  fi
  ;;
esac
case " $parts " in *" reference "*)
  timeout "${REFERENCE_SECONDS:-480}" "$PY" scripts/perf/reference_pytorch.py --out "$OUT/reference.csv" \
    --psg-batches "${PSG_BATCHES:-1,4,32}" >"$OUT/reference.stdout" 2>"$OUT/reference.log" || status=1
  cat "$OUT"/reference.csv 2>/dev/null
  ;;
esac
tail -n 3 "$OUT"/perturb_gpu.txt "$OUT"/perturb_pass.log 2>/dev/null
exit $status
