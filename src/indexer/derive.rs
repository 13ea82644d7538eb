//! Derived state: StreamPay's storage re-computed from its events, exactly as the contract
//! computes it, so the index answers `balanceOf`, `accountInfo`, `allSubscriptions` and
//! `bySigAccountNonces` to the wei.
//!
//! The rules mirror `StreamPay.sol`:
//! - a `Transfer` credits/debits stored balances without settling (mint from 0, burn to 0);
//! - a rate change settles each account it touches at the block's timestamp:
//!   `balance += (income − outgoing) × (ts − updated); updated = ts` (only the subscriber is
//!   settled unconditionally; author and project owner only when their share is non-zero);
//! - `StreamCreated`/`StreamRevoked` carry the exact rates, the fee (`outgoing − income`) going
//!   to the project owner from `ProjectIdClaimed`;
//! - the subscriber's stream list keeps the contract's order: append on a new stream, replace in
//!   place on a re-subscribe (a `StreamRevoked` immediately followed in the same transaction by a
//!   `StreamCreated` of the same pair), swap-and-pop on an unsubscribe or liquidation.
//!
//! The one order the events cannot tell apart: an `unsubscribe(a)` immediately followed by
//! `subscribe(a)` inside one `multicall` is logged exactly like a re-subscribe; the index then
//! keeps the stream at its old position while the contract moved it to the end. Balances, rates
//! and the set of streams are unaffected.
//!
//! [`StateCache`] holds the rows a batch touches (loaded by the writer), applies events to them,
//! and records for each key and block the value before that block's first change (the undo
//! journal a reorg rollback restores).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::events::{Event, IndexedEvent, Rates};
use crate::store::index::model::Derivation;
pub use crate::store::index::model::{AccountState, Key, ProjectState, StreamState, UndoEntry, Value};
use alloy::primitives::{Address, I256, U256};
use anyhow::{Context, bail};

impl AccountState {
    /// Live balance at `timestamp` (`signedBalanceOf` at a block with that timestamp).
    pub fn live_balance(&self, timestamp: u64) -> I256 {
        if self.income_rate.is_zero() && self.outgoing_rate.is_zero() {
            return self.balance;
        }
        let elapsed = I256::try_from(timestamp.saturating_sub(self.updated)).unwrap_or(I256::ZERO);
        let net = I256::from_raw(self.income_rate) - I256::from_raw(self.outgoing_rate);
        self.balance + net * elapsed
    }

    fn settle(&mut self, timestamp: u64) {
        if self.updated != timestamp {
            self.balance = self.live_balance(timestamp);
            self.updated = timestamp;
        }
    }
}

impl StreamState {
    pub fn encoded(&self) -> U256 {
        Rates { income: self.income_rate, outgoing: self.outgoing_rate, project_id: U256::from(self.project_id) }
            .encode()
    }
}

fn project_id(v: U256) -> anyhow::Result<u64> {
    u64::try_from(v).context("project id out of range")
}

/// The rows one batch reads and writes.
#[derive(Debug, Default)]
pub struct StateCache {
    values: HashMap<Key, Option<Value>>,
    dirty: BTreeSet<Key>,
    journal: Vec<UndoEntry>,
    journaled: HashSet<(u64, Key)>,
    /// Blocks at or above this get undo entries; blocks below are final.
    journal_from: u64,
    /// Journal once per key for the whole batch (tagged `journal_from`) instead of per block.
    per_batch: bool,
}

impl StateCache {
    /// A cache that journals changes made by blocks `>= journal_from` (`u64::MAX`: none).
    pub fn new(journal_from: u64) -> Self {
        Self { journal_from, ..Default::default() }
    }

    /// A cache whose undo entries hold, per key, the value before block `from` (the start of
    /// the batch): rolling back into the batch then means rolling back the whole batch.
    pub fn per_batch(from: u64) -> Self {
        Self { journal_from: from, per_batch: true, ..Default::default() }
    }

