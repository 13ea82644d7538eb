//! Who may call what, decided in one place (docs/keys.md).
//!
//! [`layer`] runs in front of every matched route (a `route_layer`, so unknown paths still get
//! their 404 and wrong methods their 405). It asks [`access_for`] what the route needs, by method
//! and path alone, so routes added later get the right rule without touching this file:
//!
//! | route | needs |
//! |---|---|
//! | `/`, `/health`, `/openapi.json`, `/docs`, `/changelog`, `/metrics`, `/api/v1/meta` | nothing |
//! | `GET /api/v1/{contract}/authors/{author}/events` (public chain state; capped, see [`super::creators`]) | nothing |
//! | `/api/v1/admin/…` | an admin JWT (`Authorization: Bearer`) or a key with `admin` |
//! | `/api/v1/webhooks/…` | a key with `webhooks` |
//! | any other `GET`/`HEAD` under `/api/v1` | a key with `read` |
//! | any method on `/api/v1/{contract}/fees…`, `/api/v1/{contract}/recipients…` (quotes, checks) | a key with `read` |
//! | any other method under `/api/v1` | a key with `relay` |
//! | `GET /api/v1/auth/token/validate` | a client token (`Authorization: Bearer ct_…`), checked without spending anything |
//! | anything else outside `/api/v1` | nothing |
//!
//! A key must also be active (not revoked, expired or deleted), be used from an allowed network
//! ([`client_ip`]) and a listed web origin ([`origin_rule`]), and stay within its rate limit.
//! Where a `relay` key goes, a client token its key minted (`Authorization: Bearer ct_…`) goes
//! too. Publishable keys and client tokens only reach the routes that build or relay the
//! operations they list ([`restricted_route`]). The authenticated key is handed to handlers as a
//! request extension that [`super::extract::ApiKey`] picks up; CORS headers for its origin are
//! added to the answer ([`super::cors`]).

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{ConnectInfo, OriginalUri, Request, State},
    http::{HeaderValue, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::ErrorCode;
use super::{AppError, AppState, extract::ApiKey};
use crate::{
    secret::Secret,
    store::{ApiKeyRecord, KeyKind, KeyLookup, Scope, TokenLookup},
};

/// Longest lifetime an admin token may have; longer ones are refused even if correctly signed.
pub const MAX_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// `aud` of admin tokens, so a JWT minted for something else with the same secret is refused.
pub const ADMIN_AUDIENCE: &str = "streampay-admin";
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// Paths that need no credentials.
const PUBLIC: &[&str] = &["/", "/health", "/openapi.json", "/docs", "/changelog", "/metrics", "/api/v1/meta"];

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Key(Scope),
    /// An admin JWT, or a key with [`Scope::Admin`].
    Admin,
    /// A client token, checked without counting against any limit.
    ClientToken,
}

/// Where a client token is validated.
pub const TOKEN_VALIDATE_PATH: &str = "/api/v1/auth/token/validate";

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The rule table above. `path` is the full path (`/api/v1/…`); a trailing slash is ignored.
/// Works on OpenAPI path templates too (`/api/v1/{contract}/fees`), which is how the document
/// states each operation's scope.
pub fn access_for(method: &Method, path: &str) -> Access {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    if PUBLIC.contains(&path) || !under(path, "/api/v1") {
        return Access::Public;
    }
    if (*method == Method::GET || *method == Method::HEAD) && super::creators::is_events_path(path) {
        return Access::Public;
    }
    if under(path, "/api/v1/admin") {
        return Access::Admin;
    }
    if path == TOKEN_VALIDATE_PATH {
        return Access::ClientToken;
    }
    if under(path, "/api/v1/webhooks") {
        return Access::Key(Scope::Webhooks);
    }
    // `/api/v1/{contract}/fees…` and `/{contract}/recipients…` only answer questions (a fee quote,
    // a recipient check), whatever the method: `read`.
    let resource = path.split('/').nth(4).unwrap_or_default();
    if *method == Method::GET || *method == Method::HEAD || QUOTES.contains(&resource) {
        Access::Key(Scope::Read)
    } else {
        Access::Key(Scope::Relay)
    }
}

