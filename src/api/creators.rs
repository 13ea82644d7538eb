//! Creators, live (issue 15 item 4; docs/creators.md):
//!
//! - `GET /api/v1/{contract}/authors/{author}/events`: server-sent events. The first event is a
//!   `snapshot` of the author's incoming streams (the `IncomingStreamList` of
//!   `GET …/authors/{author}/streams`), their balance from the index with the block and chain time
//!   it was computed at, and their net rate, so a client extrapolates the balance second by second
//!   without asking again; then a new `snapshot` whenever an index commit changes anything of the
//!   author's (a stream started or stopped, a payment, a deposit, a withdrawal, a liquidation).
//! - `GET /creators/{contract}/{author}`: the creator page, one HTML document with its CSS and
//!   script inline (it loads nothing from anywhere else), reading those events with `EventSource`.
//!
//! **Public, read-only, capped.** A browser's `EventSource` cannot send an `X-API-Key` header,
//! and everything shown is public chain state (anyone can call `allSubscriptions` and
//! `accountInfo`), so neither route needs a key. What bounds them is `[server]
//! max_event_streams` (default [`DEFAULT_MAX_EVENT_STREAMS`]; 0 turns the event streams off): one
//! more open stream than that is answered 503 `too_many_event_streams` with `Retry-After`. The
//! event streams answer CORS like the other public routes (`[server] cors_public_origins`), so a
//! dapp on another origin can use them too.
//!
//! **One fan-out per process.** The indexer `NOTIFY`s every commit and rollback in its
//! transaction ([`crate::store::index::NOTIFY_CHANNEL`]). [`EventHub`] holds the process's one
//! listener on that channel (started by the first event stream, so a process that serves none
//! holds no connection for it) and a `watch` channel of commit counts: each open stream waits on
//! it, re-reads its author's rows (through the chain's read cache, so streams of one author share
//! reads) and sends a snapshot only when they changed. A `watch` keeps only the latest value, so
//! a slow client skips intermediate commits instead of queueing them: nothing per client grows.
//! A lost listener connection re-reads everything when it is back (see
//! [`crate::store::notify::listen`]), so a missed notification delays a snapshot but never loses
//! one. At shutdown every stream ends, so a graceful stop does not wait for clients.

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
    time::Duration,
};

use alloy::primitives::{Address, I256, U256};
use axum::{
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{
    AppError, AppState, ErrorCode,
    error::{ErrorBody, ErrorDetail},
    extract::parse_address,
    subscriptions::{IncomingStreamList, incoming_list, index_not_ready},
};
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    indexer::{AccountView, IncomingStreams, IndexReader, StreamView},
    store::index::NOTIFY_CHANNEL,
};

/// Default of `[server] max_event_streams`.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1000;

/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a client waits before reconnecting after the stream ended (the SSE `retry:` field).
const RETRY: Duration = Duration::from_secs(3);

/// Whether `path` (a request path or an OpenAPI template) is
/// `/api/v1/{contract}/authors/{author}/events`: public, see the module docs.
pub fn is_events_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["", "api", "v1", c, "authors", a, "events"] if !c.is_empty() && !a.is_empty())
}

/// The process's fan-out of index commits to its event streams, and their cap.
pub struct EventHub {
    slots: Arc<Semaphore>,
    max: usize,
    /// Bumped on every index notification (after the read caches were cleared).
    commits: watch::Sender<u64>,
    /// Every chain's read model; their caches are cleared before streams are woken, so a
    /// stream's re-read never gets an answer older than the commit that woke it.
    readers: Vec<IndexReader>,
    pool: PgPool,
    listening: OnceLock<()>,
    /// Cancelled at shutdown: every open stream ends.
    closing: CancellationToken,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").field("max", &self.max).field("open", &self.open()).finish()
    }
}

impl EventHub {
    pub fn new(pool: PgPool, readers: Vec<IndexReader>, max: usize) -> Arc<Self> {
        // A semaphore holds at most `MAX_PERMITS`; any configured value above is "unbounded" anyway.
        let max = max.min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            commits: watch::channel(0).0,
            readers,
            pool,
            listening: OnceLock::new(),
            closing: CancellationToken::new(),
        })
    }

    /// Event streams open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Ends every open stream (and refuses new ones): called when the server shuts down.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// A slot for one more stream, if the cap allows.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if self.closing.is_cancelled() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// The commit counter to wait on; starts the process's listener on first use.
    fn subscribe(self: &Arc<Self>) -> watch::Receiver<u64> {
        self.listening.get_or_init(|| {
            tokio::spawn(crate::store::notify::listen(self.pool.clone(), NOTIFY_CHANNEL, Arc::downgrade(self)));
        });
        self.commits.subscribe()
    }
}

