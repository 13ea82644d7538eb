#!/usr/bin/env bash
# The creator page in a real headless Chromium against a real dev stack (see
# browser-test/creator.ts for what it checks):
#
#   clients/ts/scripts/test-creator-page.sh [path-to-streampay-binary]
#
# 1. check that Chromium is at /usr/bin/chromium (STREAMPAY_CHROMIUM; scripts/install-chromium.sh
#    at the repository root installs it) and that the stack's ports are free (API 18080, Anvil
#    18545, Postgres 18432; STREAMPAY_TS_*_PORT);
# 2. npm ci, build and type-check (skipped with STREAMPAY_TS_BUILT=1 when the caller did it);
# 3. start `streampay dev --fresh` (scripts/dev-stack.sh) and wait at most 120 s until it is ready;
# 4. run browser-test/creator.ts (at most 300 s; each thing the page should show within 60 s);
# 5. always stop the stack; the browser stops with creator.ts.
#
# Without an argument the relayer is `cargo run --quiet --bin streampay --`. Like every
# `streampay dev --fresh`, this starts the repository's .dev/ state over.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-stack.sh"

CHROMIUM="${STREAMPAY_CHROMIUM:-/usr/bin/chromium}"

dev_stack_args "$@"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "no Chromium at $CHROMIUM: run scripts/install-chromium.sh (as root) or set STREAMPAY_CHROMIUM" >&2
  exit 1
fi
check_ports "$API_PORT" "$ANVIL_PORT" "$PG_PORT"
npm_ci_and_build
start_dev_stack

say "creator page test ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
STREAMPAY_CHROMIUM="$CHROMIUM" \
  with_stack_env timeout --kill-after=10 330 node --import tsx browser-test/creator.ts
