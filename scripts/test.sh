#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the whole test suite. This is README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser test drives Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
. .venv/bin/activate
ruff check src tests
# The comparison's tiny version runs end to end first (results/quick/ is git-ignored), so the
# test runner's summary stays the last line.
if [ $# -eq 0 ]; then
  NUMBA_NUM_THREADS=1 endolight compare --quick --threads 1 -o results/quick \
    --runs-dir results/quick/runs >/dev/null 2>&1 || { echo "endolight compare --quick failed" >&2; exit 1; }
fi
set +e
python -m pytest -q --durations=15 "$@"  # the slowest tests listed: CI must stay under 10 minutes
code=$?
set -e
# pytest exits 5 when it collected no test: never a pass here.
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$code"
