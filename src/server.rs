//! Wiring for `streampay serve`: the one module that builds the services from configuration
//! (database, chains with their providers, sponsors, pipelines and read models), starts every
//! background task under one [`Supervisor`] and stops them in order on shutdown; plus tracing.
//! Domain modules never reach back here or into `api`.

use std::{sync::Arc, time::Duration};

use alloy::providers::Provider;
use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tracing_subscriber::{EnvFilter, fmt, util::SubscriberInitExt};

use crate::{
    api::{self, AppState, Inner, Settings},
    chain,
    chains::{Chain, ChainParts},
    config::{ChainConfig, Config, DeploymentsFile, LogFormat},
    indexer::{Indexer, RpcLogSource},
    keeper::Keeper,
    pipeline::Sponsors,
    secret::Secret,
    store::Store,
    supervisor::Supervisor,
    webhooks::{self, Dispatcher},
};

/// Structured logs to stdout; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // alloy's HTTP transport records the whole RPC URL (a provider key) on its debug span: never
    // enabled, whatever RUST_LOG asks for.
    let filter = filter.add_directive("alloy_transport_http=info".parse().expect("a valid directive"));
    // try_init (also routes `log` records): a second call (tests, `dev` after `serve` setup) is harmless.
    let _ = log_subscriber(format, filter, std::io::stdout).try_init();
}

/// The log subscriber `init_tracing` installs, writing to `writer`. JSON lines carry the event's
/// fields at the top level and the enclosing spans under `span`/`spans`, so every line logged
/// while serving a request holds its `request_id` (and method, path).
pub fn log_subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_current_span(true).with_span_list(true).finish())
        }
        LogFormat::Text => Box::new(builder.compact().finish()),
    }
}

/// Connects one configured chain: its provider (checked to be on the deployments file's chain),
/// its sponsors (with the pipeline settings, `finality_depth` overriding the confirmations) and
/// its sponsor policies (written to the database, which they replace for this chain).
async fn connect_chain(config: &Config, c: &ChainConfig, store: &Store) -> anyhow::Result<ChainParts> {
    let deployments = DeploymentsFile::load(&c.deployments_file)?;
    let urls: Vec<Secret> =
        if c.rpc_urls.is_empty() { deployments.rpc_url.clone().into_iter().collect() } else { c.rpc_urls.clone() };
    if urls.is_empty() {
        bail!("No RPC URL: set chain.rpc_url / STREAMPAY_RPC_URL or rpcUrl in the deployments file");
    }
    let urls: Vec<&str> = urls.iter().map(Secret::expose).collect();
    let provider = chain::connect_many(&urls, c.rpc_timeout)?;
    let chain_id = provider.get_chain_id().await.context("Failed to reach the RPC node")?;
    if chain_id != deployments.chain_id {
        bail!("the RPC node is on chain {chain_id} but the deployments file is for chain {}", deployments.chain_id);
    }
    if c.sponsor_keys.is_empty() {
        bail!("No sponsor keys for chain {chain_id}: set sponsors.private_keys or STREAMPAY_SPONSOR_KEYS");
    }
    let mut pipeline = config.pipeline.clone();
    if let Some(depth) = c.finality_depth {
        pipeline.confirmations = depth;
    }
    let finality_depth = pipeline.confirmations;
    let sponsors = Sponsors::from_keys(&c.sponsor_keys, chain_id)?.with_settings(pipeline);
    for (sponsor, _) in &c.sponsor_policies {
        if sponsors.get(sponsor).is_none() {
            bail!("the sponsor policies of chain {chain_id} name {sponsor}, which is not one of its sponsor keys");
        }
    }
    store.replace_sponsor_policies(chain_id, &c.sponsor_policies).await?;
    Ok(ChainParts {
        name: c.name.clone(),
        chain_id,
        provider,
        finality_depth,
        deployments: deployments.deployments,
        sponsors,
    })
}

