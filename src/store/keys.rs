//! API keys (docs/keys.md). A key is `sk_<env>_<64 hex chars>`; only its SHA-256 is stored, so a
//! database leak does not leak usable keys. SHA-256 (not a slow password hash) is right here: the
//! key has 256 bits of entropy, and every request must look it up.
//!
//! Keys made before scopes existed are `sp_<env>_…`; they are found the same way (by hash) and
//! carry the scopes migration 0005 gave them.
//!
//! Lifecycle: active → revoked (kept and listed, for audit) or rotated (a new key with the same
//! settings; the old one revoked, or expiring after a grace period) → deleted (soft: hidden from
//! the API, the row kept for the transactions that point at it).
//!
//! Every statement is checked at compile time.

use std::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use alloy::primitives::{Address, U256};
use anyhow::Context;
use ipnet::IpNet;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

use super::{Store, decode::address};

/// Key revocations, deletions and rotations this process has committed.
static KEY_WRITES: AtomicU64 = AtomicU64::new(0);

/// How many key revocations, deletions and rotations this process has committed: part of the
/// key cache's generation (`api::key_cache`), so a key this process revoked stops working here
/// at once, before the database's notification of the change arrives (other processes wait for
/// that notification).
pub fn local_key_writes() -> u64 {
    KEY_WRITES.load(Ordering::Acquire)
}

/// What a key may call (see `api::auth` for which routes need which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// GET endpoints: balances, subscriptions, nonces, streams, transactions, fees, sponsors, …
    Read,
    /// Endpoints that build or relay meta-transactions, and cancelling a subscription.
    Relay,
    /// Everything under `/api/v1/webhooks`.
    Webhooks,
    /// The key-management endpoints under `/api/v1/admin`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Relay, Scope::Webhooks, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Relay => "relay",
            Scope::Webhooks => "webhooks",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s.trim())
            .ok_or_else(|| format!("{s:?} is not a scope (read, relay, webhooks, admin)"))
    }
}

/// `test` keys (`sk_test_…`) and `live` keys (`sk_live_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Test,
    Live,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Test => "test",
            Environment::Live => "live",
        }
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "test" => Ok(Environment::Test),
            "live" => Ok(Environment::Live),
            other => Err(format!("{other:?} is not an environment (test, live)")),
        }
    }
}

/// Where a key may live: `secret` keys (`sk_…`) on servers, `publishable` keys (`pk_…`) in web
/// pages, bounded by their [`KeyBounds`] (docs/keys.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    #[default]
    Secret,
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }

    /// The first letters of a key of this kind: `sk` or `pk`.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Secret => "sk",
            KeyKind::Publishable => "pk",
        }
    }
}

impl FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "secret" => Ok(KeyKind::Secret),
            "publishable" => Ok(KeyKind::Publishable),
            other => Err(format!("{other:?} is not a key kind (secret, publishable)")),
        }
    }
}

/// The user operations a publishable key or a client token may be limited to. A relayed call's
/// functions map onto them with [`operation_of`].
pub const OPERATIONS: [&str; 5] = ["deposit", "withdraw", "pay", "subscribe", "unsubscribe"];

/// The operation a contract function (as [`crate::chain::calls`] names it) belongs to.
pub fn operation_of(function: &str) -> &str {
    match function {
        "depositFor" => "deposit",
        "withdrawTo" => "withdraw",
        "subscribeWithMaxFee" => "subscribe",
        other => other,
    }
}

/// Parses an operation name of [`OPERATIONS`].
pub fn parse_operation(s: &str) -> Result<&'static str, String> {
    OPERATIONS
        .into_iter()
        .find(|op| op.eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("{s:?} is not an operation ({})", OPERATIONS.join(", ")))
}

/// Parses a web origin as browsers send it in `Origin`: `https://app.example` or
/// `http://localhost:5173` (scheme, host, port unless it is the scheme's default; no path,
/// query, fragment or credentials). Returned in the form browsers send, so a header compares
/// equal as a string.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a web origin like https://app.example or http://localhost:5173");
    let url = reqwest::Url::parse(s).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.path() != "/"
        || s.ends_with('/')
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

