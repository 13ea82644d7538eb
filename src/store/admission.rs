//! What admission (`api::admission`) reads: the signer's and the API key's record, from the
//! relayed transactions themselves and the daily spend ledger their triggers keep (migration
//! 0040), and the advisory locks that make check-then-queue atomic across processes. Every statement is checked at compile time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use alloy::primitives::{Address, B256, U256};
use anyhow::Context;
use sqlx::{Postgres, Transaction};

use super::{Store, decode::u64_of};

/// A signer's and a key's record as admission sees it.
#[derive(Debug, Clone, Default)]
pub struct AdmissionRecord {
    /// Seconds since the same signed call last reverted on chain, if it did.
    pub digest_reverted_secs_ago: Option<u64>,
    /// Reverts on chain within the reputation window.
    pub signer_reverts: u64,
    pub key_reverts: u64,
    /// Seconds since the last call relayed for the signer / the key.
    pub signer_last_secs_ago: Option<u64>,
    pub key_last_secs_ago: Option<u64>,
    /// Spend since UTC midnight, wei: gas used (gas limit while in flight) at the latest
    /// attempt's max fee, an upper bound of what was paid.
    pub signer_spent_wei: U256,
    pub key_spent_wei: U256,
    /// The policy of the sponsor the call would go out from, if one is set (read in the same
    /// statement; checked after admission, see `api::sponsors::enforce_policy`).
    pub sponsor_policy: Option<super::SponsorPolicy>,
}

/// An admitted call's reservation of its worst-case cost, carried by the call to the statement
/// that queues it ([`super::NewTransaction::reservation`]), which deletes it; if the call is not
/// queued, [`Store::release_reservation`]. Until then, or until it expires, it counts against the
/// key's and the signer's budgets in every process. None when no budget applies
/// ([`Store::admission_reputation`]): nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(Option<i64>);

impl Reservation {
    /// Nothing reserved.
    pub const NONE: Reservation = Reservation(None);

    /// The reservation's row, if one was made.
    pub fn id(self) -> Option<i64> {
        self.0
    }
}

/// A reservation left behind by a process that died before queuing stops counting after this.
const RESERVATION_TTL_SECS: f64 = 120.0;

/// In-process queue in front of each database lock, so at most one request per key (and per
/// signer) of this process waits on Postgres, holding a connection.
fn local_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 100_000 {
        map.retain(|_, m| Arc::strong_count(m) > 1);
    }
    map.entry(name.to_string()).or_default().clone()
}

fn i64_of(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).context("value beyond BIGINT")
}

fn secs(v: Option<f64>) -> Option<u64> {
    v.map(|s| s.max(0.0) as u64)
}

/// A policy read beside the record: `has` whether the sponsor has one, then its three limits.
fn policy(
    has: bool,
    max_fee_per_gas: Option<String>,
    daily_budget: Option<String>,
    per_key_daily_budget: Option<String>,
) -> anyhow::Result<Option<super::SponsorPolicy>> {
    use super::history::opt_numeric;
    if !has {
        return Ok(None);
    }
    Ok(Some(super::SponsorPolicy {
        max_fee_per_gas: opt_numeric(max_fee_per_gas)?,
        daily_budget: opt_numeric(daily_budget)?,
        per_key_daily_budget: opt_numeric(per_key_daily_budget)?,
    }))
}

fn wei(s: &str) -> anyhow::Result<U256> {
    // NUMERIC sums of integer products are integers ("123" or "123.000…" never appears, but be strict).
    let int = s.split('.').next().unwrap_or("0");
    int.parse::<U256>().with_context(|| format!("spend {s} is not an integer"))
}

