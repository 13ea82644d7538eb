//! What admission (`api::admission`) reads: the signer's and the API key's record, from the
//! relayed transactions themselves, and the advisory locks that make check-then-queue atomic
//! across processes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use alloy::primitives::{Address, B256, U256};
use anyhow::Context;
use sqlx::{Postgres, Row, pool::PoolConnection};

use super::Store;

/// A signer's and a key's record as admission sees it.
#[derive(Debug, Clone, Default)]
pub struct AdmissionRecord {
    /// Seconds since the same signed call last reverted on chain, if it did.
    pub digest_reverted_secs_ago: Option<u64>,
    /// Reverts on chain within the reputation window.
    pub signer_reverts: u64,
    pub key_reverts: u64,
    /// Seconds since the last call relayed for the signer / the key.
    pub signer_last_secs_ago: Option<u64>,
    pub key_last_secs_ago: Option<u64>,
    /// Spend since UTC midnight, wei: gas used (gas limit while in flight) at the latest
    /// attempt's max fee, an upper bound of what was paid.
    pub signer_spent_wei: U256,
    pub key_spent_wei: U256,
}

/// The key's and the signer's admission locks, held from the check until the call is queued.
/// [`AdmissionLock::release`] gives them back; dropping the lock without it closes its database
/// connection, which frees the locks too.
pub struct AdmissionLock {
    conn: Option<PoolConnection<Postgres>>,
    keys: [String; 2],
    _local: [tokio::sync::OwnedMutexGuard<()>; 2],
}

impl AdmissionLock {
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query(
                "SELECT pg_advisory_unlock(hashtextextended($2, 0)), pg_advisory_unlock(hashtextextended($1, 0))",
            )
            .bind(&self.keys[0])
            .bind(&self.keys[1])
            .execute(&mut *conn)
            .await;
            if unlocked.is_err() {
                drop(conn.detach());
            }
        }
    }
}

impl Drop for AdmissionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the session frees its advisory locks.
            drop(conn.detach());
        }
    }
}

/// In-process queue in front of each database lock, so waiting requests hold no connection.
fn local_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 100_000 {
        map.retain(|_, m| Arc::strong_count(m) > 1);
    }
    map.entry(name.to_string()).or_default().clone()
}

/// How long an execute waits for another process's admission of the same key or signer.
const LOCK_WAIT: Duration = Duration::from_secs(30);

fn i64_of(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("value beyond BIGINT")
}

fn secs(v: Option<f64>) -> Option<u64> {
    v.map(|s| s.max(0.0) as u64)
}

fn wei(s: &str) -> anyhow::Result<U256> {
    // NUMERIC sums of integer products are integers ("123" or "123.000…" never appears, but be strict).
    let int = s.split('.').next().unwrap_or("0");
    int.parse::<U256>().with_context(|| format!("spend {s} is not an integer"))
}

impl Store {
    /// Takes the admission locks of `api_key_id` and then `signer` (always in this order, so two
    /// requests never wait on each other crosswise): first in this process, then in Postgres.
    pub async fn admission_lock(&self, chain_id: u64, api_key_id: i64, signer: Address) -> anyhow::Result<AdmissionLock> {
        let keys = [format!("admission:key:{api_key_id}"), format!("admission:signer:{chain_id}:{signer}")];
        let first = local_lock(&keys[0]).lock_owned().await;
        let second = local_lock(&keys[1]).lock_owned().await;
        let started = std::time::Instant::now();
        loop {
            let mut conn = self.pool.acquire().await.context("Failed to get a connection for the admission lock")?;
            let got: bool = sqlx::query_scalar(
                "SELECT CASE WHEN pg_try_advisory_lock(hashtextextended($1, 0))
                        THEN CASE WHEN pg_try_advisory_lock(hashtextextended($2, 0)) THEN true
                                  ELSE NOT pg_advisory_unlock(hashtextextended($1, 0)) END
                        ELSE false END",
            )
            .bind(&keys[0])
            .bind(&keys[1])
            .fetch_one(&mut *conn)
            .await
            .context("Failed to take the admission lock")?;
            if got {
                return Ok(AdmissionLock { conn: Some(conn), keys, _local: [first, second] });
            }
            drop(conn);
            anyhow::ensure!(started.elapsed() < LOCK_WAIT, "the admission lock stayed busy for {LOCK_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(5 + rand::random::<u64>() % 20)).await;
        }
    }

    /// The record admission checks (see [`AdmissionRecord`]).
    pub async fn admission_record(
        &self,
        chain_id: u64,
        api_key_id: i64,
        signer: Address,
        digest: B256,
        window_secs: u64,
    ) -> anyhow::Result<AdmissionRecord> {
        let row = sqlx::query(
            "WITH today AS (
                SELECT t.api_key_id, t.signer,
                       coalesce(t.gas_used, t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric AS wei
                FROM relay_transactions t
                JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = t.id
                              ORDER BY id DESC LIMIT 1) l ON true
                WHERE t.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
                  AND ((t.chain_id = $1 AND t.signer = $3) OR t.api_key_id = $2))
             SELECT
                (SELECT extract(epoch FROM now() - max(coalesce(mined_at, updated_at)))::float8
                   FROM relay_transactions WHERE chain_id = $1 AND call_digest = $4 AND failure = 'reverted'),
                (SELECT count(*) FROM relay_transactions
                   WHERE chain_id = $1 AND signer = $3 AND failure = 'reverted'
                     AND mined_at > now() - make_interval(secs => $5)),
                (SELECT count(*) FROM relay_transactions
                   WHERE api_key_id = $2 AND failure = 'reverted' AND mined_at > now() - make_interval(secs => $5)),
                (SELECT extract(epoch FROM now() - max(created_at))::float8
                   FROM relay_transactions WHERE chain_id = $1 AND signer = $3),
                (SELECT extract(epoch FROM now() - max(created_at))::float8
                   FROM relay_transactions WHERE api_key_id = $2),
                (SELECT coalesce(sum(wei), 0)::text FROM today WHERE signer = $3),
                (SELECT coalesce(sum(wei), 0)::text FROM today WHERE api_key_id = $2)",
        )
        .bind(i64_of(chain_id)?)
        .bind(api_key_id)
        .bind(signer.as_slice())
        .bind(digest.as_slice())
        .bind(window_secs as f64)
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the admission record")?;
        Ok(AdmissionRecord {
            digest_reverted_secs_ago: secs(row.get(0)),
            signer_reverts: row.get::<i64, _>(1) as u64,
            key_reverts: row.get::<i64, _>(2) as u64,
            signer_last_secs_ago: secs(row.get(3)),
            key_last_secs_ago: secs(row.get(4)),
            signer_spent_wei: wei(row.get(5))?,
            key_spent_wei: wei(row.get(6))?,
        })
    }
}
