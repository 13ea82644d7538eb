//! bySig nonces in flight through `execute` (`submitted`) or finished (`mined`, `failed`).
//!
//! Building a call writes nothing here: a build reserves no nonce, so no request (and no
//! abandoned wallet prompt) can hold another call back. Rows exist only for signed calls a
//! client asked to execute: the claim makes two concurrent executes of one signed call answer
//! one 409, and `mined` rows let `meta/nonce` count a receipt the index has not caught up with.
//! Each nonce type is its own space (account nonce 5 and unique nonce 5 are different nonces).
//! Every statement is checked at compile time.

use alloy::primitives::Address;
use anyhow::Context;

use super::{
    Store,
    decode::{opt_u64, u64_of},
};
use crate::chain::traits::NonceType;

/// Whose nonces: one signer's nonces of one type on one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceScope {
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub nonce_type: NonceType,
}

/// The `meta_nonces.status` column: where a bySig nonce handed out by the relayer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Claimed by an execute: queued or in flight.
    Submitted,
    /// Its transaction was mined (the nonce is used on chain).
    Mined,
    /// Its transaction failed without using the nonce: it may be claimed again.
    Failed,
}

impl NonceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Mined => "mined",
            Self::Failed => "failed",
        }
    }

    /// The status of a column value; an unknown one is an error. (`built`, still allowed by
    /// the column's CHECK, is no longer written: migration 0012 deleted those rows.)
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "submitted" => Self::Submitted,
            "mined" => Self::Mined,
            "failed" => Self::Failed,
            other => anyhow::bail!("unknown nonce status {other:?}"),
        })
    }
}

/// Outcome of claiming a nonce for submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// Another execute of this nonce is in flight or already mined.
    Busy,
}

/// A claim (`submitted`) with no queued transaction this long after it was made belongs to an
/// execute that died before queuing (crash, database outage): its nonce may be claimed again.
const ORPHANED_CLAIM_SECS: f64 = 60.0;

fn as_i64(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("nonce or timestamp beyond the database's range")
}

fn type_i16(t: NonceType) -> i16 {
    t as u8 as i16
}

impl Store {
    /// Marks `nonce` as in flight. Two executes of one nonce race here and only one wins.
    pub async fn claim_nonce(&self, scope: NonceScope, nonce: u64, deadline: u64) -> anyhow::Result<Claim> {
        let row = sqlx::query_scalar!(
            "INSERT INTO meta_nonces (chain_id, contract, signer, nonce_type, nonce, status, deadline)
             VALUES ($1, $2, $3, $7, $4, 'submitted', $5)
             ON CONFLICT (chain_id, contract, signer, nonce_type, nonce) DO UPDATE
                SET status = 'submitted', deadline = EXCLUDED.deadline, updated_at = now()
                WHERE meta_nonces.status IN ('built', 'failed')
                   -- An orphaned claim: its execute died (crash, database outage) before
                   -- anything was queued, and is long over.
                   OR (meta_nonces.status = 'submitted'
                       AND meta_nonces.updated_at < now() - make_interval(secs => $6)
                       AND NOT EXISTS (SELECT 1 FROM relay_transactions t
                                       WHERE t.chain_id = meta_nonces.chain_id AND t.contract = meta_nonces.contract
                                         AND t.signer = meta_nonces.signer AND t.meta_nonce = meta_nonces.nonce
                                         AND t.meta_nonce_type = meta_nonces.nonce_type))
             RETURNING nonce",
            as_i64(scope.chain_id)?,
            scope.contract.as_slice(),
            scope.signer.as_slice(),
            as_i64(nonce)?,
            as_i64(deadline)?,
            ORPHANED_CLAIM_SECS,
            type_i16(scope.nonce_type),
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to claim the nonce")?;
        Ok(if row.is_some() { Claim::Claimed } else { Claim::Busy })
    }

    /// Gives a claimed nonce back (nothing was queued), so the signed call can be retried. A claim
    /// whose call did get queued after all (a commit that succeeded although its answer was lost)
    /// is kept.
    pub async fn release_nonce(&self, scope: NonceScope, nonce: u64) -> anyhow::Result<()> {
        sqlx::query!(
            "DELETE FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = $5 AND nonce = $4
               AND status = 'submitted'
               AND NOT EXISTS (SELECT 1 FROM relay_transactions t
                               WHERE t.chain_id = $1 AND t.contract = $2 AND t.signer = $3 AND t.meta_nonce = $4
                                 AND t.meta_nonce_type = $5)",
            as_i64(scope.chain_id)?,
            scope.contract.as_slice(),
            scope.signer.as_slice(),
            as_i64(nonce)?,
            type_i16(scope.nonce_type),
        )
        .execute(&self.pool)
        .await
        .context("Failed to release the nonce")?;
        Ok(())
    }

    /// Records how the execute of `nonce` ended. A reverted transaction consumed no nonce, so
    /// `Failed` lets the nonce be claimed again (the same signed call is held back by its
    /// cool-down, see `store::reputation`).
    pub async fn finish_nonce(&self, scope: NonceScope, nonce: u64, status: NonceStatus) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await.context("Failed to reach the database")?;
        finish_nonce_on(&mut conn, scope, nonce, status).await
    }

