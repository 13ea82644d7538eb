//! Discovery: `GET /api/v1/meta` (dated version, capabilities, chain id, changelog link),
//! `GET /openapi.json` (generated from the handlers' `#[utoipa::path]` annotations),
//! `GET /docs` (an interactive page that loads nothing from the internet) and `GET /changelog`.
//!
//! `X-Api-Version` is set on every response by a layer in [`super::app`], errors and 404s
//! included. [`ERROR_CODES`] is the catalog of every stable error code; it is published in the
//! OpenAPI document as the `ErrorCode` schema and checked against the source by a test.

use std::sync::OnceLock;

use axum::{
    Json,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
};
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        self, Object, ObjectBuilder, RefOr, Schema, Type,
        security::{ApiKey as ApiKeyScheme, ApiKeyValue, SecurityScheme},
    },
};

use super::{API_VERSION, AppState};

/// Features this relayer serves, named as in the changelog; clients can feature-detect on them.
pub const CAPABILITIES: &[&str] = &[
    "meta_transactions",
    "eip2612_permit_deposit",
    "permit2_deposit",
    "batch_payments",
    "batch_subscriptions",
    "respond_async",
    "transaction_status",
    "health",
    "openapi",
];

/// Every stable error code: `(code, HTTP status, meaning)`. A client can switch on `code`; the
/// message is for humans and may change.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    ("invalid_json", 400, "The body is not JSON of the expected shape, or lacks Content-Type: application/json."),
    ("invalid_query", 400, "A query parameter is malformed."),
    ("missing_field", 400, "A required field is missing or empty."),
    ("invalid_address", 400, "Not a 0x-prefixed 20-byte address, a bad EIP-55 checksum, or a forbidden address (zero, self)."),
    ("invalid_amount", 400, "Not a positive decimal amount with at most the allowed decimals."),
    ("invalid_number", 400, "Expected a non-negative integer."),
    ("invalid_project_id", 400, "project_id is not a non-negative integer."),
    ("invalid_data", 400, "Data is not 0x-prefixed hex."),
    ("invalid_signature", 400, "The signature is malformed."),
    ("invalid_traits", 400, "Traits is not a valid bySig traits word."),
    ("invalid_deadline", 400, "Deadline does not fit the 40-bit traits field."),
    ("invalid_idempotency_key", 400, "Idempotency-Key is not 1 to 255 visible ASCII characters."),
    ("call_not_allowed", 400, "Data is not an allowed StreamPay user operation."),
    ("empty_batch", 400, "A batch holds no items."),
    ("batch_too_large", 400, "A batch holds more than 100 items."),
    ("unknown_contract", 400, "No deployment has this name (see GET /api/v1/contracts)."),
    ("unknown_operation", 400, "The fee quote's operation is not one this relayer builds."),
    ("invalid_metrics_token", 401, "A metrics token is configured and GET /metrics was called without it."),
    ("missing_api_key", 401, "No X-API-Key header."),
    ("invalid_api_key", 401, "The API key is unknown or revoked."),
    ("sponsor_not_allowed", 403, "The API key may not use this sponsor."),
    ("not_found", 404, "No endpoint at this path."),
    ("method_not_allowed", 405, "The path exists but not with this method."),
    ("transaction_not_found", 404, "No such transaction for this API key."),
    ("nonce_already_used", 409, "The signed nonce was already consumed on chain."),
    ("nonce_gap", 409, "The signed nonce is not the signer's next one."),
    ("nonce_in_flight", 409, "A call with this nonce is already being relayed."),
    ("idempotency_key_in_progress", 409, "A request with this Idempotency-Key is still running; retry shortly."),
    ("idempotency_key_reused", 422, "This Idempotency-Key was used for a different request."),
    ("deadline_expired", 422, "The signed deadline has passed."),
    ("signature_mismatch", 422, "The signature is not the signer's for this call."),
    ("permit_signature_mismatch", 422, "The permit signature is not the signer's."),
    ("permit_unsupported", 422, "The token does not support EIP-2612 permits."),
    ("sponsor_mismatch", 422, "The signed traits allow another relayer than the chosen sponsor."),
    ("sponsor_unavailable", 422, "The sponsor is allowed for the key but not configured on this relayer."),
    ("nonce_out_of_range", 422, "The account nonce exceeds 2^64."),
    ("simulation_reverted", 422, "The call reverts when simulated; nothing was sent."),
    ("transaction_reverted", 422, "The transaction was mined but reverted."),
    ("transaction_failed", 422, "The node refused the transaction; nothing was executed."),
    ("chain_unavailable", 503, "The chain node did not answer; retry later."),
    ("index_not_ready", 503, "The event index has not reached this deployment yet; retry shortly."),
    ("internal", 500, "A bug or an unavailable dependency; details are in the relayer's logs."),
];

