//! The pipeline's batched settle path: the attempts of many rows in one read, many mined rows
//! recorded in one fenced statement, and the `streampay_settled` notifications that wake
//! waiters in other processes (migration 0037's trigger sends one per row that settles).
//! Every statement is checked at compile time.

use std::collections::HashMap;

use alloy::primitives::B256;
use anyhow::Context;

use super::{
    AttemptKind, Lease, NonceScope, Store,
    decode::{bytes32, u64_of},
};

/// The channel migration 0037's trigger notifies, with the row's id, when a row settles (leaves
/// `pending`/`submitted` for any other status).
pub const SETTLED_CHANNEL: &str = "streampay_settled";

/// The channel migration 0042's trigger notifies, with `<chain id>:0x<sponsor>:<highest id>`,
/// when calls for that sponsor are queued (rows inserted), by any process.
pub const QUEUED_CHANNEL: &str = "streampay_queued";

/// One signed transaction of a row, as [`Store::attempts_of`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRef {
    pub hash: B256,
    pub kind: AttemptKind,
    pub sponsor_nonce: u64,
}

/// A row seen mined by a successful receipt, as [`Store::settle_mined`] records it: exactly what
/// [`Store::settle_transaction`] records for [`super::Outcome::Mined`] with the nonce status
/// [`super::NonceStatus::Mined`].
#[derive(Debug, Clone, Copy)]
pub struct MinedRow {
    pub id: i64,
    pub hash: B256,
    pub gas_used: u64,
    pub block_number: u64,
    pub block_hash: B256,
    /// The receipt's effective gas price (the row is priced as it is settled; the background
    /// pricing has nothing left to look up for it).
    pub effective_gas_price: u128,
    pub scope: NonceScope,
    pub meta_nonce: u64,
}

fn i64_of(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("value beyond the database's BIGINT range")
}

