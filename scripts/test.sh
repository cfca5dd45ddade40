#!/usr/bin/env bash
# The README's test command: idempotent set-up, then the whole test suite (CPU).
#   scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