/// Connects everything the API needs (the database, migrated; every configured chain, each
/// checked against its deployments file) and builds the state. Nothing runs yet: see [`start`].
pub async fn state_from_config(config: &Config) -> anyhow::Result<AppState> {
    if let Some(secret) = &config.admin_jwt_secret {
        // HS256 is only as strong as its secret: a short one can be brute-forced offline from
        // any token.
        if secret.expose().len() < 32 {
            bail!("admin.jwt_secret / STREAMPAY_ADMIN_JWT_SECRET must be at least 32 characters");
        }
    }
    let store = Store::connect(config.database_url()?, config.database_max_connections).await?;
    store.migrate().await?;
    let settings = Settings {
        meta_deadline_secs: config.meta_deadline_secs,
        receipt_timeout: config.receipt_timeout(),
        health: api::health::HealthSettings {
            max_indexer_lag_blocks: config.health_max_indexer_lag_blocks,
            sponsor_min_balance_wei: config.health_sponsor_min_balance_wei,
            ..Default::default()
        },
        indexer: config.indexer.clone(),
        auth: api::auth::AuthSettings {
            admin_jwt_secret: config.admin_jwt_secret.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            key_cache: config.key_cache,
            invalid_keys: api::auth::InvalidKeyLimiter::per_minute(config.invalid_key_limit_per_minute),
            cors: api::cors::CorsSettings { public_origins: config.cors_public_origins.clone(), ..Default::default() },
            ..Default::default()
        },
        request_timeout: config.request_timeout(),
        max_concurrent_requests: config.max_concurrent_requests,
        max_event_streams: config.max_event_streams,
        webhooks: config.webhooks.clone(),
        metrics_token: config.metrics_token.clone(),
        keeper: config.keeper.clone(),
        admission: config.admission.clone(),
        ..Settings::default()
    };
    let mut parts = Vec::new();
    for c in &config.chains {
        parts.push(connect_chain(config, c, &store).await?);
    }
    build_state(store, parts, settings)
}

/// The state of `chains` over `store`: each chain's pipeline and read model built (the read
/// cache's and key cache's `NOTIFY` listeners start here, so this runs inside the runtime), the
/// chains checked to be distinct with deployment names unique across them.
pub fn build_state(store: Store, chains: Vec<ChainParts>, settings: Settings) -> anyhow::Result<AppState> {
    let read_cache = settings.indexer.read_cache;
    let chains: Vec<Arc<Chain>> = chains.into_iter().map(|p| Chain::new(p, &store, read_cache)).collect();
    crate::chains::check(&chains)?;
    Ok(AppState::new(Inner { store, chains, settings }))
}

/// Supervisor stages, in the order [`Supervisor::shutdown`] stops them: first what makes new
/// work (keeper, webhooks), then the pipelines that send queued calls, then the indexers that
/// read their results, and housekeeping last.
pub mod stage {
    pub const KEEPER: &str = "keeper";
    pub const WEBHOOKS: &str = "webhooks";
    pub const PIPELINE: &str = "pipeline";
    pub const PRICING: &str = "pricing";
    pub const INDEXER: &str = "indexer";
    pub const HOUSEKEEPING: &str = "housekeeping";
}

/// Starts every background task of `state` under `supervisor`, in stopping order: the keeper of
/// each chain (when enabled), the webhook dispatcher (when enabled), each chain's pipeline and pricing, one
/// indexer per deployment, and housekeeping.
pub fn start(state: &AppState, supervisor: &Supervisor) -> anyhow::Result<()> {
    if state.settings.keeper.enabled {
        start_keepers(state, supervisor)?;
    }
    if state.settings.webhooks.enabled {
        start_webhooks(state, supervisor);
    }
    start_pipelines(state, supervisor);
    start_pricing(state, supervisor);
    start_indexers(state, supervisor);
    start_housekeeping(state.store.clone(), supervisor);
    start_spend_roll_up(state.store.clone(), supervisor);
    Ok(())
}

