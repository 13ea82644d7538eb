//! Configuration: a TOML file (see `streampay.example.toml`) overridden by `STREAMPAY_*`
//! environment variables, plus the deployments file written by `anvil/deploy.sh`.
//!
//! Precedence, lowest first: built-in defaults, the file, the environment. Secrets (sponsor keys,
//! the database URL with its password) are wrapped in [`Secret`] so they never reach a log line.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use alloy::primitives::Address;
use anyhow::{Context, bail};
use serde::Deserialize;

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
    /// `chain.rpc_url` / `STREAMPAY_RPC_URL`; when unset, the deployments file's `rpcUrl`. A
    /// secret: providers put their API key in it.
    pub rpc_url: Option<Secret>,
    /// `chain.deployments_file` / `STREAMPAY_DEPLOYMENTS_FILE`.
    pub deployments_file: PathBuf,
    /// `chain.meta_deadline_secs` / `STREAMPAY_META_DEADLINE_SECS`: lifetime of a built
    /// meta-transaction, counted from the chain's latest block time.
    pub meta_deadline_secs: u64,
    /// `chain.receipt_timeout_secs` / `STREAMPAY_RECEIPT_TIMEOUT_SECS`: how long `execute` waits
    /// for a receipt before answering 202 with the hash.
    pub receipt_timeout_secs: u64,
    /// `sponsors.private_keys` / `STREAMPAY_SPONSOR_KEYS` (comma-separated). Secrets.
    pub sponsor_keys: Vec<Secret>,
    /// `log.format` / `STREAMPAY_LOG_FORMAT`: `json` (default) or `text`.
    pub log_format: LogFormat,
    /// `health.max_indexer_lag_blocks` / `STREAMPAY_HEALTH_MAX_INDEXER_LAG_BLOCKS`: `/health`
    /// reports `indexer_lag` beyond this many blocks behind the head.
    pub health_max_indexer_lag_blocks: u64,
    /// `health.sponsor_min_balance` / `STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE`: native coin (e.g.
    /// "0.1"); `/health` reports `sponsor_balance_low` for a sponsor holding less (in wei here).
    pub health_sponsor_min_balance_wei: alloy::primitives::U256,
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
    /// `[[sponsors.policies]]` (file only): limits `meta/execute` enforces per sponsor. At start
    /// they replace the `sponsor_policies` table, so the file is the source of truth.
    pub sponsor_policies: Vec<(Address, crate::store::SponsorPolicy)>,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            database_max_connections: 10,
            rpc_url: None,
            deployments_file: PathBuf::from("anvil/deployment.json"),
            meta_deadline_secs: 3600,
            receipt_timeout_secs: 60,
            sponsor_keys: Vec::new(),
            log_format: LogFormat::Json,
            health_max_indexer_lag_blocks: crate::api::health::HealthSettings::default().max_indexer_lag_blocks,
            health_sponsor_min_balance_wei: crate::api::health::HealthSettings::default().sponsor_min_balance_wei,
            pipeline: crate::pipeline::PipelineSettings::default(),
            indexer: crate::indexer::IndexerConfig { read_cache: true, ..Default::default() },
            admin_jwt_secret: None,
            trusted_proxies: Vec::new(),
            key_cache: true,
            sponsor_policies: Vec::new(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            metrics_token: None,
            keeper: crate::keeper::KeeperSettings::default(),
            admission: crate::api::admission::AdmissionSettings::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    server: FileServer,
    database: FileDatabase,
    chain: FileChain,
    sponsors: FileSponsors,
    log: FileLog,
    health: FileHealth,
    pipeline: FilePipeline,
    indexer: crate::indexer::IndexerSettings,
    admin: FileAdmin,
    webhooks: FileWebhooks,
    metrics: FileMetrics,
    keeper: FileKeeper,
    admission: FileAdmission,
}

/// `[admission]`. Budgets are native coin per UTC day (`"0.5"`), or `"off"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileAdmission {
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

