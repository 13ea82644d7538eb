#!/usr/bin/env bash
# The relay benchmark side by side: a base commit against this checkout, in alternating rounds.
#
#   scripts/bench-relay-ab.sh BASE [ROUNDS] [-- BENCH ARGS]
#
# BASE is checked out into a worktree of its own; each side is built in release into its own
# target dir (a shared one could serve one side's binary for the other), then the rounds run
# base, this checkout, base, this checkout, … (ROUNDS of each, 4 by default), each round a fresh
# Anvil and Postgres started by the bench. Every round's output is kept in
# `<target>/bench-ab/<side>-<round>.log`; the script prints, per round and as medians, the
# chain-bound synchronous run's p50 and p99 and the automine rounds' RPCs and Postgres statements
# per relay. BENCH ARGS default to a lighter command than BENCHMARKS.md's full one, aimed at the
# chain-bound synchronous latency.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ $# -ge 1 ]] || { sed -n 2,13p "${BASH_SOURCE[0]}"; exit 2; }
BASE="$(git rev-parse --short "$1")"
shift
ROUNDS=4
if [[ $# -ge 1 && "$1" != "--" ]]; then ROUNDS="$1"; shift; fi
if [[ $# -ge 1 && "$1" == "--" ]]; then shift; fi
ARGS=("$@")
[[ ${#ARGS[@]} -gt 0 ]] || ARGS=(--n 50 --rounds 1 --open-n 100 --chain-n 300 --chain-sync-n 2000)
HEAD_REV="$(git rev-parse --short HEAD)"
[[ -z "$(git status --porcelain --untracked-files=no)" ]] || HEAD_REV="$HEAD_REV+changes"

bash scripts/bootstrap.sh
export PATH="$ROOT/.tools/bin:$PATH"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-ab"
TREE="$OUT/base-tree"
mkdir -p "$OUT"
git worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"
git worktree prune
git worktree add --detach --quiet "$TREE" "$BASE"
ln -sfn "$ROOT/.tools" "$TREE/.tools"
trap 'git worktree remove --force "$TREE" 2>/dev/null || true' EXIT

# The bench executable of the tree in $1, built into the target dir $2.
build() {
  local exe
  exe="$(cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench relay --no-run 2>&1 | tee "$2.build.log" |
    sed -n 's/.*Executable benches\/relay.rs (\(.*\))$/\1/p' | tail -1)"
  [[ -x "$exe" ]] || { echo "no bench executable for $1 (see $2.build.log)" >&2; exit 1; }
  echo "$exe"
}
echo "== building $BASE and $HEAD_REV (release, separate target dirs)"
BASE_EXE="$(build "$TREE" "$OUT/target-base")"
HEAD_EXE="$(build "$ROOT" "$OUT/target-head")"

# "p50 p99" of the chain-bound synchronous run, then RPCs and statements per relay, of a log.
figures() {
  local sync rpc stmts
  sync="$(grep '| relayer: open loop at 0.5 × capacity' "$1" | awk -F'|' '{gsub(/ /, "", $6); gsub(/ /, "", $7); print $6, $7}')"
  rpc="$(grep -oP 'JSON-RPC calls: \*\*\K[0-9.]+' "$1")"
  stmts="$(grep -oP 'Postgres statements: \*\*\K[0-9.]+' "$1")"
  echo "$sync $rpc $stmts"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "== $ROUNDS alternating rounds: ${ARGS[*]}"
for ((r = 1; r <= ROUNDS; r++)); do
  for side in base head; do
    if [[ $side == base ]]; then exe="$BASE_EXE" dir="$TREE"; else exe="$HEAD_EXE" dir="$ROOT"; fi
    log="$OUT/$side-$r.log"
    (cd "$dir" && "$exe" "${ARGS[@]}" >"$log" 2>&1) || { echo "round $r $side failed: $log" >&2; exit 1; }
    echo "round $r $side: sync p50 p99, RPCs, statements per relay: $(figures "$log")"
  done
done

echo "== medians over $ROUNDS rounds (sync p50 ms, sync p99 ms, RPCs per relay, statements per relay)"
for side in base head; do
  rev="$BASE"
  [[ $side == head ]] && rev="$HEAD_REV"
  line="$side ($rev):"
  for col in 1 2 3 4; do
    line="$line $(for ((r = 1; r <= ROUNDS; r++)); do figures "$OUT/$side-$r.log" | awk -v c=$col '{print $c}'; done | median)"
  done
  echo "$line"
done
