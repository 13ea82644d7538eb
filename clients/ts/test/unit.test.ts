// Tests of the pieces that need no relayer: the signer adapters agree with each other and with the
// EIP-712 digest, Retry-After parsing, and how answers outside the OpenAPI document are reported.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Wallet } from "ethers";
import { hashTypedData, recoverTypedDataAddress } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
  StreamPayApiError,
  StreamPayClient,
  StreamPayProtocolError,
  parseRetryAfter,
  withBigIntegers,
  withoutDomainType,
  type TypedDataDocument,
} from "@streampay/relayer-client";
import { viemSigner } from "@streampay/relayer-client/viem";
import { ethersSigner } from "@streampay/relayer-client/ethers";

// A SignedCall document exactly as the relayer builds it (uint256 as decimal strings).
const signedCall = (signer: string): TypedDataDocument => ({
  domain: { chainId: 31337, name: "StreamPay", verifyingContract: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", version: "1" },
  message: {
    data: "0x9a4083210000000000000000000000000000000000000000000000000000000005f5e1000000000000000000000000000000000000000000000000000000000000000000",
    signer,
    traits: "57896783557744248464265299035828154003605366446308381056392068649954522265665",
  },
  primaryType: "SignedCall",
  types: {
    EIP712Domain: [
      { name: "name", type: "string" },
      { name: "version", type: "string" },
      { name: "chainId", type: "uint256" },
      { name: "verifyingContract", type: "address" },
    ],
    SignedCall: [
      { name: "signer", type: "address" },
      { name: "traits", type: "uint256" },
      { name: "data", type: "bytes" },
    ],
  },
});

const KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";

test("viem and ethers adapters sign a relayer document identically, over its EIP-712 digest", async () => {
  const account = privateKeyToAccount(KEY);
  const doc = signedCall(account.address);
  const byViem = await viemSigner(account).signTypedData(doc);
  const byEthers = await ethersSigner(new Wallet(KEY)).signTypedData(doc);
  assert.equal(byViem, byEthers);
  const typed = withBigIntegers(doc) as Parameters<typeof hashTypedData>[0];
  assert.equal(await recoverTypedDataAddress({ ...typed, signature: byViem } as never), account.address);
  // The document is not modified by signing.
  assert.equal(doc.message["traits"], "57896783557744248464265299035828154003605366446308381056392068649954522265665");
});

test("withBigIntegers converts exactly the integer fields; withoutDomainType drops EIP712Domain only", () => {
  const doc = withBigIntegers(signedCall("0x891a063Ad708F4F2Ef86e09e75f3cA374F24D657"));
  assert.equal(doc.message["traits"], 57896783557744248464265299035828154003605366446308381056392068649954522265665n);
  assert.equal(doc.message["signer"], "0x891a063Ad708F4F2Ef86e09e75f3cA374F24D657");
  assert.equal(typeof doc.message["data"], "string");
  assert.equal(doc.domain["chainId"], 31337n);
  assert.deepEqual(Object.keys(withoutDomainType(doc.types)), ["SignedCall"]);
  assert.throws(() => withBigIntegers({ ...doc, message: { ...doc.message, traits: "1.5" } }), TypeError);
});

test("parseRetryAfter takes delta-seconds and HTTP dates", () => {
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("7"), 7);
  assert.equal(parseRetryAfter(" 0 "), 0);
  const now = Date.parse("2026-12-03T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 03 Dec 2026 00:00:30 GMT", now), 30);
  assert.equal(parseRetryAfter("Wed, 02 Dec 2026 00:00:30 GMT", now), 0);
  assert.equal(parseRetryAfter("soon"), undefined);
});

test("answers outside the OpenAPI document are StreamPayProtocolError, documented ones StreamPayApiError", async () => {
  const answering = (status: number, body: string, headers: Record<string, string> = {}) =>
    new StreamPayClient({
      baseUrl: "http://relayer.invalid",
      apiKey: "sk_test_x",
      contract: "USDC",
      fetch: async () => new Response(body, { status, headers: { "Content-Type": "application/json", ...headers } }),
    });
  const addr = "0x891a063Ad708F4F2Ef86e09e75f3cA374F24D657";

  const unknown = await answering(418, '{"error":{"code":"teapot","message":"short and stout"}}').balance(addr).catch((e) => e);
  assert.ok(unknown instanceof StreamPayProtocolError);
  assert.equal(unknown.rawCode, "teapot");
  assert.equal(unknown.status, 418);

  const html = await answering(502, "<html>bad gateway</html>").balance(addr).catch((e) => e);
  assert.ok(html instanceof StreamPayProtocolError);
  assert.equal(html.rawCode, undefined);

  const busy = await answering(503, '{"error":{"code":"server_busy","message":"busy"}}', { "Retry-After": "1" })
    .balance(addr)
    .catch((e) => e);
  assert.ok(busy instanceof StreamPayApiError);
  assert.equal(busy.code, "server_busy");
  assert.equal(busy.retryAfter, 1);
});

test("exactly one credential: an API key goes in X-API-Key, a client token in Authorization: Bearer", async () => {
  const seen: Headers[] = [];
  const recording: typeof fetch = async (_url, init) => {
    seen.push(new Headers(init?.headers));
    return new Response('{"Address":"0x0","Balance":"0"}', { status: 200, headers: { "Content-Type": "application/json" } });
  };
  const base = { baseUrl: "http://relayer.invalid", contract: "USDC", fetch: recording };
  const addr = "0x891a063Ad708F4F2Ef86e09e75f3cA374F24D657";

  await new StreamPayClient({ ...base, apiKey: "pk_test_abc" }).balance(addr);
  await new StreamPayClient({ ...base, clientToken: "ct_abc", headers: { "X-Extra": "1" } }).balance(addr);
  assert.equal(seen[0]?.get("X-API-Key"), "pk_test_abc");
  assert.equal(seen[1]?.get("Authorization"), "Bearer ct_abc");
  assert.equal(seen[1]?.get("X-API-Key"), null);
  assert.equal(seen[1]?.get("X-Extra"), "1");

  // Neither, both, or one in the other's place: refused before any request.
  assert.throws(() => new StreamPayClient({ ...base } as never), /apiKey or clientToken is required/);
  assert.throws(() => new StreamPayClient({ ...base, apiKey: "", clientToken: "" } as never), TypeError);
  assert.throws(() => new StreamPayClient({ ...base, apiKey: "sk_test_x", clientToken: "ct_x" } as never), /not both/);
  assert.throws(() => new StreamPayClient({ ...base, apiKey: "ct_x" }), /clientToken, not an apiKey/);
  assert.throws(() => new StreamPayClient({ ...base, clientToken: "sk_test_x" }), /apiKey, not a clientToken/);
  assert.equal(seen.length, 2);
});

test("authorEventsUrl and creatorPageUrl name the public creator routes, path segments encoded", () => {
  const c = new StreamPayClient({ baseUrl: "http://relayer.example:8080/", apiKey: "sk_test_x", contract: "USDC" });
  const author = "0x51F32cC8eC992E0f66576217Af64d49cc36F1f98";
  assert.equal(c.authorEventsUrl(author), `http://relayer.example:8080/api/v1/USDC/authors/${author}/events`);
  assert.equal(c.creatorPageUrl(author), `http://relayer.example:8080/creators/USDC/${author}`);
  assert.equal(c.authorEventsUrl("a/b"), "http://relayer.example:8080/api/v1/USDC/authors/a%2Fb/events");
});