    /// Keys the events need that can be named without reading state. Project owners of
    /// fee-bearing streams come second, from [`StateCache::owner_keys`].
    pub fn event_keys(events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>> {
        let mut keys = BTreeSet::new();
        for ev in events {
            match ev.event {
                Event::Transfer { from, to, .. } => {
                    if !from.is_zero() {
                        keys.insert(Key::Account(from));
                    }
                    if !to.is_zero() {
                        keys.insert(Key::Account(to));
                    }
                }
                Event::StreamCreated { user, author, encoded } | Event::StreamRevoked { user, author, encoded } => {
                    keys.insert(Key::Account(user));
                    keys.insert(Key::Account(author));
                    keys.insert(Key::Streams(user));
                    let r = Rates::decode(encoded);
                    if r.outgoing != r.income {
                        keys.insert(Key::Project(project_id(r.project_id)?));
                    }
                }
                Event::Liquidated { account, .. } => {
                    keys.insert(Key::Account(account));
                }
                Event::ProjectIdClaimed { project_id: p, .. } | Event::DefaultSettingsSet { project_id: p, .. } => {
                    keys.insert(Key::Project(project_id(p)?));
                }
                Event::UserSettingsSet { project_id: p, user, .. } => {
                    keys.insert(Key::UserFee { project_id: project_id(p)?, author: user });
                }
                Event::NonceUsed { signer, nonce_type, selector, nonce } => match nonce_type {
                    0 => {
                        keys.insert(Key::Nonce { signer, nonce_type: 0, selector: [0; 4] });
                    }
                    1 => {
                        keys.insert(Key::Nonce { signer, nonce_type: 1, selector });
                    }
                    _ => {
                        keys.insert(Key::UniqueNonce { signer, nonce });
                    }
                },
                Event::SponsoredCallCharged { .. } => {}
            }
        }
        Ok(keys)
    }

    /// Accounts of the project owners that fee-bearing streams pay, once projects are loaded.
    pub fn owner_keys(&self, events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>> {
        let mut claimed: HashMap<u64, Address> = HashMap::new();
        let mut keys = BTreeSet::new();
        for ev in events {
            match ev.event {
                Event::ProjectIdClaimed { project_id: p, owner } => {
                    claimed.insert(project_id(p)?, owner);
                }
                Event::StreamCreated { encoded, .. } | Event::StreamRevoked { encoded, .. } => {
                    let r = Rates::decode(encoded);
                    if r.outgoing != r.income {
                        let p = project_id(r.project_id)?;
                        let owner = match claimed.get(&p) {
                            Some(o) => *o,
                            None => self.project(p)?.owner,
                        };
                        keys.insert(Key::Account(owner));
                    }
                }
                _ => {}
            }
        }
        Ok(keys)
    }

    /// Records the stored value of `key` (`None`: no row).
    pub fn insert_loaded(&mut self, key: Key, value: Option<Value>) {
        self.values.insert(key, value);
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.values.contains_key(key)
    }

    fn get(&self, key: &Key) -> anyhow::Result<&Option<Value>> {
        self.values.get(key).with_context(|| format!("derived state for {key:?} was not loaded"))
    }

    fn project(&self, id: u64) -> anyhow::Result<ProjectState> {
        match self.get(&Key::Project(id))? {
            Some(Value::Project(p)) => Ok(p.clone()),
            Some(other) => bail!("project {id} holds {other:?}"),
            None => bail!("stream fee for project {id}, which was never claimed"),
        }
    }

    /// Sets `key` to `value` during block `block`, journaling the previous value.
    fn put(&mut self, block: u64, key: Key, value: Option<Value>) -> anyhow::Result<()> {
        let prev = self.get(&key)?.clone();
        let tag = if self.per_batch { self.journal_from } else { block };
        if block >= self.journal_from && self.journaled.insert((tag, key.clone())) {
            self.journal.push(UndoEntry { block: tag, key: key.clone(), prev });
        }
        self.dirty.insert(key.clone());
        self.values.insert(key, value);
        Ok(())
    }

    fn account(&self, a: Address) -> anyhow::Result<AccountState> {
        match self.get(&Key::Account(a))? {
            Some(Value::Account(s)) => Ok(s.clone()),
            None => Ok(AccountState::default()),
            Some(other) => bail!("account {a} holds {other:?}"),
        }
    }

    fn update_account(&mut self, block: u64, a: Address, f: impl FnOnce(&mut AccountState)) -> anyhow::Result<()> {
        let mut s = self.account(a)?;
        f(&mut s);
        self.put(block, Key::Account(a), Some(Value::Account(s)))
    }

    fn streams(&self, user: Address) -> anyhow::Result<Vec<StreamState>> {
        match self.get(&Key::Streams(user))? {
            Some(Value::Streams(s)) => Ok(s.clone()),
            None => Ok(Vec::new()),
            Some(other) => bail!("streams of {user} hold {other:?}"),
        }
    }

    fn set_streams(&mut self, block: u64, user: Address, list: Vec<StreamState>) -> anyhow::Result<()> {
        let value = if list.is_empty() { None } else { Some(Value::Streams(list)) };
        self.put(block, Key::Streams(user), value)
    }

    /// Applies events in chain order.
    pub fn apply(&mut self, events: &[IndexedEvent]) -> anyhow::Result<()> {
        for (i, ev) in events.iter().enumerate() {
            let (b, ts) = (ev.block_number, ev.block_timestamp);
            match ev.event {
                Event::Transfer { from, to, value } => {
                    let v = I256::try_from(value).context("transfer value out of range")?;
                    if !from.is_zero() {
                        self.update_account(b, from, |a| a.balance -= v)?;
                    }
                    if !to.is_zero() {
                        self.update_account(b, to, |a| a.balance += v)?;
                    }
                }
                Event::StreamCreated { user, author, encoded } => {
                    let r = Rates::decode(encoded);
                    self.update_account(b, user, |a| {
                        a.settle(ts);
                        a.outgoing_rate += r.outgoing;
                    })?;
                    self.add_income(b, ts, author, r.income, true)?;
                    if !r.fee().is_zero() {
                        let owner = self.project(project_id(r.project_id)?)?.owner;
                        self.add_income(b, ts, owner, r.fee(), true)?;
                    }
                    let stream = StreamState {
                        author,
                        income_rate: r.income,
                        outgoing_rate: r.outgoing,
                        project_id: project_id(r.project_id)?,
                        since_block: b,
                        since_timestamp: ts,
                    };
                    let mut list = self.streams(user)?;
                    match list.iter_mut().find(|s| s.author == author) {
                        Some(s) => *s = stream,
                        None => list.push(stream),
                    }
                    self.set_streams(b, user, list)?;
                }
                Event::StreamRevoked { user, author, encoded } => {
                    let r = Rates::decode(encoded);
                    self.update_account(b, user, |a| {
                        a.settle(ts);
                        a.outgoing_rate -= r.outgoing;
                    })?;
                    self.add_income(b, ts, author, r.income, false)?;
                    if !r.fee().is_zero() {
                        let owner = self.project(project_id(r.project_id)?)?.owner;
                        self.add_income(b, ts, owner, r.fee(), false)?;
                    }
                    let replaced = events.get(i + 1).is_some_and(|next| {
                        next.tx_hash == ev.tx_hash
                            && next.block_hash == ev.block_hash
                            && next.log_index == ev.log_index + 1
                            && matches!(next.event, Event::StreamCreated { user: u, author: a, .. } if u == user && a == author)
                    });
                    if !replaced {
                        let mut list = self.streams(user)?;
                        let pos = list
                            .iter()
                            .position(|s| s.author == author)
                            .with_context(|| format!("StreamRevoked({user}, {author}) without a stream"))?;
                        list.swap_remove(pos);
                        self.set_streams(b, user, list)?;
                    }
                }
                Event::Liquidated { account, .. } => {
                    self.update_account(b, account, |a| a.settle(ts))?;
                }
                Event::ProjectIdClaimed { project_id: p, owner } => {
                    let p = project_id(p)?;
                    let value = ProjectState { owner, default_fee: 0, claimed_block: b };
                    self.put(b, Key::Project(p), Some(Value::Project(value)))?;
                }
                Event::DefaultSettingsSet { project_id: p, fee } => {
                    let p = project_id(p)?;
                    let mut project = self.project(p)?;
                    project.default_fee = fee;
                    self.put(b, Key::Project(p), Some(Value::Project(project)))?;
                }
                Event::UserSettingsSet { project_id: p, user, fee } => {
                    let key = Key::UserFee { project_id: project_id(p)?, author: user };
                    self.put(b, key, Some(Value::UserFee(fee)))?;
                }
                Event::NonceUsed { signer, nonce_type, selector, nonce } => {
                    let key = match nonce_type {
                        0 => Key::Nonce { signer, nonce_type: 0, selector: [0; 4] },
                        1 => Key::Nonce { signer, nonce_type: 1, selector },
                        _ => Key::UniqueNonce { signer, nonce },
                    };
                    let value = if nonce_type > 1 { Value::UniqueNonce } else { Value::Nonce(nonce + U256::from(1u8)) };
                    self.put(b, key, Some(value))?;
                }
                Event::SponsoredCallCharged { .. } => {}
            }
        }
        Ok(())
    }

    /// `_addIncome` / `_removeIncome`: settles and moves the income rate, skipped for a zero rate.
    fn add_income(&mut self, block: u64, ts: u64, account: Address, rate: U256, add: bool) -> anyhow::Result<()> {
        if rate.is_zero() {
            return Ok(());
        }
        self.update_account(block, account, |a| {
            a.settle(ts);
            if add {
                a.income_rate += rate;
            } else {
                a.income_rate -= rate;
            }
        })
    }

    /// The keys changed since the last call and their new values (`None`: delete the row).
    pub fn take_dirty(&mut self) -> Vec<(Key, Option<Value>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let v = self.values.get(&k).cloned().flatten();
                (k, v)
            })
            .collect()
    }

