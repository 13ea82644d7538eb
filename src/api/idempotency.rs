//! `Idempotency-Key` on every POST (SPEC §4): a retry with the same key and the same request
//! gets the first answer back (`Idempotent-Replayed: true`) and runs nothing; the same key with
//! another request is `422 idempotency_key_reused`; a retry while the first is still running is
//! `409 idempotency_key_in_progress`.
//!
//! Answers worth retrying for real are not kept: 5xx (nothing, or nothing certain, happened; a
//! retried execute cannot send twice anyway, its bySig nonce is claimed) and 401 (no key).

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::{AppError, AppState};
use crate::store::{IdempotencyBegin, StoredResponse, hash_api_key};

/// Largest request body accepted under an idempotency key (a batch of 100 fits easily).
const MAX_BODY: usize = 1 << 20;
/// A first request that has not answered after this long (a crash) stops holding its key.
const LOCK_SECS: u64 = 300;

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else { return next.run(req).await };
    let key = match key.to_str().map(str::trim) {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return AppError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key: 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    // Without an API key the handler answers 401 and there is nothing to remember.
    let Some(api_key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
    else {
        return next.run(req).await;
    };
    let api_key_hash = hash_api_key(&api_key);

    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return AppError::bad_request("invalid_json", "the request body is too large").into_response(),
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

    match state.store.begin_idempotency(&api_key_hash, &key, &request_hash, LOCK_SECS).await {
        Err(e) => AppError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => AppError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )
        .into_response(),
        Ok(IdempotencyBegin::InProgress) => {
            let mut resp = AppError::conflict(
                "idempotency_key_in_progress",
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
            if status.is_server_error() || status == StatusCode::UNAUTHORIZED {
                if let Err(e) = state.store.abandon_idempotency(&api_key_hash, &key).await {
                    tracing::error!(error = format!("{e:#}"), "failed to release an idempotency key");
                }
                return resp;
            }
            let (resp_parts, resp_body) = resp.into_parts();
            let body = match axum::body::to_bytes(resp_body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "failed to buffer a response");
                    let _ = state.store.abandon_idempotency(&api_key_hash, &key).await;
                    return AppError::Internal(anyhow::anyhow!("response body: {e}")).into_response();
                }
            };
            let stored = StoredResponse {
                status: status.as_u16(),
                content_type: resp_parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: body.to_vec(),
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
