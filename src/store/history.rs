//! Transaction history, references, sponsor spend and sponsor policies (SPEC §4).
//!
//! Reads `relay_transactions` (the pipeline's queue) and writes only the history columns of
//! migration 0006 (`reference`, `operations`, `relay_transaction_amounts`: laid out here by
//! [`MetaColumns`], written with the rows by [`Store::enqueue_transactions`]), the effective gas
//! price, and the policies of migration 0008. Money is NUMERIC in the database and [`U256`] here; it crosses the boundary as
//! decimal text, so nothing ever rounds. Every statement is checked at compile time.

use alloy::primitives::{Address, B256, U256};
use anyhow::Context;

use super::{
    Store, TxStatus,
    decode::{address, bytes32, opt_u64, u64_of},
};

/// What a relayed call does, recorded with its row for history and summaries.
#[derive(Debug, Clone, Default)]
pub struct TxMeta {
    pub reference: Option<String>,
    /// The user operations in execution order.
    pub operations: Vec<String>,
    /// `(position, operation, amount)` of every operation that moves money, in StreamPay's
    /// internal 18-decimal units.
    pub amounts: Vec<(usize, String, U256)>,
}

/// Filters of `GET /api/v1/transactions` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Raw `status` column values.
    pub statuses: Vec<String>,
    pub signer: Option<Address>,
    pub sponsor: Option<Address>,
    pub reference: Option<String>,
    pub contract: Option<Address>,
    /// RFC 3339 timestamps already validated by [`Store::parse_timestamp`]: `from` inclusive,
    /// `to` exclusive, on the row's creation time.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Keyset cursor: only rows with a smaller id (the page after the one that ended there).
    pub before_id: Option<i64>,
}

/// One row of the history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub id: i64,
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    pub status: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub failure: Option<String>,
    pub reference: Option<String>,
    pub operations: Vec<String>,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    pub mined_at: Option<String>,
    /// `(operation, amount)` in internal units.
    pub amounts: Vec<(String, U256)>,
}

/// `GET /api/v1/transactions/summary`.
#[derive(Debug, Clone, Default)]
pub struct ReferenceSummary {
    pub count: u64,
    /// `(status, count)`.
    pub by_status: Vec<(String, u64)>,
    pub gas_used: u64,
    /// Σ gas used × effective gas price (see [`Spend::mined_wei`]), in wei.
    pub gas_cost_wei: U256,
    /// `(operation, Σ amount)` in internal units, of mined transactions only.
    pub amounts: Vec<(String, U256)>,
}

/// A sponsor's (or one key's) spending since UTC midnight, in wei.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    /// Σ gas used × effective gas price of transactions mined today (× the signed max fee, an
    /// upper bound, for any whose receipt price is not recorded yet).
    pub mined_wei: U256,
    /// Σ gas limit × max fee per gas of transactions not mined yet: what they may still cost.
    pub reserved_wei: U256,
    /// Transactions pending or submitted (any day).
    pub in_flight: u64,
}

impl Spend {
    pub fn total(&self) -> U256 {
        self.mined_wei.saturating_add(self.reserved_wei)
    }
}

/// Limits on a sponsor, in wei; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SponsorPolicy {
    pub max_fee_per_gas: Option<U256>,
    pub daily_budget: Option<U256>,
    pub per_key_daily_budget: Option<U256>,
}

fn numeric(text: &str) -> anyhow::Result<U256> {
    text.parse::<U256>().with_context(|| format!("NUMERIC {text:?} is not a uint256"))
}

pub(super) fn opt_numeric(v: Option<String>) -> anyhow::Result<Option<U256>> {
    v.as_deref().map(numeric).transpose()
}

/// The history columns of a batch being queued (reference, operations and amounts of each row),
/// flattened into arrays for `UNNEST` so that [`Store::enqueue_transactions`] writes them in the
/// statement that inserts the rows, in the transaction that queues them: a queued call never
/// lacks its label, and the batch costs the same round trips whatever its size.
///
/// Rows are numbered from 1 in batch order (the `WITH ORDINALITY` of the batch's `UNNEST`);
/// operations and amounts name their row by that number and keep their own order.
#[derive(Debug, Default)]
pub(super) struct MetaColumns {
    /// Per row: whether it has history at all (keeper rows do not: NULL operations).
    pub has_meta: Vec<bool>,
    /// Per row.
    pub reference: Vec<Option<String>>,
    /// Per operation, in execution order: its row and name.
    pub op_row: Vec<i64>,
    pub op_name: Vec<String>,
    /// Per amount: its row, position, operation and value (decimal text, internal units).
    pub amount_row: Vec<i64>,
    pub amount_position: Vec<i32>,
    pub amount_operation: Vec<String>,
    pub amount_value: Vec<String>,
}

