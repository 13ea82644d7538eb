//! The environment layer: every `STREAMPAY_*` variable the relayer reads, the configuration key
//! it sets, and how its text becomes a value.
//!
//! The names predate the file's sections and do not split mechanically into keys
//! (`STREAMPAY_INDEXER_POLL_MS` sets `indexer.poll_interval_ms`, `STREAMPAY_RPC_URL` sets
//! `chain.rpc_url`), so [`VARS`] lists them all; a variable not in it is ignored. Each value is
//! converted here, by its [`Kind`], so a malformed one is refused naming its variable, and text
//! stays text (a token or a key made of digits is not read as a number). A blank variable counts
//! as unset.

use figment::{
    Error, Metadata, Profile, Provider,
    value::{Dict, Map, Value},
};

/// How a variable's text becomes a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// As written (URLs, secrets, paths, addresses for a later parse).
    Text,
    /// Surrounding whitespace removed.
    Trimmed,
    /// A non-negative integer.
    Number,
    /// `true`/`1` or `false`/`0`; anything else is refused.
    Bool,
    /// Comma-separated; blank items dropped.
    List,
}

/// Every variable: its name, the key it sets, its kind. Where two name the same key, the earlier
/// one wins (`STREAMPAY_DATABASE_URL` over `DATABASE_URL`).
pub(super) const VARS: &[(&str, &str, Kind)] = &[
    ("STREAMPAY_LISTEN", "server.listen", Kind::Text),
    ("STREAMPAY_TRUSTED_PROXIES", "server.trusted_proxies", Kind::List),
    ("STREAMPAY_KEY_CACHE", "server.key_cache", Kind::Bool),
    ("STREAMPAY_INVALID_KEY_LIMIT_PER_MINUTE", "server.invalid_key_limit_per_minute", Kind::Number),
    ("STREAMPAY_REQUEST_TIMEOUT_SECS", "server.request_timeout_secs", Kind::Number),
    ("STREAMPAY_MAX_CONCURRENT_REQUESTS", "server.max_concurrent_requests", Kind::Number),
    ("STREAMPAY_MAX_EVENT_STREAMS", "server.max_event_streams", Kind::Number),
    ("STREAMPAY_CORS_PUBLIC_ORIGINS", "server.cors_public_origins", Kind::List),
    ("STREAMPAY_DATABASE_URL", "database.url", Kind::Text),
    ("DATABASE_URL", "database.url", Kind::Text),
    ("STREAMPAY_DATABASE_MAX_CONNECTIONS", "database.max_connections", Kind::Number),
    ("STREAMPAY_RPC_URL", "chain.rpc_url", Kind::Text),
    ("STREAMPAY_DEPLOYMENTS_FILE", "chain.deployments_file", Kind::Text),
    ("STREAMPAY_META_DEADLINE_SECS", "chain.meta_deadline_secs", Kind::Number),
    ("STREAMPAY_RECEIPT_TIMEOUT_SECS", "chain.receipt_timeout_secs", Kind::Number),
    ("STREAMPAY_SPONSOR_KEYS", "sponsors.private_keys", Kind::List),
    ("STREAMPAY_LOG_FORMAT", "log.format", Kind::Text),
    ("STREAMPAY_HEALTH_MAX_INDEXER_LAG_BLOCKS", "health.max_indexer_lag_blocks", Kind::Number),
    ("STREAMPAY_HEALTH_SPONSOR_MIN_BALANCE", "health.sponsor_min_balance", Kind::Trimmed),
    ("STREAMPAY_ADMIN_JWT_SECRET", "admin.jwt_secret", Kind::Text),
    ("STREAMPAY_METRICS_TOKEN", "metrics.token", Kind::Trimmed),
    ("STREAMPAY_PIPELINE_POLL_INTERVAL_MS", "pipeline.poll_interval_ms", Kind::Number),
    ("STREAMPAY_PIPELINE_CONFIRMATIONS", "pipeline.confirmations", Kind::Number),
    ("STREAMPAY_PIPELINE_REBROADCAST_AFTER_SECS", "pipeline.rebroadcast_after_secs", Kind::Number),
    ("STREAMPAY_PIPELINE_BUMP_AFTER_SECS", "pipeline.bump_after_secs", Kind::Number),
    ("STREAMPAY_PIPELINE_MAX_FEE_CAP_WEI", "pipeline.max_fee_cap_wei", Kind::Number),
    ("STREAMPAY_PIPELINE_UNJAM_ABOVE_CAP", "pipeline.unjam_above_cap", Kind::Bool),
    ("STREAMPAY_PIPELINE_LEASE_TTL_SECS", "pipeline.lease_ttl_secs", Kind::Number),
    ("STREAMPAY_PIPELINE_BUNDLE_MAX_CALLS", "pipeline.bundle_max_calls", Kind::Number),
    ("STREAMPAY_PIPELINE_BUNDLE_MAX_GAS", "pipeline.bundle_max_gas", Kind::Number),
    ("STREAMPAY_PIPELINE_BUNDLE_LINGER_MS", "pipeline.bundle_linger_ms", Kind::Number),
    ("STREAMPAY_PIPELINE_BUNDLE_HOLD_MS", "pipeline.bundle_hold_ms", Kind::Number),
    ("STREAMPAY_INDEXER_POLL_MS", "indexer.poll_interval_ms", Kind::Number),
    ("STREAMPAY_INDEXER_REORG_WINDOW", "indexer.reorg_window", Kind::Number),
    ("STREAMPAY_INDEXER_INITIAL_RANGE", "indexer.initial_range", Kind::Number),
    ("STREAMPAY_INDEXER_MAX_RANGE", "indexer.max_range", Kind::Number),
    ("STREAMPAY_INDEXER_TARGET_LOGS", "indexer.target_logs", Kind::Number),
    ("STREAMPAY_INDEXER_FOLLOW_RANGE", "indexer.follow_range", Kind::Number),
    ("STREAMPAY_INDEXER_PIPELINE", "indexer.pipeline_depth", Kind::Number),
    ("STREAMPAY_INDEXER_FETCH_CONCURRENCY", "indexer.fetch_concurrency", Kind::Number),
    ("STREAMPAY_INDEXER_READ_CACHE", "indexer.read_cache", Kind::Bool),
    ("STREAMPAY_WEBHOOKS_ENABLED", "webhooks.enabled", Kind::Bool),
    ("STREAMPAY_WEBHOOKS_POLL_INTERVAL_MS", "webhooks.poll_interval_ms", Kind::Number),
    ("STREAMPAY_WEBHOOKS_TIMEOUT_MS", "webhooks.timeout_ms", Kind::Number),
    ("STREAMPAY_WEBHOOKS_MAX_ATTEMPTS", "webhooks.max_attempts", Kind::Number),
    ("STREAMPAY_WEBHOOKS_BACKOFF_BASE_MS", "webhooks.backoff_base_ms", Kind::Number),
    ("STREAMPAY_WEBHOOKS_BACKOFF_CAP_SECS", "webhooks.backoff_cap_secs", Kind::Number),
    ("STREAMPAY_WEBHOOKS_CONFIRMATIONS", "webhooks.confirmations", Kind::Number),
    ("STREAMPAY_WEBHOOKS_BALANCE_CHECK_INTERVAL_SECS", "webhooks.balance_check_interval_secs", Kind::Number),
    ("STREAMPAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "webhooks.allow_private_targets", Kind::Bool),
    ("STREAMPAY_WEBHOOKS_RETENTION_DAYS", "webhooks.retention_days", Kind::Number),
    ("STREAMPAY_WEBHOOKS_MAX_ENDPOINTS_PER_KEY", "webhooks.max_endpoints_per_key", Kind::Number),
    ("STREAMPAY_WEBHOOKS_MAX_REDELIVERIES_PER_HOUR", "webhooks.max_redeliveries_per_hour", Kind::Number),
    ("STREAMPAY_KEEPER_ENABLED", "keeper.enabled", Kind::Bool),
    ("STREAMPAY_KEEPER_POLL_INTERVAL_MS", "keeper.poll_interval_ms", Kind::Number),
    ("STREAMPAY_KEEPER_SPONSOR", "keeper.sponsor", Kind::Trimmed),
    ("STREAMPAY_KEEPER_MAX_PER_TICK", "keeper.max_per_tick", Kind::Number),
    ("STREAMPAY_KEEPER_DEADLINE_SECS", "keeper.deadline_secs", Kind::Number),
];

/// The variable that sets `key` (the first in [`VARS`]), for messages.
pub(super) fn var_for(key: &str) -> Option<&'static str> {
    VARS.iter().find(|(_, k, _)| *k == key).map(|(name, _, _)| *name)
}

