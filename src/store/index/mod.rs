//! The index's tables (`idx_*`): the writer's batches and rollbacks, and the reads the API and
//! the keeper serve from them.
//!
//! - [`checkpoint`]: the checkpoint row and the recent block hashes kept for reorg detection.
//! - [`events`]: `idx_events`, written with COPY (fast path) or a deduplicating insert.
//! - [`derived`]: loading and writing the derived rows (accounts, streams, nonces, projects, fees).
//! - [`undo`]: the undo journal of the blocks still inside the reorg window.
//! - [`commit`]: one database transaction per batch holding its events, the derived rows they
//!   change, the undo journal, the block hashes and the checkpoint.
//! - [`rollback`]: undoing orphaned blocks after a reorg.
//! - [`lock`]: the advisory lock that makes one process the writer of a deployment's index.
//! - [`read`]: the single-statement reads behind the read model.

pub mod checkpoint;
pub mod commit;
pub mod derived;
pub mod events;
pub mod lock;
pub mod model;
pub mod read;
pub mod rollback;
pub mod undo;

use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::{Address, B256, I256, U256};
use anyhow::{Context, ensure};
use sqlx::{Postgres, Transaction};

pub use checkpoint::{Checkpoint, init_checkpoint, load_checkpoint, stored_blocks, touch_head};
pub use commit::{Batch, CommitError, CommitStats, commit};
pub use events::{EVENT_COLUMNS, copy_events, copy_text};
pub use rollback::rollback;

/// The channel index commits and rollbacks `NOTIFY` (in their transaction), payload
/// `chain_id:contract:block`.
pub const NOTIFY_CHANNEL: &str = "streampay_index";

/// Index commits and rollbacks made by this process. Readers' caches count them in their
/// generation, so a read after a commit made here never sees an older cached answer, whatever
/// the NOTIFY's delivery time.
static LOCAL_COMMITS: AtomicU64 = AtomicU64::new(0);

/// Called after every committed index change (see [`local_commits`]).
fn note_local_commit() {
    LOCAL_COMMITS.fetch_add(1, Ordering::AcqRel);
}

/// How many index commits and rollbacks this process has made.
pub fn local_commits() -> u64 {
    LOCAL_COMMITS.load(Ordering::Acquire)
}

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

/// Tells readers' caches (delivered at commit) that the index moved.
pub(super) async fn notify(tx: &mut Transaction<'_, Postgres>, scope: Scope, block: u64) -> anyhow::Result<()> {
    // pg_notify returns void, which has no Rust type: called in FROM, it yields one row of no
    // columns.
    sqlx::query!(
        "SELECT FROM pg_notify($1, $2)",
        NOTIFY_CHANNEL,
        format!("{}:{}:{block}", scope.chain_id, scope.contract)
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `kind` column of `idx_events`: which StreamPay event a row holds. The numbers are stored
/// data; never renumber a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum EventKind {
    Transfer = 1,
    StreamCreated = 2,
    StreamRevoked = 3,
    Liquidated = 4,
    ProjectIdClaimed = 5,
    DefaultSettingsSet = 6,
    UserSettingsSet = 7,
    NonceUsed = 8,
    SponsoredCallCharged = 9,
}

impl EventKind {
    pub const ALL: [Self; 9] = [
        Self::Transfer,
        Self::StreamCreated,
        Self::StreamRevoked,
        Self::Liquidated,
        Self::ProjectIdClaimed,
        Self::DefaultSettingsSet,
        Self::UserSettingsSet,
        Self::NonceUsed,
        Self::SponsoredCallCharged,
    ];

    /// The stored number.
    pub fn code(self) -> i16 {
        self as i16
    }
}

impl TryFrom<i16> for EventKind {
    type Error = anyhow::Error;

    fn try_from(code: i16) -> anyhow::Result<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code).ok_or_else(|| anyhow::anyhow!("unknown event kind {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn event_kinds_round_trip_and_unknown_codes_are_errors() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::try_from(k.code()).unwrap(), k);
        }
        assert_eq!(EventKind::Transfer.code(), 1);
        assert_eq!(EventKind::SponsoredCallCharged.code(), 9);
        for bad in [0, 10, -1, i16::MAX] {
            assert!(EventKind::try_from(bad).is_err(), "{bad} decoded");
        }
    }
}
