// Credentials for web pages, against the dev stack (run by scripts/test-against-dev.sh): client
// tokens minted by a secret key for one signer, and publishable keys bound to web origins.
import assert from "node:assert/strict";
import { test } from "node:test";
import { getAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { StreamPayApiError, StreamPayClient, type RequestBody } from "@streampay/relayer-client";
import { viemSigner } from "@streampay/relayer-client/viem";
import { assertRelayed, client, contracts, env, ethBalance, mintTokens, publicClient, tokenBalance } from "./helpers.js";

const TOKEN = 10n ** 6n; // mUSDC has 6 decimals
const PAGE_ORIGIN = "http://127.0.0.1:18091";

async function freshWallet(tokens: bigint) {
  const account = privateKeyToAccount(generatePrivateKey());
  if (tokens > 0n) await mintTokens(account.address, tokens * TOKEN);
  return account;
}

async function expectApiError(promise: Promise<unknown>, status: number, code: string): Promise<StreamPayApiError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof StreamPayApiError, `expected a StreamPayApiError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.status, status);
    return e;
  }
  assert.fail(`expected ${status} ${code}, but the call succeeded`);
}

test("a client token minted with the dev key validates, and deposits for its signer without an API key", async () => {
  const user = await freshWallet(10n);
  const minted = await client.mintClientToken({ signer: user.address, operations: ["deposit"], expiresIn: 300 });
  assert.match(minted.Token, /^ct_/);
  assert.equal(minted.TokenType, "Bearer");
  assert.equal(minted.Signer, getAddress(user.address));
  assert.deepEqual(minted.Operations, ["deposit"]);
  assert.ok(minted.ExpiresIn > 290 && minted.ExpiresIn <= 300, `ExpiresIn ${minted.ExpiresIn}`);
  assert.ok(Date.parse(minted.ExpiresAt) > Date.now(), minted.ExpiresAt);

  const page = new StreamPayClient({ baseUrl: env.url, clientToken: minted.Token, contract: env.contract });
  const validated = await page.validateClientToken();
  assert.equal(validated.Valid, true);
  assert.equal(validated.Signer, minted.Signer);
  assert.deepEqual(validated.Operations, ["deposit"]);
  assert.equal(validated.ExpiresAt, minted.ExpiresAt);
  assert.ok(validated.ExpiresIn <= minted.ExpiresIn);

  const result = await page.deposit({ signer: viemSigner(user), amount: "3" });
  await assertRelayed(result, user.address);
  assert.equal((await client.balance(user.address)).Balance, "3");
  assert.equal(await tokenBalance(user.address), 7n * TOKEN);
  assert.equal(await ethBalance(user.address), 0n);

  // The token is for deposits only: no reads (not even of its own transaction), no other operation.
  await expectApiError(page.balance(user.address), 403, "operation_not_allowed");
  await expectApiError(page.transaction(result.transactionId), 403, "operation_not_allowed");
  await expectApiError(page.withdraw({ signer: viemSigner(user), amount: "1" }), 403, "operation_not_allowed");
  // A token cannot mint tokens; an API key is not a token.
  await expectApiError(page.mintClientToken({ signer: user.address }), 403, "operation_not_allowed");
  await expectApiError(client.validateClientToken(), 401, "invalid_client_token");
});

test("a client token for signer A is refused for signer B (signer_not_allowed), and nothing moves", async () => {
  const a = await freshWallet(5n);
  const b = await freshWallet(5n);
  // The signer may be given as a StreamPaySigner too.
  const minted = await client.mintClientToken({ signer: viemSigner(a), operations: ["deposit"] });
  assert.equal(minted.Signer, getAddress(a.address));
  const page = new StreamPayClient({ baseUrl: env.url, clientToken: minted.Token, contract: env.contract });
  await expectApiError(page.deposit({ signer: viemSigner(b), amount: "1" }), 403, "signer_not_allowed");
  assert.equal((await client.balance(b.address)).Balance, "0");
  assert.equal(await tokenBalance(b.address), 5n * TOKEN);
});

test("unusable client tokens are typed errors", async () => {
  const junk = new StreamPayClient({ baseUrl: env.url, clientToken: `ct_${"0".repeat(64)}`, contract: env.contract });
  await expectApiError(junk.validateClientToken(), 401, "invalid_client_token");
  await expectApiError(client.mintClientToken({ signer: privateKeyToAccount(generatePrivateKey()).address, expiresIn: 601 }), 400, "invalid_token_ttl");
});

test("a publishable key refuses a call without an Origin it lists, and works with one (Node may send Origin)", async () => {
  const body: RequestBody<"/api/v1/admin/keys", "post"> = {
    Name: "ts-client publishable test",
    Kind: "publishable",
    AllowedOrigins: [PAGE_ORIGIN],
    AllowedContracts: [env.contract],
    AllowedOperations: ["deposit"],
    RateLimitPerMinute: 100,
    SignerRateLimitPerMinute: 10,
    DailyBudget: "1",
    SignerDailyBudget: "0.5",
  };
  const created = await client.request<{ Key: string; Kind: string }>("POST", "/api/v1/admin/keys", { body });
  assert.equal(created.status, 201);
  assert.match(created.data.Key, /^pk_test_/);
  assert.equal(created.data.Kind, "publishable");

  const user = await freshWallet(5n);
  const signer = viemSigner(user);
  const noOrigin = new StreamPayClient({ baseUrl: env.url, apiKey: created.data.Key, contract: env.contract });
  await expectApiError(noOrigin.deposit({ signer, amount: "1" }), 403, "origin_not_allowed");
  const elsewhere = new StreamPayClient({ baseUrl: env.url, apiKey: created.data.Key, contract: env.contract, headers: { Origin: "http://127.0.0.1:18092" } });
  await expectApiError(elsewhere.deposit({ signer, amount: "1" }), 403, "origin_not_allowed");
  assert.equal((await client.balance(user.address)).Balance, "0");

  // A browser sends its page's Origin itself (and cannot fake it); Node can, so this works here.
  const asPage = new StreamPayClient({ baseUrl: env.url, apiKey: created.data.Key, contract: env.contract, headers: { Origin: PAGE_ORIGIN } });
  const result = await asPage.deposit({ signer, amount: "2" });
  // The transaction is the publishable key's (the dev key cannot look it up): check the chain.
  assert.equal(result.status, "mined");
  const receipt = await publicClient.getTransactionReceipt({ hash: result.transactionHash });
  assert.equal(receipt.status, "success");
  assert.equal(getAddress(receipt.from), getAddress(result.sponsor));
  assert.equal(receipt.to && getAddress(receipt.to), (await contracts()).streamPay);
  assert.equal(await tokenBalance(user.address), 3n * TOKEN);
  // A publishable key reads nothing, not even its own transaction (so it cannot follow a 202).
  await expectApiError(asPage.transaction(result.transactionId), 403, "insufficient_scope");
  assert.equal((await client.balance(user.address)).Balance, "2");
});