/// `GET /api/v1/meta`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiMeta {
    /// Dated version of the API, also sent as `X-Api-Version` on every response.
    #[schema(example = "2026-11-21")]
    pub api_version: &'static str,
    /// Features this relayer serves.
    pub capabilities: Vec<&'static str>,
    pub chain_id: u64,
    /// Deployment names usable as `{contract}`.
    pub contracts: Vec<String>,
    /// Dated changelog; lines marked "Action required" need integrators to act.
    #[schema(example = "/changelog")]
    pub changelog: &'static str,
    #[schema(example = "/openapi.json")]
    pub openapi: &'static str,
    #[schema(example = "/docs")]
    pub docs: &'static str,
}

/// `GET /api/v1/meta`: what this API is and can do. Public.
#[utoipa::path(get, path = "/api/v1/meta", tag = "Discovery",
    responses((status = 200, description = "API version, capabilities, chain id and links", body = ApiMeta)))]
pub async fn meta(State(state): State<AppState>) -> Json<ApiMeta> {
    Json(ApiMeta {
        api_version: API_VERSION,
        capabilities: CAPABILITIES.to_vec(),
        chain_id: state.chain_id,
        contracts: state.contracts.iter().map(|c| c.name.clone()).collect(),
        changelog: "/changelog",
        openapi: "/openapi.json",
        docs: "/docs",
    })
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API. Public.
#[utoipa::path(get, path = "/openapi.json", tag = "Discovery",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    // Generated once: the document depends only on the code.
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| document().to_json().expect("the OpenAPI document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}

/// `GET /docs`: an interactive page built on `/openapi.json` (self-contained: no CDN).
#[utoipa::path(get, path = "/docs", tag = "Discovery",
    responses((status = 200, description = "Interactive API documentation (HTML)", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// `GET /changelog`: the dated changelog (Markdown).
#[utoipa::path(get, path = "/changelog", tag = "Discovery",
    responses((status = 200, description = "CHANGELOG.md", content_type = "text/markdown")))]
pub async fn changelog() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], include_str!("../../CHANGELOG.md"))
}

/// A known path with another method: a typed 405 like every other error.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> super::AppError {
    super::AppError::Client {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} does not answer {method}", uri.path()),
    }
}

