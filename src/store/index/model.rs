//! The index's plain data: decoded events and their row form, block headers, the derived state's
//! keys and values and the undo journal's entries. The indexer computes them (decoding, deriving,
//! applying events: [`Derivation`]); the store reads and writes them. They live here, below both,
//! so the store names nothing of the indexer (the indexer re-exports them under their old paths).

use std::collections::BTreeSet;

use alloy::primitives::{Address, B256, I256, U256};
use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::EventKind;

/// A decoded StreamPay event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Transfer { from: Address, to: Address, value: U256 },
    StreamCreated { user: Address, author: Address, encoded: U256 },
    StreamRevoked { user: Address, author: Address, encoded: U256 },
    Liquidated { account: Address, liquidator: Address, reward: U256, streams: U256 },
    ProjectIdClaimed { project_id: U256, owner: Address },
    DefaultSettingsSet { project_id: U256, fee: u16 },
    UserSettingsSet { project_id: U256, user: Address, fee: u16 },
    NonceUsed { signer: Address, nonce_type: u8, selector: [u8; 4], nonce: U256 },
    SponsoredCallCharged { signer: Address, relayer: Address, amount: U256 },
}

/// An event with its position in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedEvent {
    pub block_number: u64,
    pub block_hash: B256,
    pub block_timestamp: u64,
    pub tx_hash: B256,
    pub tx_index: u64,
    pub log_index: u64,
    pub event: Event,
}

/// The flat row of an event in `idx_events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub kind: i16,
    pub a1: Option<Address>,
    pub a2: Option<Address>,
    pub v1: Option<U256>,
    pub v2: Option<U256>,
    pub selector: Option<[u8; 4]>,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Transfer { .. } => "Transfer",
            Self::StreamCreated { .. } => "StreamCreated",
            Self::StreamRevoked { .. } => "StreamRevoked",
            Self::Liquidated { .. } => "Liquidated",
            Self::ProjectIdClaimed { .. } => "ProjectIdClaimed",
            Self::DefaultSettingsSet { .. } => "DefaultSettingsSet",
            Self::UserSettingsSet { .. } => "UserSettingsSet",
            Self::NonceUsed { .. } => "NonceUsed",
            Self::SponsoredCallCharged { .. } => "SponsoredCallCharged",
        }
    }

    pub fn columns(&self) -> Columns {
        let c = Columns::default();
        match *self {
            Self::Transfer { from, to, value } => {
                Columns { kind: EventKind::Transfer.code(), a1: Some(from), a2: Some(to), v1: Some(value), ..c }
            }
            Self::StreamCreated { user, author, encoded } => Columns {
                kind: EventKind::StreamCreated.code(),
                a1: Some(user),
                a2: Some(author),
                v1: Some(encoded),
                ..c
            },
            Self::StreamRevoked { user, author, encoded } => Columns {
                kind: EventKind::StreamRevoked.code(),
                a1: Some(user),
                a2: Some(author),
                v1: Some(encoded),
                ..c
            },
            Self::Liquidated { account, liquidator, reward, streams } => Columns {
                kind: EventKind::Liquidated.code(),
                a1: Some(account),
                a2: Some(liquidator),
                v1: Some(reward),
                v2: Some(streams),
                ..c
            },
            Self::ProjectIdClaimed { project_id, owner } => {
                Columns { kind: EventKind::ProjectIdClaimed.code(), a1: Some(owner), v1: Some(project_id), ..c }
            }
            Self::DefaultSettingsSet { project_id, fee } => Columns {
                kind: EventKind::DefaultSettingsSet.code(),
                v1: Some(project_id),
                v2: Some(U256::from(fee)),
                ..c
            },
            Self::UserSettingsSet { project_id, user, fee } => Columns {
                kind: EventKind::UserSettingsSet.code(),
                a1: Some(user),
                v1: Some(project_id),
                v2: Some(U256::from(fee)),
                ..c
            },
            Self::NonceUsed { signer, nonce_type, selector, nonce } => Columns {
                kind: EventKind::NonceUsed.code(),
                a1: Some(signer),
                v1: Some(nonce),
                v2: Some(U256::from(nonce_type)),
                selector: Some(selector),
                ..c
            },
            Self::SponsoredCallCharged { signer, relayer, amount } => Columns {
                kind: EventKind::SponsoredCallCharged.code(),
                a1: Some(signer),
                a2: Some(relayer),
                v1: Some(amount),
                ..c
            },
        }
    }

    /// Inverse of [`Event::columns`].
    pub fn from_columns(c: &Columns) -> anyhow::Result<Self> {
        let a1 = || c.a1.context("missing a1");
        let a2 = || c.a2.context("missing a2");
        let v1 = || c.v1.context("missing v1");
        let v2 = || c.v2.context("missing v2");
        let small = |v: U256| -> anyhow::Result<u16> { u16::try_from(v).context("value out of range") };
        Ok(match EventKind::try_from(c.kind)? {
            EventKind::Transfer => Self::Transfer { from: a1()?, to: a2()?, value: v1()? },
            EventKind::StreamCreated => Self::StreamCreated { user: a1()?, author: a2()?, encoded: v1()? },
            EventKind::StreamRevoked => Self::StreamRevoked { user: a1()?, author: a2()?, encoded: v1()? },
            EventKind::Liquidated => {
                Self::Liquidated { account: a1()?, liquidator: a2()?, reward: v1()?, streams: v2()? }
            }
            EventKind::ProjectIdClaimed => Self::ProjectIdClaimed { project_id: v1()?, owner: a1()? },
            EventKind::DefaultSettingsSet => Self::DefaultSettingsSet { project_id: v1()?, fee: small(v2()?)? },
            EventKind::UserSettingsSet => Self::UserSettingsSet { project_id: v1()?, user: a1()?, fee: small(v2()?)? },
            EventKind::NonceUsed => Self::NonceUsed {
                signer: a1()?,
                nonce_type: u8::try_from(v2()?).context("nonce type out of range")?,
                selector: c.selector.unwrap_or_default(),
                nonce: v1()?,
            },
            EventKind::SponsoredCallCharged => {
                Self::SponsoredCallCharged { signer: a1()?, relayer: a2()?, amount: v1()? }
            }
        })
    }
}

