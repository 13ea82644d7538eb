//! The reads behind the read model ([`crate::indexer::read`]). Each is a single statement, hence
//! one snapshot: the checkpoint and the rows always belong to the same commit. Every statement
//! is checked at compile time.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use anyhow::Context;
use sqlx::PgPool;

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
    let row = sqlx::query!(
        "SELECT block_number, block_timestamp FROM idx_checkpoints WHERE chain_id = $1 AND contract = $2",
        chain_id as i64,
        contract.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok(Head { block_number: u64_of(r.block_number)?, block_timestamp: u64_of(r.block_timestamp)? }))
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
    let row = sqlx::query!(
        r#"SELECT c.block_number, c.block_timestamp, a.balance::text AS "balance?", a.income_rate::text AS "income_rate?",
                  a.outgoing_rate::text AS "outgoing_rate?", a.updated AS "updated?"
           FROM idx_checkpoints c LEFT JOIN idx_accounts a
             ON a.chain_id = c.chain_id AND a.contract = c.contract AND a.account = $3
           WHERE c.chain_id = $1 AND c.contract = $2"#,
        chain_id as i64,
        contract.as_slice(),
        account.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let head = Head { block_number: u64_of(r.block_number)?, block_timestamp: u64_of(r.block_timestamp)? };
    let state = match r.balance.as_deref() {
        // The joined row's columns are NOT NULL: present together with `balance`.
        Some(balance) => Some(AccountState {
            balance: i256(balance)?,
            income_rate: u256(r.income_rate.as_deref().context("account row without income_rate")?)?,
            outgoing_rate: u256(r.outgoing_rate.as_deref().context("account row without outgoing_rate")?)?,
            updated: u64_of(r.updated.context("account row without updated")?)?,
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
    let n = sqlx::query_scalar!(
        r#"SELECT next_nonce::text AS "next_nonce!" FROM idx_nonces WHERE chain_id = $1 AND contract = $2 AND signer = $3
           AND nonce_type = 0 AND selector = '\x00000000'::bytea"#,
        chain_id as i64,
        contract.as_slice(),
        signer.as_slice()
    )
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
    let n = sqlx::query_scalar!(
        r#"SELECT next_nonce::text AS "next_nonce!" FROM idx_nonces WHERE chain_id = $1 AND contract = $2 AND signer = $3
           AND nonce_type = 1 AND selector = $4"#,
        chain_id as i64,
        contract.as_slice(),
        signer.as_slice(),
        selector.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    n.as_deref().map(u256).transpose()
}

/// The checkpoint's block, the chain head last seen and the time since the last write; `None`
/// before the first run.
pub async fn checkpoint_age(pool: &PgPool, chain_id: u64, contract: Address) -> anyhow::Result<Option<CheckpointAge>> {
    let row = sqlx::query!(
        r#"SELECT block_number, chain_head, EXTRACT(EPOCH FROM (now() - updated_at))::float8 AS "age!" FROM idx_checkpoints
           WHERE chain_id = $1 AND contract = $2"#,
        chain_id as i64,
        contract.as_slice()
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(CheckpointAge {
            indexed_block: u64_of(r.block_number)?,
            chain_head: u64_of(r.chain_head)?,
            since_update: Duration::from_secs_f64(r.age.max(0.0)),
        })
    })
    .transpose()
}

/// A row of [`streams`]' statement: the checkpoint, the income rate of `who` (NULL: no account
/// row) and one stream (all NULL: no stream, the checkpoint alone).
struct StreamsJoinRow {
    block_number: i64,
    block_timestamp: i64,
    account_income_rate: Option<String>,
    subscriber: Option<Vec<u8>>,
    author: Option<Vec<u8>>,
    encoded_rates: Option<String>,
    income_rate: Option<String>,
    outgoing_rate: Option<String>,
    project_id: Option<i64>,
    since_block: Option<i64>,
    since_timestamp: Option<i64>,
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
    // Two statements differing only in the joined side and the order.
    let rows = match side {
        StreamsOf::Subscriber => {
            sqlx::query_as!(
                StreamsJoinRow,
                r#"SELECT c.block_number, c.block_timestamp, a.income_rate::text AS "account_income_rate?",
                          s.subscriber AS "subscriber?", s.author AS "author?", s.encoded_rates::text AS "encoded_rates?",
                          s.income_rate::text AS "income_rate?", s.outgoing_rate::text AS "outgoing_rate?",
                          s.project_id AS "project_id?", s.since_block AS "since_block?",
                          s.since_timestamp AS "since_timestamp?"
                   FROM idx_checkpoints c
                   LEFT JOIN idx_accounts a ON a.chain_id = c.chain_id AND a.contract = c.contract AND a.account = $3
                   LEFT JOIN idx_streams s ON s.chain_id = c.chain_id AND s.contract = c.contract AND s.subscriber = $3
                   WHERE c.chain_id = $1 AND c.contract = $2 ORDER BY s.position"#,
                chain_id as i64,
                contract.as_slice(),
                who.as_slice()
            )
            .fetch_all(pool)
            .await?
        }
        StreamsOf::Author => {
            sqlx::query_as!(
                StreamsJoinRow,
                r#"SELECT c.block_number, c.block_timestamp, a.income_rate::text AS "account_income_rate?",
                          s.subscriber AS "subscriber?", s.author AS "author?", s.encoded_rates::text AS "encoded_rates?",
                          s.income_rate::text AS "income_rate?", s.outgoing_rate::text AS "outgoing_rate?",
                          s.project_id AS "project_id?", s.since_block AS "since_block?",
                          s.since_timestamp AS "since_timestamp?"
                   FROM idx_checkpoints c
                   LEFT JOIN idx_accounts a ON a.chain_id = c.chain_id AND a.contract = c.contract AND a.account = $3
                   LEFT JOIN idx_streams s ON s.chain_id = c.chain_id AND s.contract = c.contract AND s.author = $3
                   WHERE c.chain_id = $1 AND c.contract = $2 ORDER BY s.since_block, s.subscriber"#,
                chain_id as i64,
                contract.as_slice(),
                who.as_slice()
            )
            .fetch_all(pool)
            .await?
        }
    };
    let Some(first) = rows.first() else { return Ok(None) };
    let head = Head { block_number: u64_of(first.block_number)?, block_timestamp: u64_of(first.block_timestamp)? };
    let income = first.account_income_rate.as_deref().map(u256).transpose()?.unwrap_or_default();
    let streams = rows.iter().filter(|r| r.subscriber.is_some()).map(stream_row).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some((head, income, streams)))
}

/// A joined stream (its subscriber present); its other columns are NOT NULL in `idx_streams`.
fn stream_row(r: &StreamsJoinRow) -> anyhow::Result<StreamRow> {
    fn col<'a, T: ?Sized>(v: Option<&'a T>, name: &str) -> anyhow::Result<&'a T> {
        v.with_context(|| format!("stream row without {name}"))
    }
    Ok(StreamRow {
        subscriber: address(col(r.subscriber.as_deref(), "subscriber")?)?,
        author: address(col(r.author.as_deref(), "author")?)?,
        encoded_rates: u256(col(r.encoded_rates.as_deref(), "encoded_rates")?)?,
        income_rate: u256(col(r.income_rate.as_deref(), "income_rate")?)?,
        outgoing_rate: u256(col(r.outgoing_rate.as_deref(), "outgoing_rate")?)?,
        project_id: u64_of(*col(r.project_id.as_ref(), "project_id")?)?,
        since_block: u64_of(*col(r.since_block.as_ref(), "since_block")?)?,
        since_timestamp: u64_of(*col(r.since_timestamp.as_ref(), "since_timestamp")?)?,
    })
}
