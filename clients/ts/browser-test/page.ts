// The page of the browser test (run.ts bundles it with esbuild into one script, served with
// index.html): a dapp's gasless deposit with the TypeScript client, in a real browser.
//
// Everything it needs comes in the URL fragment (never sent to any server):
//   #api=<relayer URL>&contract=USDC&amount=2&wallet=<0x private key>&apiKey=<pk_…> (or &clientToken=<ct_…>)
// The wallet is an in-page test wallet (viem's privateKeyToAccount). The outcome is written to
// window.__result and, as text, to <output id="result">:
//   { ok: true, transactionHash, status, from, sponsor, amount } or { ok: false, name, message, code? }.
import { StreamPayApiError, StreamPayClient, type StreamPayClientOptions } from "@streampay/relayer-client";
import { viemSigner } from "@streampay/relayer-client/viem";
import { privateKeyToAccount } from "viem/accounts";

export type PageResult =
  | { ok: true; transactionHash: string; status: string; from: string; sponsor: string; amount: string }
  | { ok: false; name: string; message: string; code?: string; status?: number };

declare global {
  interface Window {
    __result?: PageResult;
  }
}

function finish(result: PageResult): void {
  window.__result = result;
  const out = document.getElementById("result");
  if (out) {
    out.textContent = result.ok
      ? `deposited ${result.amount}: ${result.status} ${result.transactionHash}`
      : `failed: ${result.name}${result.code ? ` ${result.code}` : ""}: ${result.message}`;
    out.dataset["state"] = result.ok ? "ok" : "error";
  }
}

async function main(): Promise<PageResult> {
  const params = new URLSearchParams(location.hash.slice(1));
  const need = (name: string): string => {
    const value = params.get(name);
    if (!value) throw new Error(`the URL fragment has no ${name}`);
    return value;
  };
  const baseUrl = need("api");
  const contract = need("contract");
  const amount = need("amount");
  const account = privateKeyToAccount(need("wallet") as `0x${string}`);
  const apiKey = params.get("apiKey");
  const clientToken = params.get("clientToken");
  const credential: StreamPayClientOptions = clientToken
    ? { baseUrl, contract, clientToken, timeoutMs: 45_000 }
    : { baseUrl, contract, apiKey: apiKey ?? "", timeoutMs: 45_000 };
  const client = new StreamPayClient(credential);
  const done = await client.deposit({ signer: viemSigner(account), amount, waitTimeoutMs: 45_000 });
  return {
    ok: true,
    transactionHash: done.transactionHash,
    status: done.status,
    from: done.from,
    sponsor: done.sponsor,
    amount: done.built.Amount ?? amount,
  };
}

main().then(finish, (e: unknown) => {
  if (e instanceof StreamPayApiError) {
    finish({ ok: false, name: e.name, message: e.message, code: e.code, status: e.status });
  } else if (e instanceof Error) {
    finish({ ok: false, name: e.name, message: e.message });
  } else {
    finish({ ok: false, name: typeof e, message: String(e) });
  }
});
