//! Where logs and block headers come from: the [`LogSource`] trait, so the sync loop can be
//! driven by any provider (or a stub in unit tests), and [`RpcLogSource`], its JSON-RPC
//! implementation over alloy.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use alloy::{
    eips::BlockNumberOrTag,
    primitives::{Address, B256, Bytes},
    providers::{DynProvider, Provider},
    rpc::types::Filter,
};
use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};

pub use crate::store::index::model::BlockHeader;

/// One log as the node returned it, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLog {
    pub block_number: u64,
    pub block_hash: B256,
    /// Filled by nodes that implement the `blockTimestamp` log field (Anvil, recent geth/reth);
    /// otherwise the sync loop fetches the header.
    pub block_timestamp: Option<u64>,
    pub tx_hash: B256,
    pub tx_index: u64,
    pub log_index: u64,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

/// Read access to a chain, as the indexer uses it.
pub trait LogSource: Send + Sync + 'static {
    /// Number of the latest block.
    fn head(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// Header of block `number`, `None` if the chain is shorter.
    fn header(&self, number: u64) -> impl Future<Output = anyhow::Result<Option<BlockHeader>>> + Send;
    /// Logs of `address` in `from..=to`, in chain order. Errors when the provider refuses the
    /// range (too many results, timeout); the caller shrinks the range and retries.
    fn logs(&self, address: Address, from: u64, to: u64) -> impl Future<Output = anyhow::Result<Vec<RawLog>>> + Send;

    /// Logs of `address` in the one block `block`. By default those of its number; a source that
    /// can ask for the block by hash does, so a node that does not have that block yet errors
    /// rather than answering no logs.
    fn logs_at(
        &self,
        address: Address,
        block: BlockHeader,
    ) -> impl Future<Output = anyhow::Result<Vec<RawLog>>> + Send {
        self.logs(address, block.number, block.number)
    }

    /// Resolves when a new block may be there: after `poll` by default; sooner for sources that
    /// are told about new heads (a websocket subscription).
    fn wait_for_block(&self, poll: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(poll)
    }

    /// Headers of `from..=to`, in order; stops early (shorter result) where the chain ends.
    fn headers(&self, from: u64, to: u64) -> impl Future<Output = anyhow::Result<Vec<BlockHeader>>> + Send {
        async move {
            let all: Vec<Option<BlockHeader>> =
                stream::iter(from..=to).map(|n| self.header(n)).buffered(16).try_collect().await?;
            Ok(all.into_iter().map_while(|h| h).collect())
        }
    }
}

/// [`LogSource`] over an alloy provider (HTTP or WebSocket JSON-RPC).
#[derive(Clone)]
pub struct RpcLogSource {
    provider: DynProvider,
    /// New heads pushed by an `eth_subscribe("newHeads")` subscription, or read by the
    /// pipeline's workers ([`RpcLogSource::with_heads`]); `None` until the first.
    heads: Option<tokio::sync::watch::Receiver<Option<BlockHeader>>>,
    /// The newest head [`LogSource::head`] read (0: none yet).
    last_head: Arc<AtomicU64>,
    /// The newest told head [`LogSource::wait_for_block`] did not wait for.
    skipped_for: Arc<AtomicU64>,
}

impl RpcLogSource {
    /// Polls `provider` for new blocks.
    pub fn new(provider: DynProvider) -> Self {
        Self { provider, heads: None, last_head: Arc::default(), skipped_for: Arc::default() }
    }

    /// Connects to `url`. For `ws://` / `wss://` URLs it also subscribes to new heads, so the
    /// indexer wakes as soon as a block arrives instead of at its next poll (polling stays as the
    /// fallback if the subscription drops).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        use alloy::providers::{ProviderBuilder, WsConnect};
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Ok(Self::new(crate::chain::connect(url)?));
        }
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_ws(WsConnect::new(url))
            .await
            .context("Failed to connect to the RPC node's websocket")?
            .erased();
        let sub = provider.subscribe_blocks().await.context("eth_subscribe(newHeads) failed")?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            let mut stream = sub.into_stream();
            while let Some(header) = stream.next().await {
                let told = BlockHeader {
                    number: header.number,
                    hash: header.hash,
                    parent_hash: header.parent_hash,
                    timestamp: header.timestamp,
                };
                if tx.send(Some(told)).is_err() {
                    break; // every source clone is gone
                }
            }
            tracing::warn!("newHeads subscription ended; the indexer falls back to polling");
        });
        Ok(Self { provider, heads: Some(rx), last_head: Arc::default(), skipped_for: Arc::default() })
    }

    /// Also wakes on the heads `heads` tells (the pipeline's workers read the head often; the
    /// indexer then starts on a new block as they see it, without asking the node for its number
    /// or its header again). A websocket subscription already made is kept.
    pub fn with_heads(mut self, heads: tokio::sync::watch::Receiver<Option<BlockHeader>>) -> Self {
        self.heads.get_or_insert(heads);
        self
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The newest head told, if any.
    fn told(&self) -> Option<BlockHeader> {
        self.heads.as_ref().and_then(|rx| *rx.borrow())
    }
}

