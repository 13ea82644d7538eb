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
# Uniswap Permit2 (MIT) for the dev chain: the canonical deployed bytecode, as Uniswap's v4
# periphery package ships it inside its DeployPermit2 test helper.
V4_PERIPHERY_VERSION="1.0.3"
PERMIT2_SLICE_KECCAK="0xa1ad0529565c25202190d4ae7f75d4ca08dc432cc760544ee7d0313b68e82ecd"
PERMIT2_CODE_KECCAK="0xc67d1657868aa5146eaf24fb879fb1fdec3d2d493b3683a61c9c2f4fb2851131"
STAMP="$TOOLS/.stamp"
WANT="foundry=$FOUNDRY_VERSION solc=$SOLC_VERSION oz=$OZ_VERSION 1inch=$ONEINCH_VERSION permit2=$V4_PERIPHERY_VERSION"

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

# Permit2's runtime code for `anvil_setCode` at its canonical address (anvil/deploy.sh and the
# tests). DeployPermit2 copies it out of its own code with CODECOPY(dest, 484, 9152); the slice
# is checked against a pinned keccak256. That code was built by a Foundry test run, so its two
# immutables hold that run's EIP-712 cache (chain 31337, a domain separator for another address).
# They are set to what the canonical deployment holds (chain 1 and mainnet's separator for the
# canonical address); Permit2 uses the cache only on chain 1, and elsewhere derives the separator
# from the chain id and its own address, so the code is right on any dev chain id.
permit2_dir="$TOOLS/sol/permit2"
rm -rf "$permit2_dir" && mkdir -p "$permit2_dir"
(
  cd "$permit2_dir"
  npm pack --silent "@uniswap/v4-periphery@$V4_PERIPHERY_VERSION" >/dev/null
  tar xzf ./*.tgz package/foundry-out/DeployPermit2.sol/DeployPermit2.json package/lib/permit2/LICENSE
  rm ./*.tgz
  cp package/lib/permit2/LICENSE LICENSE
  node -e '
    const fs = require("fs");
    const { keccak256 } = require(process.argv[1]); // js-sha3, a dependency of solc-js
    const [, , sliceKeccak, codeKeccak] = process.argv;
    const k = (buf) => "0x" + keccak256(buf);
    const art = JSON.parse(fs.readFileSync("package/foundry-out/DeployPermit2.sol/DeployPermit2.json", "utf8"));
    const code = Buffer.from(art.deployedBytecode.object.slice(2), "hex").subarray(484, 484 + 9152);
    if (k(code) !== sliceKeccak) throw new Error("Permit2 code slice keccak " + k(code) + " != pinned " + sliceKeccak);
    const word = (n) => Buffer.from(n.toString(16).padStart(64, "0"), "hex");
    const canonical = Buffer.from("000000000022D473030F116dDEE9F6B43aC78BA3", "hex");
    const separator = (chainId, addr) => Buffer.from(keccak256(Buffer.concat([
      Buffer.from(keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)"), "hex"),
      Buffer.from(keccak256("Permit2"), "hex"), word(BigInt(chainId)), Buffer.concat([Buffer.alloc(12), addr]),
    ])), "hex");
    // Each immutable is one PUSH32 (0x7f) of its value; replace exactly one of each.
    const setPush32 = (from, to) => {
      const at = [];
      for (let i = code.indexOf(from); i >= 0; i = code.indexOf(from, i + 1)) at.push(i);
      if (at.length !== 1 || code[at[0] - 1] !== 0x7f) throw new Error("immutable " + from.toString("hex") + " at " + at);
      to.copy(code, at[0]);
    };
    setPush32(word(31337n), word(1n));
    setPush32(Buffer.from("d5a17abc3865df5c1400c0299bd4ce2eefc8114aec5f9d3dded1745783e57b98", "hex"), separator(1, canonical));
    if (k(code) !== codeKeccak) throw new Error("Permit2 code keccak " + k(code) + " != pinned " + codeKeccak);
    fs.writeFileSync("Permit2.runtime.hex", "0x" + code.toString("hex") + "\n");
  ' "$TOOLS/npm/node_modules/js-sha3" "$PERMIT2_SLICE_KECCAK" "$PERMIT2_CODE_KECCAK"
  rm -rf package
)

echo "$WANT" > "$STAMP"
echo "toolchain ready in $TOOLS/bin: $("$TOOLS/bin/forge" --version | head -1)"
