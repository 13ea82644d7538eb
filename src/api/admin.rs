//! Key management under `/api/v1/admin/keys` (docs/keys.md): create, list, revoke, rotate,
//! delete. Authenticated by [`super::auth`]: an admin JWT or a key with the `admin` scope. The
//! `streampay keys …` commands do the same against Postgres directly.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorCode;
use super::{AppError, AppState, checksum, error::ErrorBody, extract::ApiJson, parse_address};
use crate::{
    amount::{format_units, parse_amount},
    store::{
        Environment, KeyBounds, KeyChange, KeyInfo, KeyKind, KeySpec, NewApiKey, Scope, parse_cidr, parse_operation,
        parse_origin,
    },
};

/// Largest `rate_limit_per_minute`.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Longest `expires_in_seconds`: ten years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest rotation grace period: seven days.
pub const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;
/// Most entries in `allowed_cidrs`.
pub const MAX_CIDRS: usize = 100;
/// Most entries in `allowed_origins`, `allowed_contracts`.
pub const MAX_LIST: usize = 100;
/// Scopes of a key created without `scopes`.
pub const DEFAULT_SCOPES: [Scope; 2] = [Scope::Read, Scope::Relay];

/// `POST /api/v1/admin/keys` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    /// To recognise the key by (1–100 characters).
    #[schema(example = "checkout backend")]
    #[serde(alias = "name")]
    pub name: Option<String>,
    /// `test` (default; an `sk_test_` key) or `live` (`sk_live_`).
    #[schema(example = "test")]
    #[serde(alias = "environment")]
    pub environment: Option<String>,
    /// Any of `read`, `relay`, `webhooks`, `admin`; default `["read", "relay"]`.
    #[schema(example = json!(["read", "relay"]))]
    #[serde(alias = "scopes")]
    pub scopes: Option<Vec<String>>,
    /// Sponsors the key may use, the default first; default: every sponsor of this relayer (for
    /// a publishable key, its first sponsor only).
    #[serde(alias = "sponsors")]
    pub sponsors: Option<Vec<String>>,
    /// The key stops working this many seconds from now; default: never.
    #[schema(example = 2592000)]
    #[serde(alias = "expires_in_seconds")]
    pub expires_in_seconds: Option<u64>,
    /// Networks the key may be used from (`10.0.0.0/8`, `2001:db8::/32`, or one address);
    /// default: anywhere.
    #[schema(example = json!(["203.0.113.0/24"]))]
    #[serde(alias = "allowed_cidrs")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Requests per minute (per relayer process); default: unlimited. Required for a
    /// publishable key.
    #[schema(example = 600)]
    #[serde(alias = "rate_limit_per_minute")]
    pub rate_limit_per_minute: Option<u32>,
    /// `secret` (default; an `sk_` key, kept on servers) or `publishable` (a `pk_` key, safe in a
    /// web page: only the `relay` scope, and every bound below is required; see docs/keys.md).
    #[schema(example = "secret")]
    #[serde(alias = "kind")]
    pub kind: Option<String>,
    /// Web origins whose pages may call the API with this key (CORS), e.g.
    /// `https://app.example`; default: none.
    #[schema(example = json!(["https://app.example"]))]
    #[serde(alias = "allowed_origins")]
    pub allowed_origins: Option<Vec<String>>,
    /// Deployment names the key may use (`USDC`); default: any. Required for a publishable key.
    #[schema(example = json!(["USDC"]))]
    #[serde(alias = "allowed_contracts")]
    pub allowed_contracts: Option<Vec<String>>,
    /// Operations the key may build and relay: `deposit`, `withdraw`, `pay`, `subscribe`,
    /// `unsubscribe`; default: any. Required for a publishable key.
    #[schema(example = json!(["deposit", "subscribe"]))]
    #[serde(alias = "allowed_operations")]
    pub allowed_operations: Option<Vec<String>>,
    /// Relayed calls per signer per minute (per relayer process). Required for a publishable key.
    #[schema(example = 10)]
    #[serde(alias = "signer_rate_limit_per_minute")]
    pub signer_rate_limit_per_minute: Option<u32>,
    /// Gas the key may spend per UTC day, in the native coin (`"0.05"`), tightening the
    /// relayer's `[admission] key_daily_budget`. Required for a publishable key.
    #[schema(example = "0.05")]
    #[serde(alias = "daily_budget")]
    pub daily_budget: Option<String>,
    /// Gas one signer may spend through this key per UTC day, in the native coin. Required for a
    /// publishable key.
    #[schema(example = "0.005")]
    #[serde(alias = "signer_daily_budget")]
    pub signer_daily_budget: Option<String>,
}