/// What bounds a key beyond its scopes. All empty or `None` for an ordinary secret key; a
/// publishable key must have every one (migration 0032 holds the database to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBounds {
    /// Web origins whose browsers may call the API with this key (CORS); empty: none.
    pub allowed_origins: Vec<String>,
    /// Deployment names the key may use; empty: any.
    pub allowed_contracts: Vec<String>,
    /// Operations of [`OPERATIONS`] the key may build and relay; empty: any.
    pub allowed_operations: Vec<String>,
    /// Relayed calls per signer per minute (per relayer process).
    pub signer_rate_limit_per_minute: Option<u32>,
    /// Wei per UTC day for the key, tightening `[admission] key_daily_budget`.
    pub daily_budget_wei: Option<U256>,
    /// Wei per UTC day per signer, tightening `[admission] signer_daily_budget`.
    pub signer_daily_budget_wei: Option<U256>,
}

impl KeyBounds {
    /// Whether `origin` (as sent in `Origin`) is on the key's list.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }

    /// Whether deployment `name` may be used (any case).
    pub fn allows_contract(&self, name: &str) -> bool {
        self.allowed_contracts.is_empty() || self.allowed_contracts.iter().any(|c| c.eq_ignore_ascii_case(name))
    }
}

/// Parses an allowlist entry: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (one host).
/// Host bits must be zero, so `10.0.0.1/8` (probably a typo) is refused rather than widened.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(format!("{s:?} is not a CIDR block like 10.0.0.0/8 or an IP address")),
        },
    };
    if net.trunc() != net {
        return Err(format!("{s:?} has host bits set; did you mean {}?", net.trunc()));
    }
    Ok(net)
}

/// Everything a new key is made of (the admin API and the CLI fill it in).
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: String,
    pub environment: Environment,
    /// Sponsors the key may spend gas from, the default first. Not empty.
    pub sponsors: Vec<Address>,
    /// Not empty.
    pub scopes: Vec<Scope>,
    /// Seconds from now; `None` never expires.
    pub expires_in_secs: Option<u64>,
    /// Empty: any client address.
    pub allowed_cidrs: Vec<IpNet>,
    pub rate_limit_per_minute: Option<u32>,
    pub kind: KeyKind,
    pub bounds: KeyBounds,
}

impl KeySpec {
    /// A key with every scope and no limits (tests, `streampay dev`).
    pub fn full_access(name: &str, sponsors: &[Address], environment: Environment) -> Self {
        Self {
            name: name.to_string(),
            environment,
            sponsors: sponsors.to_vec(),
            scopes: Scope::ALL.to_vec(),
            expires_in_secs: None,
            allowed_cidrs: Vec::new(),
            rate_limit_per_minute: None,
            kind: KeyKind::Secret,
            bounds: KeyBounds::default(),
        }
    }
}

/// A freshly created key: `key` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: i64,
    pub key: String,
}

/// A key as the API sees it after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    /// Sponsors this key may spend gas from, the default first.
    pub sponsors: Vec<Address>,
    pub scopes: Vec<Scope>,
    /// Empty: any client address.
    pub allowed_cidrs: Vec<IpNet>,
    pub rate_limit_per_minute: Option<u32>,
    pub kind: KeyKind,
    pub bounds: KeyBounds,
    /// Set when the request came with a client token minted by this key: what the token allows.
    pub grant: Option<TokenGrant>,
}

impl ApiKeyRecord {
    /// Whether this credential may only build and relay listed operations: a publishable key, or
    /// a client token.
    pub fn restricted(&self) -> bool {
        self.kind == KeyKind::Publishable || self.grant.is_some()
    }

    /// Whether it may build and relay `operation` (of [`OPERATIONS`]).
    pub fn allows_operation(&self, operation: &str) -> bool {
        let listed = |list: &[String]| list.is_empty() || list.iter().any(|o| o == operation);
        listed(&self.bounds.allowed_operations) && self.grant.as_ref().is_none_or(|g| listed(&g.operations))
    }
}

/// What a client token allows (`store::tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub token_id: i64,
    /// The only signer whose calls the token may build and relay.
    pub signer: Address,
    /// Operations of [`OPERATIONS`]; never empty.
    pub operations: Vec<String>,
    /// RFC 3339, UTC.
    pub expires_at: String,
    /// Seconds left, by the database's clock.
    pub expires_in: u64,
}

