#!/usr/bin/env bash
# Runs every test: the committed abi/ artifacts are current, the Foundry suite (unit, fuzz,
# invariant), and the Rust suite (integration tests start their own Anvil and Postgres).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export PATH="$ROOT/.tools/bin:$PATH"

echo "== abi/ artifacts current"
bash scripts/export-abi.sh --check

echo "== forge test"
(cd contracts && forge test)

if [[ -f Cargo.toml ]]; then
  echo "== cargo nextest"
  cargo nextest run --workspace --no-fail-fast
fi
