// Shared set-up of the tests against a running dev stack (scripts/test-against-dev.sh starts it
// and sets the variables below).
import assert from "node:assert/strict";
import {
  createPublicClient,
  createTestClient,
  createWalletClient,
  getAddress,
  hashTypedData,
  http,
  parseAbi,
  type Address,
  type Hash,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";
import { StreamPayClient, asTypedDataDocument, withBigIntegers, type RelayResult } from "@streampay/relayer-client";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests with scripts/test-against-dev.sh (it starts the dev stack)`);
  }
  return value.trim();
}

export const env = {
  url: required("STREAMPAY_URL"),
  apiKey: required("STREAMPAY_API_KEY"),
  adminToken: required("STREAMPAY_ADMIN_TOKEN"),
  rpcUrl: required("STREAMPAY_RPC_URL"),
  demoKey: required("STREAMPAY_DEMO_KEY") as `0x${string}`,
  contract: process.env.STREAMPAY_CONTRACT || "USDC",
};

export const client = new StreamPayClient({ baseUrl: env.url, apiKey: env.apiKey, contract: env.contract });

export const chain = { ...foundry, rpcUrls: { default: { http: [env.rpcUrl] } } } as const;
export const publicClient = createPublicClient({ chain, transport: http(env.rpcUrl) });
export const testClient = createTestClient({ chain, mode: "anvil", transport: http(env.rpcUrl) });

/** Anvil's well-known dev account #3 (public test mnemonic): mints test tokens, never a sponsor. */
const faucet = createWalletClient({
  chain,
  transport: http(env.rpcUrl),
  account: privateKeyToAccount("0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"),
});

const streamPayAbi = parseAbi(["function token() view returns (address)"]);
const tokenAbi = parseAbi([
  "function mint(address to, uint256 amount)",
  "function balanceOf(address account) view returns (uint256)",
]);

let deployment: Promise<{ streamPay: Address; token: Address }> | undefined;

/** The StreamPay contract the relayer serves under `env.contract`, and its token. */
export function contracts(): Promise<{ streamPay: Address; token: Address }> {
  deployment ??= (async () => {
    const list = await client.contracts();
    const entry = list.find((c) => c.Name.toLowerCase() === env.contract.toLowerCase());
    assert.ok(entry, `the relayer serves no contract ${env.contract}`);
    const streamPay = getAddress(entry.Address);
    const token = await publicClient.readContract({ address: streamPay, abi: streamPayAbi, functionName: "token" });
    return { streamPay, token };
  })();
  return deployment;
}

/** Mints `baseUnits` of the test token to `to` (from the faucet account, not the user). */
export async function mintTokens(to: string, baseUnits: bigint): Promise<void> {
  const { token } = await contracts();
  const hash = await faucet.writeContract({ address: token, abi: tokenAbi, functionName: "mint", args: [getAddress(to), baseUnits] });
  const receipt = await publicClient.waitForTransactionReceipt({ hash, timeout: 30_000 });
  assert.equal(receipt.status, "success");
}

/** The token balance held by `owner` on chain (base units). */
export async function tokenBalance(owner: string): Promise<bigint> {
  const { token } = await contracts();
  return publicClient.readContract({ address: token, abi: tokenAbi, functionName: "balanceOf", args: [getAddress(owner)] });
}

export async function ethBalance(owner: string): Promise<bigint> {
  return publicClient.getBalance({ address: getAddress(owner) });
}

/**
 * Checks what a high-level call answered against the relayer's transaction record and the chain
 * itself: the hash is the sponsor's mined, successful transaction to StreamPay, in the block the
 * relayer reported, and the relayer calls it mined (so its reads already reflect it).
 */
export async function assertRelayed(result: RelayResult, signer: string): Promise<void> {
  assert.match(result.transactionHash, /^0x[0-9a-f]{64}$/);
  assert.equal(result.status, "mined");
  assert.equal(getAddress(result.from), getAddress(signer));
  assert.ok(Number.isSafeInteger(result.transactionId) && result.transactionId > 0, "a transaction id");
  // What was signed hashes to the digest the relayer announced.
  const signed = withBigIntegers(asTypedDataDocument(result.built.Transaction.TypedData, "TypedData"));
  assert.equal(hashTypedData(signed as Parameters<typeof hashTypedData>[0]), result.built.Transaction.Digest);

  const view = await client.transaction(result.transactionId);
  assert.equal(view.Status, "mined");
  assert.equal(view.TransactionHash, result.transactionHash);
  assert.equal(view.Indexed, true);
  assert.ok(view.Hashes.includes(result.transactionHash));
  assert.equal(getAddress(view.Sponsor), getAddress(result.sponsor));

  const { streamPay } = await contracts();
  const receipt = await publicClient.getTransactionReceipt({ hash: result.transactionHash as Hash });
  assert.equal(receipt.status, "success");
  assert.equal(getAddress(receipt.from), getAddress(result.sponsor), "the sponsor sent it");
  assert.equal(receipt.to && getAddress(receipt.to), streamPay);
  assert.equal(receipt.blockNumber, BigInt(result.blockNumber ?? -1));
  assert.equal(BigInt(view.BlockNumber ?? -1), receipt.blockNumber);
  assert.ok(result.gasUsed !== null && BigInt(result.gasUsed) === receipt.gasUsed, "gas used as mined");
}

/** The timestamp of the block that mined `result`. */
export async function blockTime(result: RelayResult): Promise<bigint> {
  const block = await publicClient.getBlock({ blockNumber: BigInt(result.blockNumber ?? -1) });
  return block.timestamp;
}