/// Resources under `/api/v1/{contract}/` that need `read` even when POSTed to.
const QUOTES: &[&str] = &["fees", "recipients"];

/// Authentication settings of a running API.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// HS256 secret of admin tokens (`[admin] jwt_secret`); `None` refuses every admin token.
    pub admin_jwt_secret: Option<Secret>,
    /// Proxies whose `X-Forwarded-For` is believed (`[server] trusted_proxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// Per-key rate limiters of this process (shared by clones).
    pub limiters: RateLimiters,
    /// Keep authenticated keys in memory, dropped by `NOTIFY` on any key change
    /// ([`super::key_cache`]; `[server] key_cache`). Off in `Default`; `serve` turns it on.
    pub key_cache: bool,
    /// Refused keys (unknown, revoked, expired) one client address may present per minute
    /// before it is answered 429 `too_many_invalid_keys` without any database lookup
    /// (`[server] invalid_key_limit_per_minute`).
    pub invalid_keys: InvalidKeyLimiter,
    /// Per key and signer, relayed calls per minute (a key's `signer_rate_limit_per_minute`).
    pub signer_limiters: SignerLimiters,
    /// CORS: the public endpoints' origins and the keys' origins for preflights.
    pub cors: super::cors::CorsSettings,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("admin_jwt_secret", &self.admin_jwt_secret)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl AuthSettings {
    pub fn with_admin_secret(secret: impl Into<String>) -> Self {
        Self { admin_jwt_secret: Some(Secret::new(secret)), ..Self::default() }
    }
}

/// In-memory GCRA limiters, one per `K` (a key's id; a key and signer for
/// [`SignerLimiters`]), for this process: `N` per minute allows a burst of `N` then one request
/// every `60/N` seconds. With several relayer processes each enforces the limit on its own.
#[derive(Clone, Default)]
pub struct RateLimiters<K = i64>(Arc<Mutex<HashMap<K, Limiter>>>);

/// Relayed calls per (key, signer) (a key's `signer_rate_limit_per_minute`).
pub type SignerLimiters = RateLimiters<(i64, alloy::primitives::Address)>;

/// A limiter and the per-minute rate it was made for.
type Limiter = (u32, Arc<DefaultDirectRateLimiter>);

impl<K: std::hash::Hash + Eq> RateLimiters<K> {
    /// `Err(wait)` when `key` has used up `per_minute`.
    pub fn check(&self, key: K, per_minute: u32) -> Result<(), Duration> {
        let Some(rate) = NonZeroU32::new(per_minute) else { return Ok(()) };
        let limiter = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= 100_000 && !map.contains_key(&key) {
                // A spent limiter refuses for a minute at most: forgetting them all is safe.
                map.clear();
            }
            let entry =
                map.entry(key).or_insert_with(|| (per_minute, Arc::new(RateLimiter::direct(Quota::per_minute(rate)))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(RateLimiter::direct(Quota::per_minute(rate))));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Default of `[server] invalid_key_limit_per_minute`: enough for a client fixing a typo or a
/// deploy racing a rotation, far too few to search for keys or to load the database.
pub const DEFAULT_INVALID_KEYS_PER_MINUTE: u32 = 30;

/// Per client address (an IPv6 client by its /64, which one host usually has whole), a GCRA
/// budget of refused API keys: `N` per minute allows a burst of `N`, then one per `60/N` s. Once
/// an address has used it up, every request it makes with a key not already cached as valid is
/// refused 429 `too_many_invalid_keys` before the key is looked up, until the budget has room
/// again. Valid keys never spend it. Per process, like the per-key limits.
#[derive(Clone)]
pub struct InvalidKeyLimiter(Arc<InvalidKeys>);

struct InvalidKeys {
    per_minute: u32,
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that used the budget up, and until when.
    blocked: Mutex<HashMap<IpAddr, std::time::Instant>>,
}

impl Default for InvalidKeyLimiter {
    fn default() -> Self {
        Self::per_minute(DEFAULT_INVALID_KEYS_PER_MINUTE)
    }
}

impl fmt::Debug for InvalidKeyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InvalidKeyLimiter({}/min)", self.0.per_minute)
    }
}

impl InvalidKeyLimiter {
    /// A limiter allowing `per_minute` refused keys per address (at least 1).
    pub fn per_minute(per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self(Arc::new(InvalidKeys {
            per_minute: rate.get(),
            limiter: RateLimiter::keyed(Quota::per_minute(rate)),
            blocked: Mutex::new(HashMap::new()),
        }))
    }

