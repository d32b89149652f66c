#!/usr/bin/env bash
# `endolight eval` against an earlier release on the same pairs (issue 11: >= 10x faster, the
# same numbers within 0.01 dB / 0.001):   scripts/eval_speed.sh [REF]
#
# Writes the held-out split's pairs at 640 px once (endolight.pairs), then times
# `eval --pairs PAIRS --methods identity,gamma,clahe,endolight --max-side 640` with the src/ of
# REF (default 99e4e2b, the first release; `git archive`, run from a scratch folder) and with
# this checkout, and prints both times, their ratio and the largest difference of every metric
# column between the two per-image CSVs for the methods whose code did not change meaning
# (identity, gamma, clahe; endolight's weights differ between releases). Minutes: REF's eval
# took about 6 of them here. Stop other work first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
ref=${1:-99e4e2b}
work=${EVAL_SPEED_WORK:-/tmp/endolight-eval-speed}
methods=identity,gamma,clahe,endolight
rm -rf "$work"
mkdir -p "$work/ref"
git archive "$ref" src | tar -x -C "$work/ref"
python -c "
import sys
from pathlib import Path
from endolight.pairs import heldout_pairs, write_pairs
print(write_pairs(heldout_pairs(640), Path(sys.argv[1])), 'pairs written')" "$work/pairs"
export OMP_WAIT_POLICY=PASSIVE

timed() {  # timed LABEL CMD...: run, print the wall time, keep it in $work/LABEL.s
  local start end
  start=$(date +%s.%N)
  "${@:2}" > "$work/$1.log" 2>&1
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.1f}')" > "$work/$1.s"
  echo "$1: $(cat "$work/$1.s") s"
}
(cd "$work" && timed ref env PYTHONPATH="$work/ref/src" python -c "from endolight.cli import main; main()" \
  eval --pairs "$work/pairs" --methods "$methods" --max-side 640 -o "$work/ref-out")
timed now endolight eval --pairs "$work/pairs" --methods "$methods" --max-side 640 -o "$work/now-out"
python - "$work" <<'EOF'
import csv, math, sys
from pathlib import Path

work = Path(sys.argv[1])
ratio = float((work / "ref.s").read_text()) / float((work / "now.s").read_text())
print(f"speed-up: {ratio:.1f}x")


def rows(name):
    with open(work / name / "metrics.csv") as fh:
        return {(r["method"], r["image"]): r for r in csv.DictReader(fh) if r["method"] != "endolight"}


old, new = rows("ref-out"), rows("now-out")
assert old.keys() == new.keys(), "the two runs scored different pairs"
cols = [c for c in next(iter(old.values())) if c not in ("method", "organ", "image") and c in next(iter(new.values()))]
for c in cols:
    diffs = [abs(float(old[k][c]) - float(new[k][c])) for k in old
             if old[k][c] not in ("", "nan") and not math.isnan(float(old[k][c]))]
    print(f"{c:14s} largest difference {max(diffs):.1e} over {len(diffs)} rows")
EOF
