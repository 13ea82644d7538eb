//! Sponsor accounts and the transactions they send.
//!
//! Each sponsor keeps its next transaction nonce in memory (seeded from the node's pending count)
//! behind a mutex held only while signing and broadcasting, never while waiting for a receipt:
//! many relayed calls are in flight per sponsor at once. If a broadcast fails the local nonce is
//! dropped and re-read from the node before the next send, so a failed send cannot leave a gap.
//! (Persistent queueing, fee bumps and replacement detection come with the pipeline issue.)

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::{
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Address, B256, Bytes},
    providers::{DynProvider, Provider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use tokio::sync::Mutex;

use crate::config::Secret;

/// One account that pays gas for relayed calls.
#[derive(Debug)]
pub struct Sponsor {
    address: Address,
    wallet: EthereumWallet,
    chain_id: u64,
    /// Next nonce to use; `None` means "ask the node" (at start and after a failed send).
    next_nonce: Mutex<Option<u64>>,
}

/// A transaction accepted by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub hash: B256,
    pub nonce: u64,
}

impl Sponsor {
    pub fn new(signer: PrivateKeySigner, chain_id: u64) -> Self {
        Self { address: signer.address(), wallet: EthereumWallet::from(signer), chain_id, next_nonce: Mutex::new(None) }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs and broadcasts a call to `to`, returning as soon as the node accepted it.
    pub async fn send(&self, provider: &DynProvider, to: Address, data: Bytes, gas_limit: u64) -> anyhow::Result<Sent> {
        // Fees are read outside the nonce lock: it guards only sign + broadcast.
        let fees = provider.estimate_eip1559_fees().await.context("Failed to estimate fees")?;
        let mut next = self.next_nonce.lock().await;
        let mut retried = false;
        loop {
            let nonce = match *next {
                Some(n) => n,
                None => provider
                    .get_transaction_count(self.address)
                    .pending()
                    .await
                    .context("Failed to read the sponsor's nonce")?,
            };
            let tx = TransactionRequest::default()
                .with_from(self.address)
                .with_to(to)
                .with_input(data.clone())
                .with_nonce(nonce)
                .with_chain_id(self.chain_id)
                .with_gas_limit(gas_limit)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            let envelope = tx.build(&self.wallet).await.context("Failed to sign the transaction")?;
            match provider.send_tx_envelope(envelope).await {
                Ok(pending) => {
                    *next = Some(nonce + 1);
                    return Ok(Sent { hash: *pending.tx_hash(), nonce });
                }
                Err(err) => {
                    // Whatever happened, the local nonce may be wrong now: re-read it next time.
                    *next = None;
                    // Someone else (another process, a manual send) used this nonce: one
                    // retry with the node's count is safe because this transaction was refused.
                    let nonce_too_low = err.to_string().to_lowercase().contains("nonce too low");
                    if nonce_too_low && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(anyhow::Error::new(err).context("The node refused the transaction"));
                }
            }
        }
    }
}

/// The configured sponsors, by address.
#[derive(Debug, Clone, Default)]
pub struct Sponsors {
    by_address: HashMap<Address, Arc<Sponsor>>,
    order: Vec<Address>,
}

impl Sponsors {
    pub fn from_keys(keys: &[Secret], chain_id: u64) -> anyhow::Result<Self> {
        let signers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                k.expose()
                    .trim()
                    .parse::<PrivateKeySigner>()
                    .with_context(|| format!("Sponsor key #{i} is not a private key"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::from_signers(signers, chain_id))
    }

    pub fn from_signers(signers: Vec<PrivateKeySigner>, chain_id: u64) -> Self {
        let mut s = Self::default();
        for signer in signers {
            let sponsor = Arc::new(Sponsor::new(signer, chain_id));
            if s.by_address.insert(sponsor.address(), sponsor.clone()).is_none() {
                s.order.push(sponsor.address());
            }
        }
        s
    }

    pub fn get(&self, address: &Address) -> Option<Arc<Sponsor>> {
        self.by_address.get(address).cloned()
    }

    pub fn addresses(&self) -> &[Address] {
        &self.order
    }
}

/// Polls for a receipt until `timeout`; `None` if the transaction is not mined by then.
pub async fn wait_for_receipt(
    provider: &DynProvider,
    hash: B256,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<Option<TransactionReceipt>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(receipt) = provider
            .get_transaction_receipt(hash)
            .await
            .with_context(|| format!("Failed to fetch the receipt of {hash}"))?
        {
            return Ok(Some(receipt));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}
