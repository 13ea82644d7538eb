//! The per-sponsor transaction queue (`relay_transactions` + `tx_attempts` + `sponsor_accounts`).
//!
//! A row is written with its sponsor nonce and its first signed transaction in one database
//! transaction that moves the sponsor's counter (`next_nonce`) past it, under the counter's row
//! lock: either a reservation at its start ([`Store::enqueue_transactions`], any process) or a
//! compare-and-set in the writing statement, fenced by the sponsor's lease
//! ([`Store::enqueue_leased`], the lease holder at nonces it counts itself). Two relayer
//! processes can never hand out one nonce, and a nonce is never handed out without a row that
//! will fill it.
//! Every signed transaction is committed to `tx_attempts` *before* it is broadcast, so after a
//! crash at any point the hashes to look for are on record and the exact bytes can be re-sent.
//! Every statement is checked at compile time.

use alloy::primitives::{Address, B256, Bytes};
use anyhow::Context;
use sqlx::{Postgres, Transaction};

use super::{
    Store,
    decode::{address, bytes32, opt_u64, u64_of, u128_of},
};

/// What to queue: everything but the sponsor nonce, which the queue allocates.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub chain_id: u64,
    pub contract: Address,
    /// The API key that asked for it; 0 for the relayer's own calls (the keeper's liquidations).
    pub api_key_id: i64,
    pub signer: Address,
    pub meta_nonce: u64,
    /// The type of `meta_nonce` (account for the keeper's own calls).
    pub meta_nonce_type: crate::chain::traits::NonceType,
    /// The signed call's deadline (chain time).
    pub deadline: u64,
    /// The EIP-712 digest of the signed call (None for the keeper's own calls).
    pub call_digest: Option<B256>,
    pub sponsor: Address,
    pub calldata: Bytes,
    pub gas_limit: u64,
    /// Reference, operations and amounts for the history, written with the row.
    pub history: Option<super::TxMeta>,
    /// The admission reservation of the call's cost ([`super::Reservation::NONE`] if none): the
    /// statement that writes the row deletes it, so from then on the row counts instead, never
    /// both and never neither.
    pub reservation: super::Reservation,
}

/// A signed transaction, ready to broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAttempt {
    pub hash: B256,
    pub raw: Bytes,
    pub kind: AttemptKind,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The relayed call.
    Call,
    /// A 0-value transfer to the sponsor itself that fills the nonce of a call that cannot go.
    Cancel,
}

impl AttemptKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Cancel => "cancel",
        }
    }
}

/// Where a queued transaction is (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Pending,
    Submitted,
    Mined,
    Confirmed,
    Failed,
    Replaced,
    Expired,
}

impl TxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Mined => "mined",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Replaced => "replaced",
            Self::Expired => "expired",
        }
    }

    /// The status of a `status` value. `reverted` (rows older than migration 0003) reads as
    /// `Failed`; any other value is an error: a row the relayer cannot classify is a bug to
    /// surface, not a failure to invent.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "submitted" => Self::Submitted,
            "mined" => Self::Mined,
            "confirmed" => Self::Confirmed,
            "failed" | "reverted" => Self::Failed,
            "replaced" => Self::Replaced,
            "expired" => Self::Expired,
            other => anyhow::bail!("unknown transaction status {other:?}"),
        })
    }

    /// Whether the outcome is known (a mined row may still be reorged out, but the client has
    /// its answer).
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Pending | Self::Submitted)
    }
}

/// A queued row as the pipeline works on it.
#[derive(Debug, Clone)]
pub struct QueuedTx {
    pub id: i64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub meta_nonce_type: crate::chain::traits::NonceType,
    pub deadline: u64,
    pub sponsor_nonce: u64,
    pub status: TxStatus,
    pub calldata: Bytes,
    pub gas_limit: u64,
    pub block_number: Option<u64>,
    pub block_hash: Option<B256>,
    /// The row's current hash: the mined one once mined.
    pub tx_hash: B256,
    /// Seconds since the latest attempt was signed, and since it was last broadcast.
    pub attempt_age_secs: f64,
    pub sent_age_secs: Option<f64>,
    /// The latest signed transaction.
    pub latest: SignedAttempt,
    /// The number of calls of the bundle this row leads (its `calldata`, `gas_limit` and
    /// `deadline` are then the bundle's); `None` for a call sent alone.
    pub bundle_size: Option<usize>,
}

/// A row of a bundle, as the worker settles it from the bundle's receipt.
#[derive(Debug, Clone)]
pub struct BundleRow {
    pub id: i64,
    /// Its position in the bundle: the index of its `BundleCallResult`.
    pub index: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub meta_nonce_type: crate::chain::traits::NonceType,
    pub calldata: Bytes,
    pub gas_limit: u64,
    /// Settled before its bundle: its call ran in another transaction (`replaced`). The
    /// bundle's outcome is not written to it.
    pub settled: bool,
}

/// A mined row not yet final, as the pipeline re-checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfinalTx {
    pub id: i64,
    pub block_number: u64,
    pub block_hash: B256,
}

/// How a row ended, as the pipeline records it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Mined {
        hash: B256,
        gas_used: u64,
        block_number: u64,
        block_hash: B256,
    },
    Reverted {
        hash: B256,
        gas_used: u64,
        block_number: u64,
        block_hash: B256,
        reason: String,
    },
    /// The nonce was filled by our cancellation: the node refused the call for good, or its
    /// deadline passed first (`expired`).
    Cancelled {
        hash: B256,
        gas_used: u64,
        block_number: u64,
        block_hash: B256,
        error: String,
        expired: bool,
    },
    /// Nothing of ours was mined and the call cannot go any more.
    Rejected {
        error: String,
    },
    Replaced,
    Expired,
}

impl Outcome {
    /// The outcome's metrics label: `mined`, `reverted`, `expired`, `rejected` or `replaced`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Mined { .. } => "mined",
            Outcome::Reverted { .. } => "reverted",
            Outcome::Cancelled { expired: true, .. } | Outcome::Expired => "expired",
            Outcome::Cancelled { .. } | Outcome::Rejected { .. } => "rejected",
            Outcome::Replaced => "replaced",
        }
    }
}

fn i64_of(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("value beyond the database's BIGINT range")
}

/// A queued row joined with its latest attempt, as [`Store::open_transactions`] reads it.
struct QueuedRow {
    id: i64,
    contract: Vec<u8>,
    signer: Vec<u8>,
    meta_nonce: i64,
    meta_nonce_type: i16,
    deadline: i64,
    sponsor_nonce: i64,
    status: String,
    calldata: Vec<u8>,
    gas_limit: i64,
    block_number: Option<i64>,
    block_hash: Option<Vec<u8>>,
    tx_hash: Vec<u8>,
    attempt_age: Option<f64>,
    sent_age: Option<f64>,
    a_hash: Vec<u8>,
    a_raw: Vec<u8>,
    a_kind: String,
    a_max_fee: i64,
    a_prio_fee: i64,
    bundle_size: Option<i32>,
}

