#!/usr/bin/env bash
# Runs the whole Rust suite N times on a fresh clone of this checkout's HEAD and prints, per
# test, how many runs it failed (a FAIL, a TIMEOUT from .config/nextest.toml's slow-timeout, or a
# crash). Exits 1 if any run had a failure, so a flake cannot pass unnoticed.
#
#   bash scripts/soak-tests.sh 5            # five runs; the clone builds from scratch
#   SOAK_TARGET_DIR=/path bash scripts/soak-tests.sh 5   # reuse a warm cargo target dir
#   SOAK_KEEP=1 ...                          # keep the clone and every run's log afterwards
#
# The clone gets its own .tools (scripts/bootstrap.sh) and, unless SOAK_TARGET_DIR is set, its
# own target dir, so nothing of the working tree (uncommitted files, a stale build) leaks in.
set -euo pipefail
N="${1:-5}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 N (runs, at least 1)" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/streampay-soak.XXXXXX")"
cleanup() { if [[ "${SOAK_KEEP:-}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT

git clone --quiet --no-hardlinks "$ROOT" "$WORK/repo"
# CI lays shared/ beside the clone; do the same when this checkout has one.
if [[ -d "$ROOT/../shared" ]]; then ln -s "$(cd "$ROOT/../shared" && pwd)" "$WORK/shared"; fi
cd "$WORK/repo"
echo "== soak: $N runs of the Rust suite at $(git rev-parse --short HEAD) in $WORK/repo"
bash scripts/bootstrap.sh >/dev/null
export PATH="$WORK/repo/.tools/bin:$PATH"
export CARGO_TARGET_DIR="${SOAK_TARGET_DIR:-$WORK/target}"
build_start=$(date +%s)
cargo nextest run --workspace --no-run >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
echo "build: $(( $(date +%s) - build_start )) s"

declare -A failures=()
runs_failed=0
for i in $(seq 1 "$N"); do
  log="$WORK/run-$i.log"
  start=$(date +%s)
  set +e
  cargo nextest run --workspace --no-fail-fast >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E '^ *Summary \[' "$log" | tail -1 | sed -E 's/^ *Summary \[ *[0-9.]+s\] *//')
  # Status lines: "        FAIL [   1.234s] (12/211) streampay-relayer::it module::test"; the test
  # is the last field. TIMEOUT, SIGSEGV, SIGABRT, ABORT and LEAK-FAIL count as failures too.
  mapfile -t failed < <(grep -E '^ *(FAIL|TIMEOUT|SIG[A-Z]+|ABORT|LEAK-FAIL) \[' "$log" | awk '{print $1" "$NF}' | sort -u)
  echo "run $i: exit $rc, ${secs} s, ${summary:-no summary line}"
  # Why: each panic's location and message (the log itself goes with the clone).
  if [[ ${#failed[@]} -gt 0 ]]; then grep -A1 -E 'panicked at' "$log" | grep -vE '^--$|stack backtrace' | sed 's/^ */      /' | head -20; fi
  for f in "${failed[@]}"; do
    echo "    $f"
    name="${f#* }"
    failures["$name"]=$(( ${failures["$name"]:-0} + 1 ))
  done
  if [[ $rc -ne 0 ]]; then
    runs_failed=$((runs_failed + 1))
    if [[ ${#failed[@]} -eq 0 ]]; then tail -30 "$log"; fi
  fi
done

echo "== failures per test over $N runs"
if [[ ${#failures[@]} -eq 0 ]]; then
  echo "none"
else
  for name in "${!failures[@]}"; do printf '%3d/%d  %s\n' "${failures[$name]}" "$N" "$name"; done | sort -rn
fi
echo "$((N - runs_failed)) of $N runs green"
[[ $runs_failed -eq 0 ]]
