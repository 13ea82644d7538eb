import type { components, paths } from "./openapi.js";
import {
  StreamPayApiError,
  StreamPayError,
  StreamPayMismatchError,
  StreamPayProtocolError,
  isErrorCode,
  parseRetryAfter,
} from "./errors.js";
import { asTypedDataDocument, type Hex, type StreamPaySigner } from "./signer.js";

// ---------------------------------------------------------------------------------------------
// Types, all derived from the generated OpenAPI types (`npm run gen`), by path and method.

type Method = "get" | "post" | "delete";
type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
/** The JSON request body of an operation. */
export type RequestBody<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { requestBody: { content: { "application/json": infer B } } } ? B : never;
/** The JSON answer of an operation with status `S`. */
export type ResponseBody<P extends keyof paths, M extends Method, S extends number = 200> =
  Operation<P, M> extends { responses: { [K in S]: { content: { "application/json": infer R } } } } ? R : never;
/** The query parameters of an operation. */
export type QueryParams<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

type Schemas = components["schemas"];
export type BuildResponse = ResponseBody<"/api/v1/{contract}/payments/deposit", "post">;
export type MetaTransaction = Schemas["MetaTransaction"];
export type DepositRequest = RequestBody<"/api/v1/{contract}/payments/deposit", "post">;
export type WithdrawRequest = RequestBody<"/api/v1/{contract}/payments/withdraw", "post">;
export type PayRequest = RequestBody<"/api/v1/{contract}/payments/", "post">;
export type BatchPaymentsRequest = RequestBody<"/api/v1/{contract}/batch/payments", "post">;
export type SubscribeRequest = RequestBody<"/api/v1/{contract}/subscriptions/", "post">;
export type UnsubscribeQuery = QueryParams<"/api/v1/{contract}/subscriptions/{address}", "delete">;
export type ExecuteRequest = RequestBody<"/api/v1/{contract}/meta/execute", "post">;
export type ExecuteResponse = ResponseBody<"/api/v1/{contract}/meta/execute", "post", 200>;
export type ExecuteAccepted = ResponseBody<"/api/v1/{contract}/meta/execute", "post", 202>;
export type BalanceView = ResponseBody<"/api/v1/{contract}/payments/balance/{address}", "get">;
export type SubscriptionList = ResponseBody<"/api/v1/{contract}/subscriptions/{address}", "get">;
export type NonceView = ResponseBody<"/api/v1/{contract}/meta/nonce/{account}", "get">;
export type TransactionView = ResponseBody<"/api/v1/transactions/{id}", "get">;
export type ContractList = ResponseBody<"/api/v1/contracts", "get">;
export type ClientTokenRequest = RequestBody<"/api/v1/auth/token", "post">;
/** `POST /api/v1/auth/token` answer: `Token` (`ct_…`), `TokenType`, `Signer`, `Operations`, `ExpiresAt`, `ExpiresIn`. */
export type MintedClientToken = ResponseBody<"/api/v1/auth/token", "post", 201>;
/** `GET /api/v1/auth/token/validate` answer: `Valid`, `Signer`, `Operations`, `ExpiresAt`, `ExpiresIn`. */
export type ValidatedClientToken = ResponseBody<"/api/v1/auth/token/validate", "get">;
/**
 * The data of one `snapshot` event of `GET /api/v1/{contract}/authors/{author}/events` (see
 * `authorEventsUrl`): the author's incoming streams, balance at a block, and net rate.
 */
export type CreatorSnapshot = Schemas["CreatorSnapshot"];

// ---------------------------------------------------------------------------------------------

interface CommonClientOptions {
  /** The relayer, e.g. `https://relayer.example` or `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The deployment name from `GET /api/v1/contracts`, e.g. `"USDC"`. */
  contract: string;
  /** Another `fetch` (tests, proxies); default: the global one. */
  fetch?: typeof fetch;
  /**
   * Per-request timeout in ms (default 130 000: a synchronous `meta/execute` may take up to the
   * relayer's request timeout, 120 s by default).
   */
  timeoutMs?: number;
  /** Headers added to every request (they cannot replace the credential's header). */
  headers?: Record<string, string>;
}

/**
 * How the client authenticates: exactly one of
 * - `apiKey`: a secret key (`sk_test_…` / `sk_live_…`, on a server only) or a publishable key
 *   (`pk_test_…` / `pk_live_…`, in a web page of an origin the key lists), sent as `X-API-Key`;
 * - `clientToken`: a client token (`ct_…`) that a server minted with its secret key for one end
 *   user (`mintClientToken`), sent as `Authorization: Bearer ct_…`.
 */