/// The provider's name in figment's metadata (and its messages).
pub(super) const METADATA_NAME: &str = "environment variable";

/// The environment as a figment provider, read through `get` (the process environment in
/// production, a map in tests).
pub(super) struct Environment<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Environment<F> {
    pub(super) fn new(get: F) -> Self {
        Self { get }
    }
}

/// `text` (already known not to be blank) as a value of `kind`, or why not.
fn convert(name: &str, text: &str, kind: Kind) -> Result<Value, String> {
    Ok(match kind {
        Kind::Text => Value::from(text.to_string()),
        Kind::Trimmed => Value::from(text.trim().to_string()),
        Kind::Number => Value::from(text.trim().parse::<u64>().map_err(|_| format!("{name}={text} is not a number"))?),
        Kind::Bool => Value::from(match text.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(format!("{name}={other}: expected true or false")),
        }),
        Kind::List => Value::from(
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>(),
        ),
    })
}

impl<F: Fn(&str) -> Option<String>> Provider for Environment<F> {
    fn metadata(&self) -> Metadata {
        Metadata::named(METADATA_NAME).interpolater(|_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            var_for(&key).map_or(key, str::to_string)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        let mut set: Vec<&str> = Vec::new();
        for &(name, key, kind) in VARS {
            if set.contains(&key) {
                continue;
            }
            let Some(text) = (self.get)(name).filter(|v| !v.trim().is_empty()) else { continue };
            set.push(key);
            let (section, field) = key.split_once('.').expect("every key is section.field");
            let value = convert(name, &text, kind).map_err(Error::from)?;
            match dict.entry(section.to_string()).or_insert_with(|| Value::from(Dict::new())) {
                Value::Dict(_, fields) => {
                    fields.insert(field.to_string(), value);
                }
                _ => unreachable!("sections are inserted as tables"),
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_exactly_true_false_1_0() {
        for (text, want) in [("true", true), ("1", true), (" false ", false), ("0", false)] {
            assert_eq!(convert("X", text, Kind::Bool).unwrap(), Value::from(want));
        }
        for text in ["yes", "TRUE", "on", "2"] {
            let e = convert("STREAMPAY_KEY_CACHE", text, Kind::Bool).unwrap_err().to_string();
            assert!(e.contains("STREAMPAY_KEY_CACHE"), "{e}");
        }
    }

    #[test]
    fn text_stays_text_and_lists_split_on_commas() {
        assert_eq!(convert("X", "12345", Kind::Text).unwrap(), Value::from("12345".to_string()));
        let list = convert("X", "0x01, ,0x02 ", Kind::List).unwrap();
        assert_eq!(list, Value::from(vec!["0x01".to_string(), "0x02".to_string()]));
        assert!(convert("STREAMPAY_X", "soon", Kind::Number).unwrap_err().to_string().contains("STREAMPAY_X=soon"));
    }
}