/// The OpenAPI document, with the error-code catalog attached.
pub fn document() -> openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StreamPay Relayer",
        description = "Build, sign and relay gasless StreamPay meta-transactions.\n\n\
            Every mutating endpoint except `meta/execute` *builds* a meta-transaction: sign its \
            `Transaction.TypedData` with `eth_signTypedData_v4` and POST it to `meta/execute`. \
            Keyed endpoints need `X-API-Key`. Paths ending in `/` also answer without it, and the \
            other way round. Errors are `{\"error\": {\"code\", \"message\"}}`; the `ErrorCode` \
            schema lists every code. Every response carries `X-Api-Version`.",
    ),
    paths(
        super::info::root,
        super::health::health,
        super::metrics::metrics,
        meta,
        openapi_json,
        docs,
        changelog,
        super::info::contracts,
        super::transactions::get,
        super::subscriptions::create,
        super::subscriptions::list,
        super::subscriptions::incoming,
        super::subscriptions::cancel,
        super::payments::pay,
        super::payments::deposit,
        super::payments::withdraw,
        super::payments::balance,
        meta_nonce_doc,
        meta_execute_doc,
        super::batch::subscriptions,
        super::batch::payments,
    ),
    components(schemas(ErrorBody, ErrorDetail, ExecuteRequestDoc, PermitRequestDoc)),
    modifiers(&Security, &ErrorCodes, &Idempotency),
    tags(
        (name = "Discovery", description = "Version, capabilities, this document"),
        (name = "Status", description = "Service information and health"),
        (name = "Contracts", description = "Deployments served"),
        (name = "Subscriptions", description = "Payment streams"),
        (name = "Payments", description = "One-time payments, deposits, withdrawals, balances"),
        (name = "Meta-transactions", description = "Nonces and relaying signed calls"),
        (name = "Batch", description = "Atomic multicalls signed once"),
        (name = "Transactions", description = "What the relayer sent"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        // The API is versioned by date, not by the crate's semver.
        doc.info.version = API_VERSION.into();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`sp_test_…` or `sp_live_…`)",
            ))),
        );
    }
}

/// Publishes [`ERROR_CODES`] as the `ErrorCode` string enum, its description a table.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let mut table = String::from("Stable error codes.\n\n| code | status | meaning |\n|---|---|---|\n");
        for (code, status, meaning) in ERROR_CODES {
            table.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
        }
        let schema: Object = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ERROR_CODES.iter().map(|(c, _, _)| *c)))
            .description(Some(table))
            .build();
        doc.components.get_or_insert_with(Default::default).schemas.insert("ErrorCode".into(), RefOr::T(Schema::Object(schema)));
    }
}

/// Every POST accepts `Idempotency-Key` (a layer in front of all handlers): documented once here
/// for all of them, with the errors it adds.
struct Idempotency;

impl Modify for Idempotency {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::{
            ContentBuilder, Ref, Required, ResponseBuilder,
            path::{ParameterBuilder, ParameterIn},
        };
        let extra = [
            ("400", "`invalid_idempotency_key`"),
            ("409", "`idempotency_key_in_progress`"),
            ("422", "`idempotency_key_reused`"),
        ];
        for item in doc.paths.paths.values_mut() {
            let Some(op) = item.post.as_mut() else { continue };
            op.parameters.get_or_insert_with(Vec::new).push(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "Same key + same request replays the first answer (`Idempotent-Replayed: true`) and \
                         runs nothing again; same key + another request is `idempotency_key_reused`.",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(255))))
                    .build(),
            );
            for (status, codes) in extra {
                match op.responses.responses.get_mut(status) {
                    Some(RefOr::T(r)) => r.description = format!("{}, {codes}", r.description),
                    _ => {
                        let r = ResponseBuilder::new()
                            .description(codes)
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                            )
                            .build();
                        op.responses.responses.insert(status.to_string(), RefOr::T(r));
                    }
                }
            }
        }
    }
}

// ---- Schemas of the relay API's answers. The handlers build these bodies as JSON values; the
// types here describe them for the document (field names exactly as served).

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code from the `ErrorCode` schema.
    #[schema(example = "invalid_address")]
    pub code: String,
    /// Human-readable; may change.
    pub message: String,
}

/// `GET /`: service information.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ApiInfo {
    pub message: String,
    #[schema(example = "2026-11-21")]
    pub api_version: String,
    /// By deployment name.
    pub contracts: std::collections::BTreeMap<String, ContractStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ContractStatus {
    pub address: String,
    pub token: String,
    pub token_decimals: u8,
    pub chain_id: u64,
    /// `ok`, `not_deployed` or `unreachable`.
    #[schema(example = "ok")]
    pub status: String,
}

/// An item of `GET /api/v1/contracts`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ContractSummary {
    #[schema(example = "USDC")]
    pub name: String,
    pub address: String,
}

