//! CORS (docs/keys.md, "Keys in the browser"): which web pages may read the API's answers.
//!
//! - **Keyed routes.** A request whose `Origin` its key (or its client token's key) lists is
//!   answered with `Access-Control-Allow-Origin` for that origin ([`super::auth::origin_rule`]
//!   decides, in the auth layer); any other origin gets no CORS header, so the browser keeps the
//!   answer from the page.
//! - **Public routes** (`/`, `/health`, `/openapi.json`, `/api/v1/meta`, the event streams
//!   `/api/v1/{contract}/authors/{author}/events`): the origins of
//!   `[server] cors_public_origins` (default `*`, any page).
//! - **Preflights** (`OPTIONS` with `Access-Control-Request-Method`) carry no credentials, so
//!   they are answered for an origin that some usable key lists ([`OriginCache`]), or for a
//!   public route's origins; anything else is refused 403 `origin_not_allowed` with no CORS
//!   header. The actual request is then held to its own key's list.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppError, AppState, ErrorCode};
use crate::store::Store;

/// Routes open to every page in `[server] cors_public_origins`.
pub const PUBLIC_PATHS: &[&str] = &["/", "/health", "/openapi.json", "/api/v1/meta"];
/// Methods the API answers.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers a page may send.
pub const ALLOW_HEADERS: &str =
    "X-API-Key, Authorization, Content-Type, Idempotency-Key, Reference, Prefer, X-Request-Id";
/// Response headers a page may read besides the simple ones.
pub const EXPOSE_HEADERS: &str = "X-Api-Version, X-Request-Id, Retry-After, Idempotent-Replayed";
/// How long a browser may cache a preflight, in seconds.
pub const MAX_AGE_SECS: u32 = 600;
/// How long the keys' origins are kept in memory between database reads (key changes in this
/// process drop them at once; another replica's changes show within this).
const ORIGINS_TTL: Duration = Duration::from_secs(5);

/// The CORS settings of a running API.
#[derive(Clone, Debug)]
pub struct CorsSettings {
    /// Origins of the public routes; `*` allows any.
    pub public_origins: Vec<String>,
    /// The origins keys list, for preflights.
    pub origins: OriginCache,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self { public_origins: vec!["*".into()], origins: OriginCache::default() }
    }
}

impl CorsSettings {
    /// The `Access-Control-Allow-Origin` of a public route's answer to a request with `headers`.
    pub fn public_allow(&self, path: &str, headers: &HeaderMap) -> Option<HeaderValue> {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        if !PUBLIC_PATHS.contains(&path) && !super::creators::is_events_path(path) {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        if self.public_origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.public_origins.iter().any(|o| o == text).then(|| origin.clone())
    }
}

/// Every web origin a usable key lists, read from the database at most every few seconds.
#[derive(Clone, Default)]
pub struct OriginCache(Arc<Mutex<Option<Loaded>>>);

/// When the origins were read, and what they were.
type Loaded = (Instant, Arc<Vec<String>>);

impl std::fmt::Debug for OriginCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginCache")
    }
}

impl OriginCache {
    /// Drops what is cached (a key changed).
    pub fn invalidate(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn contains(&self, store: &Store, origin: &str) -> anyhow::Result<bool> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < ORIGINS_TTL)
            .map(|(_, list)| list.clone());
        let list = match fresh {
            Some(list) => list,
            None => {
                let list = Arc::new(store.key_origins().await?);
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), list.clone()));
                list
            }
        };
        Ok(list.iter().any(|o| o == origin))
    }
}

/// Adds the CORS headers of an answer a page at `origin` may read.
pub fn decorate(resp: &mut Response, origin: HeaderValue) {
    let headers = resp.headers_mut();
    let wildcard = origin == "*";
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    if !wildcard {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Answers CORS preflights before routing (no route has an `OPTIONS` handler); passes every
/// other request on.
pub async fn preflight(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !is_preflight {
        return next.run(req).await;
    }
    let cors = &state.settings.auth.cors;
    let path = req.uri().path();
    let origin = req.headers().get(header::ORIGIN).cloned().unwrap_or(HeaderValue::from_static("null"));
    let allowed = match cors.public_allow(path, req.headers()) {
        Some(allow) => Some(allow),
        None if path.starts_with("/api/v1/") => match origin.to_str() {
            Ok(text) => match cors.origins.contains(&state.store, text).await {
                Ok(true) => Some(origin.clone()),
                Ok(false) => None,
                Err(e) => return AppError::from(e).into_response(),
            },
            Err(_) => None,
        },
        None => None,
    };
    let Some(allow) = allowed else {
        return AppError::new(
            ErrorCode::OriginNotAllowed,
            format!("no API key of this relayer lists the web origin {:?}", origin.to_str().unwrap_or("?")),
        )
        .into_response();
    };
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Method"));
    headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
    decorate(&mut resp, allow);
    resp
}
