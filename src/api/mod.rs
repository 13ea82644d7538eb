//! The relay API (SPEC §3; paths, fields and response keys follow the AzothPay reference).
//!
//! - [`info`]: `GET /`, `GET /api/v1/contracts`; [`health`]: `GET /health`
//! - [`discovery`]: `GET /api/v1/meta`, `GET /openapi.json`, `GET /docs`, `GET /changelog`
//! - [`subscriptions`], [`payments`], [`batch`]: endpoints that *build* a meta-transaction
//!   ([`build`] assembles the `Transaction` object every one of them returns)
//! - [`meta`]: `GET /meta/nonce/{account}` and `POST /meta/execute` (`Prefer: respond-async` → 202)
//! - [`transactions`]: `GET /api/v1/transactions/{id}`, the outcome of an execute
//! - [`admin`]: `/api/v1/admin/keys`, the API key lifecycle
//! - [`auth`]: who may call what (scopes by method and path, key status, CIDR allowlist, rate
//!   limit, admin JWTs), enforced in one layer
//! - [`key_cache`]: authenticated keys in memory, cleared by `NOTIFY`
//! - [`history`]: `Reference`, `GET /api/v1/transactions` and its `summary`
//! - [`sponsors`]: `GET /api/v1/sponsors`, `GET /{contract}/fees`, sponsor policies
//! - [`resolve`]: `GET /{contract}/recipients/resolve`
//! - [`creators`]: `GET /api/v1/{contract}/authors/{author}/events` (server-sent events) and the
//!   creator page `GET /creators/{contract}/{author}`, both public, capped
//! - [`webhooks`]: `/api/v1/webhooks…`: endpoints, delivery log, redelivery
//! - [`tokens`]: `/api/v1/auth/token…`: client tokens for web pages; [`cors`]: which pages may read answers
//! - [`extract`]: the authenticated key and edge parsing; [`error`]: the one error type

mod admin;
pub mod admission;
pub mod auth;
mod batch;
mod build;
pub mod cors;
pub mod creators;
pub mod discovery;
mod error;
mod extract;
pub mod health;
mod history;
pub mod idempotency;
mod info;
pub mod key_cache;
mod meta;
mod metrics;
mod payments;
mod resolve;
pub mod schema;
mod sponsors;
mod subscriptions;
mod tokens;
mod transactions;
mod webhooks;

use std::{ops::Deref, sync::Arc, time::Duration};

use alloy::primitives::Address;
use axum::{
    Router,
    http::{HeaderValue, Request},
    routing::{MethodRouter, delete, get, post},
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::{DefaultOnResponse, TraceLayer},
};

pub use admin::{CreateKeyRequest, KeyView, MAX_GRACE_SECS, key_spec};
pub use creators::DEFAULT_MAX_EVENT_STREAMS;
pub use error::{AppError, ErrorCode};
pub use extract::parse_address;

pub use crate::chain::Deployment;
pub(crate) use crate::views::checksum;
use crate::{chains::Chain, store::Store};

/// The request id header: taken from the caller when present, else a new UUID; echoed on every
/// response and recorded in the request's log span.
pub const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

pub use crate::API_VERSION;