    /// The address a budget is kept for: IPv4 as is, IPv6 by its /64.
    fn bucket(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        }
    }

    /// `Err(wait)` while `ip` has no budget left.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let blocked = self.0.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&Self::bucket(ip)) {
            Some(until) => match until.checked_duration_since(std::time::Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Spends one refused key of `ip`'s budget; `Err(wait)` when there was none left.
    pub fn refused(&self, ip: IpAddr) -> Result<(), Duration> {
        let bucket = Self::bucket(ip);
        let Err(not_until) = self.0.limiter.check_key(&bucket) else { return Ok(()) };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = self.0.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= 100_000 {
            let now = std::time::Instant::now();
            blocked.retain(|_, until| *until > now);
            self.0.limiter.retain_recent();
        }
        blocked.insert(bucket, std::time::Instant::now() + wait);
        Err(wait)
    }
}

fn too_many_invalid_keys(wait: Duration) -> Rejection {
    Rejection::retry(
        AppError::new(
            ErrorCode::TooManyInvalidKeys,
            "this client address presented too many unknown, revoked or expired API keys; retry after the Retry-After delay",
        ),
        wait,
    )
}

/// A refused request: an error, for `rate_limited` when to retry, and once the key is known and
/// the request came from one of its web origins, that origin (so the page can read the error).
#[derive(Debug)]
pub struct Rejection {
    pub error: AppError,
    pub retry_after: Option<Duration>,
    pub cors: Option<HeaderValue>,
}

impl From<AppError> for Rejection {
    fn from(error: AppError) -> Self {
        Self { error, retry_after: None, cors: None }
    }
}

impl Rejection {
    /// A 429 with `Retry-After`.
    pub fn retry(error: AppError, wait: Duration) -> Self {
        Self { error, retry_after: Some(wait), cors: None }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut resp = self.error.into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: retrying at the announced time must succeed.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(origin) = self.cors {
            super::cors::decorate(&mut resp, origin);
        }
        resp
    }
}

/// The middleware: enforces [`access_for`] and hands the key to the handler.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if access_for(&parts.method, full_path(&parts)) == Access::Admin {
        // Admin answers can hold a new key's secret, which must never be stored: the
        // idempotency layer (next) would keep the whole answer to replay it.
        parts.headers.remove("idempotency-key");
    }
    let cors = match authorize(&state, &parts).await {
        Ok(Authorized::Key(key, cors)) => {
            parts.extensions.insert(ApiKey(*key));
            cors
        }
        Ok(Authorized::Public) => state.settings.auth.cors.public_allow(full_path(&parts), &parts.headers),
        Ok(Authorized::Admin) => None,
        Err(rejection) => return rejection.into_response(),
    };
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if let Some(origin) = cors {
        super::cors::decorate(&mut resp, origin);
    }
    resp
}

/// Who a request was let in as.
pub enum Authorized {
    /// A public route.
    Public,
    /// An admin token.
    Admin,
    /// A key (or a client token, then with its grant), and the origin to answer CORS headers for.
    Key(Box<ApiKeyRecord>, Option<HeaderValue>),
}

fn full_path(parts: &Parts) -> &str {
    parts.extensions.get::<OriginalUri>().map(|u| u.0.path()).unwrap_or_else(|| parts.uri.path())
}

