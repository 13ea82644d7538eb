import { TypedDataEncoder, type Signer, type TypedDataDomain, type TypedDataField as EthersField } from "ethers";
import { withoutDomainType, type Hex, type StreamPaySigner, type TypedDataDocument } from "../signer.js";

/**
 * An ethers v6 signer (`Wallet`, `JsonRpcSigner` from `BrowserProvider.getSigner()`, ...).
 * ethers takes `types` without `EIP712Domain` and works out the primary type itself; uint256
 * values stay the relayer's exact decimal strings.
 */
export function ethersSigner(signer: Signer): StreamPaySigner {
  return {
    getAddress: () => signer.getAddress(),
    signTypedData: async (document: TypedDataDocument): Promise<Hex> => {
      const types: Record<string, EthersField[]> = withoutDomainType(document.types);
      const primaryType = TypedDataEncoder.from(types).primaryType;
      if (primaryType !== document.primaryType) {
        throw new TypeError(`ethersSigner: ethers would sign ${primaryType}, the document is a ${document.primaryType}`);
      }
      const signature = await signer.signTypedData(
        document.domain as TypedDataDomain,
        types,
        document.message,
      );
      return signature as Hex;
    },
  };
}