/// `POST /api/v1/admin/keys/{id}/rotate` request (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "PascalCase")]
pub struct RotateKeyRequest {
    /// Seconds the old key keeps working (at most 7 days); default 0: revoked at once.
    #[schema(example = 3600)]
    #[serde(alias = "grace_seconds")]
    pub grace_seconds: Option<u64>,
}

/// A key's metadata; never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "sk_test_1a2b3c4d")]
    pub prefix: String,
    /// `test` or `live`.
    pub environment: String,
    #[schema(example = json!(["read", "relay"]))]
    pub scopes: Vec<String>,
    /// Checksummed addresses, the default first.
    pub sponsors: Vec<String>,
    pub allowed_cidrs: Vec<String>,
    pub rate_limit_per_minute: Option<i32>,
    /// `active`, `revoked` or `expired`.
    #[schema(example = "active")]
    pub status: String,
    /// RFC 3339 UTC.
    #[schema(example = "2026-11-21T09:00:00Z")]
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// When this key was replaced by a rotation.
    pub rotated_at: Option<String>,
    /// The key this one replaced.
    pub rotated_from: Option<i64>,
    /// `secret` or `publishable`.
    #[schema(example = "secret")]
    pub kind: String,
    pub allowed_origins: Vec<String>,
    /// Empty: any.
    pub allowed_contracts: Vec<String>,
    /// Empty: any.
    pub allowed_operations: Vec<String>,
    pub signer_rate_limit_per_minute: Option<u32>,
    /// Native coin per UTC day.
    pub daily_budget: Option<String>,
    pub signer_daily_budget: Option<String>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            environment: k.environment,
            scopes: k.scopes,
            sponsors: k.sponsors.into_iter().map(checksum).collect(),
            allowed_cidrs: k.allowed_cidrs,
            rate_limit_per_minute: k.rate_limit_per_minute,
            status: k.status,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            rotated_at: k.rotated_at,
            rotated_from: k.rotated_from,
            kind: k.kind.as_str().to_string(),
            allowed_origins: k.bounds.allowed_origins,
            allowed_contracts: k.bounds.allowed_contracts,
            allowed_operations: k.bounds.allowed_operations,
            signer_rate_limit_per_minute: k.bounds.signer_rate_limit_per_minute,
            daily_budget: k.bounds.daily_budget_wei.map(|w| format_units(w, 18)),
            signer_daily_budget: k.bounds.signer_daily_budget_wei.map(|w| format_units(w, 18)),
        }
    }
}

/// A key just created or rotated: `key` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedKey {
    /// The secret. Store it now: only its hash is kept.
    #[schema(example = "sk_test_1a2b3c4d…")]
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

/// `GET /api/v1/admin/keys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct KeyList {
    /// Every key not deleted, oldest first.
    pub keys: Vec<KeyView>,
}

/// `DELETE /api/v1/admin/keys/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeletedKey {
    pub id: i64,
    pub deleted: bool,
}

fn parse_id(id: &str) -> Result<i64, AppError> {
    id.trim().parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(|| not_found(id))
}

fn not_found(id: impl std::fmt::Display) -> AppError {
    AppError::new(ErrorCode::KeyNotFound, format!("no API key #{id}"))
}

