#!/usr/bin/env bash
# The browser test of the TypeScript client: a dapp page, bundled with esbuild and served from
# two local origins, makes gasless deposits in a real headless Chromium against a real dev stack
# (see browser-test/run.ts for what it checks).
#
#   clients/ts/scripts/test-browser.sh [path-to-streampay-binary]
#
# 1. check that Chromium is at /usr/bin/chromium (STREAMPAY_CHROMIUM; scripts/install-chromium.sh
#    at the repository root installs it) and that the stack's ports and the page's are free
#    (API 18080, Anvil 18545, Postgres 18432, pages 18091 and 18092; STREAMPAY_TS_*_PORT,
#    STREAMPAY_BROWSER_ALLOWED_PORT, STREAMPAY_BROWSER_OTHER_PORT);
# 2. npm ci, build and type-check;
# 3. start `streampay dev --fresh` (as test-against-dev.sh does: scripts/dev-stack.sh) and wait
#    at most 120 s until it is ready;
# 4. run browser-test/run.ts (at most 300 s; each page's outcome within 60 s);
# 5. always stop the stack; the page servers and the browser stop with run.ts.
#
# Without an argument the relayer is `cargo run --quiet --bin streampay --`. Like every
# `streampay dev --fresh`, this starts the repository's .dev/ state over.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-stack.sh"

CHROMIUM="${STREAMPAY_CHROMIUM:-/usr/bin/chromium}"
ALLOWED_PORT="${STREAMPAY_BROWSER_ALLOWED_PORT:-18091}"
OTHER_PORT="${STREAMPAY_BROWSER_OTHER_PORT:-18092}"

dev_stack_args "$@"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "no Chromium at $CHROMIUM: run scripts/install-chromium.sh (as root) or set STREAMPAY_CHROMIUM" >&2
  exit 1
fi
check_ports "$API_PORT" "$ANVIL_PORT" "$PG_PORT" "$ALLOWED_PORT" "$OTHER_PORT"
npm_ci_and_build
start_dev_stack

say "browser test ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
STREAMPAY_CHROMIUM="$CHROMIUM" \
STREAMPAY_BROWSER_ALLOWED_PORT="$ALLOWED_PORT" \
STREAMPAY_BROWSER_OTHER_PORT="$OTHER_PORT" \
  with_stack_env timeout --kill-after=10 330 node --import tsx browser-test/run.ts