impl LogSource for RpcLogSource {
    async fn wait_for_block(&self, poll: Duration) {
        let until = tokio::time::Instant::now() + poll;
        if let Some(rx) = &self.heads {
            let mut rx = rx.clone();
            rx.mark_unchanged();
            // A head told above the newest this source read is not waited for, once: a node
            // behind the one the teller reads (a load balancer) would otherwise be asked again
            // and again until it catches up.
            let told = rx.borrow().map_or(0, |h| h.number);
            if told > self.last_head.load(Ordering::Relaxed)
                && self.skipped_for.fetch_max(told, Ordering::Relaxed) < told
            {
                return;
            }
            if let Ok(Ok(())) = tokio::time::timeout_at(until, rx.changed()).await {
                return;
            }
        }
        // No one tells heads (or the teller is gone): the poll.
        tokio::time::sleep_until(until).await;
    }

    async fn head(&self) -> anyhow::Result<u64> {
        // A told head right above the newest this source read is the head: the node is not
        // asked. One further ahead (a teller reading another node, one this source's node may be
        // behind) is not taken on trust: the node says its own head.
        if let Some(told) = self.told()
            && self
                .last_head
                .compare_exchange(told.number.wrapping_sub(1), told.number, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(told.number);
        }
        let head = self.provider.get_block_number().await.context("eth_blockNumber failed")?;
        self.last_head.fetch_max(head, Ordering::Relaxed);
        Ok(head)
    }

    async fn header(&self, number: u64) -> anyhow::Result<Option<BlockHeader>> {
        // The told head's header as the teller read it (the sync loop chains every header to
        // the checkpoint and asks for its logs by hash, so one that went stale is not indexed).
        if let Some(told) = self.told().filter(|h| h.number == number) {
            return Ok(Some(told));
        }
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .with_context(|| format!("eth_getBlockByNumber({number}) failed"))?;
        Ok(block.map(|b| BlockHeader {
            number: b.header.number,
            hash: b.header.hash,
            parent_hash: b.header.parent_hash,
            timestamp: b.header.timestamp,
        }))
    }

    async fn logs(&self, address: Address, from: u64, to: u64) -> anyhow::Result<Vec<RawLog>> {
        let filter = Filter::new().address(address).from_block(from).to_block(to);
        let logs =
            self.provider.get_logs(&filter).await.with_context(|| format!("eth_getLogs({from}..={to}) failed"))?;
        raw_logs(logs)
    }

    async fn logs_at(&self, address: Address, block: BlockHeader) -> anyhow::Result<Vec<RawLog>> {
        let filter = Filter::new().address(address).at_block_hash(block.hash);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .with_context(|| format!("eth_getLogs(block {} {}) failed", block.number, block.hash))?;
        raw_logs(logs)
    }
}

/// The logs an `eth_getLogs` answered, as the sync loop takes them (removed ones dropped).
fn raw_logs(logs: Vec<alloy::rpc::types::Log>) -> anyhow::Result<Vec<RawLog>> {
    logs.into_iter()
        .filter(|l| !l.removed)
        .map(|l| {
            Ok(RawLog {
                block_number: l.block_number.context("log without blockNumber")?,
                block_hash: l.block_hash.context("log without blockHash")?,
                block_timestamp: l.block_timestamp,
                tx_hash: l.transaction_hash.unwrap_or_default(),
                tx_index: l.transaction_index.unwrap_or_default(),
                log_index: l.log_index.context("log without logIndex")?,
                topics: l.inner.data.topics().to_vec(),
                data: l.inner.data.data.clone(),
            })
        })
        .collect()
}
