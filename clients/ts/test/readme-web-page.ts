// Compile-time only (npm run typecheck): the README's "In a web page" examples, as written there,
// must type-check against the package's public entry points. Never run.
import { StreamPayClient, type CreatorSnapshot, type StreamPaySigner } from "@streampay/relayer-client";

declare const signer: StreamPaySigner;
declare const userAddress: string;

export async function publishableKey(): Promise<void> {
  const client = new StreamPayClient({ baseUrl: "https://relayer.example", apiKey: "pk_live_…", contract: "USDC" });
  await client.deposit({ signer, amount: "2" });
}

export async function dappServer(): Promise<{ token: string; expiresAt: string }> {
  const relayer = new StreamPayClient({ baseUrl: "https://relayer.example", apiKey: process.env.STREAMPAY_KEY!, contract: "USDC" });
  const { Token, ExpiresAt } = await relayer.mintClientToken({ signer: userAddress, operations: ["deposit"], expiresIn: 600 });
  return { token: Token, expiresAt: ExpiresAt };
}

export async function page(): Promise<void> {
  const { token } = await (await fetch("/streampay-token", { method: "POST" })).json();
  const client = new StreamPayClient({ baseUrl: "https://relayer.example", clientToken: token, contract: "USDC" });
  await client.validateClientToken(); // { Valid, Signer, Operations, ExpiresAt, ExpiresIn }; spends nothing
  await client.deposit({ signer, amount: "2" });
}

// The README's creator example ("What the client does").
export function creatorEvents(client: StreamPayClient, author: string, show: (balance: bigint) => void): EventSource {
  const source = new EventSource(client.authorEventsUrl(author));
  source.addEventListener("snapshot", (e) => {
    const s: CreatorSnapshot = JSON.parse(e.data);
    const elapsed = BigInt(Math.floor(Date.now() / 1000)) - BigInt(s.BlockTimestamp);
    const balance = BigInt(s.SignedBalanceRaw) + BigInt(s.NetRate) * (elapsed > 0n ? elapsed : 0n);
    show(balance > 0n ? balance : 0n);
  });
  return source;
}
