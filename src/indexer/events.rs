//! StreamPay's events, decoded from raw logs, and their row form in `idx_events`.
//!
//! Every event maps to the same handful of columns (`kind`, two addresses, two numbers, a
//! selector) so one table holds them all and a COPY stays a flat row; [`Event::from_columns`]
//! inverts the mapping, which lets the derived tables be rebuilt from the stored events alone.

use alloy::{primitives::U256, sol_types::SolEvent};
use anyhow::Context;

use super::source::RawLog;
use crate::chain::StreamPay;
pub use crate::store::index::{
    EventKind,
    model::{Columns, Event, IndexedEvent},
};

/// The three bit fields of `encodedRates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Author's income per second (bits 0–95).
    pub income: U256,
    /// Subscriber's outgoing rate per second (bits 96–191).
    pub outgoing: U256,
    /// Project id (bits 192+).
    pub project_id: U256,
}

impl Rates {
    pub fn decode(encoded: U256) -> Self {
        let mask = (U256::from(1u8) << 96) - U256::from(1u8);
        Self { income: encoded & mask, outgoing: (encoded >> 96) & mask, project_id: encoded >> 192 }
    }

    pub fn encode(&self) -> U256 {
        self.income | (self.outgoing << 96) | (self.project_id << 192)
    }

    /// What streams to the project owner: outgoing − income.
    pub fn fee(&self) -> U256 {
        self.outgoing - self.income
    }
}

impl Event {
    /// Decodes a StreamPay log; `Ok(None)` for a topic this indexer does not track.
    pub fn decode(log: &RawLog) -> anyhow::Result<Option<Self>> {
        use StreamPay as C;
        let Some(topic0) = log.topics.first() else { return Ok(None) };
        let topics = log.topics.iter().copied();
        let data = &log.data;
        let event = match *topic0 {
            C::Transfer::SIGNATURE_HASH => {
                let e = C::Transfer::decode_raw_log(topics, data).context("bad Transfer log")?;
                Self::Transfer { from: e.from, to: e.to, value: e.value }
            }
            C::StreamCreated::SIGNATURE_HASH => {
                let e = C::StreamCreated::decode_raw_log(topics, data).context("bad StreamCreated log")?;
                Self::StreamCreated { user: e.user, author: e.author, encoded: e.encodedRates }
            }
            C::StreamRevoked::SIGNATURE_HASH => {
                let e = C::StreamRevoked::decode_raw_log(topics, data).context("bad StreamRevoked log")?;
                Self::StreamRevoked { user: e.user, author: e.author, encoded: e.encodedRates }
            }
            C::Liquidated::SIGNATURE_HASH => {
                let e = C::Liquidated::decode_raw_log(topics, data).context("bad Liquidated log")?;
                Self::Liquidated {
                    account: e.account,
                    liquidator: e.liquidator,
                    reward: e.reward,
                    streams: e.streamsStopped,
                }
            }
            C::ProjectIdClaimed::SIGNATURE_HASH => {
                let e = C::ProjectIdClaimed::decode_raw_log(topics, data).context("bad ProjectIdClaimed log")?;
                Self::ProjectIdClaimed { project_id: e.projectId, owner: e.owner }
            }
            C::DefaultSettingsSet::SIGNATURE_HASH => {
                let e = C::DefaultSettingsSet::decode_raw_log(topics, data).context("bad DefaultSettingsSet log")?;
                Self::DefaultSettingsSet { project_id: e.projectId, fee: e.projectFee }
            }
            C::UserSettingsSet::SIGNATURE_HASH => {
                let e = C::UserSettingsSet::decode_raw_log(topics, data).context("bad UserSettingsSet log")?;
                Self::UserSettingsSet { project_id: e.projectId, user: e.user, fee: e.projectFee }
            }
            C::NonceUsed::SIGNATURE_HASH => {
                let e = C::NonceUsed::decode_raw_log(topics, data).context("bad NonceUsed log")?;
                Self::NonceUsed { signer: e.signer, nonce_type: e.nonceType, selector: e.selector.0, nonce: e.nonce }
            }
            C::SponsoredCallCharged::SIGNATURE_HASH => {
                let e =
                    C::SponsoredCallCharged::decode_raw_log(topics, data).context("bad SponsoredCallCharged log")?;
                Self::SponsoredCallCharged { signer: e.signer, relayer: e.relayer, amount: e.amount }
            }
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}

/// Decodes the logs of one range, skipping topics the indexer does not track. `timestamp`
/// supplies the block time of logs whose node left `blockTimestamp` out.
pub fn decode_logs(logs: &[RawLog], timestamp: impl Fn(u64) -> Option<u64>) -> anyhow::Result<Vec<IndexedEvent>> {
    let mut out = Vec::with_capacity(logs.len());
    for log in logs {
        let Some(event) = Event::decode(log)? else { continue };
        let block_timestamp = log
            .block_timestamp
            .or_else(|| timestamp(log.block_number))
            .with_context(|| format!("no timestamp for block {}", log.block_number))?;
        out.push(IndexedEvent {
            block_number: log.block_number,
            block_hash: log.block_hash,
            block_timestamp,
            tx_hash: log.tx_hash,
            tx_index: log.tx_index,
            log_index: log.log_index,
            event,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Address;

    use super::*;

    #[test]
    fn rates_round_trip_through_the_encoding() {
        let r = Rates { income: U256::from(900u64), outgoing: U256::from(1000u64), project_id: U256::from(7u64) };
        assert_eq!(Rates::decode(r.encode()), r);
        assert_eq!(r.fee(), U256::from(100u64));
    }

    #[test]
    fn columns_round_trip_for_every_kind() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let v = U256::from(12345u64);
        let all = [
            Event::Transfer { from: a, to: b, value: v },
            Event::StreamCreated { user: a, author: b, encoded: v },
            Event::StreamRevoked { user: a, author: b, encoded: v },
            Event::Liquidated { account: a, liquidator: b, reward: v, streams: U256::from(3u8) },
            Event::ProjectIdClaimed { project_id: v, owner: a },
            Event::DefaultSettingsSet { project_id: v, fee: 2000 },
            Event::UserSettingsSet { project_id: v, user: a, fee: 1 },
            Event::NonceUsed { signer: a, nonce_type: 1, selector: [1, 2, 3, 4], nonce: v },
            Event::SponsoredCallCharged { signer: a, relayer: b, amount: v },
        ];
        for e in all {
            assert_eq!(Event::from_columns(&e.columns()).unwrap(), e);
        }
    }
}
