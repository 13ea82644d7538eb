//! The keeper's queries: its replica lock, the indexed accounts it watches, its daily spend and
//! its queued liquidations. Free functions over a pool or the lock's own connection; every
//! statement is checked at compile time (`sqlx::query!`).

use alloy::primitives::{Address, I256, U256};
use sqlx::{PgConnection, PgPool};

use super::{
    decode::u64_of,
    index::{address, i256, u256},
};

/// An indexed account with outgoing streams, as the keeper predicts from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedAccount {
    pub account: Address,
    pub balance: I256,
    pub income_rate: U256,
    pub outgoing_rate: U256,
    pub updated: u64,
}

/// Tries the session-level advisory lock named `key` on `conn`; answers whether this session
/// holds it now. The lock lives as long as the session.
pub async fn try_lock(conn: &mut PgConnection, key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS "locked!""#, key)
        .fetch_one(conn)
        .await
}

/// Whether the lock's session still answers (and so still holds it).
pub async fn still_connected(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(conn).await.map(|_| true)
}

/// The indexed accounts of `contract` with an outgoing rate.
pub async fn accounts_with_outgoing_streams(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
) -> anyhow::Result<Vec<WatchedAccount>> {
    let rows = sqlx::query!(
        r#"SELECT account, balance::text AS "balance!", income_rate::text AS "income_rate!",
                  outgoing_rate::text AS "outgoing_rate!", updated
           FROM idx_accounts
           WHERE chain_id = $1 AND contract = $2 AND outgoing_rate > 0"#,
        i64::try_from(chain_id)?,
        contract.as_slice(),
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WatchedAccount {
                updated: u64_of(r.updated)?,
                balance: i256(&r.balance)?,
                income_rate: u256(&r.income_rate)?,
                outgoing_rate: u256(&r.outgoing_rate)?,
                account: address(&r.account)?,
            })
        })
        .collect()
}

/// The spend since UTC midnight, wei, of the keeper rows (no API key) signed by `sponsor`: gas
/// used (gas limit while in flight) at each row's latest attempt's max fee.
pub async fn spent_today(pool: &PgPool, chain_id: u64, sponsor: Address) -> anyhow::Result<U256> {
    let spent = sqlx::query_scalar!(
        r#"SELECT coalesce(sum(coalesce(t.gas_used, t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric), 0)::text
                  AS "spent!"
           FROM relay_transactions t
           JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = t.id
                         ORDER BY id DESC LIMIT 1) l ON true
           WHERE t.chain_id = $1 AND t.api_key_id IS NULL AND t.signer = $2
             AND t.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"#,
        i64::try_from(chain_id)?,
        sponsor.as_slice(),
    )
    .fetch_one(pool)
    .await?;
    spent
        .split('.')
        .next()
        .unwrap_or("0")
        .parse::<U256>()
        .map_err(|_| anyhow::anyhow!("keeper spend is not an integer"))
}

/// Whether a keeper row with this calldata and episode (`meta_nonce` = the account's `updated`)
/// is queued, in flight or done.
pub async fn liquidation_in_hand(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    calldata: &[u8],
    updated: u64,
) -> anyhow::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"SELECT 1 AS "one!" FROM relay_transactions
           WHERE chain_id = $1 AND contract = $2 AND api_key_id IS NULL AND calldata = $3 AND meta_nonce = $4
             AND status NOT IN ('failed', 'expired', 'replaced')
           LIMIT 1"#,
        i64::try_from(chain_id)?,
        contract.as_slice(),
        calldata,
        i64::try_from(updated)?,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}
