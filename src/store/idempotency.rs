//! `Idempotency-Key` entries: the first answer to a request, replayed to its retries.
//!
//! The entry is claimed (inserted without an answer) *before* the request runs, so two
//! concurrent retries cannot both run it: the second sees the claim and is told to come back.
//! A claim left behind by a crash stops counting at `locked_until`. Every statement is checked
//! at compile time.

use anyhow::Context;

use super::Store;

/// A recorded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use: run the request, then [`Store::finish_idempotency`].
    Claimed,
    /// Same request already answered: replay this.
    Replay(StoredResponse),
    /// Same request still running (or crashed less than the lock ago).
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl Store {
    pub async fn begin_idempotency(
        &self,
        api_key_hash: &[u8; 32],
        key: &str,
        request_hash: &[u8; 32],
        lock_secs: u64,
        ttl: std::time::Duration,
    ) -> anyhow::Result<IdempotencyBegin> {
        // Claim a new key, take over one whose first request died (same body only), or start
        // afresh on one whose entry has expired (any body: the old answer is forgotten).
        let claimed = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys (api_key_hash, idempotency_key, request_hash, locked_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8))
             ON CONFLICT (api_key_hash, idempotency_key) DO UPDATE
                SET locked_until = EXCLUDED.locked_until, request_hash = EXCLUDED.request_hash,
                    status = NULL, content_type = NULL, body = NULL, created_at = now()
                WHERE idempotency_keys.created_at < now() - make_interval(secs => $5::float8)
                   OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until < now()
                       AND idempotency_keys.request_hash = EXCLUDED.request_hash)
             RETURNING 1 AS "claimed!""#,
            &api_key_hash[..],
            key,
            &request_hash[..],
            lock_secs as f64,
            ttl.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to claim the idempotency key")?;
        if claimed.is_some() {
            return Ok(IdempotencyBegin::Claimed);
        }
        let row = sqlx::query!(
            "SELECT request_hash, status, content_type, body FROM idempotency_keys
             WHERE api_key_hash = $1 AND idempotency_key = $2",
            &api_key_hash[..],
            key,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the idempotency key")?;
        let Some(row) = row else {
            // Deleted between the two statements (its request failed): the caller retries.
            return Ok(IdempotencyBegin::InProgress);
        };
        if row.request_hash != request_hash[..] {
            return Ok(IdempotencyBegin::Mismatch);
        }
        Ok(match row.status {
            Some(status) => IdempotencyBegin::Replay(StoredResponse {
                status: u16::try_from(status).context("stored HTTP status out of range")?,
                content_type: row.content_type,
                body: row.body.unwrap_or_default(),
            }),
            None => IdempotencyBegin::InProgress,
        })
    }

    /// Stores the answer to replay.
    pub async fn finish_idempotency(
        &self,
        api_key_hash: &[u8; 32],
        key: &str,
        response: &StoredResponse,
    ) -> anyhow::Result<()> {
        sqlx::query!(
            "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5
             WHERE api_key_hash = $1 AND idempotency_key = $2",
            &api_key_hash[..],
            key,
            i32::from(response.status),
            response.content_type.as_deref(),
            &response.body,
        )
        .execute(&self.pool)
        .await
        .context("Failed to store the idempotent answer")?;
        Ok(())
    }

    /// Deletes entries older than `ttl` (their keys may be used afresh); answers how many.
    pub async fn prune_idempotency(&self, ttl: std::time::Duration) -> anyhow::Result<u64> {
        let done = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1::float8)",
            ttl.as_secs_f64(),
        )
        .execute(&self.pool)
        .await
        .context("Failed to prune idempotency keys")?;
        Ok(done.rows_affected())
    }

    /// Forgets a claim whose request failed in a way worth retrying (a 5xx), so the retry runs.
    pub async fn abandon_idempotency(&self, api_key_hash: &[u8; 32], key: &str) -> anyhow::Result<()> {
        sqlx::query!(
            "DELETE FROM idempotency_keys WHERE api_key_hash = $1 AND idempotency_key = $2 AND status IS NULL",
            &api_key_hash[..],
            key,
        )
        .execute(&self.pool)
        .await
        .context("Failed to release the idempotency key")?;
        Ok(())
    }
}
