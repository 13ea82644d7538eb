//! `Idempotency-Key` on every POST (SPEC §4): a retry with the same key and the same request
//! gets the first answer back (`Idempotent-Replayed: true`) and runs nothing; the same key with
//! another request is `422 idempotency_key_reused`; a retry while the first is still running is
//! `409 idempotency_key_in_progress`.
//!
//! The layer runs only on matched routes and only after authentication (it sits inside the
//! auth layer and needs the authenticated key): an unauthenticated request, or one to a path
//! that does not exist, writes nothing.
//!
//! Only final answers are kept: every 2xx, and the 4xx that the same request would get again.
//! Answers that say "retry" are not: 5xx (nothing, or nothing certain, happened; a retried
//! execute cannot send twice anyway, its bySig nonce is claimed), 401, 408, every 409 and 429,
//! and the 422s that depend on the moment ([`RETRY_LATER_422`]). A stored answer never holds a
//! secret: a webhook endpoint's signing secret is blanked before the answer is kept (the replay
//! says `Secret: null`; the secret is shown once). Entries expire after [`TTL`]: a key may then
//! be used again, and [`crate::store::Store::prune_idempotency`] deletes them hourly.

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::ErrorCode;
use super::{AppError, AppState, extract::ApiKey};
use crate::store::{IdempotencyBegin, StoredResponse, hash_api_key};

/// Largest request body accepted under an idempotency key (a batch of 100 fits easily).
const MAX_BODY: usize = 1 << 20;
/// A first request that has not answered after this long (a crash) stops holding its key.
const LOCK_SECS: u64 = 300;
/// How long an answer is kept for replay (as long as the API's longest build deadline is not
/// needed: a day, like the payment APIs this one follows).
pub const TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// 422 codes that depend on the moment, not on the request: a retry may well succeed.
pub const RETRY_LATER_422: &[&str] = &["sponsor_fee_cap_exceeded", "simulation_reverted"];

/// Whether `status` (with `body`, the JSON error envelope for errors) is the answer every retry
/// of the same request would get, and so may be replayed.
pub fn is_final(status: StatusCode, body: &[u8]) -> bool {
    if status.is_success() {
        return true;
    }
    if !status.is_client_error() {
        return false;
    }
    match status {
        StatusCode::UNAUTHORIZED
        | StatusCode::REQUEST_TIMEOUT
        | StatusCode::CONFLICT
        | StatusCode::TOO_EARLY
        | StatusCode::TOO_MANY_REQUESTS => false,
        StatusCode::UNPROCESSABLE_ENTITY => {
            let code = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                .unwrap_or_default();
            !RETRY_LATER_422.contains(&code.as_str())
        }
        _ => true,
    }
}

