#!/usr/bin/env bash
# Starts a local Anvil with the contracts deployed, in the background, and writes the deployment
# file. The chain state is dumped to .dev/anvil-state.json on exit and loaded on the next start,
# so a restarted dev chain keeps its balances and streams.
#
#   anvil/start.sh [--port 8545] [--out anvil/deployment.json] [--fresh]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT=8545
OUT="$ROOT/anvil/deployment.json"
FRESH=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bash "$ROOT/scripts/bootstrap.sh"
STATE_DIR="$ROOT/.dev"
mkdir -p "$STATE_DIR"
STATE="$STATE_DIR/anvil-state.json"
[[ $FRESH == 1 ]] && rm -f "$STATE"
RPC_URL="http://127.0.0.1:$PORT"

if "$ROOT/.tools/bin/cast" chain-id --rpc-url "$RPC_URL" >/dev/null 2>&1; then
  echo "something already answers on $RPC_URL; stop it or pass --port" >&2
  exit 1
fi
nohup "$ROOT/.tools/bin/anvil" --host 127.0.0.1 --port "$PORT" --chain-id 31337 \
  --state "$STATE" --state-interval 5 >"$STATE_DIR/anvil.log" 2>&1 &
echo $! > "$STATE_DIR/anvil.pid"
for _ in $(seq 1 100); do
  "$ROOT/.tools/bin/cast" chain-id --rpc-url "$RPC_URL" >/dev/null 2>&1 && break
  sleep 0.1
done
bash "$ROOT/anvil/deploy.sh" --rpc-url "$RPC_URL" --out "$OUT"
echo "anvil running on $RPC_URL (pid $(cat "$STATE_DIR/anvil.pid"), log $STATE_DIR/anvil.log)"
