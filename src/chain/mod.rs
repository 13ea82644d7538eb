//! Everything about the chain: bindings, EIP-712, `bySig` traits, signatures, reverts.

pub mod bindings;
pub mod calls;
pub mod deployment;
pub mod eip712;
pub mod revert;
pub mod signature;
pub mod simulate;
pub mod traits;

use std::{
    num::NonZeroUsize,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use alloy::{
    primitives::B256,
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{RpcError, TransportError, TransportErrorKind, TransportFut},
};
use anyhow::Context;

pub use bindings::{IErc20Allowance, IPermit2, IPermitToken, MockToken, PERMIT2, StreamPay};
pub use deployment::Deployment;

/// Fixed gas margin of a relayed user call (see [`gas_limit_for`]).
pub const RELAY_GAS_MARGIN: u64 = 10_000;

/// Fixed gas margin of a keeper liquidation, larger than a relayed call's: a liquidation settles
/// every stream of the account, and how many there are can grow between estimate and inclusion.
pub const LIQUIDATION_GAS_MARGIN: u64 = 20_000;

/// The gas limit to sign for a call whose estimate was `gas`: a quarter more for state moving
/// between the estimate and inclusion (streams settle per second), plus a fixed `margin`
/// ([`RELAY_GAS_MARGIN`] or [`LIQUIDATION_GAS_MARGIN`]).
pub fn gas_limit_for(gas: u64, margin: u64) -> u64 {
    gas.saturating_add(gas / 4).saturating_add(margin)
}

/// The gas limit to sign for a call that used `gas_used` in one simulated run
/// ([`simulate::simulate`]): [`gas_limit_for`] of `gas_used + gas_used / 8`.
///
/// A run's gas used is not the gas limit the call needs (what `eth_estimateGas` answers):
/// - it is after refunds, and the run needs the gas before them: EIP-3529 caps a refund at a
///   fifth of the gas before it, so the run needed at most `5/4 · gas_used`;
/// - every call forwards at most 63/64 of the gas left (EIP-150), so a call nested `d` deep needs
///   up to `(64/63)^d` of what it uses; StreamPay nests at most 5 (`permitAndCall` → `bySig` →
///   the action → `multicall` → the token → Permit2): 8.3 %.
///
/// Together at most `1.354 · gas_used`; `1.25 · (gas_used + gas_used / 8) = 1.406 · gas_used`
/// covers it, plus the fixed `margin`, with room left for the state moving before inclusion. In
/// practice (Anvil, this contract) the needed limit is 1.00–1.16 times the gas used (the most for
/// a permit deposit, whose allowance set and spent in one transaction is refunded).
pub fn gas_limit_for_used(gas_used: u64, margin: u64) -> u64 {
    gas_limit_for(gas_used.saturating_add(gas_used / 8), margin)
}

/// What stands in for the RPC URL in every message, answer and log line. Providers put their
/// API key in the URL (path, query or user info), so no part of it is ever shown, not even the
/// host.
pub const REDACTED_RPC_URL: &str = "<rpc-url>";

/// How long one JSON-RPC request may take on one node before it counts as failed (and, with
/// several URLs, the next node is asked).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain JSON-RPC provider without fillers: the pipeline sets nonces, gas and fees itself.
/// One URL, [`DEFAULT_RPC_TIMEOUT`] per request; see [`connect_many`].
pub fn connect(rpc_url: &str) -> anyhow::Result<DynProvider> {
    connect_many(&[rpc_url], DEFAULT_RPC_TIMEOUT)
}

/// The JSON-RPC methods the relayer calls, asked of one node at a time, best-ranked first, the
/// next only when one fails (transport error or `timeout`): a read of one node's view, never a
/// race between nodes at different heads. Any other method is sent to every node at once and the
/// first answer wins.
const ONE_NODE_AT_A_TIME: &[&str] = &[
    "eth_blockNumber",
    "eth_call",
    "eth_chainId",
    "eth_estimateGas",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getCode",
    "eth_getLogs",
    "eth_getStorageAt",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction",
    "eth_sendRawTransactionSync",
    "eth_sendTransactionSync",
    "eth_simulateV1",
];

/// A provider over one or more RPC URLs of the same chain, without fillers (the pipeline sets
/// nonces, gas and fees itself):
/// - each request on each node is bounded by `timeout`;
/// - with several URLs, a node that fails or times out hands the request to the next (alloy's
///   `FallbackLayer`, nodes ranked by recent success and latency), so one dead provider does not
///   stop the relayer;
/// - every call is timed and its failures counted ([`crate::observability::RpcMetricsLayer`]);
/// - transport errors lose the URL before anything sees them ([`RedactUrlLayer`]): reqwest's
///   errors print `… for url (<the whole URL>)`, and they end up in `/health`, `LastError`, API
///   error messages and logs.
pub fn connect_many(rpc_urls: &[&str], timeout: Duration) -> anyhow::Result<DynProvider> {
    anyhow::ensure!(!rpc_urls.is_empty(), "No RPC URL");
    let nodes = rpc_urls
        .iter()
        .map(|rpc_url| {
            let url: reqwest::Url =
                rpc_url.trim().parse().map_err(|_| anyhow::anyhow!("Invalid RPC URL ({REDACTED_RPC_URL})"))?;
            let http = alloy::transports::http::Http::new(url);
            Ok(tower::ServiceBuilder::new()
                .layer(RedactUrlLayer::new(rpc_url))
                .layer(TimeoutLayer(timeout))
                .service(http))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let is_local = rpc_urls.iter().all(|u| {
        u.parse::<reqwest::Url>()
            .ok()
            .and_then(|u| u.host_str().map(|h| h == "127.0.0.1" || h == "localhost"))
            .unwrap_or(false)
    });
    let client = if nodes.len() == 1 {
        // One node: its transport as it is, nothing to fail over to.
        let node = nodes.into_iter().next().expect("one node");
        alloy::rpc::client::ClientBuilder::default()
            .layer(crate::observability::RpcMetricsLayer)
            .transport(node, is_local)
    } else {
        let count = NonZeroUsize::new(nodes.len()).expect("at least one URL");
        let fallback = alloy::transports::layers::FallbackLayer::default()
            .with_active_transport_count(count)
            .with_sequential_methods(ONE_NODE_AT_A_TIME.iter().map(|m| m.to_string()).collect());
        let service = tower::ServiceBuilder::new().layer(fallback).service(nodes);
        alloy::rpc::client::ClientBuilder::default()
            .layer(crate::observability::RpcMetricsLayer)
            .transport(alloy::transports::BoxTransport::new(service), is_local)
    };
    Ok(ProviderBuilder::new().disable_recommended_fillers().connect_client(client).erased())
}

/// Bounds each JSON-RPC request on one node (see [`connect_many`]).
#[derive(Debug, Clone, Copy)]
struct TimeoutLayer(Duration);

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, after: self.0 }
    }
}