/// The hub is woken by [`crate::store::notify::listen`], like the caches.
impl crate::store::notify::Invalidate for EventHub {
    fn invalidate(&self) {
        for reader in &self.readers {
            reader.invalidate_cache();
        }
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }
    fn set_healthy(&self, _healthy: bool) {
        // Nothing to bypass: after a reconnect `listen` invalidates, which re-reads everything.
    }
}

/// One `snapshot` event: what `GET …/authors/{author}/streams` answers, plus the author's balance
/// and net rate at a block. A client shows `SignedBalanceRaw + NetRate × (now − BlockTimestamp)`,
/// floored at zero, in 18-decimal base units: exact until the next snapshot, because between
/// commits an account's balance changes only by its rates.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreatorSnapshot {
    /// The deployment's name (`{contract}`).
    pub contract: String,
    #[serde(flatten)]
    pub incoming: IncomingStreamList,
    /// `balanceOf(author)` at `BlockNumber` in token units (18 decimals), floored at zero.
    #[schema(example = "12.5")]
    pub balance: String,
    /// The same in 18-decimal base units.
    pub balance_raw: String,
    /// `signedBalanceOf(author)` at `BlockNumber` (negative when outflow exceeded the balance):
    /// what to extrapolate from.
    pub signed_balance_raw: String,
    /// The author's outgoing rate per second (18-decimal base units; `accountInfo().outgoingRate`).
    pub outgoing_rate: String,
    /// `IncomeRate − OutgoingRate` per second, signed (18-decimal base units).
    #[schema(example = "-385802469135")]
    pub net_rate: String,
    /// The block the balance was computed at (the index's head).
    pub block_number: u64,
    /// That block's chain time (Unix seconds): extrapolate from it.
    pub block_timestamp: u64,
    /// Decimals of every base-unit amount here (StreamPay's internal 18).
    #[schema(example = 18)]
    pub decimals: u32,
    /// Decimals of the deployment's token, for display.
    #[schema(example = 6)]
    pub token_decimals: u8,
}

/// What must change for a new snapshot: the author's streams and stored account state (a
/// balance that only moved by its rates is what the client extrapolates anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    streams: Vec<StreamView>,
    stored_balance: I256,
    income_rate: U256,
    outgoing_rate: U256,
    updated: u64,
}

/// A snapshot and what it was made from.
struct Read {
    snapshot: CreatorSnapshot,
    fingerprint: Fingerprint,
}

/// How often a snapshot read retries when its two reads (streams, balance) landed on different
/// commits.
const CONSISTENT_READ_ATTEMPTS: usize = 5;

/// Reads the author's snapshot at the index's head; `None` before the deployment's first
/// checkpoint.
async fn read(state: &AppState, chain_id: u64, contract: Address, author: Address) -> Result<Option<Read>, AppError> {
    let Some(c) = state.contract_at(chain_id, contract) else {
        return Err(AppError::Internal(anyhow::anyhow!("deployment {contract} on chain {chain_id} vanished")));
    };
    let mut attempt = 0;
    let (incoming, account): (IncomingStreams, AccountView) = loop {
        attempt += 1;
        let Some(incoming) = c.chain.index.incoming_streams(c.address, author).await? else { return Ok(None) };
        let Some(account) = c.chain.index.balance(c.address, author).await? else { return Ok(None) };
        // Two statements: a commit may land between them. Read again until both are of one
        // commit; past the attempts, the next commit's snapshot corrects it.
        if incoming.head == account.head || attempt >= CONSISTENT_READ_ATTEMPTS {
            break (incoming, account);
        }
        // One of them may have come from this process's cache before its notification arrived.
        c.chain.index.invalidate_cache();
    };
    let net = I256::from_raw(account.income_rate) - I256::from_raw(account.outgoing_rate);
    let fingerprint = Fingerprint {
        streams: incoming.streams.clone(),
        stored_balance: account.stored_balance,
        income_rate: account.income_rate,
        outgoing_rate: account.outgoing_rate,
        updated: account.updated,
    };
    let snapshot = CreatorSnapshot {
        contract: c.name.clone(),
        incoming: incoming_list(author, &incoming),
        balance: format_units(account.balance, INTERNAL_DECIMALS),
        balance_raw: account.balance.to_string(),
        signed_balance_raw: account.signed_balance.to_string(),
        outgoing_rate: account.outgoing_rate.to_string(),
        net_rate: net.to_string(),
        block_number: account.head.block_number,
        block_timestamp: account.head.block_timestamp,
        decimals: INTERNAL_DECIMALS,
        token_decimals: c.token_decimals,
    };
    Ok(Some(Read { snapshot, fingerprint }))
}