/// Checks a request against its route's rule.
pub async fn authorize(state: &AppState, parts: &Parts) -> Result<Authorized, Rejection> {
    match access_for(&parts.method, full_path(parts)) {
        Access::Public => Ok(Authorized::Public),
        Access::Key(scope) => {
            authenticate(state, parts, Some(scope), true).await.map(|(key, cors)| Authorized::Key(Box::new(key), cors))
        }
        Access::ClientToken => {
            if parts.headers.contains_key("x-api-key") {
                return Err(AppError::new(
                    ErrorCode::InvalidClientToken,
                    "send the client token as `Authorization: Bearer ct_…`, not an API key",
                )
                .into());
            }
            authenticate(state, parts, None, false).await.map(|(key, cors)| Authorized::Key(Box::new(key), cors))
        }
        Access::Admin => {
            if parts.headers.contains_key(header::AUTHORIZATION) {
                let token = bearer(&parts.headers)
                    .ok_or_else(|| invalid_admin_token("send `Authorization: Bearer <token>`"))?;
                let secret = state
                    .settings
                    .auth
                    .admin_jwt_secret
                    .as_ref()
                    .ok_or_else(|| invalid_admin_token("admin tokens are not enabled on this relayer"))?;
                verify_admin_token(secret.expose(), token).map_err(invalid_admin_token)?;
                return Ok(Authorized::Admin);
            }
            if parts.headers.contains_key("x-api-key") {
                return authenticate(state, parts, Some(Scope::Admin), true)
                    .await
                    .map(|(key, cors)| Authorized::Key(Box::new(key), cors));
            }
            Err(AppError::new(
                ErrorCode::MissingAdminToken,
                "send an admin token (`streampay admin token`) as `Authorization: Bearer <token>`",
            )
            .into())
        }
    }
}

fn invalid_admin_token(why: impl fmt::Display) -> Rejection {
    AppError::new(ErrorCode::InvalidAdminToken, format!("the admin token is not valid: {why}")).into()
}

/// Authenticates `X-API-Key`, then checks the network, `scope` (if any) and the rate limit.
pub async fn key_with_scope(state: &AppState, parts: &Parts, scope: Option<Scope>) -> Result<ApiKeyRecord, Rejection> {
    authenticate(state, parts, scope, true).await.map(|(key, _)| key)
}

/// The token of an `Authorization: Bearer <token>` header, trimmed.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// The credential of a request: `X-API-Key`, else a client token in `Authorization: Bearer`.
enum Credential<'a> {
    Key(&'a str),
    Token(&'a str),
}

fn credential(parts: &Parts) -> Result<Credential<'_>, Rejection> {
    if let Some(value) = parts.headers.get("x-api-key") {
        let key = value.to_str().map_err(|_| AppError::new(ErrorCode::InvalidApiKey, "the API key is not valid"))?;
        return Ok(Credential::Key(key.trim()));
    }
    match bearer(&parts.headers) {
        Some(token) if token.starts_with("ct_") => Ok(Credential::Token(token)),
        // Another bearer (an admin token, say) is no credential here.
        _ => Err(AppError::new(
            ErrorCode::MissingApiKey,
            "send your API key in the X-API-Key header (or a client token as `Authorization: Bearer ct_…`)",
        )
        .into()),
    }
}