/// What the indexer needs of a block: enough to chain blocks together and to settle streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    pub timestamp: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Stored balance at `updated` (`accountInfo().balance`), 18 decimals.
    pub balance: I256,
    pub income_rate: U256,
    pub outgoing_rate: U256,
    /// Timestamp of the last settlement.
    pub updated: u64,
}

/// One outgoing stream of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub author: Address,
    pub income_rate: U256,
    pub outgoing_rate: U256,
    pub project_id: u64,
    /// Block and timestamp of the `StreamCreated` that set the current rates.
    pub since_block: u64,
    pub since_timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    pub owner: Address,
    pub default_fee: u16,
    pub claimed_block: u64,
}

/// One unit of derived state, the granularity of loads, writes and undo entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    Account(Address),
    /// The whole outgoing stream list of a subscriber, in the contract's order.
    Streams(Address),
    /// Next account (type 0) or selector (type 1) nonce; selector is zero for account nonces.
    Nonce {
        signer: Address,
        nonce_type: u8,
        selector: [u8; 4],
    },
    /// A used unique (type 2) nonce.
    UniqueNonce {
        signer: Address,
        nonce: U256,
    },
    Project(u64),
    UserFee {
        project_id: u64,
        author: Address,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Account(AccountState),
    Streams(Vec<StreamState>),
    Nonce(U256),
    UniqueNonce,
    Project(ProjectState),
    UserFee(u16),
}

/// The value of `key` before block `block` first changed it (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoEntry {
    pub block: u64,
    pub key: Key,
    pub prev: Option<Value>,
}

/// What a batch's commit needs of the derived state: the keys its events touch, the rows loaded
/// for them, the events applied, and the changed rows and undo entries to write. The indexer's
/// `StateCache` implements it; the store only moves its rows.
pub trait Derivation {
    /// The keys `events` read or write.
    fn event_keys(&self, events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>>;
    /// Keys needed once the first load is in (project owners of the loaded streams).
    fn owner_keys(&self, events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>>;
    /// Records the stored value of `key` (`None`: absent).
    fn insert_loaded(&mut self, key: Key, value: Option<Value>);
    fn contains(&self, key: &Key) -> bool;
    fn apply(&mut self, events: &[IndexedEvent]) -> anyhow::Result<()>;
    /// The changed rows (`None`: deleted).
    fn take_dirty(&mut self) -> Vec<(Key, Option<Value>)>;
    fn take_journal(&mut self) -> Vec<UndoEntry>;
}
