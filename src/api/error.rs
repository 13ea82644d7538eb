//! The API's one error type. Every client mistake has a stable `code` and a 4xx status; anything
//! else is logged here with its full cause chain and answered with a generic 500 body, so
//! internals never leak to clients.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::amount::AmountError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A client mistake: the status and stable code are part of the API.
    #[error("{code}: {message}")]
    Client { status: StatusCode, code: &'static str, message: String },
    /// The chain node is unreachable or misbehaving: not the client's fault, worth a retry.
    #[error("chain unavailable: {0:#}")]
    Chain(anyhow::Error),
    /// A bug or an unavailable dependency.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// A failure of ours: a database that cannot be reached (down, restarting, out of connections)
/// is a 503 worth a retry; anything else is a bug.
impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        if err.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(database_unavailable)) {
            tracing::warn!(error = format!("{err:#}"), "database unavailable");
            return Self::unavailable("database_unavailable", "the database did not answer; retry later");
        }
        Self::Internal(err)
    }
}

/// Whether a database error means "not reachable right now" rather than a bad query.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: shutdown / cannot connect now.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl AppError {
    fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// The client sent too much (`api::auth` adds `Retry-After`), or a quota (e.g. a sponsor's
    /// daily budget) is used up for now.
    pub fn too_many_requests(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::TOO_MANY_REQUESTS, code, message)
    }

    /// A dependency of ours is not ready yet (e.g. the index); the client may retry.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// Wraps a failed RPC call.
    pub fn chain(err: impl Into<anyhow::Error>) -> Self {
        Self::Chain(err.into())
    }

    /// `field` held a bad amount.
    pub fn amount(field: &str, err: AmountError) -> Self {
        Self::bad_request("invalid_amount", format!("{field}: {err}"))
    }

    pub fn missing(field: &str) -> Self {
        Self::bad_request("missing_field", format!("{field} is required"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Chain(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            Self::Client { code, message, .. } => (*code, message.clone()),
            Self::Chain(err) => {
                tracing::warn!(error = format!("{err:#}"), "chain request failed");
                ("chain_unavailable", "the chain node did not answer; retry later".to_string())
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                ("internal", "internal error".to_string())
            }
        };
        (self.status(), Json(json!({"error": {"code": code, "message": message}}))).into_response()
    }
}
