//! Discovery: `GET /api/v1/meta` (dated version, capabilities, chain id, changelog link),
//! `GET /openapi.json` (generated from the handlers' `#[utoipa::path]` annotations),
//! `GET /docs` (an interactive page that loads nothing from the internet) and `GET /changelog`.
//!
//! `X-Api-Version` is set on every response by a layer in [`super::app`], errors and 404s
//! included. The catalog of stable error codes is [`super::ErrorCode`]; the document publishes it
//! as the `ErrorCode` schema.

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
        self, ObjectBuilder, RefOr, Type,
        security::{ApiKey as ApiKeyScheme, ApiKeyValue, SecurityScheme},
    },
};

use super::{
    API_VERSION, AppState,
    error::{ErrorBody, ErrorCode, ErrorDetail},
};

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
    "references",
    "transaction_history",
    "fee_quotes",
    "sponsors",
    "sponsor_policies",
    "recipient_resolve",
    "webhooks",
    "api_keys",
    "metrics",
    "request_ids",
    "liquidation_keeper",
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
    super::AppError::new(super::ErrorCode::MethodNotAllowed, format!("{} does not answer {method}", uri.path()))
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
        super::history::list,
        super::history::summary,
        super::transactions::get,
        super::sponsors::list,
        super::sponsors::quote,
        super::resolve::resolve,
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
        super::admin::create,
        super::admin::list,
        super::admin::revoke,
        super::admin::rotate,
        super::admin::delete,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::redeliver,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, ExecuteRequestDoc, PermitRequestDoc, crate::webhooks::WebhookEventType, super::webhooks::WebhookEvent)),
    modifiers(&Security, &Idempotency, &KeyAuth, &References),
    tags(
        (name = "Discovery", description = "Version, capabilities, this document"),
        (name = "Status", description = "Service information and health"),
        (name = "Contracts", description = "Deployments served"),
        (name = "Subscriptions", description = "Payment streams"),
        (name = "Payments", description = "One-time payments, deposits, withdrawals, balances"),
        (name = "Meta-transactions", description = "Nonces and relaying signed calls"),
        (name = "Batch", description = "Atomic multicalls signed once"),
        (name = "Transactions", description = "What the relayer sent"),
        (name = "Admin", description = "API key lifecycle (docs/keys.md)"),
        (name = "Sponsors", description = "Sponsor accounts, spend, policies and fee quotes"),
        (name = "Webhooks", description = "Signed event deliveries to your endpoints (see docs/webhooks.md)"),
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
                "An API key (`sk_test_…` or `sk_live_…`; keys made before 2026-11-21 are `sp_…`). \
                 Each operation names the scope it needs (read, relay, webhooks, admin).",
            ))),
        );
        components.add_security_scheme(
            "admin_jwt",
            SecurityScheme::Http(
                openapi::security::HttpBuilder::new()
                    .scheme(openapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A short-lived HS256 admin token from `streampay admin token` (at most 1 hour)"))
                    .build(),
            ),
        );
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

/// What every keyed operation can also answer, from `api::auth` (one layer in front of all of
/// them), and the scope each needs, from the same rule table the layer uses.
struct KeyAuth;

impl Modify for KeyAuth {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use super::auth::{Access, access_for};
        use openapi::{
            ContentBuilder, HttpMethod, Ref, ResponseBuilder, header::HeaderBuilder, security::SecurityRequirement,
        };
        let extra = [
            ("401", "`key_revoked`, `key_expired`"),
            ("403", "`insufficient_scope`, `ip_not_allowed`"),
            ("429", "`rate_limited`: retry after the Retry-After header's seconds"),
        ];
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Patch, item.patch.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                if op.security.is_none() {
                    continue;
                }
                let method = match method {
                    HttpMethod::Get => axum::http::Method::GET,
                    HttpMethod::Post => axum::http::Method::POST,
                    HttpMethod::Put => axum::http::Method::PUT,
                    HttpMethod::Patch => axum::http::Method::PATCH,
                    _ => axum::http::Method::DELETE,
                };
                match access_for(&method, path) {
                    Access::Key(scope) => {
                        op.security = Some(vec![SecurityRequirement::new("api_key", [scope.as_str()])]);
                    }
                    Access::Admin => admin_ignores_idempotency(op),
                    Access::Public => {}
                }
                for (status, codes) in extra {
                    match op.responses.responses.get_mut(status) {
                        Some(RefOr::T(r)) => {
                            if !r.description.contains(codes) {
                                r.description = format!("{}, {codes}", r.description);
                            }
                        }
                        _ => {
                            let mut r = ResponseBuilder::new().description(codes).content(
                                "application/json",
                                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                            );
                            if status == "429" {
                                r = r.header(
                                    "Retry-After",
                                    HeaderBuilder::new()
                                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                                        .description(Some("Seconds until the key may call again"))
                                        .build(),
                                );
                            }
                            op.responses.responses.insert(status.to_string(), RefOr::T(r.build()));
                        }
                    }
                }
            }
        }
    }
}

