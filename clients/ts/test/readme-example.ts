// Compile-time only (npm run typecheck): the README's dapp example, as written there, must
// type-check against the package's public entry points. Never run.
import { createWalletClient, custom, type EIP1193Provider } from "viem";
import { BrowserProvider } from "ethers";
import { StreamPayApiError, StreamPayClient } from "@streampay/relayer-client";
import { viemSigner } from "@streampay/relayer-client/viem";
import { ethersSigner } from "@streampay/relayer-client/ethers";

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}
declare const sleep: (ms: number) => Promise<void>;

export async function readmeExample(): Promise<void> {
  const [account] = await createWalletClient({ transport: custom(window.ethereum!) }).requestAddresses();
  const signer = viemSigner(createWalletClient({ account, transport: custom(window.ethereum!) }));
  const client = new StreamPayClient({ baseUrl: "https://relayer.example", apiKey: "sk_test_…", contract: "USDC" });

  const deposit = await client.deposit({ signer, amount: "100" }); // call + EIP-2612 permit: 2 signatures, no gas
  const sub = await client.subscribe({ signer, author: "0xAuthor…", monthlyRate: "9.99" }); // per 30-day month
  console.log(deposit.transactionHash, sub.built.RatePerSecond);
  console.log((await client.balance(account!)).Balance); // live balance, an exact decimal string

  const ethers = ethersSigner(await new BrowserProvider(window.ethereum!).getSigner());
  const to = "0xPayee…";
  try {
    await client.pay({ signer: ethers, to, amount: "5" });
  } catch (e) {
    if (e instanceof StreamPayApiError && e.code === "rate_limited") await sleep(e.retryAfter! * 1000);
    else throw e;
  }
}
