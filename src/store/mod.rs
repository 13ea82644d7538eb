//! Postgres state: every SQL statement of the relayer lives in this module, organised by
//! aggregate. Addresses and hashes are stored as raw bytes; values read back are decoded with
//! checked conversions (`decode`), and statuses and event kinds are enums.
//!
//! # Checked at compile time, or at runtime
//!
//! [`keeper`], `probes`, [`index::lock`] and [`webhooks::outbox`] use `sqlx::query!` and friends:
//! their SQL, parameter and column types are checked at compile time against the committed query
//! data in `.sqlx/` (builds need no database; `scripts/test.sh` runs `cargo sqlx prepare --check`
//! against a throwaway migrated database, see the README's test section).
//!
//! The other modules still use runtime-checked `sqlx::query` (not converted yet: keys, nonces,
//! transactions, history, idempotency, admission, webhooks' endpoint and delivery statements, and
//! the rest of `index`). Some of their statements cannot be macros at all, and stay runtime
//! queries when those modules are converted:
//! - the COPY of `idx_events` ([`index::events`]), a raw protocol exchange;
//! - statements assembled at runtime: the checkpoint read with or without `FOR UPDATE`
//!   ([`index::load_checkpoint`]), the stream reads keyed by subscriber or author
//!   ([`index::read::streams`]), the history filters and spend totals built with `format!`
//!   (`history`), the key listing (`keys`), and the endpoint and delivery column lists shared by
//!   several statements ([`webhooks`]).
//!
//! - [`keys`]: API keys (hashed): scopes, expiry, allowlist, rate limit, rotation, and the sponsors
//!   each may use.
//! - [`nonces`]: bySig account nonces handed out or in flight.
//! - [`transactions`]: the per-sponsor transaction queue: rows, every signed attempt, sponsor nonces
//!   and leases.
//! - [`idempotency`]: first answers to `Idempotency-Key` requests, for replay.
//! - [`notify`]: in-memory caches kept exact by Postgres `NOTIFY`.
//! - [`history`]: references, history queries, sponsor spend and sponsor policies.
//! - [`admission`]: per-key admission reservations.
//! - [`index`]: the indexer's tables: batch commits (COPY), derived rows, undo journal, rollback,
//!   the writer's advisory lock, and the read model's queries.
//! - [`webhooks`]: endpoints and the delivery log as the API serves them, the producer's outbox
//!   and cursors, fan-out and the claim and record of deliveries.
//! - [`keeper`]: the keeper's replica lock, watched accounts, daily spend, queued liquidations.
//! - `probes`: the `/health` round trip and the queue-depth gauge.

mod admission;
mod decode;
mod history;
mod idempotency;
pub mod index;
pub mod keeper;
mod keys;
mod nonces;
pub mod notify;
mod probes;
mod settle;
mod tokens;
mod transactions;
pub mod webhooks;

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, postgres::PgPoolOptions};

pub use admission::{AdmissionRecord, Reservation};
pub use history::{HistoryFilter, HistoryRow, ReferenceSummary, Spend, SponsorPolicy, TxMeta};
pub use idempotency::{IdempotencyBegin, StoredResponse};
pub use keys::{
    ApiKeyRecord, Environment, KeyBounds, KeyChange, KeyInfo, KeyKind, KeyLookup, KeySpec, NewApiKey, OPERATIONS,
    Scope, TokenGrant, hash_api_key, local_key_writes, operation_of, parse_cidr, parse_operation, parse_origin,
};
pub use nonces::{Claim, NonceScope, NonceStatus};
pub use probes::QueueDepth;
pub use settle::{AttemptRef, MinedRow, QUEUED_CHANNEL, SETTLED_CHANNEL};
pub use tokens::{NewClientToken, TokenLookup};
pub use transactions::{
    AttemptKind, BundleRow, BundleTx, Lease, LeaseLost, NewTransaction, Outcome, QueuedTx, SignedAttempt,
    TransactionRecord, TxStatus, UnfinalTx,
};

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
}
