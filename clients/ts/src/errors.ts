import { errorCodeValues, type components } from "./openapi.js";

/** Every error code the relayer documents (its OpenAPI `ErrorCode` schema). */
export type ErrorCode = components["schemas"]["ErrorCode"];

const KNOWN_CODES: ReadonlySet<string> = new Set<string>(errorCodeValues);

/** Whether `code` is one of the codes of the OpenAPI document this client was generated from. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && KNOWN_CODES.has(code);
}

/** Base class of every error this package throws on purpose. */
export class StreamPayError extends Error {
  override name = "StreamPayError";
}

/**
 * The relayer answered with its error document `{"error": {"code", "message"}}` and a 4xx/5xx
 * status. `code` is stable (switch on it); `message` is for humans and may change.
 */
export class StreamPayApiError extends StreamPayError {
  override name = "StreamPayApiError";
  /** HTTP status (400, 401, 403, 404, 409, 422, 429, 503, ...). */
  readonly status: number;
  /** The stable error code. */
  readonly code: ErrorCode;
  /** Seconds to wait before retrying, when the answer carried a `Retry-After` header. */
  readonly retryAfter: number | undefined;
  /** The `X-Request-Id` of the answer (every relayer log line of the request carries it). */
  readonly requestId: string | undefined;
  /** `METHOD path` of the request that failed. */
  readonly request: string;

  constructor(args: {
    status: number;
    code: ErrorCode;
    message: string;
    retryAfter?: number | undefined;
    requestId?: string | undefined;
    request: string;
  }) {
    super(args.message);
    this.status = args.status;
    this.code = args.code;
    this.retryAfter = args.retryAfter;
    this.requestId = args.requestId;
    this.request = args.request;
  }
}

/**
 * The answer is not what the OpenAPI document describes: an error status without the relayer's
 * error document (a proxy's HTML page, say), an error code this client does not know (the relayer
 * is newer: regenerate the types), or a success body that is not JSON.
 */
export class StreamPayProtocolError extends StreamPayError {
  override name = "StreamPayProtocolError";
  readonly status: number;
  /** The code the relayer sent, when it sent one this client does not know. */
  readonly rawCode: string | undefined;
  /** The start of the body as received. */
  readonly body: string;
  readonly request: string;

  constructor(args: { status: number; message: string; body: string; rawCode?: string | undefined; request: string }) {
    super(args.message);
    this.status = args.status;
    this.rawCode = args.rawCode;
    this.body = args.body;
    this.request = args.request;
  }
}

/**
 * A check the client makes before signing failed: the relayer built something other than what
 * was asked (another signer, calldata that differs from the signed document, ...). Nothing was
 * signed.
 */
export class StreamPayMismatchError extends StreamPayError {
  override name = "StreamPayMismatchError";
}

/** `Retry-After` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}
