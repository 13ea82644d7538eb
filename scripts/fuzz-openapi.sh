#!/usr/bin/env bash
# Fuzzes the API against its own OpenAPI document: schemathesis (PyPI, pinned below) generates
# requests from the live /openapi.json of a `streampay dev --fresh` stack and runs every check
# (no 5xx, status codes, content types, headers and bodies as documented, valid requests
# accepted, invalid ones refused, ...). Any failure fails the script.
#
#   bash scripts/fuzz-openapi.sh [path-to-streampay-binary]
#
# Ports: API 28080, Anvil 28545, Postgres 28432 (STREAMPAY_FUZZ_*_PORT). Admin routes are left
# out: the run's key could otherwise revoke or rotate itself. The configuration (which statuses a
# valid request may get, the deployment name to use) is scripts/schemathesis.toml. Examples per
# operation: STREAMPAY_FUZZ_EXAMPLES (default 50). Schemathesis lives in .tools/schemathesis (a
# venv made here, reused by later runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCHEMATHESIS_VERSION=4.32.5
export STREAMPAY_TS_API_PORT="${STREAMPAY_FUZZ_API_PORT:-28080}"
export STREAMPAY_TS_ANVIL_PORT="${STREAMPAY_FUZZ_ANVIL_PORT:-28545}"
export STREAMPAY_TS_PG_PORT="${STREAMPAY_FUZZ_PG_PORT:-28432}"
source "$ROOT/clients/ts/scripts/dev-stack.sh"

VENV="$ROOT/.tools/schemathesis"
if [[ ! -x "$VENV/bin/st" ]] || [[ "$("$VENV/bin/st" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

dev_stack_args "$@"
check_ports "$API_PORT" "$ANVIL_PORT" "$PG_PORT"
start_dev_stack

REPORT="$(mktemp -d "${TMPDIR:-/tmp}/streampay-fuzz.XXXXXX")"
say "schemathesis against $BASE/openapi.json (report in $REPORT)"
"$VENV/bin/st" --config-file "$ROOT/scripts/schemathesis.toml" run "$BASE/openapi.json" \
  -H "X-API-Key: $KEY" \
  --checks all \
  --exclude-path-regex '/admin/' \
  --max-examples "${STREAMPAY_FUZZ_EXAMPLES:-50}" \
  --seed "${STREAMPAY_FUZZ_SEED:-20261203}" \
  --request-timeout 15 \
  --workers 1 \
  --report junit --report-dir "$REPORT" \
  --generation-database none \
  --no-color
