import type { Account, LocalAccount, WalletClient } from "viem";
import { withBigIntegers, type Hex, type StreamPaySigner, type TypedDataDocument } from "../signer.js";

/**
 * A viem signer: a `LocalAccount` (`privateKeyToAccount`, `mnemonicToAccount`, ...) signs
 * locally; a `WalletClient` signs with its account (for a JSON-RPC account such as an injected
 * browser wallet, through `eth_signTypedData_v4`). `account` picks another account of the
 * client than its own.
 */
export function viemSigner(source: LocalAccount | WalletClient, account?: Account): StreamPaySigner {
  if (isWalletClient(source)) {
    const client = source;
    const signer = account ?? client.account;
    if (!signer) throw new TypeError("viemSigner: the wallet client has no account; pass one");
    return {
      getAddress: async () => signer.address,
      signTypedData: (document: TypedDataDocument): Promise<Hex> =>
        // The document is only known at run time, so viem's compile-time typed-data checks
        // cannot apply; viem validates it at run time.
        client.signTypedData({ account: signer, ...(withBigIntegers(document) as any) }),
    };
  }
  const local = source;
  if (typeof local.signTypedData !== "function") {
    throw new TypeError("viemSigner: this account cannot sign typed data locally; pass a WalletClient");
  }
  return {
    getAddress: async () => local.address,
    signTypedData: (document: TypedDataDocument): Promise<Hex> => local.signTypedData(withBigIntegers(document) as any),
  };
}

function isWalletClient(value: LocalAccount | WalletClient): value is WalletClient {
  return typeof (value as WalletClient).request === "function" && typeof (value as WalletClient).extend === "function";
}