fn snapshot_event(s: &CreatorSnapshot) -> Event {
    match Event::default().event("snapshot").id(s.block_number.to_string()).json_data(s) {
        Ok(e) => e,
        // Serializing strings and integers cannot fail; if it ever did, say so in the stream.
        Err(e) => error_event(&AppError::Internal(anyhow::anyhow!("snapshot serialization: {e}"))),
    }
}

/// A `stream_error` event (`{"error": {"code", "message"}}`, as an HTTP error body; not `error`,
/// which `EventSource` uses for its own connection errors) before the stream
/// ends; the client reconnects after [`RETRY`].
fn error_event(err: &AppError) -> Event {
    let message = match err {
        AppError::Client { message, .. } => message.clone(),
        AppError::Chain(e) | AppError::Internal(e) => {
            tracing::warn!(error = format!("{e:#}"), "event stream read failed; ending the stream");
            "the event stream could not read the index; reconnect".to_string()
        }
    };
    let body = ErrorBody { error: ErrorDetail { code: err.code(), message } };
    let data = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    Event::default().event("stream_error").data(data)
}

/// One open stream: waits for commits, sends a snapshot when the author's rows changed.
struct Watcher {
    state: AppState,
    chain_id: u64,
    contract: Address,
    author: Address,
    commits: watch::Receiver<u64>,
    last: Fingerprint,
    done: bool,
    /// The stream's place under the cap, released when the client goes away.
    _slot: OwnedSemaphorePermit,
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.done {
            return None;
        }
        loop {
            // The hub lives as long as the state this watcher holds: `changed` only fails if the
            // sender is gone, and then there is nothing more to send.
            self.commits.changed().await.ok()?;
            match read(&self.state, self.chain_id, self.contract, self.author).await {
                Ok(Some(r)) if r.fingerprint != self.last => {
                    self.last = r.fingerprint;
                    let event = snapshot_event(&r.snapshot);
                    return Some((Ok(event), self));
                }
                Ok(_) => continue,
                Err(e) => {
                    self.done = true;
                    let event = error_event(&e);
                    return Some((Ok(event), self));
                }
            }
        }
    }
}

/// One server-sent event of `GET /api/v1/{contract}/authors/{author}/events`, as an
/// `EventSource` hands it over (the document's schema for the `text/event-stream` answer).
pub struct CreatorEvent;

impl utoipa::PartialSchema for CreatorEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some("JSON: a `CreatorSnapshot` for `snapshot`, an `ErrorBody` for `stream_error`"));
        ObjectBuilder::new()
            .description(Some("One event: its type, its JSON data, and for a snapshot the indexed block as `id`"))
            .property(
                "event",
                ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["snapshot", "stream_error"])),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$"))
                    .description(Some("The snapshot's BlockNumber")),
            )
            .property(
                "retry",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("Milliseconds a client waits before it reconnects (3000)")),
            )
            .into()
    }
}

impl ToSchema for CreatorEvent {}