    pub fn take_journal(&mut self) -> Vec<UndoEntry> {
        self.journaled.clear();
        std::mem::take(&mut self.journal)
    }

    /// Current value of `key` (after `apply`), for tests.
    pub fn value(&self, key: &Key) -> Option<&Value> {
        self.values.get(key).and_then(Option::as_ref)
    }
}

impl Derivation for StateCache {
    fn event_keys(&self, events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>> {
        StateCache::event_keys(events)
    }
    fn owner_keys(&self, events: &[IndexedEvent]) -> anyhow::Result<BTreeSet<Key>> {
        StateCache::owner_keys(self, events)
    }
    fn insert_loaded(&mut self, key: Key, value: Option<Value>) {
        StateCache::insert_loaded(self, key, value)
    }
    fn contains(&self, key: &Key) -> bool {
        StateCache::contains(self, key)
    }
    fn apply(&mut self, events: &[IndexedEvent]) -> anyhow::Result<()> {
        StateCache::apply(self, events)
    }
    fn take_dirty(&mut self) -> Vec<(Key, Option<Value>)> {
        StateCache::take_dirty(self)
    }
    fn take_journal(&mut self) -> Vec<UndoEntry> {
        StateCache::take_journal(self)
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::B256;

    use super::*;

    fn ev(block: u64, ts: u64, log_index: u64, tx: u8, event: Event) -> IndexedEvent {
        IndexedEvent {
            block_number: block,
            block_hash: B256::repeat_byte(block as u8),
            block_timestamp: ts,
            tx_hash: B256::repeat_byte(tx),
            tx_index: 0,
            log_index,
            event,
        }
    }

    fn run(events: &[IndexedEvent]) -> StateCache {
        let mut cache = StateCache::new(0);
        let mut keys = StateCache::event_keys(events).unwrap();
        for k in &keys {
            cache.insert_loaded(k.clone(), None);
        }
        // Projects claimed in the same batch are found in the events.
        keys = cache.owner_keys(events).unwrap();
        for k in keys {
            if !cache.contains(&k) {
                cache.insert_loaded(k, None);
            }
        }
        cache.apply(events).unwrap();
        cache
    }

    fn acct(cache: &StateCache, a: Address) -> AccountState {
        match cache.value(&Key::Account(a)) {
            Some(Value::Account(s)) => s.clone(),
            _ => AccountState::default(),
        }
    }

    fn enc(income: u64, outgoing: u64, project: u64) -> U256 {
        Rates { income: U256::from(income), outgoing: U256::from(outgoing), project_id: U256::from(project) }.encode()
    }

    #[test]
    fn streams_settle_at_the_block_time_and_split_the_fee() {
        let (u, a, o) = (Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(3));
        let events = [
            ev(1, 100, 0, 1, Event::Transfer { from: Address::ZERO, to: u, value: U256::from(1_000_000u64) }),
            ev(1, 100, 1, 1, Event::ProjectIdClaimed { project_id: U256::from(1u8), owner: o }),
            ev(2, 110, 0, 2, Event::StreamCreated { user: u, author: a, encoded: enc(90, 100, 1) }),
            ev(3, 150, 0, 3, Event::StreamRevoked { user: u, author: a, encoded: enc(90, 100, 1) }),
        ];
        let c = run(&events);
        assert_eq!(acct(&c, u).balance, I256::try_from(1_000_000 - 40 * 100).unwrap());
        assert_eq!(acct(&c, a).balance, I256::try_from(40 * 90).unwrap());
        assert_eq!(acct(&c, o).balance, I256::try_from(40 * 10).unwrap());
        assert!(acct(&c, u).outgoing_rate.is_zero());
        assert_eq!(acct(&c, a).updated, 150);
        assert_eq!(c.value(&Key::Streams(u)), None);
    }

    #[test]
    fn resubscribe_keeps_the_position_and_unsubscribe_swaps_the_last_in() {
        let u = Address::repeat_byte(1);
        let [a, b, d] = [2u8, 3, 4].map(Address::repeat_byte);
        let events = [
            ev(1, 10, 0, 1, Event::StreamCreated { user: u, author: a, encoded: enc(1, 1, 0) }),
            ev(1, 10, 1, 2, Event::StreamCreated { user: u, author: b, encoded: enc(2, 2, 0) }),
            ev(1, 10, 2, 3, Event::StreamCreated { user: u, author: d, encoded: enc(3, 3, 0) }),
            // re-subscribe to a: Revoked then Created in one transaction
            ev(2, 20, 0, 4, Event::StreamRevoked { user: u, author: a, encoded: enc(1, 1, 0) }),
            ev(2, 20, 1, 4, Event::StreamCreated { user: u, author: a, encoded: enc(5, 5, 0) }),
        ];
        let c = run(&events);
        let Some(Value::Streams(list)) = c.value(&Key::Streams(u)) else { panic!() };
        assert_eq!(list.iter().map(|s| s.author).collect::<Vec<_>>(), vec![a, b, d]);
        assert_eq!(list[0].outgoing_rate, U256::from(5u8));

        let mut events = events.to_vec();
        events.push(ev(3, 30, 0, 5, Event::StreamRevoked { user: u, author: a, encoded: enc(5, 5, 0) }));
        let c = run(&events);
        let Some(Value::Streams(list)) = c.value(&Key::Streams(u)) else { panic!() };
        assert_eq!(list.iter().map(|s| s.author).collect::<Vec<_>>(), vec![d, b]);
    }

    #[test]
    fn journal_holds_the_value_before_each_block() {
        let u = Address::repeat_byte(1);
        let mint =
            |b, v: u64| ev(b, b * 10, 0, b as u8, Event::Transfer { from: Address::ZERO, to: u, value: U256::from(v) });
        let events = [mint(1, 5), mint(1, 6), mint(2, 7)];
        let mut c = StateCache::new(2);
        c.insert_loaded(Key::Account(u), None);
        c.apply(&events).unwrap();
        let j = c.take_journal();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].block, 2);
        let Some(Value::Account(prev)) = &j[0].prev else { panic!() };
        assert_eq!(prev.balance, I256::try_from(11).unwrap());
    }

    #[test]
    fn per_batch_journal_holds_the_value_before_the_batch() {
        let u = Address::repeat_byte(1);
        let mint =
            |b, v: u64| ev(b, b * 10, 0, b as u8, Event::Transfer { from: Address::ZERO, to: u, value: U256::from(v) });
        let mut c = StateCache::per_batch(3);
        c.insert_loaded(Key::Account(u), None);
        c.apply(&[mint(3, 5), mint(4, 6), mint(5, 7)]).unwrap();
        let j = c.take_journal();
        assert_eq!(j, vec![UndoEntry { block: 3, key: Key::Account(u), prev: None }]);
    }

    #[test]
    fn keys_and_values_survive_json() {
        let k = Key::UniqueNonce { signer: Address::repeat_byte(9), nonce: U256::MAX };
        let v = Value::Account(AccountState {
            balance: I256::MIN + I256::ONE,
            income_rate: U256::from(3u8),
            outgoing_rate: U256::ZERO,
            updated: 7,
        });
        assert_eq!(serde_json::from_value::<Key>(serde_json::to_value(&k).unwrap()).unwrap(), k);
        assert_eq!(serde_json::from_value::<Value>(serde_json::to_value(&v).unwrap()).unwrap(), v);
    }
}
