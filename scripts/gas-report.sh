#!/usr/bin/env bash
# Measures gas per StreamPay operation as full transactions on a fresh local Anvil: each figure is
# the receipt's gasUsed (21,000 base + calldata + execution). The "execution" column subtracts the
# intrinsic cost (21,000 + 16 gas per non-zero and 4 per zero calldata byte) so the figures can be
# set beside anchors that exclude them. Prints a markdown table; --out FILE also writes it there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=""
[[ "${1:-}" == "--out" ]] && OUT="$2"
bash "$ROOT/scripts/bootstrap.sh"
CAST="$ROOT/.tools/bin/cast"
PORT=$((20000 + RANDOM % 10000))
RPC="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
"$ROOT/.tools/bin/anvil" --port "$PORT" --silent --accounts 10 --balance 100000 &
ANVIL_PID=$!
trap 'kill $ANVIL_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do "$CAST" chain-id --rpc-url "$RPC" >/dev/null 2>&1 && break; sleep 0.1; done
bash "$ROOT/anvil/deploy.sh" --rpc-url "$RPC" --out "$WORK/deployment.json" --window 3600 >/dev/null
TOKEN=0x5FbDB2315678afecb367f032d93F642f64180aa3
SP=0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512
MNEMONIC="test test test test test test test test test test test junk"
key() { "$CAST" wallet private-key "$MNEMONIC" "$1"; }
addr() { "$CAST" wallet address --private-key "$1"; }
RELAYER_KEY=$(key 0); ALICE_KEY=$(key 1); BOB_KEY=$(key 2); CAROL_KEY=$(key 3); DAVE_KEY=$(key 4)
ALICE=$(addr "$ALICE_KEY"); BOB=$(addr "$BOB_KEY"); CAROL=$(addr "$CAROL_KEY"); DAVE=$(addr "$DAVE_KEY")
# A user holding tokens and no ETH at all.
NOETH_KEY=0x00000000000000000000000000000000000000000000000000000000000000a1
NOETH=$(addr "$NOETH_KEY")

