//! bySig account nonces the relayer has handed out (`built`) or is executing (`submitted`).
//!
//! The chain only knows the next unused nonce. A dapp that builds two calls before executing
//! either needs two different nonces, so the next nonce handed out is
//! `max(chain nonce, highest live nonce + 1)`, where a nonce is live while it is in flight or
//! built and still before its deadline (after the deadline it can never execute, so it stops
//! blocking). A per-signer advisory lock serialises concurrent builds.

use alloy::primitives::Address;
use anyhow::Context;
use sqlx::{Postgres, Row, Transaction};

use super::Store;

/// Whose nonces: one signer on one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceScope {
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    Mined,
    Failed,
}

/// Outcome of claiming a nonce for submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// Another execute of this nonce is in flight or already mined.
    Busy,
}

impl NonceScope {
    fn lock_key(&self) -> String {
        format!("meta_nonce:{}:{}:{}", self.chain_id, self.contract, self.signer)
    }
}

/// A claim (`submitted`) with no queued transaction this long after it was made belongs to an
/// execute that died before queuing (crash, database outage): its nonce may be claimed again.
const ORPHANED_CLAIM_SECS: f64 = 60.0;

fn as_i64(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("nonce or timestamp beyond the database's range")
}

impl Store {
    /// The nonce the next build would get, without reserving it.
    pub async fn peek_nonce(&self, scope: NonceScope, chain_nonce: u64, now: u64) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let next = next_nonce(&mut tx, scope, chain_nonce, now).await?;
        tx.commit().await.context("Failed to commit")?;
        Ok(next)
    }

    /// Hands out the next nonce for a built call valid until `deadline` (chain time).
    pub async fn reserve_nonce(
        &self,
        scope: NonceScope,
        chain_nonce: u64,
        now: u64,
        deadline: u64,
    ) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(scope.lock_key())
            .execute(&mut *tx)
            .await
            .context("Failed to lock the signer's nonces")?;
        let nonce = next_nonce(&mut tx, scope, chain_nonce, now).await?;
        // A row at this nonce can only be a dead one (expired build or failed execute): reuse it.
        sqlx::query(
            "INSERT INTO meta_nonces (chain_id, contract, signer, nonce, status, deadline)
             VALUES ($1, $2, $3, $4, 'built', $5)
             ON CONFLICT (chain_id, contract, signer, nonce) DO UPDATE
                SET status = 'built', deadline = EXCLUDED.deadline, updated_at = now()",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(nonce)?)
        .bind(as_i64(deadline)?)
        .execute(&mut *tx)
        .await
        .context("Failed to reserve the nonce")?;
        tx.commit().await.context("Failed to commit the nonce reservation")?;
        Ok(nonce)
    }

    /// Marks `nonce` as in flight. Two executes of one nonce race here and only one wins.
    pub async fn claim_nonce(&self, scope: NonceScope, nonce: u64, deadline: u64) -> anyhow::Result<Claim> {
        let row = sqlx::query(
            "INSERT INTO meta_nonces (chain_id, contract, signer, nonce, status, deadline)
             VALUES ($1, $2, $3, $4, 'submitted', $5)
             ON CONFLICT (chain_id, contract, signer, nonce) DO UPDATE
                SET status = 'submitted', deadline = EXCLUDED.deadline, updated_at = now()
                WHERE meta_nonces.status IN ('built', 'failed')
                   -- An orphaned claim: its execute died (crash, database outage) before
                   -- anything was queued, and is long over.
                   OR (meta_nonces.status = 'submitted'
                       AND meta_nonces.updated_at < now() - make_interval(secs => $6)
                       AND NOT EXISTS (SELECT 1 FROM relay_transactions t
                                       WHERE t.chain_id = meta_nonces.chain_id AND t.contract = meta_nonces.contract
                                         AND t.signer = meta_nonces.signer AND t.meta_nonce = meta_nonces.nonce))
             RETURNING nonce",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(nonce)?)
        .bind(as_i64(deadline)?)
        .bind(ORPHANED_CLAIM_SECS)
        .fetch_optional(&self.pool)
        .await
        .context("Failed to claim the nonce")?;
        Ok(if row.is_some() { Claim::Claimed } else { Claim::Busy })
    }

    /// Gives a claimed nonce back (nothing was queued), so the signed call can be retried. A claim
    /// whose call did get queued after all (a commit that succeeded although its answer was lost)
    /// is kept.
    pub async fn release_nonce(&self, scope: NonceScope, nonce: u64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE meta_nonces SET status = 'built', updated_at = now()
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce = $4 AND status = 'submitted'
               AND NOT EXISTS (SELECT 1 FROM relay_transactions t
                               WHERE t.chain_id = $1 AND t.contract = $2 AND t.signer = $3 AND t.meta_nonce = $4)",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(nonce)?)
        .execute(&self.pool)
        .await
        .context("Failed to release the nonce")?;
        Ok(())
    }

    /// Records how the execute of `nonce` ended. A reverted transaction consumed no nonce, so
    /// `Failed` frees it again.
    pub async fn finish_nonce(&self, scope: NonceScope, nonce: u64, status: NonceStatus) -> anyhow::Result<()> {
        self.set_nonce_status(
            scope,
            nonce,
            match status {
                NonceStatus::Mined => "mined",
                NonceStatus::Failed => "failed",
            },
        )
        .await
    }

    /// A built nonce whose execute was refused (bad signature, would revert): the call can never
    /// run as signed, so the nonce stops blocking the next build. Nonces in flight or mined are
    /// left alone.
    pub async fn free_built_nonce(&self, scope: NonceScope, nonce: u64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE meta_nonces SET status = 'failed', updated_at = now()
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce = $4 AND status = 'built'",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(nonce)?)
        .execute(&self.pool)
        .await
        .context("Failed to free the nonce")?;
        Ok(())
    }

    async fn set_nonce_status(&self, scope: NonceScope, nonce: u64, status: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE meta_nonces SET status = $5, updated_at = now()
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce = $4",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(nonce)?)
        .bind(status)
        .execute(&self.pool)
        .await
        .context("Failed to update the nonce status")?;
        Ok(())
    }

    /// The highest nonce of the signer this relayer saw mined, if any: the chain's
    /// `bySigAccountNonces` is past it even while the index trails the receipt.
    pub async fn highest_mined_nonce(&self, scope: NonceScope) -> anyhow::Result<Option<u64>> {
        let highest: Option<i64> = sqlx::query_scalar(
            "SELECT max(nonce) FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND status = 'mined'",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the signer's mined nonces")?;
        Ok(highest.map(|h| h as u64))
    }

    /// Nonces in `[from, to)` that are in flight right now.
    pub async fn in_flight_nonces(&self, scope: NonceScope, from: u64, to: u64) -> anyhow::Result<Vec<u64>> {
        // A client may send any u64 as a nonce; nothing beyond i64 is ever stored.
        let to = to.min(i64::MAX as u64);
        let rows = sqlx::query(
            "SELECT nonce FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce >= $4 AND nonce < $5
               AND status = 'submitted' ORDER BY nonce",
        )
        .bind(as_i64(scope.chain_id)?)
        .bind(scope.contract.as_slice())
        .bind(scope.signer.as_slice())
        .bind(as_i64(from)?)
        .bind(as_i64(to)?)
        .fetch_all(&self.pool)
        .await
        .context("Failed to read in-flight nonces")?;
        Ok(rows.into_iter().map(|r| r.get::<i64, _>(0) as u64).collect())
    }
}

async fn next_nonce(
    tx: &mut Transaction<'_, Postgres>,
    scope: NonceScope,
    chain_nonce: u64,
    now: u64,
) -> anyhow::Result<u64> {
    let highest: Option<i64> = sqlx::query(
        "SELECT max(nonce) FROM meta_nonces
         WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce >= $4
           AND (status = 'submitted' OR (status = 'built' AND deadline >= $5))",
    )
    .bind(as_i64(scope.chain_id)?)
    .bind(scope.contract.as_slice())
    .bind(scope.signer.as_slice())
    .bind(as_i64(chain_nonce)?)
    .bind(as_i64(now)?)
    .fetch_one(&mut **tx)
    .await
    .context("Failed to read the signer's live nonces")?
    .get(0);
    Ok(match highest {
        Some(h) => chain_nonce.max(h as u64 + 1),
        None => chain_nonce,
    })
}
