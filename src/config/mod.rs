//! Configuration: built-in defaults, then a TOML file (see `streampay.example.toml`), then
//! `STREAMPAY_*` environment variables, layered by [`figment`] into one tree of sections and
//! checked once ([`Config::load`]). Plus the deployments file written by `anvil/deploy.sh`.
//!
//! | module | what lives there |
//! |---|---|
//! | [`env`] | every environment variable, the key it sets and how its text is read |
//! | [`chains`] | the chains served: `[chain]` + `[sponsors]` (one chain) or `[[chains]]` |
//!
//! Unknown keys in the file are refused. A value that cannot be read is refused naming its
//! variable (`STREAMPAY_INDEXER_POLL_MS=soon is not a number`) or its key. Secrets (sponsor keys,
//! RPC URLs, the database URL with its password, tokens) are wrapped in [`Secret`] so they never
//! reach a log line.

mod chains;
mod env;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use alloy::primitives::{Address, U256};
use anyhow::{Context, bail};
use figment::{
    Figment, Profile,
    providers::{Format, Toml},
};
use serde::Deserialize;

pub use self::chains::{ChainConfig, DEFAULT_RPC_TIMEOUT};
pub use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// The resolved configuration of one relayer process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `server.listen` / `STREAMPAY_LISTEN`.
    pub listen: SocketAddr,
    /// `database.url` / `STREAMPAY_DATABASE_URL` (falls back to `DATABASE_URL`).
    pub database_url: Option<Secret>,
    /// `database.max_connections` / `STREAMPAY_DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// The chains served, at least one: `[[chains]]`, or the single chain of `[chain]` and
    /// `[sponsors]` (and `STREAMPAY_RPC_URL`, `STREAMPAY_DEPLOYMENTS_FILE`,
    /// `STREAMPAY_SPONSOR_KEYS`). No two share a deployments file.
    pub chains: Vec<ChainConfig>,
    /// `chain.meta_deadline_secs` / `STREAMPAY_META_DEADLINE_SECS`: lifetime of a built
    /// meta-transaction, counted from the chain's latest block time (at least 1).
    pub meta_deadline_secs: u64,
    /// `chain.receipt_timeout_secs` / `STREAMPAY_RECEIPT_TIMEOUT_SECS`: how long `execute` waits
    /// for a receipt before answering 202 with the hash.
    pub receipt_timeout_secs: u64,
    /// `log.format` / `STREAMPAY_LOG_FORMAT`: `json` (default) or `text`.
    pub log_format: LogFormat,
    /// `health.max_indexer_lag_blocks` / `STREAMPAY_HEALTH_MAX_INDEXER_LAG_BLOCKS`: `/health`
    /// reports `indexer_lag` beyond this many blocks behind the head.
    pub health_max_indexer_lag_blocks: u64,
    /// `health.sponsor_min_balance` / `STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE`: native coin (e.g.
    /// "0.1"); `/health` reports `sponsor_balance_low` for a sponsor holding less (in wei here).
    pub health_sponsor_min_balance_wei: U256,
    /// `[pipeline]` / `STREAMPAY_PIPELINE_*`: the sponsor transaction queue's tunables.
    pub pipeline: crate::pipeline::PipelineSettings,
    /// `[indexer]` / `STREAMPAY_INDEXER_*`: the event indexer's tunables.
    pub indexer: crate::indexer::IndexerConfig,
    /// `admin.jwt_secret` / `STREAMPAY_ADMIN_JWT_SECRET`: HS256 secret of admin tokens (at least
    /// 32 characters); unset, the admin endpoints accept only keys with the `admin` scope.
    pub admin_jwt_secret: Option<Secret>,
    /// `server.trusted_proxies` / `STREAMPAY_TRUSTED_PROXIES` (comma-separated CIDRs): peers whose
    /// `X-Forwarded-For` is believed when checking a key's CIDR allowlist. Default: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `server.key_cache` / `STREAMPAY_KEY_CACHE` (`true`/`false`, default true): keep
    /// authenticated API keys in memory, dropped by Postgres `NOTIFY` on every key change.
    pub key_cache: bool,
    /// `server.invalid_key_limit_per_minute` / `STREAMPAY_INVALID_KEY_LIMIT_PER_MINUTE` (default
    /// 30, at least 1): unknown, revoked or expired API keys one client address may present per
    /// minute before its keys are refused 429 `too_many_invalid_keys` without a lookup.
    pub invalid_key_limit_per_minute: u32,
    /// `server.request_timeout_secs` / `STREAMPAY_REQUEST_TIMEOUT_SECS` (default 120, at least
    /// `chain.receipt_timeout_secs`): a request still running this long is answered 503
    /// `request_timeout`.
    pub request_timeout_secs: u64,
    /// `server.max_concurrent_requests` / `STREAMPAY_MAX_CONCURRENT_REQUESTS` (default 1024, at
    /// least 1): requests served at once; one more is answered 503 `server_busy` at once.
    pub max_concurrent_requests: usize,
    /// `server.max_event_streams` / `STREAMPAY_MAX_EVENT_STREAMS` (default 1000; 0 turns the
    /// endpoint off): open server-sent event streams (`GET /api/v1/{contract}/authors/{author}/events`,
    /// public) this process serves at once; one more is answered 503 `too_many_event_streams`.
    pub max_event_streams: usize,
    /// `server.cors_public_origins` / `STREAMPAY_CORS_PUBLIC_ORIGINS` (comma-separated; default
    /// `*`): web origins whose pages may read the public routes (`/`, `/health`,
    /// `/openapi.json`, `/api/v1/meta`, the creator event streams); `*` is any page, an empty list none. Keyed routes follow
    /// each key's `allowed_origins`.
    pub cors_public_origins: Vec<String>,
    /// `[webhooks]` / `STREAMPAY_WEBHOOKS_*`: the webhook dispatcher's tunables.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// `metrics.token` / `STREAMPAY_METRICS_TOKEN`: when set, `GET /metrics` needs
    /// `Authorization: Bearer <token>`. Secret.
    pub metrics_token: Option<Secret>,
    /// `[keeper]` / `STREAMPAY_KEEPER_*`: the liquidation keeper.
    pub keeper: crate::keeper::KeeperSettings,
    /// `[admission]`: what `meta/execute` admits (caps, budgets, reputation); on by default.
    pub admission: crate::api::admission::AdmissionSettings,
}