/// Tunables of request handling.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lifetime of a built meta-transaction in seconds of chain time.
    pub meta_deadline_secs: u64,
    /// How long `execute` waits for the receipt before answering 202.
    pub receipt_timeout: Duration,
    /// Thresholds of `GET /health`.
    pub health: health::HealthSettings,
    /// The indexers `serve` starts (`[indexer]` / `STREAMPAY_INDEXER_*`).
    pub indexer: crate::indexer::IndexerConfig,
    /// Admin token secret, trusted proxies, per-key rate limiters.
    pub auth: auth::AuthSettings,
    /// The webhook dispatcher's tunables.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// When set, `GET /metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<crate::secret::Secret>,
    /// The liquidation keeper (`serve` starts it when enabled).
    pub keeper: crate::keeper::KeeperSettings,
    /// What `meta/execute` admits: size and gas caps, budgets, reputation (`[admission]`).
    pub admission: admission::AdmissionSettings,
    /// How long `execute` waits, after the receipt, for the index to reach the call's block
    /// before answering 200 (read-your-writes); past it the answer is a 202.
    pub read_your_writes_timeout: Duration,
    /// A request still running this long is answered 503 `request_timeout`
    /// (`[server] request_timeout_secs`).
    pub request_timeout: Duration,
    /// Requests served at once; one more is answered 503 `server_busy`
    /// (`[server] max_concurrent_requests`).
    pub max_concurrent_requests: usize,
    /// Open event streams (`/authors/{author}/events`) served at once; one more is answered 503
    /// `too_many_event_streams` (`[server] max_event_streams`; 0: none).
    pub max_event_streams: usize,
}

/// How long a read-your-writes wait relies on this process's indexer alone, when it indexes
/// the deployment, before it also reads the database and tries a catch-up (as where another
/// replica indexes it). A step after a new block takes tens of milliseconds.
const LOCAL_PATIENCE: Duration = Duration::from_millis(200);

/// Default of `[server] request_timeout_secs`: above a synchronous execute's longest wait (the
/// receipt's 60 s, then up to 15 s for the index), so only a request stuck on a dependency hits it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Default of `[server] max_concurrent_requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

impl Default for Settings {
    fn default() -> Self {
        Self {
            meta_deadline_secs: 3600,
            receipt_timeout: Duration::from_secs(60),
            health: health::HealthSettings::default(),
            indexer: crate::indexer::IndexerConfig::default(),
            auth: auth::AuthSettings::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            metrics_token: None,
            keeper: crate::keeper::KeeperSettings::default(),
            admission: admission::AdmissionSettings::default(),
            read_your_writes_timeout: Duration::from_secs(15),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
        }
    }
}

/// Shared state of every handler; cheap to clone. Everything in it is built before the first
/// request (see [`AppState::new`]); nothing starts on first use.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// Authenticated keys in memory when `settings.auth.key_cache` is on.
    keys: Option<Arc<key_cache::KeyCache>>,
    /// `/health`'s last answer and `/metrics`' last gauge refresh (each at most once a second).
    pub probes: Arc<health::Probes>,
    /// Wakes this process's indexers (a relayed call was mined: read-your-writes).
    index_wake: Arc<tokio::sync::Notify>,
    /// One read-your-writes catch-up at a time in this process.
    catching_up: Arc<tokio::sync::Mutex<()>>,
    /// The indexed head per (chain, deployment) as last read by a read-your-writes wait, and
    /// when: many waiting executes share one database read per few milliseconds.
    indexed_heads: Arc<tokio::sync::Mutex<IndexedHeads>>,
    /// The heads this process's own indexers reached, told at each step: a read-your-writes wait
    /// wakes on the step that indexes its block instead of at its next database read.
    local_heads: Arc<crate::indexer::LocalHeads>,
    /// The event streams' fan-out of index commits and their cap ([`creators`]).
    pub events: Arc<creators::EventHub>,
}

/// `(chain id, deployment) -> (indexed head, when it was read)`.
type IndexedHeads = std::collections::HashMap<(u64, Address), (u64, tokio::time::Instant)>;

pub struct Inner {
    pub store: Store,
    /// The chains this process serves, in configuration order (see [`crate::chains`]).
    pub chains: Vec<Arc<Chain>>,
    pub settings: Settings,
}

/// A deployment the request named, with the chain it lives on; derefs to the [`Deployment`].
#[derive(Debug, Clone, Copy)]
pub struct Contract<'a> {
    pub chain: &'a Arc<Chain>,
    pub deployment: &'a Deployment,
}

impl Deref for Contract<'_> {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        self.deployment
    }
}

