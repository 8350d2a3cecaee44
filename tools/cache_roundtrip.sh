#!/usr/bin/env bash
# The book build's execution cache (execute_notebooks: cache, jupyter-cache in _build/.jupyter_cache),
# proved and timed in a throwaway clone of this checkout, with the jupyter-book on PATH:
#   1. a first build executes every chapter;
#   2. a rebuild with no change executes none;
#   3. after a change to one code cell of one chapter, a rebuild executes that chapter alone.
# Exits 1, naming the step, when a build fails or executes other notebooks than expected.
# Usage: bash tools/cache_roundtrip.sh [CHAPTER]   (default: book/03_convergence_phases.ipynb)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
chapter="${1:-book/03_convergence_phases.ipynb}"
work="$(mktemp -d -t ntklib-cache-XXXXXX)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
chapters=$(ls book/0*.ipynb | wc -l)

build() {  # build NAME EXPECTED [CHAPTER]: one build, its time and the chapters it executed
    # (book/status.md, the status page, is executed at every build by design and not counted)
    local name="$1" expected="$2" only="${3:-}" start=$SECONDS log="$work/$1.log"
    if ! jupyter-book build --all -W -n --keep-going . > "$log" 2>&1; then
        grep -E "WARNING|ERROR" "$log" | tail -n 20; echo "FAIL: $name: the build failed"; exit 1
    fi
    local executed cached
    executed=$(grep "Executing notebook using" "$log" | grep -c "book/0[0-9]" || true)
    cached=$(grep "Using cached notebook" "$log" | grep -c "book/0[0-9]" || true)
    echo "$name: $((SECONDS - start)) s, $executed chapters executed, $cached from the cache"
    grep "Executing notebook using" "$log" | sed 's/^/    /'
    if [ "$executed" -ne "$expected" ]; then echo "FAIL: $name: expected $expected executed"; exit 1; fi
    if [ -n "$only" ] && ! grep "Executing notebook using" "$log" | grep -q "$(basename "$only" .ipynb)"; then
        echo "FAIL: $name: the executed notebook is not $only"; exit 1
    fi
}

build "first build" "$chapters"
build "rebuild, no change" 0
python - "$chapter" <<'PY'
import sys, nbformat
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
cell = next(c for c in nb.cells[1:] if c.cell_type == "code")  # the first code cell after Colab's
cell.source += "\n# a change to this chapter's code"
nbformat.write(nb, path)
PY
build "rebuild, one chapter's code changed" 1 "$chapter"
echo "PASS: the cache re-executes only what changed"