/// The service [`TimeoutLayer`] wraps a node's transport in.
#[derive(Debug, Clone)]
struct Timeout<S> {
    inner: S,
    after: Duration,
}

impl<S> tower::Service<RequestPacket> for Timeout<S>
where
    S: tower::Service<RequestPacket, Response = ResponsePacket, Error = TransportError, Future = TransportFut<'static>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let after = self.after;
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(after, fut).await {
                Ok(result) => result,
                Err(_) => Err(TransportErrorKind::custom_str(&format!(
                    "the RPC node did not answer within {} ms",
                    after.as_millis()
                ))),
            }
        })
    }
}

/// Replaces every spelling of the RPC URL in `text`, and whatever reqwest names after
/// `for url (`, with [`REDACTED_RPC_URL`].
pub fn redact_url_in(text: &str, url: &str) -> String {
    let mut out = text.to_string();
    for needle in url_spellings(url) {
        out = out.replace(&needle, REDACTED_RPC_URL);
    }
    const MARK: &str = "for url (";
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find(MARK) {
        let start = i + MARK.len();
        result.push_str(&rest[..start]);
        result.push_str(REDACTED_RPC_URL);
        rest = match rest[start..].find(')') {
            Some(j) => &rest[start + j..],
            None => "",
        };
    }
    result.push_str(rest);
    result
}