ROWS=()
# send KEY LABEL TO SIG ARGS... -> records gasUsed and intrinsic cost under LABEL
send() {
  local k="$1" label="$2"; shift 2
  local json; json=$("$CAST" send --json --rpc-url "$RPC" --private-key "$k" "$@")
  local hash gas input
  hash=$(node -e 'const r=JSON.parse(require("fs").readFileSync(0));if(r.status!=="0x1")process.exit(1);process.stdout.write(r.transactionHash)' <<<"$json") \
    || { echo "transaction for '$label' reverted" >&2; exit 1; }
  gas=$(node -e 'process.stdout.write(String(parseInt(JSON.parse(require("fs").readFileSync(0)).gasUsed)))' <<<"$json")
  input=$("$CAST" tx --rpc-url "$RPC" "$hash" input)
  [[ -n "$label" ]] && ROWS+=("$label|$gas|$(python3 -c '
import sys; b=bytes.fromhex(sys.argv[1][2:]); print(21000+sum(4 if x==0 else 16 for x in b))' "$input")")
  return 0
}
# bysig_calldata SIGNER_KEY DATA -> full calldata of bySig(signer, (traits, data), sig), account nonce
bysig_calldata() {
  local k="$1" data="$2" signer nonce traits digest sig
  signer=$(addr "$k")
  nonce=$("$CAST" call --rpc-url "$RPC" "$SP" "bySigAccountNonces(address)(uint256)" "$signer")
  traits=$(python3 -c 'import sys; print((int(sys.argv[1]) << 208) | int(sys.argv[2]))' 4102444800 "$nonce")
  digest=$("$CAST" call --rpc-url "$RPC" "$SP" "hashBySig(address,(uint256,bytes))(bytes32)" "$signer" "($traits,$data)")
  sig=$("$CAST" wallet sign --no-hash --private-key "$k" "$digest")
  "$CAST" calldata "bySig(address,(uint256,bytes),bytes)" "$signer" "($traits,$data)" "$sig"
}

for k in "$ALICE_KEY" "$BOB_KEY" "$CAROL_KEY" "$DAVE_KEY"; do
  send "$k" "" "$TOKEN" "mint(address,uint256)" "$(addr "$k")" 1000000000000
  send "$k" "" "$TOKEN" "approve(address,uint256)" "$SP" 1000000000000
done
M=000000000000000000 # 1e18 suffix: whole internal units

send "$ALICE_KEY" "deposit" "$SP" "deposit(uint256,bool)" 1000000000 false
send "$BOB_KEY" "" "$SP" "deposit(uint256,bool)" 1000000000 false
send "$ALICE_KEY" "subscribe (new stream)" "$SP" "subscribe(address,uint96,uint256)" "$BOB" 3858024691358 0
send "$ALICE_KEY" "re-subscribe (change rate)" "$SP" "subscribe(address,uint96,uint256)" "$BOB" 7716049382716 0
send "$ALICE_KEY" "unsubscribe" "$SP" "unsubscribe(address)" "$BOB"
send "$ALICE_KEY" "pay" "$SP" "pay(address,uint256)" "$BOB" "5$M"
send "$ALICE_KEY" "withdraw" "$SP" "withdraw(uint256)" "5$M"

data=$("$CAST" calldata "subscribe(address,uint96,uint256)" "$CAROL" 3858024691358 0)
send "$RELAYER_KEY" "bySig(subscribe), sent by a relayer" "$SP" "$(bysig_calldata "$ALICE_KEY" "$data")"
send "$ALICE_KEY" "subscribe (subscriber already streaming, new author)" "$SP" "subscribe(address,uint96,uint256)" "$DAVE" 3858024691358 0
send "$BOB_KEY" "subscribe (first stream, author already paid by others)" "$SP" "subscribe(address,uint96,uint256)" "$CAROL" 3858024691358 0
send "$BOB_KEY" "" "$SP" "unsubscribe(address)" "$CAROL"

# Gasless deposit: permit + bySig(deposit) in one transaction from the relayer.
send "$RELAYER_KEY" "" "$TOKEN" "mint(address,uint256)" "$NOETH" 1000000000
deadline=4102444800
typed=$(python3 - "$NOETH" "$SP" "$TOKEN" "$deadline" <<'PY'
import json, sys
owner, spender, token, deadline = sys.argv[1:5]
print(json.dumps({
  "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"}]},
  "primaryType": "Permit",
  "domain": {"name": "Mock USD Coin", "version": "1", "chainId": 31337, "verifyingContract": token},
  "message": {"owner": owner, "spender": spender, "value": "1000000000", "nonce": "0", "deadline": deadline}}))
PY
)
echo "$typed" > "$WORK/permit.json"
psig=$("$CAST" wallet sign --private-key "$NOETH_KEY" --data --from-file "$WORK/permit.json")
read -r v r s < <(python3 -c 'import sys; h=sys.argv[1][2:]; print(int(h[128:130],16), "0x"+h[:64], "0x"+h[64:128])' "$psig")
permit_args=$("$CAST" abi-encode "f(address,address,uint256,uint256,uint8,bytes32,bytes32)" "$NOETH" "$SP" 1000000000 "$deadline" "$v" "$r" "$s")
permit="${TOKEN}${permit_args#0x}"
action=$(bysig_calldata "$NOETH_KEY" "$("$CAST" calldata "deposit(uint256,bool)" 1000000000 false)")
send "$RELAYER_KEY" "deposit via permit + bySig (gasless)" "$SP" "permitAndCall(bytes,bytes)" "$permit" "$action"
[[ "$("$CAST" balance --rpc-url "$RPC" "$NOETH")" == "0" ]] || { echo "gasless user spent ETH" >&2; exit 1; }