async fn created(state: &AppState, new: NewApiKey) -> Result<CreatedKey, AppError> {
    let info = state.store.key_info(new.id).await?.ok_or_else(|| not_found(new.id))?;
    Ok(CreatedKey { key: new.key, info: info.into() })
}

/// Checks a create request into a [`KeySpec`]; every mistake is a typed 400.
pub fn key_spec(
    req: CreateKeyRequest,
    default_sponsors: &[alloy::primitives::Address],
    known_contracts: &[String],
) -> Result<KeySpec, AppError> {
    let name = req.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(AppError::missing("name"));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::new(
            ErrorCode::InvalidKeyName,
            "name: at most 100 characters, none of them control characters",
        ));
    }
    let environment = match req.environment.as_deref() {
        None => Environment::Test,
        Some(e) => e.parse().map_err(|e: String| AppError::new(ErrorCode::InvalidEnvironment, e))?,
    };
    let publishable = req.kind.as_deref().is_some_and(|k| k.trim() == "publishable");
    let scopes = match req.scopes {
        None if publishable => vec![Scope::Relay],
        None => DEFAULT_SCOPES.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(AppError::new(ErrorCode::InvalidScope, "scopes: name at least one scope"));
        }
        Some(list) => list
            .iter()
            .map(|s| s.parse::<Scope>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppError::new(ErrorCode::InvalidScope, format!("scopes: {e}")))?,
    };
    let sponsors = match req.sponsors {
        // A page's key spends one sponsor's gas unless the operator lists more.
        None if publishable => default_sponsors.iter().take(1).copied().collect(),
        None => default_sponsors.to_vec(),
        Some(list) => list.iter().map(|s| parse_address("sponsors", s)).collect::<Result<Vec<_>, _>>()?,
    };
    if sponsors.is_empty() {
        return Err(AppError::missing("sponsors"));
    }
    let expires_in_secs = match req.expires_in_seconds {
        Some(s) if s == 0 || s > MAX_EXPIRY_SECS => {
            return Err(AppError::new(
                ErrorCode::InvalidExpiry,
                format!("ExpiresInSeconds: from 1 to {MAX_EXPIRY_SECS}"),
            ));
        }
        other => other,
    };
    let cidrs = req.allowed_cidrs.unwrap_or_default();
    if cidrs.len() > MAX_CIDRS {
        return Err(AppError::new(ErrorCode::InvalidCidr, format!("AllowedCidrs: at most {MAX_CIDRS} entries")));
    }
    let allowed_cidrs = cidrs
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::new(ErrorCode::InvalidCidr, format!("AllowedCidrs: {e}")))?;
    for (field, rate) in [
        ("RateLimitPerMinute", req.rate_limit_per_minute),
        ("SignerRateLimitPerMinute", req.signer_rate_limit_per_minute),
    ] {
        if let Some(r) = rate
            && (r == 0 || r > MAX_RATE_LIMIT)
        {
            return Err(AppError::new(ErrorCode::InvalidRateLimit, format!("{field}: from 1 to {MAX_RATE_LIMIT}")));
        }
    }
    let kind = match req.kind.as_deref() {
        None => KeyKind::Secret,
        Some(k) => k.parse().map_err(|e: String| AppError::new(ErrorCode::InvalidKeyKind, e))?,
    };
    let list = |field: &str, items: Option<Vec<String>>| -> Result<Vec<String>, AppError> {
        let items = items.unwrap_or_default();
        if items.len() > MAX_LIST {
            return Err(AppError::new(ErrorCode::InvalidKeyKind, format!("{field}: at most {MAX_LIST} entries")));
        }
        Ok(items)
    };
    let mut allowed_origins = list("AllowedOrigins", req.allowed_origins)?
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::new(ErrorCode::InvalidOrigin, format!("AllowedOrigins: {e}")))?;
    allowed_origins.dedup();
    let allowed_contracts = list("AllowedContracts", req.allowed_contracts)?
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>();
    if let Some(unknown) = allowed_contracts.iter().find(|c| !known_contracts.iter().any(|k| k.eq_ignore_ascii_case(c)))
    {
        return Err(AppError::new(
            ErrorCode::UnknownContract,
            format!("AllowedContracts: no contract named {unknown:?}; known: {}", known_contracts.join(", ")),
        ));
    }
    let mut allowed_operations = list("AllowedOperations", req.allowed_operations)?
        .iter()
        .map(|o| parse_operation(o).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AppError::new(ErrorCode::InvalidOperation, format!("AllowedOperations: {e}")))?;
    allowed_operations.sort_unstable();
    allowed_operations.dedup();
    let budget = |field: &str, value: Option<String>| {
        value
            .map(|v| {
                parse_amount(&v, 18)
                    .map(|a| a.base_units)
                    .map_err(|e| AppError::new(ErrorCode::InvalidBudget, format!("{field}: {e}")))
            })
            .transpose()
    };
    let bounds = KeyBounds {
        allowed_origins,
        allowed_contracts,
        allowed_operations,
        signer_rate_limit_per_minute: req.signer_rate_limit_per_minute,
        daily_budget_wei: budget("DailyBudget", req.daily_budget)?,
        signer_daily_budget_wei: budget("SignerDailyBudget", req.signer_daily_budget)?,
    };
    if kind == KeyKind::Publishable {
        let missing = [
            ("scopes: only `relay`", scopes != [Scope::Relay]),
            ("AllowedOrigins", bounds.allowed_origins.is_empty()),
            ("AllowedContracts", bounds.allowed_contracts.is_empty()),
            ("AllowedOperations", bounds.allowed_operations.is_empty()),
            ("RateLimitPerMinute", req.rate_limit_per_minute.is_none()),
            ("SignerRateLimitPerMinute", bounds.signer_rate_limit_per_minute.is_none()),
            ("DailyBudget", bounds.daily_budget_wei.is_none()),
            ("SignerDailyBudget", bounds.signer_daily_budget_wei.is_none()),
        ];
        let missing: Vec<&str> = missing.iter().filter(|(_, m)| *m).map(|(f, _)| *f).collect();
        if !missing.is_empty() {
            return Err(AppError::new(
                ErrorCode::InvalidKeyKind,
                format!("a publishable key is safe in a web page only with every bound; set {}", missing.join(", ")),
            ));
        }
    }
    Ok(KeySpec {
        name: name.to_string(),
        environment,
        sponsors,
        scopes,
        expires_in_secs,
        allowed_cidrs,
        rate_limit_per_minute: req.rate_limit_per_minute,
        kind,
        bounds,
    })
}

