//! The indexer's writes: one database transaction per batch holding its events (COPY), the
//! derived rows they change, the undo journal, recent block hashes and the checkpoint; and the
//! rollback that undoes orphaned blocks after a reorg.

use std::{collections::BTreeSet, fmt::Write as _};

use alloy::primitives::{Address, B256, I256, U256};
use anyhow::{Context, bail, ensure};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use super::{
    derive::{AccountState, Key, ProjectState, StateCache, StreamState, UndoEntry, Value},
    events::IndexedEvent,
    source::BlockHeader,
};

/// Which deployment's rows a query touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub chain_id: u64,
    pub contract: Address,
}

impl Scope {
    fn chain(&self) -> i64 {
        self.chain_id as i64
    }
    fn addr(&self) -> &[u8] {
        self.contract.as_slice()
    }
    /// Key of the advisory lock that makes one process the writer of this deployment's index.
    pub fn lock_key(&self) -> i64 {
        let mut h: i64 = 0x1d3_5eed;
        for b in self.contract.as_slice().iter().chain(self.chain_id.to_be_bytes().iter()) {
            h = h.wrapping_mul(31).wrapping_add(*b as i64);
        }
        h
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub block_number: u64,
    pub block_hash: B256,
    pub block_timestamp: u64,
    pub final_block: u64,
    pub chain_head: u64,
}

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
    /// [`copy_text`] of `events`, when built ahead (by the backfill's fetch tasks).
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

pub fn bytes32(v: &[u8]) -> anyhow::Result<B256> {
    ensure!(v.len() == 32, "expected 32 bytes, got {}", v.len());
    Ok(B256::from_slice(v))
}

pub fn address(v: &[u8]) -> anyhow::Result<Address> {
    ensure!(v.len() == 20, "expected 20 bytes, got {}", v.len());
    Ok(Address::from_slice(v))
}

pub fn u256(s: &str) -> anyhow::Result<U256> {
    U256::from_str_radix(s, 10).with_context(|| format!("bad numeric {s}"))
}

pub fn i256(s: &str) -> anyhow::Result<I256> {
    I256::from_dec_str(s).with_context(|| format!("bad numeric {s}"))
}

pub async fn load_checkpoint(
    conn: &mut PgConnection,
    scope: Scope,
    for_update: bool,
) -> anyhow::Result<Option<Checkpoint>> {
    let sql = format!(
        "SELECT block_number, block_hash, block_timestamp, final_block, chain_head FROM idx_checkpoints \
         WHERE chain_id = $1 AND contract = $2{}",
        if for_update { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(&sql).bind(scope.chain()).bind(scope.addr()).fetch_optional(conn).await?;
    row.map(|r| {
        Ok(Checkpoint {
            block_number: r.get::<i64, _>(0) as u64,
            block_hash: bytes32(r.get::<&[u8], _>(1))?,
            block_timestamp: r.get::<i64, _>(2) as u64,
            final_block: r.get::<i64, _>(3) as u64,
            chain_head: r.get::<i64, _>(4) as u64,
        })
    })
    .transpose()
}

/// Creates the checkpoint just below the start block if there is none yet.
pub async fn init_checkpoint(pool: &PgPool, scope: Scope, below_start: BlockHeader) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "INSERT INTO idx_checkpoints (chain_id, contract, block_number, block_hash, block_timestamp, final_block, chain_head) \
         VALUES ($1, $2, $3, $4, $5, $3, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(below_start.number as i64)
    .bind(below_start.hash.as_slice())
    .bind(below_start.timestamp as i64)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        insert_blocks(&mut tx, scope, &[below_start]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Stored hashes of blocks `floor..=top`, highest first.
pub async fn stored_blocks(pool: &PgPool, scope: Scope, floor: u64, top: u64) -> anyhow::Result<Vec<(u64, B256)>> {
    let rows = sqlx::query(
        "SELECT number, hash FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number BETWEEN $3 AND $4 \
         ORDER BY number DESC",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(floor as i64)
    .bind(top as i64)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((r.get::<i64, _>(0) as u64, bytes32(r.get::<&[u8], _>(1))?))).collect()
}

/// Records the chain head seen while idle, for lag reporting.
pub async fn touch_head(pool: &PgPool, scope: Scope, chain_head: u64) -> anyhow::Result<()> {
    sqlx::query("UPDATE idx_checkpoints SET chain_head = $3, updated_at = now() WHERE chain_id = $1 AND contract = $2")
        .bind(scope.chain())
        .bind(scope.addr())
        .bind(chain_head as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    pub events: usize,
    pub derived_rows: usize,
    pub undo_entries: usize,
}

/// Writes a batch atomically. With `dedup` the events go through `INSERT … ON CONFLICT DO
/// NOTHING` and only the newly stored ones are applied to the derived tables: the slow path
/// taken when the COPY met an already-stored log.
pub async fn commit(
    pool: &PgPool,
    scope: Scope,
    window: u64,
    batch: &Batch,
    dedup: bool,
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
    let mut cache = if batch.reorgable { StateCache::per_batch(batch.from) } else { StateCache::new(u64::MAX) };
    let keys = StateCache::event_keys(events)?;
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
    // undo entries and hashes, keeping the hash of the new floor itself.
    let to = batch.to.number;
    let final_block = if batch.reorgable {
        // Never inside a journaled batch: its entries are needed until all its blocks are final.
        let candidate = to.saturating_sub(window);
        let spanning: Option<i64> = sqlx::query_scalar(
            "SELECT min(block_number) - 1 FROM idx_undo WHERE chain_id = $1 AND contract = $2 \
             AND block_number <= $3 AND batch_to > $3",
        )
        .bind(scope.chain())
        .bind(scope.addr())
        .bind(candidate as i64)
        .fetch_one(&mut *tx)
        .await?;
        cp.final_block.max(spanning.map_or(candidate, |s| candidate.min(s as u64)))
    } else {
        to
    };
    if final_block > cp.final_block {
        sqlx::query("DELETE FROM idx_undo WHERE chain_id = $1 AND contract = $2 AND block_number <= $3")
            .bind(scope.chain())
            .bind(scope.addr())
            .bind(final_block as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number < $3")
            .bind(scope.chain())
            .bind(scope.addr())
            .bind(final_block as i64)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE idx_checkpoints SET block_number = $3, block_hash = $4, block_timestamp = $5, final_block = $6, \
         chain_head = GREATEST($7, $3), updated_at = now() WHERE chain_id = $1 AND contract = $2",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(to as i64)
    .bind(batch.to.hash.as_slice())
    .bind(batch.to.timestamp as i64)
    .bind(final_block as i64)
    .bind(batch.chain_head as i64)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx, scope, to).await?;
    tx.commit().await?;
    super::read::note_local_commit();
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
    Ok(CommitStats { events: events.len(), derived_rows: dirty.len(), undo_entries: journal.len() })
}

/// Undoes every block above `ancestor`: restores the derived rows from the undo journal,
/// deletes the orphaned events, hashes and journal entries, and moves the checkpoint back.
/// Returns the block actually rolled back to (at or below `ancestor`) and the events removed.
pub async fn rollback(pool: &PgPool, scope: Scope, ancestor: u64) -> anyhow::Result<(u64, u64)> {
    let mut tx = pool.begin().await?;
    let cp = load_checkpoint(&mut tx, scope, true).await?.context("no checkpoint")?;
    // Undo entries cover whole batches: an ancestor inside a batch means rolling back to just
    // before that batch (still a common ancestor) and re-ingesting the rest.
    let spanning: Option<i64> = sqlx::query_scalar(
        "SELECT min(block_number) - 1 FROM idx_undo WHERE chain_id = $1 AND contract = $2 \
         AND block_number <= $3 AND batch_to > $3",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(ancestor as i64)
    .fetch_one(&mut *tx)
    .await?;
    let ancestor = spanning.map_or(ancestor, |s| ancestor.min(s as u64));
    if ancestor < cp.final_block {
        bail!("reorg below block {} (the end of the reorg window); rebuild the index", cp.final_block);
    }
    let header =
        sqlx::query("SELECT hash, timestamp FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number = $3")
            .bind(scope.chain())
            .bind(scope.addr())
            .bind(ancestor as i64)
            .fetch_optional(&mut *tx)
            .await?
            .with_context(|| format!("no stored hash for block {ancestor}"))?;
    let (hash, timestamp) = (bytes32(header.get::<&[u8], _>(0))?, header.get::<i64, _>(1));

    let rows = sqlx::query(
        "SELECT DISTINCT ON (key) key, prev FROM idx_undo WHERE chain_id = $1 AND contract = $2 AND block_number > $3 \
         ORDER BY key, block_number ASC",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(ancestor as i64)
    .fetch_all(&mut *tx)
    .await?;
    let mut restore = Vec::with_capacity(rows.len());
    for r in rows {
        let key: Key = serde_json::from_value(r.get(0)).context("bad undo key")?;
        let prev: Option<serde_json::Value> = r.get(1);
        let prev: Option<Value> = prev.map(serde_json::from_value).transpose().context("bad undo value")?;
        restore.push((key, prev));
    }
    write_values(&mut tx, scope, &restore).await?;
    let removed = sqlx::query("DELETE FROM idx_events WHERE chain_id = $1 AND contract = $2 AND block_number > $3")
        .bind(scope.chain())
        .bind(scope.addr())
        .bind(ancestor as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    for table in ["idx_undo"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE chain_id = $1 AND contract = $2 AND block_number > $3"))
            .bind(scope.chain())
            .bind(scope.addr())
            .bind(ancestor as i64)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number > $3")
        .bind(scope.chain())
        .bind(scope.addr())
        .bind(ancestor as i64)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE idx_checkpoints SET block_number = $3, block_hash = $4, block_timestamp = $5, updated_at = now() \
         WHERE chain_id = $1 AND contract = $2",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(ancestor as i64)
    .bind(hash.as_slice())
    .bind(timestamp)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx, scope, ancestor).await?;
    tx.commit().await?;
    super::read::note_local_commit();
    Ok((ancestor, removed))
}

/// Tells readers' caches (delivered at commit) that the index moved.
async fn notify(tx: &mut Transaction<'_, Postgres>, scope: Scope, block: u64) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::read::NOTIFY_CHANNEL)
        .bind(format!("{}:{}:{block}", scope.chain_id, scope.contract))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// ------------------------------------------------------------------------------------ events

fn hex_bytea(out: &mut String, bytes: &[u8]) {
    out.push_str("\\\\x");
    // Table-driven (SIMD where available) instead of `write!("{:02x}")` per byte: this runs for
    // four columns of every event in a backfill.
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let n = chunk.len() * 2;
        alloy::hex::encode_to_slice(chunk, &mut buf[..n]).expect("buffer is twice the chunk");
        out.push_str(std::str::from_utf8(&buf[..n]).expect("hex is ASCII"));
    }
}

/// The COPY text of `events`, one line per row of `idx_events`. Public for the benchmark's
/// plain-COPY baseline, which must insert exactly the same rows.
pub fn copy_text(scope: Scope, events: &[IndexedEvent]) -> String {
    let mut out = String::with_capacity(events.len() * 400);
    let mut contract = String::new();
    hex_bytea(&mut contract, scope.addr());
    for e in events {
        let c = e.event.columns();
        let _ = write!(out, "{}\t{}\t{}\t", scope.chain_id, contract, e.block_number);
        hex_bytea(&mut out, e.block_hash.as_slice());
        let _ = write!(out, "\t{}\t", e.block_timestamp);
        hex_bytea(&mut out, e.tx_hash.as_slice());
        let _ = write!(out, "\t{}\t{}\t{}\t", e.tx_index, e.log_index, c.kind);
        for a in [c.a1, c.a2] {
            match a {
                Some(a) => hex_bytea(&mut out, a.as_slice()),
                None => out.push_str("\\N"),
            }
            out.push('\t');
        }
        for v in [c.v1, c.v2] {
            match v {
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
                None => out.push_str("\\N"),
            }
            out.push('\t');
        }
        match c.selector {
            Some(s) => hex_bytea(&mut out, &s),
            None => out.push_str("\\N"),
        }
        out.push('\n');
    }
    out
}

pub const EVENT_COLUMNS: &str = "chain_id, contract, block_number, block_hash, block_timestamp, tx_hash, tx_index, \
                                 log_index, kind, a1, a2, v1, v2, selector";

/// Streams rows into `idx_events` with COPY: the fast path.
pub async fn copy_events(conn: &mut PgConnection, scope: Scope, events: &[IndexedEvent]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    copy_raw(conn, copy_text(scope, events).into_bytes()).await
}

async fn copy_raw(conn: &mut PgConnection, text: Vec<u8>) -> anyhow::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(&format!("COPY idx_events ({EVENT_COLUMNS}) FROM STDIN")).await?;
    copy.send(text).await?;
    copy.finish().await?;
    Ok(())
}

/// Multi-row insert that skips logs already stored; returns the events actually inserted.
// One vector per column, bound as arrays for UNNEST.
#[allow(clippy::type_complexity)]
async fn insert_events_dedup(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    events: &[IndexedEvent],
) -> anyhow::Result<Vec<IndexedEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut cols: (Vec<i64>, Vec<Vec<u8>>, Vec<i64>, Vec<Vec<u8>>, Vec<i32>, Vec<i32>, Vec<i16>) = Default::default();
    let mut more: (
        Vec<Option<Vec<u8>>>,
        Vec<Option<Vec<u8>>>,
        Vec<Option<String>>,
        Vec<Option<String>>,
        Vec<Option<Vec<u8>>>,
    ) = Default::default();
    for e in events {
        let c = e.event.columns();
        cols.0.push(e.block_number as i64);
        cols.1.push(e.block_hash.to_vec());
        cols.2.push(e.block_timestamp as i64);
        cols.3.push(e.tx_hash.to_vec());
        cols.4.push(e.tx_index as i32);
        cols.5.push(e.log_index as i32);
        cols.6.push(c.kind);
        more.0.push(c.a1.map(|a| a.to_vec()));
        more.1.push(c.a2.map(|a| a.to_vec()));
        more.2.push(c.v1.map(|v| v.to_string()));
        more.3.push(c.v2.map(|v| v.to_string()));
        more.4.push(c.selector.map(|s| s.to_vec()));
    }
    let rows = sqlx::query(&format!(
        "INSERT INTO idx_events ({EVENT_COLUMNS}) \
         SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int8[], $6::bytea[], $7::int4[], $8::int4[], \
         $9::int2[], $10::bytea[], $11::bytea[], $12::text[]::numeric[], $13::text[]::numeric[], $14::bytea[]) \
         ON CONFLICT (chain_id, block_hash, log_index) DO NOTHING RETURNING block_hash, log_index"
    ))
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(cols.6)
    .bind(more.0)
    .bind(more.1)
    .bind(more.2)
    .bind(more.3)
    .bind(more.4)
    .fetch_all(&mut **tx)
    .await?;
    let inserted: std::collections::HashSet<(Vec<u8>, i32)> =
        rows.iter().map(|r| (r.get::<Vec<u8>, _>(0), r.get::<i32, _>(1))).collect();
    Ok(events.iter().filter(|e| inserted.contains(&(e.block_hash.to_vec(), e.log_index as i32))).cloned().collect())
}

async fn insert_blocks(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    headers: &[BlockHeader],
) -> anyhow::Result<()> {
    if headers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO idx_blocks (chain_id, contract, number, hash, parent_hash, timestamp) \
         SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::bytea[], $6::int8[]) \
         ON CONFLICT (chain_id, contract, number) DO UPDATE SET hash = EXCLUDED.hash, \
         parent_hash = EXCLUDED.parent_hash, timestamp = EXCLUDED.timestamp",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(headers.iter().map(|h| h.number as i64).collect::<Vec<_>>())
    .bind(headers.iter().map(|h| h.hash.to_vec()).collect::<Vec<_>>())
    .bind(headers.iter().map(|h| h.parent_hash.to_vec()).collect::<Vec<_>>())
    .bind(headers.iter().map(|h| h.timestamp as i64).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_undo(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    journal: &[UndoEntry],
    batch_to: u64,
) -> anyhow::Result<()> {
    if journal.is_empty() {
        return Ok(());
    }
    let mut blocks = Vec::with_capacity(journal.len());
    let mut keys = Vec::with_capacity(journal.len());
    let mut prevs = Vec::with_capacity(journal.len());
    for e in journal {
        blocks.push(e.block as i64);
        keys.push(serde_json::to_value(&e.key)?);
        prevs.push(e.prev.as_ref().map(serde_json::to_value).transpose()?);
    }
    sqlx::query(
        "INSERT INTO idx_undo (chain_id, contract, block_number, key, prev, batch_to) \
         SELECT $1, $2, *, $6 FROM UNNEST($3::int8[], $4::jsonb[], $5::jsonb[])",
    )
    .bind(scope.chain())
    .bind(scope.addr())
    .bind(blocks)
    .bind(keys)
    .bind(prevs)
    .bind(batch_to as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------- derived state

/// Loads the stored value of every key into `cache` (absent rows as `None`).
async fn load_keys(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    keys: &BTreeSet<Key>,
    cache: &mut StateCache,
) -> anyhow::Result<()> {
    let mut accounts = Vec::new();
    let mut subscribers = Vec::new();
    let mut nonces: (Vec<Vec<u8>>, Vec<i16>, Vec<Vec<u8>>) = Default::default();
    let mut uniques: (Vec<Vec<u8>>, Vec<String>) = Default::default();
    let mut projects = Vec::new();
    let mut fees: (Vec<i64>, Vec<Vec<u8>>) = Default::default();
    for k in keys {
        cache.insert_loaded(k.clone(), None);
        match k {
            Key::Account(a) => accounts.push(a.to_vec()),
            Key::Streams(u) => subscribers.push(u.to_vec()),
            Key::Nonce { signer, nonce_type, selector } => {
                nonces.0.push(signer.to_vec());
                nonces.1.push(*nonce_type as i16);
                nonces.2.push(selector.to_vec());
            }
            Key::UniqueNonce { signer, nonce } => {
                uniques.0.push(signer.to_vec());
                uniques.1.push(nonce.to_string());
            }
            Key::Project(p) => projects.push(*p as i64),
            Key::UserFee { project_id, author } => {
                fees.0.push(*project_id as i64);
                fees.1.push(author.to_vec());
            }
        }
    }
    let (chain, contract) = (scope.chain(), scope.addr());
    if !accounts.is_empty() {
        let rows = sqlx::query(
            "SELECT account, balance::text, income_rate::text, outgoing_rate::text, updated FROM idx_accounts \
             WHERE chain_id = $1 AND contract = $2 AND account = ANY($3)",
        )
        .bind(chain)
        .bind(contract)
        .bind(&accounts)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let state = AccountState {
                balance: i256(r.get(1))?,
                income_rate: u256(r.get(2))?,
                outgoing_rate: u256(r.get(3))?,
                updated: r.get::<i64, _>(4) as u64,
            };
            cache.insert_loaded(Key::Account(address(r.get(0))?), Some(Value::Account(state)));
        }
    }
    if !subscribers.is_empty() {
        let rows = sqlx::query(
            "SELECT subscriber, author, income_rate::text, outgoing_rate::text, project_id, since_block, since_timestamp \
             FROM idx_streams WHERE chain_id = $1 AND contract = $2 AND subscriber = ANY($3) ORDER BY subscriber, position",
        )
        .bind(chain)
        .bind(contract)
        .bind(&subscribers)
        .fetch_all(&mut **tx)
        .await?;
        let mut lists: std::collections::BTreeMap<Address, Vec<StreamState>> = Default::default();
        for r in rows {
            lists.entry(address(r.get(0))?).or_default().push(StreamState {
                author: address(r.get(1))?,
                income_rate: u256(r.get(2))?,
                outgoing_rate: u256(r.get(3))?,
                project_id: r.get::<i64, _>(4) as u64,
                since_block: r.get::<i64, _>(5) as u64,
                since_timestamp: r.get::<i64, _>(6) as u64,
            });
        }
        for (user, list) in lists {
            cache.insert_loaded(Key::Streams(user), Some(Value::Streams(list)));
        }
    }
    if !nonces.0.is_empty() {
        let rows = sqlx::query(
            "SELECT n.signer, n.nonce_type, n.selector, n.next_nonce::text FROM idx_nonces n \
             JOIN UNNEST($3::bytea[], $4::int2[], $5::bytea[]) AS k(signer, nonce_type, selector) \
             USING (signer, nonce_type, selector) WHERE n.chain_id = $1 AND n.contract = $2",
        )
        .bind(chain)
        .bind(contract)
        .bind(&nonces.0)
        .bind(&nonces.1)
        .bind(&nonces.2)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let sel: &[u8] = r.get(2);
            let key = Key::Nonce {
                signer: address(r.get(0))?,
                nonce_type: r.get::<i16, _>(1) as u8,
                selector: sel.try_into().context("bad selector")?,
            };
            cache.insert_loaded(key, Some(Value::Nonce(u256(r.get(3))?)));
        }
    }
    if !uniques.0.is_empty() {
        let rows = sqlx::query(
            "SELECT n.signer, n.nonce::text FROM idx_unique_nonces n \
             JOIN UNNEST($3::bytea[], $4::text[]::numeric[]) AS k(signer, nonce) USING (signer, nonce) \
             WHERE n.chain_id = $1 AND n.contract = $2",
        )
        .bind(chain)
        .bind(contract)
        .bind(&uniques.0)
        .bind(&uniques.1)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = Key::UniqueNonce { signer: address(r.get(0))?, nonce: u256(r.get(1))? };
            cache.insert_loaded(key, Some(Value::UniqueNonce));
        }
    }
    if !projects.is_empty() {
        let rows = sqlx::query(
            "SELECT project_id, owner, default_fee, claimed_block FROM idx_projects \
             WHERE chain_id = $1 AND contract = $2 AND project_id = ANY($3)",
        )
        .bind(chain)
        .bind(contract)
        .bind(&projects)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let p = ProjectState {
                owner: address(r.get(1))?,
                default_fee: r.get::<i32, _>(2) as u16,
                claimed_block: r.get::<i64, _>(3) as u64,
            };
            cache.insert_loaded(Key::Project(r.get::<i64, _>(0) as u64), Some(Value::Project(p)));
        }
    }
    if !fees.0.is_empty() {
        let rows = sqlx::query(
            "SELECT f.project_id, f.author, f.fee FROM idx_project_user_fees f \
             JOIN UNNEST($3::int8[], $4::bytea[]) AS k(project_id, author) USING (project_id, author) \
             WHERE f.chain_id = $1 AND f.contract = $2",
        )
        .bind(chain)
        .bind(contract)
        .bind(&fees.0)
        .bind(&fees.1)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let key = Key::UserFee { project_id: r.get::<i64, _>(0) as u64, author: address(r.get(1))? };
            cache.insert_loaded(key, Some(Value::UserFee(r.get::<i32, _>(2) as u16)));
        }
    }
    Ok(())
}

/// Sets each key's row to the given value: deletes the keys' rows, then inserts the values
/// present. Used both for forward writes and for restoring undo entries.
// One vector per column, bound as arrays for UNNEST.
#[allow(clippy::type_complexity)]
async fn write_values(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    values: &[(Key, Option<Value>)],
) -> anyhow::Result<()> {
    let (chain, contract) = (scope.chain(), scope.addr());

    // accounts: upsert the present ones, delete the absent ones (only after a rollback)
    let mut acc: (Vec<Vec<u8>>, Vec<String>, Vec<String>, Vec<String>, Vec<i64>) = Default::default();
    let mut acc_gone = Vec::new();
    let mut subs = Vec::new();
    let mut streams: (
        Vec<Vec<u8>>,
        Vec<Vec<u8>>,
        Vec<i32>,
        Vec<String>,
        Vec<String>,
        Vec<i64>,
        Vec<String>,
        Vec<i64>,
        Vec<i64>,
    ) = Default::default();
    let mut nonce_keys: (Vec<Vec<u8>>, Vec<i16>, Vec<Vec<u8>>, Vec<Option<String>>) = Default::default();
    let mut unique_keys: (Vec<Vec<u8>>, Vec<String>, Vec<bool>) = Default::default();
    let mut project_keys: (Vec<i64>, Vec<Option<Vec<u8>>>, Vec<i32>, Vec<i64>) = Default::default();
    let mut fee_keys: (Vec<i64>, Vec<Vec<u8>>, Vec<Option<i32>>) = Default::default();

    for (key, value) in values {
        match (key, value) {
            (Key::Account(a), Some(Value::Account(s))) => {
                acc.0.push(a.to_vec());
                acc.1.push(s.balance.to_string());
                acc.2.push(s.income_rate.to_string());
                acc.3.push(s.outgoing_rate.to_string());
                acc.4.push(s.updated as i64);
            }
            (Key::Account(a), None) => acc_gone.push(a.to_vec()),
            (Key::Streams(u), v) => {
                subs.push(u.to_vec());
                if let Some(Value::Streams(list)) = v {
                    for (i, s) in list.iter().enumerate() {
                        streams.0.push(u.to_vec());
                        streams.1.push(s.author.to_vec());
                        streams.2.push(i as i32);
                        streams.3.push(s.income_rate.to_string());
                        streams.4.push(s.outgoing_rate.to_string());
                        streams.5.push(s.project_id as i64);
                        streams.6.push(s.encoded().to_string());
                        streams.7.push(s.since_block as i64);
                        streams.8.push(s.since_timestamp as i64);
                    }
                }
            }
            (Key::Nonce { signer, nonce_type, selector }, v) => {
                nonce_keys.0.push(signer.to_vec());
                nonce_keys.1.push(*nonce_type as i16);
                nonce_keys.2.push(selector.to_vec());
                nonce_keys.3.push(match v {
                    Some(Value::Nonce(n)) => Some(n.to_string()),
                    _ => None,
                });
            }
            (Key::UniqueNonce { signer, nonce }, v) => {
                unique_keys.0.push(signer.to_vec());
                unique_keys.1.push(nonce.to_string());
                unique_keys.2.push(v.is_some());
            }
            (Key::Project(p), v) => {
                project_keys.0.push(*p as i64);
                match v {
                    Some(Value::Project(s)) => {
                        project_keys.1.push(Some(s.owner.to_vec()));
                        project_keys.2.push(s.default_fee as i32);
                        project_keys.3.push(s.claimed_block as i64);
                    }
                    _ => {
                        project_keys.1.push(None);
                        project_keys.2.push(0);
                        project_keys.3.push(0);
                    }
                }
            }
            (Key::UserFee { project_id, author }, v) => {
                fee_keys.0.push(*project_id as i64);
                fee_keys.1.push(author.to_vec());
                fee_keys.2.push(match v {
                    Some(Value::UserFee(f)) => Some(*f as i32),
                    _ => None,
                });
            }
            (k, v) => bail!("value {v:?} does not fit key {k:?}"),
        }
    }

    if !acc.0.is_empty() {
        sqlx::query(
            "INSERT INTO idx_accounts (chain_id, contract, account, balance, income_rate, outgoing_rate, updated) \
             SELECT $1, $2, * FROM UNNEST($3::bytea[], $4::text[]::numeric[], $5::text[]::numeric[], \
             $6::text[]::numeric[], $7::int8[]) \
             ON CONFLICT (chain_id, contract, account) DO UPDATE SET balance = EXCLUDED.balance, \
             income_rate = EXCLUDED.income_rate, outgoing_rate = EXCLUDED.outgoing_rate, updated = EXCLUDED.updated",
        )
        .bind(chain)
        .bind(contract)
        .bind(acc.0)
        .bind(acc.1)
        .bind(acc.2)
        .bind(acc.3)
        .bind(acc.4)
        .execute(&mut **tx)
        .await?;
    }
    if !acc_gone.is_empty() {
        sqlx::query("DELETE FROM idx_accounts WHERE chain_id = $1 AND contract = $2 AND account = ANY($3)")
            .bind(chain)
            .bind(contract)
            .bind(acc_gone)
            .execute(&mut **tx)
            .await?;
    }
    if !subs.is_empty() {
        sqlx::query("DELETE FROM idx_streams WHERE chain_id = $1 AND contract = $2 AND subscriber = ANY($3)")
            .bind(chain)
            .bind(contract)
            .bind(subs)
            .execute(&mut **tx)
            .await?;
    }
    if !streams.0.is_empty() {
        sqlx::query(
            "INSERT INTO idx_streams (chain_id, contract, subscriber, author, position, income_rate, outgoing_rate, \
             project_id, encoded_rates, since_block, since_timestamp) \
             SELECT $1, $2, * FROM UNNEST($3::bytea[], $4::bytea[], $5::int4[], $6::text[]::numeric[], \
             $7::text[]::numeric[], $8::int8[], $9::text[]::numeric[], $10::int8[], $11::int8[])",
        )
        .bind(chain)
        .bind(contract)
        .bind(streams.0)
        .bind(streams.1)
        .bind(streams.2)
        .bind(streams.3)
        .bind(streams.4)
        .bind(streams.5)
        .bind(streams.6)
        .bind(streams.7)
        .bind(streams.8)
        .execute(&mut **tx)
        .await?;
    }
    if !nonce_keys.0.is_empty() {
        sqlx::query(
            "DELETE FROM idx_nonces n USING UNNEST($3::bytea[], $4::int2[], $5::bytea[]) AS k(signer, nonce_type, selector) \
             WHERE n.chain_id = $1 AND n.contract = $2 AND n.signer = k.signer AND n.nonce_type = k.nonce_type \
             AND n.selector = k.selector",
        )
        .bind(chain)
        .bind(contract)
        .bind(&nonce_keys.0)
        .bind(&nonce_keys.1)
        .bind(&nonce_keys.2)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO idx_nonces (chain_id, contract, signer, nonce_type, selector, next_nonce) \
             SELECT $1, $2, k.signer, k.nonce_type, k.selector, k.next::numeric \
             FROM UNNEST($3::bytea[], $4::int2[], $5::bytea[], $6::text[]) AS k(signer, nonce_type, selector, next) \
             WHERE k.next IS NOT NULL",
        )
        .bind(chain)
        .bind(contract)
        .bind(nonce_keys.0)
        .bind(nonce_keys.1)
        .bind(nonce_keys.2)
        .bind(nonce_keys.3)
        .execute(&mut **tx)
        .await?;
    }
    if !unique_keys.0.is_empty() {
        sqlx::query(
            "DELETE FROM idx_unique_nonces n USING UNNEST($3::bytea[], $4::text[]::numeric[]) AS k(signer, nonce) \
             WHERE n.chain_id = $1 AND n.contract = $2 AND n.signer = k.signer AND n.nonce = k.nonce",
        )
        .bind(chain)
        .bind(contract)
        .bind(&unique_keys.0)
        .bind(&unique_keys.1)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO idx_unique_nonces (chain_id, contract, signer, nonce) \
             SELECT $1, $2, k.signer, k.nonce::numeric FROM UNNEST($3::bytea[], $4::text[], $5::bool[]) \
             AS k(signer, nonce, present) WHERE k.present",
        )
        .bind(chain)
        .bind(contract)
        .bind(unique_keys.0)
        .bind(unique_keys.1)
        .bind(unique_keys.2)
        .execute(&mut **tx)
        .await?;
    }
    if !project_keys.0.is_empty() {
        sqlx::query("DELETE FROM idx_projects WHERE chain_id = $1 AND contract = $2 AND project_id = ANY($3)")
            .bind(chain)
            .bind(contract)
            .bind(&project_keys.0)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO idx_projects (chain_id, contract, project_id, owner, default_fee, claimed_block) \
             SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int4[], $6::int8[]) AS k(p, o, f, b) \
             WHERE k.o IS NOT NULL",
        )
        .bind(chain)
        .bind(contract)
        .bind(project_keys.0)
        .bind(project_keys.1)
        .bind(project_keys.2)
        .bind(project_keys.3)
        .execute(&mut **tx)
        .await?;
    }
    if !fee_keys.0.is_empty() {
        sqlx::query(
            "DELETE FROM idx_project_user_fees f USING UNNEST($3::int8[], $4::bytea[]) AS k(project_id, author) \
             WHERE f.chain_id = $1 AND f.contract = $2 AND f.project_id = k.project_id AND f.author = k.author",
        )
        .bind(chain)
        .bind(contract)
        .bind(&fee_keys.0)
        .bind(&fee_keys.1)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO idx_project_user_fees (chain_id, contract, project_id, author, fee) \
             SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::int4[]) AS k(p, a, f) WHERE k.f IS NOT NULL",
        )
        .bind(chain)
        .bind(contract)
        .bind(fee_keys.0)
        .bind(fee_keys.1)
        .bind(fee_keys.2)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