/// The URL as configured and as the `url` crate prints it (normalised, with and without the
/// trailing slash), longest first.
fn url_spellings(url: &str) -> Vec<String> {
    let mut all = vec![url.trim().to_string()];
    if let Ok(parsed) = url.trim().parse::<reqwest::Url>() {
        all.push(parsed.as_str().to_string());
        all.push(parsed.as_str().trim_end_matches('/').to_string());
    }
    all.retain(|s| !s.is_empty());
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    all
}

/// A transport error's text (with its causes) after redaction; replaces the original error,
/// whose `Debug` and `Display` would print the URL.
#[derive(Debug)]
struct RedactedTransportError(String);

impl std::fmt::Display for RedactedTransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedactedTransportError {}

/// The tower layer behind [`connect`] that strips the RPC URL from transport errors. JSON-RPC
/// error answers (`ErrorResp`) and HTTP status errors carry no URL and pass through unchanged,
/// so the pipeline's fault classification sees the same variants as before.
#[derive(Debug, Clone)]
pub struct RedactUrlLayer {
    url: Arc<str>,
}

impl RedactUrlLayer {
    pub fn new(url: &str) -> Self {
        Self { url: url.into() }
    }
}

impl<S> tower::Layer<S> for RedactUrlLayer {
    type Service = RedactUrl<S>;
    fn layer(&self, inner: S) -> RedactUrl<S> {
        RedactUrl { inner, url: self.url.clone() }
    }
}

/// The service [`RedactUrlLayer`] wraps a transport in.
#[derive(Debug, Clone)]
pub struct RedactUrl<S> {
    inner: S,
    url: Arc<str>,
}

impl<S> tower::Service<RequestPacket> for RedactUrl<S>
where
    S: tower::Service<RequestPacket, Response = ResponsePacket, Error = TransportError, Future = TransportFut<'static>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_ready(cx).map_err(|e| redact_error(e, &self.url))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let url = self.url.clone();
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(|e| redact_error(e, &url)) })
    }
}

fn redact_error(err: TransportError, url: &str) -> TransportError {
    match err {
        RpcError::Transport(TransportErrorKind::Custom(inner)) => {
            // The causes too ("tcp connect error: Connection refused"): they classify the fault.
            let mut text = inner.to_string();
            let mut cause = std::error::Error::source(&*inner);
            while let Some(c) = cause {
                let t = c.to_string();
                if !text.ends_with(&t) {
                    text.push_str(": ");
                    text.push_str(&t);
                }
                cause = c.source();
            }
            TransportErrorKind::custom(RedactedTransportError(redact_url_in(&text, url)))
        }
        other => other,
    }
}

/// The latest block as one read saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    pub timestamp: u64,
    pub hash: B256,
    pub parent_hash: B256,
}

/// The node's latest block.
pub async fn latest_head(provider: &DynProvider) -> anyhow::Result<Head> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .context("Failed to read the latest block")?
        .context("The node returned no latest block")?;
    Ok(Head {
        number: block.header.number,
        timestamp: block.header.timestamp,
        hash: block.header.hash,
        parent_hash: block.header.parent_hash,
    })
}

/// The timestamp of the latest block: "now" for deadlines, so a dev chain whose clock was moved
/// forward (`evm_increaseTime`) gets deadlines it will actually accept.
pub async fn chain_time(provider: &DynProvider) -> anyhow::Result<u64> {
    Ok(latest_head(provider).await?.timestamp)
}

/// How long [`HeadClock`] serves the latest block before asking the node again, by default.
pub const HEAD_CLOCK_MAX_AGE: Duration = Duration::from_millis(250);

