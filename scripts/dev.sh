#!/usr/bin/env bash
# One command for the whole local stack: toolchain, Anvil with the contracts deployed, a Postgres
# cluster of its own under .dev/, migrations, an API key, a funded demo account, and the relayer.
# Everything is done by `streampay dev`; this wrapper only makes sure the toolchain is there and
# builds the binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
exec cargo run --quiet --bin streampay -- dev "$@"