# Batches of payments from Bob (no streams; a streaming sender adds ~0.6k per item for the
# solvency check against its rates): first to 100 fresh receivers, then again to the same (now known) receivers.
receivers=(); for i in $(seq 1 100); do receivers+=("$(printf '0x%040x' $((0xbeef0000 + i)))"); done
batch() { # N -> multicall argument of N pays of 1 unit
  local items=() i
  for ((i = 0; i < $1; i++)); do items+=("$("$CAST" calldata "pay(address,uint256)" "${receivers[$i]}" "1$M")"); done
  local IFS=,; echo "[${items[*]}]"
}
send "$BOB_KEY" "multicall of 10 payments (new receivers)" "$SP" "multicall(bytes[])" "$(batch 10)"
send "$BOB_KEY" "multicall of 100 payments (90 new receivers)" "$SP" "multicall(bytes[])" "$(batch 100)"
send "$BOB_KEY" "multicall of 10 payments (known receivers)" "$SP" "multicall(bytes[])" "$(batch 10)"
send "$BOB_KEY" "multicall of 100 payments (known receivers)" "$SP" "multicall(bytes[])" "$(batch 100)"

# Liquidation: Dave streams to 1 author, Carol to 10; both run dry past the window. Subscribing
# needs two windows of cover (2 x 3,600 s x outflow); an account is liquidatable below one.
send "$DAVE_KEY" "" "$SP" "deposit(uint256,bool)" 2000000 false       # 2 tokens: 10,000 s at 2e14/s
send "$CAROL_KEY" "" "$SP" "deposit(uint256,bool)" 20000000 false     # 20 tokens: 10,000 s at 10 x 2e14/s
rate=200000000000000 # 2e14/s
send "$DAVE_KEY" "" "$SP" "subscribe(address,uint96,uint256)" "$ALICE" $rate 0
for i in $(seq 0 9); do send "$CAROL_KEY" "" "$SP" "subscribe(address,uint96,uint256)" "${receivers[$i]}" $rate 0; done
"$CAST" rpc --rpc-url "$RPC" evm_increaseTime 7000 >/dev/null # 3,000 s left: under one window
"$CAST" rpc --rpc-url "$RPC" evm_mine >/dev/null
send "$BOB_KEY" "liquidate (1 stream)" "$SP" "liquidate(address)" "$DAVE"
send "$BOB_KEY" "liquidate (10 streams)" "$SP" "liquidate(address)" "$CAROL"

# Worst-case liquidation: an account at the stream cap (maxStreams()), every stream to a distinct
# author under its own project (distinct owner, 10% fee), so every slot the loop touches is cold
# and every stream also settles a project owner.
CAP=$("$CAST" call --rpc-url "$RPC" "$SP" "maxStreams()(uint256)")
WHALE_KEY=0x00000000000000000000000000000000000000000000000000000000000c1c1c
WHALE=$(addr "$WHALE_KEY")
"$CAST" rpc --rpc-url "$RPC" anvil_setBalance "$WHALE" 0x56BC75E2D63100000 >/dev/null
send "$WHALE_KEY" "" "$TOKEN" "mint(address,uint256)" "$WHALE" 100000000
send "$WHALE_KEY" "" "$TOKEN" "approve(address,uint256)" "$SP" 100000000
send "$WHALE_KEY" "" "$SP" "deposit(uint256,bool)" 100000000 false # 100 tokens
first_project=$("$CAST" call --rpc-url "$RPC" "$SP" "claimProjectId()(uint256)" --from "$WHALE")
subs=()
for ((i = 0; i < CAP; i++)); do
  owner_key=$(printf '0x%064x' $((0x0a000000 + i)))
  owner=$(addr "$owner_key")
  "$CAST" rpc --rpc-url "$RPC" anvil_setBalance "$owner" 0x16345785D8A0000 >/dev/null
  pid=$((first_project + i))
  send "$owner_key" "" "$SP" "multicall(bytes[])" \
    "[$("$CAST" calldata "claimProjectId()"),$("$CAST" calldata "setDefaultSettings((uint16),uint256)" "(1000)" "$pid")]"
  subs+=("$("$CAST" calldata "subscribe(address,uint96,uint256)" "$(printf '0x%040x' $((0xa0700000 + i)))" 1000000000000 "$pid")")
