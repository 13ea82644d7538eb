//! References and transaction history (SPEC §4).
//!
//! - `Reference`: an optional client label (1–255 characters) of a mutating call, sent as the
//!   `Reference` header (or, on `meta/execute`, the `Reference` body field). The value that
//!   reaches `meta/execute` is stored with the relayed transaction; build endpoints only check it.
//! - `GET /api/v1/transactions`: the key's transactions, newest first, filtered, with keyset
//!   pagination over the row id (a page never repeats or skips a row however many are inserted
//!   meanwhile; new rows only appear on the first page).
//! - `GET /api/v1/transactions/summary?Reference=`: count, gas and amounts of one reference.

use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorCode;
use super::{
    AppError, AppState,
    extract::{ApiKey, ApiQuery, parse_address},
};
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    store::{HistoryFilter, HistoryRow},
    views::{TransactionFacts, TransactionView},
};

/// Longest `Reference`, in characters.
pub const MAX_REFERENCE_CHARS: usize = 255;
/// Page size bounds of `GET /transactions`.
pub const MAX_LIMIT: u32 = 100;
pub const DEFAULT_LIMIT: u32 = 50;

/// Checks a reference: 1–255 characters, no control characters.
pub fn validate_reference(value: &str) -> Result<String, AppError> {
    // Control characters anywhere (before trimming: trimming would take a trailing newline).
    if value.chars().any(char::is_control) {
        return Err(AppError::new(ErrorCode::InvalidReference, "Reference must not contain control characters"));
    }
    // The length as sent; the stored value is trimmed (and must keep at least one character).
    let v = value.trim();
    let n = value.chars().count();
    if v.is_empty() || n > MAX_REFERENCE_CHARS {
        return Err(AppError::new(
            ErrorCode::InvalidReference,
            format!("Reference must be 1 to {MAX_REFERENCE_CHARS} characters, not only white space (got {n})"),
        ));
    }
    Ok(v.to_string())
}

/// The `Reference` header, checked; `None` when absent.
pub fn reference_header(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    match headers.get("reference") {
        None => Ok(None),
        Some(v) => {
            // Visible ASCII, or UTF-8 as raw header bytes (clients send either).
            let s = std::str::from_utf8(v.as_bytes())
                .map_err(|_| AppError::new(ErrorCode::InvalidReference, "the Reference header must be UTF-8"))?;
            validate_reference(s).map(Some)
        }
    }
}

/// The reference of an execute: the header or the body field; both must agree when both are sent.
pub fn execute_reference(headers: &HeaderMap, body: Option<&str>) -> Result<Option<String>, AppError> {
    let header = reference_header(headers)?;
    let body = body.map(validate_reference).transpose()?;
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(AppError::new(
            ErrorCode::ReferenceMismatch,
            "the Reference header and the Reference field differ; send one",
        )),
        (h, b) => Ok(h.or(b)),
    }
}

