//! Everything about the chain: bindings, EIP-712, `bySig` traits, signatures, reverts.

pub mod bindings;
pub mod calls;
pub mod eip712;
pub mod revert;
pub mod signature;
pub mod traits;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use anyhow::Context;

pub use bindings::{IPermitToken, MockToken, StreamPay};

/// A plain JSON-RPC provider without fillers: the pipeline sets nonces, gas and fees itself.
/// Every call is timed and its failures counted ([`crate::observability::RpcMetricsLayer`]).
pub fn connect(rpc_url: &str) -> anyhow::Result<DynProvider> {
    let url = rpc_url.parse().with_context(|| format!("Invalid RPC URL {rpc_url}"))?;
    let client = alloy::rpc::client::ClientBuilder::default().layer(crate::observability::RpcMetricsLayer).http(url);
    Ok(ProviderBuilder::new().disable_recommended_fillers().connect_client(client).erased())
}

/// The timestamp of the latest block: "now" for deadlines, so a dev chain whose clock was moved
/// forward (`evm_increaseTime`) gets deadlines it will actually accept.
pub async fn chain_time(provider: &DynProvider) -> anyhow::Result<u64> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .context("Failed to read the latest block")?
        .context("The node returned no latest block")?;
    Ok(block.header.timestamp)
}