/// The answer of every build endpoint: sign `Transaction.TypedData` (and `PermitTypedData` for
/// deposits) and POST the signature to `meta/execute`. Besides `Message`, `Transaction` and
/// `Sponsor`, each endpoint adds the exact figures of what it built (the optional fields).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BuildResponse {
    pub message: String,
    pub transaction: super::build::MetaTransaction,
    /// The sponsor that will pay the gas (bound into the signed traits).
    pub sponsor: String,
    /// payments, deposit, withdraw: the amount in token units.
    pub amount: Option<String>,
    /// payments, withdraw: 18-decimal internal units; deposit: token base units.
    pub amount_raw: Option<String>,
    /// withdraw: token base units that will leave the contract.
    pub token_amount_raw: Option<String>,
    /// withdraw: the receiver.
    pub to: Option<String>,
    /// deposit: pulled through Permit2 instead of `transferFrom`.
    pub is_permit2: Option<bool>,
    /// subscriptions (create, cancel): the author.
    pub author: Option<String>,
    /// subscriptions: token units per 30-day month, as requested.
    pub subscription_rate: Option<String>,
    /// subscriptions: the on-chain rate, 18-decimal base units per second.
    pub rate_per_second: Option<String>,
    /// subscriptions: what the per-second rate amounts to per 30-day month.
    pub effective_monthly_rate: Option<String>,
    pub project_id: Option<String>,
    /// batch/subscriptions: the details of each subscription.
    #[schema(value_type = Option<Vec<Object>>)]
    pub subscriptions: Option<Vec<serde_json::Value>>,
    /// batch/payments: each payment (`To`, `Amount`, `AmountRaw`).
    #[schema(value_type = Option<Vec<Object>>)]
    pub payments: Option<Vec<serde_json::Value>>,
    /// batch/payments: the sum, in token units and in 18-decimal base units.
    pub total: Option<String>,
    pub total_raw: Option<String>,
}

/// `GET /{contract}/subscriptions/{address}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionList {
    pub address: String,
    pub subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionView {
    /// The author.
    pub to: String,
    /// bits 0–95 income rate, 96–191 outgoing rate, 192+ projectId.
    pub encoded_rates: String,
    /// What the author receives per second (18-decimal base units).
    pub income_rate: String,
    /// What the subscriber pays per second (income + project fee).
    pub outgoing_rate: String,
    pub project_id: String,
}

/// `GET /{contract}/authors/{author}/streams`: what a creator receives.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IncomingStreamList {
    pub author: String,
    pub streams: Vec<IncomingStreamView>,
    /// Sum of the streams' income rates per second (18-decimal base units).
    pub streams_income_rate: String,
    /// The author's whole income rate per second, project fees it receives as an owner included
    /// (equals the chain's `accountInfo(author).incomeRate`).
    pub income_rate: String,
    /// The block the answer was computed at (the index's head).
    pub indexed_block: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IncomingStreamView {
    /// The subscriber.
    pub from: String,
    /// bits 0–95 income rate, 96–191 outgoing rate, 192+ projectId.
    pub encoded_rates: String,
    /// What the author receives per second (18-decimal base units).
    pub income_rate: String,
    /// What the subscriber pays per second (income + project fee).
    pub outgoing_rate: String,
    pub project_id: String,
    /// Block and chain time at which the stream started.
    pub since_block: u64,
    pub since_timestamp: u64,
}

/// `GET /{contract}/payments/balance/{address}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BalanceView {
    pub address: String,
    /// Live balance in token units, floored at zero.
    #[schema(example = "12.5")]
    pub balance: String,
    /// The same in 18-decimal base units.
    pub balance_raw: String,
    #[schema(example = 18)]
    pub decimals: u32,
}

/// `GET /{contract}/meta/nonce/{account}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NonceView {
    pub account: String,
    /// The nonce to sign next, counting calls built or in flight.
    pub nonce: u64,
    /// `bySigAccountNonces(account)` on chain.
    pub chain_nonce: u64,
}

