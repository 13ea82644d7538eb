//! The reads behind the read model ([`crate::indexer::read`]). Each is a single statement, hence
//! one snapshot: the checkpoint and the rows always belong to the same commit.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use sqlx::{PgPool, Row};

use crate::store::decode::u64_of;

use super::model::AccountState;
use super::{address, i256, u256};

/// The checkpoint's block and timestamp: the chain time every answer is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub block_number: u64,
    pub block_timestamp: u64,
}

/// One row of `idx_streams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub subscriber: Address,
    pub author: Address,
    pub encoded_rates: U256,
    pub income_rate: U256,
    pub outgoing_rate: U256,
    pub project_id: u64,
    pub since_block: u64,
    pub since_timestamp: u64,
}

/// Which side of the streams [`streams`] selects, and its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsOf {
    /// A subscriber's outgoing streams, in the contract's order.
    Subscriber,
    /// An author's incoming streams, oldest first.
    Author,
}

/// The checkpoint as lag reporting sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointAge {
    pub indexed_block: u64,
    /// The chain head the indexer last saw.
    pub chain_head: u64,
    /// Time since the indexer last wrote its checkpoint.
    pub since_update: Duration,
}

/// The indexed head, `None` before the first checkpoint.
pub async fn head(pool: &PgPool, chain_id: u64, contract: Address) -> anyhow::Result<Option<Head>> {
    let row =
        sqlx::query("SELECT block_number, block_timestamp FROM idx_checkpoints WHERE chain_id = $1 AND contract = $2")
            .bind(chain_id as i64)
            .bind(contract.as_slice())
            .fetch_optional(pool)
            .await?;
    row.map(|r| Ok(Head { block_number: u64_of(r.get::<i64, _>(0))?, block_timestamp: u64_of(r.get::<i64, _>(1))? }))
        .transpose()
}

/// The head and the stored row of `account` (`None` inside: no row, all zero). `None` while the
/// deployment has no checkpoint yet.
pub async fn account(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    account: Address,
) -> anyhow::Result<Option<(Head, Option<AccountState>)>> {
    let row = sqlx::query(
        "SELECT c.block_number, c.block_timestamp, a.balance::text, a.income_rate::text, a.outgoing_rate::text, a.updated \
         FROM idx_checkpoints c LEFT JOIN idx_accounts a \
           ON a.chain_id = c.chain_id AND a.contract = c.contract AND a.account = $3 \
         WHERE c.chain_id = $1 AND c.contract = $2",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(account.as_slice())
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let head = Head { block_number: u64_of(r.get::<i64, _>(0))?, block_timestamp: u64_of(r.get::<i64, _>(1))? };
    let state = match r.get::<Option<&str>, _>(2) {
        Some(balance) => Some(AccountState {
            balance: i256(balance)?,
            income_rate: u256(r.get(3))?,
            outgoing_rate: u256(r.get(4))?,
            updated: u64_of(r.get::<i64, _>(5))?,
        }),
        None => None,
    };
    Ok(Some((head, state)))
}

/// The next account nonce (type 0) of `signer`, `None` when it never used one.
pub async fn account_nonce(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    signer: Address,
) -> anyhow::Result<Option<U256>> {
    let n: Option<String> = sqlx::query_scalar(
        "SELECT next_nonce::text FROM idx_nonces WHERE chain_id = $1 AND contract = $2 AND signer = $3 \
         AND nonce_type = 0 AND selector = '\\x00000000'::bytea",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(signer.as_slice())
    .fetch_optional(pool)
    .await?;
    n.as_deref().map(u256).transpose()
}

/// The next selector nonce (type 1) of `signer` for `selector`, `None` when it never used one.
pub async fn selector_nonce(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    signer: Address,
    selector: [u8; 4],
) -> anyhow::Result<Option<U256>> {
    let n: Option<String> = sqlx::query_scalar(
        "SELECT next_nonce::text FROM idx_nonces WHERE chain_id = $1 AND contract = $2 AND signer = $3 \
         AND nonce_type = 1 AND selector = $4",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(signer.as_slice())
    .bind(selector.as_slice())
    .fetch_optional(pool)
    .await?;
    n.as_deref().map(u256).transpose()
}

/// The checkpoint's block, the chain head last seen and the time since the last write; `None`
/// before the first run.
pub async fn checkpoint_age(pool: &PgPool, chain_id: u64, contract: Address) -> anyhow::Result<Option<CheckpointAge>> {
    let row = sqlx::query(
        "SELECT block_number, chain_head, EXTRACT(EPOCH FROM (now() - updated_at))::float8 FROM idx_checkpoints \
         WHERE chain_id = $1 AND contract = $2",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(CheckpointAge {
            indexed_block: u64_of(r.get::<i64, _>(0))?,
            chain_head: u64_of(r.get::<i64, _>(1))?,
            since_update: Duration::from_secs_f64(r.get::<f64, _>(2).max(0.0)),
        })
    })
    .transpose()
}

/// One statement (one snapshot): the checkpoint, the income rate of `who`, and the streams
/// where `who` is the subscriber or the author. `None` while the deployment has no checkpoint.
pub async fn streams(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    side: StreamsOf,
    who: Address,
) -> anyhow::Result<Option<(Head, U256, Vec<StreamRow>)>> {
    let (column, order) = match side {
        StreamsOf::Subscriber => ("subscriber", "s.position"),
        StreamsOf::Author => ("author", "s.since_block, s.subscriber"),
    };
    let sql = format!(
        "SELECT c.block_number, c.block_timestamp, a.income_rate::text, s.subscriber, s.author, s.encoded_rates::text, \
         s.income_rate::text, s.outgoing_rate::text, s.project_id, s.since_block, s.since_timestamp \
         FROM idx_checkpoints c \
         LEFT JOIN idx_accounts a ON a.chain_id = c.chain_id AND a.contract = c.contract AND a.account = $3 \
         LEFT JOIN idx_streams s ON s.chain_id = c.chain_id AND s.contract = c.contract AND s.{column} = $3 \
         WHERE c.chain_id = $1 AND c.contract = $2 ORDER BY {order}"
    );
    let rows =
        sqlx::query(&sql).bind(chain_id as i64).bind(contract.as_slice()).bind(who.as_slice()).fetch_all(pool).await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let head = Head { block_number: u64_of(first.get::<i64, _>(0))?, block_timestamp: u64_of(first.get::<i64, _>(1))? };
    let income = first.get::<Option<&str>, _>(2).map(u256).transpose()?.unwrap_or_default();
    let streams = rows
        .iter()
        .filter(|r| r.get::<Option<&[u8]>, _>(3).is_some())
        .map(stream_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some((head, income, streams)))
}

fn stream_row(r: &sqlx::postgres::PgRow) -> anyhow::Result<StreamRow> {
    Ok(StreamRow {
        subscriber: address(r.get(3))?,
        author: address(r.get(4))?,
        encoded_rates: u256(r.get(5))?,
        income_rate: u256(r.get(6))?,
        outgoing_rate: u256(r.get(7))?,
        project_id: u64_of(r.get::<i64, _>(8))?,
        since_block: u64_of(r.get::<i64, _>(9))?,
        since_timestamp: u64_of(r.get::<i64, _>(10))?,
    })
}