    /// The highest nonce of `scope`'s type this relayer saw mined, if any: for account nonces
    /// the chain's `bySigAccountNonces` is past it even while the index trails the receipt.
    pub async fn highest_mined_nonce(&self, scope: NonceScope) -> anyhow::Result<Option<u64>> {
        let highest: Option<i64> = sqlx::query_scalar!(
            "SELECT max(nonce) FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = $4 AND status = 'mined'",
            as_i64(scope.chain_id)?,
            scope.contract.as_slice(),
            scope.signer.as_slice(),
            type_i16(scope.nonce_type),
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the signer's mined nonces")?;
        opt_u64(highest)
    }

    /// Nonces of `scope`'s type in `[from, to)` that are in flight right now.
    pub async fn in_flight_nonces(&self, scope: NonceScope, from: u64, to: u64) -> anyhow::Result<Vec<u64>> {
        // A client may send any u64 as a nonce; nothing beyond i64 is ever stored.
        let to = to.min(i64::MAX as u64);
        let rows = sqlx::query_scalar!(
            "SELECT nonce FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = $6 AND nonce >= $4 AND nonce < $5
               AND status = 'submitted' ORDER BY nonce",
            as_i64(scope.chain_id)?,
            scope.contract.as_slice(),
            scope.signer.as_slice(),
            as_i64(from.min(i64::MAX as u64))?,
            as_i64(to)?,
            type_i16(scope.nonce_type),
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read in-flight nonces")?;
        rows.into_iter().map(u64_of).collect()
    }

    /// The next account nonce to sign after `chain_nonce`: past the account nonces in flight
    /// (claimed by an execute, not mined yet). Built calls count for nothing.
    pub async fn next_account_nonce(&self, scope: NonceScope, chain_nonce: u64) -> anyhow::Result<u64> {
        let highest: Option<i64> = sqlx::query_scalar!(
            "SELECT max(nonce) FROM meta_nonces
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = 0 AND nonce >= $4
               AND status = 'submitted'",
            as_i64(scope.chain_id)?,
            scope.contract.as_slice(),
            scope.signer.as_slice(),
            as_i64(chain_nonce.min(i64::MAX as u64))?,
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the signer's in-flight nonces")?;
        Ok(match opt_u64(highest)? {
            Some(h) => chain_nonce.max(h + 1),
            None => chain_nonce,
        })
    }
}

/// Marks a meta nonce mined or failed, inside `tx` (the pipeline settles its row in the same
/// transaction).
pub(super) async fn finish_nonce_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    scope: NonceScope,
    nonce: u64,
    status: NonceStatus,
) -> anyhow::Result<()> {
    finish_nonce_on(tx, scope, nonce, status).await
}

async fn finish_nonce_on(
    conn: &mut sqlx::PgConnection,
    scope: NonceScope,
    nonce: u64,
    status: NonceStatus,
) -> anyhow::Result<()> {
    anyhow::ensure!(status != NonceStatus::Submitted, "a nonce is finished as mined or failed");
    sqlx::query!(
        "UPDATE meta_nonces SET status = $5, updated_at = now()
         WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = $6 AND nonce = $4",
        as_i64(scope.chain_id)?,
        scope.contract.as_slice(),
        scope.signer.as_slice(),
        as_i64(nonce)?,
        status.as_str(),
        type_i16(scope.nonce_type),
    )
    .execute(&mut *conn)
    .await
    .context("Failed to update the nonce status")?;
    Ok(())
}

/// Rows deleted per statement by [`Store::prune_meta_nonces`], so no delete holds its locks long.
const PRUNE_BATCH: i64 = 10_000;

impl Store {
    /// Deletes settled nonce rows (`mined`, `failed`, and `built` from before migration 0012) not
    /// updated for `retention`, and answers how many. Never a claim in flight (`submitted`: it
    /// holds its nonce and counts for `meta/nonce`), and never the highest `mined` nonce of a
    /// signer, contract and nonce type, which is what [`Store::highest_mined_nonce`] answers.
    /// A deleted `mined` row is one the chain has long since reflected: `execute` checks every
    /// nonce against the chain before it claims one.
    pub async fn prune_meta_nonces(&self, retention: std::time::Duration) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query!(
                "DELETE FROM meta_nonces WHERE (chain_id, contract, signer, nonce_type, nonce) IN (
                    SELECT m.chain_id, m.contract, m.signer, m.nonce_type, m.nonce FROM meta_nonces m
                    WHERE m.status <> 'submitted' AND m.updated_at < now() - make_interval(secs => $1)
                      AND NOT (m.status = 'mined' AND m.nonce = (
                          SELECT max(h.nonce) FROM meta_nonces h
                          WHERE h.chain_id = m.chain_id AND h.contract = m.contract AND h.signer = m.signer
                            AND h.nonce_type = m.nonce_type AND h.status = 'mined'))
                    LIMIT $2)",
                retention.as_secs_f64(),
                PRUNE_BATCH,
            )
            .execute(&self.pool)
            .await
            .context("Failed to prune settled nonces")?
            .rows_affected();
            total += done;
            if done < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NonceStatus;

    #[test]
    fn nonce_statuses_round_trip_and_unknown_values_are_errors() {
        for s in [NonceStatus::Submitted, NonceStatus::Mined, NonceStatus::Failed] {
            assert_eq!(NonceStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(NonceStatus::parse("built").is_err());
        assert!(NonceStatus::parse("pending").is_err());
    }
}