export type StreamPayClientOptions = CommonClientOptions &
  (
    | {
        /** An API key (`sk_…` or `pk_…`), sent as `X-API-Key`. */
        apiKey: string;
        clientToken?: undefined;
      }
    | {
        /** A client token (`ct_…`), sent as `Authorization: Bearer`. */
        clientToken: string;
        apiKey?: undefined;
      }
  );

/** `mintClientToken`'s arguments. */
export interface MintClientTokenOptions {
  /** The end user: their address, or their signer. The token builds and relays calls for it only. */
  signer: string | Pick<StreamPaySigner, "getAddress">;
  /**
   * What the token may build and relay (`"deposit"`, `"withdraw"`, `"pay"`, `"subscribe"`,
   * `"unsubscribe"`); default: every operation the key allows.
   */
  operations?: NonNullable<ClientTokenRequest["Operations"]>;
  /** Seconds the token lives, 1 to 600 (the relayer's default and maximum: 600). */
  expiresIn?: number;
  signal?: AbortSignal;
}

/** Per-call options of the low-level calls. */
export interface CallOptions {
  /** `Reference` header: a label (1 to 255 characters) stored with the transaction. */
  reference?: string;
  /** `Idempotency-Key` header (build of batches, execute). */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface ExecuteOptions extends CallOptions {
  /** Send `Prefer: respond-async`: answer 202 once sent instead of once mined. */
  async?: boolean;
}

/** Options every high-level call takes. */
export interface RelayOptions {
  /** Who signs (and whose account the call runs as): see `viemSigner` and `ethersSigner`. */
  signer: StreamPaySigner;
  /** Sponsor to pay the gas (default: the API key's first). */
  sponsor?: string;
  /** A label (1 to 255 characters) stored with the transaction. */
  reference?: string;
  /**
   * How long to wait, in ms, for a transaction the relayer accepted without waiting for it
   * (a 202 after its receipt timeout) to be mined (default 120 000).
   */
  waitTimeoutMs?: number;
  signal?: AbortSignal;
}

/** The outcome of a high-level call: built, signed, relayed and mined. */
export interface RelayResult {
  /** The hash of the sponsor's transaction. */
  transactionHash: Hex;
  /** The relayer's id of the transaction (`client.transaction(id)`). */
  transactionId: number;
  /** `"mined"`: every read of the relayer already reflects the call; `"reverted"` never returns (it throws). */
  status: "mined";
  blockNumber: number | null;
  gasUsed: number | null;
  /** The signer's address (the account the call ran as). */
  from: string;
  sponsor: string;
  /** What the relayer built (with the exact figures: `Amount`, `RatePerSecond`, `Total`, ...). */
  built: BuildResponse;
  /** The answer of `meta/execute`. */
  execution: ExecuteResponse | ExecuteAccepted;
}

/** Token units as an exact decimal string ("100", "0.5"). Numbers are refused: they are not exact. */
export type Amount = string;

function requireAmount(value: unknown, field: string): string {
  if (typeof value !== "string") {
    throw new TypeError(
      `${field} must be a decimal string in token units (e.g. "0.5"), not ${typeof value}: numbers lose precision`,
    );
  }
  return value;
}

/** Uniswap Permit2's address: the same on every chain it is deployed to. */
export const PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3";

const sameAddress = (a: unknown, b: unknown): boolean =>
  typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase();

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

export class StreamPayClient {
  readonly baseUrl: string;
  readonly contract: string;
  readonly #auth: Record<string, string>;
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;