/// `api::auth` drops `Idempotency-Key` on admin requests (their answers can hold a key's secret,
/// which is never stored): say so, and take the idempotency errors back out.
fn admin_ignores_idempotency(op: &mut openapi::path::Operation) {
    const CODES: [&str; 3] = ["`invalid_idempotency_key`", "`idempotency_key_in_progress`", "`idempotency_key_reused`"];
    for p in op.parameters.iter_mut().flatten() {
        if p.name == "Idempotency-Key" {
            p.description =
                Some("Ignored on admin endpoints: their answers can hold a secret, which is never stored.".into());
        }
    }
    op.responses.responses.retain(|_, r| match r {
        RefOr::T(r) => {
            for code in CODES {
                r.description = r.description.replace(&format!(", {code}"), "");
            }
            !CODES.contains(&r.description.as_str())
        }
        RefOr::Ref(_) => true,
    });
}

// ---- Schemas of the relay API's answers. The handlers build these bodies as JSON values; the
// types here describe them for the document (field names exactly as served).

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
    /// The account's bySig account nonce: the next ordered nonce to sign with
    /// `NonceType: "account"`, past account nonces in flight. Built calls reserve nothing and
    /// never count; unique-nonce calls (the default) do not use it.
    pub nonce: u64,
    /// `bySigAccountNonces(account)` as of the indexed head (`Block`), or past it when this
    /// relayer has already seen a later nonce mined.
    pub chain_nonce: u64,
    /// The indexed block the answer is computed at.
    pub block: u64,
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
    /// Optional: `Transaction.NonceType` (`unique` or `account`); without it (and without
    /// Traits) both are tried against the signature.
    pub nonce_type: Option<String>,
    /// Deposits: the signed EIP-2612 permit, applied in the same transaction.
    pub permit: Option<PermitRequestDoc>,
    /// Optional label (1 to 255 characters) stored with the transaction; or the `Reference`
    /// header (both must agree when both are sent).
    pub reference: Option<String>,
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
    /// `submitted`, `mined` or `reverted` (the first API version's vocabulary). `mined` only
    /// once the relayer's index has reached the transaction's block, so every read endpoint
    /// already reflects it (read-your-writes); `submitted` until then.
    pub status: String,
    /// Whether the index (every read endpoint) has reached the transaction's block.
    pub indexed: bool,
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
    /// The `Reference` given to execute.
    pub reference: Option<String>,
    /// The user operations run, in order.
    pub operations: Vec<String>,
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
        (status = 503, description = "`index_not_ready`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn meta_nonce_doc() {}

/// Verifies a signed call, simulates it and has the sponsor submit it; answers once mined, or
/// 202 with `Prefer: respond-async`.
#[utoipa::path(post, path = "/api/v1/{contract}/meta/execute", tag = "Meta-transactions",
    params(("contract" = String, Path, description = "Deployment name"),
           ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once sent"),
           ("Reference" = Option<String>, Header, description = "Label (1 to 255 characters) stored with the transaction; see GET /api/v1/transactions?reference=")),
    request_body = ExecuteRequestDoc,
    responses(
        (status = 200, description = "Mined", body = ExecuteResponse),
        (status = 202, description = "Sent, not yet mined", body = ExecuteAccepted),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_signature`, `invalid_data`, `invalid_number`, `invalid_deadline`, `invalid_traits`, `invalid_nonce_type`, `invalid_amount`, `call_not_allowed`, `non_canonical_calldata`, `calldata_too_large`, `empty_batch`, `batch_too_large`, `unknown_contract`, `invalid_reference`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`, `signer_banned`, `key_banned`", body = ErrorBody),
        (status = 409, description = "`nonce_already_used`, `nonce_gap`, `nonce_in_flight`", body = ErrorBody),
        (status = 422, description = "`deadline_expired`, `signature_mismatch`, `permit_signature_mismatch`, `sponsor_mismatch`, `sponsor_unavailable`, `simulation_reverted`, `transaction_reverted`, `transaction_failed`, `nonce_out_of_range`, `sponsor_fee_cap_exceeded`, `gas_cap_exceeded`", body = ErrorBody),
        (status = 429, description = "`sponsor_daily_budget_exceeded`, `key_budget_exceeded`, `key_daily_budget_exceeded`, `signer_daily_budget_exceeded`, `call_cooling_down`, `signer_throttled`, `key_throttled`", body = ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
#[allow(dead_code)]
fn meta_execute_doc() {}

/// An amount a relayed call moved, in StreamPay's internal 18-decimal units.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AmountView {
    /// `deposit`, `depositFor`, `withdraw`, `withdrawTo` or `pay`.
    pub operation: String,
    /// Token units, exact (`"12.5"`).
    pub amount: String,
    /// Internal base units (18 decimals), exact.
    pub amount_raw: String,
}

/// One transaction of `GET /api/v1/transactions`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionListItem {
    pub id: i64,
    /// `submitted`, `mined` or `reverted`.
    pub status: String,
    /// `pending`, `submitted`, `mined`, `confirmed`, `failed`, `replaced` or `expired`.
    pub state: String,
    pub contract: Option<String>,
    pub chain_id: u64,
    pub from: String,
    pub nonce: u64,
    pub sponsor: String,
    pub sponsor_nonce: u64,
    pub transaction_hash: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub failure: Option<String>,
    /// The `Reference` given to execute.
    pub reference: Option<String>,
    /// The user operations run, in order.
    pub operations: Vec<String>,
    pub amounts: Vec<AmountView>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub mined_at: Option<String>,
}

/// `GET /api/v1/transactions`: a page, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionPage {
    pub transactions: Vec<TransactionListItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub limit: u32,
}