/// Each chain's pipeline (queued calls of a crash are resumed without waiting for a request).
pub fn start_pipelines(state: &AppState, supervisor: &Supervisor) {
    for chain in &state.chains {
        let pipeline = chain.pipeline.clone();
        supervisor.spawn(stage::PIPELINE, format!("pipeline {}", chain.name), move |stop| pipeline.clone().run(stop));
    }
}

/// Each chain's fee estimate and receipt pricing ([`crate::pricing`]): requests and the budget
/// lock read what it publishes, so none waits on the node for it.
pub fn start_pricing(state: &AppState, supervisor: &Supervisor) {
    for chain in &state.chains {
        let pricing = chain.pricing.clone();
        supervisor.spawn(stage::PRICING, format!("pricing {}", chain.name), move |stop| {
            let pricing = pricing.clone();
            async move { pricing.run(stop).await }
        });
    }
}

/// One indexer per deployment of every chain, into Postgres (the reads, `/health`'s lag). Of
/// several replicas one indexes each deployment, the others stand by (advisory lock). Each
/// deployment is indexed from its `startBlock` unless a checkpoint exists; every commit is
/// atomic, so stopping at any point loses nothing.
pub fn start_indexers(state: &AppState, supervisor: &Supervisor) {
    for chain in &state.chains {
        let source = Arc::new(RpcLogSource::new(chain.provider.clone()).with_heads(chain.pipeline.heads()));
        for d in &chain.deployments {
            let (source, pool, chain_id, address, start, cfg, wake, heads) = (
                source.clone(),
                state.store.pool().clone(),
                chain.chain_id,
                d.address,
                d.start_block,
                state.settings.indexer.clone(),
                state.index_wake(),
                state.local_heads(),
            );
            supervisor.spawn(stage::INDEXER, format!("indexer {} {}", chain.name, d.name), move |stop| {
                let indexer = Indexer::new(source.clone(), pool.clone(), chain_id, address, start, cfg.clone())
                    .with_wake(wake.clone())
                    .with_local_heads(heads.clone());
                async move { indexer.run(stop.cancelled_owned()).await }
            });
        }
    }
}

/// The webhook dispatcher over every chain: a producer (events from the index, sponsor balances)
/// and a delivery loop. Every step is a database transaction, so stopping loses nothing.
pub fn start_webhooks(state: &AppState, supervisor: &Supervisor) {
    let dispatcher = Arc::new(Dispatcher {
        store: state.store.clone(),
        chains: state.chains.clone(),
        settings: state.settings.webhooks.clone(),
        sponsor_min_balance_wei: state.settings.health.sponsor_min_balance_wei,
    });
    let d = dispatcher.clone();
    supervisor.spawn(stage::WEBHOOKS, "webhook producer", move |stop| webhooks::produce::run(d.clone(), stop));
    supervisor.spawn(stage::WEBHOOKS, "webhook delivery", move |stop| webhooks::deliver::run(dispatcher.clone(), stop));
}

/// A keeper per chain: liquidates accounts the index predicts insolvent (one replica at a time).
pub fn start_keepers(state: &AppState, supervisor: &Supervisor) -> anyhow::Result<()> {
    for chain in &state.chains {
        let keeper = Arc::new(Keeper::new(state.store.clone(), chain.clone(), state.settings.keeper.clone())?);
        supervisor.spawn(stage::KEEPER, format!("keeper {}", chain.name), move |stop| {
            let keeper = keeper.clone();
            async move { keeper.run(stop).await }
        });
    }
    Ok(())
}