/// Why a presented key is not usable (each is a distinct 401). A short-lived value: its size
/// does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    Active(ApiKeyRecord),
    /// Unknown, or deleted.
    Unknown,
    /// Revoked; `rotated` when the revocation came from a rotation.
    Revoked {
        rotated: bool,
    },
    Expired,
}

/// A key's metadata, as listed (never the secret).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    /// First characters of the key, e.g. `sk_test_1a2b3c4d`.
    pub prefix: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub sponsors: Vec<Address>,
    pub allowed_cidrs: Vec<String>,
    pub rate_limit_per_minute: Option<i32>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub rotated_at: Option<String>,
    pub rotated_from: Option<i64>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub kind: KeyKind,
    pub bounds: KeyBounds,
}

/// What happened to a key an operation named.
#[derive(Debug)]
pub enum KeyChange<T> {
    Done(T),
    /// No such key (or deleted).
    NotFound,
    /// The key is revoked, expired or already rotated.
    NotActive(&'static str),
}

pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn new_secret(kind: KeyKind, environment: Environment) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{}_{}_{}", kind.prefix(), environment.as_str(), alloy::hex::encode(secret))
}

/// The kind and the [`KeyBounds`] columns of a key row, as every key query selects them (`kind,
/// allowed_origins, allowed_contracts, allowed_operations, signer_rate_limit_per_minute,
/// daily_budget_wei, signer_daily_budget_wei`).
struct BoundsColumns {
    kind: String,
    allowed_origins: Vec<String>,
    allowed_contracts: Vec<String>,
    allowed_operations: Vec<String>,
    signer_rate_limit_per_minute: Option<i32>,
    daily_budget_wei: Option<String>,
    signer_daily_budget_wei: Option<String>,
}

/// The [`BoundsColumns`] of `$row`, a record of any key query (each statement has its own record
/// type), moved out of it.
macro_rules! bounds_columns {
    ($row:ident) => {
        BoundsColumns {
            kind: $row.kind,
            allowed_origins: $row.allowed_origins,
            allowed_contracts: $row.allowed_contracts,
            allowed_operations: $row.allowed_operations,
            signer_rate_limit_per_minute: $row.signer_rate_limit_per_minute,
            daily_budget_wei: $row.daily_budget_wei,
            signer_daily_budget_wei: $row.signer_daily_budget_wei,
        }
    };
}

fn wei_column(value: Option<String>, column: &str) -> anyhow::Result<Option<U256>> {
    value.map(|v| U256::from_str_radix(&v, 10).with_context(|| format!("corrupt {column} {v:?}"))).transpose()
}

fn kind_and_bounds(c: BoundsColumns) -> anyhow::Result<(KeyKind, KeyBounds)> {
    let kind = c.kind.parse().map_err(anyhow::Error::msg)?;
    let bounds = KeyBounds {
        allowed_origins: c.allowed_origins,
        allowed_contracts: c.allowed_contracts,
        allowed_operations: c.allowed_operations,
        signer_rate_limit_per_minute: c
            .signer_rate_limit_per_minute
            .map(u32::try_from)
            .transpose()
            .context("negative signer rate limit")?,
        daily_budget_wei: wei_column(c.daily_budget_wei, "daily_budget_wei")?,
        signer_daily_budget_wei: wei_column(c.signer_daily_budget_wei, "signer_daily_budget_wei")?,
    };
    Ok((kind, bounds))
}

/// The sponsors of key `id`, in order (the default first).
async fn key_sponsors(db: impl PgExecutor<'_>, id: i64) -> anyhow::Result<Vec<Address>> {
    sqlx::query_scalar!("SELECT sponsor FROM api_key_sponsors WHERE api_key_id = $1 ORDER BY position", id)
        .fetch_all(db)
        .await
        .context("Failed to load the API key's sponsors")?
        .iter()
        .map(|s| address(s))
        .collect()
}

impl Store {
    /// Creates a key with every scope and no limits, tied to `sponsors` (in order; the first is
    /// the default).
    pub async fn create_api_key(&self, name: &str, sponsors: &[Address], test: bool) -> anyhow::Result<NewApiKey> {
        let env = if test { Environment::Test } else { Environment::Live };
        self.create_key(&KeySpec::full_access(name, sponsors, env)).await
    }

