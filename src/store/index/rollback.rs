//! Undoing orphaned blocks after a reorg. Every statement is checked at compile time.

use anyhow::{Context, bail};
use sqlx::PgPool;

use super::model::{Key, Value};
use super::{Scope, bytes32, derived::write_values, load_checkpoint, note_local_commit, notify};

/// Undoes every block above `ancestor`: restores the derived rows from the undo journal,
/// deletes the orphaned events, hashes and journal entries, moves the checkpoint back, and makes
/// the webhooks follow (cursor back, orphaned events withdrawn or retracted), all in one
/// database transaction.
/// Returns the block actually rolled back to (at or below `ancestor`) and the events removed.
pub async fn rollback(pool: &PgPool, scope: Scope, ancestor: u64) -> anyhow::Result<(u64, u64)> {
    let mut tx = pool.begin().await?;
    let cp = load_checkpoint(&mut tx, scope, true).await?.context("no checkpoint")?;
    // Undo entries cover whole batches: an ancestor inside a batch means rolling back to just
    // before that batch (still a common ancestor) and re-ingesting the rest.
    let spanning = sqlx::query_scalar!(
        r#"SELECT min(block_number) - 1 AS "spanning?" FROM idx_undo WHERE chain_id = $1 AND contract = $2
           AND block_number <= $3 AND batch_to > $3"#,
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .fetch_one(&mut *tx)
    .await?;
    // (a negative bound, below block 0, constrains nothing)
    let ancestor = spanning.and_then(|s| u64::try_from(s).ok()).map_or(ancestor, |s| ancestor.min(s));
    if ancestor < cp.final_block {
        bail!("reorg below block {} (the end of the reorg window); rebuild the index", cp.final_block);
    }
    let header = sqlx::query!(
        "SELECT hash, timestamp FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number = $3",
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .fetch_optional(&mut *tx)
    .await?
    .with_context(|| format!("no stored hash for block {ancestor}"))?;
    let (hash, timestamp) = (bytes32(&header.hash)?, header.timestamp);

    // The journal crosses as JSON text (`DISTINCT ON` and `ORDER BY` still compare the jsonb
    // `key` column: the text aliases are named `key!` and `prev?`).
    let rows = sqlx::query!(
        r#"SELECT DISTINCT ON (key) key::text AS "key!", prev::text AS "prev?" FROM idx_undo
           WHERE chain_id = $1 AND contract = $2 AND block_number > $3
           ORDER BY key, block_number ASC"#,
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut restore = Vec::with_capacity(rows.len());
    for r in rows {
        let key: serde_json::Value = serde_json::from_str(&r.key).context("bad undo key")?;
        let key: Key = serde_json::from_value(key).context("bad undo key")?;
        let prev: Option<serde_json::Value> =
            r.prev.as_deref().map(serde_json::from_str).transpose().context("bad undo value")?;
        let prev: Option<Value> = prev.map(serde_json::from_value).transpose().context("bad undo value")?;
        restore.push((key, prev));
    }
    write_values(&mut tx, scope, &restore).await?;
    let removed = sqlx::query!(
        "DELETE FROM idx_events WHERE chain_id = $1 AND contract = $2 AND block_number > $3",
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "DELETE FROM idx_undo WHERE chain_id = $1 AND contract = $2 AND block_number > $3",
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number > $3",
        scope.chain(),
        scope.addr(),
        ancestor as i64
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE idx_checkpoints SET block_number = $3, block_hash = $4, block_timestamp = $5, updated_at = now()
         WHERE chain_id = $1 AND contract = $2",
        scope.chain(),
        scope.addr(),
        ancestor as i64,
        hash.as_slice(),
        timestamp
    )
    .execute(&mut *tx)
    .await?;
    // The webhooks follow in the same transaction: their cursor can never be past the index's
    // checkpoint, nor an orphaned event left to deliver.
    let followed =
        crate::store::webhooks::outbox::follow_rollback(&mut tx, scope.chain(), scope.contract, ancestor as i64)
            .await?;
    if followed.orphaned > 0 {
        tracing::warn!(
            contract = %scope.contract,
            ancestor,
            orphaned = followed.orphaned,
            retracted = followed.retracted,
            "webhook events of orphaned blocks withdrawn or retracted"
        );
    }
    notify(&mut tx, scope, ancestor).await?;
    tx.commit().await?;
    note_local_commit();
    Ok((ancestor, removed))
}