/// Authenticates the request's key or client token, then checks the network, the web origin,
/// `scope` (if any), what a publishable key or token may reach, and (when `limits`) the key's
/// rate limit. Answers the key and the origin to send CORS headers for.
async fn authenticate(
    state: &AppState,
    parts: &Parts,
    scope: Option<Scope>,
    limits: bool,
) -> Result<(ApiKeyRecord, Option<HeaderValue>), Rejection> {
    let presented = credential(parts)?;
    // Who is asking, for the refused-key budget: the client behind trusted proxies, else the
    // peer itself (one that cannot be told shares the unspecified address's budget).
    let client = client_ip(&state.settings.auth.trusted_proxies, parts)
        .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical()))
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let limiter = &state.settings.auth.invalid_keys;
    let key = match presented {
        Credential::Key(presented) => {
            let cached = state.key_cache().and_then(|c| c.cached(presented));
            let lookup = match cached {
                Some(hit) => hit,
                None => {
                    // Before any database work: an address out of refused keys is not looked up for.
                    limiter.check(client).map_err(too_many_invalid_keys)?;
                    match state.key_cache() {
                        Some(cache) => cache.lookup(&state.store, presented).await,
                        None => state.store.lookup_api_key(presented).await,
                    }
                    .map_err(AppError::from)?
                }
            };
            if !matches!(lookup, KeyLookup::Active(_)) {
                limiter.refused(client).map_err(too_many_invalid_keys)?;
            }
            active_key(lookup, "")?
        }
        Credential::Token(token) => {
            limiter.check(client).map_err(too_many_invalid_keys)?;
            match state.store.lookup_client_token(token).await.map_err(AppError::from)? {
                TokenLookup::Found { key, grant } => {
                    let mut key = active_key(key, "the key that minted this client token: ")?;
                    key.grant = Some(grant);
                    key
                }
                TokenLookup::Unknown => {
                    limiter.refused(client).map_err(too_many_invalid_keys)?;
                    return Err(AppError::new(ErrorCode::InvalidClientToken, "the client token is not valid").into());
                }
                TokenLookup::Expired => {
                    limiter.refused(client).map_err(too_many_invalid_keys)?;
                    return Err(AppError::new(
                        ErrorCode::ClientTokenExpired,
                        "the client token has expired; ask your server for a new one",
                    )
                    .into());
                }
            }
        }
    };
    if !key.allowed_cidrs.is_empty() {
        let ip = client_ip(&state.settings.auth.trusted_proxies, parts);
        if !ip.is_some_and(|ip| key.allowed_cidrs.iter().any(|net| net.contains(&ip))) {
            let shown = ip.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
            return Err(
                AppError::new(ErrorCode::IpNotAllowed, format!("this API key may not be used from {shown}")).into()
            );
        }
    }
    let cors = origin_rule(&key, parts)?;
    let refuse = |error: AppError| Rejection { error, retry_after: None, cors: cors.clone() };
    if let Some(scope) = scope
        && !key.scopes.contains(&scope)
    {
        return Err(refuse(AppError::new(
            ErrorCode::InsufficientScope,
            format!("this API key lacks the `{scope}` scope this endpoint needs"),
        )));
    }
    if key.restricted() && scope.is_some() {
        restricted_route(&parts.method, full_path(parts), &key).map_err(refuse)?;
    }
    if limits
        && let Some(per_minute) = key.rate_limit_per_minute
        && let Err(wait) = state.settings.auth.limiters.check(key.id, per_minute)
    {
        return Err(Rejection {
            cors,
            ..Rejection::retry(
                AppError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "this API key is limited to {per_minute} requests per minute; retry after the Retry-After delay"
                    ),
                ),
                wait,
            )
        });
    }
    Ok((key, cors))
}

/// The key of a lookup if it is active; why not otherwise (`whose` prefixes the message).
fn active_key(lookup: KeyLookup, whose: &str) -> Result<ApiKeyRecord, Rejection> {
    Err(match lookup {
        KeyLookup::Active(key) => return Ok(key),
        KeyLookup::Unknown => AppError::new(ErrorCode::InvalidApiKey, format!("{whose}the API key is not valid")),
        KeyLookup::Revoked { rotated: false } => {
            AppError::new(ErrorCode::KeyRevoked, format!("{whose}this API key was revoked"))
        }
        KeyLookup::Revoked { rotated: true } => AppError::new(
            ErrorCode::KeyRevoked,
            format!("{whose}this API key was rotated; use the key that replaced it"),
        ),
        KeyLookup::Expired => AppError::new(ErrorCode::KeyExpired, format!("{whose}this API key has expired")),
    }
    .into())
}