done
(IFS=,; send "$WHALE_KEY" "" "$SP" "multicall(bytes[])" "[${subs[*]}]")
# 2 x 3,600 s x 100 x 1e12/s = 0.72 tokens of cover; run the balance down under one window
"$CAST" rpc --rpc-url "$RPC" evm_increaseTime 999000 >/dev/null
"$CAST" rpc --rpc-url "$RPC" evm_mine >/dev/null
send "$BOB_KEY" "liquidate (worst case: $CAP streams = the cap, distinct authors and project owners, 10% fee)" "$SP" "liquidate(address)" "$WHALE"

# Relayed calls: signed payments of distinct users (bySig(pay), account nonce 0) sent singly by the
# relayer, and the same kind of calls put into one bundle(bytes[]) of 1, 10 and 50.
users=(); for i in $(seq 1 71); do users+=("$(printf '0x%064x' $((0x0b000000 + i)))"); done
fund=(); for k in "${users[@]}"; do fund+=("$("$CAST" calldata "depositFor(uint256,address,bool)" 2000000 "$(addr "$k")" false)"); done
(IFS=,; send "$ALICE_KEY" "" "$SP" "multicall(bytes[])" "[${fund[*]}]")
signed_pay() { bysig_calldata "$1" "$("$CAST" calldata "pay(address,uint256)" "$DAVE" "1$M")"; }
single_total=0
for i in $(seq 0 9); do
  json=$("$CAST" send --json --rpc-url "$RPC" --private-key "$RELAYER_KEY" "$SP" "$(signed_pay "${users[$i]}")")
  single_total=$((single_total + $(node -e 'process.stdout.write(String(parseInt(JSON.parse(require("fs").readFileSync(0)).gasUsed)))' <<<"$json")))
done
BUNDLE_ROWS=()
next=10
for n in 1 10 50; do
  items=(); for ((i = 0; i < n; i++)); do items+=("$(signed_pay "${users[$next]}")"); next=$((next + 1)); done
  json=$(IFS=,; "$CAST" send --json --rpc-url "$RPC" --private-key "$RELAYER_KEY" "$SP" "bundle(bytes[])" "[${items[*]}]")
  gas=$(node -e 'const r=JSON.parse(require("fs").readFileSync(0));if(r.status!=="0x1")process.exit(1);process.stdout.write(String(parseInt(r.gasUsed)))' <<<"$json") \
    || { echo "bundle of $n reverted" >&2; exit 1; }
  BUNDLE_ROWS+=("bundle of $n relayed bySig(pay), per call|$((gas / n))")
done

table="| operation | gasUsed (full tx) | execution (minus 21k + calldata) |
|---|---:|---:|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r label gas intrinsic <<<"$row"
  table+=$'\n'"| $label | $gas | $((gas - intrinsic)) |"
done
g() { for row in "${ROWS[@]}"; do IFS='|' read -r l gas _ <<<"$row"; [[ "$l" == "$1" ]] && echo "$gas"; done; return 0; }
per_known=$(( ($(g "multicall of 100 payments (known receivers)") - $(g "multicall of 10 payments (known receivers)")) / 90 ))
per_new=$(( ($(g "multicall of 100 payments (90 new receivers)") - $(g "multicall of 10 payments (new receivers)")) / 90 ))
table+=$'\n'"| each extra payment in a batch, known receiver ((100 − 10) / 90) | $per_known | |"
table+=$'\n'"| each extra payment in a batch, new receiver ((100 − 10) / 90) | $per_new | |"
table+=$'\n'"| relayed bySig(pay) sent singly, per call (mean of 10 transactions) | $((single_total / 10)) | |"
for row in "${BUNDLE_ROWS[@]}"; do IFS='|' read -r label gas <<<"$row"; table+=$'\n'"| $label | $gas | |"; done
echo "$table"
[[ -n "$OUT" ]] && echo "$table" > "$OUT"
exit 0
