#!/usr/bin/env bash
# Compiles the contracts and writes abi/<Name>.json (ABI + creation and runtime bytecode) for the
# contracts the Rust side binds. With --check, fails instead if the committed files are stale.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONTRACTS=(StreamPay MockToken MockPlainToken)
bash "$ROOT/scripts/bootstrap.sh"
(cd "$ROOT/contracts" && "$ROOT/.tools/bin/forge" build --skip test --skip script >/dev/null)

out="$ROOT/abi"
if [[ "${1:-}" == "--check" ]]; then out="$(mktemp -d)"; fi
mkdir -p "$out"
for c in "${CONTRACTS[@]}"; do
  node -e '
    const fs = require("fs");
    const a = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const slim = { contractName: process.argv[3], abi: a.abi,
                   bytecode: { object: a.bytecode.object },
                   deployedBytecode: { object: a.deployedBytecode.object } };
    fs.writeFileSync(process.argv[2], JSON.stringify(slim, null, 2) + "\n");
  ' "$ROOT/contracts/out/$c.sol/$c.json" "$out/$c.json" "$c"
done

if [[ "${1:-}" == "--check" ]]; then
  for c in "${CONTRACTS[@]}"; do
    if ! cmp -s "$out/$c.json" "$ROOT/abi/$c.json"; then
      echo "abi/$c.json is stale: run scripts/export-abi.sh and commit the result" >&2
      exit 1
    fi
  done
  echo "abi/ is current"
fi
