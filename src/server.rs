//! Wiring for `streampay serve`: tracing, state from config, graceful shutdown.

use alloy::providers::Provider;
use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tracing_subscriber::{EnvFilter, fmt, util::SubscriberInitExt};

use crate::{
    api::{self, AppState, Inner, Settings},
    chain,
    config::{Config, DeploymentsFile, LogFormat},
    pipeline::Sponsors,
    store::Store,
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

/// Connects everything the API needs, checking the chain matches the deployments file.
pub async fn state_from_config(config: &Config) -> anyhow::Result<AppState> {
    // One chain for now.
    let [chain_config] = &config.chains[..] else {
        bail!(
            "{} chains are configured, but this relayer serves one: use [chain] or one [[chains]] entry",
            config.chains.len()
        );
    };
    let deployments = DeploymentsFile::load(&chain_config.deployments_file)?;
    let rpc_url = chain_config
        .rpc_urls
        .first()
        .cloned()
        .or_else(|| deployments.rpc_url.clone())
        .context("No RPC URL: set chain.rpc_url / STREAMPAY_RPC_URL or rpcUrl in the deployments file")?;
    let provider = chain::connect(rpc_url.expose())?;
    let chain_id = provider.get_chain_id().await.context("Failed to reach the RPC node")?;
    if chain_id != deployments.chain_id {
        bail!("the RPC node is on chain {chain_id} but the deployments file is for chain {}", deployments.chain_id);
    }
    if chain_config.sponsor_keys.is_empty() {
        bail!("No sponsor keys: set sponsors.private_keys or STREAMPAY_SPONSOR_KEYS");
    }
    let sponsors = Sponsors::from_keys(&chain_config.sponsor_keys, chain_id)?.with_settings(config.pipeline.clone());
    if let Some(secret) = &config.admin_jwt_secret {
        // HS256 is only as strong as its secret: a short one can be brute-forced offline from
        // any token.
        if secret.expose().len() < 32 {
            bail!("admin.jwt_secret / STREAMPAY_ADMIN_JWT_SECRET must be at least 32 characters");
        }
    }
    let store = Store::connect(config.database_url()?, config.database_max_connections).await?;
    store.migrate().await?;
    for (sponsor, _) in &chain_config.sponsor_policies {
        if sponsors.get(sponsor).is_none() {
            bail!("sponsors.policies names {sponsor}, which is not one of this relayer's sponsor keys");
        }
    }
    store.replace_sponsor_policies(chain_id, &chain_config.sponsor_policies).await?;
    Ok(AppState::new(Inner {
        store,
        provider,
        chain_id,
        contracts: deployments.deployments.clone(),
        sponsors,
        settings: Settings {
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
                ..Default::default()
            },
            webhooks: config.webhooks.clone(),
            metrics_token: config.metrics_token.clone(),
            keeper: config.keeper.clone(),
            admission: config.admission.clone(),
            ..Settings::default()
        },
    }))
}

/// Serves the API on `listener` until SIGINT/SIGTERM, letting in-flight requests finish.
pub async fn serve_on(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    // Resume queued transactions (after a crash, say) without waiting for a request.
    state.sponsors.pipeline(&state.store, &state.provider);
    // Index every deployment into Postgres (the reads, /health's indexer lag).
    crate::indexer::spawn_for_api(&state);
    // Webhook events from the database, delivered signed with retries.
    crate::webhooks::spawn(&state);
    // Tables that would only grow: pruned hourly.
    spawn_housekeeping(state.store.clone());
    // Liquidate accounts the index predicts insolvent (one replica at a time).
    if state.settings.keeper.enabled {
        crate::keeper::Keeper::new(state.clone(), state.settings.keeper.clone())?.spawn();
    }
    // With the peer address: API keys with a CIDR allowlist need it.
    axum::serve(listener, api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")
}

/// How often [`spawn_housekeeping`] prunes.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Prunes, every [`HOUSEKEEPING_EVERY`] from start-up: `Idempotency-Key` entries past their TTL
/// ([`api::idempotency::TTL`]). Webhook events and their delivery logs are pruned by the webhook
/// producer after `webhooks.retention_days`. Every replica runs it; the deletes are idempotent.
fn spawn_housekeeping(store: Store) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            every.tick().await;
            match store.prune_idempotency(api::idempotency::TTL).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "pruned expired idempotency keys"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "idempotency key pruning failed"),
            }
        }
    });
}

/// `streampay serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = state_from_config(&config).await?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("Failed to listen on {}", config.listen))?;
    tracing::info!(listen = %config.listen, sponsors = ?state.sponsors.addresses(), "serving");
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
