#!/usr/bin/env bash
# Runs every test: the committed abi/ artifacts are current, the Foundry suite (unit, fuzz,
# invariant), the committed sqlx query data (.sqlx/) matches the queries and a migrated database,
# the Rust suite (integration tests start their own Anvil and Postgres), the TypeScript client
# against the dev stack (`streampay dev` on its own ports), an OpenAPI fuzzer (schemathesis) against
# the dev stack, the browser test of a dapp page, and the creator page in a browser.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export PATH="$ROOT/.tools/bin:$PATH"
# A fresh clone builds once: incremental compilation data would only take disk.
if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free where this builds"

echo "== abi/ artifacts current"
bash scripts/export-abi.sh --check

echo "== forge test"
(cd contracts && forge test)

if [[ -f Cargo.toml ]]; then
  # A throwaway cluster with the migrations applied (src/bin/with_db.rs); the check compiles the
  # crate against it and compares what the macros see with .sqlx/.
  echo "== sqlx query data current (cargo sqlx prepare --check)"
  cargo run --quiet --bin with_db -- cargo sqlx prepare --check

  echo "== cargo nextest"
  cargo nextest run --workspace --no-fail-fast

  # The TypeScript client (clients/ts) against the whole dev stack this binary brings up, then a
  # real browser (headless Chromium from Debian) using it from an allowed and a refused origin.
  cargo build --quiet --bin streampay
  STREAMPAY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/streampay"
  echo "== TypeScript client against the dev stack"
  bash clients/ts/scripts/test-against-dev.sh "$STREAMPAY_BIN"
  echo "== OpenAPI fuzzing (schemathesis, every check) against the dev stack"
  bash scripts/fuzz-openapi.sh "$STREAMPAY_BIN"
  echo "== browser: a dapp page on two origins (headless Chromium)"
  bash scripts/install-chromium.sh
  STREAMPAY_TS_BUILT=1 bash clients/ts/scripts/test-browser.sh "$STREAMPAY_BIN"
  echo "== browser: the creator page, live (headless Chromium)"
  STREAMPAY_TS_BUILT=1 bash clients/ts/scripts/test-creator-page.sh "$STREAMPAY_BIN"
fi