/// The single chain's deployments file when none is configured.
const DEFAULT_DEPLOYMENTS_FILE: &str = "anvil/deployment.json";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            database_max_connections: 10,
            chains: vec![ChainConfig::single(DEFAULT_DEPLOYMENTS_FILE)],
            meta_deadline_secs: 3600,
            receipt_timeout_secs: 60,
            log_format: LogFormat::Json,
            health_max_indexer_lag_blocks: crate::api::health::HealthSettings::default().max_indexer_lag_blocks,
            health_sponsor_min_balance_wei: crate::api::health::HealthSettings::default().sponsor_min_balance_wei,
            pipeline: crate::pipeline::PipelineSettings::default(),
            indexer: crate::indexer::IndexerConfig { read_cache: true, ..Default::default() },
            admin_jwt_secret: None,
            trusted_proxies: Vec::new(),
            key_cache: true,
            invalid_key_limit_per_minute: crate::api::auth::DEFAULT_INVALID_KEYS_PER_MINUTE,
            request_timeout_secs: crate::api::DEFAULT_REQUEST_TIMEOUT.as_secs(),
            max_concurrent_requests: crate::api::DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_event_streams: crate::api::DEFAULT_MAX_EVENT_STREAMS,
            cors_public_origins: vec!["*".into()],
            webhooks: crate::webhooks::WebhookSettings::default(),
            metrics_token: None,
            keeper: crate::keeper::KeeperSettings::default(),
            admission: crate::api::admission::AdmissionSettings::default(),
        }
    }
}

/// The configuration as the file spells it (and the environment, through [`env::VARS`]). Every
/// key is optional: unset, the default stays.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Tree {
    server: ServerSection,
    database: DatabaseSection,
    chain: ChainSection,
    sponsors: SponsorsSection,
    chains: Option<Vec<chains::ChainEntry>>,
    log: LogSection,
    health: HealthSection,
    pipeline: PipelineSection,
    indexer: crate::indexer::IndexerSettings,
    admin: AdminSection,
    webhooks: WebhooksSection,
    metrics: MetricsSection,
    keeper: KeeperSection,
    admission: AdmissionSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    trusted_proxies: Option<Vec<String>>,
    key_cache: Option<bool>,
    invalid_key_limit_per_minute: Option<u32>,
    request_timeout_secs: Option<u64>,
    max_concurrent_requests: Option<usize>,
    max_event_streams: Option<usize>,
    cors_public_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DatabaseSection {
    url: Option<Secret>,
    max_connections: Option<u32>,
}