fn queued_from(row: QueuedRow) -> anyhow::Result<QueuedTx> {
    Ok(QueuedTx {
        id: row.id,
        contract: address(&row.contract).context("bad contract")?,
        signer: address(&row.signer).context("bad signer")?,
        meta_nonce: u64_of(row.meta_nonce)?,
        meta_nonce_type: crate::chain::traits::NonceType::from_i16(row.meta_nonce_type)
            .unwrap_or(crate::chain::traits::NonceType::Account),
        deadline: u64_of(row.deadline)?,
        sponsor_nonce: u64_of(row.sponsor_nonce)?,
        status: TxStatus::parse(&row.status)?,
        calldata: row.calldata.into(),
        gas_limit: u64_of(row.gas_limit)?,
        block_number: opt_u64(row.block_number)?,
        block_hash: row.block_hash.as_deref().map(bytes32).transpose()?,
        tx_hash: bytes32(&row.tx_hash)?,
        attempt_age_secs: row.attempt_age.unwrap_or_default(),
        sent_age_secs: row.sent_age,
        bundle_size: row.bundle_size.map(|n| n as usize),
        latest: SignedAttempt {
            hash: bytes32(&row.a_hash)?,
            raw: row.a_raw.into(),
            kind: if row.a_kind == "cancel" { AttemptKind::Cancel } else { AttemptKind::Call },
            max_fee_per_gas: u128_of(row.a_max_fee)?,
            max_priority_fee_per_gas: u128_of(row.a_prio_fee)?,
        },
    })
}

async fn insert_attempt(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    nonce: u64,
    a: &SignedAttempt,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO tx_attempts
            (transaction_id, sponsor_nonce, tx_hash, raw_tx, kind, max_fee_per_gas, max_priority_fee_per_gas)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        i64_of(nonce)?,
        a.hash.as_slice(),
        a.raw.as_ref(),
        a.kind.as_str(),
        i64::try_from(a.max_fee_per_gas).context("max fee beyond BIGINT")?,
        i64::try_from(a.max_priority_fee_per_gas).context("priority fee beyond BIGINT")?,
    )
    .execute(&mut **tx)
    .await
    .context("Failed to record the signed transaction")?;
    // The open rows of a bundle (if `id` leads one) point at it too (not a call of it already
    // settled as run elsewhere).
    sqlx::query!(
        "UPDATE relay_transactions SET tx_hash = $2, updated_at = now()
         WHERE id = $1 OR (bundle_id = $1 AND status IN ('pending', 'submitted'))",
        id,
        a.hash.as_slice()
    )
    .execute(&mut **tx)
    .await
    .context("Failed to point the row at its latest transaction")?;
    Ok(())
}

/// An outcome as the columns it writes: status, hash, gas used, block number, block hash,
/// failure, revert reason or error.
type OutcomeColumns<'a> =
    (&'a str, Option<B256>, Option<u64>, Option<u64>, Option<B256>, Option<&'a str>, Option<&'a str>);

/// The writes of [`Store::settle_transaction`], in `tx`.
async fn settle_in(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    outcome: &Outcome,
    nonce: (super::NonceScope, u64, super::NonceStatus),
) -> anyhow::Result<()> {
    let (status, hash, gas, block, block_hash, failure, reason): OutcomeColumns<'_> = match outcome {
        Outcome::Mined { hash, gas_used, block_number, block_hash } => {
            ("mined", Some(*hash), Some(*gas_used), Some(*block_number), Some(*block_hash), None, None)
        }
        Outcome::Reverted { hash, gas_used, block_number, block_hash, reason } => (
            "failed",
            Some(*hash),
            Some(*gas_used),
            Some(*block_number),
            Some(*block_hash),
            Some("reverted"),
            Some(reason),
        ),
        Outcome::Cancelled { hash, gas_used, block_number, block_hash, error, expired } => (
            if *expired { "expired" } else { "failed" },
            Some(*hash),
            Some(*gas_used),
            Some(*block_number),
            Some(*block_hash),
            Some(if *expired { "expired" } else { "rejected" }),
            Some(error),
        ),
        Outcome::Rejected { error } => ("failed", None, None, None, None, Some("rejected"), Some(error.as_str())),
        Outcome::Replaced => ("replaced", None, None, None, None, Some("replaced"), None),
        Outcome::Expired => ("expired", None, None, None, None, Some("expired"), None),
    };
    sqlx::query!(
        "UPDATE relay_transactions SET status = $2, tx_hash = coalesce($3, tx_hash), gas_used = $4,
                block_number = $5, block_hash = $6, failure = $7, revert_reason = $8,
                mined_at = CASE WHEN $5::bigint IS NULL THEN NULL ELSE now() END, updated_at = now()
             WHERE id = $1",
        id,
        status,
        hash.map(|h| h.to_vec()),
        gas.map(|g| g as i64),
        block.map(|b| b as i64),
        block_hash.map(|h| h.to_vec()),
        failure,
        reason,
    )
    .execute(&mut **tx)
    .await
    .context("Failed to record the outcome")?;
    let (scope, meta_nonce, nonce_status) = nonce;
    super::nonces::finish_nonce_in(tx, scope, meta_nonce, nonce_status).await?;
    Ok(())
}

/// Column arrays of a batch insert (`UNNEST`).
#[derive(Default)]
struct BatchColumns {
    contract: Vec<Vec<u8>>,
    api_key_id: Vec<i64>,
    signer: Vec<Vec<u8>>,
    meta_nonce: Vec<i64>,
    meta_nonce_type: Vec<i16>,
    call_digest: Vec<Option<Vec<u8>>>,
    sponsor_nonce: Vec<i64>,
    hash: Vec<Vec<u8>>,
    calldata: Vec<Vec<u8>>,
    gas_limit: Vec<i64>,
    deadline: Vec<i64>,
    raw: Vec<Vec<u8>>,
    kind: Vec<String>,
    max_fee: Vec<i64>,
    prio_fee: Vec<i64>,
    bundle_index: Vec<i32>,
    reservations: Vec<i64>,
}

/// The bundles of a batch insert, named by their leader's row number (from 1).
#[derive(Default)]
struct BundleColumns {
    leader_idx: Vec<i64>,
    calldata: Vec<Vec<u8>>,
    gas_limit: Vec<i64>,
    deadline: Vec<i64>,
    size: Vec<i32>,
}

/// What a bundle's leader sends: `bundle(calls)` and the gas limit of the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleTx {
    pub calldata: Bytes,
    pub gas_limit: u64,
    /// The earliest deadline of its calls (0: none).
    pub deadline: u64,
}