/// Serves the API on `listener` until SIGINT/SIGTERM with every background task of `state`
/// running under one supervisor; then lets in-flight requests finish and stops the tasks in
/// order (see [`stage`]).
pub async fn serve_on(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let supervisor = Supervisor::new();
    start(&state, &supervisor)?;
    // Open event streams never end by themselves: end them when the signal comes, or the
    // graceful shutdown would wait for their clients forever.
    let events = state.events.clone();
    let stop = async move {
        shutdown_signal().await;
        events.close();
    };
    // With the peer address: API keys with a CIDR allowlist need it.
    let served = axum::serve(listener, api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed");
    let aborted = supervisor.shutdown(STAGE_STOP_TIMEOUT).await;
    if !aborted.is_empty() {
        tracing::warn!(?aborted, "background stages aborted at shutdown");
    }
    served
}

/// How long each background stage gets to stop at shutdown before it is aborted.
const STAGE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`start_housekeeping`] prunes.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// How long a settled bySig nonce row (`mined`, `failed`) is kept (see
/// [`Store::prune_meta_nonces`] for the rows always kept).
pub const META_NONCE_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How long an expired client token's row is kept (so a late request is told `client_token_expired`
/// rather than `invalid_client_token`).
pub const CLIENT_TOKEN_RETENTION: Duration = Duration::from_secs(86_400);

/// Prunes, every [`HOUSEKEEPING_EVERY`] from start-up: `Idempotency-Key` entries past their TTL
/// ([`api::idempotency::TTL`]), settled `meta_nonces` rows older than
/// [`META_NONCE_RETENTION`] (never a claim in flight, never a signer's highest mined nonce), and
/// client tokens expired for [`CLIENT_TOKEN_RETENTION`].
/// Webhook events and their delivery logs are pruned by the webhook
/// producer after `webhooks.retention_days`. Every replica runs it; the deletes are idempotent.
pub fn start_housekeeping(store: Store, supervisor: &Supervisor) {
    supervisor.spawn(stage::HOUSEKEEPING, "housekeeping", move |stop| {
        let store = store.clone();
        async move {
            let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = every.tick() => {}
                }
                match store.prune_idempotency(api::idempotency::TTL).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(entries = n, "pruned expired idempotency keys"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "idempotency key pruning failed"),
                }
                match store.prune_meta_nonces(META_NONCE_RETENTION).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned settled meta-transaction nonces"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "meta nonce pruning failed"),
                }
                match store.prune_client_tokens(CLIENT_TOKEN_RETENTION).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tokens = n, "pruned expired client tokens"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "client token pruning failed"),
                }
            }
        }
    });
}

/// How often [`start_spend_roll_up`] folds admission's spend deltas into the daily totals.
const SPEND_ROLL_UP_EVERY: Duration = Duration::from_secs(1);

/// Every how many roll-ups the reservations that expired long ago are swept.
const SWEEP_RESERVATIONS_EVERY: u32 = 60;

/// Folds admission's spend deltas into the daily totals every [`SPEND_ROLL_UP_EVERY`] (see
/// [`Store::roll_up_spend`]), so the deltas admission sums stay a second's worth. Every replica
/// runs it; one at a time folds, the others skip. About once a minute it also sweeps the
/// admission reservations that expired over an hour ago ([`Store::sweep_expired_reservations`]).
pub fn start_spend_roll_up(store: Store, supervisor: &Supervisor) {
    supervisor.spawn(stage::HOUSEKEEPING, "admission spend roll-up", move |stop| {
        let store = store.clone();
        async move {
            let mut every = tokio::time::interval(SPEND_ROLL_UP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks = 0u32;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = every.tick() => {}
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SWEEP_RESERVATIONS_EVERY)
                    && let Err(e) = store.sweep_expired_reservations().await
                {
                    tracing::warn!(error = format!("{e:#}"), "sweeping expired admission reservations failed");
                }
                if let Err(e) = store.roll_up_spend().await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "admission spend roll-up failed; admission still counts the deltas"
                    );
                }
            }
        }
    });
}

/// `streampay serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = state_from_config(&config).await?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("Failed to listen on {}", config.listen))?;
    for chain in &state.chains {
        tracing::info!(listen = %config.listen, chain = %chain.name, chain_id = chain.chain_id,
            sponsors = ?chain.sponsors.addresses(), "serving");
    }
    serve_on(listener, state).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
