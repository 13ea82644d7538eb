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
    "creator_events",
];

/// `GET /api/v1/meta`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ApiMeta {
    /// Dated version of the API, also sent as `X-Api-Version` on every response.
    #[schema(example = "2026-11-21")]
    pub api_version: &'static str,
    /// Features this relayer serves.
    pub capabilities: Vec<&'static str>,
    /// The first chain served (a one-chain relayer's chain).
    pub chain_id: u64,
    /// Every chain this relayer serves.
    pub chain_ids: Vec<u64>,
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

/// `GET /api/v1/meta`: what this API is and can do. Public. `permit2_deposit` is listed only
/// where a served chain has Permit2 deployed (a "not deployed" answer is kept for a minute).
#[utoipa::path(get, path = "/api/v1/meta", tag = "Discovery",
    responses((status = 200, description = "API version, capabilities, chain id and links", body = ApiMeta)))]
pub async fn meta(State(state): State<AppState>) -> Json<ApiMeta> {
    let mut permit2 = false;
    for chain in &state.chains {
        // A node that does not answer: not advertised this time, asked again next time.
        if chain.advertises_permit2().await.unwrap_or(false) {
            permit2 = true;
            break;
        }
    }
    Json(ApiMeta {
        api_version: API_VERSION,
        capabilities: CAPABILITIES.iter().copied().filter(|c| permit2 || *c != "permit2_deposit").collect(),
        chain_id: state.chains.first().map(|c| c.chain_id).unwrap_or_default(),
        chain_ids: state.chains.iter().map(|c| c.chain_id).collect(),
        contracts: state.contracts().map(|c| c.name.clone()).collect(),
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
        super::creators::events,
        super::creators::page,
        super::payments::pay,
        super::payments::deposit,
        super::payments::withdraw,
        super::payments::balance,
        super::meta::nonce,
        super::meta::execute,
        super::batch::subscriptions,
        super::batch::payments,
        super::admin::create,
        super::admin::list,
        super::admin::revoke,
        super::admin::rotate,
        super::admin::delete,
        super::tokens::create,
        super::tokens::validate,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::redeliver,
    ),
    components(schemas(super::creators::CreatorEvent, super::schema::Address, super::schema::OptionalAddress, super::schema::Amount, super::schema::HexBytes, super::schema::Signature, super::schema::EcdsaSignature, super::schema::NonceType, super::schema::Uint64, super::schema::Deadline, super::schema::Uint256Value, super::schema::Traits, super::schema::ProjectId, super::schema::Reference, super::schema::OptionalTime, super::schema::Operation, super::creators::CreatorSnapshot, ErrorBody, ErrorDetail, ErrorCode, crate::webhooks::WebhookEventType, super::webhooks::WebhookEvent)),
    modifiers(&Security, &Idempotency, &KeyAuth, &References, &ServerLimits, &CodesByStatus, &OperationIds),
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
        (name = "Client tokens", description = "Short-lived tokens a server mints for one end user's web page (docs/keys.md)"),
        (name = "Sponsors", description = "Sponsor accounts, spend, policies and fee quotes"),
        (name = "Creators", description = "What an author receives, live: server-sent events and the creator page (docs/creators.md)"),
        (name = "Webhooks", description = "Signed event deliveries to your endpoints (see docs/webhooks.md)"),
    )
)]
struct ApiDoc;

struct Security;

/// Every operation's `operationId`, unique as the OpenAPI specification requires (the handlers'
/// function names repeat across modules: `list`, `get`, `create`, `delete`): the method, then the
/// path's segments after `/api/v1` in camel case, a parameter as `By<Name>`, the deployment
/// parameter `{contract}` left out (`GET /api/v1/{contract}/payments/balance/{address}` is
/// `getPaymentsBalanceByAddress`). Generated clients name their calls by it.
struct OperationIds;

