// Compile-time only (npm run typecheck): the README's "In a web page" examples, as written there,
// must type-check against the package's public entry points. Never run.
import { StreamPayClient, type StreamPaySigner } from "@streampay/relayer-client";

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
