// End-to-end tests of the client against a real dev stack: a real relayer, Anvil and Postgres,
// real signatures from viem and ethers. Run by scripts/test-against-dev.sh.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Wallet } from "ethers";
import { createWalletClient, formatUnits, getAddress, http, parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { PERMIT2, StreamPayApiError, StreamPayClient, asTypedDataDocument, type StreamPaySigner } from "@streampay/relayer-client";
import { viemSigner } from "@streampay/relayer-client/viem";
import { ethersSigner } from "@streampay/relayer-client/ethers";
import {
  assertRelayed,
  blockTime,
  chain,
  client,
  contracts,
  env,
  ethBalance,
  mintTokens,
  publicClient,
  testClient,
  tokenBalance,
} from "./helpers.js";

const TOKEN = 10n ** 6n; // mUSDC has 6 decimals
const INTERNAL = 10n ** 18n; // StreamPay balances are 18-decimal

/** A fresh wallet (viem account) holding `tokens` whole mUSDC and no ETH. */
async function freshViemWallet(tokens: bigint) {
  const account = privateKeyToAccount(generatePrivateKey());
  if (tokens > 0n) await mintTokens(account.address, tokens * TOKEN);
  return account;
}

const randomAddress = (): string => privateKeyToAccount(generatePrivateKey()).address;

async function balanceOf(address: string): Promise<string> {
  const view = await client.balance(address);
  assert.equal(getAddress(view.Address), getAddress(address));
  assert.equal(view.Decimals, 18);
  // Balance is BalanceRaw in token units, exactly.
  assert.equal(view.Balance, formatUnits(BigInt(view.BalanceRaw), 18));
  return view.Balance;
}

async function expectApiError(promise: Promise<unknown>, status: number, code: string): Promise<StreamPayApiError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof StreamPayApiError, `expected a StreamPayApiError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.status, status);
    assert.ok(e.message.length > 0);
    return e;
  }
  assert.fail(`expected ${status} ${code}, but the call succeeded`);
}

test("gasless deposit with an EIP-2612 permit, signed by viem (the demo wallet)", async () => {
  const account = privateKeyToAccount(env.demoKey);
  const signer = viemSigner(account);
  const before = await client.balance(account.address);
  const tokensBefore = await tokenBalance(account.address);
  assert.ok(tokensBefore >= 100n * TOKEN, "the demo wallet holds at least 100 mUSDC");
  assert.equal(await ethBalance(account.address), 0n, "the demo wallet holds no ETH");

  const result = await client.deposit({ signer, amount: "100" });

  await assertRelayed(result, account.address);
  assert.equal(result.built.Amount, "100");
  assert.equal(result.built.AmountRaw, "100000000");
  assert.ok(result.built.Transaction.PermitTypedData, "a deposit comes with a permit");
  const expected = BigInt(before.BalanceRaw) + 100n * INTERNAL;
  assert.equal(await balanceOf(account.address), formatUnits(expected, 18));
  if (before.BalanceRaw === "0") assert.equal(await balanceOf(account.address), "100");
  assert.equal(await tokenBalance(account.address), tokensBefore - 100n * TOKEN);
  assert.equal(await ethBalance(account.address), 0n, "still no ETH: the sponsor paid the gas");
});

test("gasless deposit with an EIP-2612 permit, signed by ethers", async () => {
  const wallet = Wallet.createRandom();
  await mintTokens(wallet.address, 50n * TOKEN);
  const signer = ethersSigner(wallet);

  const result = await client.deposit({ signer, amount: "12.345678" });

  await assertRelayed(result, wallet.address);
  assert.equal(result.built.AmountRaw, "12345678");
  assert.equal(await balanceOf(wallet.address), "12.345678");
  assert.equal(await tokenBalance(wallet.address), 37_654_322n);
  assert.equal(await ethBalance(wallet.address), 0n);
});

test("gasless deposit through Permit2 (the dev chain has it), after the owner's one approval, signed by ethers", async () => {
  const wallet = Wallet.createRandom();
  await mintTokens(wallet.address, 10n * TOKEN);
  // The one on-chain step of the owner: approve Permit2 on the token, paying its own gas.
  await testClient.setBalance({ address: getAddress(wallet.address), value: 10n ** 18n });
  const owner = createWalletClient({ chain, transport: http(env.rpcUrl), account: privateKeyToAccount(wallet.privateKey as `0x${string}`) });
  const { token } = await contracts();
  const approval = await owner.writeContract({
    address: token,
    abi: parseAbi(["function approve(address spender, uint256 amount) returns (bool)"]),
    functionName: "approve",
    args: [PERMIT2, 10n * TOKEN],
  });
  assert.equal((await publicClient.waitForTransactionReceipt({ hash: approval, timeout: 30_000 })).status, "success");
  const gasMoney = await ethBalance(wallet.address);

  const meta = (await (await fetch(`${env.url}/api/v1/meta`)).json()) as { Capabilities: string[] };
  assert.ok(meta.Capabilities.includes("permit2_deposit"), `Capabilities: ${meta.Capabilities.join(", ")}`);
  const result = await client.deposit({ signer: ethersSigner(wallet), amount: "4.5", permit2: true });

  await assertRelayed(result, wallet.address);
  assert.equal(result.built.IsPermit2, true);
  assert.equal((result.built.Transaction.PermitTypedData as { primaryType?: string }).primaryType, "PermitSingle");
  assert.equal(await balanceOf(wallet.address), "4.5");
  assert.equal(await tokenBalance(wallet.address), 5_500_000n);
  assert.equal(await ethBalance(wallet.address), gasMoney, "the deposit itself cost the owner no gas");
});

test("a one-off payment and a batch payment move exact amounts", async () => {
  const payer = await freshViemWallet(20n);
  const signer = viemSigner(payer);
  await assertRelayed(await client.deposit({ signer, amount: "10" }), payer.address);
  const [d, e, f] = [randomAddress(), randomAddress(), randomAddress()];

  const paid = await client.pay({ signer, to: d, amount: "2.5" });
  await assertRelayed(paid, payer.address);
  assert.equal(paid.built.Amount, "2.5");
  assert.equal(await balanceOf(payer.address), "7.5");
  assert.equal(await balanceOf(d), "2.5");

  const batch = await client.batchPay({
    signer,
    payments: [
      { to: d, amount: "0.5" },
      { to: e, amount: "1" },
      { to: f, amount: "0.000000000000000001" }, // one internal base unit
    ],
  });
  await assertRelayed(batch, payer.address);
  assert.equal(batch.built.Total, "1.500000000000000001");
  assert.deepEqual(
    batch.built.Payments?.map((p) => [getAddress(p.To), p.Amount]),
    [
      [getAddress(d), "0.5"],
      [getAddress(e), "1"],
      [getAddress(f), "0.000000000000000001"],
    ],
  );
  assert.equal(await balanceOf(payer.address), "5.999999999999999999");
  assert.equal(await balanceOf(d), "3");
  assert.equal(await balanceOf(e), "1");
  assert.equal(await balanceOf(f), "0.000000000000000001");
  assert.equal(await ethBalance(payer.address), 0n);
});

test("withdraw to the signer and to another address", async () => {
  const owner = await freshViemWallet(20n);
  const signer = viemSigner(owner);
  await assertRelayed(await client.deposit({ signer, amount: "10" }), owner.address);
  assert.equal(await tokenBalance(owner.address), 10n * TOKEN);

  const own = await client.withdraw({ signer, amount: "1.5" });
  await assertRelayed(own, owner.address);
  assert.equal(await balanceOf(owner.address), "8.5");
  assert.equal(await tokenBalance(owner.address), 11_500_000n);

  const receiver = randomAddress();
  const other = await client.withdraw({ signer, amount: "0.25", to: receiver });
  await assertRelayed(other, owner.address);
  assert.equal(getAddress(other.built.To ?? ""), getAddress(receiver));
  assert.equal(await balanceOf(owner.address), "8.25");
  assert.equal(await tokenBalance(receiver), 250_000n);
  assert.equal(await tokenBalance(owner.address), 11_500_000n);
});

test("subscribe, stream, unsubscribe (signed through a viem WalletClient); balances follow the chain's clock exactly", async () => {
  const subscriber = await freshViemWallet(100n);
  const walletClient = createWalletClient({ account: subscriber, chain, transport: http(env.rpcUrl) });
  const signer: StreamPaySigner = viemSigner(walletClient);
  const author = randomAddress();
  await assertRelayed(await client.deposit({ signer, amount: "100" }), subscriber.address);

  const sub = await client.subscribe({ signer, author, monthlyRate: "30" });
  await assertRelayed(sub, subscriber.address);
  // 30 tokens per 30-day month, in 18-decimal base units per second, rounded down.
  const perSecond = (30n * INTERNAL) / (30n * 24n * 3600n);
  assert.equal(sub.built.RatePerSecond, perSecond.toString());
  assert.equal(getAddress(sub.built.Author ?? ""), getAddress(author));

  const listed = await client.subscriptions(subscriber.address);
  assert.equal(listed.Subscriptions.length, 1);
  const stream = listed.Subscriptions[0]!;
  assert.equal(getAddress(stream.To), getAddress(author));
  assert.equal(stream.OutgoingRate, perSecond.toString());
  assert.equal(stream.ProjectId, "0");
  const income = BigInt(stream.IncomeRate);
  assert.ok(income > 0n && income <= perSecond);

  // Let the stream run for at least 100 s of chain time.
  await testClient.increaseTime({ seconds: 100 });
  const unsub = await client.unsubscribe({ signer, author });
  await assertRelayed(unsub, subscriber.address);
  assert.equal((await client.subscriptions(subscriber.address)).Subscriptions.length, 0);

  const elapsed = (await blockTime(unsub)) - (await blockTime(sub));
  assert.ok(elapsed >= 100n, `the stream ran ${elapsed} s`);
  assert.equal(await balanceOf(subscriber.address), formatUnits(100n * INTERNAL - perSecond * elapsed, 18));
  assert.equal(await balanceOf(author), formatUnits(income * elapsed, 18));

  // Every call above used the default unique nonces: the ordered account nonce never moved.
  const nonce = await client.nonce(subscriber.address);
  assert.equal(getAddress(nonce.Account), getAddress(subscriber.address));
  assert.equal(nonce.Nonce, 0);
  assert.ok(BigInt(nonce.Block) >= BigInt(unsub.blockNumber ?? 0));
  assert.equal(await ethBalance(subscriber.address), 0n);
});

test("low-level build, sign and execute with Prefer: respond-async (202), then waitForTransaction", async () => {
  const owner = await freshViemWallet(5n);
  const signer = viemSigner(owner);
  await assertRelayed(await client.deposit({ signer, amount: "5" }), owner.address);

  const built = await client.buildWithdraw({ From: owner.address, Amount: "2" });
  assert.equal(built.Amount, "2");
  assert.equal(built.TokenAmountRaw, "2000000");
  const tx = built.Transaction;
  const signature = await signer.signTypedData(asTypedDataDocument(tx.TypedData, "TypedData"));
  const accepted = await client.execute(
    {
      From: tx.From,
      Signature: signature,
      Data: tx.Data,
      Nonce: String(tx.Nonce),
      Deadline: String(tx.Deadline),
      Traits: tx.Traits,
      NonceType: tx.NonceType,
      Sponsor: built.Sponsor,
    },
    { async: true },
  );
  assert.ok("Status" in accepted, "a 202 ExecuteAccepted answer");
  assert.equal(accepted.Status, `/api/v1/transactions/${accepted.TransactionId}`);
  assert.match(accepted.TransactionHash, /^0x[0-9a-f]{64}$/);

  const view = await client.waitForTransaction(accepted.TransactionId, { timeoutMs: 60_000, intervalMs: 200 });
  assert.equal(view.Status, "mined");
  assert.equal(view.TransactionHash, accepted.TransactionHash);
  const receipt = await publicClient.getTransactionReceipt({ hash: accepted.TransactionHash as `0x${string}` });
  assert.equal(receipt.status, "success");
  assert.equal(await balanceOf(owner.address), "3");
  assert.equal(await tokenBalance(owner.address), 2_000_000n);
});

test("typed errors: a malformed amount is 400 invalid_amount, one the token cannot hold 422 amount_out_of_range; nothing is signed", async () => {
  let signed = 0;
  const base = viemSigner(privateKeyToAccount(env.demoKey));
  const counting: StreamPaySigner = {
    getAddress: () => base.getAddress(),
    signTypedData: (doc) => {
      signed++;
      return base.signTypedData(doc);
    },
  };
  await expectApiError(client.deposit({ signer: counting, amount: "1.2345678" }), 422, "amount_out_of_range"); // 7 decimals
  await expectApiError(client.deposit({ signer: counting, amount: "abc" }), 400, "invalid_amount");
  await expectApiError(client.pay({ signer: counting, to: randomAddress(), amount: "-1" }), 400, "invalid_amount");
  assert.equal(signed, 0);
  // A number is refused before any request: it could not carry an exact amount.
  await assert.rejects(client.deposit({ signer: counting, amount: 100 as unknown as string }), TypeError);
});

test("typed errors: a wrong API key is 401 invalid_api_key", async () => {
  const wrong = new StreamPayClient({ baseUrl: env.url, apiKey: `sk_test_${"0".repeat(64)}`, contract: env.contract });
  const e = await expectApiError(wrong.balance(randomAddress()), 401, "invalid_api_key");
  assert.equal(e.retryAfter, undefined);
  assert.ok(e.requestId, "the answer's X-Request-Id");
  assert.match(e.request, /^GET \/api\/v1\/.+\/payments\/balance\/0x/);
});

test("typed errors: an unknown contract is 404 unknown_contract", async () => {
  const other = new StreamPayClient({ baseUrl: env.url, apiKey: env.apiKey, contract: "NO_SUCH_CONTRACT" });
  await expectApiError(other.balance(randomAddress()), 404, "unknown_contract");
});

test("typed errors: a signature by another key is 422 signature_mismatch", async () => {
  const owner = privateKeyToAccount(env.demoKey);
  const impostor = viemSigner(privateKeyToAccount(generatePrivateKey()));
  const built = await client.buildPay({ From: owner.address, To: randomAddress(), Amount: "1" });
  const signature = await impostor.signTypedData(built.Transaction.TypedData as never);
  const tx = built.Transaction;
  await expectApiError(
    client.execute({
      From: tx.From,
      Signature: signature,
      Data: tx.Data,
      Nonce: String(tx.Nonce),
      Deadline: String(tx.Deadline),
      Traits: tx.Traits,
      NonceType: tx.NonceType,
      Sponsor: built.Sponsor,
    }),
    422,
    "signature_mismatch",
  );
});

test("typed errors: a rate-limited key is 429 rate_limited with retryAfter", async () => {
  // A key of its own with 1 request per minute, made through the admin API.
  const res = await fetch(`${env.url}/api/v1/admin/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env.adminToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ Name: "ts-client rate limit test", Scopes: ["read"], RateLimitPerMinute: 1 }),
    signal: AbortSignal.timeout(30_000),
  });
  assert.equal(res.status, 201, await res.clone().text());
  const { Key } = (await res.json()) as { Key: string };
  const limited = new StreamPayClient({ baseUrl: env.url, apiKey: Key, contract: env.contract });
  const address = randomAddress();
  assert.equal((await limited.balance(address)).Balance, "0");
  const e = await expectApiError(limited.balance(address), 429, "rate_limited");
  assert.ok(e.retryAfter !== undefined && e.retryAfter >= 1 && e.retryAfter <= 60, `retryAfter ${e.retryAfter}`);
});
