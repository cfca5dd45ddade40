#!/usr/bin/env bash
# Performance harness for the H200 host. Run from the repository root of the copied checkout
# after scripts/gpu-bundle.sh has put the binaries into .gpu-bundle/:
#   OUT=/some/dir scripts/perf/run_gpu.sh [tests] [tune] [pass] [ours] [nocarry] [tf32] [scale] [reference]
#   (default: ours reference; `ours` includes tests and pass; OUT default results/perf/run-<date>)
# Writes into $OUT:
#   env.txt               nvidia-smi, torch/transformers versions, library paths
#   provenance.json       commit of the bundle, GPU, driver, libtorch, date, this command (`repro provenance`)
#   perturb_gpu.txt       the #[ignore]d GPU tests of perturb (CUDA z == CPU z bitwise, fast z bound)
#   ours.csv              perturbation pass timings (impl ours-nvrtc / ours-aten, exact and fast math)
#   perturb_pass.log      the same with the bandwidth-floor ratios
#   memory-exact/         `repro memory`: zo_step.csv, details.jsonl, cells.log (exact normal math)
#   memory-fast/          the same for the ZO methods with the fast normal math (the default)
#   memory-fast-nocarry/  fast, ZO steps not chained (3 passes per step; part nocarry)
#   memory-tf32-*/, reference-tf32.csv   RoBERTa-large with TF32 matmuls, ours and the reference
#   memory-scale/         OPT-30B / OPT-66B in bf16
#   tune-C-M.{csv,log}, tuned-shape.env   pass timings per dense kernel shape, and the fastest
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
# provenance.json: the bundle's commit, GPU, driver, libtorch, date and this command with its settings.
settings=$(for v in PERF_SKIP_ATEN OURS_METHODS FAST_METHODS NOCARRY_METHODS REFERENCE_METHODS PSG_BATCHES TUNE_SHAPES REFERENCE_SECONDS; do
  [ -z "${!v:-}" ] || printf '%s=%q ' "$v" "${!v}"; done)
"$bundle/bin/repro" provenance --out "$OUT" --device cuda --command "${settings}scripts/perf/run_gpu.sh $parts" >/dev/null \
  || echo "no provenance.json: $bundle/bin/repro is missing or predates \`repro provenance\`" | tee -a "$OUT/missing.txt"
have_bundle() {
  [ -x "$bundle/perf/perturb_gpu" ] && [ -x "$bundle/bin/repro" ] && return 0
  echo "missing $bundle/perf or $bundle/bin/repro: run scripts/gpu-bundle.sh on the build machine first" | tee -a "$OUT/missing.txt"
  return 1
}
# Kernel shape tuning: one perturbation-pass benchmark per (Philox blocks per thread : resident
# blocks per SM) shape; the fastest (OPT-2.7B plus RoBERTa-large dense passes, exact plus fast
# normal math) is written to tuned-shape.env, and later parts of this call use it.
case " $parts " in *" tune "*)
  if have_bundle; then
    # The first shape runs twice (the first run of a call pays for clock ramp-up); the second
    # run's figures overwrite the first's.
    shapes=${TUNE_SHAPES:-8:1 8:2 8:3 8:4 4:4 4:3}
    for shape in ${shapes%% *} $shapes; do
      chunks=${shape%%:*}; min_blocks=${shape##*:}
      DPZO_PERTURB_CHUNKS=$chunks DPZO_PERTURB_MIN_BLOCKS=$min_blocks PERF_SKIP_ATEN=1 \
        PERF_CSV="$OUT/tune-$chunks-$min_blocks.csv.part" "$bundle/perf/perturb_pass" \
        >"$OUT/tune-$chunks-$min_blocks.log" 2>&1 || status=1
      mv "$OUT/tune-$chunks-$min_blocks.csv.part" "$OUT/tune-$chunks-$min_blocks.csv"
    done
    "$PY" - "$OUT" <<'PYEOF' || status=1
import csv, glob, os, sys
out = sys.argv[1]
best = None
# Score: the OPT-2.7B and RoBERTa-large dense passes, exact plus fast normal math (ms).
for path in sorted(glob.glob(os.path.join(out, "tune-*.csv"))):
    chunks, min_blocks = os.path.basename(path)[5:-4].split("-")
    times = {(r["model"], r["impl"]): float(r["ms_median"]) for r in csv.DictReader(open(path))
             if r["method"] == "perturb" and r["model"] in ("opt-2.7b", "roberta-large")}
    ms = sum(times.values())
    print(f"shape {chunks}:{min_blocks}: " + ", ".join(f"{m} {i} {t:.3f}" for (m, i), t in sorted(times.items()))
          + f"; score {ms:.3f} ms")
    if len(times) == 4 and (best is None or ms < best[0]):
        best = (ms, chunks, min_blocks)
if best:
    with open(os.path.join(out, "tuned-shape.env"), "w") as f:
        f.write(f"export DPZO_PERTURB_CHUNKS={best[1]} DPZO_PERTURB_MIN_BLOCKS={best[2]}\n")
    print(f"tuned shape {best[1]}:{best[2]} ({best[0]:.3f} ms)")
PYEOF
    # shellcheck disable=SC1091
    [ -f "$OUT/tuned-shape.env" ] && . "$OUT/tuned-shape.env"
  else status=1; fi
  ;;
esac
# Methods of our `repro memory` cells (dp-sgd and backprop take minutes: ask for them).
OURS_METHODS=${OURS_METHODS:-infer,zo,dp-zoso,dp-zopo,dp-sgd,backprop}
FAST_METHODS=${FAST_METHODS:-zo,dp-zoso-noanchor,dp-zopo}
case " $parts " in *" tests "*|*" ours "*)
  if have_bundle; then
    (cd crates/trainer && "../../$bundle/perf/perturb_gpu" --ignored --test-threads=1 --nocapture) >"$OUT/perturb_gpu.txt" 2>&1 || status=1
  else status=1; fi
  ;;