/// The web origin rule of a key (docs/keys.md): a request whose `Origin` the key lists gets CORS
/// headers for it. A publishable key works only from its origins (a request without `Origin`
/// or from another one is refused), as does any key that lists origins and is sent from another
/// web page. A secret key without origins answers servers as before, without CORS headers, so a
/// browser will not hand its answers to a page.
pub fn origin_rule(key: &ApiKeyRecord, parts: &Parts) -> Result<Option<HeaderValue>, Rejection> {
    let refuse = |why: String| -> Result<Option<HeaderValue>, Rejection> {
        Err(AppError::new(ErrorCode::OriginNotAllowed, why).into())
    };
    match parts.headers.get(header::ORIGIN) {
        None if key.kind == KeyKind::Publishable => {
            refuse("a publishable key works only from the web origins it lists; this request sent no Origin".into())
        }
        None => Ok(None),
        Some(origin) => {
            let text = origin.to_str().unwrap_or_default();
            if key.bounds.allows_origin(text) {
                Ok(Some(origin.clone()))
            } else if key.kind == KeyKind::Publishable || !key.bounds.allowed_origins.is_empty() {
                refuse(format!("this API key may not be used from the web origin {text:?}"))
            } else {
                Ok(None)
            }
        }
    }
}

/// The deployment segment and the operation (`None` for `meta/execute`) of a route a publishable
/// key or client token may reach: those that build a user operation, and `meta/execute`;
/// `None` for any other route. `path` may be an OpenAPI template.
pub fn restricted_operation<'p>(method: &Method, path: &'p str) -> Option<(&'p str, Option<&'static str>)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(3).collect();
    let (contract, rest) = segments.split_first()?;
    let operation = match (method.as_str(), rest) {
        ("POST", ["meta", "execute"]) => None,
        ("POST", ["payments", "deposit"]) => Some("deposit"),
        ("POST", ["payments", "withdraw"]) => Some("withdraw"),
        ("POST", ["payments"] | ["batch", "payments"]) => Some("pay"),
        ("POST", ["subscriptions"] | ["batch", "subscriptions"]) => Some("subscribe"),
        ("DELETE", ["subscriptions", _]) => Some("unsubscribe"),
        _ => return None,
    };
    Some((contract, operation))
}

/// What a publishable key or a client token may reach: [`restricted_operation`]'s routes, for a
/// deployment and an operation it lists (`meta/execute`'s handler checks the call's operations).
pub fn restricted_route(method: &Method, path: &str, key: &ApiKeyRecord) -> Result<(), AppError> {
    let Some((contract, operation)) = restricted_operation(method, path) else {
        return Err(AppError::new(
            ErrorCode::OperationNotAllowed,
            format!("a publishable key or client token may only build and execute user calls, not {method} {path}"),
        ));
    };
    if !key.bounds.allows_contract(contract) {
        return Err(AppError::new(
            ErrorCode::ContractNotAllowed,
            format!("this API key may not use the contract {contract:?}"),
        ));
    }
    if let Some(op) = operation
        && !key.allows_operation(op)
    {
        return Err(AppError::new(
            ErrorCode::OperationNotAllowed,
            format!("this credential may not build or relay `{op}`"),
        ));
    }
    Ok(())
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy (entries further left can be
/// forged by the client). Hops may carry a port (`203.0.113.7:4711`, `[2001:db8::1]:443`), as
/// some load balancers write them.
///
/// `None` (an allowlisted key is then refused) when the address cannot be told: the server was
/// not started with connection info, or a trusted proxy sent no `X-Forwarded-For`, or a hop on
/// the trusted chain does not parse. Falling back to the proxy's own address there would let
/// every client in whenever an allowlist covers the proxies' network.
pub fn client_ip(trusted_proxies: &[IpNet], parts: &Parts) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip().to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}")) // a header that is not text: unparsable
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop)?;
        client = Some(ip);
        if !trusted(&ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with or without a port (IPv6 bracketed then).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip().to_canonical())
}

