#!/usr/bin/env bash
# Stops the Anvil started by anvil/start.sh (its state is dumped on exit).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PID_FILE="$ROOT/.dev/anvil.pid"
[[ -f "$PID_FILE" ]] && kill "$(cat "$PID_FILE")" 2>/dev/null && rm -f "$PID_FILE" && echo "anvil stopped"
exit 0