/// `GET /api/v1/transactions/summary`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ReferenceSummaryView {
    pub reference: String,
    pub count: u64,
    /// Count per state.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Σ gas used by the mined transactions.
    pub gas_used: u64,
    /// Σ gas used × effective gas price, wei: what the sponsors paid.
    pub gas_cost_wei: String,
    /// Σ amount per operation, of mined transactions.
    pub amounts: Vec<AmountView>,
}

/// A sponsor's policy; every value wei, null for no limit.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorPolicyView {
    pub max_fee_per_gas: Option<String>,
    pub daily_budget: Option<String>,
    pub per_key_daily_budget: Option<String>,
}

/// One sponsor of `GET /api/v1/sponsors`. Amounts are wei as decimal strings; spend counts since
/// UTC midnight.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorView {
    pub address: String,
    /// Used when a request names no sponsor.
    pub default: bool,
    /// Whether this relayer holds the sponsor's key.
    pub configured: bool,
    pub native_balance: String,
    /// Transactions pending or submitted.
    pub in_flight: u64,
    /// `MinedSpendToday` + `ReservedInFlight`: what the daily budget is checked against.
    pub spend_today: String,
    /// Σ gas used × effective gas price of transactions mined today.
    pub mined_spend_today: String,
    /// Σ gas limit × max fee per gas of transactions in flight.
    pub reserved_in_flight: String,
    /// The same as `SpendToday`, for this API key's calls only.
    pub key_spend_today: String,
    pub policy: Option<SponsorPolicyView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorList {
    pub sponsors: Vec<SponsorView>,
}