  constructor(options: StreamPayClientOptions) {
    if (!options.baseUrl) throw new TypeError("StreamPayClient: baseUrl is required");
    if (!options.contract) throw new TypeError("StreamPayClient: contract is required");
    const { apiKey, clientToken } = options;
    if (apiKey !== undefined && clientToken !== undefined) {
      throw new TypeError("StreamPayClient: pass either apiKey or clientToken, not both");
    }
    if (apiKey) {
      if (apiKey.startsWith("ct_")) throw new TypeError("StreamPayClient: a ct_ token is a clientToken, not an apiKey");
      this.#auth = { "X-API-Key": apiKey };
    } else if (clientToken) {
      if (/^(sk|pk|sp)_/.test(clientToken)) {
        throw new TypeError("StreamPayClient: an sk_/pk_ key is an apiKey, not a clientToken");
      }
      this.#auth = { Authorization: `Bearer ${clientToken}` };
    } else {
      throw new TypeError("StreamPayClient: apiKey or clientToken is required");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.contract = options.contract;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#timeoutMs = options.timeoutMs ?? 130_000;
    this.#headers = { ...options.headers };
  }

  // ------------------------------------------------------------------------------------------
  // Transport

  /**
   * One request to the relayer. Answers the parsed JSON body and status of a 2xx; throws
   * `StreamPayApiError` for the relayer's error answers and `StreamPayProtocolError` for
   * anything else. `path` starts with `/`.
   */
  async request<T>(
    method: "GET" | "POST" | "DELETE",
    path: string,
    init: { query?: Record<string, string | number | undefined | null>; body?: unknown; headers?: Record<string, string | undefined>; signal?: AbortSignal } = {},
  ): Promise<{ status: number; data: T; headers: Headers }> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(init.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = { Accept: "application/json", ...this.#headers, ...this.#auth };
    for (const [k, v] of Object.entries(init.headers ?? {})) if (v !== undefined) headers[k] = v;
    let body: string | undefined;
    if (init.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(init.body);
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const what = `${method} ${url.pathname}`;
    const res = await this.#fetch(url, { method, headers, body, signal });
    const text = await res.text();
    let json: unknown;
    try {
      json = text.length > 0 ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.ok) {
      if (json === undefined) {
        throw new StreamPayProtocolError({ status: res.status, message: `${what}: the answer is not JSON`, body: text.slice(0, 500), request: what });
      }
      return { status: res.status, data: json as T, headers: res.headers };
    }
    const detail = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (detail && isErrorCode(detail.code)) {
      throw new StreamPayApiError({
        status: res.status,
        code: detail.code,
        message: typeof detail.message === "string" ? detail.message : detail.code,
        retryAfter: parseRetryAfter(res.headers.get("Retry-After")),
        requestId: res.headers.get("X-Request-Id") ?? undefined,
        request: what,
      });
    }
    const rawCode = typeof detail?.code === "string" ? detail.code : undefined;
    throw new StreamPayProtocolError({
      status: res.status,
      message: rawCode
        ? `${what}: HTTP ${res.status} with error code ${JSON.stringify(rawCode)}, which this client does not know (regenerate its types)`
        : `${what}: HTTP ${res.status} without the relayer's error document`,
      body: text.slice(0, 500),
      rawCode,
      request: what,
    });
  }

  #contractPath(rest: string): string {
    return `/api/v1/${encodeURIComponent(this.contract)}${rest}`;
  }

  #optionHeaders(options: CallOptions = {}): Record<string, string | undefined> {
    return { Reference: options.reference, "Idempotency-Key": options.idempotencyKey };
  }

  // ------------------------------------------------------------------------------------------
  // Low-level calls: one per endpoint, bodies and answers exactly as the OpenAPI document says.

  /**
   * The URL of `author`'s live event stream, `GET /api/v1/{contract}/authors/{author}/events`
   * (server-sent events; public, so no credential: open it with `new EventSource(url)`). Each
   * `snapshot` event's data is a JSON `CreatorSnapshot`; the balance between snapshots is
   * `BigInt(SignedBalanceRaw) + BigInt(NetRate) * (now - BlockTimestamp)`, floored at zero. The
   * relayer's page for it is `creatorPageUrl(author)`.
   */
  authorEventsUrl(author: string): string {
    return this.baseUrl + this.#contractPath(`/authors/${encodeURIComponent(author)}/events`);
  }

  /** The relayer's live creator page for `author`: `GET /creators/{contract}/{author}` (public HTML). */
  creatorPageUrl(author: string): string {
    return `${this.baseUrl}/creators/${encodeURIComponent(this.contract)}/${encodeURIComponent(author)}`;
  }

  /** `GET /api/v1/contracts`. */
  async contracts(options: CallOptions = {}): Promise<ContractList> {
    return (await this.request<ContractList>("GET", "/api/v1/contracts", { signal: options.signal })).data;
  }

  /** `POST /{contract}/payments/deposit`: builds a deposit (with `PermitTypedData`). */
  async buildDeposit(body: DepositRequest, options: CallOptions = {}): Promise<BuildResponse> {
    return (await this.request<BuildResponse>("POST", this.#contractPath("/payments/deposit"), { body, headers: this.#optionHeaders(options), signal: options.signal })).data;
  }

  /** `POST /{contract}/payments/withdraw`. */
  async buildWithdraw(body: WithdrawRequest, options: CallOptions = {}): Promise<BuildResponse> {
    return (await this.request<BuildResponse>("POST", this.#contractPath("/payments/withdraw"), { body, headers: this.#optionHeaders(options), signal: options.signal })).data;
  }

  /** `POST /{contract}/payments/`: a one-off payment. */
  async buildPay(body: PayRequest, options: CallOptions = {}): Promise<BuildResponse> {
    return (await this.request<BuildResponse>("POST", this.#contractPath("/payments/"), { body, headers: this.#optionHeaders(options), signal: options.signal })).data;
  }

  /** `POST /{contract}/batch/payments`: up to 100 payments signed once. */
  async buildBatchPayments(body: BatchPaymentsRequest, options: CallOptions = {}): Promise<BuildResponse> {
    return (await this.request<BuildResponse>("POST", this.#contractPath("/batch/payments"), { body, headers: this.#optionHeaders(options), signal: options.signal })).data;
  }

  /** `POST /{contract}/subscriptions/`. */
  async buildSubscribe(body: SubscribeRequest, options: CallOptions = {}): Promise<BuildResponse> {
    return (await this.request<BuildResponse>("POST", this.#contractPath("/subscriptions/"), { body, headers: this.#optionHeaders(options), signal: options.signal })).data;
  }

  /** `DELETE /{contract}/subscriptions/{author}?From=…`: builds `unsubscribe(author)`. */
  async buildUnsubscribe(author: string, query: UnsubscribeQuery, options: CallOptions = {}): Promise<BuildResponse> {
    return (
      await this.request<BuildResponse>("DELETE", this.#contractPath(`/subscriptions/${encodeURIComponent(author)}`), {
        query: query as Record<string, string | number | undefined>,
        headers: this.#optionHeaders(options),
        signal: options.signal,
      })
    ).data;
  }

  /**
   * `POST /{contract}/meta/execute`: relays a signed call. Answers the 200 (mined) or, with
   * `async` or after the relayer's receipt timeout, the 202 (sent) document.
   */
  async execute(body: ExecuteRequest, options: ExecuteOptions = {}): Promise<ExecuteResponse | ExecuteAccepted> {
    const headers = { ...this.#optionHeaders(options), Prefer: options.async ? "respond-async" : undefined };
    return (await this.request<ExecuteResponse | ExecuteAccepted>("POST", this.#contractPath("/meta/execute"), { body, headers, signal: options.signal })).data;
  }

  /**
   * `POST /api/v1/auth/token`, on your server with a secret key: mints a client token for one end
   * user (their signer address, the operations, at most 10 minutes). Hand `Token` to that user's
   * page, which makes its own client with `{ clientToken }`. The key's `allowed_origins`,
   * contracts and limits apply to the token's requests.
   */
  async mintClientToken(args: MintClientTokenOptions): Promise<MintedClientToken> {
    const signer = typeof args.signer === "string" ? args.signer : await args.signer.getAddress();
    const body: ClientTokenRequest = { Signer: signer, Operations: args.operations, ExpiresIn: args.expiresIn };
    return (await this.request<MintedClientToken>("POST", "/api/v1/auth/token", { body, signal: args.signal })).data;
  }

  /**
   * `GET /api/v1/auth/token/validate`: whether this client's token is usable, and for what and
   * until when (spends nothing). Throws `StreamPayApiError` (`invalid_client_token`,
   * `client_token_expired`, ...) when it is not; for a client made with an API key the relayer
   * answers `invalid_client_token`.
   */
  async validateClientToken(options: CallOptions = {}): Promise<ValidatedClientToken> {
    return (await this.request<ValidatedClientToken>("GET", "/api/v1/auth/token/validate", { signal: options.signal })).data;
  }

  /** `GET /{contract}/payments/balance/{address}`: the live balance (token units, exact). */
  async balance(address: string, options: CallOptions = {}): Promise<BalanceView> {
    return (await this.request<BalanceView>("GET", this.#contractPath(`/payments/balance/${encodeURIComponent(address)}`), { signal: options.signal })).data;
  }

  /** `GET /{contract}/subscriptions/{address}`: the address's outgoing streams. */
  async subscriptions(address: string, options: CallOptions = {}): Promise<SubscriptionList> {
    return (await this.request<SubscriptionList>("GET", this.#contractPath(`/subscriptions/${encodeURIComponent(address)}`), { signal: options.signal })).data;
  }

  /** `GET /{contract}/meta/nonce/{account}`: the next ordered (account) nonce. */
  async nonce(account: string, options: CallOptions = {}): Promise<NonceView> {
    return (await this.request<NonceView>("GET", this.#contractPath(`/meta/nonce/${encodeURIComponent(account)}`), { signal: options.signal })).data;
  }

  /** `GET /api/v1/transactions/{id}`: status, hash, gas and block of a relayed transaction. */
  async transaction(id: number | string, options: CallOptions = {}): Promise<TransactionView> {
    return (await this.request<TransactionView>("GET", `/api/v1/transactions/${encodeURIComponent(String(id))}`, { signal: options.signal })).data;
  }

  // ------------------------------------------------------------------------------------------
  // High-level calls: build, sign with `signer`, execute, and answer once mined.

  /**
   * A gasless deposit of `amount` tokens: the call and its permit, both signed. The permit is the
   * token's EIP-2612 one, or with `permit2: true` (the relayer's default for a token without
   * EIP-2612) Uniswap Permit2's `PermitSingle`, which needs the signer's one-time ERC-20
   * `approve(PERMIT2, amount)` on the token.
   */
  async deposit(args: RelayOptions & { amount: Amount; permit2?: boolean }): Promise<RelayResult> {
    const amount = requireAmount(args.amount, "amount");
    return this.#relay(args, (from) =>
      this.buildDeposit(
        { From: from, Amount: amount, Sponsor: args.sponsor, ...(args.permit2 === undefined ? {} : { IsPermit2: args.permit2 }) },
        this.#callOptions(args),
      ),
    );
  }

  /** Withdraws `amount` tokens (at most the token's decimals) to `to` (default: the signer). */
  async withdraw(args: RelayOptions & { amount: Amount; to?: string }): Promise<RelayResult> {
    const amount = requireAmount(args.amount, "amount");
    return this.#relay(args, (from) =>
      this.buildWithdraw({ From: from, Amount: amount, To: args.to, Sponsor: args.sponsor }, this.#callOptions(args)),
    );
  }

  /** A one-off payment of `amount` tokens from the signer's StreamPay balance to `to`. */
  async pay(args: RelayOptions & { to: string; amount: Amount }): Promise<RelayResult> {
    const amount = requireAmount(args.amount, "amount");
    return this.#relay(args, (from) =>
      this.buildPay({ From: from, To: args.to, Amount: amount, Sponsor: args.sponsor }, this.#callOptions(args)),
    );
  }

  /** Up to 100 payments in one signed, atomic call. */
  async batchPay(args: RelayOptions & { payments: ReadonlyArray<{ to: string; amount: Amount }> }): Promise<RelayResult> {
    const payments = args.payments.map((p, i) => ({ To: p.to, Amount: requireAmount(p.amount, `payments[${i}].amount`) }));
    return this.#relay(args, (from) =>
      this.buildBatchPayments({ From: from, Payments: payments, Sponsor: args.sponsor }, this.#callOptions(args)),
    );
  }

  /**
   * Starts streaming to `author`: `monthlyRate` token units per 30-day month (the relayer
   * converts it to the exact per-second rate, in the result's `built.RatePerSecond`).
   */
  async subscribe(args: RelayOptions & { author: string; monthlyRate: Amount; projectId?: string }): Promise<RelayResult> {
    const rate = requireAmount(args.monthlyRate, "monthlyRate");
    return this.#relay(args, (from) =>
      this.buildSubscribe(
        { from, author: args.author, subscription_rate: rate, project_id: args.projectId, sponsor: args.sponsor },
        this.#callOptions(args),
      ),
    );
  }

  /** Stops the signer's stream to `author`. */
  async unsubscribe(args: RelayOptions & { author: string }): Promise<RelayResult> {
    return this.#relay(args, (from) =>
      this.buildUnsubscribe(args.author, { From: from, Sponsor: args.sponsor }, this.#callOptions(args)),
    );
  }

  #callOptions(args: RelayOptions): CallOptions {
    return { reference: args.reference, signal: args.signal };
  }

  async #relay(args: RelayOptions, build: (from: string) => Promise<BuildResponse>): Promise<RelayResult> {
    const from = await args.signer.getAddress();
    const built = await build(from);
    const tx = built.Transaction;
    const typed = asTypedDataDocument(tx.TypedData, "Transaction.TypedData");
    // What gets signed must be what gets executed, as the signer.
    const msg = typed.message;
    if (!sameAddress(tx.From, from) || !sameAddress(msg["signer"], from)) {
      throw new StreamPayMismatchError(`the relayer built a call for ${String(msg["signer"])}, not for the signer ${from}`);
    }
    if (String(msg["data"]).toLowerCase() !== tx.Data.toLowerCase() || String(msg["traits"]) !== tx.Traits) {
      throw new StreamPayMismatchError("Transaction.TypedData does not sign Transaction.Data and Transaction.Traits");
    }
    if (!sameAddress(typed.domain["verifyingContract"], tx.To)) {
      throw new StreamPayMismatchError(`Transaction.TypedData is for ${String(typed.domain["verifyingContract"])}, not ${tx.To}`);
    }
    const signature = await args.signer.signTypedData(typed);

    let permit: ExecuteRequest["Permit"];
    if (tx.PermitTypedData) {
      const permitDoc = asTypedDataDocument(tx.PermitTypedData, "Transaction.PermitTypedData");
      const p = permitDoc.message;
      if (permitDoc.primaryType === "PermitSingle") {
        // Permit2: the signer (the owner) lets the contract pull `details.amount` through Permit2.
        const details = (p["details"] ?? {}) as Record<string, unknown>;
        if (!sameAddress(permitDoc.domain["verifyingContract"], PERMIT2) || !sameAddress(p["spender"], tx.To)) {
          throw new StreamPayMismatchError("PermitTypedData is not a Permit2 permit for the contract");
        }
        permit = {
          Value: String(details["amount"]),
          Deadline: String(p["sigDeadline"]),
          Signature: await args.signer.signTypedData(permitDoc),
        };
      } else {
        if (!sameAddress(p["owner"], from) || !sameAddress(p["spender"], tx.To)) {
          throw new StreamPayMismatchError("PermitTypedData does not let the contract spend the signer's tokens");
        }
        permit = {
          Value: String(p["value"]),
          Deadline: String(p["deadline"]),
          Signature: await args.signer.signTypedData(permitDoc),
        };
      }
    }

    const execution = await this.execute(
      {
        From: tx.From,
        Signature: signature,
        Data: tx.Data,
        Nonce: String(tx.Nonce),
        Deadline: String(tx.Deadline),
        Traits: tx.Traits,
        NonceType: tx.NonceType,
        Sponsor: built.Sponsor,
        Permit: permit,
        Reference: args.reference,
      },
      { signal: args.signal },
    );

    let blockNumber = "BlockNumber" in execution ? (execution.BlockNumber ?? null) : null;
    let gasUsed = execution.GasUsed ?? null;
    if ("Status" in execution) {
      // 202: sent but not mined within the relayer's receipt timeout; follow it.
      const view = await this.waitForTransaction(execution.TransactionId, { timeoutMs: args.waitTimeoutMs, signal: args.signal });
      blockNumber = view.BlockNumber ?? null;
      gasUsed = view.GasUsed ?? null;
    }
    return {
      transactionHash: execution.TransactionHash as Hex,
      transactionId: execution.TransactionId,
      status: "mined",
      blockNumber,
      gasUsed,
      from: tx.From,
      sponsor: built.Sponsor,
      built,
      execution,
    };
  }

  /**
   * Polls `GET /api/v1/transactions/{id}` (every `intervalMs`, 1 000 by default) until the
   * relayer calls the transaction mined (its reads then reflect it) and answers its view; throws
   * if it reverted or is still not mined after `timeoutMs` (120 000 by default). For execute's
   * 202 answers.
   */
  async waitForTransaction(
    id: number | string,
    options: { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
  ): Promise<TransactionView> {
    const timeoutMs = options.timeoutMs ?? 120_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await this.transaction(id, { signal: options.signal });
      if (view.Status === "mined") return view;
      if (view.Status === "reverted") {
        throw new StreamPayError(`transaction ${id} (${view.TransactionHash}) reverted: ${view.RevertReason ?? view.Failure ?? "no reason"}`);
      }
      if (Date.now() >= deadline) {
        throw new StreamPayError(`transaction ${id} (${view.TransactionHash}) is still ${view.Status} after ${timeoutMs} ms`);
      }
      await sleep(options.intervalMs ?? 1000, options.signal);
    }
  }
}
