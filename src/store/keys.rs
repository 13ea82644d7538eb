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

use std::{fmt, str::FromStr, time::Duration};

use alloy::primitives::Address;
use anyhow::Context;
use ipnet::IpNet;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{Row, postgres::PgRow};

use super::{Store, decode::address};

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
}

/// Why a presented key is not usable (each is a distinct 401).
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

fn new_secret(environment: Environment) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("sk_{}_{}", environment.as_str(), alloy::hex::encode(secret))
}

/// Timestamps leave Postgres as RFC 3339 strings (the crate does not pull a date library in).
const TS: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;

fn info_columns() -> String {
    format!(
        "id, name, key_prefix, environment, scopes, allowed_cidrs, rate_limit_per_minute, rotated_from,
         to_char(created_at AT TIME ZONE 'UTC', {TS}) AS created_at,
         to_char(expires_at AT TIME ZONE 'UTC', {TS}) AS expires_at,
         to_char(revoked_at AT TIME ZONE 'UTC', {TS}) AS revoked_at,
         to_char(rotated_at AT TIME ZONE 'UTC', {TS}) AS rotated_at,
         CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
              WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
              ELSE 'active' END AS status"
    )
}

fn info_from_row(row: &PgRow, sponsors: Vec<Address>) -> KeyInfo {
    KeyInfo {
        id: row.get("id"),
        name: row.get("name"),
        prefix: row.get("key_prefix"),
        environment: row.get("environment"),
        scopes: row.get("scopes"),
        sponsors,
        allowed_cidrs: row.get("allowed_cidrs"),
        rate_limit_per_minute: row.get("rate_limit_per_minute"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
        rotated_at: row.get("rotated_at"),
        rotated_from: row.get("rotated_from"),
        status: row.get("status"),
    }
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
        let row = sqlx::query(
            "SELECT id, name, scopes, allowed_cidrs, rate_limit_per_minute, deleted_at IS NOT NULL AS deleted,
                    revoked_at IS NOT NULL AS revoked, rotated_at IS NOT NULL AS rotated,
                    (expires_at IS NOT NULL AND expires_at <= now()) AS expired,
                    floor(extract(epoch FROM expires_at - now()) * 1000)::bigint AS ms_left
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .context("Failed to look up the API key")?;
        let Some(row) = row else { return Ok((KeyLookup::Unknown, None)) };
        if row.get::<bool, _>("deleted") {
            return Ok((KeyLookup::Unknown, None));
        }
        if row.get::<bool, _>("revoked") {
            return Ok((KeyLookup::Revoked { rotated: row.get("rotated") }, None));
        }
        if row.get::<bool, _>("expired") {
            return Ok((KeyLookup::Expired, None));
        }
        let valid_for = row.get::<Option<i64>, _>("ms_left").map(|ms| Duration::from_millis(ms.max(0) as u64));
        let id: i64 = row.get("id");
        let scopes = row.get::<Vec<String>, _>("scopes").iter().filter_map(|s| s.parse().ok()).collect();
        // Stored entries were validated on the way in; one that no longer parses denies rather
        // than widens (an unparsable allowlist must not mean "anywhere").
        let cidrs: Vec<String> = row.get("allowed_cidrs");
        let mut allowed_cidrs = Vec::with_capacity(cidrs.len());
        for c in &cidrs {
            match parse_cidr(c) {
                Ok(n) => allowed_cidrs.push(n),
                Err(e) => anyhow::bail!("API key #{id} has a corrupt allowlist entry: {e}"),
            }
        }
        let rate: Option<i32> = row.get("rate_limit_per_minute");
        let record = ApiKeyRecord {
            id,
            name: row.get("name"),
            sponsors: self.key_sponsors(id).await?,
            scopes,
            allowed_cidrs,
            rate_limit_per_minute: rate.and_then(|r| u32::try_from(r).ok()),
        };
        Ok((KeyLookup::Active(record), valid_for))
    }

    async fn key_sponsors(&self, id: i64) -> anyhow::Result<Vec<Address>> {
        sqlx::query("SELECT sponsor FROM api_key_sponsors WHERE api_key_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .context("Failed to load the API key's sponsors")?
            .into_iter()
            .map(|r| address(r.get::<&[u8], _>("sponsor")))
            .collect()
    }

    /// Every key not deleted, oldest first (metadata only).
    pub async fn list_keys(&self) -> anyhow::Result<Vec<KeyInfo>> {
        let rows =
            sqlx::query(&format!("SELECT {} FROM api_keys WHERE deleted_at IS NULL ORDER BY id", info_columns()))
                .fetch_all(&self.pool)
                .await
                .context("Failed to list API keys")?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let sponsors = self.key_sponsors(row.get("id")).await?;
            keys.push(info_from_row(row, sponsors));
        }
        Ok(keys)
    }

    /// One key's metadata; `None` if unknown or deleted.
    pub async fn key_info(&self, id: i64) -> anyhow::Result<Option<KeyInfo>> {
        let row = sqlx::query(&format!("SELECT {} FROM api_keys WHERE id = $1 AND deleted_at IS NULL", info_columns()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("Failed to load the API key")?;
        let Some(row) = row else { return Ok(None) };
        let sponsors = self.key_sponsors(id).await?;
        Ok(Some(info_from_row(&row, sponsors)))
    }

    /// Revokes a key by id; returns whether it existed and was active.
    pub async fn revoke_api_key(&self, id: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL AND deleted_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .context("Failed to revoke the API key")?;
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
        let done = sqlx::query(
            "UPDATE api_keys SET deleted_at = now(), revoked_at = coalesce(revoked_at, now())
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .context("Failed to delete the API key")?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces an active key with a new secret carrying the same name, environment, scopes,
    /// sponsors, allowlist, rate limit and expiry. The old key is revoked now, or, with
    /// `grace_secs > 0`, keeps working until then (so clients can switch over without downtime).
    pub async fn rotate_key(&self, id: i64, grace_secs: u64) -> anyhow::Result<KeyChange<NewApiKey>> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let row = sqlx::query(
            "SELECT name, environment, scopes, allowed_cidrs, rate_limit_per_minute,
                    revoked_at IS NOT NULL AS revoked, rotated_at IS NOT NULL AS rotated,
                    (expires_at IS NOT NULL AND expires_at <= now()) AS expired
             FROM api_keys WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .context("Failed to load the API key")?;
        let Some(row) = row else { return Ok(KeyChange::NotFound) };
        if row.get::<bool, _>("revoked") {
            return Ok(KeyChange::NotActive("the key is revoked"));
        }
        if row.get::<bool, _>("expired") {
            return Ok(KeyChange::NotActive("the key has expired"));
        }
        if row.get::<bool, _>("rotated") {
            return Ok(KeyChange::NotActive("the key was already rotated"));
        }
        let sponsors: Vec<Address> =
            sqlx::query("SELECT sponsor FROM api_key_sponsors WHERE api_key_id = $1 ORDER BY position")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .context("Failed to load the API key's sponsors")?
                .into_iter()
                .map(|r| address(r.get::<&[u8], _>("sponsor")))
                .collect::<anyhow::Result<_>>()?;
        let spec = KeySpec {
            name: row.get("name"),
            environment: row.get::<String, _>("environment").parse().map_err(anyhow::Error::msg)?,
            sponsors,
            scopes: row.get::<Vec<String>, _>("scopes").iter().filter_map(|s| s.parse().ok()).collect(),
            // Copied exactly below.
            expires_in_secs: None,
            allowed_cidrs: row
                .get::<Vec<String>, _>("allowed_cidrs")
                .iter()
                .map(|c| parse_cidr(c))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
            rate_limit_per_minute: row
                .get::<Option<i32>, _>("rate_limit_per_minute")
                .map(u32::try_from)
                .transpose()
                .context("negative rate limit")?,
        };
        let created = insert_key(&mut tx, &spec, Some(id)).await?;
        // The same instant, not "the same seconds from now" (which rounding would shift).
        sqlx::query("UPDATE api_keys SET expires_at = (SELECT expires_at FROM api_keys WHERE id = $2) WHERE id = $1")
            .bind(created.id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .context("Failed to copy the API key's expiry")?;
        let retire = if grace_secs == 0 {
            sqlx::query("UPDATE api_keys SET rotated_at = now(), revoked_at = now() WHERE id = $1").bind(id)
        } else {
            sqlx::query(
                "UPDATE api_keys SET rotated_at = now(),
                     expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2))
                 WHERE id = $1",
            )
            .bind(id)
            .bind(grace_secs as f64)
        };
        retire.execute(&mut *tx).await.context("Failed to retire the rotated API key")?;
        tx.commit().await.context("Failed to commit the rotation")?;
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
    let key = new_secret(spec.environment);
    // `sk_test_` + 8 hex characters: enough to tell keys apart, far too little to guess one.
    let prefix: String = key.chars().take(16).collect();
    let mut scopes: Vec<&str> = spec.scopes.iter().map(|s| s.as_str()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let cidrs: Vec<String> = spec.allowed_cidrs.iter().map(|c| c.to_string()).collect();
    let expires_in = spec.expires_in_secs.map(|s| s as f64);
    let id: i64 = sqlx::query(
        "INSERT INTO api_keys (name, key_hash, key_prefix, environment, scopes, allowed_cidrs, rate_limit_per_minute,
                               expires_at, rotated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9) RETURNING id",
    )
    .bind(&spec.name)
    .bind(&hash_api_key(&key)[..])
    .bind(&prefix)
    .bind(spec.environment.as_str())
    .bind(&scopes)
    .bind(&cidrs)
    .bind(spec.rate_limit_per_minute.map(|r| r as i32))
    .bind(expires_in)
    .bind(rotated_from)
    .fetch_one(&mut **tx)
    .await
    .context("Failed to insert the API key")?
    .get(0);
    for (position, sponsor) in spec.sponsors.iter().enumerate() {
        sqlx::query(
            "INSERT INTO api_key_sponsors (api_key_id, sponsor, position) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(sponsor.as_slice())
        .bind(position as i32)
        .execute(&mut **tx)
        .await
        .context("Failed to tie the API key to its sponsors")?;
    }
    Ok(NewApiKey { id, key })
}