/// Creates an API key; its secret is in the answer, once.
#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "Admin",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedKey),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_key_name`, `invalid_environment`, `invalid_scope`, `invalid_address`, `invalid_expiry`, `invalid_cidr`, `invalid_rate_limit`", body = ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`, `invalid_api_key`, `key_revoked`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `ip_not_allowed`", body = ErrorBody),
    ),
    security(("admin_jwt" = []), ("api_key" = ["admin"])))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), AppError> {
    let known: Vec<String> = state.contracts().map(|c| c.name.clone()).collect();
    let spec = key_spec(req, &state.sponsor_addresses(), &known)?;
    let new = state.store.create_key(&spec).await?;
    state.keys_changed();
    tracing::info!(key_id = new.id, name = %spec.name, "API key created");
    Ok((StatusCode::CREATED, Json(created(&state, new).await?)))
}

/// Lists every key that is not deleted (metadata only, never secrets).
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "Admin",
    responses(
        (status = 200, description = "The keys, oldest first", body = KeyList),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`, `invalid_api_key`, `key_revoked`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `ip_not_allowed`", body = ErrorBody),
    ),
    security(("admin_jwt" = []), ("api_key" = ["admin"])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, AppError> {
    let keys = state.store.list_keys().await?.into_iter().map(KeyView::from).collect();
    Ok(Json(KeyList { keys }))
}

/// Revokes a key: it stops working at once (401 `key_revoked`) and stays listed for audit.
/// Revoking a revoked key changes nothing.
#[utoipa::path(post, path = "/api/v1/admin/keys/{id}/revoke", tag = "Admin",
    params(("id" = i64, Path, description = "Key id")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`, `invalid_api_key`, `key_revoked`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `ip_not_allowed`", body = ErrorBody),
        (status = 404, description = "`key_not_found`", body = ErrorBody),
    ),
    security(("admin_jwt" = []), ("api_key" = ["admin"])))]
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<KeyView>, AppError> {
    let id = parse_id(&id)?;
    let changed = state.store.revoke_key(id).await?;
    state.keys_changed();
    match changed {
        KeyChange::Done(info) => {
            tracing::info!(key_id = id, "API key revoked");
            Ok(Json(info.into()))
        }
        KeyChange::NotFound | KeyChange::NotActive(_) => Err(not_found(id)),
    }
}

