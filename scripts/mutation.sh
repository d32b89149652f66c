#!/usr/bin/env bash
# Mutation testing of the core modules (docs/testing.md): scripts/mutation.sh [MODULE...]
#
# MODULE is a key of [tool.endolight.mutation] in pyproject.toml (losses, metrics, fov, degrade...;
# default: all of them). Each module runs mutmut in its own scratch copy of src/ and tests/ under
# $MUTATION_WORK (default /tmp/endolight-mutation/MODULE), mutating only that module's files against
# only its fast tests, so nothing is written into the working tree and a slow test never runs
# once per mutant. Prints one summary line per module: mutants made, killed, survived, other
# (timeout, no tests, suspicious), and the kill rate; the surviving mutants' names go to
# WORK/MODULE/survived.txt (see one with: cd WORK/MODULE && mutmut show NAME).
#
# With MUTATION_REF=<commit>, src/ and tests/ are taken from that commit (git archive) instead
# of the working tree, so a before/after comparison is reproducible. MUTATION_RERUN=1 re-tests
# only the mutants the module's previous run did not kill (after tests were added: its killed
# ones stand) and prints the merged summary. MUTATION_RESUME=1 continues an interrupted run in
# its work directory (mutmut keeps each verdict as it goes). MUTATION_NAMES="PATTERN..." (mutant
# names or fnmatch globs, e.g. '*.x_lab__mutmut_*') checks only those mutants in a fresh run: the
# others are made but left unchecked (a restricted run).
#
# A module's optional `env` table is set for its mutmut run (e.g. NUMBA_DISABLE_JIT = "1"). With
# NUMBA_DISABLE_JIT set, numba's @njit/@jit return the function unchanged, so the scratch copy's
# mutated files lose those decorator lines: mutmut skips decorated functions, and this lets it
# mutate numba kernels as the plain Python they then are (tests on small frames keep it fast).
#
# Slow (minutes per module on two cores) and CPU-bound: it runs under nice -n 15, with
# MUTATION_CHILDREN workers (default 1). Not part of CI; run before a release.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ -f .venv/bin/activate ] && . .venv/bin/activate
work_root=${MUTATION_WORK:-/tmp/endolight-mutation}
children=${MUTATION_CHILDREN:-1}
# The scratch copy is not beside ../shared: point the tests at the real data explicitly.
export ENDOLIGHT_DATA=${ENDOLIGHT_DATA:-$(python -c "from endolight.data import default_data_root as d; print(d())")}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  mapfile -t modules < <(python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['endolight']['mutation']))")
fi

# Writes WORK/pyproject.toml: the repository's [tool.mutmut] and pytest settings plus this
# module's files to mutate and test selection.
write_config() {
  python - "$1" "$2" <<'EOF'
import json, sys, tomllib
module, dest = sys.argv[1], sys.argv[2]
data = tomllib.load(open("pyproject.toml", "rb"))
spec = data["tool"]["endolight"]["mutation"].get(module)
if spec is None:
    sys.exit(f"error: unknown module {module!r}; choose from {sorted(data['tool']['endolight']['mutation'])}")
mutmut = dict(data["tool"]["mutmut"], only_mutate=spec["mutate"],
              pytest_add_cli_args_test_selection=spec["tests"], use_git_change_detection=False)
lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in mutmut.items()]
lines += ["", "[tool.pytest.ini_options]"]
lines += [f"{k} = {json.dumps(v)}" for k, v in data["tool"]["pytest"]["ini_options"].items()]
open(dest, "w").write("\n".join(lines) + "\n")
EOF
}

summary=()
for module in "${modules[@]}"; do
  work=$work_root/$module
  names=()
  [ -n "${MUTATION_NAMES:-}" ] && read -r -a names <<<"$MUTATION_NAMES"  # read: no glob expansion
  if [ -n "${MUTATION_RERUN:-}" ]; then
    # Re-test only the mutants the previous run of this module left alive (survived, no tests,
    # timeout...), against the current tests; its killed ones stand (tests only added since),
    # and mutants it never checked (an interrupted or restricted run) stay unchecked.
    [ -f "$work/results.txt" ] || { echo "error: MUTATION_RERUN needs a previous run's $work/results.txt" >&2; exit 1; }
    previous=$work_root/$module.previous.txt
    cp "$work/results.txt" "$previous"
    mapfile -t names < <(awk -F': ' 'NF == 2 && $2 != "killed" && $2 != "caught by type check" && $2 != "not checked" {
      sub(/^ */, "", $1); print $1 }' "$previous")
  fi
  if [ -z "${MUTATION_RESUME:-}" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    write_config "$module" "$work/pyproject.toml"
    if [ -n "${MUTATION_REF:-}" ]; then
      # A committed snapshot (e.g. the tests before and after a change), not the working tree.
      git archive "$MUTATION_REF" src tests | tar -x -C "$work"
    else
      cp -r src tests "$work/"
    fi
    find "$work" -name __pycache__ -prune -exec rm -rf {} +
  fi
  mapfile -t module_env < <(python - "$module" "$work" <<'EOF'
import glob, re, sys, tomllib
module, work = sys.argv[1], sys.argv[2]
spec = tomllib.load(open("pyproject.toml", "rb"))["tool"]["endolight"]["mutation"][module]
env = {k: str(v) for k, v in spec.get("env", {}).items()}
if env.get("NUMBA_DISABLE_JIT", "0") != "0":
    for pattern in spec["mutate"]:  # numba's own effect of the variable, made in the source
        for path in glob.glob(f"{work}/{pattern}"):
            text = open(path).read()
            open(path, "w").write(re.sub(r"(?m)^[ \t]*@(numba\.)?n?jit\b.*\n", "", text))
sys.stdout.write("".join(f"{k}={v}\n" for k, v in env.items()))  # no line: no env
EOF
)
  echo "== $module: mutmut in $work (log: $work/run.log)${names:+, checking ${#names[@]} names or patterns}"
  if [ -z "${MUTATION_RERUN:-}" ] || [ ${#names[@]} -gt 0 ]; then
    (cd "$work" && env "${module_env[@]}" nice -n 15 mutmut run --max-children "$children" "${names[@]}" >>run.log 2>&1) || {
      echo "error: mutmut failed for $module; last lines of $work/run.log:" >&2
      tail -5 "$work/run.log" >&2
      exit 1
    }
  fi
  (cd "$work" && mutmut results --all true) >"$work/results.txt"
  if [ -n "${MUTATION_RERUN:-}" ]; then  # mutants not re-tested keep the previous verdict
    awk -F': ' 'FNR == NR { prev[$1] = $2; next }
      NF == 2 { s = $2; if (s == "not checked" && ($1 in prev)) s = prev[$1]; print $1 ": " s }' \
      "$previous" "$work/results.txt" >"$work/results.merged" && mv "$work/results.merged" "$work/results.txt"
  fi
  grep ': survived$' "$work/results.txt" | sed 's/^ *//; s/: survived$//' >"$work/survived.txt" || true
  line=$(awk -F': ' -v m="$module" '
    NF == 2 { n++; if ($2 == "killed" || $2 == "caught by type check") k++; else if ($2 == "survived") s++; else o++ }
    END { printf "%-10s %6d %7d %9d %6d %7.1f%%", m, n, k, s, o, n ? 100 * k / n : 0 }' "$work/results.txt")
  summary+=("$line")
  echo "$line"
done

echo
echo "module      made  killed  survived  other  killed"
printf '%s\n' "${summary[@]}"
