//! Transactions the sponsors sent, written when broadcast and updated from the receipt.

use alloy::primitives::{Address, B256, Bytes};
use anyhow::Context;
use sqlx::Row;

use super::Store;

#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub chain_id: u64,
    pub contract: Address,
    pub api_key_id: i64,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    pub calldata: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Mined,
    Reverted,
}

impl Store {
    pub async fn record_transaction(&self, t: &NewTransaction) -> anyhow::Result<i64> {
        let row = sqlx::query(
            "INSERT INTO relay_transactions
                (chain_id, contract, api_key_id, signer, meta_nonce, sponsor, sponsor_nonce, tx_hash, calldata, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'submitted') RETURNING id",
        )
        .bind(t.chain_id as i64)
        .bind(t.contract.as_slice())
        .bind(t.api_key_id)
        .bind(t.signer.as_slice())
        .bind(t.meta_nonce as i64)
        .bind(t.sponsor.as_slice())
        .bind(t.sponsor_nonce as i64)
        .bind(t.tx_hash.as_slice())
        .bind(t.calldata.as_ref())
        .fetch_one(&self.pool)
        .await
        .context("Failed to record the transaction")?;
        Ok(row.get(0))
    }

    pub async fn finish_transaction(
        &self,
        id: i64,
        status: TxStatus,
        gas_used: u64,
        block_number: Option<u64>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE relay_transactions SET status = $2, gas_used = $3, block_number = $4, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(match status {
            TxStatus::Mined => "mined",
            TxStatus::Reverted => "reverted",
        })
        .bind(gas_used as i64)
        .bind(block_number.map(|b| b as i64))
        .execute(&self.pool)
        .await
        .context("Failed to update the transaction")?;
        Ok(())
    }
}