/// The `operationId` of `method path`.
pub fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    let rest = path.strip_prefix("/api/v1").unwrap_or(path);
    let mut words = 0;
    for segment in rest.split('/').filter(|s| !s.is_empty() && *s != "{contract}") {
        let (prefix, word) = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(param) => ("By", param),
            None => ("", segment),
        };
        id.push_str(prefix);
        for part in word.split(['_', '-']).filter(|p| !p.is_empty()) {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                id.extend(first.to_uppercase());
                id.push_str(chars.as_str());
            }
        }
        words += 1;
    }
    if words == 0 {
        id.push_str(if rest == "/" || rest.is_empty() { "Root" } else { "Index" });
    }
    id
}

impl Modify for OperationIds {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("patch", item.patch.as_mut()),
                ("delete", item.delete.as_mut()),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    op.operation_id = Some(operation_id(method, path));
                }
            }
        }
    }
}

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
        components.add_security_scheme(
            "client_token",
            SecurityScheme::Http(
                openapi::security::HttpBuilder::new()
                    .scheme(openapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("ct_…")
                    .description(Some(
                        "A client token from POST /api/v1/auth/token (at most 600 seconds), bound to one signer and \
                         a list of operations; it reaches the routes that build and execute those operations",
                    ))
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
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(super::schema::IDEMPOTENCY_KEY_PATTERN))
                            .description(Some("1 to 255 visible ASCII characters")),
                    ))
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
            ("429", "`rate_limited`, `too_many_invalid_keys`: retry after the Retry-After header's seconds"),
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
                        let mut alternatives = vec![SecurityRequirement::new("api_key", [scope.as_str()])];
                        if super::auth::restricted_operation(&method, path).is_some() {
                            alternatives.push(SecurityRequirement::new("client_token", Vec::<String>::new()));
                        }
                        op.security = Some(alternatives);
                    }
                    Access::ClientToken => {}
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
                                "Optional label. Checked on every mutating call; the value sent to \
                                 `meta/execute` is stored with the transaction (filter and summarise by it \
                                 under `/api/v1/transactions`).",
                            ))
                            .schema(Some(Ref::from_schema_name("Reference")))
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

/// Every operation can be answered 503 `request_timeout` or `server_busy` by the limits in front
/// of all routes (`[server] request_timeout_secs`, `max_concurrent_requests`).
struct ServerLimits;

impl Modify for ServerLimits {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::{ContentBuilder, Ref, ResponseBuilder, header::HeaderBuilder};
        const CODES: &str = "`request_timeout`, `server_busy` (with Retry-After)";
        for item in doc.paths.paths.values_mut() {
            let ops =
                [item.get.as_mut(), item.post.as_mut(), item.put.as_mut(), item.patch.as_mut(), item.delete.as_mut()];
            for op in ops.into_iter().flatten() {
                match op.responses.responses.get_mut("503") {
                    Some(RefOr::T(r)) => r.description = format!("{}; {CODES}", r.description),
                    _ => {
                        let r = ResponseBuilder::new()
                            .description(CODES)
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                            )
                            .header(
                                "Retry-After",
                                HeaderBuilder::new()
                                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                                    .description(Some("Seconds to wait after `server_busy`"))
                                    .build(),
                            )
                            .build();
                        op.responses.responses.insert("503".to_string(), RefOr::T(r));
                    }
                }
            }
        }
    }
}

/// Files every error code an operation documents under the status the code really has
/// ([`ErrorCode::status`]), whatever response a handler's annotation listed it under, and adds
/// the 422 refusals that go with a field's 400: an operation that can answer `invalid_address`
/// can also answer `address_refused` (a well-formed address it cannot take), one that can answer
/// `invalid_amount` also `amount_out_of_range`. So a client reading the document finds each code
/// where it will meet it.
struct CodesByStatus;

/// The parts of a response description, one per code: "`a`, `b` (why), `c`: note" gives
/// `[("a", "`a`"), ("b", "`b` (why)"), ("c", "`c`: note")]`; text before the first code has no code.
fn code_parts(description: &str) -> Vec<(Option<ErrorCode>, String)> {
    let mut parts: Vec<(Option<ErrorCode>, String)> = Vec::new();
    for (i, piece) in description.split(", `").enumerate() {
        let piece = if i == 0 { piece.to_string() } else { format!("`{piece}") };
        let code = piece
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .and_then(|(name, _)| ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name));
        match (code, parts.last_mut()) {
            // A ", `" inside one code's note (not a known code) stays with it.
            (None, Some(last)) if i > 0 => last.1 = format!("{}, {piece}", last.1),
            _ => parts.push((code, piece)),
        }
    }
    parts
}

