#!/usr/bin/env bash
# Tests the TypeScript client against a real dev stack (relayer + Anvil + Postgres):
#
#   clients/ts/scripts/test-against-dev.sh [path-to-streampay-binary]
#
# 1. npm ci, build (tsc) and type-check the package and its tests;
# 2. start `streampay dev --fresh` from the repository root, in the background, on ports that do
#    not collide with a developer's own dev stack (API 18080, Anvil 18545, Postgres 18432;
#    override with STREAMPAY_TS_API_PORT, STREAMPAY_TS_ANVIL_PORT, STREAMPAY_TS_PG_PORT);
# 3. wait (at most STREAMPAY_TS_READY_SECS, 120 s) until it serves reads;
# 4. check that the committed OpenAPI snapshot and generated types match the live /openapi.json;
# 5. run the tests with its API key, admin token and demo wallet;
# 6. always stop the stack (API, Anvil, Postgres), whatever happened.
#
# Without an argument the relayer is `cargo run --quiet --bin streampay --`.
# Note: like every `streampay dev --fresh`, this starts the repository's .dev/ state over (the
# dumped Anvil chain and .dev/postgres). The stack's start and stop live in dev-stack.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-stack.sh"

dev_stack_args "$@"
check_ports "$API_PORT" "$ANVIL_PORT" "$PG_PORT"
npm_ci_and_build
start_dev_stack

say "checking the committed OpenAPI snapshot and types against $BASE/openapi.json"
npm run --silent gen:check -- "$BASE/openapi.json"

say "tests"
with_stack_env npm test