    /// Creates a key from `spec`.
    pub async fn create_key(&self, spec: &KeySpec) -> anyhow::Result<NewApiKey> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let created = insert_key(&mut tx, spec, None).await?;
        tx.commit().await.context("Failed to commit the API key")?;
        Ok(created)
    }

    /// Looks a presented key up by its hash.
    pub async fn find_api_key(&self, key: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        Ok(match self.lookup_api_key(key).await? {
            KeyLookup::Active(r) => Some(r),
            _ => None,
        })
    }

    /// Looks a presented key up by its hash and tells why it is not usable, if it is not.
    pub async fn lookup_api_key(&self, key: &str) -> anyhow::Result<KeyLookup> {
        Ok(self.lookup_api_key_hash(&hash_api_key(key)).await?.0)
    }

    /// [`Store::lookup_api_key`] by the key's hash, with how long an active key stays valid
    /// (`None`: no expiry), by the database's clock.
    pub async fn lookup_api_key_hash(&self, hash: &[u8; 32]) -> anyhow::Result<(KeyLookup, Option<Duration>)> {
        let row = sqlx::query!(
            r#"SELECT id, name, scopes, allowed_cidrs, rate_limit_per_minute,
                      kind, allowed_origins, allowed_contracts, allowed_operations,
                      signer_rate_limit_per_minute, daily_budget_wei, signer_daily_budget_wei,
                      deleted_at IS NOT NULL AS "deleted!",
                      revoked_at IS NOT NULL AS "revoked!", rotated_at IS NOT NULL AS "rotated!",
                      (expires_at IS NOT NULL AND expires_at <= now()) AS "expired!",
                      floor(extract(epoch FROM expires_at - now()) * 1000)::bigint AS "ms_left?"
               FROM api_keys WHERE key_hash = $1"#,
            &hash[..],
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to look up the API key")?;
        let Some(row) = row else { return Ok((KeyLookup::Unknown, None)) };
        if row.deleted {
            return Ok((KeyLookup::Unknown, None));
        }
        if row.revoked {
            return Ok((KeyLookup::Revoked { rotated: row.rotated }, None));
        }
        if row.expired {
            return Ok((KeyLookup::Expired, None));
        }
        let valid_for = row.ms_left.map(|ms| Duration::from_millis(ms.max(0) as u64));
        let id = row.id;
        let scopes = row.scopes.iter().filter_map(|s| s.parse().ok()).collect();
        // Stored entries were validated on the way in; one that no longer parses denies rather
        // than widens (an unparsable allowlist must not mean "anywhere").
        let mut allowed_cidrs = Vec::with_capacity(row.allowed_cidrs.len());
        for c in &row.allowed_cidrs {
            match parse_cidr(c) {
                Ok(n) => allowed_cidrs.push(n),
                Err(e) => anyhow::bail!("API key #{id} has a corrupt allowlist entry: {e}"),
            }
        }
        let (kind, bounds) = kind_and_bounds(bounds_columns!(row))?;
        let record = ApiKeyRecord {
            id,
            name: row.name,
            sponsors: key_sponsors(&self.pool, id).await?,
            scopes,
            allowed_cidrs,
            rate_limit_per_minute: row.rate_limit_per_minute.and_then(|r| u32::try_from(r).ok()),
            kind,
            bounds,
            grant: None,
        };
        Ok((KeyLookup::Active(record), valid_for))
    }

    /// Every key not deleted, oldest first (metadata only).
    pub async fn list_keys(&self) -> anyhow::Result<Vec<KeyInfo>> {
        self.key_infos(None, "Failed to list API keys").await
    }

    /// One key's metadata; `None` if unknown or deleted.
    pub async fn key_info(&self, id: i64) -> anyhow::Result<Option<KeyInfo>> {
        Ok(self.key_infos(Some(id), "Failed to load the API key").await?.pop())
    }

    /// The metadata of every key not deleted, oldest first, or only of key `id`; `failed` is the
    /// error's context if the read fails.
    async fn key_infos(&self, id: Option<i64>, failed: &'static str) -> anyhow::Result<Vec<KeyInfo>> {
        let rows = sqlx::query!(
            r#"SELECT id, name, key_prefix, environment, scopes, allowed_cidrs, rate_limit_per_minute, rotated_from,
                      kind, allowed_origins, allowed_contracts, allowed_operations,
                      signer_rate_limit_per_minute, daily_budget_wei, signer_daily_budget_wei,
                      rfc3339_utc(created_at, 0) AS "created_at!",
                      rfc3339_utc(expires_at, 0) AS "expires_at?",
                      rfc3339_utc(revoked_at, 0) AS "revoked_at?",
                      rfc3339_utc(rotated_at, 0) AS "rotated_at?",
                      CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                           WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
                           ELSE 'active' END AS "status!"
               FROM api_keys WHERE deleted_at IS NULL AND ($1::bigint IS NULL OR id = $1) ORDER BY id"#,
            id,
        )
        .fetch_all(&self.pool)
        .await
        .context(failed)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let sponsors = key_sponsors(&self.pool, row.id).await?;
            let (kind, bounds) = kind_and_bounds(bounds_columns!(row))?;
            keys.push(KeyInfo {
                id: row.id,
                name: row.name,
                prefix: row.key_prefix,
                environment: row.environment,
                scopes: row.scopes,
                sponsors,
                allowed_cidrs: row.allowed_cidrs,
                rate_limit_per_minute: row.rate_limit_per_minute,
                created_at: row.created_at,
                expires_at: row.expires_at,
                revoked_at: row.revoked_at,
                rotated_at: row.rotated_at,
                rotated_from: row.rotated_from,
                status: row.status,
                kind,
                bounds,
            });
        }
        Ok(keys)
    }

    /// Revokes a key by id; returns whether it existed and was active.
    pub async fn revoke_api_key(&self, id: i64) -> anyhow::Result<bool> {
        let done = sqlx::query!(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL AND deleted_at IS NULL",
            id,
        )
        .execute(&self.pool)
        .await
        .context("Failed to revoke the API key")?;
        KEY_WRITES.fetch_add(1, Ordering::AcqRel);
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a key, idempotently: a key already revoked stays as it was.
    pub async fn revoke_key(&self, id: i64) -> anyhow::Result<KeyChange<KeyInfo>> {
        self.revoke_api_key(id).await?;
        Ok(match self.key_info(id).await? {
            Some(info) => KeyChange::Done(info),
            None => KeyChange::NotFound,
        })
    }

    /// Soft-deletes a key: it stops working and leaves the listings.
    pub async fn delete_key(&self, id: i64) -> anyhow::Result<bool> {
        let done = sqlx::query!(
            "UPDATE api_keys SET deleted_at = now(), revoked_at = coalesce(revoked_at, now())
             WHERE id = $1 AND deleted_at IS NULL",
            id,
        )
        .execute(&self.pool)
        .await
        .context("Failed to delete the API key")?;
        KEY_WRITES.fetch_add(1, Ordering::AcqRel);
        Ok(done.rows_affected() == 1)
    }

    /// Replaces an active key with a new secret carrying the same name, environment, scopes,
    /// sponsors, allowlist, rate limit and expiry. The old key is revoked now, or, with
    /// `grace_secs > 0`, keeps working until then (so clients can switch over without downtime).
    pub async fn rotate_key(&self, id: i64, grace_secs: u64) -> anyhow::Result<KeyChange<NewApiKey>> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let row = sqlx::query!(
            r#"SELECT name, environment, scopes, allowed_cidrs, rate_limit_per_minute,
                      kind, allowed_origins, allowed_contracts, allowed_operations,
                      signer_rate_limit_per_minute, daily_budget_wei, signer_daily_budget_wei,
                      revoked_at IS NOT NULL AS "revoked!", rotated_at IS NOT NULL AS "rotated!",
                      (expires_at IS NOT NULL AND expires_at <= now()) AS "expired!"
               FROM api_keys WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut *tx)
        .await
        .context("Failed to load the API key")?;
        let Some(row) = row else { return Ok(KeyChange::NotFound) };
        if row.revoked {
            return Ok(KeyChange::NotActive("the key is revoked"));
        }
        if row.expired {
            return Ok(KeyChange::NotActive("the key has expired"));
        }
        if row.rotated {
            return Ok(KeyChange::NotActive("the key was already rotated"));
        }
        let (kind, bounds) = kind_and_bounds(bounds_columns!(row))?;
        let sponsors = key_sponsors(&mut *tx, id).await?;
        let spec = KeySpec {
            name: row.name,
            environment: row.environment.parse().map_err(anyhow::Error::msg)?,
            sponsors,
            scopes: row.scopes.iter().filter_map(|s| s.parse().ok()).collect(),
            // Copied exactly below.
            expires_in_secs: None,
            allowed_cidrs: row
                .allowed_cidrs
                .iter()
                .map(|c| parse_cidr(c))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
            rate_limit_per_minute: row
                .rate_limit_per_minute
                .map(u32::try_from)
                .transpose()
                .context("negative rate limit")?,
            kind,
            bounds,
        };
        let created = insert_key(&mut tx, &spec, Some(id)).await?;
        // The same instant, not "the same seconds from now" (which rounding would shift).
        sqlx::query!(
            "UPDATE api_keys SET expires_at = (SELECT expires_at FROM api_keys WHERE id = $2) WHERE id = $1",
            created.id,
            id,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to copy the API key's expiry")?;
        let retired = if grace_secs == 0 {
            sqlx::query!("UPDATE api_keys SET rotated_at = now(), revoked_at = now() WHERE id = $1", id)
                .execute(&mut *tx)
                .await
        } else {
            sqlx::query!(
                "UPDATE api_keys SET rotated_at = now(),
                     expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2))
                 WHERE id = $1",
                id,
                grace_secs as f64,
            )
            .execute(&mut *tx)
            .await
        };
        retired.context("Failed to retire the rotated API key")?;
        tx.commit().await.context("Failed to commit the rotation")?;
        KEY_WRITES.fetch_add(1, Ordering::AcqRel);
        Ok(KeyChange::Done(created))
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    spec: &KeySpec,
    rotated_from: Option<i64>,
) -> anyhow::Result<NewApiKey> {
    anyhow::ensure!(!spec.sponsors.is_empty(), "an API key needs at least one sponsor");
    anyhow::ensure!(!spec.scopes.is_empty(), "an API key needs at least one scope");
    let key = new_secret(spec.kind, spec.environment);
    // `sk_test_` + 8 hex characters: enough to tell keys apart, far too little to guess one.
    let prefix: String = key.chars().take(16).collect();
    let mut scopes: Vec<String> = spec.scopes.iter().map(|s| s.as_str().to_string()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let cidrs: Vec<String> = spec.allowed_cidrs.iter().map(|c| c.to_string()).collect();
    let expires_in = spec.expires_in_secs.map(|s| s as f64);
    let b = &spec.bounds;
    let id = sqlx::query_scalar!(
        "INSERT INTO api_keys (name, key_hash, key_prefix, environment, scopes, allowed_cidrs, rate_limit_per_minute,
                               expires_at, rotated_from, kind, allowed_origins, allowed_contracts, allowed_operations,
                               signer_rate_limit_per_minute, daily_budget_wei, signer_daily_budget_wei)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING id",
        spec.name,
        &hash_api_key(&key)[..],
        prefix,
        spec.environment.as_str(),
        &scopes,
        &cidrs,
        spec.rate_limit_per_minute.map(|r| r as i32),
        expires_in,
        rotated_from,
        spec.kind.as_str(),
        &b.allowed_origins,
        &b.allowed_contracts,
        &b.allowed_operations,
        b.signer_rate_limit_per_minute.map(|r| r as i32),
        b.daily_budget_wei.map(|w| w.to_string()),
        b.signer_daily_budget_wei.map(|w| w.to_string()),
    )
    .fetch_one(&mut **tx)
    .await
    .context("Failed to insert the API key")?;
    for (position, sponsor) in spec.sponsors.iter().enumerate() {
        sqlx::query!(
            "INSERT INTO api_key_sponsors (api_key_id, sponsor, position) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            id,
            sponsor.as_slice(),
            position as i32,
        )
        .execute(&mut **tx)
        .await
        .context("Failed to tie the API key to its sponsors")?;
    }
    Ok(NewApiKey { id, key })
}