/// Rotates a key: a new secret with the same name, environment, scopes, sponsors, allowlist,
/// rate limit and expiry. The old key is revoked, or keeps working for `grace_seconds`.
#[utoipa::path(post, path = "/api/v1/admin/keys/{id}/rotate", tag = "Admin",
    params(("id" = i64, Path, description = "Key id")),
    request_body(content = RotateKeyRequest, description = "Optional"),
    responses(
        (status = 201, description = "The new key; `Key` is shown only now and `RotatedFrom` names the old one", body = CreatedKey),
        (status = 400, description = "`invalid_json`, `invalid_grace_period`", body = ErrorBody),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`, `invalid_api_key`, `key_revoked`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `ip_not_allowed`", body = ErrorBody),
        (status = 404, description = "`key_not_found`", body = ErrorBody),
        (status = 409, description = "`key_not_active`: revoked, expired or already rotated", body = ErrorBody),
    ),
    security(("admin_jwt" = []), ("api_key" = ["admin"])))]
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), AppError> {
    let id = parse_id(&id)?;
    let req: RotateKeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateKeyRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::new(ErrorCode::InvalidJson, e.to_string()))?
    };
    let grace = req.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECS {
        return Err(AppError::new(ErrorCode::InvalidGracePeriod, format!("GraceSeconds: from 0 to {MAX_GRACE_SECS}")));
    }
    let changed = state.store.rotate_key(id, grace).await?;
    state.keys_changed();
    match changed {
        KeyChange::Done(new) => {
            tracing::info!(key_id = id, new_key_id = new.id, grace, "API key rotated");
            Ok((StatusCode::CREATED, Json(created(&state, new).await?)))
        }
        KeyChange::NotFound => Err(not_found(id)),
        KeyChange::NotActive(why) => {
            Err(AppError::new(ErrorCode::KeyNotActive, format!("API key #{id} cannot be rotated: {why}")))
        }
    }
}

/// Deletes a key: it stops working (401 `invalid_api_key`) and leaves the listings. Use revoke
/// to keep it visible.
#[utoipa::path(delete, path = "/api/v1/admin/keys/{id}", tag = "Admin",
    params(("id" = i64, Path, description = "Key id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedKey),
        (status = 401, description = "`missing_admin_token`, `invalid_admin_token`, `invalid_api_key`, `key_revoked`, `key_expired`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `ip_not_allowed`", body = ErrorBody),
        (status = 404, description = "`key_not_found`", body = ErrorBody),
    ),
    security(("admin_jwt" = []), ("api_key" = ["admin"])))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<DeletedKey>, AppError> {
    let id = parse_id(&id)?;
    let deleted = state.store.delete_key(id).await?;
    state.keys_changed();
    if !deleted {
        return Err(not_found(id));
    }
    tracing::info!(key_id = id, "API key deleted");
    Ok(Json(DeletedKey { id, deleted: true }))
}
