//! The API's one error type. Every client mistake has a stable [`ErrorCode`] whose string and
//! HTTP status are part of the API; anything else is logged here with its full cause chain and
//! answered with a generic 500 body, so internals never leak to clients.
//!
//! [`ErrorCode`] is the catalog: each code's string, status and meaning live in one table below,
//! and the OpenAPI document publishes that table as the `ErrorCode` schema.

use std::borrow::Cow;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};

use crate::amount::AmountError;

/// Declares [`ErrorCode`]: one variant per stable code with its string, HTTP status and meaning.
macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:ident, $meaning:literal),)*) => {
        /// Every stable error code. A client can switch on its string; the message next to it is
        /// for humans and may change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order the document lists them.
            pub const ALL: &[ErrorCode] = &[$(Self::$variant),*];

            /// The code as it appears in `{"error": {"code"}}`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status,)* }
            }

            /// What the code means, for the document.
            pub const fn description(self) -> &'static str {
                match self { $(Self::$variant => $meaning,)* }
            }
        }
    };
}

error_codes! {
    InvalidJson = ("invalid_json", BAD_REQUEST, "The body is not JSON of the expected shape, or lacks Content-Type: application/json."),
    InvalidQuery = ("invalid_query", BAD_REQUEST, "A query parameter is malformed."),
    MissingField = ("missing_field", BAD_REQUEST, "A required field is missing or empty."),
    InvalidAddress = ("invalid_address", BAD_REQUEST, "Not a 0x-prefixed 20-byte address (0x and 40 hex digits)."),
    InvalidAmount = ("invalid_amount", BAD_REQUEST, "Not a plain decimal number like `12.5` (no sign, exponent or separators)."),
    AddressRefused = ("address_refused", UNPROCESSABLE_ENTITY, "A well-formed address this field cannot take: mixed case with a wrong EIP-55 checksum (a typo, most likely), the zero address as a recipient, or yourself as the author."),
    AmountOutOfRange = ("amount_out_of_range", UNPROCESSABLE_ENTITY, "A well-formed amount this call cannot take: zero, more decimals than the token has, too large for the contract, or a rate below one base unit per second."),
    InvalidNumber = ("invalid_number", BAD_REQUEST, "Expected a non-negative integer."),
    InvalidProjectId = ("invalid_project_id", BAD_REQUEST, "project_id is not a non-negative integer."),
    InvalidData = ("invalid_data", BAD_REQUEST, "Data is not 0x-prefixed hex."),
    InvalidSignature = ("invalid_signature", UNPROCESSABLE_ENTITY, "The signature is not hex, or not a well-formed ECDSA signature (65 bytes, a valid v and a low s) where one is required."),
    InvalidTraits = ("invalid_traits", UNPROCESSABLE_ENTITY, "Traits is not a valid bySig traits word."),
    InvalidNonceType = ("invalid_nonce_type", BAD_REQUEST, "NonceType is not `unique` (the default) or `account`."),
    InvalidNonce = ("invalid_nonce", UNPROCESSABLE_ENTITY, "A build's Nonce may only be chosen with NonceType `account`."),
    InvalidDeadline = ("invalid_deadline", BAD_REQUEST, "Deadline does not fit the 40-bit traits field."),
    InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST, "Idempotency-Key is not 1 to 255 visible ASCII characters."),
    CallNotAllowed = ("call_not_allowed", UNPROCESSABLE_ENTITY, "Data is not an allowed StreamPay user operation."),
    NonCanonicalCalldata = ("non_canonical_calldata", UNPROCESSABLE_ENTITY, "Data decodes but is not the canonical ABI encoding of its call (extra or non-zero padding bytes)."),
    CalldataTooLarge = ("calldata_too_large", BAD_REQUEST, "Data is larger than the relayer's cap (`[admission] max_calldata_bytes`)."),
    EmptyBatch = ("empty_batch", UNPROCESSABLE_ENTITY, "A batch holds no items."),
    BatchTooLarge = ("batch_too_large", UNPROCESSABLE_ENTITY, "A batch holds more than 100 items."),
    UnknownContract = ("unknown_contract", NOT_FOUND, "No deployment has this name (see GET /api/v1/contracts)."),
    InvalidWebhookUrl = ("invalid_webhook_url", UNPROCESSABLE_ENTITY, "The webhook url is not an http(s) URL with a host and no credentials, is over 2048 characters, or points at a non-public address."),
    UnknownEvent = ("unknown_event", BAD_REQUEST, "A webhook event type is not one of the `WebhookEventType` schema."),
    UnknownOperation = ("unknown_operation", BAD_REQUEST, "The fee quote's operation is not one this relayer builds."),
    InvalidKeyName = ("invalid_key_name", BAD_REQUEST, "An API key name must be 1 to 100 characters."),
    InvalidEnvironment = ("invalid_environment", BAD_REQUEST, "An API key environment is `test` or `live`."),
    InvalidScope = ("invalid_scope", BAD_REQUEST, "Scopes are some of read, relay, webhooks, admin (at least one)."),
    InvalidExpiry = ("invalid_expiry", BAD_REQUEST, "expires_in_seconds is out of range."),
    InvalidCidr = ("invalid_cidr", BAD_REQUEST, "An allowlist entry is not a CIDR block or IP address, or has host bits set."),
    InvalidRateLimit = ("invalid_rate_limit", BAD_REQUEST, "rate_limit_per_minute is out of range."),
    InvalidGracePeriod = ("invalid_grace_period", BAD_REQUEST, "grace_seconds is out of range."),
    InvalidReference = ("invalid_reference", BAD_REQUEST, "Reference is not 1 to 255 characters without control characters."),
    ReferenceMismatch = ("reference_mismatch", UNPROCESSABLE_ENTITY, "The Reference header and the body's Reference are both valid but differ; send one, or the same in both."),
    InvalidStatus = ("invalid_status", BAD_REQUEST, "A status filter is not a transaction state."),
    InvalidTime = ("invalid_time", BAD_REQUEST, "A time filter is not an RFC 3339 timestamp."),
    InvalidLimit = ("invalid_limit", BAD_REQUEST, "limit is not an integer from 1 to 100."),
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "cursor is not a NextCursor this API returned."),
    InvalidMetricsToken = ("invalid_metrics_token", UNAUTHORIZED, "A metrics token is configured and GET /metrics was called without it."),
    MissingApiKey = ("missing_api_key", UNAUTHORIZED, "No X-API-Key header."),
    InvalidApiKey = ("invalid_api_key", UNAUTHORIZED, "The API key is unknown or deleted."),
    KeyRevoked = ("key_revoked", UNAUTHORIZED, "The API key was revoked (or replaced by a rotation)."),
    KeyExpired = ("key_expired", UNAUTHORIZED, "The API key is past its expiry."),
    MissingAdminToken = ("missing_admin_token", UNAUTHORIZED, "An admin endpoint was called without `Authorization: Bearer` (or an admin-scoped X-API-Key)."),
    InvalidAdminToken = ("invalid_admin_token", UNAUTHORIZED, "The admin token is malformed, badly signed, expired, too long-lived, or admin tokens are not enabled."),
    InsufficientScope = ("insufficient_scope", FORBIDDEN, "The API key lacks the scope this endpoint needs."),
    IpNotAllowed = ("ip_not_allowed", FORBIDDEN, "The API key may not be used from the client's address."),
    OriginNotAllowed = ("origin_not_allowed", FORBIDDEN, "The request's web origin (`Origin`) is not one the key lists, or a publishable key was sent without `Origin`; for a preflight, no key lists the origin."),
    OperationNotAllowed = ("operation_not_allowed", FORBIDDEN, "A publishable key or client token may only build and execute the user operations it lists; this route or call is outside them."),
    ContractNotAllowed = ("contract_not_allowed", FORBIDDEN, "The publishable key may not use this deployment."),
    SignerNotAllowed = ("signer_not_allowed", FORBIDDEN, "The client token is bound to another signer than the call's `From`."),
    SignerRateLimited = ("signer_rate_limited", TOO_MANY_REQUESTS, "The signer has relayed as many calls this minute as the key allows (`signer_rate_limit_per_minute`); retry after `Retry-After` seconds."),
    InvalidClientToken = ("invalid_client_token", UNAUTHORIZED, "The client token is unknown, malformed, or was not sent as `Authorization: Bearer ct_…`."),
    ClientTokenExpired = ("client_token_expired", UNAUTHORIZED, "The client token has expired (tokens live at most 600 seconds); mint a new one."),
    ClientTokenRequired = ("client_token_required", FORBIDDEN, "Only a secret key mints client tokens, and only a client token can be validated."),
    InvalidOrigin = ("invalid_origin", BAD_REQUEST, "An `allowed_origins` entry is not a web origin like `https://app.example` (scheme, host, optional port; no path)."),
    InvalidOperation = ("invalid_operation", BAD_REQUEST, "Not an operation: `deposit`, `withdraw`, `pay`, `subscribe`, `unsubscribe`."),
    InvalidKeyKind = ("invalid_key_kind", BAD_REQUEST, "`kind` is `secret` or `publishable`, and a publishable key needs every bound it must carry (origins, contracts, operations, both rate limits, both daily budgets) and only the `relay` scope."),
    InvalidBudget = ("invalid_budget", BAD_REQUEST, "A daily budget is not a positive decimal amount of the native coin (at most 18 decimals)."),
    InvalidTokenTtl = ("invalid_token_ttl", BAD_REQUEST, "`ExpiresIn` is from 1 to 600 seconds."),
    SponsorNotAllowed = ("sponsor_not_allowed", FORBIDDEN, "The API key may not use this sponsor."),
    SignerBanned = ("signer_banned", FORBIDDEN, "Too many of this signer's relayed calls reverted on chain recently; none is relayed until they age out."),
    KeyBanned = ("key_banned", FORBIDDEN, "Too many of this API key's relayed calls reverted on chain recently; none is relayed until they age out."),
    KeyNotFound = ("key_not_found", NOT_FOUND, "No API key with this id (or it was deleted)."),
    KeyNotActive = ("key_not_active", CONFLICT, "The API key is revoked, expired or already rotated."),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "The API key exceeded its requests per minute; retry after `Retry-After` seconds."),
    TooManyInvalidKeys = ("too_many_invalid_keys", TOO_MANY_REQUESTS, "This client address presented too many unknown, revoked or expired API keys (`[server] invalid_key_limit_per_minute`); its keys are not looked up until `Retry-After` seconds have passed."),
    NotFound = ("not_found", NOT_FOUND, "No endpoint at this path."),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "The path exists but not with this method."),
    TransactionNotFound = ("transaction_not_found", NOT_FOUND, "No such transaction for this API key."),
    WebhookNotFound = ("webhook_not_found", NOT_FOUND, "No such webhook endpoint for this API key."),
    WebhookDeliveryNotFound = ("webhook_delivery_not_found", NOT_FOUND, "No such delivery of this webhook endpoint."),
    WebhookLimitReached = ("webhook_limit_reached", UNPROCESSABLE_ENTITY, "The API key already has the most webhook endpoints allowed; delete one first."),
    RedeliveryLimitReached = ("redelivery_limit_reached", TOO_MANY_REQUESTS, "The API key asked for the most redeliveries allowed this hour; retry later."),
    NonceAlreadyUsed = ("nonce_already_used", CONFLICT, "The signed nonce was already consumed on chain."),
    NonceGap = ("nonce_gap", CONFLICT, "The signed nonce is not the signer's next one."),
    NonceInFlight = ("nonce_in_flight", CONFLICT, "A call with this nonce is already being relayed."),
    IdempotencyKeyInProgress = ("idempotency_key_in_progress", CONFLICT, "A request with this Idempotency-Key is still running; retry shortly."),
    IdempotencyKeyReused = ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "This Idempotency-Key was used for a different request."),
    DeadlineExpired = ("deadline_expired", UNPROCESSABLE_ENTITY, "The signed deadline has passed."),
    SignatureMismatch = ("signature_mismatch", UNPROCESSABLE_ENTITY, "The signature is not the signer's for this call."),
    SignatureCheckGasExceeded = ("signature_check_gas_exceeded", UNPROCESSABLE_ENTITY, "The signer is a contract wallet whose ERC-1271 isValidSignature did not complete within the relayer's gas cap (200,000 gas for the call), or failed other than by reverting."),
    PermitSignatureMismatch = ("permit_signature_mismatch", UNPROCESSABLE_ENTITY, "The permit signature is not the signer's."),
    PermitUnsupported = ("permit_unsupported", UNPROCESSABLE_ENTITY, "The token does not support EIP-2612 permits."),
    Permit2Unavailable = ("permit2_unavailable", UNPROCESSABLE_ENTITY, "Permit2 is not deployed at its canonical address on this chain."),
    Permit2NotApproved = ("permit2_not_approved", UNPROCESSABLE_ENTITY, "The owner has not approved Permit2 on the token for the amount; send approve(Permit2, amount) on the token once."),
    SponsorMismatch = ("sponsor_mismatch", UNPROCESSABLE_ENTITY, "The signed traits allow another relayer than the chosen sponsor."),
    SponsorUnavailable = ("sponsor_unavailable", UNPROCESSABLE_ENTITY, "The sponsor is allowed for the key but not configured on this relayer."),
    NonceOutOfRange = ("nonce_out_of_range", UNPROCESSABLE_ENTITY, "The account nonce exceeds 2^64."),
    SimulationReverted = ("simulation_reverted", UNPROCESSABLE_ENTITY, "The call reverts when simulated; nothing was sent."),
    TransactionReverted = ("transaction_reverted", UNPROCESSABLE_ENTITY, "The transaction was mined but reverted."),
    TransactionFailed = ("transaction_failed", UNPROCESSABLE_ENTITY, "The node refused the transaction; nothing was executed."),
    SponsorFeeCapExceeded = ("sponsor_fee_cap_exceeded", UNPROCESSABLE_ENTITY, "The network's fee per gas is above the sponsor's policy cap; retry later."),
    GasCapExceeded = ("gas_cap_exceeded", UNPROCESSABLE_ENTITY, "The call needs more gas than its operations may use (`[admission]` gas caps)."),
    CallCoolingDown = ("call_cooling_down", TOO_MANY_REQUESTS, "This signed call reverted on chain; it is not relayed again before the cool-down ends."),
    SignerThrottled = ("signer_throttled", TOO_MANY_REQUESTS, "This signer's relayed calls reverted on chain recently: one call per throttle interval; retry later."),
    KeyThrottled = ("key_throttled", TOO_MANY_REQUESTS, "This API key's relayed calls reverted on chain recently: one call per throttle interval; retry later."),
    KeyDailyBudgetExceeded = ("key_daily_budget_exceeded", TOO_MANY_REQUESTS, "This API key's daily gas budget (UTC day, all sponsors) is spent or reserved."),
    SignerDailyBudgetExceeded = ("signer_daily_budget_exceeded", TOO_MANY_REQUESTS, "This signer's daily gas budget (UTC day) is spent or reserved."),
    SponsorDailyBudgetExceeded = ("sponsor_daily_budget_exceeded", TOO_MANY_REQUESTS, "The sponsor's daily budget (UTC) is spent or reserved; retry tomorrow or use another sponsor."),
    KeyBudgetExceeded = ("key_budget_exceeded", TOO_MANY_REQUESTS, "This API key's daily budget on the sponsor (UTC) is spent or reserved."),
    ChainUnavailable = ("chain_unavailable", SERVICE_UNAVAILABLE, "The chain node did not answer; retry later."),
    RequestTimeout = ("request_timeout", SERVICE_UNAVAILABLE, "The request did not complete within the relayer's request timeout (`[server] request_timeout_secs`); retry later. An execute that timed out may still have been queued."),
    ServerBusy = ("server_busy", SERVICE_UNAVAILABLE, "The relayer is already serving its most concurrent requests (`[server] max_concurrent_requests`); retry after `Retry-After` seconds."),
    DatabaseUnavailable = ("database_unavailable", SERVICE_UNAVAILABLE, "The relayer's database did not answer (restarting, overloaded); retry later."),
    TooManyEventStreams = ("too_many_event_streams", SERVICE_UNAVAILABLE, "This relayer process already serves its most open event streams (`[server] max_event_streams`; 0 turns them off); retry after `Retry-After` seconds."),
    IndexNotReady = ("index_not_ready", SERVICE_UNAVAILABLE, "The event index has not reached this deployment yet; retry shortly."),
    Internal = ("internal", INTERNAL_SERVER_ERROR, "A bug or an unavailable dependency; details are in the relayer's logs."),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Published as a string enum whose description is the table of codes, statuses and meanings.
impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let mut table = String::from("Stable error codes.\n\n| code | status | meaning |\n|---|---|---|\n");
        for code in Self::ALL {
            table.push_str(&format!("| `{code}` | {} | {} |\n", code.status().as_u16(), code.description()));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .description(Some(table))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code from the `ErrorCode` schema.
    #[schema(example = "invalid_address")]
    pub code: ErrorCode,
    /// Human-readable; may change.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A client mistake (or a retryable state of ours with its own code): the code, and the
    /// status it implies, are part of the API.
    #[error("{code}: {message}")]
    Client { code: ErrorCode, message: String },
    /// The chain node is unreachable or misbehaving: not the client's fault, worth a retry.
    #[error("chain unavailable: {0:#}")]
    Chain(anyhow::Error),
    /// A bug or an unavailable dependency.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// A failure of ours: a database that cannot be reached (down, restarting, out of connections)
/// is a 503 worth a retry; anything else is a bug.
impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        if err.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(database_unavailable)) {
            tracing::warn!(error = format!("{err:#}"), "database unavailable");
            return Self::new(ErrorCode::DatabaseUnavailable, "the database did not answer; retry later");
        }
        Self::Internal(err)
    }
}

/// Whether a database error means "not reachable right now" rather than a bad query.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: shutdown / cannot connect now.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl AppError {
    /// An answer with `code` (and the status it implies). `api::auth` adds `Retry-After` to a
    /// `rate_limited`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client { code, message: message.into() }
    }

    /// Wraps a failed RPC call.
    pub fn chain(err: impl Into<anyhow::Error>) -> Self {
        Self::Chain(err.into())
    }

    /// `field` held a bad amount.
    pub fn amount(field: &str, err: AmountError) -> Self {
        let code = match err {
            // Not the document's decimal grammar.
            AmountError::Malformed(_) | AmountError::Negative => ErrorCode::InvalidAmount,
            // The grammar's, but a value this call cannot take.
            AmountError::Zero
            | AmountError::TooManyDecimals { .. }
            | AmountError::TooLarge
            | AmountError::RateTooSmall { .. } => ErrorCode::AmountOutOfRange,
        };
        Self::new(code, format!("{field}: {err}"))
    }

    pub fn missing(field: &str) -> Self {
        Self::new(ErrorCode::MissingField, format!("{field} is required"))
    }

    /// The code this error answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } => *code,
            Self::Chain(_) => ErrorCode::ChainUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Client { message, .. } => message.clone(),
            Self::Chain(err) => {
                tracing::warn!(error = format!("{err:#}"), "chain request failed");
                "the chain node did not answer; retry later".to_string()
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "internal error".to_string()
            }
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code(), message } };
        (self.status(), Json(body)).into_response()
    }
}