impl AppState {
    /// The state of `inner`'s chains; with the key cache (and its `NOTIFY` listener) made now
    /// when `settings.auth.key_cache` is on, so this must run inside the Tokio runtime.
    pub fn new(inner: Inner) -> Self {
        let keys = inner.settings.auth.key_cache.then(|| key_cache::KeyCache::start(inner.store.pool().clone()));
        let events = creators::EventHub::new(
            inner.store.pool().clone(),
            inner.chains.iter().map(|c| c.index.clone()).collect(),
            inner.settings.max_event_streams,
        );
        Self {
            inner: Arc::new(inner),
            keys,
            probes: Arc::default(),
            index_wake: Arc::new(tokio::sync::Notify::new()),
            catching_up: Arc::new(tokio::sync::Mutex::new(())),
            indexed_heads: Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::new())),
            local_heads: Arc::new(tokio::sync::watch::Sender::new(std::collections::HashMap::new())),
            events,
        }
    }

    /// What this process's indexers wait on besides their poll interval.
    pub fn index_wake(&self) -> Arc<tokio::sync::Notify> {
        self.index_wake.clone()
    }

    /// Where this process's indexers tell the heads they reach.
    pub fn local_heads(&self) -> Arc<crate::indexer::LocalHeads> {
        self.local_heads.clone()
    }

    /// The chain with id `chain_id`, if this process serves it.
    pub fn chain(&self, chain_id: u64) -> Option<&Arc<Chain>> {
        self.chains.iter().find(|c| c.chain_id == chain_id)
    }

    /// Every deployment of every chain, with its chain.
    pub fn contracts(&self) -> impl Iterator<Item = Contract<'_>> {
        self.chains
            .iter()
            .flat_map(|chain| chain.deployments.iter().map(move |deployment| Contract { chain, deployment }))
    }

    /// The deployment at `address` on chain `chain_id`, if this process serves it.
    pub fn contract_at(&self, chain_id: u64, address: Address) -> Option<Contract<'_>> {
        let chain = self.chain(chain_id)?;
        Some(Contract { chain, deployment: chain.deployment_at(address)? })
    }

    /// Every sponsor address configured on any chain, once each, in configuration order.
    pub fn sponsor_addresses(&self) -> Vec<Address> {
        let mut all = Vec::new();
        for a in self.chains.iter().flat_map(|c| c.sponsors.addresses()) {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        all
    }

    /// Read-your-writes: waits (up to `settings.read_your_writes_timeout`) until the Postgres
    /// index of `contract` has reached `block`, waking this process's indexer, or indexing
    /// itself when no indexer holds the deployment (none runs in this process or any replica).
    /// Then this process's read cache is dropped, so every read endpoint reflects the block.
    /// Answers whether the index got there in time. Reads are never served from the chain.
    pub async fn await_indexed(&self, contract: Contract<'_>, block: u64) -> bool {
        self.await_indexed_for(contract, block, self.settings.read_your_writes_timeout).await
    }

    /// [`AppState::await_indexed`] with its own bound.
    pub async fn await_indexed_for(&self, contract: Contract<'_>, block: u64, timeout: Duration) -> bool {
        let chain = contract.chain;
        let now = tokio::time::Instant::now();
        let deadline = now + timeout;
        let mut pause = Duration::from_millis(5);
        let key = (chain.chain_id, contract.address);
        let mut local = self.local_heads.subscribe();
        // Where this process's indexer indexes the deployment (it has told a step), its next step
        // is told at once and nothing else can move the index: the database is not read and no
        // catch-up is tried (it would only find the deployment's lock taken) unless nothing is
        // told for a while.
        let mut look_at = if local.borrow().contains_key(&key) { now + LOCAL_PATIENCE } else { now };
        // The indexer may be waiting for its next poll: it is woken once, and again at each look.
        self.index_wake.notify_waiters();
        loop {
            if local.borrow_and_update().get(&key).is_some_and(|&h| h >= block) {
                chain.index.invalidate_cache();
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= look_at {
                // Otherwise the database says what another replica's indexer reached.
                match self.indexed_head(chain, contract.address).await {
                    Ok(Some(head)) if head >= block => {
                        chain.index.invalidate_cache();
                        return true;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "reading the indexed head failed"),
                }
                self.index_wake.notify_waiters();
                if let Ok(_single) = self.catching_up.try_lock() {
                    let indexer = crate::indexer::Indexer::new(
                        Arc::new(crate::indexer::RpcLogSource::new(chain.provider.clone())),
                        self.store.pool().clone(),
                        chain.chain_id,
                        contract.address,
                        contract.start_block,
                        self.settings.indexer.clone(),
                    );
                    if let Err(e) = indexer.catch_up_if_idle().await {
                        tracing::debug!(error = format!("{e:#}"), "read-your-writes catch-up failed; retrying");
                    }
                }
                look_at = tokio::time::Instant::now() + pause;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(contract = %contract.name, block, "the index did not reach a relayed call's block in time");
                return false;
            }
            tokio::select! {
                _ = local.changed() => {}
                _ = tokio::time::sleep_until(look_at.min(deadline)) => {}
            }
        }
    }

    /// The indexed head block of `contract` on `chain`, read from Postgres at most once per
    /// 10 ms for all of this process's read-your-writes waits.
    async fn indexed_head(&self, chain: &Chain, contract: Address) -> anyhow::Result<Option<u64>> {
        let mut heads = self.indexed_heads.lock().await;
        if let Some((head, at)) = heads.get(&(chain.chain_id, contract))
            && at.elapsed() < Duration::from_millis(10)
        {
            return Ok(Some(*head));
        }
        let head = chain.index.head(contract).await?.map(|h| h.block_number);
        if let Some(h) = head {
            heads.insert((chain.chain_id, contract), (h, tokio::time::Instant::now()));
        }
        Ok(head)
    }

    /// The key cache, if enabled.
    pub fn key_cache(&self) -> Option<&key_cache::KeyCache> {
        self.keys.as_deref()
    }

    /// Drops this process's cached keys at once after a key change made here (other processes
    /// hear the change's `NOTIFY`).
    pub fn keys_changed(&self) {
        self.settings.auth.cors.origins.invalidate();
        if let Some(cache) = &self.keys {
            cache.invalidate();
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Registers `path` with and without a trailing slash (the reference uses both spellings).
fn both<S: Clone + Send + Sync + 'static>(router: Router<S>, path: &str, method: MethodRouter<S>) -> Router<S> {
    let trimmed = path.trim_end_matches('/');
    router.route(trimmed, method.clone()).route(&format!("{trimmed}/"), method)
}

/// The request timeout and concurrency limit in front of every route (review S11).
#[derive(Clone)]
struct Limits {
    timeout: Duration,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Answers 503 `server_busy` (with `Retry-After: 1`) when `max_concurrent_requests` are already
/// being served (shedding, not queueing: a queue would only add latency to an overload), and 503
/// `request_timeout` when the handler has not answered within `request_timeout`. The handler is
/// then dropped, as when its client disconnects (see [`meta`]: nothing half-queued is left).
async fn limits(
    axum::extract::State(limits): axum::extract::State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(_slot) = limits.slots.clone().try_acquire_owned() else {
        let mut resp = AppError::new(
            ErrorCode::ServerBusy,
            "the relayer is serving as many requests as it is configured to; retry in a second",
        )
        .into_response();
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(timeout_secs = limits.timeout.as_secs_f64(), "request timed out");
            AppError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request did not complete within {} s; retry later (an execute may have been queued: look it up by its signer's nonce or in GET /api/v1/transactions)",
                    limits.timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// The whole HTTP API, ready to serve (tests call it directly).
pub fn app(state: AppState) -> Router {
    let limiter = Limits {
        timeout: state.settings.request_timeout,
        slots: Arc::new(tokio::sync::Semaphore::new(state.settings.max_concurrent_requests.max(1))),
    };
    crate::observability::install();
    let mut v1 = Router::new();
    v1 = both(v1, "/contracts", get(info::contracts));
    v1 = both(v1, "/meta", get(discovery::meta));
    v1 = both(v1, "/transactions", get(history::list));
    v1 = both(v1, "/transactions/summary", get(history::summary));
    v1 = both(v1, "/transactions/{id}", get(transactions::get));
    v1 = both(v1, "/sponsors", get(sponsors::list));
    v1 = both(v1, "/{contract}/fees", get(sponsors::quote));
    v1 = both(v1, "/{contract}/recipients/resolve", get(resolve::resolve));
    v1 = both(v1, "/webhooks", get(webhooks::list).post(webhooks::create));
    v1 = both(v1, "/webhooks/{id}", get(webhooks::get).delete(webhooks::delete));
    v1 = both(v1, "/webhooks/{id}/deliveries", get(webhooks::deliveries));
    v1 = both(v1, "/webhooks/{id}/deliveries/{delivery_id}/redeliver", post(webhooks::redeliver));
    v1 = both(v1, "/{contract}/subscriptions", post(subscriptions::create));
    v1 = both(v1, "/{contract}/subscriptions/{address}", get(subscriptions::list).delete(subscriptions::cancel));
    v1 = both(v1, "/{contract}/authors/{author}/streams", get(subscriptions::incoming));
    v1 = both(v1, "/{contract}/authors/{author}/events", get(creators::events));
    v1 = both(v1, "/{contract}/payments", post(payments::pay));
    v1 = both(v1, "/{contract}/payments/deposit", post(payments::deposit));
    v1 = both(v1, "/{contract}/payments/withdraw", post(payments::withdraw));
    v1 = both(v1, "/{contract}/payments/balance/{address}", get(payments::balance));
    v1 = both(v1, "/{contract}/meta/nonce/{account}", get(meta::nonce));
    v1 = both(v1, "/{contract}/meta/execute", post(meta::execute));
    v1 = both(v1, "/{contract}/batch/subscriptions", post(batch::subscriptions));
    v1 = both(v1, "/{contract}/batch/payments", post(batch::payments));
    v1 = both(v1, "/admin/keys", get(admin::list).post(admin::create));
    v1 = both(v1, "/admin/keys/{id}", delete(admin::delete));
    v1 = both(v1, "/admin/keys/{id}/revoke", post(admin::revoke));
    v1 = both(v1, "/admin/keys/{id}/rotate", post(admin::rotate));
    v1 = both(v1, "/auth/token", post(tokens::create));
    v1 = both(v1, "/auth/token/validate", get(tokens::validate));

    Router::new()
        .route("/", get(info::root))
        .route("/health", get(health::health))
        .route("/openapi.json", get(discovery::openapi_json))
        .route("/docs", get(discovery::docs))
        .route("/changelog", get(discovery::changelog))
        .route("/creators/{contract}/{author}", get(creators::page))
        .nest("/api/v1", v1.layer(axum::middleware::from_fn(history::check_reference)))
        .route("/metrics", get(metrics::metrics))
        .fallback(info::not_found)
        // Both on matched routes only (`route_layer`): an unknown path reaches neither, so it
        // can never write an Idempotency-Key entry. Auth is the outer one: a refused request
        // (401/403/429) never claims a key, and idempotency sees the authenticated key.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::layer))
        .method_not_allowed_fallback(discovery::method_not_allowed)
        // Preflights carry no credentials and match no route: answered before routing.
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::preflight))
        .layer(axum::middleware::from_fn_with_state(limiter, limits))
        .layer(SetResponseHeaderLayer::overriding(
            axum::http::HeaderName::from_static("x-api-version"),
            HeaderValue::from_static(API_VERSION),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(axum::middleware::from_fn(crate::observability::track_http))
        // Outermost: every request gets an `X-Request-Id` (the caller's, or a new UUID) before the
        // trace span reads it, and the response carries it back.
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