impl Store {
    /// Admission's check-and-reserve, atomic across processes: under the transaction-level
    /// advisory locks of `api_key_id`'s family (the keys rotation made of one, migration 0016:
    /// they share one record and budget) and then `signer` (always in this order), reads the record
    /// (reservations included in the spend, and the policy of `sponsor`), lets `decide` judge
    /// it, and if it agrees reserves `cost` wei, all in one short transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit_and_reserve<E>(
        &self,
        chain_id: u64,
        api_key_id: i64,
        signer: Address,
        sponsor: Address,
        digest: B256,
        window_secs: u64,
        cost: U256,
        decide: impl FnOnce(&AdmissionRecord) -> Result<(), E>,
    ) -> anyhow::Result<Result<Reservation, E>> {
        let keys = [format!("admission:key:{api_key_id}"), format!("admission:signer:{chain_id}:{signer}")];
        let _first = local_lock(&keys[0]).lock_owned().await;
        let _second = local_lock(&keys[1]).lock_owned().await;
        let mut tx = self.pool.begin().await.context("Failed to begin the admission transaction")?;
        // The database lock is the key's family's (migration 0016): a key and the key that
        // replaced it by rotation share one budget and one record. pg_advisory_xact_lock returns
        // void, which has no Rust type: the locks are taken, in this order, in a subquery.
        sqlx::query_scalar!(
            r#"SELECT true AS "locked!" FROM (
                SELECT pg_advisory_xact_lock(hashtextextended(
                           'admission:family:' || (SELECT family_id FROM api_keys WHERE id = $2)::text, 0)),
                       pg_advisory_xact_lock(hashtextextended($1, 0))) AS locks"#,
            &keys[1],
            api_key_id,
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to take the admission locks")?;
        let record = admission_record(&mut tx, chain_id, api_key_id, signer, sponsor, digest, window_secs).await?;
        if let Err(e) = decide(&record) {
            tx.rollback().await.context("Failed to end the admission transaction")?;
            return Ok(Err(e));
        }
        let id: i64 = sqlx::query_scalar!(
            "INSERT INTO admission_reservations (chain_id, api_key_id, signer, wei, expires_at)
             VALUES ($1, $2, $3, $4::text::numeric, now() + make_interval(secs => $5)) RETURNING id",
            i64_of(chain_id)?,
            api_key_id,
            signer.as_slice(),
            cost.to_string(),
            RESERVATION_TTL_SECS,
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to reserve the call's cost")?;
        tx.commit().await.context("Failed to commit the admission")?;
        Ok(Ok(Reservation(Some(id))))
    }

    /// The record admission checks when no daily budget applies to the key or the signer: the
    /// cool-down and reputation figures only (the spend fields are zero), in one read with no
    /// transaction, no lock and nothing reserved ([`Reservation::NONE`]). Without a budget a
    /// reservation counts against nothing, and the spend since midnight, a sum over the day's
    /// rows of the key, is the costliest part of the full record.
    pub async fn admission_reputation(
        &self,
        chain_id: u64,
        api_key_id: i64,
        signer: Address,
        sponsor: Address,
        digest: B256,
        window_secs: u64,
    ) -> anyhow::Result<(AdmissionRecord, Reservation)> {
        let row = sqlx::query!(
            r#"SELECT r.digest_reverted_secs_ago, r.signer_reverts AS "signer_reverts!",
                      r.key_reverts AS "key_reverts!", r.signer_last_secs_ago, r.key_last_secs_ago,
                      p.sponsor IS NOT NULL AS "has_policy!", p.max_fee_per_gas::text AS "policy_max_fee?",
                      p.daily_budget::text AS "policy_daily_budget?",
                      p.per_key_daily_budget::text AS "policy_per_key_daily_budget?"
                 FROM admission_reputation($1, $2, $3, $4, $5) r
                 LEFT JOIN sponsor_policies p ON p.chain_id = $1 AND p.sponsor = $6"#,
            i64_of(chain_id)?,
            api_key_id,
            signer.as_slice(),
            digest.as_slice(),
            window_secs as f64,
            sponsor.as_slice(),
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the admission record")?;
        let record = AdmissionRecord {
            digest_reverted_secs_ago: secs(row.digest_reverted_secs_ago),
            signer_reverts: u64_of(row.signer_reverts)?,
            key_reverts: u64_of(row.key_reverts)?,
            signer_last_secs_ago: secs(row.signer_last_secs_ago),
            key_last_secs_ago: secs(row.key_last_secs_ago),
            signer_spent_wei: U256::ZERO,
            key_spent_wei: U256::ZERO,
            sponsor_policy: policy(
                row.has_policy,
                row.policy_max_fee,
                row.policy_daily_budget,
                row.policy_per_key_daily_budget,
            )?,
        };
        Ok((record, Reservation::NONE))
    }

    /// Folds the spend deltas the triggers of migration 0040 recorded into the daily totals
    /// admission reads (and drops totals older than yesterday); answers how many it folded, 0 if
    /// another replica is folding them right now. Admission's figure is the same before and
    /// after: it reads the totals and the deltas not folded yet.
    pub async fn roll_up_spend(&self) -> anyhow::Result<u64> {
        let folded = sqlx::query_scalar!(r#"SELECT admission_spend_roll_up() AS "folded!""#)
            .fetch_one(&self.pool)
            .await
            .context("Failed to roll the admission spend up")?;
        u64_of(folded)
    }

    /// Deletes the reservations that expired over an hour ago (left by a process that died
    /// between admission and the queue; they stopped counting when they expired). Answers how
    /// many.
    pub async fn sweep_expired_reservations(&self) -> anyhow::Result<u64> {
        let done = sqlx::query!("DELETE FROM admission_reservations WHERE expires_at < now() - interval '1 hour'")
            .execute(&self.pool)
            .await
            .context("Failed to sweep expired admission reservations")?;
        Ok(done.rows_affected())
    }

    /// Drops a reservation of a call that was not queued (a queued call's reservation goes in
    /// the statement that writes its row; expired ones are swept by
    /// [`Store::sweep_expired_reservations`]).
    pub async fn release_reservation(&self, r: Reservation) {
        let Some(id) = r.0 else { return };
        let done = sqlx::query!("DELETE FROM admission_reservations WHERE id = $1", id).execute(&self.pool).await;
        if let Err(e) = done {
            tracing::warn!(error = format!("{e:#}"), "an admission reservation was not released; it expires by itself");
        }
    }
}

/// The record admission checks (see [`AdmissionRecord`]).
async fn admission_record(
    tx: &mut Transaction<'_, Postgres>,
    chain_id: u64,
    api_key_id: i64,
    signer: Address,
    sponsor: Address,
    digest: B256,
    window_secs: u64,
) -> anyhow::Result<AdmissionRecord> {
    let row = sqlx::query!(
        r#"WITH family AS (SELECT api_key_family($2) AS id)
             SELECT
                r.digest_reverted_secs_ago, r.signer_reverts AS "signer_reverts!", r.key_reverts AS "key_reverts!",
                r.signer_last_secs_ago, r.key_last_secs_ago,
                (s.signer_wei + coalesce((SELECT sum(wei) FROM admission_reservations
                                          WHERE chain_id = $1 AND signer = $3 AND expires_at > now()), 0))::text
                   AS "signer_spent_wei!",
                (s.key_wei + coalesce((SELECT sum(wei) FROM admission_reservations
                                       WHERE api_key_id IN (SELECT id FROM family) AND expires_at > now()), 0))::text
                   AS "key_spent_wei!",
                p.sponsor IS NOT NULL AS "has_policy!", p.max_fee_per_gas::text AS "policy_max_fee?",
                p.daily_budget::text AS "policy_daily_budget?",
                p.per_key_daily_budget::text AS "policy_per_key_daily_budget?"
             FROM admission_reputation($1, $2, $3, $4, $5) r CROSS JOIN admission_spend_today($1, $3, $2) s
             LEFT JOIN sponsor_policies p ON p.chain_id = $1 AND p.sponsor = $6"#,
        i64_of(chain_id)?,
        api_key_id,
        signer.as_slice(),
        digest.as_slice(),
        window_secs as f64,
        sponsor.as_slice(),
    )
    .fetch_one(&mut **tx)
    .await
    .context("Failed to read the admission record")?;
    Ok(AdmissionRecord {
        digest_reverted_secs_ago: secs(row.digest_reverted_secs_ago),
        signer_reverts: u64_of(row.signer_reverts)?,
        key_reverts: u64_of(row.key_reverts)?,
        signer_last_secs_ago: secs(row.signer_last_secs_ago),
        key_last_secs_ago: secs(row.key_last_secs_ago),
        signer_spent_wei: wei(&row.signer_spent_wei)?,
        key_spent_wei: wei(&row.key_spent_wei)?,
        sponsor_policy: policy(
            row.has_policy,
            row.policy_max_fee,
            row.policy_daily_budget,
            row.policy_per_key_daily_budget,
        )?,
    })
}
