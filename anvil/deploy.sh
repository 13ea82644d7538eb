#!/usr/bin/env bash
# Deploys the mock token (mUSDC, 6 decimals) and one StreamPay deployment onto a running chain
# and writes the deployment file the relayer reads.
#
#   anvil/deploy.sh [--rpc-url URL] [--out FILE] [--window SECONDS]
#
# The deployer is Anvil's first dev account at nonce 0, so on a fresh Anvil the addresses are
# always the same: MockToken 0x5FbDB2315678afecb367f032d93F642f64180aa3,
# StreamPay 0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512. If StreamPay already has code there (a
# chain restored from a state dump), nothing is sent and only the file is written.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RPC_URL="http://127.0.0.1:8545"
OUT="$ROOT/anvil/deployment.json"
WINDOW=86400
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rpc-url) RPC_URL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --window) WINDOW="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
CAST="$ROOT/.tools/bin/cast"
# Anvil's well-known first dev key (public test mnemonic); never used outside a local chain.
DEPLOYER_KEY="0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEPLOYER="$("$CAST" wallet address --private-key "$DEPLOYER_KEY")"
PERMIT2="0x000000000022D473030F116dDEE9F6B43aC78BA3" # canonical Uniswap Permit2 address

bytecode() { node -e 'process.stdout.write(require(process.argv[1]).bytecode.object)' "$ROOT/abi/$1.json"; }

chain_id="$("$CAST" chain-id --rpc-url "$RPC_URL")"
token="$("$CAST" compute-address --nonce 0 "$DEPLOYER" | awk '{print $NF}')"
streampay="$("$CAST" compute-address --nonce 1 "$DEPLOYER" | awk '{print $NF}')"

if [[ "$("$CAST" code "$streampay" --rpc-url "$RPC_URL")" == "0x" ]]; then
  if [[ "$("$CAST" nonce "$DEPLOYER" --rpc-url "$RPC_URL")" != "0" ]]; then
    echo "deployer $DEPLOYER has already sent transactions on $RPC_URL; use a fresh chain" >&2
    exit 1
  fi
  token_args="$("$CAST" abi-encode 'constructor(string,string)' 'Mock USD Coin' 'mUSDC')"
  "$CAST" send --rpc-url "$RPC_URL" --private-key "$DEPLOYER_KEY" \
    --create "$(bytecode MockToken)${token_args#0x}" >/dev/null
  sp_args="$("$CAST" abi-encode 'constructor(address,address,uint256)' "$token" "$PERMIT2" "$WINDOW")"
  "$CAST" send --rpc-url "$RPC_URL" --private-key "$DEPLOYER_KEY" \
    --create "$(bytecode StreamPay)${sp_args#0x}" >/dev/null
  start_block="$("$CAST" block-number --rpc-url "$RPC_URL")"
else
  # Restored chain: the deployment block is not known here, so index from genesis.
  start_block=0
fi

# Permit2 at its canonical address (the runtime code scripts/bootstrap.sh extracted), so Permit2
# deposits work on the dev chain as on a real one. Only where the address has no code yet.
PERMIT2_CODE="$ROOT/.tools/sol/permit2/Permit2.runtime.hex"
if [[ "$("$CAST" code "$PERMIT2" --rpc-url "$RPC_URL")" == "0x" ]]; then
  if [[ -f "$PERMIT2_CODE" ]]; then
    "$CAST" rpc --rpc-url "$RPC_URL" anvil_setCode "$PERMIT2" "$(tr -d '\n' < "$PERMIT2_CODE")" >/dev/null
  else
    echo "no $PERMIT2_CODE (run scripts/bootstrap.sh): the dev chain has no Permit2" >&2
  fi
fi

mkdir -p "$(dirname "$OUT")"
cat > "$OUT" <<JSON
{
  "chainId": $chain_id,
  "rpcUrl": "$RPC_URL",
  "deployments": [
    {
      "name": "USDC",
      "address": "$streampay",
      "token": "$token",
      "tokenDecimals": 6,
      "startBlock": $start_block
    }
  ]
}
JSON
echo "deployed StreamPay $streampay (token $token) on chain $chain_id; wrote $OUT"
