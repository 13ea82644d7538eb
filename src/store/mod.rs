//! Postgres state. Queries are plain `sqlx::query` checked at runtime, so building the crate
//! needs no database. Addresses and hashes are stored as raw bytes.
//!
//! - [`keys`]: API keys (hashed): scopes, expiry, allowlist, rate limit, rotation, and the sponsors
//!   each may use.
//! - [`nonces`]: bySig account nonces handed out or in flight.
//! - [`transactions`]: the per-sponsor transaction queue: rows, every signed attempt, sponsor nonces
//!   and leases.
//! - [`idempotency`]: first answers to `Idempotency-Key` requests, for replay.
//! - [`notify`]: in-memory caches kept exact by Postgres `NOTIFY`.
//! - [`history`]: references, history queries, sponsor spend and sponsor policies.

mod admission;
mod history;
mod idempotency;
mod keys;
mod nonces;
pub mod notify;
mod transactions;

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, postgres::PgPoolOptions};

pub use admission::{AdmissionRecord, Reservation};
pub use history::{HistoryFilter, HistoryRow, ReferenceSummary, Spend, SponsorPolicy, TxMeta};
pub use idempotency::{IdempotencyBegin, StoredResponse};
pub use keys::{
    ApiKeyRecord, Environment, KeyChange, KeyInfo, KeyLookup, KeySpec, NewApiKey, Scope, hash_api_key, parse_cidr,
};
pub use nonces::{Claim, NonceScope, NonceStatus};
pub use transactions::{AttemptKind, NewTransaction, Outcome, QueuedTx, SignedAttempt, TransactionRecord, TxStatus};

/// Handle to the relayer's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .context("Failed to connect to Postgres")?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/` (embedded at build time).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await.context("Failed to run migrations")
    }

    /// Whether the database answers, for `/health`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
