//! Request extraction and edge parsing: API-key authentication, JSON and query bodies whose
//! rejections become [`AppError`]s, and the parsers for addresses, hex, numbers and sponsors.

use std::sync::Arc;

use alloy::primitives::{Address, Bytes};
use axum::{
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ErrorCode;
use super::{AppError, AppState, Contract};
use crate::{chains::Chain, pipeline::Sponsor, store::ApiKeyRecord};

/// The authenticated API key of a request (`X-API-Key`), checked by [`super::auth::layer`] (status,
/// network, scope, rate limit) in front of the route.
#[derive(Debug, Clone)]
pub struct ApiKey(pub ApiKeyRecord);

impl ApiKey {
    /// Refuses a call for `from` when the credential is a client token bound to another signer.
    pub fn check_signer(&self, from: Address) -> Result<(), AppError> {
        match &self.0.grant {
            Some(grant) if grant.signer != from => Err(AppError::new(
                ErrorCode::SignerNotAllowed,
                format!("this client token is for {}, not {from}", grant.signer),
            )),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = super::auth::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(key) = parts.extensions.get::<ApiKey>() {
            return Ok(key.clone());
        }
        // A handler on a route the rule table leaves public, or served without the layer: the same
        // checks, minus the scope.
        super::auth::key_with_scope(state, parts, None).await.map(ApiKey)
    }
}

/// `Json<T>` whose rejections are typed 400s instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(AppError::new(ErrorCode::InvalidJson, "send the body as JSON with Content-Type: application/json"))
            }
            Err(e) => Err(AppError::new(ErrorCode::InvalidJson, e.body_text())),
        }
    }
}

/// `Query<T>` with typed 400 rejections.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| AppError::new(ErrorCode::InvalidQuery, e.body_text()))
    }
}

impl AppState {
    /// Resolves the `{contract}` path segment (a deployment name, any case; names are unique
    /// across chains) to the deployment and its chain.
    pub fn contract(&self, name: &str) -> Result<Contract<'_>, AppError> {
        self.contracts().find(|c| c.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
            let known: Vec<String> = self.contracts().map(|c| c.name.clone()).collect();
            AppError::new(
                ErrorCode::UnknownContract,
                format!("no contract named {name:?}; known: {}", known.join(", ")),
            )
        })
    }

    /// The sponsor a request will use: the one it names (which its key must allow), the key's
    /// only sponsor, or the least busy of its sponsors ([`crate::pipeline::Sponsors::by_load`]).
    pub fn sponsor_for(&self, chain: &Chain, key: &ApiKey, requested: Option<&str>) -> Result<Arc<Sponsor>, AppError> {
        let requested = requested.filter(|s| !s.is_empty());
        let address = match requested {
            Some(s) => {
                let a = parse_address("Sponsor", s)?;
                if !key.0.sponsors.contains(&a) {
                    return Err(AppError::new(
                        ErrorCode::SponsorNotAllowed,
                        format!("this API key may not use sponsor {a}"),
                    ));
                }
                a
            }
            None => {
                // A key with several sponsors gets the least busy one configured here.
                if key.0.sponsors.len() > 1
                    && let Some(s) = chain.sponsors.by_load(&key.0.sponsors).into_iter().next()
                {
                    chain.sponsors.note_pick(s.address());
                    return Ok(s);
                }
                *key.0.sponsors.first().ok_or_else(|| {
                    AppError::new(ErrorCode::SponsorNotAllowed, "this API key may not use any sponsor")
                })?
            }
        };
        chain.sponsors.get(&address).ok_or_else(|| {
            AppError::new(
                ErrorCode::SponsorUnavailable,
                format!("sponsor {address} is allowed for this key but not configured on this relayer"),
            )
        })
    }
}

/// A required string field, taken as sent (a value with surrounding spaces is not the value
/// without them; the document's patterns say so).
pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, AppError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(AppError::missing(field)),
    }
}

/// Parses a hex address. Mixed-case input must carry a valid EIP-55 checksum: a typo in a
/// checksummed address is caught instead of sending money to a wrong account.
pub fn parse_address(field: &str, value: &str) -> Result<Address, AppError> {
    let invalid = || AppError::new(ErrorCode::InvalidAddress, format!("{field}: {value:?} is not a valid address"));
    let hex = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")).ok_or_else(invalid)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let mixed = hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        return Address::parse_checksummed(format!("0x{hex}"), None).map_err(|_| {
            AppError::new(ErrorCode::AddressRefused, format!("{field}: {value:?} has an invalid EIP-55 checksum"))
        });
    }
    hex.parse().map_err(|_| invalid())
}

/// Like [`parse_address`], also refusing the zero address (money sent there is burnt).
pub fn parse_recipient(field: &str, value: &str) -> Result<Address, AppError> {
    let a = parse_address(field, value)?;
    if a.is_zero() {
        return Err(AppError::new(
            ErrorCode::AddressRefused,
            format!("{field}: the zero address cannot receive funds"),
        ));
    }
    Ok(a)
}

pub fn parse_hex(field: &str, value: &str, code: ErrorCode) -> Result<Bytes, AppError> {
    value
        .parse::<Bytes>()
        .ok()
        .filter(|_| value.starts_with("0x"))
        .ok_or_else(|| AppError::new(code, format!("{field}: expected 0x-prefixed hex")))
}

/// Serde: an optional non-negative integer that JSON may write as `600` or `600.0` (one number
/// type; JSON Schema calls both integers), up to 2^53 when written with a fraction.
pub fn integral_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => integral(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a non-negative integer, got {v}"))),
        Some(v) => Err(serde::de::Error::custom(format!("expected a non-negative integer, got {v}"))),
    }
}

/// A JSON number that is a non-negative integer: `7`, or `7.0` while a double holds it exactly.
fn integral(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    n.as_u64().or_else(|| {
        n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f)).map(|f| f as u64)
    })
}

/// A non-negative integer given as a JSON number or a decimal string.
pub fn parse_u64(field: &str, value: &Option<Value>) -> Result<u64, AppError> {
    let bad = || AppError::new(ErrorCode::InvalidNumber, format!("{field}: expected a non-negative integer"));
    match value {
        None | Some(Value::Null) => Err(AppError::missing(field)),
        // JSON has one number type: `7.0` is the integer 7 (JSON Schema agrees).
        Some(v @ Value::Number(_)) => integral(v).ok_or_else(bad),
        Some(Value::String(s)) => crate::amount::parse_uint(s).and_then(|u| u64::try_from(u).ok()).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}