impl Store {
    /// Every transaction signed for each of rows `ids`, newest first per row (the order of
    /// [`Store::attempt_hashes`]), in one read.
    pub async fn attempts_of(&self, ids: &[i64]) -> anyhow::Result<HashMap<i64, Vec<AttemptRef>>> {
        let rows = sqlx::query!(
            "SELECT transaction_id, tx_hash, kind, sponsor_nonce FROM tx_attempts
             WHERE transaction_id = ANY($1) ORDER BY transaction_id, id DESC",
            ids,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read the transactions' hashes")?;
        let mut out: HashMap<i64, Vec<AttemptRef>> = HashMap::new();
        for r in rows {
            let kind = if r.kind == "cancel" { AttemptKind::Cancel } else { AttemptKind::Call };
            out.entry(r.transaction_id).or_default().push(AttemptRef {
                hash: bytes32(&r.tx_hash)?,
                kind,
                sponsor_nonce: u64_of(r.sponsor_nonce)?,
            });
        }
        Ok(out)
    }

    /// Records rows `mined` as mined and their signed calls' meta nonces as mined, in one
    /// statement fenced by `lease`, whatever their number (see [`settle_mined_in`]). Row for row
    /// the same writes as [`Store::settle_transaction`] with [`super::Outcome::Mined`] (the
    /// webhook trigger still fires per row).
    pub async fn settle_mined(&self, lease: &Lease, mined: &[MinedRow]) -> anyhow::Result<()> {
        if mined.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await.context("Failed to get a connection")?;
        settle_mined_in(&mut conn, lease, mined).await
    }

    /// A connection listening on [`SETTLED_CHANNEL`] and [`QUEUED_CHANNEL`]: its own, outside
    /// the store's pool ([`super::notify::listener_pool`]).
    pub async fn listen_settled(&self) -> anyhow::Result<sqlx::postgres::PgListener> {
        let own = super::notify::listener_pool(&self.pool);
        let mut listener = sqlx::postgres::PgListener::connect_with(&own)
            .await
            .context("Failed to connect the settled-rows listener")?;
        listener
            .listen_all([SETTLED_CHANNEL, QUEUED_CHANNEL])
            .await
            .context("Failed to listen for settled and queued rows")?;
        Ok(listener)
    }
}

/// The writes of [`Store::settle_mined`] on `conn` (in a transaction of the caller's, or alone):
/// one statement that first takes a share lock on the sponsor's row where `lease` is still held
/// (as every fenced write does, so a takeover waits for it to commit), and writes nothing, and
/// fails with [`super::LeaseLost`], where it is not. The lock is taken before any row is
/// written: both updates are gated on it.
pub(super) async fn settle_mined_in(
    conn: &mut sqlx::PgConnection,
    lease: &Lease,
    mined: &[MinedRow],
) -> anyhow::Result<()> {
    if mined.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(mined.len());
    let mut hashes = Vec::with_capacity(mined.len());
    let mut gas = Vec::with_capacity(mined.len());
    let mut blocks = Vec::with_capacity(mined.len());
    let mut block_hashes = Vec::with_capacity(mined.len());
    let mut prices = Vec::with_capacity(mined.len());
    let mut chain_ids = Vec::with_capacity(mined.len());
    let mut contracts = Vec::with_capacity(mined.len());
    let mut signers = Vec::with_capacity(mined.len());
    let mut types = Vec::with_capacity(mined.len());
    let mut nonces = Vec::with_capacity(mined.len());
    for m in mined {
        ids.push(m.id);
        hashes.push(m.hash.to_vec());
        gas.push(i64_of(m.gas_used)?);
        blocks.push(i64_of(m.block_number)?);
        block_hashes.push(m.block_hash.to_vec());
        prices.push(m.effective_gas_price.to_string());
        chain_ids.push(i64_of(m.scope.chain_id)?);
        contracts.push(m.scope.contract.to_vec());
        signers.push(m.scope.signer.to_vec());
        types.push(m.scope.nonce_type as u8 as i16);
        nonces.push(i64_of(m.meta_nonce)?);
    }
    let held = sqlx::query_scalar!(
        r#"WITH held AS MATERIALIZED (
               SELECT 1 FROM sponsor_accounts
               WHERE chain_id = $12 AND address = $13 AND lease_owner = $14 AND lease_until > clock_timestamp()
               FOR SHARE),
           settled AS (
               UPDATE relay_transactions t SET status = 'mined', tx_hash = m.tx_hash, gas_used = m.gas_used,
                      block_number = m.block_number, block_hash = m.block_hash, failure = NULL, revert_reason = NULL,
                      effective_gas_price = m.price::numeric, priced_block_hash = m.block_hash,
                      mined_at = now(), updated_at = now()
               FROM UNNEST($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bytea[], $6::text[])
                  AS m(id, tx_hash, gas_used, block_number, block_hash, price)
               WHERE t.id = m.id AND EXISTS (SELECT 1 FROM held)
               RETURNING 1),
           nonces AS (
               UPDATE meta_nonces n SET status = 'mined', updated_at = now()
               FROM UNNEST($7::bigint[], $8::bytea[], $9::bytea[], $10::smallint[], $11::bigint[])
                  AS m(chain_id, contract, signer, nonce_type, nonce)
               WHERE n.chain_id = m.chain_id AND n.contract = m.contract AND n.signer = m.signer
                 AND n.nonce_type = m.nonce_type AND n.nonce = m.nonce AND EXISTS (SELECT 1 FROM held)
               RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM held) AS "held!""#,
        &ids,
        &hashes,
        &gas,
        &blocks,
        &block_hashes,
        &prices,
        &chain_ids,
        &contracts,
        &signers,
        &types,
        &nonces,
        i64_of(lease.chain_id)?,
        lease.sponsor.as_slice(),
        &lease.owner,
    )
    .fetch_one(&mut *conn)
    .await
    .context("Failed to record the outcomes")?;
    if !held {
        return Err(super::LeaseLost(lease.sponsor).into());
    }
    Ok(())
}
