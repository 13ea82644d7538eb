//! One EVM run of a transaction at `latest`, with the reads that word its refusal, in one
//! JSON-RPC request (`eth_simulateV1`).
//!
//! `eth_estimateGas` (what the relayer used before) is sent at `pending` by alloy: Anvil then
//! re-executes every pool transaction and binary-searches the gas limit, some twenty EVM runs per
//! request while holding its state lock. A simulation is one run per call. The reads (`view`
//! calls placed before the transaction in the same simulated block) see the same state the
//! transaction runs on, so a refusal can be worded exactly without another round trip.
//!
//! Nodes without `eth_simulateV1` (a "method not found" answer) get the old way: an `eth_call`
//! per read and an `eth_estimateGas` of the transaction, both at `latest`.

use alloy::{
    eips::BlockNumberOrTag,
    primitives::Bytes,
    providers::{DynProvider, Provider},
    rpc::types::{
        TransactionRequest,
        simulate::{SimBlock, SimCallResult, SimulatePayload},
    },
    transports::{RpcError, TransportError},
};

/// The outcome of one call of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call succeeded: its gas used (the whole transaction's, intrinsic gas included and
    /// refunds deducted, as a receipt would show) and its return data.
    Success { gas_used: u64, output: Bytes },
    /// The call failed: its revert data (empty for a revert without data or a halt) and the
    /// node's message.
    Failed { data: Bytes, message: String },
}

impl CallOutcome {
    fn from_sim(result: SimCallResult) -> Self {
        if result.status {
            return Self::Success { gas_used: result.gas_used, output: result.return_data };
        }
        // Geth puts the revert data in `error.data` (and `returnData`); Anvil only in `returnData`.
        let (data, message) = match result.error {
            Some(e) => (e.data.filter(|d| !d.is_empty()).unwrap_or(result.return_data), e.message),
            None => (result.return_data, "execution failed".to_string()),
        };
        Self::Failed { data, message }
    }
}

/// Simulates `reads` and then `transaction` in one block on top of `latest`, without validation
/// (no balance, nonce or fee checks on the sender: the sponsor pays whatever it pays). Answers
/// one outcome per read, then the transaction's. An `Err` is the node's failure, never the
/// call's.
pub async fn simulate(
    provider: &DynProvider,
    reads: Vec<TransactionRequest>,
    transaction: TransactionRequest,
) -> Result<(Vec<CallOutcome>, CallOutcome), TransportError> {
    let count = reads.len();
    let block = SimBlock::default().extend_calls(reads.iter().cloned()).call(transaction.clone());
    let payload = SimulatePayload::default().extend(block);
    match provider.simulate(&payload).block_id(BlockNumberOrTag::Latest.into()).await {
        Ok(blocks) => {
            let calls = blocks.into_iter().next().map(|b| b.calls).unwrap_or_default();
            if calls.len() != count + 1 {
                return Err(alloy::transports::TransportErrorKind::custom_str(&format!(
                    "eth_simulateV1 answered {} call results for {} calls",
                    calls.len(),
                    count + 1
                )));
            }
            let mut outcomes: Vec<CallOutcome> = calls.into_iter().map(CallOutcome::from_sim).collect();
            let last = outcomes.pop().expect("count + 1 results");
            Ok((outcomes, last))
        }
        Err(e) if method_not_found(&e) => without_simulate(provider, reads, transaction).await,
        Err(e) => Err(e),
    }
}

/// Whether the node does not know `eth_simulateV1`.
fn method_not_found(e: &TransportError) -> bool {
    match e {
        RpcError::ErrorResp(p) => {
            let m = p.message.to_lowercase();
            p.code == -32601
                || m.contains("method not found")
                || m.contains("not supported")
                || m.contains("unsupported")
        }
        _ => false,
    }
}

/// [`simulate`] on a node without `eth_simulateV1`: reads by `eth_call`, the transaction by
/// `eth_estimateGas` (its answer standing in for the gas used), all at `latest`.
async fn without_simulate(
    provider: &DynProvider,
    reads: Vec<TransactionRequest>,
    transaction: TransactionRequest,
) -> Result<(Vec<CallOutcome>, CallOutcome), TransportError> {
    let mut outcomes = Vec::with_capacity(reads.len());
    for read in reads {
        outcomes.push(match provider.call(read).block(BlockNumberOrTag::Latest.into()).await {
            Ok(output) => CallOutcome::Success { gas_used: 0, output },
            Err(e) => failed(e)?,
        });
    }
    let last = match provider.estimate_gas(transaction).block(BlockNumberOrTag::Latest.into()).await {
        Ok(gas_used) => CallOutcome::Success { gas_used, output: Bytes::new() },
        Err(e) => failed(e)?,
    };
    Ok((outcomes, last))
}

/// A call refused by the node: the call's failure when the node says it reverted, else the
/// node's.
fn failed(e: TransportError) -> Result<CallOutcome, TransportError> {
    if let RpcError::ErrorResp(payload) = &e {
        if let Some(data) = payload.as_revert_data() {
            return Ok(CallOutcome::Failed { data, message: payload.message.to_string() });
        }
        if payload.message.to_lowercase().contains("revert") {
            return Ok(CallOutcome::Failed { data: Bytes::new(), message: payload.message.to_string() });
        }
    }
    Err(e)
}