impl MetaColumns {
    /// Appends row number `row` (1-based, the next in the batch) and its history, if any.
    pub fn push(&mut self, row: i64, meta: Option<&TxMeta>) -> anyhow::Result<()> {
        anyhow::ensure!(row == self.has_meta.len() as i64 + 1, "history rows out of order");
        self.has_meta.push(meta.is_some());
        self.reference.push(meta.and_then(|m| m.reference.clone()));
        let Some(meta) = meta else { return Ok(()) };
        for op in &meta.operations {
            self.op_row.push(row);
            self.op_name.push(op.clone());
        }
        for (position, operation, amount) in &meta.amounts {
            self.amount_row.push(row);
            self.amount_position.push(i32::try_from(*position).context("position beyond INT")?);
            self.amount_operation.push(operation.clone());
            self.amount_value.push(amount.to_string());
        }
        Ok(())
    }
}

impl Store {
    /// The reference and operations of transaction `id` if a key of `api_key_id`'s family relayed
    /// it (for `GET /transactions/{id}`).
    pub async fn transaction_reference(
        &self,
        id: i64,
        api_key_id: i64,
    ) -> anyhow::Result<Option<(Option<String>, Vec<String>)>> {
        let row = sqlx::query!(
            r#"SELECT reference, coalesce(operations, '{}') AS "operations!" FROM relay_transactions
               WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2))"#,
            id,
            api_key_id,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the transaction's reference")?;
        Ok(row.map(|r| (r.reference, r.operations)))
    }

    /// Mined rows of `chain_id` without a recorded effective gas price for their current block, as
    /// `(id, hash, block hash)`, newest first, except the ids in `skip`. At most `limit`.
    pub async fn unpriced_transactions(
        &self,
        chain_id: u64,
        skip: &[i64],
        limit: i64,
    ) -> anyhow::Result<Vec<(i64, B256, B256)>> {
        let rows = sqlx::query!(
            r#"SELECT id, tx_hash, block_hash AS "block_hash!" FROM relay_transactions t
               WHERE t.chain_id = $1 AND t.gas_used IS NOT NULL AND t.block_hash IS NOT NULL
                 AND t.priced_block_hash IS DISTINCT FROM t.block_hash
                 AND NOT (t.id = ANY($2))
               ORDER BY id DESC LIMIT $3"#,
            chain_id as i64,
            skip,
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to find unpriced transactions")?;
        rows.iter().map(|r| Ok((r.id, bytes32(&r.tx_hash)?, bytes32(&r.block_hash)?))).collect()
    }

    /// Records the effective gas price of row `id`'s receipt in `block_hash`, if the row is still
    /// mined there with that hash.
    pub async fn set_effective_gas_price(
        &self,
        id: i64,
        hash: B256,
        block_hash: B256,
        price: u128,
    ) -> anyhow::Result<()> {
        sqlx::query!(
            "UPDATE relay_transactions SET effective_gas_price = $4::text::numeric, priced_block_hash = $3
             WHERE id = $1 AND tx_hash = $2 AND block_hash = $3",
            id,
            hash.as_slice(),
            block_hash.as_slice(),
            price.to_string(),
        )
        .execute(&self.pool)
        .await
        .context("Failed to record the effective gas price")?;
        Ok(())
    }

    /// The key that relayed transaction `id`, if it is of `api_key_id`'s family.
    pub async fn transaction_key_in_family(&self, id: i64, api_key_id: i64) -> anyhow::Result<Option<i64>> {
        // A row without a key is in no family, so a row found has one.
        sqlx::query_scalar!(
            r#"SELECT api_key_id AS "api_key_id!" FROM relay_transactions
               WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2))"#,
            id,
            api_key_id,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to find the transaction's key")
    }

    /// Validates `s` as a timestamp and returns it normalised (RFC 3339, UTC, microseconds);
    /// `None` if Postgres cannot read it (the caller has checked the RFC 3339 shape).
    pub async fn parse_timestamp(&self, local: &str, offset_minutes: i32) -> anyhow::Result<Option<String>> {
        let parsed = sqlx::query_scalar!(
            r#"SELECT rfc3339_utc(t, 6) AS "t!"
               FROM (SELECT ($1::text::timestamp AT TIME ZONE 'UTC') - make_interval(mins => $2) AS t) x"#,
            local,
            offset_minutes,
        )
        .fetch_one(&self.pool)
        .await;
        match parsed {
            Ok(t) => Ok(Some(t)),
            // Class 22: data exception (bad date, out of range).
            Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("22")) => Ok(None),
            Err(e) => Err(e).context("Failed to parse the timestamp"),
        }
    }

    /// The transactions of `api_key_id`'s family (a key keeps the history of the keys it replaced
    /// by rotation, migration 0016) matching `f`, newest first, at most `limit`.
    pub async fn list_history(
        &self,
        api_key_id: i64,
        f: &HistoryFilter,
        limit: u32,
    ) -> anyhow::Result<Vec<HistoryRow>> {
        let rows = sqlx::query!(
            r#"SELECT t.id, t.chain_id, t.contract, t.signer, t.meta_nonce, t.sponsor, t.sponsor_nonce, t.tx_hash,
                      t.status, t.gas_used, t.block_number, t.failure, t.reference,
                      coalesce(t.operations, '{}') AS "operations!",
                      rfc3339_utc(t.created_at, 6) AS "created!", rfc3339_utc(t.mined_at, 6) AS "mined?",
                      coalesce((SELECT array_agg(m.operation ORDER BY m.position) FROM relay_transaction_amounts m
                                WHERE m.transaction_id = t.id), '{}') AS "amount_ops!",
                      coalesce((SELECT array_agg(m.amount::text ORDER BY m.position) FROM relay_transaction_amounts m
                                WHERE m.transaction_id = t.id), '{}') AS "amount_values!"
               FROM relay_transactions t
               WHERE t.api_key_id IN (SELECT api_key_family($1))
                 AND (cardinality($2::text[]) = 0 OR t.status = ANY($2))
                 AND ($3::bytea IS NULL OR t.signer = $3)
                 AND ($4::bytea IS NULL OR t.sponsor = $4)
                 AND ($5::text IS NULL OR t.reference = $5)
                 AND ($6::bytea IS NULL OR t.contract = $6)
                 AND ($7::text IS NULL OR t.created_at >= $7::text::timestamptz)
                 AND ($8::text IS NULL OR t.created_at < $8::text::timestamptz)
                 AND ($9::bigint IS NULL OR t.id < $9)
               ORDER BY t.id DESC
               LIMIT $10"#,
            api_key_id,
            f.statuses.as_slice(),
            f.signer.as_ref().map(|a| a.as_slice()),
            f.sponsor.as_ref().map(|a| a.as_slice()),
            f.reference.as_deref(),
            f.contract.as_ref().map(|a| a.as_slice()),
            f.from.as_deref(),
            f.to.as_deref(),
            f.before_id,
            i64::from(limit),
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to list transactions")?;
        rows.into_iter()
            .map(|r| {
                let amounts = r
                    .amount_ops
                    .into_iter()
                    .zip(r.amount_values)
                    .map(|(o, v)| Ok((o, numeric(&v)?)))
                    .collect::<anyhow::Result<_>>()?;
                Ok(HistoryRow {
                    id: r.id,
                    chain_id: u64_of(r.chain_id)?,
                    contract: address(&r.contract).context("bad contract")?,
                    signer: address(&r.signer).context("bad signer")?,
                    meta_nonce: u64_of(r.meta_nonce)?,
                    sponsor: address(&r.sponsor).context("bad sponsor")?,
                    sponsor_nonce: u64_of(r.sponsor_nonce)?,
                    tx_hash: bytes32(&r.tx_hash)?,
                    status: {
                        TxStatus::parse(&r.status)?;
                        r.status
                    },
                    gas_used: opt_u64(r.gas_used)?,
                    block_number: opt_u64(r.block_number)?,
                    failure: r.failure,
                    reference: r.reference,
                    operations: r.operations,
                    created_at: r.created,
                    mined_at: r.mined,
                    amounts,
                })
            })
            .collect()
    }

    /// Totals of the transactions of `api_key_id`'s family carrying `reference`.
    pub async fn reference_summary(&self, api_key_id: i64, reference: &str) -> anyhow::Result<ReferenceSummary> {
        let by_status = sqlx::query!(
            r#"SELECT status, count(*) AS "count!" FROM relay_transactions
               WHERE api_key_id IN (SELECT api_key_family($1)) AND reference = $2
               GROUP BY status ORDER BY status"#,
            api_key_id,
            reference,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to count the reference's transactions")?;
        let by_status: Vec<(String, u64)> =
            by_status.into_iter().map(|r| Ok((r.status, u64_of(r.count)?))).collect::<anyhow::Result<_>>()?;
        let totals = sqlx::query!(
            r#"SELECT coalesce(sum(t.gas_used), 0)::text AS "gas_used!",
                      coalesce(sum(relay_gas_cost_wei(t.gas_used, t.effective_gas_price, t.priced_block_hash,
                                                      t.block_hash, a.max_fee_per_gas)), 0)::text AS "gas_cost!"
               FROM relay_transactions t
               LEFT JOIN tx_attempts a ON a.tx_hash = t.tx_hash
               WHERE t.api_key_id IN (SELECT api_key_family($1)) AND t.reference = $2 AND t.gas_used IS NOT NULL"#,
            api_key_id,
            reference,
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to total the reference's gas")?;
        let amounts = sqlx::query!(
            r#"SELECT m.operation, sum(m.amount)::text AS "amount!" FROM relay_transaction_amounts m
               JOIN relay_transactions t ON t.id = m.transaction_id
               WHERE t.api_key_id IN (SELECT api_key_family($1)) AND t.reference = $2
                 AND t.status IN ('mined', 'confirmed')
               GROUP BY m.operation ORDER BY m.operation"#,
            api_key_id,
            reference,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to total the reference's amounts")?;
        Ok(ReferenceSummary {
            count: by_status.iter().map(|(_, n)| n).sum(),
            by_status,
            gas_used: totals.gas_used.parse().context("gas total beyond u64")?,
            gas_cost_wei: numeric(&totals.gas_cost)?,
            amounts: amounts
                .into_iter()
                .map(|r| Ok((r.operation, numeric(&r.amount)?)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// What `sponsor` spent since UTC midnight (all keys, or only the calls of `api_key_id`'s
    /// family: the key and the keys it replaced or that replaced it by rotation). A mined row
    /// costs `relay_gas_cost_wei` (migration 0035): gas used × the receipt's effective gas price
    /// when recorded for its current block, else × the signed max fee of the mined attempt (an
    /// upper bound).
    pub async fn sponsor_spend(
        &self,
        chain_id: u64,
        sponsor: Address,
        api_key_id: Option<i64>,
    ) -> anyhow::Result<Spend> {
        // `(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')` is the start of the
        // current UTC day.
        let row = sqlx::query!(
            r#"SELECT
                 coalesce(sum(relay_gas_cost_wei(t.gas_used, t.effective_gas_price, t.priced_block_hash,
                                                 t.block_hash, a.max_fee_per_gas))
                          FILTER (WHERE t.gas_used IS NOT NULL
                                    AND t.mined_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')),
                          0)::text AS "mined!",
                 coalesce(sum(coalesce(t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric)
                          FILTER (WHERE t.status IN ('pending', 'submitted')), 0)::text AS "reserved!",
                 count(*) FILTER (WHERE t.status IN ('pending', 'submitted')) AS "in_flight!"
               FROM relay_transactions t
               LEFT JOIN tx_attempts a ON a.tx_hash = t.tx_hash
               JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = coalesce(t.bundle_id, t.id)
                             ORDER BY id DESC LIMIT 1) l ON true
               WHERE t.chain_id = $1 AND t.sponsor = $2
                 AND ($3::bigint IS NULL OR t.api_key_id IN (SELECT api_key_family($3)))
                 AND (t.status IN ('pending', 'submitted')
                      OR t.mined_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))"#,
            chain_id as i64,
            sponsor.as_slice(),
            api_key_id,
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to total the sponsor's spend")?;
        Ok(Spend {
            mined_wei: numeric(&row.mined)?,
            reserved_wei: numeric(&row.reserved)?,
            in_flight: u64_of(row.in_flight)?,
        })
    }

    /// The policy of `sponsor`, if one is set.
    pub async fn sponsor_policy(&self, chain_id: u64, sponsor: Address) -> anyhow::Result<Option<SponsorPolicy>> {
        let row = sqlx::query!(
            r#"SELECT max_fee_per_gas::text AS "max_fee_per_gas?", daily_budget::text AS "daily_budget?",
                      per_key_daily_budget::text AS "per_key_daily_budget?"
               FROM sponsor_policies WHERE chain_id = $1 AND sponsor = $2"#,
            chain_id as i64,
            sponsor.as_slice(),
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the sponsor policy")?;
        row.map(|r| {
            Ok(SponsorPolicy {
                max_fee_per_gas: opt_numeric(r.max_fee_per_gas)?,
                daily_budget: opt_numeric(r.daily_budget)?,
                per_key_daily_budget: opt_numeric(r.per_key_daily_budget)?,
            })
        })
        .transpose()
    }

    /// Sets (replaces) the policy of `sponsor`; `None` removes it.
    pub async fn set_sponsor_policy(
        &self,
        chain_id: u64,
        sponsor: Address,
        policy: Option<&SponsorPolicy>,
    ) -> anyhow::Result<()> {
        let Some(p) = policy else {
            sqlx::query!(
                "DELETE FROM sponsor_policies WHERE chain_id = $1 AND sponsor = $2",
                chain_id as i64,
                sponsor.as_slice(),
            )
            .execute(&self.pool)
            .await
            .context("Failed to remove the sponsor policy")?;
            return Ok(());
        };
        let text = |v: Option<U256>| v.map(|v| v.to_string());
        sqlx::query!(
            "INSERT INTO sponsor_policies (chain_id, sponsor, max_fee_per_gas, daily_budget, per_key_daily_budget)
             VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5::text::numeric)
             ON CONFLICT (chain_id, sponsor) DO UPDATE SET max_fee_per_gas = EXCLUDED.max_fee_per_gas,
                daily_budget = EXCLUDED.daily_budget, per_key_daily_budget = EXCLUDED.per_key_daily_budget,
                updated_at = now()",
            chain_id as i64,
            sponsor.as_slice(),
            text(p.max_fee_per_gas),
            text(p.daily_budget),
            text(p.per_key_daily_budget),
        )
        .execute(&self.pool)
        .await
        .context("Failed to write the sponsor policy")?;
        Ok(())
    }

    /// Makes the table hold exactly `policies` for `chain_id` (the config file is the source of
    /// truth; `serve` calls this at start).
    pub async fn replace_sponsor_policies(
        &self,
        chain_id: u64,
        policies: &[(Address, SponsorPolicy)],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        sqlx::query!("DELETE FROM sponsor_policies WHERE chain_id = $1", chain_id as i64)
            .execute(&mut *tx)
            .await
            .context("Failed to clear the sponsor policies")?;
        for (sponsor, p) in policies {
            let text = |v: Option<U256>| v.map(|v| v.to_string());
            sqlx::query!(
                "INSERT INTO sponsor_policies (chain_id, sponsor, max_fee_per_gas, daily_budget, per_key_daily_budget)
                 VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5::text::numeric)",
                chain_id as i64,
                sponsor.as_slice(),
                text(p.max_fee_per_gas),
                text(p.daily_budget),
                text(p.per_key_daily_budget),
            )
            .execute(&mut *tx)
            .await
            .context("Failed to write a sponsor policy")?;
        }
        tx.commit().await.context("Failed to commit the sponsor policies")?;
        Ok(())
    }

    /// The most gas a recent mined call of exactly `operation` (alone, not in a batch) used on
    /// `contract`: the fee quote's estimate once the relayer has history.
    pub async fn recent_operation_gas(
        &self,
        chain_id: u64,
        contract: Address,
        operation: &str,
    ) -> anyhow::Result<Option<u64>> {
        let gas = sqlx::query_scalar!(
            r#"SELECT max(gas_used) AS "gas?" FROM (
                  SELECT gas_used FROM relay_transactions
                  WHERE chain_id = $1 AND contract = $2 AND operations = ARRAY[$3::text]
                    AND status IN ('mined', 'confirmed') AND gas_used IS NOT NULL
                  ORDER BY id DESC LIMIT 20) recent"#,
            chain_id as i64,
            contract.as_slice(),
            operation,
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to read recent gas")?;
        opt_u64(gas)
    }
}