/// The answer as it may be stored: a webhook endpoint's signing secret (`whsec_…`, `Secret` in the
/// create answer; `secret` before the 2026-12-03 release) is blanked.
fn without_secrets(body: &[u8]) -> Vec<u8> {
    let is_secret =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).is_some_and(|s| s.starts_with("whsec_"));
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) if ["Secret", "secret"].iter().any(|k| is_secret(&v, k)) => {
            for key in ["Secret", "secret"] {
                if is_secret(&v, key) {
                    v[key] = serde_json::Value::Null;
                }
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        _ => body.to_vec(),
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else { return next.run(req).await };
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_string(),
        _ => {
            return AppError::new(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key: 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    // Only for an authenticated key (the auth layer, outside this one, put it there); without
    // one the handler answers 401 and there is nothing to remember.
    if req.extensions().get::<ApiKey>().is_none() {
        return next.run(req).await;
    }
    // Entries belong to the credential: the key, or a client token (so one end user's token can
    // never replay another's answer under the same server key).
    let credential = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| super::auth::bearer(req.headers()))
        .map(str::to_string);
    let Some(credential) = credential else {
        return next.run(req).await;
    };
    let api_key_hash = hash_api_key(&credential);

    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return AppError::new(ErrorCode::InvalidJson, "the request body is too large").into_response(),
    };
    let request_hash: [u8; 32] = {
        let mut h = Sha256::new();
        h.update(parts.method.as_str());
        h.update([0]);
        h.update(parts.uri.path().trim_end_matches('/'));
        h.update([0]);
        h.update(parts.uri.query().unwrap_or_default());
        h.update([0]);
        h.update(&bytes);
        // The Reference header is part of the request (it is stored with the transaction); only
        // when sent, so fingerprints of requests without one are unchanged.
        if let Some(reference) = parts.headers.get("reference") {
            h.update([0]);
            h.update(reference.as_bytes());
        }
        h.finalize().into()
    };

    match state.store.begin_idempotency(&api_key_hash, &key, &request_hash, LOCK_SECS, TTL).await {
        Err(e) => AppError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )
        .into_response(),
        Ok(IdempotencyBegin::InProgress) => {
            let mut resp = AppError::new(
                ErrorCode::IdempotencyKeyInProgress,
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Ok(IdempotencyBegin::Replay(stored)) => replay(stored),
        Ok(IdempotencyBegin::Claimed) => {
            let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let status = resp.status();
            let (resp_parts, resp_body) = resp.into_parts();
            let body = match axum::body::to_bytes(resp_body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "failed to buffer a response");
                    let _ = state.store.abandon_idempotency(&api_key_hash, &key).await;
                    return AppError::Internal(anyhow::anyhow!("response body: {e}")).into_response();
                }
            };
            if !is_final(status, &body) {
                // Not an answer to replay: the retry runs the request again.
                if let Err(e) = state.store.abandon_idempotency(&api_key_hash, &key).await {
                    tracing::error!(error = format!("{e:#}"), "failed to release an idempotency key");
                }
                return Response::from_parts(resp_parts, Body::from(body));
            }
            let stored = StoredResponse {
                status: status.as_u16(),
                content_type: resp_parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: without_secrets(&body),
            };
            if let Err(e) = state.store.finish_idempotency(&api_key_hash, &key, &stored).await {
                // The answer stands; a retry will find the key held until LOCK_SECS.
                tracing::error!(error = format!("{e:#}"), "failed to store an idempotent answer");
            }
            Response::from_parts(resp_parts, Body::from(body))
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, Bytes::from(stored.body)).into_response();
    let headers = resp.headers_mut();
    if let Some(ct) = stored.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if status == StatusCode::ACCEPTED {
        headers.insert("preference-applied", HeaderValue::from_static("respond-async"));
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": "m"}})).unwrap()
    }

    #[test]
    fn only_answers_a_retry_would_get_again_are_final() {
        assert!(is_final(StatusCode::OK, b"{}"));
        assert!(is_final(StatusCode::ACCEPTED, b"{}"));
        assert!(is_final(StatusCode::BAD_REQUEST, &err("invalid_amount")));
        assert!(is_final(StatusCode::UNPROCESSABLE_ENTITY, &err("signature_mismatch")));
        assert!(!is_final(StatusCode::UNPROCESSABLE_ENTITY, &err("sponsor_fee_cap_exceeded")));
        assert!(!is_final(StatusCode::UNPROCESSABLE_ENTITY, &err("simulation_reverted")));
        assert!(!is_final(StatusCode::CONFLICT, &err("nonce_in_flight")));
        assert!(!is_final(StatusCode::TOO_MANY_REQUESTS, &err("sponsor_daily_budget_exceeded")));
        assert!(!is_final(StatusCode::UNAUTHORIZED, &err("invalid_api_key")));
        assert!(!is_final(StatusCode::SERVICE_UNAVAILABLE, &err("chain_unavailable")));
    }

    #[test]
    fn a_webhook_secret_is_never_stored() {
        let body = br#"{"Id":1,"Url":"https://x.example/h","Secret":"whsec_00ff"}"#;
        let kept: serde_json::Value = serde_json::from_slice(&without_secrets(body)).unwrap();
        assert_eq!(kept["Secret"], serde_json::Value::Null);
        assert_eq!(kept["Id"], 1);
        // The snake_case answer of the first version.
        let body = br#"{"id":1,"url":"https://x.example/h","secret":"whsec_00ff"}"#;
        let kept: serde_json::Value = serde_json::from_slice(&without_secrets(body)).unwrap();
        assert_eq!(kept["secret"], serde_json::Value::Null);
        assert_eq!(without_secrets(br#"{"Balance":"1"}"#), br#"{"Balance":"1"}"#.to_vec());
    }
}
