#!/usr/bin/env bash
# Installs the pinned toolchain the project needs into .tools/ (git-ignored):
# Foundry (anvil, forge, cast) and solc-js from npm, the Solidity libraries as npm tarballs, and
# sqlx-cli (built with cargo) for `cargo sqlx prepare`.
# Idempotent: a second run with everything present only checks versions and returns.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
FOUNDRY_VERSION="1.7.1"
SOLC_VERSION="0.8.37"
OZ_VERSION="5.1.0"
ONEINCH_VERSION="6.9.16"
STAMP="$TOOLS/.stamp"
WANT="foundry=$FOUNDRY_VERSION solc=$SOLC_VERSION oz=$OZ_VERSION 1inch=$ONEINCH_VERSION"

# sqlx-cli, the same version as the sqlx crate in Cargo.lock (the offline query data's format
# follows it). Building it takes a few minutes, once.
SQLX_CLI_VERSION="$(awk '/^name = "sqlx"$/ { getline; sub(/^version = "/, ""); sub(/"$/, ""); print; exit }' "$ROOT/Cargo.lock")"
if ! "$TOOLS/bin/sqlx" --version 2>/dev/null | grep -qx "sqlx-cli $SQLX_CLI_VERSION"; then
  cargo install sqlx-cli --locked --version "$SQLX_CLI_VERSION" --no-default-features \
    --features postgres,rustls --root "$TOOLS"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$TOOLS/bin/forge" && -x "$TOOLS/bin/anvil" ]]; then
  exit 0
fi

export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false npm_config_loglevel=error
mkdir -p "$TOOLS/bin" "$TOOLS/npm" "$TOOLS/sol"

# Foundry binaries ship inside platform packages on npm; the solc-js wasm build compiles offline.
npm install --no-save --prefix "$TOOLS/npm" \
  "@foundry-rs/anvil@$FOUNDRY_VERSION" "@foundry-rs/forge@$FOUNDRY_VERSION" \
  "@foundry-rs/cast@$FOUNDRY_VERSION" "solc@$SOLC_VERSION" >/dev/null

case "$(uname -m)" in
  x86_64) PLAT="linux-amd64" ;;
  aarch64|arm64) PLAT="linux-arm64" ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
for tool in anvil forge cast; do
  bin="$TOOLS/npm/node_modules/@foundry-rs/$tool-$PLAT/bin/$tool"
  [[ -x "$bin" ]] || { echo "missing $bin after npm install" >&2; exit 1; }
  ln -sfn "$bin" "$TOOLS/bin/$tool"
done

# forge calls `solc --version` and `solc --standard-json ...`; solc-js's own CLI rejects forge's
# extra flags, so this wrapper ignores them and drives solc.compile directly.
cat > "$TOOLS/bin/solc" <<JS
#!/usr/bin/env node
const solc = require("$TOOLS/npm/node_modules/solc");
const args = process.argv.slice(2);
if (args.includes("--version")) {
  console.log("solc, the solidity compiler commandline interface");
  console.log("Version: " + solc.version());
  process.exit(0);
}
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const fs = require("fs");
  const path = require("path");
  const findImports = (p) => {
    for (const base of [process.cwd(), ...args.filter((a) => !a.startsWith("-"))]) {
      const f = path.resolve(base, p);
      if (fs.existsSync(f)) return { contents: fs.readFileSync(f, "utf8") };
    }
    return { error: "File not found: " + p };
  };
  process.stdout.write(solc.compile(input, { import: findImports }));
});
JS
chmod +x "$TOOLS/bin/solc"

# Solidity libraries: only the package tarballs (npm install of 1inch would pull in hardhat).
fetch_sol() { # name spec
  local dir="$TOOLS/sol/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "$2" >/dev/null && tar xzf ./*.tgz && rm ./*.tgz)
}
fetch_sol openzeppelin "@openzeppelin/contracts@$OZ_VERSION"
fetch_sol 1inch "@1inch/solidity-utils@$ONEINCH_VERSION"

echo "$WANT" > "$STAMP"
echo "toolchain ready in $TOOLS/bin: $("$TOOLS/bin/forge" --version | head -1)"