fn parse_budget(name: &str, v: &str) -> anyhow::Result<Option<alloy::primitives::U256>> {
    match v.trim() {
        "off" | "unlimited" => Ok(None),
        v => parse_native(name, v).map(Some),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileAdmin {
    jwt_secret: Option<Secret>,
}

fn parse_proxies(name: &str, list: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter().map(|c| crate::store::parse_cidr(c).map_err(|e| anyhow::anyhow!("{name}: {e}"))).collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileWebhooks {
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
struct FileKeeper {
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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileMetrics {
    token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileServer {
    listen: Option<SocketAddr>,
    trusted_proxies: Option<Vec<String>>,
    key_cache: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileDatabase {
    url: Option<Secret>,
    max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileChain {
    rpc_url: Option<Secret>,
    deployments_file: Option<PathBuf>,
    meta_deadline_secs: Option<u64>,
    receipt_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileSponsors {
    private_keys: Vec<Secret>,
    policies: Vec<FilePolicy>,
}

/// One `[[sponsors.policies]]` entry. Fee cap in wei; budgets in native coin (`"0.5"`), per UTC day.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FilePolicy {
    sponsor: Option<Address>,
    max_fee_per_gas_wei: Option<String>,
    daily_budget: Option<String>,
    per_key_daily_budget: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FilePipeline {
    poll_interval_ms: Option<u64>,
    confirmations: Option<u64>,
    rebroadcast_after_secs: Option<u64>,
    bump_after_secs: Option<u64>,
    max_fee_cap_wei: Option<u64>,
    lease_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileHealth {
    max_indexer_lag_blocks: Option<u64>,
    sponsor_min_balance: Option<String>,
}

/// Native coin as a decimal string ("0.1") to wei.
fn parse_native(name: &str, v: &str) -> anyhow::Result<alloy::primitives::U256> {
    alloy::primitives::utils::parse_ether(v.trim())
        .with_context(|| format!("{name}={v} is not an amount of native coin like \"0.1\""))
}

fn parse_policies(entries: &[FilePolicy]) -> anyhow::Result<Vec<(Address, crate::store::SponsorPolicy)>> {
    let mut out: Vec<(Address, crate::store::SponsorPolicy)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let sponsor = e.sponsor.with_context(|| format!("sponsors.policies[{i}]: sponsor is required"))?;
        if out.iter().any(|(a, _)| *a == sponsor) {
            bail!("sponsors.policies: sponsor {sponsor} appears twice");
        }
        let fee_cap = e
            .max_fee_per_gas_wei
            .as_deref()
            .map(|v| {
                crate::amount::parse_uint(v.trim())
                    .with_context(|| format!("sponsors.policies[{i}].max_fee_per_gas_wei={v} is not an integer"))
            })
            .transpose()?;
        let native = |name: &str, v: &Option<String>| {
            v.as_deref().map(|v| parse_native(&format!("sponsors.policies[{i}].{name}"), v)).transpose()
        };
        let policy = crate::store::SponsorPolicy {
            max_fee_per_gas: fee_cap,
            daily_budget: native("daily_budget", &e.daily_budget)?,
            per_key_daily_budget: native("per_key_daily_budget", &e.per_key_daily_budget)?,
        };
        out.push((sponsor, policy));
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileLog {
    format: Option<LogFormat>,
}

impl Config {
    /// Loads `path` (if given, it must exist; otherwise `streampay.toml` is used when present)
    /// and applies the process environment on top.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = Self::default();
        let default_path = Path::new("streampay.toml");
        let file = match path {
            Some(p) => Some(p),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("Failed to read config file {}", file.display()))?;
            config.apply_file(&text).with_context(|| format!("Invalid config file {}", file.display()))?;
        }
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    fn apply_file(&mut self, text: &str) -> anyhow::Result<()> {
        let f: FileConfig = toml::from_str(text).context("Failed to parse TOML")?;
        if let Some(v) = f.server.listen {
            self.listen = v;
        }
        if let Some(v) = f.server.key_cache {
            self.key_cache = v;
        }
        if let Some(v) = &f.server.trusted_proxies {
            self.trusted_proxies = parse_proxies("server.trusted_proxies", v)?;
        }
        if let Some(v) = f.admin.jwt_secret {
            self.admin_jwt_secret = Some(v);
        }
        if let Some(v) = f.database.url {
            self.database_url = Some(v);
        }
        if let Some(v) = f.database.max_connections {
            self.database_max_connections = v;
        }
        if let Some(v) = f.chain.rpc_url {
            self.rpc_url = Some(v);
        }
        if let Some(v) = f.chain.deployments_file {
            self.deployments_file = v;
        }
        if let Some(v) = f.chain.meta_deadline_secs {
            self.meta_deadline_secs = v;
        }
        if let Some(v) = f.chain.receipt_timeout_secs {
            self.receipt_timeout_secs = v;
        }
        if !f.sponsors.private_keys.is_empty() {
            self.sponsor_keys = f.sponsors.private_keys;
        }
        self.sponsor_policies = parse_policies(&f.sponsors.policies)?;
        if let Some(v) = f.log.format {
            self.log_format = v;
        }
        if let Some(v) = f.health.max_indexer_lag_blocks {
            self.health_max_indexer_lag_blocks = v;
        }
        if let Some(v) = f.health.sponsor_min_balance {
            self.health_sponsor_min_balance_wei = parse_native("health.sponsor_min_balance", &v)?;
        }
        if let Some(v) = f.metrics.token.filter(|t| !t.expose().is_empty()) {
            self.metrics_token = Some(v);
        }
        let (a, fa) = (&mut self.admission, &f.admission);
        if let Some(v) = fa.max_calldata_bytes {
            a.max_calldata_bytes = v;
        }
        if let Some(v) = fa.gas_base {
            a.gas_base = v;
        }
        if let Some(v) = &fa.gas_per_operation {
            a.gas_per_operation.extend(v.clone());
        }
        if let Some(v) = fa.gas_default_operation {
            a.gas_default_operation = v;
        }
        if let Some(v) = &fa.key_daily_budget {
            a.key_daily_budget_wei = parse_budget("admission.key_daily_budget", v)?;
        }
        if let Some(v) = &fa.signer_daily_budget {
            a.signer_daily_budget_wei = parse_budget("admission.signer_daily_budget", v)?;
        }
        if let Some(v) = fa.revert_cooldown_secs {
            a.revert_cooldown_secs = v;
        }
        if let Some(v) = fa.reputation_window_secs {
            a.reputation_window_secs = v;
        }
        if let Some(v) = fa.throttle_after_reverts {
            a.throttle_after_reverts = v;
        }
        if let Some(v) = fa.throttle_interval_secs {
            a.throttle_interval_secs = v;
        }
        if let Some(v) = fa.ban_after_reverts {
            a.ban_after_reverts = v;
        }
        let (k, fk) = (&mut self.keeper, &f.keeper);
        if let Some(v) = fk.enabled {
            k.enabled = v;
        }
        if let Some(v) = fk.poll_interval_ms {
            k.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = fk.sponsor {
            k.sponsor = Some(v);
        }
        if let Some(v) = fk.max_per_tick {
            k.max_per_tick = v.max(1);
        }
        if let Some(v) = fk.deadline_secs {
            k.deadline_secs = v.max(1);
        }
        if let Some(v) = &fk.native_price_in_token {
            k.native_price_in_token = parse_native("keeper.native_price_in_token", v)?;
        }
        if let Some(v) = fk.min_profit_percent {
            k.min_profit_percent = v;
        }
        if let Some(v) = &fk.daily_budget {
            k.daily_budget_wei = parse_budget("keeper.daily_budget", v)?;
        }
        let (p, fp) = (&mut self.pipeline, &f.pipeline);
        if let Some(v) = fp.poll_interval_ms {
            p.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = fp.confirmations {
            p.confirmations = v;
        }
        if let Some(v) = fp.rebroadcast_after_secs {
            p.rebroadcast_after = Duration::from_secs(v);
        }
        if let Some(v) = fp.bump_after_secs {
            p.bump_after = Duration::from_secs(v);
        }
        if let Some(v) = fp.max_fee_cap_wei {
            p.max_fee_cap = (v > 0).then_some(u128::from(v));
        }
        if let Some(v) = fp.lease_ttl_secs {
            p.lease_ttl = Duration::from_secs(v.max(1));
        }
        self.indexer.apply(&f.indexer);
        let (w, fw) = (&mut self.webhooks, &f.webhooks);
        if let Some(v) = fw.enabled {
            w.enabled = v;
        }
        if let Some(v) = fw.poll_interval_ms {
            w.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = fw.timeout_ms {
            w.timeout = Duration::from_millis(v.max(1));
        }
        if let Some(v) = fw.max_attempts {
            w.max_attempts = v.max(1);
        }
        if let Some(v) = fw.backoff_base_ms {
            w.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = fw.backoff_cap_secs {
            w.backoff_cap = Duration::from_secs(v);
        }
        if let Some(v) = fw.confirmations {
            w.confirmations = v;
        }
        if let Some(v) = fw.balance_check_interval_secs {
            w.balance_check_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = fw.allow_private_targets {
            w.allow_private_targets = v;
        }
        if let Some(v) = fw.retention_days {
            w.retention = Duration::from_secs(v.max(1).saturating_mul(86_400));
        }
        if let Some(v) = fw.max_endpoints_per_key {
            w.max_endpoints_per_key = v;
        }
        if let Some(v) = fw.max_redeliveries_per_hour {
            w.max_redeliveries_per_hour = v;
        }
        Ok(())
    }

    /// Applies `STREAMPAY_*` overrides read through `get` (injectable so tests need not touch
    /// the process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let parse = |name: &str| -> Option<String> { get(name).filter(|v| !v.trim().is_empty()) };
        if let Some(v) = parse("STREAMPAY_LISTEN") {
            self.listen = v.parse().with_context(|| format!("STREAMPAY_LISTEN={v} is not host:port"))?;
        }
        if let Some(v) = parse("STREAMPAY_DATABASE_URL").or_else(|| parse("DATABASE_URL")) {
            self.database_url = Some(Secret::new(v));
        }
        if let Some(v) = parse("STREAMPAY_DATABASE_MAX_CONNECTIONS") {
            self.database_max_connections = v.parse().context("STREAMPAY_DATABASE_MAX_CONNECTIONS is not a number")?;
        }
        if let Some(v) = parse("STREAMPAY_RPC_URL") {
            self.rpc_url = Some(Secret::new(v));
        }
        if let Some(v) = parse("STREAMPAY_DEPLOYMENTS_FILE") {
            self.deployments_file = PathBuf::from(v);
        }
        if let Some(v) = parse("STREAMPAY_META_DEADLINE_SECS") {
            self.meta_deadline_secs = v.parse().context("STREAMPAY_META_DEADLINE_SECS is not a number")?;
        }
        if let Some(v) = parse("STREAMPAY_RECEIPT_TIMEOUT_SECS") {
            self.receipt_timeout_secs = v.parse().context("STREAMPAY_RECEIPT_TIMEOUT_SECS is not a number")?;
        }
        if let Some(v) = parse("STREAMPAY_SPONSOR_KEYS") {
            self.sponsor_keys = v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(Secret::new).collect();
        }
        if let Some(v) = parse("STREAMPAY_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => bail!("STREAMPAY_LOG_FORMAT={other}: expected json or text"),
            };
        }
        if let Some(v) = parse("STREAMPAY_HEALTH_MAX_INDEXER_LAG_BLOCKS") {
            self.health_max_indexer_lag_blocks =
                v.parse().context("STREAMPAY_HEALTH_MAX_INDEXER_LAG_BLOCKS is not a number")?;
        }
        if let Some(v) = parse("STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE") {
            self.health_sponsor_min_balance_wei = parse_native("STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE", &v)?;
        }
        if let Some(v) = parse("STREAMPAY_ADMIN_JWT_SECRET") {
            self.admin_jwt_secret = Some(Secret::new(v));
        }
        if let Some(v) = parse("STREAMPAY_KEY_CACHE") {
            self.key_cache = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => bail!("STREAMPAY_KEY_CACHE={other}: expected true or false"),
            };
        }
        if let Some(v) = parse("STREAMPAY_TRUSTED_PROXIES") {
            let list: Vec<String> = v.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
            self.trusted_proxies = parse_proxies("STREAMPAY_TRUSTED_PROXIES", &list)?;
        }
        if let Some(v) = parse("STREAMPAY_METRICS_TOKEN") {
            self.metrics_token = Some(Secret::new(v.trim()));
        }
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            parse(name)
                .map(|v| v.trim().parse::<u64>().with_context(|| format!("{name}={v} is not a number")))
                .transpose()
        };
        if let Some(v) = parse("STREAMPAY_KEEPER_ENABLED") {
            self.keeper.enabled = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => bail!("STREAMPAY_KEEPER_ENABLED={other}: expected true or false"),
            };
        }
        if let Some(v) = number("STREAMPAY_KEEPER_POLL_INTERVAL_MS")? {
            self.keeper.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = parse("STREAMPAY_KEEPER_SPONSOR") {
            self.keeper.sponsor =
                Some(v.trim().parse().with_context(|| format!("STREAMPAY_KEEPER_SPONSOR={v} is not an address"))?);
        }
        if let Some(v) = number("STREAMPAY_KEEPER_MAX_PER_TICK")? {
            self.keeper.max_per_tick = (v as usize).max(1);
        }
        if let Some(v) = number("STREAMPAY_KEEPER_DEADLINE_SECS")? {
            self.keeper.deadline_secs = v.max(1);
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_POLL_INTERVAL_MS")? {
            self.pipeline.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_CONFIRMATIONS")? {
            self.pipeline.confirmations = v;
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_REBROADCAST_AFTER_SECS")? {
            self.pipeline.rebroadcast_after = Duration::from_secs(v);
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_BUMP_AFTER_SECS")? {
            self.pipeline.bump_after = Duration::from_secs(v);
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_MAX_FEE_CAP_WEI")? {
            self.pipeline.max_fee_cap = (v > 0).then_some(u128::from(v));
        }
        if let Some(v) = number("STREAMPAY_PIPELINE_LEASE_TTL_SECS")? {
            self.pipeline.lease_ttl = Duration::from_secs(v.max(1));
        }
        self.indexer.apply_env(&parse)?;
        if let Some(v) = parse("STREAMPAY_WEBHOOKS_ENABLED") {
            self.webhooks.enabled = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => bail!("STREAMPAY_WEBHOOKS_ENABLED={other}: expected true or false"),
            };
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_POLL_INTERVAL_MS")? {
            self.webhooks.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_TIMEOUT_MS")? {
            self.webhooks.timeout = Duration::from_millis(v.max(1));
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_MAX_ATTEMPTS")? {
            self.webhooks.max_attempts = u32::try_from(v).unwrap_or(u32::MAX).max(1);
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_BACKOFF_BASE_MS")? {
            self.webhooks.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_BACKOFF_CAP_SECS")? {
            self.webhooks.backoff_cap = Duration::from_secs(v);
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_CONFIRMATIONS")? {
            self.webhooks.confirmations = v;
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_BALANCE_CHECK_INTERVAL_SECS")? {
            self.webhooks.balance_check_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = parse("STREAMPAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS") {
            self.webhooks.allow_private_targets = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => bail!("STREAMPAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS={other}: expected true or false"),
            };
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_RETENTION_DAYS")? {
            self.webhooks.retention = Duration::from_secs(v.max(1).saturating_mul(86_400));
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_MAX_ENDPOINTS_PER_KEY")? {
            self.webhooks.max_endpoints_per_key = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = number("STREAMPAY_WEBHOOKS_MAX_REDELIVERIES_PER_HOUR")? {
            self.webhooks.max_redeliveries_per_hour = u32::try_from(v).unwrap_or(u32::MAX);
        }
        Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file() {
        let mut c = Config::default();
        c.apply_file(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            [chain]
            rpc_url = "http://file:8545"
            [sponsors]
            private_keys = ["0x01"]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        c.apply_env(|k| match k {
            "STREAMPAY_RPC_URL" => Some("http://env:8545".into()),
            "STREAMPAY_SPONSOR_KEYS" => Some("0x02, 0x03".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.rpc_url.as_ref().map(Secret::expose), Some("http://env:8545"));
        assert_eq!(c.sponsor_keys, vec![Secret::new("0x02"), Secret::new("0x03")]);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn the_example_config_parses() {
        let mut c = Config::default();
        c.apply_file(include_str!("../streampay.example.toml")).unwrap();
        assert_eq!(c.meta_deadline_secs, 3600);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.indexer.reorg_window, 128);
        assert_eq!(c.indexer.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn indexer_section_then_env() {
        let mut c = Config::default();
        c.apply_file("[indexer]\npoll_interval_ms = 50\nreorg_window = 64\nfetch_concurrency = 3").unwrap();
        assert_eq!(c.indexer.poll_interval, Duration::from_millis(50));
        assert_eq!(c.indexer.reorg_window, 64);
        assert_eq!(c.indexer.fetch_concurrency, 3);
        assert_eq!(c.indexer.max_range, crate::indexer::IndexerConfig::default().max_range, "unset keys keep defaults");
        c.apply_env(|k| (k == "STREAMPAY_INDEXER_REORG_WINDOW").then(|| "256".into())).unwrap();
        assert_eq!(c.indexer.reorg_window, 256);
        assert_eq!(c.indexer.poll_interval, Duration::from_millis(50));
        assert!(c.apply_env(|k| (k == "STREAMPAY_INDEXER_POLL_MS").then(|| "soon".into())).is_err());
        assert!(Config::default().apply_file("[indexer]\npoll_ms = 5").is_err(), "unknown indexer key");
        assert!(c.indexer.read_cache, "serve caches reads unless told otherwise");
        c.apply_file("[indexer]\nread_cache = false").unwrap();
        assert!(!c.indexer.read_cache);
        c.apply_env(|k| (k == "STREAMPAY_INDEXER_READ_CACHE").then(|| "true".into())).unwrap();
        assert!(c.indexer.read_cache);
        assert!(c.apply_env(|k| (k == "STREAMPAY_INDEXER_READ_CACHE").then(|| "yes".into())).is_err());
    }

    #[test]
    fn admin_secret_and_trusted_proxies_load_from_file_and_env() {
        let mut c = Config::default();
        c.apply_file("[admin]\njwt_secret = \"from-file\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        assert_eq!(c.admin_jwt_secret, Some(Secret::new("from-file")));
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        c.apply_env(|k| (k == "STREAMPAY_TRUSTED_PROXIES").then(|| "127.0.0.1, ::1".to_string())).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.apply_env(|k| (k == "STREAMPAY_TRUSTED_PROXIES").then(|| "10.0.0.1/8".to_string())).is_err());
        assert!(!format!("{c:?}").contains("from-file"));
        assert!(c.key_cache, "on by default");
        c.apply_file("[server]\nkey_cache = false").unwrap();
        assert!(!c.key_cache);
        c.apply_env(|k| (k == "STREAMPAY_KEY_CACHE").then(|| "1".to_string())).unwrap();
        assert!(c.key_cache);
        assert!(c.apply_env(|k| (k == "STREAMPAY_KEY_CACHE").then(|| "maybe".to_string())).is_err());
    }

    #[test]
    fn sponsor_policies_parse_with_exact_wei() {
        let mut c = Config::default();
        c.apply_file(
            r#"
            [[sponsors.policies]]
            sponsor = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            max_fee_per_gas_wei = "50000000000"
            daily_budget = "0.5"
            [[sponsors.policies]]
            sponsor = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
            per_key_daily_budget = "0.000000000000000001"
            "#,
        )
        .unwrap();
        let [(a, p), (_, q)] = &c.sponsor_policies[..] else { panic!("{:?}", c.sponsor_policies) };
        assert_eq!(a.to_string(), "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        assert_eq!(p.max_fee_per_gas, Some(alloy::primitives::U256::from(50_000_000_000u64)));
        assert_eq!(p.daily_budget, Some(alloy::primitives::U256::from(500_000_000_000_000_000u64)));
        assert_eq!(p.per_key_daily_budget, None);
        assert_eq!(q.per_key_daily_budget, Some(alloy::primitives::U256::from(1u64)));
        let dup = "[[sponsors.policies]]\nsponsor = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\n";
        assert!(Config::default().apply_file(&format!("{dup}{dup}")).is_err(), "duplicate sponsor");
        assert!(Config::default().apply_file("[[sponsors.policies]]\ndaily_budget = \"1\"").is_err(), "no sponsor");
        let bad = "[[sponsors.policies]]\nsponsor = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\nmax_fee_per_gas_wei = \"1.5\"";
        assert!(Config::default().apply_file(bad).is_err(), "fractional wei");
        let bad =
            "[[sponsors.policies]]\nsponsor = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\ndaily_budget = \"lots\"";
        assert!(Config::default().apply_file(bad).is_err(), "bad native amount");
    }

    #[test]
    fn webhooks_section_and_env() {
        let mut c = Config::default();
        c.apply_file("[webhooks]\nmax_attempts = 3\nbackoff_base_ms = 250\ntimeout_ms = 1500\nretention_days = 7")
            .unwrap();
        assert_eq!(c.webhooks.max_attempts, 3);
        assert_eq!(c.webhooks.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.webhooks.backoff_base, Duration::from_millis(250));
        c.apply_env(|k| (k == "STREAMPAY_WEBHOOKS_TIMEOUT_MS").then(|| "700".to_string())).unwrap();
        assert_eq!(c.webhooks.timeout, Duration::from_millis(700));
        assert!(Config::default().apply_file("[webhooks]\nretries = 3").is_err());
    }

    #[test]
    fn metrics_token_from_file_or_env() {
        let mut c = Config::default();
        assert_eq!(c.metrics_token, None);
        c.apply_file("[metrics]\ntoken = \"from-file\"").unwrap();
        assert_eq!(c.metrics_token, Some(Secret::new("from-file")));
        c.apply_env(|k| (k == "STREAMPAY_METRICS_TOKEN").then(|| "from-env".to_string())).unwrap();
        assert_eq!(c.metrics_token, Some(Secret::new("from-env")));
        assert!(!format!("{c:?}").contains("from-env"));
    }

    #[test]
    fn admission_is_on_by_default_and_configurable() {
        let c = Config::default();
        assert!(c.admission.key_daily_budget_wei.is_some() && c.admission.signer_daily_budget_wei.is_some());
        let mut c = Config::default();
        c.apply_file(
            "[admission]\nkey_daily_budget = \"0.5\"\nsigner_daily_budget = \"off\"\nmax_calldata_bytes = 100\n\
             [admission.gas_per_operation]\npay = 1000\n",
        )
        .unwrap();
        assert_eq!(c.admission.key_daily_budget_wei, Some(alloy::primitives::U256::from(500_000_000_000_000_000u64)));
        assert_eq!(c.admission.signer_daily_budget_wei, None);
        assert_eq!(c.admission.max_calldata_bytes, 100);
        assert_eq!(c.admission.gas_per_operation["pay"], 1000);
        assert_eq!(c.admission.gas_per_operation["deposit"], 150_000, "other defaults stay");
        assert!(Config::default().apply_file("[admission]\nkey_daily_budget = \"lots\"").is_err());
    }

    #[test]
    fn keeper_section_and_env() {
        let mut c = Config::default();
        assert!(c.keeper.enabled);
        c.apply_file(
            "[keeper]\nenabled = false\npoll_interval_ms = 250\nmax_per_tick = 3\n\
             sponsor = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
        )
        .unwrap();
        assert!(!c.keeper.enabled);
        assert_eq!(c.keeper.poll_interval, Duration::from_millis(250));
        assert_eq!(c.keeper.max_per_tick, 3);
        assert!(c.keeper.sponsor.is_some());
        c.apply_env(|k| match k {
            "STREAMPAY_KEEPER_ENABLED" => Some("true".into()),
            "STREAMPAY_KEEPER_MAX_PER_TICK" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert!(c.keeper.enabled);
        assert_eq!(c.keeper.max_per_tick, 7);
        assert!(c.apply_env(|k| (k == "STREAMPAY_KEEPER_ENABLED").then(|| "maybe".into())).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::default().apply_file("[server]\nlisten_addr = \"x\"").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config { sponsor_keys: vec![Secret::new("0xdeadbeef")], ..Config::default() };
        assert!(!format!("{c:?}").contains("deadbeef"));
    }

    #[test]
    fn deployments_file_parses_the_anvil_format() {
        let f: DeploymentsFile = serde_json::from_str(
            r#"{"chainId":31337,"rpcUrl":"http://127.0.0.1:8545","deployments":[{"name":"USDC",
            "address":"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512","token":"0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "tokenDecimals":6,"startBlock":1}]}"#,
        )
        .unwrap();
        f.validate().unwrap();
        assert_eq!(f.deployments[0].token_decimals, 6);
    }
}