/// The latest block ([`latest_head`]), asked of the node at most once per max age; concurrent
/// callers that find it stale share one request. The API's clock for deadline pre-checks (a
/// deadline that passed within that age is caught by the chain itself when the call is simulated,
/// `StreamPayDeadlineExceeded`, with the same answer), and the head the pipeline's workers share
/// (`pipeline::blocks`).
#[derive(Debug)]
pub struct HeadClock {
    max_age: Duration,
    /// The newest head read and when it was asked for (before the request was sent).
    seen: std::sync::Mutex<Option<(tokio::time::Instant, Head)>>,
    /// Held while asking the node: single flight.
    asking: tokio::sync::Mutex<()>,
}

impl Default for HeadClock {
    fn default() -> Self {
        Self::new(HEAD_CLOCK_MAX_AGE)
    }
}

impl HeadClock {
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, seen: std::sync::Mutex::new(None), asking: tokio::sync::Mutex::new(()) }
    }

    fn fresh(&self, not_before: Option<tokio::time::Instant>) -> Option<Head> {
        let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.filter(|(at, _)| at.elapsed() < self.max_age && not_before.is_none_or(|t| *at >= t)).map(|(_, h)| h)
    }

    /// The newest head read, however old.
    pub fn last(&self) -> Option<Head> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).map(|(_, h)| h)
    }

    /// The latest block, asked for at most the max age ago, and not before `not_before`.
    pub async fn head(&self, provider: &DynProvider, not_before: Option<tokio::time::Instant>) -> anyhow::Result<Head> {
        self.head_with(not_before, || latest_head(provider)).await
    }

    /// [`HeadClock::head`] with `read` asking the node.
    pub async fn head_with<F, Fut>(&self, not_before: Option<tokio::time::Instant>, read: F) -> anyhow::Result<Head>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Head>>,
    {
        if let Some(h) = self.fresh(not_before) {
            return Ok(h);
        }
        let _asking = self.asking.lock().await;
        if let Some(h) = self.fresh(not_before) {
            return Ok(h);
        }
        let asked = tokio::time::Instant::now();
        let head = read().await?;
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((asked, head));
        Ok(head)
    }

    /// The latest block's timestamp, at most the max age old.
    pub async fn now(&self, provider: &DynProvider) -> anyhow::Result<u64> {
        Ok(self.head(provider, None).await?.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_runs_gas_limit_covers_refunds_and_the_63_64_rule() {
        for used in [21_000u64, 87_785, 171_571, 3_000_000] {
            let worst = (used as f64) * 1.25 * (64.0f64 / 63.0).powi(5);
            assert!(gas_limit_for_used(used, 0) as f64 >= worst, "{used}");
            assert!(gas_limit_for_used(used, RELAY_GAS_MARGIN) >= gas_limit_for(used, RELAY_GAS_MARGIN));
        }
        // The Anvil estimate of a permit deposit that used 171,571 gas, with today's headroom.
        assert!(gas_limit_for_used(171_571, RELAY_GAS_MARGIN) >= gas_limit_for(198_285, 0));
    }

    #[test]
    fn every_spelling_of_the_rpc_url_is_redacted() {
        let url = "https://user:pw-secret@eth.example.io/v2/KEY-SECRET?apikey=Q-SECRET";
        let texts = [
            format!("error sending request for url ({url})"),
            // As the url crate normalises it (the message reqwest writes).
            format!("error sending request for url ({})", url.parse::<reqwest::Url>().unwrap()),
            format!("Failed to reach {url}: connection refused"),
            // A URL that is not the configured one (a redirect target), named by reqwest.
            "error following redirect for url (https://eth.example.io/v3/OTHER-SECRET)".to_string(),
        ];
        for text in texts {
            let out = redact_url_in(&text, url);
            assert!(!out.contains("SECRET") && !out.contains("pw-secret"), "{out}");
            assert!(out.contains(REDACTED_RPC_URL), "{out}");
        }
        assert_eq!(redact_url_in("nonce too low", url), "nonce too low", "other text is left alone");
    }
}
