#!/usr/bin/env bash
# Padding per task, and packed-vs-padded DPZero and DP-SGD (ghost clipping) steps side by side on
# this machine's CPU (results/perf/cpu-2026-12-04-packed-tokens/; about 20 minutes on 2 cores).
# Needs the release `repro`, the SmolLM2 assets and the real task data:
#   DATA_DIR=../shared/data OUT=results/perf/cpu-DATE-packed-tokens scripts/perf/packed_tokens_cpu.sh
# PADDING=0 skips the padding tables; METHODS="dp-ft" times one method.
set -eu -o pipefail
cd "$(dirname "$0")/../.."
REPRO=${REPRO:-target/release/repro}
DATA_DIR=${DATA_DIR:?the folder holding lm-bff/ and superglue/}
OUT=${OUT:?the results folder}
WINDOW=${WINDOW:-40}
mkdir -p "$OUT"
# COPA is multiple choice: `throughput padding` measures label-word tasks only.
if [ "${PADDING:-1}" = 1 ]; then
  "$REPRO" throughput padding --device cpu --data-dir "$DATA_DIR" \
    --tasks SST-2,SST-5,SNLI,MNLI,TREC,RTE --out "$OUT/padding_table2_mini.csv" >"$OUT/padding.log" 2>&1
  "$REPRO" throughput padding --device cpu --target table3 --data-dir "$DATA_DIR" \
    --tasks SST-2,RTE-sg,CB,BoolQ,WSC,WiC,MultiRC --out "$OUT/padding_table3_mini.csv" >>"$OUT/padding.log" 2>&1
fi
# Per method, two rounds in alternating order, so that drift of the machine's speed shows as
# disagreement between them.
for method in ${METHODS:-dpzero dp-ft}; do
  : >"$OUT/steps_$method.txt"
  for order in "padded packed" "packed padded"; do
    for layout in $order; do
      result=$("$REPRO" throughput steps --device cpu --task SST-2 --data-dir "$DATA_DIR" \
        --method "$method" --seconds "$WINDOW" --layout "$layout" 2>/dev/null | tail -n 1)
      echo "$layout $result" >>"$OUT/steps_$method.txt"
    done
  done
  cat "$OUT/steps_$method.txt"
done