/// `GET /api/v1/{contract}/authors/{author}/events`: the author's incoming streams and balance,
/// live. Public (see the module docs).
#[utoipa::path(get, path = "/api/v1/{contract}/authors/{author}/events", tag = "Creators",
    description = "Server-sent events (`text/event-stream`; browsers read it with `EventSource`). \
        The first event is `event: snapshot` whose `data:` is a `CreatorSnapshot` (JSON) at the index's \
        head; another `snapshot` follows whenever an index commit changes the author's streams or account \
        (a stream started or stopped, a payment, deposit, withdrawal or liquidation). Between snapshots the \
        balance is `SignedBalanceRaw + NetRate × (now − BlockTimestamp)`, floored at zero (18-decimal base \
        units, exact: never use floating point). Comment lines keep the stream alive every 15 s. If the \
        index cannot be read the stream sends `event: stream_error` (data: an `ErrorBody`) and ends; clients \
        reconnect (`retry:` 3000 ms).\n\n\
        Public and read-only, like the chain state it shows: no key (an `EventSource` cannot send one). \
        Each process serves at most `[server] max_event_streams` streams at once (default 1000; 0 turns \
        them off); one more is answered 503 `too_many_event_streams` with `Retry-After`. CORS as the \
        other public routes (`[server] cors_public_origins`).",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("author" = crate::api::schema::Address, Path, description = "Author (creator) address")),
    responses(
        (status = 200, description = "An event stream: `snapshot` events, each carrying a CreatorSnapshot, and at most one `stream_error` at its end", content_type = "text/event-stream", body = CreatorEvent),
        (status = 400, description = "`invalid_address`, `unknown_contract`", body = ErrorBody),
        (status = 503, description = "`too_many_event_streams` (with Retry-After), `index_not_ready`, `database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn events(
    State(state): State<AppState>,
    Path((contract, author)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let c = state.contract(&contract)?;
    let author = parse_address("author", &author)?;
    let (chain_id, address) = (c.chain.chain_id, c.address);
    let Some(slot) = state.events.admit() else {
        let mut resp = AppError::new(
            ErrorCode::TooManyEventStreams,
            format!(
                "this relayer already serves its most event streams at once ({}); retry later",
                state.settings.max_event_streams
            ),
        )
        .into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(resp);
    };
    // Subscribed before the first read: a commit landing during it wakes the stream.
    let commits = state.events.subscribe();
    let first = read(&state, chain_id, address, author).await?.ok_or_else(index_not_ready)?;
    let opening = snapshot_event(&first.snapshot).retry(RETRY);
    let closing = state.events.closing.clone();
    let watcher = Watcher {
        state,
        chain_id,
        contract: address,
        author,
        commits,
        last: first.fingerprint,
        done: false,
        _slot: slot,
    };
    let events = stream::once(std::future::ready(Ok(opening)))
        .chain(stream::unfold(watcher, Watcher::next))
        .take_until(closing.cancelled_owned());
    let mut resp = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    // Proxies (nginx) must pass each event on at once rather than buffer the response.
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// `GET /creators/{contract}/{author}`: the creator page. Public; self-contained (no CDN).
#[utoipa::path(get, path = "/creators/{contract}/{author}", tag = "Creators",
    description = "A web page for one author: every incoming stream (subscriber, rate per month, since \
        when), the total income rate per month, and a balance that ticks every second, kept current without \
        reload by `GET /api/v1/{contract}/authors/{author}/events`. One HTML document with its script and \
        styles inline; it loads nothing from anywhere else. Public.",
    params(("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"), ("author" = crate::api::schema::Address, Path, description = "Author (creator) address")),
    responses(
        (status = 200, description = "The creator page (HTML)", content_type = "text/html"),
        (status = 400, description = "`invalid_address`, `unknown_contract`", body = ErrorBody),
    ))]
pub async fn page(
    State(state): State<AppState>,
    Path((contract, author)): Path<(String, String)>,
) -> Result<Response, AppError> {
    state.contract(&contract)?;
    parse_address("author", &author)?;
    let mut resp = Html(PAGE).into_response();
    // The page reads its contract and author from its own path; it may only talk to this origin.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
        ),
    );
    Ok(resp)
}

/// The creator page.
const PAGE: &str = include_str!("creator.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_path_is_recognised_in_requests_and_templates() {
        assert!(is_events_path("/api/v1/USDC/authors/0xabc/events"));
        assert!(is_events_path("/api/v1/USDC/authors/0xabc/events/"));
        assert!(is_events_path("/api/v1/{contract}/authors/{author}/events"));
        assert!(!is_events_path("/api/v1/USDC/authors/0xabc/streams"));
        assert!(!is_events_path("/api/v1/USDC/authors//events"));
        assert!(!is_events_path("/api/v1/USDC/x/authors/0xabc/events"));
        assert!(!is_events_path("/api/v2/USDC/authors/0xabc/events"));
    }
}
