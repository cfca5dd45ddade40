#!/usr/bin/env bash
# The README's main job: idempotent set-up, then `repro table2` on its default preset
# (`auto`: `mini` on a CUDA host, `smoke` on a CPU-only machine).
#   scripts/table2.sh [extra repro args, e.g. --preset smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release -p repro -- table2 "$@"