/// `GET /api/v1/{contract}/fees`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct FeeQuote {
    pub contract: String,
    pub operation: String,
    /// Gas of the relayed transaction.
    pub estimated_gas: u64,
    /// `history` (the most recent mined calls of this operation) or `default` (a measured table).
    pub gas_source: String,
    /// Wei per gas a new transaction would be signed with now.
    pub max_fee_per_gas: String,
    pub max_priority_fee_per_gas: String,
    /// `EstimatedGas` × `MaxFeePerGas`, wei: at most what the sponsor pays.
    pub estimated_cost: String,
    /// The same in native coin, exact decimal (e.g. `"0.00018"`).
    pub estimated_cost_native: String,
    /// The sponsor that would pay.
    pub sponsor: String,
    /// The error code the sponsor's policy would answer an execute with now, or null.
    pub policy_blocks: Option<String>,
}

/// `GET /api/v1/{contract}/recipients/resolve`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RecipientResolution {
    /// As sent.
    pub identifier: String,
    /// A well-formed address that can receive funds (not zero, not the contract).
    pub valid: bool,
    /// Why not, when not valid.
    pub reason: Option<String>,
    /// EIP-55 checksummed form.
    pub address: Option<String>,
    /// The identifier was sent exactly in its checksummed form.
    pub checksum_matches: Option<bool>,
    /// Has an internal balance or streams.
    pub known: Option<bool>,
    pub has_balance: Option<bool>,
    /// Live internal balance in token units (absent when invalid).
    pub balance: Option<String>,
    pub balance_raw: Option<String>,
    /// Streams to or from it.
    pub has_streams: Option<bool>,
    /// Has code (`eth_getCode`): a contract or smart wallet.
    pub is_contract: Option<bool>,
    /// `index` (Postgres) or `chain` (views, while the index has no checkpoint).
    pub source: Option<String>,
}

/// Documents the `Reference` header on every mutating `/api/v1` operation (checked by
/// `history::check_reference`; stored by `meta/execute`).
struct References;

impl Modify for References {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::{
            ContentBuilder, Ref, Required, ResponseBuilder,
            path::{ParameterBuilder, ParameterIn},
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            for op in [item.post.as_mut(), item.delete.as_mut()].into_iter().flatten() {
                let params = op.parameters.get_or_insert_with(Vec::new);
                if !params.iter().any(|p| p.name == "Reference") {
                    params.push(
                        ParameterBuilder::new()
                            .name("Reference")
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(
                                "Optional label, 1 to 255 characters. Checked on every mutating call; the value \
                                 sent to `meta/execute` is stored with the transaction (filter and summarise \
                                 by it under `/api/v1/transactions`).",
                            ))
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(255))))
                            .build(),
                    );
                }
                match op.responses.responses.get_mut("400") {
                    Some(RefOr::T(r)) if r.description.contains("`invalid_reference`") => {}
                    Some(RefOr::T(r)) => r.description = format!("{}, `invalid_reference`", r.description),
                    _ => {
                        let r = ResponseBuilder::new()
                            .description("`invalid_reference`")
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                            )
                            .build();
                        op.responses.responses.insert("400".to_string(), RefOr::T(r));
                    }
                }
            }
        }
    }
}
