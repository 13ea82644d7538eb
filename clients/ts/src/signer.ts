/** One field of an EIP-712 struct type. */
export interface TypedDataField {
  name: string;
  type: string;
}

/**
 * An `eth_signTypedData_v4` document as the relayer answers it: `types` includes
 * `EIP712Domain`, `primaryType` names the struct that `message` is. uint256 values come as
 * decimal strings or JSON numbers.
 */
export interface TypedDataDocument {
  domain: Record<string, unknown>;
  types: Record<string, TypedDataField[]>;
  primaryType: string;
  message: Record<string, unknown>;
}

/** A 0x-prefixed hex string. */
export type Hex = `0x${string}`;

/**
 * What the client needs from a wallet: its address, and an EIP-712 signature over a typed-data
 * document. `@streampay/relayer-client/viem` and `@streampay/relayer-client/ethers` adapt
 * viem accounts and wallet clients and ethers v6 signers; any other wallet fits in a few lines.
 */
export interface StreamPaySigner {
  getAddress(): Promise<string>;
  signTypedData(document: TypedDataDocument): Promise<Hex>;
}

/** `types` without `EIP712Domain` (ethers derives the domain type from the domain itself). */
export function withoutDomainType(types: Record<string, TypedDataField[]>): Record<string, TypedDataField[]> {
  const rest: Record<string, TypedDataField[]> = {};
  for (const [name, fields] of Object.entries(types)) {
    if (name !== "EIP712Domain") rest[name] = fields.map((f) => ({ name: f.name, type: f.type }));
  }
  return rest;
}

const INTEGER = /^u?int(\d*)$/;

function toBigInt(value: unknown, where: string): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^-?(0x[0-9a-fA-F]+|\d+)$/.test(value.trim())) return BigInt(value.trim());
  throw new TypeError(`${where}: ${JSON.stringify(value)} is not an integer`);
}

function convertValue(type: string, value: unknown, types: Record<string, TypedDataField[]>, where: string): unknown {
  const array = /^(.*)\[(\d*)\]$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) throw new TypeError(`${where}: expected an array for ${type}`);
    return value.map((v, i) => convertValue(array[1]!, v, types, `${where}[${i}]`));
  }
  if (INTEGER.test(type)) return toBigInt(value, where);
  const struct = types[type];
  if (struct) {
    if (typeof value !== "object" || value === null) throw new TypeError(`${where}: expected a ${type} struct`);
    return convertStruct(struct, value as Record<string, unknown>, types, where);
  }
  return value;
}

function convertStruct(
  fields: TypedDataField[],
  value: Record<string, unknown>,
  types: Record<string, TypedDataField[]>,
  where: string,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...value };
  for (const field of fields) {
    if (field.name in value) out[field.name] = convertValue(field.type, value[field.name], types, `${where}.${field.name}`);
  }
  return out;
}

/**
 * The document with every (u)int value of `message` and `domain` as a bigint, following
 * `types`: the relayer sends uint256 as decimal strings (exact), which some signers only take as
 * bigints. Nothing else changes.
 */
export function withBigIntegers(document: TypedDataDocument): TypedDataDocument {
  const domainFields = document.types["EIP712Domain"];
  const domain = domainFields
    ? convertStruct(domainFields, document.domain, document.types, "domain")
    : { ...document.domain, ...("chainId" in document.domain ? { chainId: toBigInt(document.domain["chainId"], "domain.chainId") } : {}) };
  const primary = document.types[document.primaryType];
  if (!primary) throw new TypeError(`typed data: primaryType ${document.primaryType} is not in types`);
  return {
    domain,
    types: document.types,
    primaryType: document.primaryType,
    message: convertStruct(primary, document.message, document.types, "message"),
  };
}

/** Checks the shape of a typed-data document received from the relayer. */
export function asTypedDataDocument(value: unknown, what: string): TypedDataDocument {
  const doc = value as Partial<TypedDataDocument> | null;
  if (
    typeof doc !== "object" ||
    doc === null ||
    typeof doc.domain !== "object" ||
    doc.domain === null ||
    typeof doc.types !== "object" ||
    doc.types === null ||
    typeof doc.primaryType !== "string" ||
    typeof doc.message !== "object" ||
    doc.message === null ||
    !Array.isArray(doc.types[doc.primaryType])
  ) {
    throw new TypeError(`${what} is not an eth_signTypedData_v4 document`);
  }
  return doc as TypedDataDocument;
}
