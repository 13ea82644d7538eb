//! Client tokens (docs/keys.md, "Keys in the browser"): a server holding a secret key mints a
//! token for one end user, bound to that user's signer address, a list of operations and at most
//! ten minutes; the user's web page sends it as `Authorization: Bearer ct_…` to build and execute
//! that signer's calls, and can check it with `GET /api/v1/auth/token/validate` without spending
//! anything.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppError, AppState, ErrorCode, checksum,
    error::ErrorBody,
    extract::{ApiJson, ApiKey, parse_address},
};
use crate::store::{KeyKind, OPERATIONS, TokenGrant, parse_operation};

/// Longest lifetime of a client token, and the default.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(600);

/// `POST /api/v1/auth/token` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct TokenRequest {
    /// The end user's address: the only `From` the token may build and relay calls for.
    #[schema(value_type = crate::api::schema::Address, required = true)]
    pub signer: Option<String>,
    /// Operations the token allows (`deposit`, `withdraw`, `pay`, `subscribe`, `unsubscribe`);
    /// default: those the key allows.
    #[schema(value_type = Option<Vec<crate::api::schema::Operation>>, min_items = 1, example = json!(["deposit", "subscribe"]))]
    pub operations: Option<Vec<String>>,
    /// Seconds the token lives, 1 to 600; default 600.
    #[schema(example = 600, minimum = 1, maximum = 600)]
    #[serde(default, deserialize_with = "crate::api::extract::integral_u64")]
    pub expires_in: Option<u64>,
}

/// A client token's grant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TokenView {
    /// Checksummed.
    pub signer: String,
    pub operations: Vec<String>,
    /// RFC 3339 UTC.
    #[schema(example = "2026-12-03T10:10:00Z")]
    pub expires_at: String,
    /// Seconds left.
    #[schema(example = 600)]
    pub expires_in: u64,
}

impl From<TokenGrant> for TokenView {
    fn from(g: TokenGrant) -> Self {
        Self {
            signer: checksum(g.signer),
            operations: g.operations,
            expires_at: g.expires_at,
            expires_in: g.expires_in,
        }
    }
}

/// `POST /api/v1/auth/token` answer: the token is shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MintedToken {
    /// Send as `Authorization: Bearer <Token>`.
    #[schema(example = "ct_5f2c…")]
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[serde(flatten)]
    pub grant: TokenView,
}

/// `GET /api/v1/auth/token/validate` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ValidatedToken {
    /// Always true: an unusable token is answered 401.
    pub valid: bool,
    #[serde(flatten)]
    pub grant: TokenView,
}

/// Mints a client token for one end user (secret keys only; the key's origins, contracts and
/// limits apply to the token's requests).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "Client tokens",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Minted; `Token` is shown only now", body = MintedToken),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_address`, `invalid_operation`, `invalid_token_ttl`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`client_token_required`: a publishable key or a token cannot mint tokens; `operation_not_allowed`: an operation the key does not allow", body = ErrorBody),
    ),
    security(("api_key" = ["relay"])))]
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<MintedToken>), AppError> {
    let key = key.0;
    if key.kind != KeyKind::Secret || key.grant.is_some() {
        return Err(AppError::new(
            ErrorCode::ClientTokenRequired,
            "only a secret key (kept on your server) mints client tokens",
        ));
    }
    let signer = parse_address("Signer", req.signer.as_deref().ok_or_else(|| AppError::missing("Signer"))?)?;
    let operations: Vec<&'static str> = match req.operations {
        None => OPERATIONS.into_iter().filter(|op| key.allows_operation(op)).collect(),
        Some(list) => {
            let mut ops = list
                .iter()
                .map(|o| parse_operation(o))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AppError::new(ErrorCode::InvalidOperation, format!("Operations: {e}")))?;
            ops.sort_unstable();
            ops.dedup();
            if let Some(op) = ops.iter().find(|op| !key.allows_operation(op)) {
                return Err(AppError::new(
                    ErrorCode::OperationNotAllowed,
                    format!("Operations: this API key may not build or relay `{op}`"),
                ));
            }
            ops
        }
    };
    if operations.is_empty() {
        return Err(AppError::new(ErrorCode::InvalidOperation, "Operations: name at least one operation"));
    }
    let ttl = match req.expires_in {
        None => MAX_TOKEN_TTL,
        Some(s) if (1..=MAX_TOKEN_TTL.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(AppError::new(
                ErrorCode::InvalidTokenTtl,
                format!("ExpiresIn: from 1 to {} seconds", MAX_TOKEN_TTL.as_secs()),
            ));
        }
    };
    let minted = state.store.create_client_token(key.id, signer, &operations, ttl).await?;
    tracing::info!(key_id = key.id, token_id = minted.grant.token_id, %signer, "client token minted");
    Ok((
        StatusCode::CREATED,
        Json(MintedToken { token: minted.token, token_type: "Bearer", grant: minted.grant.into() }),
    ))
}

/// Checks a client token (sent as `Authorization: Bearer ct_…`) without spending anything: no
/// rate limit or budget counts it.
#[utoipa::path(get, path = "/api/v1/auth/token/validate", tag = "Client tokens",
    responses(
        (status = 200, description = "Usable; what it allows and until when", body = ValidatedToken),
        (status = 401, description = "`missing_api_key`, `invalid_client_token`, `client_token_expired`, `key_revoked`, `key_expired`, `invalid_api_key` (the key that minted it)", body = ErrorBody),
        (status = 403, description = "`client_token_required`, `origin_not_allowed`, `ip_not_allowed`", body = ErrorBody),
    ),
    security(("client_token" = [])))]
pub async fn validate(key: ApiKey) -> Result<Json<ValidatedToken>, AppError> {
    let grant = key.0.grant.ok_or_else(|| {
        AppError::new(ErrorCode::ClientTokenRequired, "send a client token as `Authorization: Bearer ct_…`")
    })?;
    Ok(Json(ValidatedToken { valid: true, grant: grant.into() }))
}