/// Takes the sponsor's next nonce: locks its counter (until the transaction ends), advances it
/// and returns the nonce taken, in one statement. A rollback gives the nonce back.
async fn take_next_nonce(
    tx: &mut Transaction<'_, Postgres>,
    chain_id: u64,
    sponsor: Address,
    chain_nonce: u64,
) -> anyhow::Result<u64> {
    // The counter never goes below what the chain has already used (someone else may have
    // used the key: the nonces up to the chain's count are gone).
    let taken = sqlx::query_scalar!(
        r#"INSERT INTO sponsor_accounts (chain_id, address, next_nonce) VALUES ($1, $2, $3::bigint + 1)
         ON CONFLICT (chain_id, address) DO UPDATE
            SET next_nonce = GREATEST(sponsor_accounts.next_nonce, $3::bigint) + 1, updated_at = now()
         RETURNING next_nonce - 1 AS "taken!""#,
        i64_of(chain_id)?,
        sponsor.as_slice(),
        i64_of(chain_nonce)?,
    )
    .fetch_one(&mut **tx)
    .await
    .context("Failed to take the sponsor's next nonce")?;
    u64_of(taken)
}

/// A sponsor worker's right to write its sponsor's queue: the lease it took with
/// [`Store::acquire_sponsor_lease`]. Every write of the worker is fenced by it: it runs in a
/// transaction that first takes a share lock on the sponsor's row and checks that the lease is
/// still this owner's and unexpired. A process whose lease ran out (a tick stalled on the node,
/// a pause) and was taken over therefore cannot commit anything, and a takeover waits for a write
/// already under way to commit before it reads the queue.
#[derive(Debug, Clone)]
pub struct Lease {
    pub chain_id: u64,
    pub sponsor: Address,
    pub owner: String,
}

/// A fenced write found the lease gone: another process may be sending for the sponsor now.
#[derive(Debug, thiserror::Error)]
#[error("this process no longer holds the lease on sponsor {0}'s queue")]
pub struct LeaseLost(pub Address);

/// Checks, under a lock of the sponsor's row held until `tx` ends, that `lease` is still held:
/// a share lock for writes of rows, an exclusive one (`exclusive`) for a write that then takes
/// the sponsor's next nonce (two share holders both upgrading would deadlock).
async fn fence(tx: &mut Transaction<'_, Postgres>, lease: &Lease, exclusive: bool) -> anyhow::Result<()> {
    let chain_id = i64_of(lease.chain_id)?;
    let held = if exclusive {
        sqlx::query_scalar!(
            r#"SELECT 1 AS "held!" FROM sponsor_accounts
             WHERE chain_id = $1 AND address = $2 AND lease_owner = $3 AND lease_until > clock_timestamp()
             FOR UPDATE"#,
            chain_id,
            lease.sponsor.as_slice(),
            &lease.owner,
        )
        .fetch_optional(&mut **tx)
        .await
    } else {
        sqlx::query_scalar!(
            r#"SELECT 1 AS "held!" FROM sponsor_accounts
             WHERE chain_id = $1 AND address = $2 AND lease_owner = $3 AND lease_until > clock_timestamp()
             FOR SHARE"#,
            chain_id,
            lease.sponsor.as_slice(),
            &lease.owner,
        )
        .fetch_optional(&mut **tx)
        .await
    }
    .context("Failed to check the sponsor lease")?;
    if held.is_none() {
        return Err(LeaseLost(lease.sponsor).into());
    }
    Ok(())
}

/// Where a queued batch's sponsor nonces come from.
enum Reserve<'a> {
    /// The sponsor's counter, row-locked until the batch commits: the next nonces, the first at
    /// least the chain's count. Any process may queue this way.
    Locked { chain_nonce: u64 },
    /// The lease holder's own count, from `base`: checked against the counter, and the lease,
    /// in the statement that writes the batch.
    Leased { owner: &'a str, base: u64 },
}

