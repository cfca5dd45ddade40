#!/usr/bin/env bash
# The one GPU bundle: the release `repro`, the trainer's test binaries and the perturbation bench into
# .gpu-bundle/ (git-ignored, at most 64 MiB), to copy to a CUDA host that has PyTorch 2.11 and no Rust
# (README "GPU"). Layout: bin/repro, tests/<test>-<hash> (+ run-gpu-tests.sh), perf/perturb_gpu and
# perf/perturb_pass (what scripts/perf/*.sh run).
#   scripts/gpu-bundle.sh            # builds with cargo, then copies
# On the GPU host:
#   export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
#   .gpu-bundle/bin/repro device                      # prints "device: cuda"
#   .gpu-bundle/tests/run-gpu-tests.sh                # the #[ignore]d GPU tests
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-bundle
rm -rf "$out" && mkdir -p "$out/bin" "$out/tests" "$out/perf"
# The binary records the commit it was built from (provenance.json, run records): the GPU host's
# copy of the tree has no git metadata of its own.
DPZO_BUILD_COMMIT=$(git rev-parse HEAD)
DPZO_BUILD_DIRTY=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || DPZO_BUILD_DIRTY=true
export DPZO_BUILD_COMMIT DPZO_BUILD_DIRTY
cargo build --release -p repro
cp target/release/repro "$out/bin/"
# cargo prints the paths of what it built as JSON; keep the test (and bench) executables.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (
        m["profile"]["test"] or "bench" in m["target"]["kind"]):
        print(m["executable"])'
}
# Test binaries of the trainer that hold GPU tests (#[ignore = "GPU…"], skipped on the CPU); the
# others run in CI, and all of them together exceed the 64 MiB a call carries.
gpu_tests=$(grep -l 'ignore = "GPU' crates/trainer/tests/*.rs | xargs -n 1 basename | sed 's/\.rs$//')
cargo test --release -p trainer --no-run --message-format=json 2>/dev/null \
  | executables | while read -r exe; do
      name=$(basename "$exe")
      if printf '%s\n' $gpu_tests | grep -qx "${name%-*}"; then cp "$exe" "$out/tests/"; fi
    done
# The perturbation bench (criterion, release settings) for the perf scripts.
cargo bench -p trainer --bench perturb_pass --no-run --message-format=json 2>/dev/null \
  | executables | while read -r exe; do cp "$exe" "$out/perf/perturb_pass"; done
strip "$out"/bin/* "$out"/tests/* "$out"/perf/* 2>/dev/null || true
gpu_test=$(ls "$out"/tests/perturb_gpu-* | head -n 1)
cp "$gpu_test" "$out/perf/perturb_gpu"
[ -x "$out/perf/perturb_pass" ] || { echo "the perturb_pass bench was not built" >&2; exit 1; }
# Fixtures the tests read at run time travel with the source tree (crates/*/tests/...), not here.
cat >"$out/tests/run-gpu-tests.sh" <<'EOS'
#!/usr/bin/env bash
# Runs every test binary's ignored (GPU) tests from the repository root of the copied checkout.
set -u
here=$(cd "$(dirname "$0")" && pwd)
status=0
for t in "$here"/*; do
  case "$t" in *.sh) continue ;; esac
  echo "== $(basename "$t")"
  (cd crates/trainer && "$t" --ignored --test-threads=1) || status=1
done
exit $status
EOS
chmod +x "$out/tests/run-gpu-tests.sh"
du -sh "$out"
size=$(du -sm "$out" | cut -f1)
if [ "$size" -gt 64 ]; then echo "bundle is ${size} MiB > 64 MiB" >&2; exit 1; fi