/// `[chain]`: the single chain's `rpc_url` and `deployments_file`, and two settings of every chain.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ChainSection {
    rpc_url: Option<Secret>,
    deployments_file: Option<PathBuf>,
    meta_deadline_secs: Option<u64>,
    receipt_timeout_secs: Option<u64>,
}

/// `[sponsors]`: the single chain's sponsors.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SponsorsSection {
    private_keys: Option<Vec<Secret>>,
    policies: Option<Vec<chains::PolicyEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LogSection {
    format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HealthSection {
    max_indexer_lag_blocks: Option<u64>,
    /// Native coin (`"0.1"`).
    sponsor_min_balance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PipelineSection {
    poll_interval_ms: Option<u64>,
    confirmations: Option<u64>,
    rebroadcast_after_secs: Option<u64>,
    bump_after_secs: Option<u64>,
    max_fee_cap_wei: Option<u64>,
    unjam_above_cap: Option<bool>,
    lease_ttl_secs: Option<u64>,
    bundle_max_calls: Option<u64>,
    bundle_max_gas: Option<u64>,
    bundle_linger_ms: Option<u64>,
    bundle_hold_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdminSection {
    jwt_secret: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebhooksSection {
    enabled: Option<bool>,
    poll_interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_cap_secs: Option<u64>,
    confirmations: Option<u64>,
    balance_check_interval_secs: Option<u64>,
    retention_days: Option<u64>,
    allow_private_targets: Option<bool>,
    max_endpoints_per_key: Option<u32>,
    max_redeliveries_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MetricsSection {
    token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KeeperSection {
    enabled: Option<bool>,
    poll_interval_ms: Option<u64>,
    sponsor: Option<Address>,
    max_per_tick: Option<usize>,
    deadline_secs: Option<u64>,
    /// Token units one native coin is worth (`"3000"`), exact decimal.
    native_price_in_token: Option<String>,
    min_profit_percent: Option<u32>,
    /// Native coin per UTC day (`"0.5"`), or `"off"`.
    daily_budget: Option<String>,
}

/// `[admission]`. Budgets are native coin per UTC day (`"0.5"`), or `"off"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdmissionSection {
    max_calldata_bytes: Option<usize>,
    gas_base: Option<u64>,
    gas_per_operation: Option<std::collections::BTreeMap<String, u64>>,
    gas_default_operation: Option<u64>,
    key_daily_budget: Option<String>,
    signer_daily_budget: Option<String>,
    revert_cooldown_secs: Option<u64>,
    reputation_window_secs: Option<u64>,
    throttle_after_reverts: Option<u32>,
    throttle_interval_secs: Option<u64>,
    ban_after_reverts: Option<u32>,
}

/// Native coin as a decimal string ("0.1") to wei, exactly (no floating point).
fn parse_native(name: &str, v: &str) -> anyhow::Result<U256> {
    alloy::primitives::utils::parse_ether(v.trim())
        .with_context(|| format!("{name}={v} is not an amount of native coin like \"0.1\""))
}

/// A daily budget: native coin, or `off` / `unlimited` for none.
fn parse_budget(name: &str, v: &str) -> anyhow::Result<Option<U256>> {
    match v.trim() {
        "off" | "unlimited" => Ok(None),
        v => parse_native(name, v).map(Some),
    }
}

fn millis_at_least_1(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

/// The figment merged from the layers, for naming where a value came from.
struct Layers(Figment);

impl Layers {
    /// The name to show for `key`'s value: its environment variable when the environment set
    /// it, else the key itself.
    fn name(&self, key: &str) -> String {
        match self.0.find_metadata(key) {
            Some(md) if md.name == env::METADATA_NAME => {
                let keys: Vec<&str> = key.split('.').collect();
                md.interpolate(&Profile::Default, &keys)
            }
            _ => key.to_string(),
        }
    }
}

impl Config {
    /// Loads `path` (if given, it must exist; otherwise `streampay.toml` is used when present)
    /// with the process environment on top.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let default_path = Path::new("streampay.toml");
        let file = match path {
            Some(p) => Some(p),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        if let Some(file) = file {
            // figment reads a missing file as an empty one; a file asked for must be there.
            std::fs::metadata(file).with_context(|| format!("Failed to read config file {}", file.display()))?;
        }
        let config = Self::from_layers(file.map(Toml::file_exact), |name| std::env::var(name).ok());
        match file {
            Some(file) => config.with_context(|| format!("Invalid configuration (file {})", file.display())),
            None => config.context("Invalid configuration"),
        }
    }

    /// Defaults, then `file` (a TOML provider), then the variables `env` returns.
    fn from_layers<F>(file: Option<figment::providers::Data<Toml>>, env: F) -> anyhow::Result<Self>
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(file);
        }
        let figment = figment.merge(env::Environment::new(env));
        let tree: Tree = figment.extract()?;
        let layers = Layers(figment);
        Self::resolve(tree, &layers)
    }

    /// The tree, extracted, onto the defaults; then the checks that span keys.
    fn resolve(mut t: Tree, at: &Layers) -> anyhow::Result<Self> {
        let d = Self::default();
        let chains = Self::resolve_chains(&mut t, at)?;
        let native = |key: &str, v: &str| parse_native(&at.name(key), v);
        let budget = |key: &str, v: &str| parse_budget(&at.name(key), v);

        let trusted_proxies = match &t.server.trusted_proxies {
            None => d.trusted_proxies,
            Some(list) => {
                let name = at.name("server.trusted_proxies");
                list.iter()
                    .map(|c| crate::store::parse_cidr(c).map_err(|e| anyhow::anyhow!("{name}: {e}")))
                    .collect::<anyhow::Result<_>>()?
            }
        };

        let cors_public_origins = match &t.server.cors_public_origins {
            None => d.cors_public_origins.clone(),
            Some(list) => {
                let name = at.name("server.cors_public_origins");
                list.iter()
                    .map(|o| match o.trim() {
                        "*" => Ok("*".to_string()),
                        o => crate::store::parse_origin(o).map_err(|e| anyhow::anyhow!("{name}: {e}")),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
        };

        let dp = &d.pipeline;
        let p = &t.pipeline;
        let pipeline = crate::pipeline::PipelineSettings {
            poll_interval: p.poll_interval_ms.map_or(dp.poll_interval, millis_at_least_1),
            confirmations: p.confirmations.unwrap_or(dp.confirmations),
            rebroadcast_after: p.rebroadcast_after_secs.map_or(dp.rebroadcast_after, Duration::from_secs),
            bump_after: p.bump_after_secs.map_or(dp.bump_after, Duration::from_secs),
            max_fee_cap: p.max_fee_cap_wei.map_or(dp.max_fee_cap, |v| (v > 0).then_some(u128::from(v))),
            unjam_above_cap: p.unjam_above_cap.unwrap_or(dp.unjam_above_cap),
            lease_ttl: p.lease_ttl_secs.map_or(dp.lease_ttl, |v| Duration::from_secs(v.max(1))),
            bundle_max_calls: p.bundle_max_calls.map_or(dp.bundle_max_calls, |v| v.max(1) as usize),
            bundle_max_gas: p.bundle_max_gas.unwrap_or(dp.bundle_max_gas),
            bundle_linger: p.bundle_linger_ms.map_or(dp.bundle_linger, Duration::from_millis),
            bundle_hold: p.bundle_hold_ms.map_or(dp.bundle_hold, Duration::from_millis),
        };

        let mut indexer = d.indexer.clone();
        indexer.apply(&t.indexer);

        let dw = &d.webhooks;
        let w = &t.webhooks;
        let webhooks = crate::webhooks::WebhookSettings {
            enabled: w.enabled.unwrap_or(dw.enabled),
            poll_interval: w.poll_interval_ms.map_or(dw.poll_interval, millis_at_least_1),
            timeout: w.timeout_ms.map_or(dw.timeout, millis_at_least_1),
            max_attempts: w.max_attempts.map_or(dw.max_attempts, |v| v.max(1)),
            backoff_base: w.backoff_base_ms.map_or(dw.backoff_base, Duration::from_millis),
            backoff_cap: w.backoff_cap_secs.map_or(dw.backoff_cap, Duration::from_secs),
            confirmations: w.confirmations.or(dw.confirmations),
            balance_check_interval: w
                .balance_check_interval_secs
                .map_or(dw.balance_check_interval, |v| Duration::from_secs(v.max(1))),
            batch_size: dw.batch_size,
            allow_private_targets: w.allow_private_targets.unwrap_or(dw.allow_private_targets),
            retention: w.retention_days.map_or(dw.retention, |v| Duration::from_secs(v.max(1).saturating_mul(86_400))),
            max_endpoints_per_key: w.max_endpoints_per_key.unwrap_or(dw.max_endpoints_per_key),
            max_redeliveries_per_hour: w.max_redeliveries_per_hour.unwrap_or(dw.max_redeliveries_per_hour),
        };

        let dk = &d.keeper;
        let k = &t.keeper;
        let keeper = crate::keeper::KeeperSettings {
            enabled: k.enabled.unwrap_or(dk.enabled),
            poll_interval: k.poll_interval_ms.map_or(dk.poll_interval, millis_at_least_1),
            sponsor: k.sponsor.or(dk.sponsor),
            max_per_tick: k.max_per_tick.map_or(dk.max_per_tick, |v| v.max(1)),
            deadline_secs: k.deadline_secs.map_or(dk.deadline_secs, |v| v.max(1)),
            native_price_in_token: match &k.native_price_in_token {
                Some(v) => native("keeper.native_price_in_token", v)?,
                None => dk.native_price_in_token,
            },
            min_profit_percent: k.min_profit_percent.unwrap_or(dk.min_profit_percent),
            daily_budget_wei: match &k.daily_budget {
                Some(v) => budget("keeper.daily_budget", v)?,
                None => dk.daily_budget_wei,
            },
        };

        let da = &d.admission;
        let a = &t.admission;
        let mut gas_per_operation = da.gas_per_operation.clone();
        gas_per_operation.extend(a.gas_per_operation.clone().unwrap_or_default());
        let admission = crate::api::admission::AdmissionSettings {
            max_calldata_bytes: a.max_calldata_bytes.unwrap_or(da.max_calldata_bytes),
            gas_base: a.gas_base.unwrap_or(da.gas_base),
            gas_per_operation,
            gas_default_operation: a.gas_default_operation.unwrap_or(da.gas_default_operation),
            key_daily_budget_wei: match &a.key_daily_budget {
                Some(v) => budget("admission.key_daily_budget", v)?,
                None => da.key_daily_budget_wei,
            },
            signer_daily_budget_wei: match &a.signer_daily_budget {
                Some(v) => budget("admission.signer_daily_budget", v)?,
                None => da.signer_daily_budget_wei,
            },
            revert_cooldown_secs: a.revert_cooldown_secs.unwrap_or(da.revert_cooldown_secs),
            reputation_window_secs: a.reputation_window_secs.unwrap_or(da.reputation_window_secs),
            throttle_after_reverts: a.throttle_after_reverts.unwrap_or(da.throttle_after_reverts),
            throttle_interval_secs: a.throttle_interval_secs.unwrap_or(da.throttle_interval_secs),
            ban_after_reverts: a.ban_after_reverts.unwrap_or(da.ban_after_reverts),
        };

        let config = Self {
            listen: t.server.listen.unwrap_or(d.listen),
            database_url: t.database.url.or(d.database_url),
            database_max_connections: t.database.max_connections.unwrap_or(d.database_max_connections),
            chains,
            meta_deadline_secs: t.chain.meta_deadline_secs.unwrap_or(d.meta_deadline_secs),
            receipt_timeout_secs: t.chain.receipt_timeout_secs.unwrap_or(d.receipt_timeout_secs),
            log_format: t.log.format.unwrap_or(d.log_format),
            health_max_indexer_lag_blocks: t.health.max_indexer_lag_blocks.unwrap_or(d.health_max_indexer_lag_blocks),
            health_sponsor_min_balance_wei: match &t.health.sponsor_min_balance {
                Some(v) => native("health.sponsor_min_balance", v)?,
                None => d.health_sponsor_min_balance_wei,
            },
            pipeline,
            indexer,
            admin_jwt_secret: t.admin.jwt_secret.or(d.admin_jwt_secret),
            trusted_proxies,
            key_cache: t.server.key_cache.unwrap_or(d.key_cache),
            invalid_key_limit_per_minute: t
                .server
                .invalid_key_limit_per_minute
                .unwrap_or(d.invalid_key_limit_per_minute),
            request_timeout_secs: t.server.request_timeout_secs.unwrap_or(d.request_timeout_secs),
            max_concurrent_requests: t.server.max_concurrent_requests.unwrap_or(d.max_concurrent_requests),
            max_event_streams: t.server.max_event_streams.unwrap_or(d.max_event_streams),
            cors_public_origins,
            webhooks,
            // An empty token in the file leaves /metrics open, as an unset one does.
            metrics_token: t.metrics.token.filter(|s| !s.expose().is_empty()).or(d.metrics_token),
            keeper,
            admission,
        };
        config.check(at)?;
        Ok(config)
    }

    /// The single chain of `[chain]` + `[sponsors]`, or the `[[chains]]` list; never both.
    fn resolve_chains(t: &mut Tree, at: &Layers) -> anyhow::Result<Vec<ChainConfig>> {
        let (chain, sponsors) = (&t.chain, &t.sponsors);
        let Some(list) = t.chains.take() else {
            let file = chain.deployments_file.clone().unwrap_or_else(|| DEFAULT_DEPLOYMENTS_FILE.into());
            let policies = sponsors.policies.as_deref().unwrap_or_default();
            return Ok(vec![ChainConfig {
                rpc_urls: chain.rpc_url.iter().cloned().collect(),
                sponsor_keys: sponsors.private_keys.clone().unwrap_or_default(),
                sponsor_policies: chains::parse_policies("sponsors.policies", policies)?,
                ..ChainConfig::single(file)
            }]);
        };
        // An empty list says nothing about a chain (the example file has `private_keys = []`).
        let single = [
            ("chain.rpc_url", chain.rpc_url.is_some()),
            ("chain.deployments_file", chain.deployments_file.is_some()),
            ("sponsors.private_keys", sponsors.private_keys.as_ref().is_some_and(|k| !k.is_empty())),
            ("sponsors.policies", sponsors.policies.as_ref().is_some_and(|p| !p.is_empty())),
        ];
        if let Some((key, _)) = single.iter().find(|(_, set)| *set) {
            bail!(
                "{} belongs to the single-chain form, but [[chains]] is used: set it in each [[chains]] entry instead",
                at.name(key)
            );
        }
        chains::resolve_list(list)
    }

    /// Checks that span keys or guard a secret's strength.
    fn check(&self, at: &Layers) -> anyhow::Result<()> {
        if let Some(secret) = &self.admin_jwt_secret {
            // HS256 is only as strong as its secret: a short one can be brute-forced offline from
            // any token.
            if secret.expose().len() < 32 {
                bail!("{} must be at least 32 characters", at.name("admin.jwt_secret"));
            }
        }
        if self.meta_deadline_secs == 0 {
            bail!(
                "{} must be at least 1: a meta-transaction built with 0 has expired by the next block",
                at.name("chain.meta_deadline_secs")
            );
        }
        for (key, zero) in [
            ("server.invalid_key_limit_per_minute", self.invalid_key_limit_per_minute == 0),
            ("server.request_timeout_secs", self.request_timeout_secs == 0),
            ("server.max_concurrent_requests", self.max_concurrent_requests == 0),
        ] {
            if zero {
                bail!("{} must be at least 1", at.name(key));
            }
        }
        if self.request_timeout_secs < self.receipt_timeout_secs {
            bail!(
                "{} must be at least {}: a synchronous execute waits that long for its receipt",
                at.name("server.request_timeout_secs"),
                at.name("chain.receipt_timeout_secs")
            );
        }
        if self.pipeline.lease_ttl <= self.pipeline.poll_interval {
            bail!(
                "{} must be longer than {}: the worker renews its lease once per poll",
                at.name("pipeline.lease_ttl_secs"),
                at.name("pipeline.poll_interval_ms")
            );
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn receipt_timeout(&self) -> Duration {
        Duration::from_secs(self.receipt_timeout_secs)
    }

    pub fn database_url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(Secret::expose)
            .context("No database URL: set database.url or STREAMPAY_DATABASE_URL")
    }
}

/// The deployments file (`anvil/deployment.json` locally): which StreamPay contracts to serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentsFile {
    pub chain_id: u64,
    #[serde(default)]
    pub rpc_url: Option<Secret>,
    pub deployments: Vec<crate::chain::Deployment>,
}

impl DeploymentsFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read deployments file {}", path.display()))?;
        let file: Self =
            serde_json::from_str(&text).with_context(|| format!("Invalid deployments file {}", path.display()))?;
        file.validate()?;
        Ok(file)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.deployments.is_empty() {
            bail!("the deployments file lists no deployments");
        }
        for (i, d) in self.deployments.iter().enumerate() {
            if d.token_decimals > 18 {
                bail!("deployment {} has tokenDecimals {} > 18", d.name, d.token_decimals);
            }
            // Names are matched case-insensitively in URLs, so they must be unique that way.
            if self.deployments[..i].iter().any(|o| o.name.eq_ignore_ascii_case(&d.name)) {
                bail!("deployment name {} appears twice", d.name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
