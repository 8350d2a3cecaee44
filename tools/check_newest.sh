#!/usr/bin/env bash
# Drift check: the README's test command under the newest releases that the declared ranges allow.
#
# Builds a throwaway virtualenv from requirements.txt (the ranges, no lock), prints every package
# whose version differs from requirements.lock, runs the test suite there, and ends with one line:
# whether the suite passed. Run it before refreshing the lock (README, "Locked installs"). CI does
# not run it: it installs whatever is newest today.
#
#   bash tools/check_newest.sh                 # the newest versions within the ranges
#   bash tools/check_newest.sh --unbounded     # the newest releases: caps at tested versions (<=) dropped
#   bash tools/check_newest.sh -- tests/test_scheduling.py   # pytest arguments after --
#
# The virtualenv is removed at the end unless KEEP_VENV=1.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

unbounded=0
pytest_args=(--nbval-lax tests book)
while (($#)); do
  case "$1" in
    --unbounded) unbounded=1; shift ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "check_newest.sh: unknown argument '$1' (expected --unbounded or -- PYTEST_ARGS)" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d -t ntklib-newest-XXXXXX)
[[ "${KEEP_VENV:-0}" == 1 ]] || trap 'rm -rf "$work"' EXIT
python -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip packaging >/dev/null

if ((unbounded)); then
  # every range without its cap at the tested version (`<=`): the package without its
  # dependencies, then the ranges; bounds written with `<` (another major engine) stay
  "$py" tools/requirement_sets.py uncapped >"$work/requirements.txt" || exit 1
  echo "== installing the newest releases, caps at tested versions (<=) ignored"
  "$py" -m pip install -q --no-deps -e . && "$py" -m pip install -q -r "$work/requirements.txt" || exit 1
else
  echo "== installing the newest versions within the ranges of requirements.txt"
  "$py" -m pip install -q -r requirements.txt || exit 1
fi

echo "== versions that differ from requirements.lock (locked -> installed)"
# --all: setuptools and wheel are locked too (pip itself is left out of the comparison)
"$py" -m pip freeze --all --exclude-editable >"$work/freeze.txt"
"$py" tools/requirement_sets.py diff requirements.lock "$work/freeze.txt"

echo "== python -m pytest ${pytest_args[*]}"
start=$SECONDS
"$py" -m pytest "${pytest_args[@]}"
rc=$?
if ((rc == 0)); then verdict="PASSED"; else verdict="FAILED (pytest exit $rc)"; fi
echo "== drift check: the suite ${verdict} under the newest versions$( ((unbounded)) && echo ', caps at tested versions ignored'), in $((SECONDS - start)) s"
exit "$rc"