esac
case " $parts " in *" pass "*|*" ours "*)
  if have_bundle; then
    PERF_CSV="$OUT/ours.csv" "$bundle/perf/perturb_pass" >"$OUT/perturb_pass.log" 2>&1 || status=1
  else status=1; fi
  ;;
esac
case " $parts " in *" ours "*)
  if have_bundle; then
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-exact" --normal-math exact \
      --methods "$OURS_METHODS" 2>&1 | tail -n 40 || status=1
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-fast" --normal-math fast \
      --methods "$FAST_METHODS" 2>&1 | tail -n 20 || status=1
  else status=1; fi
  ;;
esac
# ZO steps without chaining (3 passes per step instead of 2), fast normal math, for comparison.
case " $parts " in *" nocarry "*)
  if have_bundle; then
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-fast-nocarry" --normal-math fast \
      --no-carry --methods "${NOCARRY_METHODS:-infer,zo,dp-zopo}" 2>&1 | tail -n 20 || status=1
  else status=1; fi
  ;;
esac
# RoBERTa-large with TF32 cuBLAS matmuls (f32 storage; the dtype column says tf32), both sides:
# the conditions of docs/gpu.md's reference figures (29.9 ms forward, 93.4 ms ZO step).
case " $parts " in *" tf32 "*)
  if have_bundle; then
    for math in exact fast; do
      TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 "$bundle/bin/repro" memory --device cuda --models roberta-large \
        --out "$OUT/memory-tf32-$math" --normal-math "$math" --methods infer,zo,dp-zopo 2>&1 | tail -n 5 || status=1
    done
  else status=1; fi
  TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 timeout "${REFERENCE_SECONDS:-480}" "$PY" scripts/perf/reference_pytorch.py \
    --out "$OUT/reference-tf32.csv" --models roberta-large --methods infer zo perturb \
    >"$OUT/reference-tf32.stdout" 2>"$OUT/reference-tf32.log" || status=1
  cat "$OUT"/reference-tf32.csv 2>/dev/null
  ;;
esac
case " $parts " in *" scale "*)
  # Scale: the largest OPT whose ZO step fits one GPU in bf16 (random weights).
  if have_bundle; then
    "$bundle/bin/repro" memory --device cuda --out "$OUT/memory-scale" --models opt-30b,opt-66b \
      --dtype bf16 --batch 4 --seq 128 --methods infer,zo --repeats 3 --warmup 1 2>&1 | tail -n 10 || status=1
  else status=1; fi
  ;;
esac
case " $parts " in *" reference "*)
  # shellcheck disable=SC2086
  timeout "${REFERENCE_SECONDS:-480}" "$PY" scripts/perf/reference_pytorch.py --out "$OUT/reference.csv" \
    ${REFERENCE_METHODS:+--methods $REFERENCE_METHODS} \
    --psg-batches "${PSG_BATCHES:-1,4,32}" >"$OUT/reference.stdout" 2>"$OUT/reference.log" || status=1
  cat "$OUT"/reference.csv 2>/dev/null
  ;;
esac
tail -n 3 "$OUT"/perturb_gpu.txt "$OUT"/perturb_pass.log 2>/dev/null
exit $status
