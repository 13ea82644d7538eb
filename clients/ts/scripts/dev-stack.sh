# Shared by test-against-dev.sh and test-browser.sh (source it; it runs nothing by itself): start
# a `streampay dev --fresh` stack for the TypeScript client's tests and always stop it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/dev-stack.sh"
#   dev_stack_args "$@"            # [path-to-streampay-binary]; default: cargo run --bin streampay
#   check_ports "$API_PORT" ...    # fail if anything listens there
#   npm_ci_and_build               # npm ci, tsc build, type-check
#   start_dev_stack                # start, wait until ready; sets KEY, ADMIN, DEMO; stops on exit
#   with_stack_env CMD ARGS...     # run CMD with STREAMPAY_URL, STREAMPAY_API_KEY, ... set
#
# Ports: API 18080, Anvil 18545, Postgres 18432 (STREAMPAY_TS_API_PORT, STREAMPAY_TS_ANVIL_PORT,
# STREAMPAY_TS_PG_PORT). Fixed ports stay below 32768, outside Linux's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 by default): a port in that range can be taken by
# any outgoing connection's local end just before the API binds it. Readiness within
# STREAMPAY_TS_READY_SECS (120). Like every `streampay dev --fresh`, this starts the repository's
# .dev/ state over.

TS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$TS_DIR/../.." && pwd)"
API_PORT="${STREAMPAY_TS_API_PORT:-18080}"
ANVIL_PORT="${STREAMPAY_TS_ANVIL_PORT:-18545}"
PG_PORT="${STREAMPAY_TS_PG_PORT:-18432}"
READY_SECS="${STREAMPAY_TS_READY_SECS:-120}"
CONTRACT="${STREAMPAY_CONTRACT:-USDC}"
BASE="http://127.0.0.1:$API_PORT"
RELAYER=()
KEY="" ADMIN="" DEMO=""
LOG="" STACK_PID=""

started=$(date +%s)
say() { echo "==> [$(( $(date +%s) - started ))s] $*"; }

dev_stack_args() {
  if [[ $# -gt 1 ]]; then
    echo "usage: $0 [path-to-streampay-binary]" >&2
    exit 2
  fi
  if [[ $# -eq 1 ]]; then
    local bin
    bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    [[ -x "$bin" ]] || { echo "$1 is not an executable" >&2; exit 2; }
    RELAYER=("$bin")
  else
    RELAYER=(cargo run --quiet --bin streampay --)
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
  local port
  for port in "$@"; do
    if port_in_use "$port"; then
      echo "port $port is already in use; stop what listens there or choose other ports (STREAMPAY_TS_*_PORT, STREAMPAY_BROWSER_*_PORT)" >&2
      exit 1
    fi
  done
}

npm_ci_and_build() {
  export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
  cd "$TS_DIR"
  # A caller that already installed and built this tree (scripts/test.sh runs the client tests,
  # then the browser test) says so, and the second script skips the minute it would take again.
  if [[ "${STREAMPAY_TS_BUILT:-}" == 1 && -d node_modules && -d dist ]]; then
    say "npm ci and build: done by the caller (STREAMPAY_TS_BUILT=1)"
    return
  fi
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  say "build and type-check"
  npm run --silent build
  npm run --silent typecheck
}

stop_stack() {
  local status=$?
  if [[ -n "$STACK_PID" ]] && kill -0 "$STACK_PID" 2>/dev/null; then
    say "stopping the dev stack (pid $STACK_PID)"
    kill -TERM "$STACK_PID" 2>/dev/null || true
    # `streampay dev` stops the API, Postgres and Anvil on SIGTERM; give it 60 s.
    for _ in $(seq 1 120); do
      kill -0 "$STACK_PID" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$STACK_PID" 2>/dev/null; then
      echo "the dev stack did not stop within 60 s; killing it, then its Anvil and Postgres" >&2
      kill -KILL "$STACK_PID" 2>/dev/null || true
      bash "$ROOT/anvil/stop.sh" || true
      if [[ -f "$ROOT/.dev/postgres/postmaster.pid" ]]; then
        kill -INT "$(head -1 "$ROOT/.dev/postgres/postmaster.pid")" 2>/dev/null || true
      fi
    fi
    wait "$STACK_PID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -n "$LOG" && -f "$LOG" ]]; then
    echo "---- last lines of the dev stack's log ($LOG) ----" >&2
    tail -n 40 "$LOG" >&2
  fi
  say "done (exit $status)"
  exit "$status"
}

start_dev_stack() {
  local log_dir
  log_dir="$(mktemp -d "${TMPDIR:-/tmp}/streampay-ts.XXXXXX")"
  LOG="$log_dir/dev.log"
  trap stop_stack EXIT
  trap 'exit 130' INT TERM

  say "starting: ${RELAYER[*]} dev --fresh (API $BASE, Anvil :$ANVIL_PORT, Postgres :$PG_PORT; log $LOG)"
  (
    cd "$ROOT"
    export PATH="$ROOT/.tools/bin:$PATH"
    exec "${RELAYER[@]}" dev --fresh --listen "127.0.0.1:$API_PORT" --anvil-port "$ANVIL_PORT" --pg-port "$PG_PORT"
  ) >"$LOG" 2>&1 &
  STACK_PID=$!

  # Ready once the banner is printed (API key, admin token, demo wallet) and a read of the demo
  # wallet answers 200 (the index has reached the deployment; before that reads are 503).
  local ready=0 code deadline
  deadline=$(( $(date +%s) + READY_SECS ))
  while (( $(date +%s) < deadline )); do
    if ! kill -0 "$STACK_PID" 2>/dev/null; then
      echo "the dev stack exited before it was ready" >&2
      exit 1
    fi
    if [[ -z "$KEY" ]] && grep -q "^Serving on " "$LOG"; then
      KEY="$(sed -n 's/^ *API key *\(sk_[A-Za-z0-9_]*\).*/\1/p' "$LOG" | head -1)"
      ADMIN="$(sed -n 's/^ *admin *\(ey[A-Za-z0-9._-]*\).*/\1/p' "$LOG" | head -1)"
      DEMO="$(sed -n 's/^ *demo user *\(0x[0-9a-fA-F]\{40\}\).*/\1/p' "$LOG" | head -1)"
      if [[ -z "$KEY" || -z "$ADMIN" || -z "$DEMO" ]]; then
        echo "could not read the API key, admin token and demo wallet from the dev stack's banner" >&2
        exit 1
      fi
    fi
    if [[ -n "$KEY" ]] &&
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $KEY" \
        "$BASE/api/v1/$CONTRACT/payments/balance/$DEMO")" && [[ "$code" == 200 ]]; then
      ready=1
      break
    fi
    sleep 0.5
  done
  if [[ $ready != 1 ]]; then
    echo "the dev stack was not ready within ${READY_SECS} s" >&2
    exit 1
  fi
  say "dev stack ready: contract $CONTRACT, demo wallet $DEMO"
}

with_stack_env() {
  STREAMPAY_URL="$BASE" \
  STREAMPAY_API_KEY="$KEY" \
  STREAMPAY_ADMIN_TOKEN="$ADMIN" \
  STREAMPAY_RPC_URL="http://127.0.0.1:$ANVIL_PORT" \
  STREAMPAY_DEMO_KEY="$(cat "$ROOT/.dev/demo-wallet.key")" \
  STREAMPAY_CONTRACT="$CONTRACT" \
    "$@"
}