/// Claims of an admin token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminClaims {
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Mints an HS256 admin token valid for `ttl` (at most [`MAX_ADMIN_TOKEN_TTL`]).
pub fn mint_admin_token(secret: &str, ttl: Duration, subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(!ttl.is_zero(), "the token lifetime must be positive");
    anyhow::ensure!(ttl <= MAX_ADMIN_TOKEN_TTL, "admin tokens live at most {}s", MAX_ADMIN_TOKEN_TTL.as_secs());
    let iat = now_secs();
    let claims = AdminClaims { sub: subject.to_string(), aud: ADMIN_AUDIENCE.into(), iat, exp: iat + ttl.as_secs() };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

/// Verifies an admin token: HS256 with `secret`, our audience, not expired, not issued in the
/// future, and a lifetime of at most [`MAX_ADMIN_TOKEN_TTL`].
pub fn verify_admin_token(secret: &str, token: &str) -> Result<AdminClaims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[ADMIN_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<AdminClaims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "it has expired".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_string(),
            _ => e.to_string(),
        })?
        .claims;
    if claims.iat > now_secs() + LEEWAY_SECS {
        return Err("it was issued in the future".into());
    }
    if claims.exp.saturating_sub(claims.iat) > MAX_ADMIN_TOKEN_TTL.as_secs() {
        return Err(format!("it lives longer than {}s", MAX_ADMIN_TOKEN_TTL.as_secs()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_scopes_by_method_and_prefix() {
        let cases = [
            (Method::GET, "/", Access::Public),
            (Method::GET, "/health", Access::Public),
            (Method::GET, "/metrics", Access::Public),
            (Method::GET, "/api/v1/meta/", Access::Public),
            (Method::GET, "/nowhere", Access::Public),
            (Method::GET, "/api/v1/contracts", Access::Key(Scope::Read)),
            (Method::GET, "/api/v1/{contract}/fees", Access::Key(Scope::Read)),
            (Method::GET, "/api/v1/USDC/payments/balance/0x1", Access::Key(Scope::Read)),
            (Method::POST, "/api/v1/USDC/meta/execute", Access::Key(Scope::Relay)),
            (Method::POST, "/api/v1/{contract}/recipients/resolve", Access::Key(Scope::Read)),
            (Method::POST, "/api/v1/USDC/fees/quote", Access::Key(Scope::Read)),
            (Method::POST, "/api/v1/USDC/payments", Access::Key(Scope::Relay)),
            (Method::GET, "/api/v1/transactions/summary", Access::Key(Scope::Read)),
            (Method::GET, "/api/v1/sponsors", Access::Key(Scope::Read)),
            (Method::DELETE, "/api/v1/USDC/subscriptions/0x1", Access::Key(Scope::Relay)),
            (Method::GET, "/api/v1/webhooks", Access::Key(Scope::Webhooks)),
            (Method::POST, "/api/v1/webhooks/3/test", Access::Key(Scope::Webhooks)),
            (Method::GET, "/api/v1/webhooksx", Access::Key(Scope::Read)),
            (Method::GET, "/api/v1/admin/keys", Access::Admin),
            (Method::DELETE, "/api/v1/admin/keys/1", Access::Admin),
        ];
        for (method, path, expected) in cases {
            assert_eq!(access_for(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn admin_tokens_round_trip_and_refuse_tampering() {
        let token = mint_admin_token("s3cret-s3cret-s3cret-s3cret-s3cret", Duration::from_secs(60), "t").unwrap();
        assert_eq!(verify_admin_token("s3cret-s3cret-s3cret-s3cret-s3cret", &token).unwrap().sub, "t");
        assert!(verify_admin_token("another-secret-another-secret-xx", &token).is_err());
        assert!(mint_admin_token("x", Duration::from_secs(3601), "t").is_err());
    }

    #[test]
    fn refused_keys_are_budgeted_per_address_and_ipv6_per_64() {
        let l = InvalidKeyLimiter::per_minute(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..2 {
            assert!(l.check(ip("2001:db8::1")).is_ok());
            assert!(l.refused(ip("2001:db8::1")).is_ok());
        }
        // Spent: this address and its /64 neighbour are refused before any lookup, for ~30 s.
        let wait = l.refused(ip("2001:db8::1")).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(l.check(ip("2001:db8::ffff")).is_err());
        assert!(l.check(ip("2001:db8:0:1::1")).is_ok(), "another /64");
        assert!(l.check(ip("192.0.2.1")).is_ok() && l.refused(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_says_when() {
        let l = RateLimiters::default();
        assert!(l.check(1, 2).is_ok() && l.check(1, 2).is_ok());
        let wait = l.check(1, 2).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(l.check(2, 2).is_ok(), "limits are per key");
    }
}
