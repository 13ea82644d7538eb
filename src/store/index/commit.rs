//! One database transaction per batch: its events, the derived rows they change, the undo
//! journal, the recent block hashes and the checkpoint. Every statement is checked at compile
//! time (the events' COPY aside: see [`events`](super::events)).

use std::collections::BTreeSet;

use anyhow::Context;
use sqlx::PgPool;

use super::model::{BlockHeader, Derivation, IndexedEvent, Key};
use super::{
    Scope,
    checkpoint::{Checkpoint, insert_blocks},
    derived::{load_keys, write_values},
    events::{copy_events, copy_raw, insert_events_dedup},
    load_checkpoint, note_local_commit,
    undo::write_undo,
};

/// Blocks to commit together.
#[derive(Debug, Clone)]
pub struct Batch {
    /// First block of the batch; the checkpoint must be at `from - 1`.
    pub from: u64,
    /// Last block of the batch: the new checkpoint.
    pub to: BlockHeader,
    /// Headers to remember for reorg detection (every block near the head; only `to` in a
    /// backfill far behind it).
    pub headers: Vec<BlockHeader>,
    pub events: Vec<IndexedEvent>,
    /// [`copy_text`](super::copy_text) of `events`, when built ahead (by the backfill's fetch tasks).
    pub copy: Option<String>,
    /// Near the head: journal changes so a reorg can undo them. Far behind: the blocks are final.
    pub reorgable: bool,
    pub chain_head: u64,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer moved the checkpoint, or the batch does not follow it.
    #[error("checkpoint is at {found}, batch starts at {from}")]
    NotContiguous { found: u64, from: u64 },
    /// The batch's first block does not build on the checkpoint's block.
    #[error("block {number} does not build on the indexed block")]
    ParentMismatch { number: u64 },
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    pub events: usize,
    pub derived_rows: usize,
    pub undo_entries: usize,
    /// The checkpoint as the batch's transaction left it.
    pub checkpoint: Checkpoint,
}

/// Writes a batch atomically. With `dedup` the events go through `INSERT … ON CONFLICT DO
/// NOTHING` and only the newly stored ones are applied to the derived tables: the slow path
/// taken when the COPY met an already-stored log. `cache` (empty) derives the batch's state:
/// the store loads its rows, the cache applies the events, the store writes what changed.
pub async fn commit(
    pool: &PgPool,
    scope: Scope,
    window: u64,
    batch: &Batch,
    dedup: bool,
    mut cache: impl Derivation,
) -> anyhow::Result<CommitStats> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let cp = load_checkpoint(&mut tx, scope, true).await?.context("no checkpoint: call init_checkpoint first")?;
    if cp.block_number + 1 != batch.from {
        return Err(CommitError::NotContiguous { found: cp.block_number, from: batch.from }.into());
    }
    if let Some(first) = batch.headers.first().filter(|h| h.number == batch.from)
        && first.parent_hash != cp.block_hash
    {
        return Err(CommitError::ParentMismatch { number: first.number }.into());
    }

    let t_events = std::time::Instant::now();
    let fresh: Vec<IndexedEvent>;
    let events: &[IndexedEvent] = if dedup {
        fresh = insert_events_dedup(&mut tx, scope, &batch.events).await?;
        &fresh
    } else {
        match &batch.copy {
            Some(text) => copy_raw(&mut tx, text.clone().into_bytes()).await?,
            None => copy_events(&mut tx, scope, &batch.events).await?,
        }
        &batch.events
    };

    let events_ms = t_events.elapsed().as_secs_f64() * 1e3;
    let t_derive = std::time::Instant::now();
    let keys = cache.event_keys(events)?;
    load_keys(&mut tx, scope, &keys, &mut cache).await?;
    let owners: BTreeSet<Key> = cache.owner_keys(events)?.into_iter().filter(|k| !cache.contains(k)).collect();
    load_keys(&mut tx, scope, &owners, &mut cache).await?;
    cache.apply(events)?;
    let dirty = cache.take_dirty();
    let journal = cache.take_journal();
    let load_ms = t_derive.elapsed().as_secs_f64() * 1e3;
    write_values(&mut tx, scope, &dirty).await?;
    let values_ms = t_derive.elapsed().as_secs_f64() * 1e3 - load_ms;
    write_undo(&mut tx, scope, &journal, batch.to.number).await?;
    insert_blocks(&mut tx, scope, &batch.headers).await?;
    tracing::trace!(load_ms, values_ms, "derived state written");
    let derive_ms = t_derive.elapsed().as_secs_f64() * 1e3;

    // Blocks further than the window below the head can no longer be reorged: forget their
    // undo entries and hashes, keeping the hash of the new floor itself. One statement: the new
    // final block (never inside a journaled batch, whose entries are needed until all its blocks
    // are final; a bound below block 0 constrains nothing; never lower than it was), the two
    // deletes where it moved, the checkpoint, and the readers' notification (`pg_notify` is
    // called in FROM: it returns void, which has no Rust type).
    let to = batch.to.number;
    let candidate = if batch.reorgable { to.saturating_sub(window) } else { to };
    let final_block = sqlx::query_scalar!(
        r#"WITH spanning AS (
               SELECT min(block_number) - 1 AS s FROM idx_undo WHERE chain_id = $1 AND contract = $2
               AND block_number <= $6 AND batch_to > $6 AND $7::bool),
           fin AS (
               SELECT GREATEST($8::int8, CASE WHEN s IS NULL OR s < 0 THEN $6::int8 ELSE LEAST($6::int8, s) END) AS f
               FROM spanning),
           undo AS (
               DELETE FROM idx_undo WHERE chain_id = $1 AND contract = $2
               AND block_number <= (SELECT f FROM fin) AND (SELECT f FROM fin) > $8::int8),
           blocks AS (
               DELETE FROM idx_blocks WHERE chain_id = $1 AND contract = $2
               AND number < (SELECT f FROM fin) AND (SELECT f FROM fin) > $8::int8),
           moved AS (
               UPDATE idx_checkpoints SET block_number = $3, block_hash = $4, block_timestamp = $5,
                      final_block = (SELECT f FROM fin), chain_head = GREATEST($9::int8, $3::int8), updated_at = now()
               WHERE chain_id = $1 AND contract = $2 RETURNING 1)
           SELECT fin.f AS "final_block!" FROM fin, pg_notify($10, $11)"#,
        scope.chain(),
        scope.addr(),
        to as i64,
        batch.to.hash.as_slice(),
        batch.to.timestamp as i64,
        candidate as i64,
        batch.reorgable,
        cp.final_block as i64,
        batch.chain_head as i64,
        super::NOTIFY_CHANNEL,
        format!("{}:{}:{to}", scope.chain_id, scope.contract),
    )
    .fetch_one(&mut *tx)
    .await?;
    let final_block = u64::try_from(final_block).context("final block below 0")?;
    tx.commit().await?;
    note_local_commit();
    tracing::debug!(
        from = batch.from,
        to,
        events = events.len(),
        derived = dirty.len(),
        undo = journal.len(),
        events_ms,
        derive_ms,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "committed batch"
    );
    let checkpoint = Checkpoint {
        block_number: to,
        block_hash: batch.to.hash,
        block_timestamp: batch.to.timestamp,
        final_block,
        chain_head: batch.chain_head.max(to),
    };
    Ok(CommitStats { events: events.len(), derived_rows: dirty.len(), undo_entries: journal.len(), checkpoint })
}