impl Store {
    /// Begins a transaction fenced by `lease` (see [`Lease`]).
    pub(super) async fn begin_fenced(&self, lease: &Lease) -> anyhow::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        fence(&mut tx, lease, false).await?;
        Ok(tx)
    }

    /// Queues `batch` (all for one sponsor) at the sponsor's next `slots.len()` nonces (the first
    /// at least `chain_nonce`): slot `s` holds the calls `slots[s]` (indexes into `batch`), one
    /// call sent alone or, with two or more, a bundle. `sign(s, nonce)` signs slot `s` at its
    /// nonce (and, for a bundle, answers what it sends). Every row, attempt and bundle is written
    /// in one transaction: either all are queued or none. Returns `(row id, nonce, hash)` per item
    /// of `batch`, in order.
    pub async fn enqueue_transactions(
        &self,
        batch: &[NewTransaction],
        slots: &[Vec<usize>],
        chain_nonce: u64,
        sign: impl Fn(usize, u64) -> anyhow::Result<(SignedAttempt, Option<BundleTx>)>,
    ) -> anyhow::Result<Vec<(i64, u64, B256)>> {
        let queued = self.enqueue_with(batch, slots, Reserve::Locked { chain_nonce }, sign).await?;
        queued.context("a locked reservation always writes")
    }

    /// [`Store::enqueue_transactions`] for the holder of the sponsor's lease, at nonces it
    /// counts itself (the in-memory sequencer, see `pipeline::Lane::sequence`): the batch takes
    /// the nonces from `base`, and is written in one statement, without a transaction, only if
    /// `owner` still holds the sponsor's lease and the sponsor's counter still reads `base`
    /// (nothing else took a nonce meanwhile: another replica's batch, the worker's move of a row
    /// to a fresh nonce, a raise after drift). `None`: it did not, and nothing was written.
    pub async fn enqueue_leased(
        &self,
        batch: &[NewTransaction],
        slots: &[Vec<usize>],
        owner: &str,
        base: u64,
        sign: impl Fn(usize, u64) -> anyhow::Result<(SignedAttempt, Option<BundleTx>)>,
    ) -> anyhow::Result<Option<Vec<(i64, u64, B256)>>> {
        self.enqueue_with(batch, slots, Reserve::Leased { owner, base }, sign).await
    }

    async fn enqueue_with(
        &self,
        batch: &[NewTransaction],
        slots: &[Vec<usize>],
        reserve: Reserve<'_>,
        sign: impl Fn(usize, u64) -> anyhow::Result<(SignedAttempt, Option<BundleTx>)>,
    ) -> anyhow::Result<Option<Vec<(i64, u64, B256)>>> {
        let Some(first) = batch.first() else { return Ok(Some(Vec::new())) };
        anyhow::ensure!(
            batch.iter().all(|t| t.sponsor == first.sponsor && t.chain_id == first.chain_id),
            "one batch, one sponsor"
        );
        {
            let mut seen = vec![false; batch.len()];
            for i in slots.iter().flatten() {
                anyhow::ensure!(
                    *i < batch.len() && !std::mem::replace(&mut seen[*i], true),
                    "slots must cover the batch once"
                );
            }
            anyhow::ensure!(
                seen.iter().all(|s| *s) && slots.iter().all(|s| !s.is_empty()),
                "slots must cover the batch once"
            );
        }
        let k = slots.len() as u64;
        let (mut tx, base, owner) = match reserve {
            Reserve::Leased { owner, base } => (None, base, Some(owner)),
            Reserve::Locked { chain_nonce } => {
                let (tx, base) = self.reserve_locked(first, k, chain_nonce).await?;
                (Some(tx), base, None)
            }
        };
        let signed = (0..slots.len()).map(|s| sign(s, base + s as u64)).collect::<anyhow::Result<Vec<_>>>()?;

        // Per item: its slot, and its position in the slot's bundle (-1: sent alone).
        let mut place = vec![(0usize, -1i32); batch.len()];
        let mut bundles = BundleColumns::default();
        for (s, items) in slots.iter().enumerate() {
            match (&signed[s].1, items.len()) {
                (None, 1) => place[items[0]] = (s, -1),
                (Some(b), n) if n >= 2 => {
                    for (pos, i) in items.iter().enumerate() {
                        place[*i] = (s, pos as i32);
                    }
                    bundles.leader_idx.push(items[0] as i64 + 1);
                    bundles.calldata.push(b.calldata.to_vec());
                    bundles.gas_limit.push(i64_of(b.gas_limit)?);
                    bundles.deadline.push(i64_of(b.deadline)?);
                    bundles.size.push(n as i32);
                }
                _ => anyhow::bail!("slot {s}: a bundle needs two calls or more, and a call sent alone no bundle"),
            }
        }
        let mut cols = BatchColumns::default();
        let mut meta = super::history::MetaColumns::default();
        for (i, t) in batch.iter().enumerate() {
            let (s, pos) = place[i];
            let a = &signed[s].0;
            cols.contract.push(t.contract.to_vec());
            cols.api_key_id.push(t.api_key_id);
            cols.signer.push(t.signer.to_vec());
            cols.meta_nonce.push(i64_of(t.meta_nonce)?);
            cols.meta_nonce_type.push(t.meta_nonce_type as u8 as i16);
            cols.call_digest.push(t.call_digest.map(|d| d.to_vec()));
            cols.sponsor_nonce.push(i64_of(base + s as u64)?);
            cols.hash.push(a.hash.to_vec());
            cols.calldata.push(t.calldata.to_vec());
            cols.gas_limit.push(i64_of(t.gas_limit)?);
            cols.deadline.push(i64_of(t.deadline)?);
            // The signed bytes are kept once, with the leader's attempt.
            cols.raw.push(if pos <= 0 { a.raw.to_vec() } else { Vec::new() });
            cols.kind.push(a.kind.as_str().to_string());
            cols.max_fee.push(i64::try_from(a.max_fee_per_gas).context("max fee beyond BIGINT")?);
            cols.prio_fee.push(i64::try_from(a.max_priority_fee_per_gas).context("priority fee beyond BIGINT")?);
            cols.bundle_index.push(pos);
            cols.reservations.extend(t.reservation.id());
            // Row numbers from 1, as `WITH ORDINALITY` numbers `items`.
            meta.push(i as i64 + 1, t.history.as_ref())?;
        }
        // One statement writes every row with its reference and operations (one tuple version
        // each: nothing updates them afterwards), the first attempt of each transaction, each
        // bundle, and every amount of the batch; with BEGIN, the nonces and COMMIT a locked batch
        // costs four round trips whatever its size, a leased one this statement alone. Row ids
        // are drawn first, so that the rows of a bundle name their leader (position 0) as they
        // are written; operations, amounts and bundles name their row by its number in `items`
        // (`idx`). What was written is counted back: nothing may be dropped by a join.
        //
        // A leased batch (`$32` the owner) first advances the counter from `$33` by `$34`, only
        // where the lease is this owner's and unexpired and the counter reads `$33`: the
        // update row-locks the counter for the statement, and re-checks that condition on the
        // newest version after waiting for a concurrent writer. If it matched nothing, `go` is
        // empty and so is everything below it, the release of the calls' admission reservations
        // (`$35`) included: they count until their rows do.
        let query = sqlx::query!(
            r#"WITH claimed AS (
                UPDATE sponsor_accounts SET next_nonce = $33::bigint + $34::bigint, updated_at = now()
                WHERE $32::text IS NOT NULL AND chain_id = $1 AND address = $15
                  AND lease_owner = $32 AND lease_until > clock_timestamp() AND next_nonce = $33
                RETURNING 1),
             go AS (SELECT 1 WHERE $32::text IS NULL UNION ALL SELECT 1 FROM claimed),
             items AS MATERIALIZED (
                SELECT i.*, nextval(pg_get_serial_sequence('relay_transactions', 'id')) AS id
                FROM UNNEST($2::bytea[], $3::bigint[], $4::bytea[], $5::bigint[], $6::bigint[],
                                     $7::bytea[], $8::bytea[], $9::bigint[], $10::bigint[], $11::bytea[],
                                     $12::text[], $13::bigint[], $14::bigint[], $16::smallint[],
                                     $17::bytea[], $18::bool[], $19::text[], $26::int[])
                    WITH ORDINALITY
                    AS i(contract, api_key_id, signer, meta_nonce, sponsor_nonce, tx_hash, calldata, gas_limit,
                         deadline, raw_tx, kind, max_fee, prio_fee, meta_nonce_type, call_digest, has_meta,
                         reference, bundle_index, idx)
                WHERE EXISTS (SELECT 1 FROM go)),
             leaders AS (SELECT sponsor_nonce, id FROM items WHERE bundle_index = 0),
             ops AS (
                SELECT o.idx, array_agg(o.operation ORDER BY o.n) AS operations
                FROM UNNEST($20::bigint[], $21::text[]) WITH ORDINALITY AS o(idx, operation, n)
                GROUP BY o.idx),
             t AS (
                INSERT INTO relay_transactions
                    (id, chain_id, contract, api_key_id, signer, meta_nonce, sponsor, sponsor_nonce, tx_hash, calldata,
                     status, gas_limit, deadline, meta_nonce_type, call_digest, reference, operations,
                     bundle_id, bundle_index)
                SELECT i.id, $1::bigint, i.contract, NULLIF(i.api_key_id, 0), i.signer, i.meta_nonce, $15::bytea,
                       i.sponsor_nonce, i.tx_hash, i.calldata,
                       'pending', i.gas_limit, i.deadline, i.meta_nonce_type, i.call_digest, i.reference,
                       CASE WHEN i.has_meta THEN coalesce(ops.operations, '{}') END,
                       l.id, NULLIF(i.bundle_index, -1)
                FROM items i LEFT JOIN ops ON ops.idx = i.idx
                     LEFT JOIN leaders l ON i.bundle_index >= 0 AND l.sponsor_nonce = i.sponsor_nonce
                ORDER BY i.idx
                RETURNING id),
             amounts AS (
                INSERT INTO relay_transaction_amounts (transaction_id, position, operation, amount)
                SELECT i.id, m.position, m.operation, m.amount::numeric
                FROM UNNEST($22::bigint[], $23::int[], $24::text[], $25::text[]) AS m(idx, position, operation, amount)
                JOIN items i ON i.idx = m.idx
                JOIN t ON t.id = i.id
                RETURNING 1),
             attempts AS (
                INSERT INTO tx_attempts
                    (transaction_id, sponsor_nonce, tx_hash, raw_tx, kind, max_fee_per_gas, max_priority_fee_per_gas)
                SELECT i.id, i.sponsor_nonce, i.tx_hash, i.raw_tx, i.kind, i.max_fee, i.prio_fee
                FROM items i JOIN t ON t.id = i.id
                WHERE i.bundle_index <= 0
                RETURNING 1),
             bundles AS (
                INSERT INTO relay_bundles (leader_id, calldata, gas_limit, deadline, size)
                SELECT i.id, b.calldata, b.gas_limit, b.deadline, b.size
                FROM UNNEST($27::bigint[], $28::bytea[], $29::bigint[], $30::bigint[], $31::int[])
                    AS b(idx, calldata, gas_limit, deadline, size)
                JOIN items i ON i.idx = b.idx
                JOIN t ON t.id = i.id
                RETURNING 1),
             released AS (
                DELETE FROM admission_reservations WHERE id = ANY($35::bigint[]) AND EXISTS (SELECT 1 FROM go))
             SELECT i.id AS "id!", i.sponsor_nonce AS "sponsor_nonce!",
                    (SELECT count(*) FROM t) AS "rows!",
                    (SELECT count(*) FROM attempts) AS "attempts!",
                    (SELECT count(*) FROM bundles) AS "bundles!",
                    (SELECT count(*) FROM amounts) AS "amounts!"
             FROM items i ORDER BY i.idx"#,
            i64_of(first.chain_id)?,
            &cols.contract,
            &cols.api_key_id,
            &cols.signer,
            &cols.meta_nonce,
            &cols.sponsor_nonce,
            &cols.hash,
            &cols.calldata,
            &cols.gas_limit,
            &cols.deadline,
            &cols.raw,
            &cols.kind,
            &cols.max_fee,
            &cols.prio_fee,
            first.sponsor.as_slice(),
            &cols.meta_nonce_type,
            // Nullable elements (keeper rows have no digest, most calls no reference): `as _`
            // skips the macro's check, which knows only arrays of non-null values.
            &cols.call_digest as _,
            &meta.has_meta,
            &meta.reference as _,
            &meta.op_row,
            &meta.op_name,
            &meta.amount_row,
            &meta.amount_position,
            &meta.amount_operation,
            &meta.amount_value,
            &cols.bundle_index,
            &bundles.leader_idx,
            &bundles.calldata,
            &bundles.gas_limit,
            &bundles.deadline,
            &bundles.size,
            owner,
            i64_of(base)?,
            i64_of(k)?,
            &cols.reservations,
        );
        let ids = match &mut tx {
            Some(tx) => query.fetch_all(&mut **tx).await,
            None => query.fetch_all(&self.pool).await,
        }
        .context("Failed to queue the transactions")?;
        if ids.is_empty() && tx.is_none() {
            return Ok(None);
        }
        anyhow::ensure!(ids.len() == batch.len(), "queued {} rows of {}", ids.len(), batch.len());
        let counts = ids.first().map(|r| (r.rows, r.attempts, r.bundles, r.amounts)).unwrap_or_default();
        anyhow::ensure!(
            counts
                == (
                    batch.len() as i64,
                    slots.len() as i64,
                    bundles.leader_idx.len() as i64,
                    meta.amount_row.len() as i64
                ),
            "wrote (rows, attempts, bundles, amounts) = {counts:?} for {} rows, {} slots, {} bundles, {} amounts",
            batch.len(),
            slots.len(),
            bundles.leader_idx.len(),
            meta.amount_row.len()
        );
        if let Some(tx) = tx {
            tx.commit().await.context("Failed to commit the queued transactions")?;
        }
        ids.into_iter()
            .enumerate()
            .map(|(i, r)| Ok((r.id, u64_of(r.sponsor_nonce)?, signed[place[i].0].0.hash)))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    }

    /// Begins the transaction of a [`Reserve::Locked`] batch: takes the sponsor's next `k`
    /// nonces (the first at least `chain_nonce`) and answers the first. The upsert row-locks the
    /// counter, serialising every allocation for this sponsor until the transaction ends; a
    /// rollback gives the nonces back.
    async fn reserve_locked(
        &self,
        first: &NewTransaction,
        k: u64,
        chain_nonce: u64,
    ) -> anyhow::Result<(Transaction<'static, Postgres>, u64)> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        let base = sqlx::query_scalar!(
            r#"INSERT INTO sponsor_accounts (chain_id, address, next_nonce) VALUES ($1, $2, $3::bigint + $4::bigint)
             ON CONFLICT (chain_id, address) DO UPDATE
                SET next_nonce = GREATEST(sponsor_accounts.next_nonce, $3::bigint) + $4::bigint, updated_at = now()
             RETURNING next_nonce - $4::bigint AS "base!""#,
            i64_of(first.chain_id)?,
            first.sponsor.as_slice(),
            i64_of(chain_nonce)?,
            i64_of(k)?,
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to take the sponsor's next nonces")?;
        Ok((tx, u64_of(base)?))
    }

    /// Moves row `id`, whose nonce another transaction used, to the sponsor's next nonce with a
    /// freshly signed transaction (status pending again). Fenced by `lease`.
    pub async fn requeue_transaction(
        &self,
        lease: &Lease,
        id: i64,
        chain_nonce: u64,
        sign: impl FnOnce(u64) -> anyhow::Result<SignedAttempt>,
    ) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
        fence(&mut tx, lease, true).await?;
        let nonce = take_next_nonce(&mut tx, lease.chain_id, lease.sponsor, chain_nonce).await?;
        let signed = sign(nonce)?;
        sqlx::query!(
            "UPDATE relay_transactions SET sponsor_nonce = $2, status = 'pending', last_sent_at = NULL,
                block_number = NULL, block_hash = NULL, updated_at = now()
             WHERE id = $1 OR (bundle_id = $1 AND status IN ('pending', 'submitted'))",
            id,
            i64_of(nonce)?,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to move the transaction to a new nonce")?;
        insert_attempt(&mut tx, id, nonce, &signed).await?;
        tx.commit().await.context("Failed to commit the requeue")?;
        Ok(nonce)
    }

    /// Records a new signed transaction (fee bump or cancellation) at the row's nonce. Fenced by
    /// `lease`.
    pub async fn add_attempt(&self, lease: &Lease, id: i64, nonce: u64, a: &SignedAttempt) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(lease).await?;
        insert_attempt(&mut tx, id, nonce, a).await?;
        tx.commit().await.context("Failed to commit the attempt")?;
        Ok(())
    }

    /// Raises the sponsor's counter to the chain's count (the key was used elsewhere). Only while
    /// `lease` is held (one statement: the lease is checked on the row it updates).
    pub async fn raise_sponsor_nonce(&self, lease: &Lease, chain_nonce: u64) -> anyhow::Result<bool> {
        let done = sqlx::query!(
            "UPDATE sponsor_accounts SET next_nonce = $3, updated_at = now()
             WHERE chain_id = $1 AND address = $2 AND next_nonce < $3
               AND lease_owner = $4 AND lease_until > clock_timestamp()",
            i64_of(lease.chain_id)?,
            lease.sponsor.as_slice(),
            i64_of(chain_nonce)?,
            &lease.owner,
        )
        .execute(&self.pool)
        .await
        .context("Failed to raise the sponsor's nonce")?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates the sponsor's account row (first run) with the chain's count as its next nonce.
    pub async fn ensure_sponsor_account(
        &self,
        chain_id: u64,
        sponsor: Address,
        chain_nonce: u64,
    ) -> anyhow::Result<()> {
        sqlx::query!(
            "INSERT INTO sponsor_accounts (chain_id, address, next_nonce) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            i64_of(chain_id)?,
            sponsor.as_slice(),
            i64_of(chain_nonce)?,
        )
        .execute(&self.pool)
        .await
        .context("Failed to create the sponsor account row")?;
        Ok(())
    }

    /// Takes (or renews) the lease on a sponsor's queue for `ttl_ms`; false if another process
    /// holds it.
    pub async fn acquire_sponsor_lease(
        &self,
        chain_id: u64,
        sponsor: Address,
        owner: &str,
        ttl_ms: u64,
    ) -> anyhow::Result<bool> {
        let row = sqlx::query_scalar!(
            r#"UPDATE sponsor_accounts
             SET lease_owner = $3, lease_until = now() + make_interval(secs => $4::float8 / 1000)
             WHERE chain_id = $1 AND address = $2
               AND (lease_owner = $3 OR lease_until IS NULL OR lease_until < now())
             RETURNING 1 AS "taken!""#,
            i64_of(chain_id)?,
            sponsor.as_slice(),
            owner,
            ttl_ms as f64,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to take the sponsor lease")?;
        Ok(row.is_some())
    }

    /// Gives the lease up (clean shutdown), so another process takes over at once.
    pub async fn release_sponsor_lease(&self, chain_id: u64, sponsor: Address, owner: &str) -> anyhow::Result<()> {
        sqlx::query!(
            "UPDATE sponsor_accounts SET lease_owner = NULL, lease_until = NULL
             WHERE chain_id = $1 AND address = $2 AND lease_owner = $3",
            i64_of(chain_id)?,
            sponsor.as_slice(),
            owner,
        )
        .execute(&self.pool)
        .await
        .context("Failed to release the sponsor lease")?;
        Ok(())
    }

    /// The sponsor's rows still pending or submitted, by nonce. (Mined rows not yet final are
    /// re-checked apart, see [`Store::unfinal_transactions`].)
    pub async fn open_transactions(&self, chain_id: u64, sponsor: Address) -> anyhow::Result<Vec<QueuedTx>> {
        // Each row joined with its latest attempt; of a bundle only its leader, with what the
        // bundle sends (its other rows follow the leader, see `settle_rows`).
        let rows = sqlx::query_as!(
            QueuedRow,
            r#"SELECT t.id, t.contract, t.signer, t.meta_nonce, t.meta_nonce_type,
                      coalesce(b.deadline, t.deadline, 0) AS "deadline!", t.sponsor_nonce, t.status,
                      coalesce(b.calldata, t.calldata) AS "calldata!",
                      coalesce(b.gas_limit, t.gas_limit, 0) AS "gas_limit!", t.block_number, t.block_hash, t.tx_hash,
                      extract(epoch FROM now() - a.created_at)::float8 AS attempt_age,
                      extract(epoch FROM now() - t.last_sent_at)::float8 AS sent_age,
                      a.tx_hash AS "a_hash!", a.raw_tx AS "a_raw!", a.kind AS "a_kind!",
                      a.max_fee_per_gas AS "a_max_fee!", a.max_priority_fee_per_gas AS "a_prio_fee!",
                      b.size AS "bundle_size?"
               FROM relay_transactions t
               JOIN LATERAL (SELECT * FROM tx_attempts WHERE transaction_id = t.id ORDER BY id DESC LIMIT 1) a ON true
               LEFT JOIN relay_bundles b ON b.leader_id = t.id
               WHERE t.chain_id = $1 AND t.sponsor = $2 AND t.status IN ('pending', 'submitted')
                 AND (t.bundle_id IS NULL OR t.bundle_id = t.id)
               ORDER BY t.sponsor_nonce"#,
            i64_of(chain_id)?,
            sponsor.as_slice(),
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read the sponsor's queue")?;
        rows.into_iter().map(queued_from).collect()
    }

    /// The rows of the bundle led by row `leader`, by position (the leader first).
    pub async fn bundle_rows(&self, leader: i64) -> anyhow::Result<Vec<BundleRow>> {
        let rows = sqlx::query!(
            r#"SELECT id, bundle_index AS "bundle_index!", contract, signer, meta_nonce, meta_nonce_type, calldata,
                      coalesce(gas_limit, 0) AS "gas_limit!", status = 'replaced' AS "replaced!"
               FROM relay_transactions WHERE bundle_id = $1 ORDER BY bundle_index"#,
            leader,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read the bundle's rows")?;
        rows.into_iter()
            .map(|r| {
                Ok(BundleRow {
                    id: r.id,
                    index: u64_of(r.bundle_index as i64)?,
                    contract: address(&r.contract).context("bad contract")?,
                    signer: address(&r.signer).context("bad signer")?,
                    meta_nonce: u64_of(r.meta_nonce)?,
                    meta_nonce_type: crate::chain::traits::NonceType::from_i16(r.meta_nonce_type)
                        .unwrap_or(crate::chain::traits::NonceType::Account),
                    calldata: r.calldata.into(),
                    gas_limit: u64_of(r.gas_limit)?,
                    settled: r.replaced,
                })
            })
            .collect()
    }

    /// Every transaction hash ever signed for row `id`, newest first, with its kind.
    pub async fn attempt_hashes(&self, id: i64) -> anyhow::Result<Vec<(B256, AttemptKind)>> {
        let rows = sqlx::query!("SELECT tx_hash, kind FROM tx_attempts WHERE transaction_id = $1 ORDER BY id DESC", id)
            .fetch_all(&self.pool)
            .await
            .context("Failed to read the transaction's hashes")?;
        rows.iter()
            .map(|r| {
                let kind = if r.kind == "cancel" { AttemptKind::Cancel } else { AttemptKind::Call };
                Ok((bytes32(&r.tx_hash)?, kind))
            })
            .collect()
    }

    /// The node accepted the latest transaction of each of rows `ids`: one statement for all the
    /// rows a worker's pass sent, fenced by `lease` in the statement itself (the share lock of
    /// the sponsor's row where the lease is still held gates the update; see
    /// [`super::settle::settle_mined_in`]).
    pub async fn mark_submitted(&self, lease: &Lease, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let held = sqlx::query_scalar!(
            r#"WITH held AS MATERIALIZED (
                   SELECT 1 FROM sponsor_accounts
                   WHERE chain_id = $2 AND address = $3 AND lease_owner = $4 AND lease_until > clock_timestamp()
                   FOR SHARE),
               sent AS (
                   UPDATE relay_transactions
                   SET status = CASE WHEN status = 'pending' THEN 'submitted' ELSE status END,
                       last_sent_at = now(), last_error = NULL, updated_at = now()
                   WHERE (id = ANY($1) OR bundle_id = ANY($1)) AND EXISTS (SELECT 1 FROM held)
                   RETURNING 1)
               SELECT EXISTS (SELECT 1 FROM held) AS "held!""#,
            ids,
            i64_of(lease.chain_id)?,
            lease.sponsor.as_slice(),
            &lease.owner,
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to mark the transaction submitted")?;
        if !held {
            return Err(LeaseLost(lease.sponsor).into());
        }
        Ok(())
    }

    /// Remembers why the last broadcast failed (shown by `GET /transactions/{id}`). Fenced by
    /// `lease`.
    pub async fn note_error(&self, lease: &Lease, id: i64, error: &str) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(lease).await?;
        sqlx::query!(
            "UPDATE relay_transactions SET last_error = $2, updated_at = now() WHERE id = $1 OR bundle_id = $1",
            id,
            error
        )
        .execute(&mut *tx)
        .await
        .context("Failed to note the error")?;
        tx.commit().await.context("Failed to commit")?;
        Ok(())
    }

    /// Records how row `id` ended and finishes its signed call's meta nonce as `nonce_status`,
    /// in one transaction fenced by `lease`.
    pub async fn settle_transaction(
        &self,
        lease: &Lease,
        id: i64,
        outcome: &Outcome,
        nonce: (super::NonceScope, u64, super::NonceStatus),
    ) -> anyhow::Result<()> {
        let mut tx = self.begin_fenced(lease).await?;
        settle_in(&mut tx, id, outcome, nonce).await?;
        tx.commit().await.context("Failed to commit the outcome")?;
        Ok(())
    }

    /// Records how each row of a bundle ended, all in one transaction fenced by `lease`: `mined`
    /// as [`Store::settle_mined`] would, each of `others` as [`Store::settle_transaction`] would.
    /// The leader is among them, so a crash part-way leaves the whole bundle open.
    pub async fn settle_rows(
        &self,
        lease: &Lease,
        mined: &[super::MinedRow],
        others: &[(i64, Outcome, (super::NonceScope, u64, super::NonceStatus))],
    ) -> anyhow::Result<()> {
        // The settle statement of the mined rows takes the fence itself, before anything is
        // written; without mined rows the fence is a statement of its own.
        let mut tx = if mined.is_empty() {
            self.begin_fenced(lease).await?
        } else {
            let mut tx = self.pool.begin().await.context("Failed to begin a transaction")?;
            super::settle::settle_mined_in(&mut tx, lease, mined).await?;
            tx
        };
        for (id, outcome, nonce) in others {
            settle_in(&mut tx, *id, outcome, *nonce).await?;
        }
        tx.commit().await.context("Failed to commit the bundle's outcomes")?;
        Ok(())
    }

    /// Up to `limit` of the sponsor's mined rows not yet final (status `mined`), lowest block
    /// first: what the pipeline re-checks against the chain until they are at its finality depth.
    pub async fn unfinal_transactions(
        &self,
        chain_id: u64,
        sponsor: Address,
        limit: i64,
    ) -> anyhow::Result<Vec<UnfinalTx>> {
        let rows = sqlx::query!(
            r#"SELECT id, block_number AS "block_number!", block_hash AS "block_hash!" FROM relay_transactions
             WHERE chain_id = $1 AND sponsor = $2 AND status = 'mined'
               AND block_number IS NOT NULL AND block_hash IS NOT NULL
             ORDER BY block_number, id LIMIT $3"#,
            i64_of(chain_id)?,
            sponsor.as_slice(),
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read the sponsor's mined transactions")?;
        rows.iter()
            .map(|r| {
                Ok(UnfinalTx { id: r.id, block_number: u64_of(r.block_number)?, block_hash: bytes32(&r.block_hash)? })
            })
            .collect()
    }

    /// Mined rows whose block is at the chain's finality depth become `confirmed` (final: never
    /// re-checked again), each only if it is still recorded in the block that was checked.
    /// Answers how many rows moved.
    /// Fenced by `lease`.
    pub async fn finalize_transactions(&self, lease: &Lease, rows: &[(i64, B256)]) -> anyhow::Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_fenced(lease).await?;
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let hashes: Vec<Vec<u8>> = rows.iter().map(|(_, h)| h.to_vec()).collect();
        let done = sqlx::query!(
            "UPDATE relay_transactions t SET status = 'confirmed', updated_at = now()
             FROM UNNEST($1::bigint[], $2::bytea[]) AS f(id, block_hash)
             WHERE t.id = f.id AND t.status = 'mined' AND t.block_hash = f.block_hash",
            &ids,
            &hashes,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to mark transactions final")?;
        tx.commit().await.context("Failed to commit")?;
        Ok(done.rows_affected())
    }

    /// A mined row's block `block_hash` left the canonical chain before it was final: the row goes
    /// back to `submitted` (its transaction is looked up again, and re-sent if the node forgot
    /// it) and its bySig nonce from `mined` back to in flight (`submitted`), in one database
    /// transaction; the trigger writes `transaction.reorged`. Answers whether the row moved
    /// (false: it was settled otherwise meanwhile, or is recorded in another block). Fenced by
    /// `lease`.
    pub async fn unmine(&self, lease: &Lease, id: i64, block_hash: B256) -> anyhow::Result<bool> {
        let mut tx = self.begin_fenced(lease).await?;
        let row = sqlx::query!(
            "UPDATE relay_transactions SET status = 'submitted', gas_used = NULL, block_number = NULL,
                block_hash = NULL, failure = NULL, revert_reason = NULL, mined_at = NULL, last_sent_at = NULL,
                updated_at = now()
             WHERE id = $1 AND status = 'mined' AND block_hash = $2
             RETURNING chain_id, contract, signer, meta_nonce, meta_nonce_type",
            id,
            block_hash.as_slice(),
        )
        .fetch_optional(&mut *tx)
        .await
        .context("Failed to reopen the transaction")?;
        let Some(row) = row else { return Ok(false) };
        sqlx::query!(
            "UPDATE meta_nonces SET status = 'submitted', updated_at = now()
             WHERE chain_id = $1 AND contract = $2 AND signer = $3 AND nonce_type = $5 AND nonce = $4
               AND status = 'mined'",
            row.chain_id,
            row.contract,
            row.signer,
            row.meta_nonce,
            row.meta_nonce_type,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to put the nonce back in flight")?;
        tx.commit().await.context("Failed to commit the reopened transaction")?;
        Ok(true)
    }

    /// Each sponsor's transactions not yet mined (pending or submitted).
    pub async fn open_counts(
        &self,
        chain_id: u64,
        sponsors: &[Address],
    ) -> anyhow::Result<std::collections::HashMap<Address, u64>> {
        let list: Vec<Vec<u8>> = sponsors.iter().map(|a| a.to_vec()).collect();
        let rows = sqlx::query!(
            r#"SELECT sponsor, count(*) AS "count!" FROM relay_transactions
             WHERE chain_id = $1 AND sponsor = ANY($2) AND status IN ('pending', 'submitted') GROUP BY sponsor"#,
            i64_of(chain_id)?,
            &list,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to count the sponsors' open transactions")?;
        rows.into_iter().map(|r| Ok((address(&r.sponsor)?, u64_of(r.count)?))).collect()
    }

    /// Which of rows `ids` are settled (no longer pending or submitted).
    pub async fn settled_among(&self, ids: &[i64]) -> anyhow::Result<Vec<i64>> {
        let rows = sqlx::query_scalar!(
            "SELECT id FROM relay_transactions WHERE id = ANY($1) AND status NOT IN ('pending', 'submitted')",
            ids,
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read which transactions are settled")?;
        Ok(rows)
    }

    /// Status of row `id` (for waiters).
    pub async fn transaction_status(&self, id: i64) -> anyhow::Result<Option<TxStatus>> {
        let status = sqlx::query_scalar!("SELECT status FROM relay_transactions WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await
            .context("Failed to read the transaction status")?;
        status.map(|s| TxStatus::parse(&s)).transpose()
    }
}

/// A relayed transaction as `GET /api/v1/transactions/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub id: i64,
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    /// The raw `status` column (`reverted` only on rows older than migration 0003).
    pub status: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub failure: Option<String>,
    pub revert_reason: Option<String>,
    pub last_error: Option<String>,
    /// Every hash signed for it, oldest first.
    pub hashes: Vec<B256>,
}

impl Store {
    /// The transaction `id`, if the key `api_key_id` relayed it (keys never see each other's).
    pub async fn get_transaction(&self, id: i64, api_key_id: i64) -> anyhow::Result<Option<TransactionRecord>> {
        let Some(mut record) = self.transaction_outcome(id, api_key_id).await? else { return Ok(None) };
        record.hashes = sqlx::query_scalar!(
            // A bundle's rows show its transactions, signed on its leader's row.
            "SELECT tx_hash FROM tx_attempts
             WHERE transaction_id = (SELECT coalesce(bundle_id, id) FROM relay_transactions WHERE id = $1)
             ORDER BY id",
            id
        )
        .fetch_all(&self.pool)
        .await
        .context("Failed to read the transaction's hashes")?
        .iter()
        .map(|h| bytes32(h))
        .collect::<anyhow::Result<_>>()?;
        Ok(Some(record))
    }

    /// [`Store::get_transaction`] in one statement, without the row's `hashes` (left empty): what
    /// a synchronous execute answers with once the row is settled.
    pub async fn transaction_outcome(&self, id: i64, api_key_id: i64) -> anyhow::Result<Option<TransactionRecord>> {
        let row = sqlx::query!(
            "SELECT id, chain_id, contract, signer, meta_nonce, sponsor, sponsor_nonce, tx_hash, status, gas_used,
                    block_number, failure, revert_reason, last_error
             FROM relay_transactions WHERE id = $1 AND api_key_id = $2",
            id,
            api_key_id,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the transaction")?;
        let Some(r) = row else { return Ok(None) };
        TxStatus::parse(&r.status)?;
        Ok(Some(TransactionRecord {
            id: r.id,
            chain_id: u64_of(r.chain_id)?,
            contract: address(&r.contract).context("bad contract")?,
            signer: address(&r.signer).context("bad signer")?,
            meta_nonce: u64_of(r.meta_nonce)?,
            sponsor: address(&r.sponsor).context("bad sponsor")?,
            sponsor_nonce: u64_of(r.sponsor_nonce)?,
            tx_hash: bytes32(&r.tx_hash)?,
            status: r.status,
            gas_used: opt_u64(r.gas_used)?,
            block_number: opt_u64(r.block_number)?,
            failure: r.failure,
            revert_reason: r.revert_reason,
            last_error: r.last_error,
            hashes: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod status_tests {
    use super::TxStatus;

    const ALL: [TxStatus; 7] = [
        TxStatus::Pending,
        TxStatus::Submitted,
        TxStatus::Mined,
        TxStatus::Confirmed,
        TxStatus::Failed,
        TxStatus::Replaced,
        TxStatus::Expired,
    ];

    #[test]
    fn every_status_round_trips_through_its_column_value() {
        for s in ALL {
            assert_eq!(TxStatus::parse(s.as_str()).unwrap(), s);
        }
        // Rows older than migration 0003 say `reverted`: a failure.
        assert_eq!(TxStatus::parse("reverted").unwrap(), TxStatus::Failed);
    }

    #[test]
    fn an_unknown_status_is_an_error_not_a_known_status() {
        for bad in ["", "Failed", "mined ", "cancelled", "unknown", "built"] {
            let got = TxStatus::parse(bad);
            assert!(got.is_err(), "{bad:?} decoded as {got:?}");
        }
    }
}
