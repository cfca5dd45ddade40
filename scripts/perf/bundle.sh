#!/usr/bin/env bash
# Build (here, on the CPU machine) the perturbation GPU test and benchmark binaries and the release
# `repro` (for `repro memory`) and copy them into .gpu-bundle/perf/ and .gpu-bundle/bin/
# (git-ignored; travels with the checkout to the GPU host, which has no Rust toolchain).
# Then on the GPU host: scripts/perf/run_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu-bundle/perf
rm -rf "$out" && mkdir -p "$out" .gpu-bundle/bin
cargo build --release -p repro
cp target/release/repro .gpu-bundle/bin/
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
}
cargo test --release -p trainer --test perturb_gpu --no-run --message-format=json 2>/dev/null \
  | executables | while read -r exe; do cp "$exe" "$out/perturb_gpu"; done
cargo bench -p trainer --bench perturb_pass --no-run --message-format=json 2>/dev/null \
  | executables | while read -r exe; do cp "$exe" "$out/perturb_pass"; done
strip "$out"/* .gpu-bundle/bin/* 2>/dev/null || true
ls -la "$out" .gpu-bundle/bin