/// Layer: a malformed `Reference` header on any mutating call is a 400 before the handler runs.
pub async fn check_reference(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
        && let Err(e) = reference_header(req.headers())
    {
        return e.into_response();
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListQuery {
    #[serde(alias = "status")]
    status: Option<String>,
    #[serde(alias = "signer")]
    signer: Option<String>,
    #[serde(alias = "sponsor")]
    sponsor: Option<String>,
    #[serde(alias = "reference")]
    reference: Option<String>,
    #[serde(alias = "contract")]
    contract: Option<String>,
    #[serde(alias = "from")]
    from: Option<String>,
    #[serde(alias = "to")]
    to: Option<String>,
    #[serde(alias = "limit")]
    limit: Option<String>,
    #[serde(alias = "cursor")]
    cursor: Option<String>,
}

/// Opaque cursor of the page after the row `id`.
fn encode_cursor(id: i64) -> String {
    alloy::hex::encode(format!("id:{id}"))
}

fn decode_cursor(s: &str) -> Result<i64, AppError> {
    let bad = || AppError::new(ErrorCode::InvalidCursor, "cursor: pass NextCursor of a previous page unchanged");
    let raw = alloy::hex::decode(s).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    text.strip_prefix("id:").and_then(|n| n.parse::<i64>().ok()).filter(|n| *n > 0).ok_or_else(bad)
}

/// Splits `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, the RFC 3339 shape, into the local date and
/// time and the offset in minutes (Postgres then checks the date and time; it takes offsets only
/// up to 15:59 itself, RFC 3339 has them up to 23:59).
fn split_rfc3339(s: &str) -> Option<(&str, i32)> {
    if !is_rfc3339_shape(s) {
        return None;
    }
    if let Some(local) = s.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let (local, offset) = s.split_at(s.len() - 6);
    let (sign, hm) = offset.split_at(1);
    let (h, m) = (hm[..2].parse::<i32>().ok()?, hm[3..].parse::<i32>().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    Some((local, if sign == "-" { -(h * 60 + m) } else { h * 60 + m }))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`: the RFC 3339 shape.
fn is_rfc3339_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

async fn parse_time(state: &AppState, field: &str, value: &str) -> Result<String, AppError> {
    let bad = || {
        AppError::new(
            ErrorCode::InvalidTime,
            format!("{field}: {value:?} is not an RFC 3339 time like 2026-11-21T07:30:00Z"),
        )
    };
    let (local, offset_minutes) = split_rfc3339(value).ok_or_else(bad)?;
    // RFC 3339 allows a lower-case `t`; Postgres reads only `T`.
    state.store.parse_timestamp(&local.replace('t', "T"), offset_minutes).await?.ok_or_else(bad)
}

const STATUSES: &[&str] = &["pending", "submitted", "mined", "confirmed", "failed", "replaced", "expired"];

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// `GET /api/v1/transactions`.
#[utoipa::path(get, path = "/api/v1/transactions", tag = "Transactions",
    params(
        ("Status" = Option<String>, Query, description = "Comma-separated states, in lower case: pending, submitted, mined, confirmed, failed, replaced, expired (empty: all)",
            pattern = "^((pending|submitted|mined|confirmed|failed|replaced|expired)(,(pending|submitted|mined|confirmed|failed|replaced|expired))*)?$"),
        ("Signer" = Option<String>, Query, description = "The meta-transaction's signer (From); empty: any", pattern = "^(0[xX][0-9a-fA-F]{40})?$"),
        ("Sponsor" = Option<String>, Query, description = "The sponsor that sent it; empty: any", pattern = "^(0[xX][0-9a-fA-F]{40})?$"),
        ("Reference" = Option<crate::api::schema::Reference>, Query, description = "The Reference given to execute (exact match, surrounding white space ignored)"),
        ("Contract" = Option<String>, Query, description = "Deployment name (404 `unknown_contract` if this relayer serves none of that name) or contract address; empty: any"),
        ("From" = Option<crate::api::schema::OptionalTime>, Query, description = "Created at or after this time"),
        ("To" = Option<crate::api::schema::OptionalTime>, Query, description = "Created before this time"),
        ("Limit" = Option<u32>, Query, description = "Page size (default 50)", minimum = 1, maximum = 100),
        ("Cursor" = Option<String>, Query, description = "NextCursor of the previous page, unchanged (hex of `id:` and a positive id); empty: the first page",
            pattern = "^(69643[aA](30)*3[1-9](3[0-9]){0,17})?$"),
    ),
    responses(
        (status = 200, description = "The key's transactions, newest first", body = TransactionPage),
        (status = 400, description = "`invalid_status`, `invalid_address`, `invalid_reference`, `unknown_contract`, `invalid_time`, `invalid_limit`, `invalid_cursor`, `invalid_query`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    key: ApiKey,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TransactionPage>, AppError> {
    let mut f = HistoryFilter::default();
    if let Some(s) = non_empty(&q.status) {
        for part in s.split(',') {
            if !STATUSES.contains(&part) {
                return Err(AppError::new(
                    ErrorCode::InvalidStatus,
                    format!("status: {part:?} is not one of {}", STATUSES.join(", ")),
                ));
            }
            f.statuses.push(part.to_string());
        }
    }
    f.signer = non_empty(&q.signer).map(|s| parse_address("signer", s)).transpose()?;
    f.sponsor = non_empty(&q.sponsor).map(|s| parse_address("sponsor", s)).transpose()?;
    f.reference = q.reference.as_deref().map(validate_reference).transpose()?;
    f.contract = match non_empty(&q.contract) {
        Some(c) if c.starts_with("0x") || c.starts_with("0X") => Some(parse_address("contract", c)?),
        Some(c) => Some(state.contract(c)?.address),
        None => None,
    };
    f.from = match non_empty(&q.from) {
        Some(v) => Some(parse_time(&state, "from", v).await?),
        None => None,
    };
    f.to = match non_empty(&q.to) {
        Some(v) => Some(parse_time(&state, "to", v).await?),
        None => None,
    };
    let limit = match non_empty(&q.limit) {
        None => DEFAULT_LIMIT,
        Some(s) => s.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            AppError::new(ErrorCode::InvalidLimit, format!("limit must be an integer from 1 to {MAX_LIMIT}"))
        })?,
    };
    f.before_id = non_empty(&q.cursor).map(decode_cursor).transpose()?;

    let mut rows = state.store.list_history(key.0.id, &f, limit + 1).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(r.id))
    } else {
        None
    };
    let transactions = rows.into_iter().map(|r| TransactionListItem::new(&state, r)).collect();
    Ok(Json(TransactionPage { limit, next_cursor: next, transactions }))
}

/// `GET /api/v1/transactions`: a page, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionPage {
    pub limit: u32,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub transactions: Vec<TransactionListItem>,
}

/// An amount a relayed call moved, in StreamPay's internal 18-decimal units.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AmountView {
    /// Token units, exact (`"12.5"`).
    pub amount: String,
    /// Internal base units (18 decimals), exact.
    pub amount_raw: String,
    /// `deposit`, `depositFor`, `withdraw`, `withdrawTo` or `pay`.
    pub operation: String,
}

impl AmountView {
    fn new(operation: &str, amount: U256) -> Self {
        Self {
            amount: format_units(amount, INTERNAL_DECIMALS),
            amount_raw: amount.to_string(),
            operation: operation.to_string(),
        }
    }
}

/// One transaction of `GET /api/v1/transactions` (fields in the order of their keys, as the
/// answer has always been serialized).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionListItem {
    pub amounts: Vec<AmountView>,
    pub block_number: Option<u64>,
    pub chain_id: u64,
    pub contract: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    pub failure: Option<String>,
    pub from: String,
    pub gas_used: Option<u64>,
    pub id: i64,
    pub mined_at: Option<String>,
    pub nonce: u64,
    /// The user operations run, in order.
    pub operations: Vec<String>,
    /// The `Reference` given to execute.
    pub reference: Option<String>,
    pub sponsor: String,
    pub sponsor_nonce: u64,
    /// `pending`, `submitted`, `mined`, `confirmed`, `failed`, `replaced` or `expired`.
    pub state: String,
    /// `submitted`, `mined` or `reverted`.
    pub status: &'static str,
    pub transaction_hash: String,
}

impl TransactionListItem {
    fn new(state: &AppState, r: HistoryRow) -> Self {
        let view = TransactionView::new(
            state.chain(r.chain_id).map_or(&[][..], |c| c.deployments.as_slice()),
            TransactionFacts {
                id: r.id,
                chain_id: r.chain_id,
                contract: r.contract,
                signer: r.signer,
                meta_nonce: r.meta_nonce,
                sponsor: r.sponsor,
                sponsor_nonce: r.sponsor_nonce,
                tx_hash: r.tx_hash,
                state: r.status,
                gas_used: r.gas_used,
                block_number: r.block_number,
                failure: r.failure,
                revert_reason: None,
            },
        );
        Self {
            amounts: r.amounts.iter().map(|(op, a)| AmountView::new(op, *a)).collect(),
            block_number: view.block_number,
            chain_id: view.chain_id,
            contract: view.contract,
            created_at: r.created_at,
            failure: view.failure,
            from: view.from,
            gas_used: view.gas_used,
            id: view.transaction_id,
            mined_at: r.mined_at,
            nonce: view.nonce,
            operations: r.operations,
            reference: r.reference,
            sponsor: view.sponsor,
            sponsor_nonce: view.sponsor_nonce,
            state: view.state,
            status: view.status,
            transaction_hash: view.transaction_hash,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryQuery {
    #[serde(alias = "reference")]
    reference: Option<String>,
}

/// `GET /api/v1/transactions/summary?Reference=`.
#[utoipa::path(get, path = "/api/v1/transactions/summary", tag = "Transactions",
    params(("Reference" = crate::api::schema::Reference, Query, description = "The Reference given to execute (surrounding white space ignored)")),
    responses(
        (status = 200, description = "Count, gas and amounts of the key's transactions with this reference", body = ReferenceSummaryView),
        (status = 400, description = "`missing_field`, `invalid_reference`, `invalid_query`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all)]
pub async fn summary(
    State(state): State<AppState>,
    key: ApiKey,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> Result<Json<ReferenceSummaryView>, AppError> {
    let reference = match q.reference.as_deref() {
        None => return Err(AppError::missing("reference")),
        Some(r) => validate_reference(r)?,
    };
    let s = state.store.reference_summary(key.0.id, &reference).await?;
    Ok(Json(ReferenceSummaryView {
        amounts: s.amounts.iter().map(|(op, a)| AmountView::new(op, *a)).collect(),
        by_status: s.by_status.iter().map(|(k, n)| (k.clone(), *n)).collect(),
        count: s.count,
        gas_cost_wei: s.gas_cost_wei.to_string(),
        gas_used: s.gas_used,
        reference,
    }))
}

/// `GET /api/v1/transactions/summary` (fields in the order of their keys).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ReferenceSummaryView {
    /// Σ amount per operation, of mined transactions.
    pub amounts: Vec<AmountView>,
    /// Count per state.
    pub by_status: std::collections::BTreeMap<String, u64>,
    pub count: u64,
    /// Σ gas used × effective gas price, wei: what the sponsors paid. A transaction mined in the
    /// last second or so may still count at its signed max fee (an upper bound) until the
    /// relayer has read its receipt's price in the background.
    pub gas_cost_wei: String,
    /// Σ gas used by the mined transactions.
    pub gas_used: u64,
    pub reference: String,
}

/// The operations of a user call (already checked by `calls::check_user_call`) and the amounts
/// they move, in internal 18-decimal units (a deposit's token base units scaled up).
pub fn call_amounts(data: &[u8], token_decimals: u8) -> Vec<(usize, String, U256)> {
    use alloy::sol_types::SolInterface;

    use crate::chain::bindings::StreamPay::StreamPayCalls;

    let scale = U256::from(10u64).pow(U256::from(INTERNAL_DECIMALS.saturating_sub(u32::from(token_decimals))));
    let one = |call: &StreamPayCalls| -> Option<(&'static str, U256)> {
        Some(match call {
            StreamPayCalls::deposit(c) => ("deposit", c.amount.saturating_mul(scale)),
            StreamPayCalls::depositFor(c) => ("depositFor", c.amount.saturating_mul(scale)),
            StreamPayCalls::withdraw(c) => ("withdraw", c.amount),
            StreamPayCalls::withdrawTo(c) => ("withdrawTo", c.amount),
            StreamPayCalls::pay(c) => ("pay", c.amount),
            _ => return None,
        })
    };
    let Ok(call) = StreamPayCalls::abi_decode(data) else { return Vec::new() };
    let items: Vec<StreamPayCalls> = match call {
        StreamPayCalls::multicall(m) => m.data.iter().filter_map(|d| StreamPayCalls::abi_decode(d).ok()).collect(),
        other => vec![other],
    };
    items.iter().enumerate().filter_map(|(i, c)| one(c).map(|(op, a)| (i, op.to_string(), a))).collect()
}