/// `POST /{contract}/meta/execute` request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = ExecuteRequest)]
pub struct ExecuteRequestDoc {
    pub from: String,
    /// 65-byte ECDSA signature (or ERC-1271 bytes) over `Transaction.TypedData`.
    pub signature: String,
    /// `Transaction.Data`.
    pub data: String,
    /// `Transaction.Nonce` (number or decimal string).
    pub nonce: String,
    pub sponsor: Option<String>,
    /// `Transaction.Deadline` (number or decimal string).
    pub deadline: String,
    /// Optional: the exact `Transaction.Traits`.
    pub traits: Option<String>,
    /// Deposits: the signed EIP-2612 permit, applied in the same transaction.
    pub permit: Option<PermitRequestDoc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = PermitRequest)]
pub struct PermitRequestDoc {
    /// Token base units, as in `PermitTypedData.message.value`.
    pub value: String,
    pub deadline: String,
    pub signature: String,
}

/// `POST /{contract}/meta/execute`: mined.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteResponse {
    pub message: String,
    pub from: String,
    pub transaction_hash: String,
    pub gas_used: u64,
    pub block_number: Option<u64>,
    pub sponsor: String,
    pub transaction_id: i64,
}

/// `POST /{contract}/meta/execute` with `Prefer: respond-async` (or a receipt timeout): sent,
/// not yet mined; poll `Status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteAccepted {
    pub message: String,
    pub from: String,
    pub transaction_hash: String,
    /// Always null here.
    pub gas_used: Option<u64>,
    pub transaction_id: i64,
    /// `/api/v1/transactions/{id}`.
    pub status: String,
}

/// `GET /api/v1/transactions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionView {
    pub id: i64,
    /// `submitted`, `mined` or `reverted` (the first API version's vocabulary).
    pub status: String,
    /// The pipeline's own state (`pending`, `submitted`, `mined`, `confirmed`, `failed`, …).
    pub state: String,
    pub contract: Option<String>,
    pub chain_id: u64,
    pub from: String,
    pub nonce: u64,
    pub sponsor: String,
    pub transaction_hash: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub sponsor_nonce: u64,
    /// Every hash signed for it (fee bumps replace the transaction), oldest first.
    pub hashes: Vec<String>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// The decoded revert, if it reverted.
    pub revert_reason: Option<String>,
    /// The last error the node answered while sending it.
    pub last_error: Option<String>,
}

// `meta.rs` belongs to the pipeline work; its handlers are documented here until their own
// annotations land.

/// The nonce to sign next for `account`.
#[utoipa::path(get, path = "/api/v1/{contract}/meta/nonce/{account}", tag = "Meta-transactions",
    params(("contract" = String, Path, description = "Deployment name"), ("account" = String, Path, description = "Signer address")),
    responses(
        (status = 200, description = "Next nonce", body = NonceView),
        (status = 400, description = "`unknown_contract`, `invalid_address`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 422, description = "`nonce_out_of_range`", body = ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn meta_nonce_doc() {}

/// Verifies a signed call, simulates it and has the sponsor submit it; answers once mined, or
/// 202 with `Prefer: respond-async`.
#[utoipa::path(post, path = "/api/v1/{contract}/meta/execute", tag = "Meta-transactions",
    params(("contract" = String, Path, description = "Deployment name"),
           ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once sent")),
    request_body = ExecuteRequestDoc,
    responses(
        (status = 200, description = "Mined", body = ExecuteResponse),
        (status = 202, description = "Sent, not yet mined", body = ExecuteAccepted),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_signature`, `invalid_data`, `invalid_number`, `invalid_deadline`, `invalid_traits`, `invalid_amount`, `call_not_allowed`, `empty_batch`, `batch_too_large`, `unknown_contract`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = ErrorBody),
        (status = 409, description = "`nonce_already_used`, `nonce_gap`, `nonce_in_flight`", body = ErrorBody),
        (status = 422, description = "`deadline_expired`, `signature_mismatch`, `permit_signature_mismatch`, `sponsor_mismatch`, `sponsor_unavailable`, `simulation_reverted`, `transaction_reverted`, `transaction_failed`, `nonce_out_of_range`", body = ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn meta_execute_doc() {}
