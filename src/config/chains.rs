//! The chains a relayer serves: the single-chain form (`[chain]`, `[sponsors]`, their environment
//! variables) or a list of `[[chains]]`, both resolved to [`ChainConfig`]s.

use std::{path::PathBuf, time::Duration};

use alloy::primitives::Address;
use anyhow::{Context, bail};
use serde::Deserialize;

use super::{Secret, parse_native};

/// Per-RPC-request timeout when a chain names none.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_millis(10_000);

/// One chain the relayer serves, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainConfig {
    /// `chains[].name`: a label for logs and `/health` (none in the single-chain form).
    pub name: Option<String>,
    /// `chains[].rpc_urls`, tried in order; in the single-chain form `chain.rpc_url` /
    /// `STREAMPAY_RPC_URL`. Empty: the deployments file's `rpcUrl`. Secrets: providers put their
    /// API key in them.
    pub rpc_urls: Vec<Secret>,
    /// `chains[].rpc_timeout_ms`: bound of one RPC request (default 10 s).
    pub rpc_timeout: Duration,
    /// `chains[].deployments_file`; `chain.deployments_file` / `STREAMPAY_DEPLOYMENTS_FILE`.
    pub deployments_file: PathBuf,
    /// `chains[].finality_depth`: blocks after which a transaction counts as final; `None`:
    /// `pipeline.confirmations`.
    pub finality_depth: Option<u64>,
    /// `chains[].sponsor_keys`; `sponsors.private_keys` / `STREAMPAY_SPONSOR_KEYS`. Secrets.
    pub sponsor_keys: Vec<Secret>,
    /// `[[chains.policies]]`; `[[sponsors.policies]]`: limits `meta/execute` enforces per
    /// sponsor. At start they replace the chain's rows of the `sponsor_policies` table.
    pub sponsor_policies: Vec<(Address, crate::store::SponsorPolicy)>,
}

impl ChainConfig {
    /// A chain with only its deployments file: its `rpcUrl`, the default RPC timeout, no
    /// sponsors.
    pub fn single(deployments_file: impl Into<PathBuf>) -> Self {
        Self {
            name: None,
            rpc_urls: Vec::new(),
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            deployments_file: deployments_file.into(),
            finality_depth: None,
            sponsor_keys: Vec::new(),
            sponsor_policies: Vec::new(),
        }
    }

    /// The label used in messages: the name, else the deployments file.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.deployments_file.display().to_string())
    }
}

/// One `[[chains]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChainEntry {
    name: Option<String>,
    #[serde(default)]
    rpc_urls: Vec<Secret>,
    rpc_timeout_ms: Option<u64>,
    deployments_file: PathBuf,
    finality_depth: Option<u64>,
    #[serde(default)]
    sponsor_keys: Vec<Secret>,
    #[serde(default)]
    policies: Vec<PolicyEntry>,
}

/// One `[[sponsors.policies]]` / `[[chains.policies]]` entry. Fee cap in wei; budgets in native
/// coin (`"0.5"`), per UTC day.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct PolicyEntry {
    sponsor: Option<Address>,
    max_fee_per_gas_wei: Option<String>,
    daily_budget: Option<String>,
    per_key_daily_budget: Option<String>,
}

/// The policies of one chain; `at` names the list in messages (`sponsors.policies`).
pub(super) fn parse_policies(
    at: &str,
    entries: &[PolicyEntry],
) -> anyhow::Result<Vec<(Address, crate::store::SponsorPolicy)>> {
    let mut out: Vec<(Address, crate::store::SponsorPolicy)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let sponsor = e.sponsor.with_context(|| format!("{at}[{i}]: sponsor is required"))?;
        if out.iter().any(|(a, _)| *a == sponsor) {
            bail!("{at}: sponsor {sponsor} appears twice");
        }
        let fee_cap = e
            .max_fee_per_gas_wei
            .as_deref()
            .map(|v| {
                crate::amount::parse_uint(v.trim())
                    .with_context(|| format!("{at}[{i}].max_fee_per_gas_wei={v} is not an integer"))
            })
            .transpose()?;
        let native = |name: &str, v: &Option<String>| {
            v.as_deref().map(|v| parse_native(&format!("{at}[{i}].{name}"), v)).transpose()
        };
        out.push((
            sponsor,
            crate::store::SponsorPolicy {
                max_fee_per_gas: fee_cap,
                daily_budget: native("daily_budget", &e.daily_budget)?,
                per_key_daily_budget: native("per_key_daily_budget", &e.per_key_daily_budget)?,
            },
        ));
    }
    Ok(out)
}

/// The `[[chains]]` list, resolved and checked: at least one chain, every deployments file and
/// name used once, timeouts above zero.
pub(super) fn resolve_list(entries: Vec<ChainEntry>) -> anyhow::Result<Vec<ChainConfig>> {
    if entries.is_empty() {
        bail!("chains: the list is empty; name at least one chain (or use [chain] for one)");
    }
    let mut out: Vec<ChainConfig> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let at = format!("chains[{i}]");
        let rpc_timeout = match e.rpc_timeout_ms {
            Some(0) => bail!("{at}.rpc_timeout_ms must be at least 1"),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_RPC_TIMEOUT,
        };
        if let Some(name) = &e.name {
            if name.trim().is_empty() {
                bail!("{at}.name is blank");
            }
            if out.iter().any(|c| c.name.as_deref() == Some(name)) {
                bail!("{at}: chain name {name} appears twice");
            }
        }
        if let Some(j) = out.iter().position(|c| same_file(&c.deployments_file, &e.deployments_file)) {
            bail!("{at}: deployments file {} is already chains[{j}]'s", e.deployments_file.display());
        }
        if e.rpc_urls.iter().any(|u| u.expose().trim().is_empty()) {
            bail!("{at}.rpc_urls holds a blank URL");
        }
        out.push(ChainConfig {
            sponsor_policies: parse_policies(&format!("{at}.policies"), &e.policies)?,
            name: e.name,
            rpc_urls: e.rpc_urls,
            rpc_timeout,
            deployments_file: e.deployments_file,
            finality_depth: e.finality_depth,
            sponsor_keys: e.sponsor_keys,
        });
    }
    Ok(out)
}

/// Whether two deployments-file paths name the same file: the same path once made absolute
/// (through links when the files exist).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let absolute =
        |p: &std::path::Path| p.canonicalize().or_else(|_| std::path::absolute(p)).unwrap_or_else(|_| p.to_path_buf());
    a == b || absolute(a) == absolute(b)
}