impl Modify for CodesByStatus {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        use openapi::{ContentBuilder, Ref, ResponseBuilder};
        const COMPANIONS: [(ErrorCode, ErrorCode); 2] = [
            (ErrorCode::InvalidAddress, ErrorCode::AddressRefused),
            (ErrorCode::InvalidAmount, ErrorCode::AmountOutOfRange),
        ];
        for item in doc.paths.paths.values_mut() {
            let ops =
                [item.get.as_mut(), item.post.as_mut(), item.put.as_mut(), item.patch.as_mut(), item.delete.as_mut()];
            for op in ops.into_iter().flatten() {
                // (status, part) for every part that has to move, and the companions to add.
                let mut moved: Vec<(String, String)> = Vec::new();
                let mut listed: Vec<ErrorCode> = Vec::new();
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(r) = response else { continue };
                    let mut keep = Vec::new();
                    for (code, part) in code_parts(&r.description) {
                        match code {
                            Some(c) if c.status().as_str() != status => {
                                listed.push(c);
                                moved.push((c.status().as_str().to_string(), part));
                            }
                            Some(c) => {
                                listed.push(c);
                                keep.push(part);
                            }
                            None => keep.push(part),
                        }
                    }
                    r.description = keep.join(", ");
                }
                for (field_code, companion) in COMPANIONS {
                    if listed.contains(&field_code) && !listed.contains(&companion) {
                        moved.push((companion.status().as_str().to_string(), format!("`{}`", companion.as_str())));
                    }
                }
                for (status, part) in moved {
                    match op.responses.responses.get_mut(&status) {
                        Some(RefOr::T(r)) if r.description.is_empty() => r.description = part,
                        Some(RefOr::T(r)) => r.description = format!("{}, {part}", r.description),
                        _ => {
                            let r = ResponseBuilder::new()
                                .description(part)
                                .content(
                                    "application/json",
                                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                                )
                                .build();
                            op.responses.responses.insert(status, RefOr::T(r));
                        }
                    }
                }
                // A response whose every code moved away is gone.
                op.responses.responses.retain(|_, r| !matches!(r, RefOr::T(r) if r.description.is_empty()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_sits_under_its_own_status_with_its_companions() {
        let doc = document();
        let mut seen = 0;
        for (path, item) in &doc.paths.paths {
            let ops = [&item.get, &item.post, &item.put, &item.patch, &item.delete];
            for op in ops.into_iter().flatten() {
                let mut codes = Vec::new();
                for (status, response) in &op.responses.responses {
                    let RefOr::T(r) = response else { continue };
                    for (code, part) in code_parts(&r.description) {
                        if let Some(c) = code {
                            assert_eq!(c.status().as_str(), status, "{path}: {part} is documented under {status}");
                            codes.push(c);
                            seen += 1;
                        }
                    }
                }
                if codes.contains(&ErrorCode::InvalidAddress) {
                    assert!(codes.contains(&ErrorCode::AddressRefused), "{path} lacks address_refused");
                }
                if codes.contains(&ErrorCode::InvalidAmount) {
                    assert!(codes.contains(&ErrorCode::AmountOutOfRange), "{path} lacks amount_out_of_range");
                }
            }
        }
        assert!(seen > 100, "only {seen} codes found in the document's responses");
    }

    #[test]
    fn a_description_splits_into_one_part_per_code() {
        let parts = code_parts(
            "`invalid_json`, `permit_unsupported` (no EIP-2612, no Permit2), `nonce_gap`: a note, with a comma",
        );
        let codes: Vec<_> = parts.iter().map(|(c, _)| c.map(|c| c.as_str())).collect();
        assert_eq!(codes, [Some("invalid_json"), Some("permit_unsupported"), Some("nonce_gap")]);
        assert_eq!(parts[2].1, "`nonce_gap`: a note, with a comma");
        assert_eq!(code_parts("Mined")[0], (None, "Mined".to_string()));
    }
}
