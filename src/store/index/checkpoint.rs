//! The checkpoint row (`idx_checkpoints`) and the recent block hashes (`idx_blocks`). Every
//! statement is checked at compile time.

use alloy::primitives::B256;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::store::decode::u64_of;

use super::model::BlockHeader;
use super::{Scope, bytes32};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub block_number: u64,
    pub block_hash: B256,
    pub block_timestamp: u64,
    pub final_block: u64,
    pub chain_head: u64,
}

/// A row of `idx_checkpoints` as [`load_checkpoint`] reads it.
struct CheckpointRow {
    block_number: i64,
    block_hash: Vec<u8>,
    block_timestamp: i64,
    final_block: i64,
    chain_head: i64,
}

pub async fn load_checkpoint(
    conn: &mut PgConnection,
    scope: Scope,
    for_update: bool,
) -> anyhow::Result<Option<Checkpoint>> {
    let row = if for_update {
        sqlx::query_as!(
            CheckpointRow,
            "SELECT block_number, block_hash, block_timestamp, final_block, chain_head FROM idx_checkpoints
             WHERE chain_id = $1 AND contract = $2 FOR UPDATE",
            scope.chain(),
            scope.addr()
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as!(
            CheckpointRow,
            "SELECT block_number, block_hash, block_timestamp, final_block, chain_head FROM idx_checkpoints
             WHERE chain_id = $1 AND contract = $2",
            scope.chain(),
            scope.addr()
        )
        .fetch_optional(conn)
        .await?
    };
    row.map(|r| {
        Ok(Checkpoint {
            block_number: u64_of(r.block_number)?,
            block_hash: bytes32(&r.block_hash)?,
            block_timestamp: u64_of(r.block_timestamp)?,
            final_block: u64_of(r.final_block)?,
            chain_head: u64_of(r.chain_head)?,
        })
    })
    .transpose()
}

/// Creates the checkpoint just below the start block if there is none yet.
pub async fn init_checkpoint(pool: &PgPool, scope: Scope, below_start: BlockHeader) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query!(
        "INSERT INTO idx_checkpoints (chain_id, contract, block_number, block_hash, block_timestamp, final_block, chain_head)
         VALUES ($1, $2, $3, $4, $5, $3, $3) ON CONFLICT DO NOTHING",
        scope.chain(),
        scope.addr(),
        below_start.number as i64,
        below_start.hash.as_slice(),
        below_start.timestamp as i64
    )
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
    let rows = sqlx::query!(
        "SELECT number, hash FROM idx_blocks WHERE chain_id = $1 AND contract = $2 AND number BETWEEN $3 AND $4
         ORDER BY number DESC",
        scope.chain(),
        scope.addr(),
        floor as i64,
        top as i64
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((u64_of(r.number)?, bytes32(&r.hash)?))).collect()
}

/// Records the chain head seen while idle, for lag reporting.
pub async fn touch_head(pool: &PgPool, scope: Scope, chain_head: u64) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE idx_checkpoints SET chain_head = $3, updated_at = now() WHERE chain_id = $1 AND contract = $2",
        scope.chain(),
        scope.addr(),
        chain_head as i64
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn insert_blocks(
    tx: &mut Transaction<'_, Postgres>,
    scope: Scope,
    headers: &[BlockHeader],
) -> anyhow::Result<()> {
    if headers.is_empty() {
        return Ok(());
    }
    let numbers: Vec<i64> = headers.iter().map(|h| h.number as i64).collect();
    let hashes: Vec<Vec<u8>> = headers.iter().map(|h| h.hash.to_vec()).collect();
    let parents: Vec<Vec<u8>> = headers.iter().map(|h| h.parent_hash.to_vec()).collect();
    let timestamps: Vec<i64> = headers.iter().map(|h| h.timestamp as i64).collect();
    sqlx::query!(
        "INSERT INTO idx_blocks (chain_id, contract, number, hash, parent_hash, timestamp)
         SELECT $1, $2, * FROM UNNEST($3::int8[], $4::bytea[], $5::bytea[], $6::int8[])
         ON CONFLICT (chain_id, contract, number) DO UPDATE SET hash = EXCLUDED.hash,
         parent_hash = EXCLUDED.parent_hash, timestamp = EXCLUDED.timestamp",
        scope.chain(),
        scope.addr(),
        &numbers,
        &hashes,
        &parents,
        &timestamps
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
